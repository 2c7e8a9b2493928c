//! pg-status: a sidecar that polls PostgreSQL hosts and answers over HTTP which one is the master and which
//! replica to read from.
//!
//! This crate is the runtime around the pure core (`pg-status-core`), laid out as the process runs:
//!
//! - [`poller`]: the poller thread. The poll driver feeds the core with poll results and the time, and
//!   publishes its snapshots; it is generic over [`poller::runtime::Runtime`], so the simulation runs it too.
//! - [`server`]: the HTTP thread. hyper on a tokio runtime of its own, answering from the published snapshot
//!   through the core's pure handler.
//! - [`publish`]: the one thing the two threads share (the snapshot, the telemetry, refresh requests).
//! - [`clock`]: time for the code that waits, so the simulation can run it on simulated time.
//! - [`process`]: start-up and shutdown, signals, logging, the open-file limit, `pg-status healthcheck`.
#![warn(missing_docs, unreachable_pub)]

pub mod clock;
pub mod poller;
pub mod process;
pub mod publish;
pub mod server;

/// Runs the pg-status program: reads the configuration from the environment, polls the hosts, serves HTTP
/// until SIGTERM or SIGINT, and exits (0 after a clean shutdown, 2 for a configuration error).
///
/// `pg-status healthcheck` instead asks the server this environment describes for `/live` and exits 0 when
/// it answered `200`, else 1 (see [`process::healthcheck`]). Any other argument is refused with exit status 2.
pub fn main() -> ! {
    let mut args = std::env::args_os().skip(1);
    let status = match (args.next(), args.next()) {
        (None, _) => process::program::run(),
        (Some(command), None) if command == "healthcheck" => process::healthcheck::run(),
        (Some(command), _) => {
            process::program::startup_logger().refusal(format_args!(
                "unknown arguments starting with {command:?}: pg-status takes no arguments except `healthcheck`"
            ));
            2
        }
    };
    // Lines still queued (the last error, the shutdown line) go out before the process ends, unless the
    // output is stuck.
    process::log::flush(std::time::Duration::from_secs(2));
    std::process::exit(status)
}
