//! The pure core of pg-status: every decision the sidecar makes, with no I/O, no threads, no async and no
//! clock reads.
//!
//! The runtime feeds it poll results and the current time, and drains what it asks for in return: poll
//! actions, the next timer, events to log, and immutable snapshots that request handlers answer from.
//! The request handler ([`http::handle`]) is a pure function of a snapshot and the request.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod config;
mod election;
pub mod episode;
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
