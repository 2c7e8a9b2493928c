//! The polling state machine for all hosts (DESIGN 1-2, 4's split brain, 11 and 12); when a failover
//! episode starts and ends is [`crate::episode`]'s.
//!
//! The runtime drives it in the quinn style: after every input (`handle_poll_result`, `handle_timeout`,
//! `handle_connection_closed`), drain `poll_action` until it returns `None`, drain `poll_event`, publish
//! `poll_snapshot` when it returns a new one, and sleep until `poll_timeout`. The monitor never reads a
//! clock: `now` is always an argument.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, LogLevel, SplitBrainPolicy};
use crate::episode::{self, Episode, EpisodeCause, EpisodeOutcome, Watch};
use crate::host_index::HostIndex;
use crate::lsn::Lsn;
use crate::metrics::PollStats;
use crate::observation::{Observation, PollQuery, Receiver, Role};
use crate::severity::{Severity, Stream};
use crate::snapshot::{Health, HostInput, HostName, HostSpec, HostTimes, Settings, Snapshot};

/// The shortest interval between two refresh rounds asked for by waiting requests (`wait_ms`): often enough
/// that a replica catching up is seen within a few tens of milliseconds, seldom enough that waiting requests
/// cannot flood the replicas with polls.
pub const REFRESH_SPACING: Duration = Duration::from_millis(25);

/// Whether an iteration that ended `elapsed` after it started ended in time (`query_timeout` is
/// `pg_status__query_timeout_ms`): strictly before its deadline. An answer that arrives exactly at the
/// deadline counts as a timeout, as the monitor's own timer would have ended the iteration then; the runtime
/// and the simulation's reference use this one definition.
pub fn in_time(elapsed: Duration, query_timeout: Duration) -> bool {
    elapsed < query_timeout
}

/// How many of a master's recent WAL positions are kept to bound its replicas' time lag.
const WAL_HISTORY: usize = 16;

/// Names one poll iteration: which host, and which of its iterations (results of older ones are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PollId {
    /// The host, in `pg_status__hosts` order.
    pub host: HostIndex,
    /// Sequence number of the iteration for that host.
    pub iteration: u64,
}

/// What the monitor asks the runtime to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Run one poll iteration (connect if needed, run the poll query, read the row) before `deadline`, then
    /// report it with `handle_poll_result(id, ..)`.
    Poll {
        /// The iteration to report.
        id: PollId,
        /// Hard deadline of the whole iteration.
        deadline: Instant,
        /// When a connection still being opened gives up (`pg_status__connect_timeout`), when that is before
        /// `deadline`; `None` leaves only `deadline`.
        connect_deadline: Option<Instant>,
        /// Close the host's current connection, if any, and open a new one.
        reconnect: bool,
        /// The form of the poll query to run. When the server refuses it for lack of privilege, run
        /// [`PollQuery::on_refusal`]'s form instead within the same deadline and report that result.
        query: PollQuery,
    },
}

/// The kind of a failed iteration, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PollErrorKind {
    /// The TCP or TLS connection could not be established.
    Connect,
    /// The server refused the credentials.
    Auth,
    /// The poll query failed.
    Query,
    /// The iteration did not finish by its deadline.
    Timeout,
    /// The reply could not be understood.
    BadReply,
    /// The server closed the connection.
    Closed,
}

impl PollErrorKind {
    /// A short lowercase name, used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            PollErrorKind::Connect => "connect",
            PollErrorKind::Auth => "auth",
            PollErrorKind::Query => "query",
            PollErrorKind::Timeout => "timeout",
            PollErrorKind::BadReply => "bad_reply",
            PollErrorKind::Closed => "closed",
        }
    }
}

/// Why one poll iteration failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PollError {
    /// What kind of failure.
    pub kind: PollErrorKind,
    /// A readable description (never containing the password).
    pub message: String,
}

/// The longest poll error message kept, in bytes: a server may send an error of 60 KiB, and it would be
/// logged at every failed poll.
pub const MAX_ERROR_MESSAGE: usize = 1024;

/// What ends a message shortened to [`MAX_ERROR_MESSAGE`].
pub const TRUNCATED: &str = "...[truncated]";

