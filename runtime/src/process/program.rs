//! The process: configuration, threads, start-up and shutdown.
//!
//! Two threads: the poller (the driver on its own executor) and the HTTP server (on this one). They share
//! nothing but the published snapshot and a channel that tells the poller to stop.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use async_io::Timer;
use event_listener::Event;
use futures_lite::future;
use pg_status_core::config::{parse_log_format, Config, ConfigError, LogLevel};
use smol::LocalExecutor;

use super::open_files;
use crate::poller::driver::Driver;
use crate::poller::runtime::SmolRuntime;
use crate::poller::tls::PgTls;
use crate::process::log::Logger;
use crate::process::signals::Signals;
use crate::publish::Published;
use crate::server::listen;
use crate::server::{self, HttpServer, Limits};

/// Exit status for a configuration the program refuses (DESIGN 9).
const EXIT_CONFIG: i32 = 2;
/// Exit status when the environment does not let the program start (port taken, no threads).
const EXIT_START: i32 = 1;

/// How long the poller lets closed database connections say goodbye before the thread ends.
const POLLER_CLOSE_WAIT: Duration = Duration::from_millis(1500);
/// How long shutdown waits for the poller thread in all.
const POLLER_JOIN_WAIT: Duration = Duration::from_secs(3);

/// Runs pg-status and returns the exit status.
pub(crate) fn run() -> i32 {
    let config = match read_config() {
        Ok(config) => config,
        Err(line) => {
            startup_logger().refusal(format_args!("{line}"));
            return EXIT_CONFIG;
        }
    };
    let logger = Logger::new(config.log_level).with_format(config.log_format);
    // Certificate files are read now, so a bad one stops the program before anything starts (DESIGN 9).
    let tls = match PgTls::load(&config.tls) {
        Ok(tls) => tls,
        Err(e) => {
            logger.refusal(format_args!("{e}"));
            return EXIT_CONFIG;
        }
    };
    for warning in &config.warnings {
        logger.warning(format_args!("{warning}"));
    }

    if let Err(e) = open_files::raise_open_files() {
        logger.warning(format_args!("cannot raise the open-file limit: {e}"));
    }
    let signals = match Signals::register() {
        Ok(signals) => signals,
        Err(e) => {
            logger.fatal(format_args!(
                "cannot install the signal handlers (SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2): {e}"
            ));
            return EXIT_START;
        }
    };
    // Port 0 turns TCP off (the configuration allows it only with a Unix socket).
    let listener = match (config.http_port != 0).then(|| listen::bind(config.listen, config.http_port)).transpose() {
        Ok(listener) => listener,
        Err(e) => {
            logger.fatal(format_args!("{e}"));
            return EXIT_START;
        }
    };
    let unix_socket = match config.http_unix_socket.as_ref().map(listen::bind_unix).transpose() {
        Ok(socket) => socket,
        Err(e) => {
            logger.fatal(format_args!("{e}"));
            return EXIT_START;
        }
    };

    let (stop_poller, poller_stopped) = async_channel::bounded::<()>(1);
    let (published_tx, published_rx) = mpsc::sync_channel(1);
    // The poller starts polling only after the start-up line is out, so that line is always the first.
    let (go, wait_for_go) = mpsc::sync_channel::<()>(1);
    let poller_config = config.clone();
    let poller = thread::Builder::new()
        .name("pg-status-poller".to_owned())
        .spawn(move || poll(&poller_config, tls, logger, poller_stopped, published_tx, wait_for_go));
    let poller = match poller {
        Ok(handle) => handle,
        Err(e) => {
            logger.fatal(format_args!("cannot start the poller thread: {e}"));
            return EXIT_START;
        }
    };
    let Ok(published) = published_rx.recv() else {
        logger.fatal(format_args!("the poller thread ended before it started"));
        return EXIT_START;
    };

    let server = HttpServer::serving(listener, unix_socket, published, http_limits(&config), logger.component("http"));
    let server = match server {
        Ok(server) => server,
        Err(e) => {
            logger.fatal(format_args!("cannot serve HTTP: {e}"));
            return EXIT_START;
        }
    };
    let mut addresses = Vec::new();
    if config.http_port != 0 {
        addresses.push(server.local_addr().map_or_else(|_| "http://?".to_owned(), |a| format!("http://{a}")));
    }
    if let Some(path) = server.unix_path() {
        addresses.push(format!("unix:{}", path.display()));
    }
    let address = addresses.join(" and ");
    let names: Vec<&str> = config.hosts.iter().map(|h| h.name.as_str()).collect();
    logger.info(format_args!(
        "pg-status {} listening on {address}, monitoring {} {}: {}",
        env!("CARGO_PKG_VERSION"),
        names.len(),
        if names.len() == 1 { "host" } else { "hosts" },
        names.join(", "),
    ));
    let _ = go.send(());

    let signals_seen = Cell::new(0u32);
    let signalled = Event::new();
    // Completes once `n` signals have arrived in all.
    let signals_reached = |n: u32| {
        let (seen, signalled) = (&signals_seen, &signalled);
        async move {
            loop {
                let next = signalled.listen();
                if seen.get() >= n {
                    break;
                }
                next.await;
            }
        }
    };
    let count_signals = async {
        loop {
            signals.recv().await;
            signals_seen.set(signals_seen.get().saturating_add(1));
            signalled.notify(usize::MAX);
        }
    };
    let note_signals = async {
        loop {
            for line in signals.recv_noted().await {
                logger.info(format_args!("{line}"));
            }
        }
    };
    let count_signals = future::or(count_signals, note_signals);
    let served = server::block_on(async {
        // The first signal starts the shutdown; a second one while requests drain ends the wait at once.
        let serving = server.run(signals_reached(1));
        let stopped_early = async {
            signals_reached(2).await;
            Ok(())
        };
        future::or(future::or(serving, stopped_early), async {
            count_signals.await;
            Ok(())
        })
        .await
    });
    if let Err(e) = served.and_then(|served| served) {
        logger.fatal(format_args!("cannot serve HTTP: {e}"));
        stop_poller.close();
        return EXIT_START;
    }

    stop_poller.close();
    let waited = Instant::now();
    while !poller.is_finished() && waited.elapsed() < POLLER_JOIN_WAIT {
        thread::sleep(Duration::from_millis(5));
    }
    if poller.is_finished() && poller.join().is_err() {
        logger.error(format_args!("the poller thread failed"));
    }
    logger.info(format_args!("pg-status stopped"));
    0
}

