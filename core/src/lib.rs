//! The pure core of pg-status: every decision the sidecar makes, with no I/O, no threads, no async and no
//! clock reads.
//!
//! The runtime owns a [`Monitor`] and drives it: it feeds in poll results and the current time, and drains
//! what the monitor asks for in return: poll [`Action`]s to run, [`Event`]s to log, the next timer, and
//! immutable [`Snapshot`]s that request handlers answer from. Answering a request is a pure function of a
//! snapshot and the request ([`http::prepare`], [`http::handle`]).
//!
//! # The driving loop
//!
//! After every input (a finished poll, a timer that fired) the runtime drains the monitor: actions first,
//! then the snapshot, then events (published before logged, so a client that reacts to a line already gets
//! the new answer). Here two hosts are polled by hand, with time passed in explicitly:
//!
//! ```
//! use std::time::{Duration, Instant};
//!
//! use pg_status_core::observation::Receiver;
//! use pg_status_core::{http, Action, Config, HostIndex, Lsn, Monitor, Observation, Role, Stream};
//!
//! # fn main() -> Result<(), pg_status_core::ConfigError> {
//! let config = Config::from_vars([("pg_status__hosts", "db1,db2")])?;
//! let mut now = Instant::now();
//! let mut monitor = Monitor::new(&config, now);
//! let master = Observation {
//!     role: Role::Master,
//!     current_lsn: Some(Lsn(0x3000)),
//!     receive_lsn: None,
//!     replay_lsn: None,
//!     replay_delay_ms: None,
//!     timeline: Some(1),
//!     latest_end_lsn: None,
//!     receiver: Receiver::Readable,
//! };
//! let replica = Observation {
//!     role: Role::Replica,
//!     current_lsn: None,
//!     receive_lsn: Some(Lsn(0x3000)),
//!     replay_lsn: Some(Lsn(0x3000)),
//!     replay_delay_ms: Some(0),
//!     ..master.clone()
//! };
//! let (mut published, mut stdout) = (None, Vec::new());
//! for _ in 0..3 {
//!     // Actions: each is one poll iteration to run before its deadline. A runtime starts a task per
//!     // action and reports each result when it comes; here every poll answers 2 ms later.
//!     let mut polls = Vec::new();
//!     while let Some(Action::Poll { id, deadline, .. }) = monitor.poll_action(now) {
//!         assert!(deadline > now);
//!         polls.push(id);
//!     }
//!     now += Duration::from_millis(2);
//!     for id in polls {
//!         let observed = if id.host == HostIndex::new(0) { &master } else { &replica };
//!         monitor.handle_poll_result(id, Ok(observed.clone()), now);
//!     }
//!     // The snapshot, when anything changed: published for the request handlers.
//!     if let Some(snapshot) = monitor.poll_snapshot() {
//!         published = Some(snapshot);
//!     }
//!     // Events: log lines, each with its severity (level, stream and prefix).
//!     while let Some(event) = monitor.poll_event() {
//!         let severity = event.severity();
//!         if severity.stream() == Stream::Out {
//!             stdout.push(format!("{}{event}", severity.prefix()));
//!         }
//!     }
//!     // The timer: sleep until it is due, then tell the monitor the time.
//!     let Some(wake) = monitor.poll_timeout() else { break };
//!     now = now.max(wake);
//!     monitor.handle_timeout(now);
//! }
//! assert_eq!(
//!     stdout,
//!     [
//!         "db1: master",
//!         "db2: replica",
//!         "db2: synchronous in time",
//!         "db2: synchronous in bytes",
//!         "ready: every host has been polled once",
//!     ]
//! );
//!
//! // A request handler answers from the published snapshot, never from the monitor.
//! let snapshot = published.expect("the first polls changed the snapshot");
//! let mut cursor = 0;
//! let answer = http::handle(&snapshot, &mut cursor, "GET", "/replica", None);
//! assert_eq!((answer.status, answer.body.as_bytes()), (200, &b"db2"[..]));
//! let answer = http::handle(&snapshot, &mut cursor, "GET", "/master", Some(b"application/json"));
//! assert_eq!(answer.body.as_bytes(), br#"{"host": "db1", "dc": null, "geo": null, "port": 5432}"#);
//! # Ok(())
//! # }
//! ```
//!
//! A request that may wait for a replica to catch up (`min_lsn` with `wait_ms`) comes back from
//! [`http::prepare`] as a [`Selection`] that the runtime answers now or at a later snapshot; `/metrics` comes
//! back as [`http::Prepared::Metrics`] and is answered by [`metrics::answer`] from the snapshot and the
//! [`Telemetry`] the poller publishes beside it ([`Telemetry::of`]).
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
