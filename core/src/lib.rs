#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod config;
mod election;
pub mod episode;
mod host_index;
pub mod http;
mod lag;
pub mod lsn;
pub mod metrics;
pub mod monitor;
pub mod observation;
pub mod render;
pub mod select;
pub mod severity;
pub mod snapshot;
pub mod wire;

pub use config::{Config, ConfigError};
pub use host_index::HostIndex;
pub use http::{Prepared, Response, Route, Selection};
pub use lsn::Lsn;
pub use metrics::{HttpCounters, Telemetry};
pub use monitor::{Action, Event, Monitor, PollError, PollErrorKind, PollId};
pub use observation::{Observation, Role};
pub use select::Choice;
pub use severity::{Severity, Stream};
pub use snapshot::{Health, HostName, HostSpec, HostStatus, Snapshot};