/// The poller thread: the driver on its own executor until told to stop, then a bounded moment for the
/// database connections to close.
fn poll(
    config: &Config,
    tls: PgTls,
    logger: Logger,
    stop: async_channel::Receiver<()>,
    published: mpsc::SyncSender<Arc<Published>>,
    go: mpsc::Receiver<()>,
) {
    let executor = Rc::new(LocalExecutor::new());
    let runtime = SmolRuntime::new(&executor);
    let driver = Driver::with_tls(runtime, config, logger.component("monitor"), tls);
    // Either message fails only when the main thread gave up starting: then there is nothing to poll for.
    if published.send(driver.published()).is_err() || go.recv().is_err() {
        return;
    }
    async_io::block_on(executor.run(async {
        driver
            .run(async {
                // Fails exactly when the main thread closes the channel: time to stop.
                let _ = stop.recv().await;
            })
            .await;
        let until = Instant::now() + POLLER_CLOSE_WAIT;
        while !executor.is_empty() && Instant::now() < until {
            Timer::after(Duration::from_millis(5)).await;
        }
    }));
}

/// The front end's limits: the defaults, with a drain long enough for the longest `wait_ms` allowed.
fn http_limits(config: &Config) -> Limits {
    let defaults = Limits::default();
    let longest_wait = config.max_wait.saturating_add(Duration::from_millis(500));
    Limits { drain_timeout: defaults.drain_timeout.max(longest_wait), ..defaults }
}

/// The logger for lines printed before the configuration is read: in the format `pg_status__log_format` asks
/// for when that value is valid, plain text otherwise.
pub(crate) fn startup_logger() -> Logger {
    let format = std::env::var("pg_status__log_format").ok();
    let format = parse_log_format(format.as_deref()).unwrap_or_default();
    Logger::new(LogLevel::Info).with_format(format)
}

/// Reads the configuration from the environment; the error is the one line to print.
pub(crate) fn read_config() -> Result<Config, String> {
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        let (Some(name), value) = (name.to_str(), value.to_str()) else { continue };
        match value {
            Some(value) => vars.push((name.to_owned(), value.to_owned())),
            // Only our own variables matter; other programs' variables may hold any bytes.
            None if is_ours(name) => return Err(ConfigError::NotUnicode { var: name.to_owned() }.to_string()),
            None => {}
        }
    }
    Config::from_vars(vars).map_err(|e| e.to_string())
}

fn is_ours(name: &str) -> bool {
    name.starts_with("pg_status__") || name.starts_with("PGSSL")
}