impl PollError {
    /// A failure of the given kind; a message longer than [`MAX_ERROR_MESSAGE`] bytes is cut there (on a
    /// character boundary) and ends with [`TRUNCATED`].
    pub fn new(kind: PollErrorKind, message: impl Into<String>) -> PollError {
        let mut message = message.into();
        if message.len() > MAX_ERROR_MESSAGE {
            let mut end = MAX_ERROR_MESSAGE - TRUNCATED.len();
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str(TRUNCATED);
            // Kept per host until the next poll: give back the rest of a long message's allocation.
            message.shrink_to_fit();
        }
        PollError { kind, message }
    }

    /// The iteration ran past its deadline.
    pub fn timeout() -> PollError {
        PollError::new(PollErrorKind::Timeout, "no answer before the iteration deadline (pg_status__query_timeout_ms)")
    }
}

/// A change of a host's state worth one log line (DESIGN 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// First failure after being alive (or at the first iteration).
    PossiblyDead,
    /// `max_fails` consecutive failures.
    Dead,
    /// Seen as master: at first sight, after a role change, or back from a failure.
    Master,
    /// Seen as replica: at first sight, after a role change, or back from a failure.
    Replica,
    /// A replica's `lag_ms` came within `pg_status__sync_max_lag_ms`.
    SyncInTime,
    /// A replica's `lag_ms` went beyond `pg_status__sync_max_lag_ms`.
    OutOfSyncInTime,
    /// A replica's `lag_bytes` came within `pg_status__sync_max_lag_bytes`.
    SyncInBytes,
    /// A replica's `lag_bytes` went beyond `pg_status__sync_max_lag_bytes`.
    OutOfSyncInBytes,
}

impl Transition {
    /// The spec's wording of the transition.
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::PossiblyDead => "possible dead",
            Transition::Dead => "dead",
            Transition::Master => "master",
            Transition::Replica => "replica",
            Transition::SyncInTime => "synchronous in time",
            Transition::OutOfSyncInTime => "out of sync in time",
            Transition::SyncInBytes => "synchronous in bytes",
            Transition::OutOfSyncInBytes => "out of sync in bytes",
        }
    }
}

/// What a role without some privilege cannot measure, announced once per run (DESIGN 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Warning {
    /// The role may not select from `pg_stat_wal_receiver`: polls run without it.
    ReceiverRefused,
    /// The role sees a running WAL receiver but none of its details (it lacks `pg_read_all_stats`).
    ReceiverHidden,
    /// `pg_status__split_brain=timeline` is on and a replica's timeline is hidden by the role's privileges.
    TimelinesHidden,
}

impl Warning {
    /// What is missing and what it costs, in words for an operator.
    pub fn as_str(self) -> &'static str {
        match self {
            Warning::ReceiverRefused => {
                "permission denied for pg_catalog.pg_stat_wal_receiver; polling without it. The role lacks SELECT \
                 on that view: replica timelines are unknown (null in /hosts) and lag_bytes cannot count WAL a \
                 replica's receiver has been told of but has not received. Grant SELECT on the view (and \
                 membership in pg_monitor) to measure fully"
            }
            Warning::ReceiverHidden => {
                "the role sees no details in pg_catalog.pg_stat_wal_receiver: it lacks pg_read_all_stats (granted \
                 with membership in pg_monitor). Replica timelines are unknown (null in /hosts) and lag_bytes \
                 cannot count WAL a replica's receiver has been told of but has not received"
            }
            Warning::TimelinesHidden => {
                "pg_status__split_brain=timeline cannot see replica timelines (the role lacks pg_read_all_stats or \
                 SELECT on pg_catalog.pg_stat_wal_receiver): requests with min_lsn are never answered with a \
                 replica, only with the master. Grant pg_monitor to the role"
            }
        }
    }
}

/// Something the runtime should log; `Display` gives the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A host changed state: `<host>: <transition>`.
    Transition {
        /// The host as written in `pg_status__hosts`.
        host: Arc<str>,
        /// What changed.
        transition: Transition,
    },
    /// A poll iteration failed (logged to stderr; repeats while a host stays dead with the same error are
    /// left out).
    PollFailed {
        /// The host as written in `pg_status__hosts`.
        host: Arc<str>,
        /// Why.
        error: PollError,
    },
    /// Every host has finished its first iteration: host routes answer from now on.
    Ready,
    /// More than one alive host claims to be master (a new split brain, or a change in who takes part).
    SplitBrain {
        /// The claiming hosts, in host order.
        masters: Vec<Arc<str>>,
    },
    /// At most one alive host claims to be master again.
    SplitBrainEnded,
    /// A measurement is degraded by the role's privileges (logged as a warning, once per kind, naming the
    /// first host that showed it).
    Warning {
        /// The host as written in `pg_status__hosts`.
        host: Arc<str>,
        /// What is missing.
        warning: Warning,
    },
    /// A failover episode started: every host is polled at the fast interval (DESIGN 2).
    EpisodeStarted {
        /// The host whose change started it.
        host: Arc<str>,
        /// What changed.
        cause: EpisodeCause,
        /// The fast interval (`pg_status__fast_sleep_ms`).
        fast: Duration,
    },
    /// A failover episode ended: polling is back at `sleep_ms`.
    EpisodeEnded {
        /// A confirmed master, or the window running out.
        outcome: EpisodeOutcome,
        /// How long the episode lasted.
        lasted: Duration,
        /// The interval polling returns to (`pg_status__sleep_ms`).
        sleep: Duration,
    },
}

