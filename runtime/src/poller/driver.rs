//! The poll driver: executes the core's poll actions against the hosts and feeds the results back.
//!
//! It owns the core's [`Monitor`] and, per host, the open database session between iterations. Each action
//! runs as its own task, so a hung host never delays the others. After every input it drains the monitor as
//! the core documents: actions (start tasks), events (log), snapshot (publish). It reads time and opens
//! sockets only through its [`Runtime`], so a simulation runs this very code.
//!
//! It also watches each host's idle connection: when one ends by itself between iterations (the server shut
//! down, crashed, or terminated the backend), it drops it and tells the monitor at once.

use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use pg_status_core::config::Config;
use pg_status_core::metrics::Telemetry;
use pg_status_core::monitor::{Action, Event, Monitor, PollError, PollErrorKind, PollId};
use pg_status_core::observation::{Observation, PollQuery};
use pg_status_core::HostIndex;

use crate::clock::LocalBoxFuture;
use crate::poller::pg::Target;
use crate::poller::pg::{self, Session};
use crate::poller::poll::{self, Deadlines};
use crate::poller::runtime::Runtime;
use crate::poller::tls::PgTls;
use crate::publish::{Published, RefreshRequests};

/// The shortest interval between two publications of the telemetry (`/metrics` is this fresh at worst).
pub const TELEMETRY_SPACING: Duration = Duration::from_millis(100);

/// Where the driver reports what happens: the core's events, and per-poll detail for debugging.
pub trait EventLog {
    /// An event of the core (a transition, a failed poll, readiness, split brain).
    fn event(&mut self, event: &Event);

    /// One iteration of `host` ended after `elapsed` with `result` (called before the core sees it).
    fn poll_finished(&mut self, host: &str, id: PollId, elapsed: Duration, result: &Result<Observation, PollError>) {
        let _ = (host, id, elapsed, result);
    }
}

/// A finished iteration on its way back from its task.
struct Completion {
    id: PollId,
    started: Instant,
    result: Result<Observation, PollError>,
    session: Option<Session>,
}

/// What the driver keeps per host between iterations.
struct HostSlot {
    name: String,
    target: Rc<Target>,
    /// The open session while no iteration uses it.
    session: Option<Session>,
    /// The iteration whose task holds the session; a session coming back from any other is stale and dropped.
    in_flight: Option<u64>,
}

/// Why the driver woke up.
enum Wake {
    Done(Box<Completion>),
    Timer,
    Refresh,
    /// A connection of this host ended by itself.
    Closed(HostIndex),
    Stop,
}

/// Runs the monitor: starts poll tasks, collects their results, logs events and publishes snapshots.
pub struct Driver<R: Runtime, L: EventLog> {
    rt: R,
    monitor: Monitor,
    hosts: Vec<HostSlot>,
    published: Arc<Published>,
    /// Refresh requests of the HTTP side.
    requests: RefreshRequests,
    /// When the telemetry was last published, and whether it changed since.
    telemetry_published: Option<Instant>,
    telemetry_stale: bool,
    log: L,
    /// Completions are boxed: a session is a few hundred bytes, and they pass through small enums.
    done_tx: async_channel::Sender<Box<Completion>>,
    done_rx: async_channel::Receiver<Box<Completion>>,
    /// Closed at shutdown; every poll task watches it and gives up at once.
    stop_tx: async_channel::Sender<()>,
    stop_rx: async_channel::Receiver<()>,
    /// Host indexes whose connections ended by themselves (unbounded: at most one message per connection).
    closed_rx: async_channel::Receiver<HostIndex>,
}

impl<R: Runtime, L: EventLog> Driver<R, L> {
    /// A driver for the configured hosts; every host is due for its first poll now.
    ///
    /// It reads the TLS files `config.tls` names; when they cannot be used, every connection attempt fails
    /// with that reason (a program checks them first with [`PgTls::load`] and uses [`Driver::with_tls`]).
    pub fn new(rt: R, config: &Config, log: L) -> Driver<R, L> {
        let tls = PgTls::load(&config.tls).unwrap_or_else(|e| PgTls::broken(&e));
        Driver::with_tls(rt, config, log, tls)
    }

