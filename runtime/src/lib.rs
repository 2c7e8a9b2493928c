//! pg-status: a sidecar that polls PostgreSQL hosts and answers over HTTP which one is the master and which
//! replica to read from.
//!
//! This crate is the runtime around the pure core (`pg-status-core`): the poll [`driver`] (generic over the
//! [`rt::Runtime`] trait, so simulations run it too), the PostgreSQL connections, the [`http`] front end on
//! hyper, logging and the process itself ([`main`]).
#![warn(missing_docs, unreachable_pub)]

mod app;
pub mod driver;
mod guarded;
pub mod healthcheck;
pub mod http;
pub mod limits;
pub mod listen;
pub mod log;
pub mod pg;
mod poll;
pub mod publish;
pub mod resolve;
pub mod rt;
pub mod signals;
pub mod tls;
pub mod wait;

/// Runs the pg-status program: reads the configuration from the environment, polls the hosts, serves HTTP
/// until SIGTERM or SIGINT, and exits (0 after a clean shutdown, 2 for a configuration error).
///
/// `pg-status healthcheck` instead asks the server this environment describes for `/live` and exits 0 when
/// it answered `200`, else 1 (see [`healthcheck`]). Any other argument is refused with exit status 2.
pub fn main() -> ! {
    let mut args = std::env::args_os().skip(1);
    let status = match (args.next(), args.next()) {
        (None, _) => app::run(),
        (Some(command), None) if command == "healthcheck" => healthcheck::run(),
        (Some(command), _) => {
            app::startup_logger().refusal(format_args!(
                "unknown arguments starting with {command:?}: pg-status takes no arguments except `healthcheck`"
            ));
            2
        }
    };
    // Lines still queued (the last error, the shutdown line) go out before the process ends, unless the
    // output is stuck.
    log::flush(std::time::Duration::from_secs(2));
    std::process::exit(status)
}