impl Event {
    /// How the event is logged (DESIGN: upstream's log lines): a failed poll is an error on stderr, a
    /// degraded measurement a warning on stderr, several hosts claiming master and failover episodes are
    /// worth a warning but stay on stdout with the transitions, the rest is information.
    pub fn severity(&self) -> Severity {
        match self {
            Event::PollFailed { .. } => Severity::Failure,
            Event::Warning { .. } => Severity::Warning,
            Event::SplitBrain { .. }
            | Event::SplitBrainEnded
            | Event::EpisodeStarted { .. }
            | Event::EpisodeEnded { outcome: EpisodeOutcome::WindowOver, .. } => Severity::Notice,
            Event::Transition { .. } | Event::Ready | Event::EpisodeEnded { .. } => Severity::Info,
        }
    }

    /// True for lines that belong on stderr.
    pub fn is_error(&self) -> bool {
        self.severity().stream() == Stream::Err
    }

    /// The level the event is logged at (`pg_status__log_level` filters on it).
    pub fn level(&self) -> LogLevel {
        self.severity().level()
    }

    /// The host the event is about, if it is about one.
    pub fn host(&self) -> Option<&str> {
        match self {
            Event::Transition { host, .. }
            | Event::PollFailed { host, .. }
            | Event::Warning { host, .. }
            | Event::EpisodeStarted { host, .. }
            | Event::EpisodeEnded { outcome: EpisodeOutcome::Master(host), .. } => Some(host),
            Event::Ready | Event::SplitBrain { .. } | Event::SplitBrainEnded | Event::EpisodeEnded { .. } => None,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Transition { host, transition } => write!(f, "{host}: {}", transition.as_str()),
            Event::PollFailed { host, error } => write!(f, "{host}: poll failed ({}): {error}", error.kind.as_str()),
            Event::Ready => f.write_str("ready: every host has been polled once"),
            Event::SplitBrain { masters } => write!(f, "split brain: {}", masters.join(", ")),
            Event::SplitBrainEnded => f.write_str("split brain ended"),
            Event::Warning { host, warning } => write!(f, "{host}: {}", warning.as_str()),
            Event::EpisodeStarted { host, cause, fast } => episode::started_line(f, host, *cause, *fast),
            Event::EpisodeEnded { outcome, lasted, sleep } => episode::ended_line(f, outcome, *lasted, *sleep),
        }
    }
}

/// What the monitor has announced about a host, so each transition is logged once.
#[derive(Debug, Clone, Copy, Default)]
struct Announced {
    role: Option<Role>,
    sync_time: Option<bool>,
    sync_bytes: Option<bool>,
}

#[derive(Debug)]
struct HostState {
    id: Arc<HostName>,
    /// When the next iteration is due; `None` while one is in flight.
    next_poll: Option<Instant>,
    /// The iteration in flight and its deadline.
    in_flight: Option<(u64, Instant)>,
    /// When the iteration in flight (or the last one) started.
    started: Instant,
    /// When the last iteration ended.
    ended: Option<Instant>,
    /// When the iteration of the last success started: how fresh its evidence is.
    evidence_started: Option<Instant>,
    /// When its current, uninterrupted claim to be master (alive and answering as master) was first seen.
    claim_since: Option<Instant>,
    /// Poll durations and failure causes, for metrics.
    stats: PollStats,
    /// `(when, pg_current_wal_lsn)` of the recent polls that found it master, oldest first.
    wal_history: Vec<(Instant, Lsn)>,
    iterations: u64,
    /// When the current connection was opened (approximately: the start of its first iteration).
    conn_opened: Option<Instant>,
    /// A connection was asked to open by the iteration in flight.
    opening: Option<Instant>,
    fails: u32,
    health: Health,
    last: Option<Observation>,
    last_success: Option<Instant>,
    last_error: Option<PollError>,
    finished_first: bool,
    announced: Announced,
    /// Another iteration was asked for while one was in flight (see [`Monitor::request_refresh`]).
    refresh: bool,
    /// The form of the poll query its current connection runs: the full one on every new connection, the
    /// one without the WAL receiver once the server refused the full one on this connection.
    query: PollQuery,
}