    /// A driver for the configured hosts that connects with the TLS settings `tls` (loaded from
    /// `config.tls`); every host is due for its first poll now.
    pub fn with_tls(rt: R, config: &Config, log: L, tls: PgTls) -> Driver<R, L> {
        let monitor = Monitor::new(config, rt.now());
        let login = pg::login(&config.user, &config.password, &config.database);
        let (closed_tx, closed_rx) = async_channel::unbounded();
        let hosts = config
            .hosts
            .iter()
            .zip(HostIndex::all(config.hosts.len()))
            .map(|(h, index)| HostSlot {
                name: h.name.clone(),
                target: Rc::new(Target {
                    host: h.host.clone(),
                    port: h.port,
                    login: login.clone(),
                    connect_timeout: config.connect_timeout,
                    tls: tls.clone(),
                    require_auth: config.require_auth,
                    on_close: {
                        let closed = closed_tx.clone();
                        // Unbounded: never fails while the driver runs; after it, nobody listens.
                        Rc::new(move || {
                            let _ = closed.try_send(index);
                        })
                    },
                }),
                session: None,
                in_flight: None,
            })
            .collect();
        let (published, requests) = Published::new(monitor.snapshot());
        let (done_tx, done_rx) = async_channel::unbounded();
        let (stop_tx, stop_rx) = async_channel::bounded(1);
        Driver {
            rt,
            monitor,
            hosts,
            published,
            requests,
            telemetry_published: None,
            telemetry_stale: true,
            log,
            done_tx,
            done_rx,
            stop_tx,
            stop_rx,
            closed_rx,
        }
    }

    /// Where snapshots are published, for request handlers: they load it and never lock.
    pub fn published(&self) -> Arc<Published> {
        self.published.clone()
    }

    /// Polls until `shutdown` completes, then drops every session and stops every poll task.
    ///
    /// Connections close in the background: the runtime's executor must keep running for a moment after this
    /// returns for them to say goodbye to their servers.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = pin!(shutdown);
        loop {
            self.drain();
            // The monitor expires an iteration at its deadline (`monitor::in_time`), so a timer that fires at
            // the instant the monitor asked for always makes progress.
            let timer: LocalBoxFuture<()> =
                match self.monitor.poll_timeout().into_iter().chain(self.telemetry_due(self.rt.now())).min() {
                    Some(at) => self.rt.sleep_until(at),
                    None => Box::pin(future::pending()),
                };
            let done = async {
                match self.done_rx.recv().await {
                    Ok(completion) => Wake::Done(completion),
                    // The driver holds a sender, so the channel cannot close; stopping is the safe answer anyway.
                    Err(_) => Wake::Stop,
                }
            };
            let stop = async {
                shutdown.as_mut().await;
                Wake::Stop
            };
            let refresh = async {
                match self.requests.refresh.recv().await {
                    Ok(()) => Wake::Refresh,
                    // The publication holds the sender, so this does not happen; never wake for it again.
                    Err(_) => future::pending().await,
                }
            };
            let closed = async {
                match self.closed_rx.recv().await {
                    Ok(host) => Wake::Closed(host),
                    // Every host's target holds a sender, so this does not happen; never wake for it again.
                    Err(_) => future::pending().await,
                }
            };
            // Shutdown first, then results, then the timer: a result and the deadline at the same moment both
            // reach the monitor, which decides by `monitor::in_time`.
            let timer = async {
                timer.await;
                Wake::Timer
            };
            let wake = future::or(stop, future::or(done, future::or(timer, future::or(closed, refresh)))).await;
            match wake {
                Wake::Done(completion) => {
                    // An iteration ended: its statistics and the host's counters moved.
                    self.telemetry_stale = true;
                    self.complete(*completion);
                }
                Wake::Timer => {
                    let now = self.rt.now();
                    // Expired iterations count as failures; a timer for the telemetry alone changes nothing.
                    if self.monitor.poll_timeout().is_some_and(|at| at <= now) {
                        self.telemetry_stale = true;
                    }
                    self.monitor.handle_timeout(now);
                }
                Wake::Refresh => self.monitor.request_refresh(self.rt.now()),
                Wake::Closed(host) => {
                    self.telemetry_stale = true;
                    self.connection_ended(host);
                }
                Wake::Stop => break,
            }
        }
        self.stop_tx.close();
        for slot in &mut self.hosts {
            slot.session = None;
        }
        while let Ok(completion) = self.done_rx.try_recv() {
            drop(completion.session);
        }
    }

    /// Drains the monitor after an input: start polls, log events, publish a changed snapshot.
    fn drain(&mut self) {
        let now = self.rt.now();
        while let Some(action) = self.monitor.poll_action(now) {
            // An iteration started: the counters moved.
            self.telemetry_stale = true;
            match action {
                Action::Poll { id, deadline, connect_deadline, reconnect, query } => {
                    self.start(id, Deadlines { poll: deadline, connect: connect_deadline }, reconnect, query)
                }
            }
        }
        // Publish before logging: a client that reacts to a transition line must already get the new answer.
        if let Some(snapshot) = self.monitor.poll_snapshot() {
            self.published.store(snapshot);
        }
        while let Some(event) = self.monitor.poll_event() {
            self.log.event(&event);
        }
        if self.telemetry_due(now).is_some_and(|due| due <= now) {
            self.published.store_telemetry(Telemetry::of(&self.monitor));
            self.telemetry_published = Some(now);
            self.telemetry_stale = false;
        }
    }

    /// When the telemetry for `/metrics` should be published next: at once after a change, but at most every
    /// [`TELEMETRY_SPACING`], since with many hosts every poll would otherwise copy every host's statistics.
    fn telemetry_due(&self, now: Instant) -> Option<Instant> {
        if !self.telemetry_stale {
            return None;
        }
        Some(self.telemetry_published.map_or(now, |at| at + TELEMETRY_SPACING))
    }

    /// Starts one iteration as its own task; its result comes back through the completion channel.
    fn start(&mut self, id: PollId, deadlines: Deadlines, reconnect: bool, query: PollQuery) {
        let started = self.rt.now();
        let Some(slot) = self.hosts.get_mut(id.host.get()) else {
            // The monitor only names configured hosts; answer anyway so it never waits for this iteration.
            let error = PollError::new(PollErrorKind::Connect, format!("no host with index {}", id.host));
            let _ = self.done_tx.try_send(Box::new(Completion { id, started, result: Err(error), session: None }));
            return;
        };
        if reconnect {
            slot.session = None;
        }
        let session = slot.session.take();
        slot.in_flight = Some(id.iteration);
        let rt = self.rt.clone();
        let target = slot.target.clone();
        let done = self.done_tx.clone();
        let stop = self.stop_rx.clone();
        self.rt.spawn(Box::pin(async move {
            let stopped = async {
                // Fails exactly when the driver closes the channel at shutdown.
                let _ = stop.recv().await;
                None
            };
            let work = async { Some(poll::iterate(&rt, &target, session, query, deadlines).await) };
            if let Some((result, session)) = future::or(stopped, work).await {
                // Unbounded: never waits. It fails only once the driver is gone, and then nobody needs it.
                let _ = done.try_send(Box::new(Completion { id, started, result, session }));
            }
        }));
    }

    /// A connection of `host` ended by itself: when it is the idle session kept for the next iteration (not
    /// one in use, which its iteration sees, nor one already dropped), drop it and tell the monitor.
    fn connection_ended(&mut self, host: HostIndex) {
        let Some(slot) = self.hosts.get_mut(host.get()) else { return };
        if slot.session.as_ref().is_some_and(Session::has_ended) {
            slot.session = None;
            self.monitor.handle_connection_closed(host, self.rt.now());
        }
    }

    /// Takes an iteration's result: keep its session for the next iteration, tell the monitor.
    fn complete(&mut self, completion: Completion) {
        let Completion { id, started, result, session } = completion;
        let now = self.rt.now();
        if let Some(slot) = self.hosts.get_mut(id.host.get()) {
            if slot.in_flight == Some(id.iteration) {
                slot.in_flight = None;
                slot.session = session;
            }
            self.log.poll_finished(&slot.name, id, now.saturating_duration_since(started), &result);
        }
        self.monitor.handle_poll_result(id, result, now);
    }
}