/// What an observation's missing privileges cost (DESIGN 12): at most one warning of each kind.
fn privilege_warnings(observation: &Observation, policy: SplitBrainPolicy) -> [Option<Warning>; 2] {
    let replica = observation.role == Role::Replica;
    let missing = match observation.receiver {
        Receiver::Readable => None,
        Receiver::NotRead => Some(Warning::ReceiverRefused),
        Receiver::DetailsHidden => Some(Warning::ReceiverHidden),
    };
    let blind = replica && missing.is_some() && policy == SplitBrainPolicy::Timeline;
    [missing, blind.then_some(Warning::TimelinesHidden)]
}

/// Per-host counters the runtime may export as metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostCounters {
    /// Consecutive failed iterations.
    pub consecutive_failures: u32,
    /// When the last successful iteration ended.
    pub last_success: Option<Instant>,
    /// Connections asked for so far.
    pub connections_opened: u64,
    /// Iterations started so far.
    pub iterations: u64,
}

/// The polling state machine for all hosts.
#[derive(Debug)]
pub struct Monitor {
    hosts: Vec<HostState>,
    sleep: Duration,
    query_timeout: Duration,
    connect_timeout: Duration,
    conn_max_age: Duration,
    max_fails: u32,
    settings: Settings,
    events: VecDeque<Event>,
    ready: bool,
    dirty: bool,
    current: Snapshot,
    split_brain: Vec<HostIndex>,
    connections_opened: Vec<u64>,
    /// When the last refresh round was granted.
    last_refresh: Option<Instant>,
    /// The privilege warnings already announced.
    warned: Vec<Warning>,
    /// The fast interval of failover episodes (never above `sleep`); zero when they are off.
    fast: Duration,
    /// `pg_status__fast_window_ms`.
    fast_window: Duration,
    /// The failover episode running, if one is.
    episode: Option<Episode>,
    /// Failover episodes started so far.
    episodes_total: u64,
    /// The master and the claims as of the last input, to see what an input changed.
    watch: Watch,
}

impl Monitor {
    /// A monitor for the configured hosts; every host is due for its first poll at `now`.
    pub fn new(config: &Config, now: Instant) -> Monitor {
        let settings = Settings {
            sync_max_lag_ms: config.sync_max_lag_ms,
            sync_max_lag_bytes: config.sync_max_lag_bytes,
            locality_dc: config.current_dc.is_some(),
            locality_geo: config.current_geo.is_some(),
            split_brain: config.split_brain,
            max_wait_ms: u64::try_from(config.max_wait.as_millis()).unwrap_or(u64::MAX),
            replica_fallback: config.replica_fallback,
        };
        let hosts: Vec<HostState> = config
            .hosts
            .iter()
            .map(|h| HostState {
                id: Arc::new(HostName::new(HostSpec {
                    name: &h.name,
                    port: h.port,
                    dc: h.dc.as_deref(),
                    geo: h.geo.as_deref(),
                    current_dc: config.current_dc.as_deref(),
                    current_geo: config.current_geo.as_deref(),
                })),
                next_poll: Some(now),
                in_flight: None,
                started: now,
                ended: None,
                evidence_started: None,
                claim_since: None,
                stats: PollStats::default(),
                wal_history: Vec::new(),
                iterations: 0,
                conn_opened: None,
                opening: None,
                fails: 0,
                health: Health::Unknown,
                last: None,
                last_success: None,
                last_error: None,
                finished_first: false,
                announced: Announced::default(),
                refresh: false,
                query: PollQuery::Full,
            })
            .collect();
        let n = hosts.len();
        let mut monitor = Monitor {
            hosts,
            sleep: config.sleep,
            query_timeout: config.query_timeout,
            connect_timeout: config.connect_timeout,
            conn_max_age: config.conn_max_age,
            // A configuration never holds 0 (the parser rejects it); 1 keeps the arithmetic sound regardless.
            max_fails: config.max_fails.max(1),
            settings,
            events: VecDeque::new(),
            ready: n == 0,
            dirty: true,
            current: Snapshot::derive(false, &[], settings),
            split_brain: Vec::new(),
            connections_opened: vec![0; n],
            last_refresh: None,
            warned: Vec::new(),
            fast: config.fast_sleep.min(config.sleep),
            fast_window: config.fast_window,
            episode: None,
            episodes_total: 0,
            watch: Watch::default(),
        };
        monitor.current = monitor.derive();
        monitor
    }

    /// The next iteration to start at `now`, if one is due. Call until it returns `None`.
    pub fn poll_action(&mut self, now: Instant) -> Option<Action> {
        let (index, host) = self.hosts.iter_mut().enumerate().find(|(_, h)| h.next_poll.is_some_and(|t| t <= now))?;
        let index = HostIndex::new(index);
        host.iterations += 1;
        let deadline = now + self.query_timeout;
        let reconnect = match host.conn_opened {
            None => true,
            Some(opened) => now.saturating_duration_since(opened) >= self.conn_max_age,
        };
        if reconnect {
            host.conn_opened = None;
            host.opening = Some(now);
            self.connections_opened[index] += 1;
            // A new connection tries everything again: privileges may have been granted meanwhile.
            host.query = PollQuery::Full;
        }
        host.next_poll = None;
        host.in_flight = Some((host.iterations, deadline));
        host.started = now;
        let query = host.query;
        let connect_deadline = (!self.connect_timeout.is_zero())
            .then(|| now.checked_add(self.connect_timeout))
            .flatten()
            .filter(|limit| *limit < deadline);
        let id = PollId { host: index, iteration: host.iterations };
        Some(Action::Poll { id, deadline, connect_deadline, reconnect, query })
    }

    /// When the monitor next needs `handle_timeout`: the earliest due poll, in-flight deadline, or the end
    /// of the running failover episode's window.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let window = self.episode.map(|e| e.window_end(self.fast_window));
        self.hosts.iter().filter_map(|h| h.next_poll.or(h.in_flight.map(|(_, deadline)| deadline))).chain(window).min()
    }

    /// Advances time: an iteration still in flight at its deadline counts as a timeout, so a runtime that
    /// lost track of one can never stall a host. Due polls are then returned by `poll_action`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for index in HostIndex::all(self.hosts.len()) {
            if let Some((iteration, _)) = self.hosts[index].in_flight {
                if !in_time(now.saturating_duration_since(self.hosts[index].started), self.query_timeout) {
                    self.handle_poll_result(PollId { host: index, iteration }, Err(PollError::timeout()), now);
                }
            }
        }
        self.review(now, self.ready, None);
    }

    /// The server closed `host`'s idle connection (the runtime saw it between two iterations and dropped
    /// it): the host is polled at once, on a new connection, so a server that went away is possibly dead
    /// within one connection attempt; when it was the elected master, a failover episode starts. Ignored
    /// while an iteration is in flight (it sees the close itself) and when failover episodes are off
    /// (`pg_status__fast_sleep_ms=0`: the next regular poll finds out).
    pub fn handle_connection_closed(&mut self, host: HostIndex, now: Instant) {
        let Some(h) = self.hosts.get_mut(host.get()) else { return };
        if h.in_flight.is_some() {
            return;
        }
        h.conn_opened = None;
        if self.fast.is_zero() {
            return;
        }
        if self.ready && self.episode.is_none() && self.watch.master == Some(host) {
            self.start_episode(now, host, EpisodeCause::MasterClosed);
        }
        self.review(now, self.ready, None);
        // After the review: an episode ending now must not push this poll back to `sleep_ms`.
        self.hosts[host].next_poll = Some(now);
    }

    /// True while a failover episode runs.
    pub fn in_episode(&self) -> bool {
        self.episode.is_some()
    }

    /// Failover episodes started so far.
    pub fn episodes_total(&self) -> u64 {
        self.episodes_total
    }

    /// The hosts in a declared split brain (DESIGN 4, confirmed on fresh evidence), in host order; empty
    /// when there is none.
    pub fn split_brain(&self) -> &[HostIndex] {
        &self.split_brain
    }

    /// The pause after an iteration of host `index` ends: the fast interval during an episode and for a
    /// replica that just failed (until it answers or is dead), `sleep_ms` otherwise.
    fn interval(&self, index: HostIndex) -> Duration {
        let h = &self.hosts[index];
        let blinked = h.health == Health::PossiblyDead && h.last.as_ref().is_some_and(|o| o.role == Role::Replica);
        if !self.fast.is_zero() && (self.episode.is_some() || blinked) {
            self.fast
        } else {
            self.sleep
        }
    }

    /// The healthy elected master and the healthy claims, now.
    fn look(&self) -> Watch {
        Watch {
            master: self.current.master.filter(|&m| self.hosts[m].health == Health::Alive),
            claims: self.current.claimed_masters().collect(),
        }
    }

    /// After an input: start an episode on a change (once ready: the first polls are no change), or move the
    /// running one towards its end. `finished` names the host whose iteration just ended and when it began.
    fn review(&mut self, now: Instant, was_ready: bool, finished: Option<(HostIndex, Instant)>) {
        let after = self.look();
        if let Some(mut running) = self.episode {
            let confirmed = finished.is_some_and(|(host, started)| running.observe(host, started, after.unopposed()));
            self.episode = Some(running);
            if confirmed {
                let name = after.unopposed().map(|m| self.hosts[m].id.name.clone());
                if let Some(name) = name {
                    self.end_episode(now, EpisodeOutcome::Master(name));
                }
            } else if now >= running.window_end(self.fast_window) {
                self.end_episode(now, EpisodeOutcome::WindowOver);
            }
        } else if was_ready && !self.fast.is_zero() {
            let hosts = &self.hosts;
            if let Some((host, cause)) = episode::trigger(&self.watch, &after, |m| hosts[m].health != Health::Alive) {
                self.start_episode(now, host, cause);
            }
        }
        self.watch = after;
    }

    fn start_episode(&mut self, now: Instant, host: HostIndex, cause: EpisodeCause) {
        self.episode = Some(Episode::new(now));
        self.episodes_total += 1;
        self.events.push_back(Event::EpisodeStarted { host: self.hosts[host].id.name.clone(), cause, fast: self.fast });
        let fast = self.fast;
        for h in &mut self.hosts {
            if let Some(due) = h.next_poll {
                let fast_due = h.ended.map_or(now, |ended| (ended + fast).max(now));
                h.next_poll = Some(due.min(fast_due));
            }
        }
    }

    fn end_episode(&mut self, now: Instant, outcome: EpisodeOutcome) {
        let Some(running) = self.episode.take() else { return };
        let lasted = now.saturating_duration_since(running.started);
        self.events.push_back(Event::EpisodeEnded { outcome, lasted, sleep: self.sleep });
        for index in HostIndex::all(self.hosts.len()) {
            let regular = self.hosts[index].ended.map(|ended| ended + self.interval(index));
            let h = &mut self.hosts[index];
            if let (Some(due), Some(regular)) = (h.next_poll, regular) {
                h.next_poll = Some(due.max(regular));
            }
        }
    }

    /// Makes sure host `index` is polled by an iteration that starts at or after `since`, as soon as possible.
    fn poll_again(&mut self, index: HostIndex, since: Instant, now: Instant) {
        let h = &mut self.hosts[index];
        match h.next_poll {
            Some(due) if due > now => h.next_poll = Some(now),
            Some(_) => {}
            None if h.in_flight.is_some() && h.started >= since => {}
            None => h.refresh = true,
        }
    }

    /// Records how an iteration ended. Results of iterations that are no longer in flight are ignored; a
    /// success reported at or after the deadline counts as a timeout.
    pub fn handle_poll_result(&mut self, id: PollId, result: Result<Observation, PollError>, now: Instant) {
        let Some(host) = self.hosts.get_mut(id.host.get()) else { return };
        let Some((iteration, _)) = host.in_flight else { return };
        if iteration != id.iteration {
            return;
        }
        host.in_flight = None;
        host.ended = Some(now);
        host.finished_first = true;
        let was_ready = self.ready;
        let result = match result {
            Ok(_) if !in_time(now.saturating_duration_since(host.started), self.query_timeout) => {
                Err(PollError::timeout())
            }
            other => other,
        };
        host.stats.record(now.saturating_duration_since(host.started), result.as_ref().err().map(|e| e.kind));
        let name = host.id.name.clone();
        match result {
            Ok(observation) => {
                if let Some(opened) = host.opening.take() {
                    host.conn_opened = Some(opened);
                }
                let was = host.health;
                host.fails = 0;
                host.health = Health::Alive;
                host.last_error = None;
                host.last_success = Some(now);
                host.evidence_started = Some(host.started);
                let role = observation.role;
                match (role, observation.current_lsn) {
                    (Role::Master, Some(lsn)) => {
                        if host.wal_history.len() == WAL_HISTORY {
                            host.wal_history.remove(0);
                        }
                        host.wal_history.push((now, lsn));
                    }
                    _ => host.wal_history.clear(),
                }
                if observation.receiver == Receiver::NotRead {
                    host.query = PollQuery::WithoutReceiver;
                }
                let warnings = privilege_warnings(&observation, self.settings.split_brain);
                host.last = Some(observation);
                for warning in warnings.into_iter().flatten() {
                    if !self.warned.contains(&warning) {
                        self.warned.push(warning);
                        self.events.push_back(Event::Warning { host: name.clone(), warning });
                    }
                }
                if was != Health::Alive || host.announced.role != Some(role) {
                    if host.announced.role != Some(role) {
                        // A new role starts without announced sync state: a replica announces its own afresh.
                        host.announced = Announced::default();
                    }
                    host.announced.role = Some(role);
                    let transition = if role == Role::Master { Transition::Master } else { Transition::Replica };
                    self.events.push_back(Event::Transition { host: name, transition });
                }
            }
            Err(error) => {
                host.conn_opened = None;
                host.opening = None;
                host.fails = host.fails.saturating_add(1);
                let was = host.health;
                let repeated = was == Health::Dead && host.last_error.as_ref() == Some(&error);
                if !repeated {
                    self.events.push_back(Event::PollFailed { host: name.clone(), error: error.clone() });
                }
                host.last_error = Some(error);
                if host.fails >= self.max_fails {
                    host.health = Health::Dead;
                    host.last = None;
                    host.wal_history.clear();
                    if was != Health::Dead {
                        // Forget what was announced, so a revival announces role and sync state afresh.
                        host.announced = Announced::default();
                        self.events.push_back(Event::Transition { host: name, transition: Transition::Dead });
                    }
                } else {
                    host.health = Health::PossiblyDead;
                    if was != Health::PossiblyDead {
                        self.events.push_back(Event::Transition { host: name, transition: Transition::PossiblyDead });
                    }
                }
            }
        }
        let became_ready = !self.ready && self.hosts.iter().all(|h| h.finished_first);
        self.ready |= became_ready;
        self.refresh_view(id.host, became_ready, now);
        if became_ready {
            self.events.push_back(Event::Ready);
        }
        let started = self.hosts[id.host].started;
        self.review(now, was_ready, Some((id.host, started)));
        let next = if std::mem::take(&mut self.hosts[id.host].refresh) { now } else { now + self.interval(id.host) };
        self.hosts[id.host].next_poll = Some(next);
    }

    /// Asks for fresh data from every replica as soon as possible: idle replicas are polled at once, and those
    /// with an iteration in flight poll again right after it ends. Many calls before the polls happen cost one
    /// poll per host, and a call within [`REFRESH_SPACING`] of the last granted one is ignored.
    pub fn request_refresh(&mut self, now: Instant) {
        if self.last_refresh.is_some_and(|at| now.saturating_duration_since(at) < REFRESH_SPACING) {
            return;
        }
        self.last_refresh = Some(now);
        for h in &mut self.hosts {
            if h.last.as_ref().is_some_and(|o| o.role == Role::Master) {
                continue;
            }
            match h.next_poll {
                Some(t) if t > now => h.next_poll = Some(now),
                Some(_) => {}
                None => h.refresh = true,
            }
        }
    }

    /// The next event to log, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// A new snapshot when anything changed since the last call.
    pub fn poll_snapshot(&mut self) -> Option<Snapshot> {
        if std::mem::take(&mut self.dirty) {
            Some(self.current.clone())
        } else {
            None
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Snapshot {
        self.current.clone()
    }

    /// True once every host has finished its first iteration.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Number of monitored hosts.
    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// Counters of one host, for metrics.
    pub fn counters(&self, host: HostIndex) -> Option<HostCounters> {
        let h = self.hosts.get(host.get())?;
        Some(HostCounters {
            consecutive_failures: h.fails,
            last_success: h.last_success,
            connections_opened: self.connections_opened[host],
            iterations: h.iterations,
        })
    }

    /// Poll durations and failure causes of one host, for metrics.
    pub fn poll_stats(&self, host: HostIndex) -> Option<&PollStats> {
        self.hosts.get(host.get()).map(|h| &h.stats)
    }

    /// Derives the snapshot afresh from every host, ignoring the incremental one; it always equals
    /// [`Monitor::snapshot`], which tests check.
    #[doc(hidden)]
    pub fn snapshot_from_scratch(&self) -> Snapshot {
        self.derive()
    }

    fn derive(&self) -> Snapshot {
        let inputs: Vec<HostInput<'_>> =
            self.hosts.iter().map(|h| HostInput { id: &h.id, health: h.health, last: h.last.as_ref() }).collect();
        Snapshot::derive_timed(self.ready, &inputs, &self.times(), self.settings)
    }

    fn times(&self) -> Vec<HostTimes<'_>> {
        self.hosts.iter().map(|h| HostTimes { observed_at: h.last_success, wal_history: &h.wal_history }).collect()
    }

    /// The split brain to declare, given the healthy `claims` (DESIGN 4): only claims that were all confirmed
    /// by iterations begun after the newest claim was first seen. An older claimant's last word may predate
    /// a promotion (an ordinary failover looks exactly like that for a moment), so it is polled again at once
    /// and its answer decides: a failed poll ends its claim. Until then the split brain declared before (if
    /// its hosts still claim) stands.
    fn confirmed_split(&mut self, claims: Vec<HostIndex>, now: Instant) -> Vec<HostIndex> {
        if claims.len() < 2 {
            return Vec::new();
        }
        let Some(newest) = claims.iter().filter_map(|&i| self.hosts[i].claim_since).max() else { return claims };
        let stale: Vec<HostIndex> =
            claims.iter().copied().filter(|&i| self.hosts[i].evidence_started.is_none_or(|at| at < newest)).collect();
        if stale.is_empty() {
            return claims;
        }
        for i in stale {
            self.poll_again(i, newest, now);
        }
        let kept: Vec<HostIndex> = self.split_brain.iter().copied().filter(|i| claims.contains(i)).collect();
        if kept.len() > 1 {
            kept
        } else {
            Vec::new()
        }
    }

    /// Updates the snapshot after host `changed` finished an iteration and announces the sync and
    /// split-brain changes it shows.
    fn refresh_view(&mut self, changed: HostIndex, became_ready: bool, now: Instant) {
        let inputs: Vec<HostInput<'_>> =
            self.hosts.iter().map(|h| HostInput { id: &h.id, health: h.health, last: h.last.as_ref() }).collect();
        let times: Vec<HostTimes<'_>> =
            self.hosts.iter().map(|h| HostTimes { observed_at: h.last_success, wal_history: &h.wal_history }).collect();
        let all = self.current.update(self.ready, &inputs, &times, changed);
        let snapshot = &self.current;
        // Sync state is announced from readiness on: before it, a replica polled ahead of the master would
        // be judged without the master's WAL position and announced out of sync for a moment.
        let range = if !self.ready {
            0..0
        } else if all || became_ready {
            0..self.hosts.len()
        } else {
            changed.get()..changed.get() + 1
        };
        for (h, status) in self.hosts[range.clone()].iter_mut().zip(&snapshot.hosts[range]) {
            if status.role != Some(Role::Replica) || h.health == Health::Dead {
                continue;
            }
            let name = &h.id.name;
            if h.announced.sync_time != Some(status.sync_by_time) {
                h.announced.sync_time = Some(status.sync_by_time);
                let transition = if status.sync_by_time { Transition::SyncInTime } else { Transition::OutOfSyncInTime };
                self.events.push_back(Event::Transition { host: name.clone(), transition });
            }
            if h.announced.sync_bytes != Some(status.sync_by_bytes) {
                h.announced.sync_bytes = Some(status.sync_by_bytes);
                let transition =
                    if status.sync_by_bytes { Transition::SyncInBytes } else { Transition::OutOfSyncInBytes };
                self.events.push_back(Event::Transition { host: name.clone(), transition });
            }
        }
        let claims: Vec<HostIndex> = snapshot.claimed_masters().collect();
        for (i, h) in HostIndex::all(self.hosts.len()).zip(&mut self.hosts) {
            if claims.contains(&i) {
                h.claim_since.get_or_insert(now);
            } else {
                h.claim_since = None;
            }
        }
        let split = self.confirmed_split(claims, now);
        if split != self.split_brain {
            if split.is_empty() {
                self.events.push_back(Event::SplitBrainEnded);
            } else {
                let masters = split.iter().map(|&i| self.hosts[i].id.name.clone()).collect();
                self.events.push_back(Event::SplitBrain { masters });
            }
            self.split_brain = split;
        }
        self.dirty = true;
    }
}
