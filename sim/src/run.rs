//! The runner: builds the turmoil world (one simulated PostgreSQL server per node, the sidecar's real poll
//! driver as the client), plays a scenario's actions, advances the cluster model, and asks the oracle at
//! every step. Everything it prints comes from simulated time and the seed, so a seed replays byte for byte.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::{Arc, Once};
use std::time::Duration;

use pg_status::driver::{Driver, EventLog};
use pg_status::rt::{Clock, LocalBoxFuture, Runtime};
use pg_status_core::cluster::Snapshot;
use pg_status_core::config::{Config, ConfigError, SplitBrainPolicy};
use pg_status_core::monitor::{Event, PollError, PollId};
use pg_status_core::observation::{Observation, Role};
use pg_status_core::select::Choice;

use crate::model::{Cluster, NodeRole, NodeServer, SharedCluster, PASSWORD, PG_PORT};
use crate::oracle::{Answers, NodeTruth, Oracle, PollRecord, Truth, Violation};
use crate::reader::{self, ReadPlan, ReadRecord, ReadShares};
use crate::rng::Rng;
use crate::runtime::TurmoilRuntime;
use crate::scenario::{self, Action, ScenarioError, Script};

/// Simulated time per turmoil step. Timers fire at their exact instant within a step; only message delivery
/// is rounded to steps. Two milliseconds halve the cost of a run against one, at no loss for timeouts of
/// hundreds of milliseconds.
pub const TICK_MS: u64 = 2;
/// The turmoil name of the sidecar.
const SIDECAR: &str = "sidecar";
/// The password a changed node accepts instead of the sidecar's.
const ROTATED_PASSWORD: &str = "rotated";

/// Why a run could not even start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The scenario does not exist.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// The sidecar's configuration was refused (a bug in the runner's settings).
    #[error("the sidecar's configuration was refused: {0}")]
    Config(#[from] ConfigError),
}

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The scenario's name.
    pub scenario: String,
    /// The timeline: what the cluster did, what pg-status saw and answered.
    pub trace: Vec<String>,
    /// Broken invariants, in the order found.
    pub violations: Vec<Violation>,
    /// Failover detection latencies measured in this run, in ms.
    pub failover_latencies: Vec<u64>,
    /// The failover bound of this run's settings without network delay: sleep_ms + query_timeout_ms.
    pub failover_bound_ms: u64,
    /// The run's deliberately late timers (see [`Options::late_timers_ms`]), for the replay command.
    pub late_timers_ms: u64,
    /// The run's `PGSSLMODE` when it was not drawn from the seed, for the replay command.
    pub ssl_mode: Option<&'static str>,
    /// The run's `pg_status__split_brain` when it was not drawn from the seed, for the replay command.
    pub split_brain: Option<SplitBrainPolicy>,
    /// How the read-your-writes client's requests were answered, when the scenario has one.
    pub reads: Option<ReadShares>,
}

impl Report {
    /// True when every invariant held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The command that replays this run with its full trace.
    pub fn replay_command(&self) -> String {
        let mut command =
            format!("cargo run -p pg-status-sim -- --seed {} --scenario {} --trace", self.seed, self.scenario);
        if let Some(mode) = self.ssl_mode {
            command.push_str(" --sslmode ");
            command.push_str(mode);
        }
        if let Some(policy) = self.split_brain {
            command.push_str(" --split-brain ");
            command.push_str(policy.as_str());
        }
        if self.late_timers_ms > 0 {
            command.push_str(&format!(" --late-timers-ms {}", self.late_timers_ms));
        }
        command
    }
}

/// What the sidecar's driver reports, collected for the runner between steps.
#[derive(Default)]
struct Observed {
    polls: Vec<PollRecord>,
    events: Vec<(u64, String)>,
    /// Loads the snapshot the driver published last (the driver's publication type stays its own business).
    snapshots: Option<Rc<dyn Fn() -> Arc<Snapshot>>>,
}

/// The driver's event log inside the simulation: timestamps in simulated ms, everything kept for the runner.
struct SimLog {
    observed: Rc<RefCell<Observed>>,
    names: Vec<String>,
    timeout_ms: u64,
}

fn sim_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl EventLog for SimLog {
    fn event(&mut self, event: &Event) {
        self.observed.borrow_mut().events.push((sim_ms(), event.to_string()));
    }

    fn poll_finished(&mut self, host: &str, id: PollId, elapsed: Duration, result: &Result<Observation, PollError>) {
        let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        // The monitor counts a success after the deadline as a timeout; the elapsed time is measured on the
        // same clock readings it uses (the paused simulated clock does not move within a poll of the driver).
        let in_time = elapsed <= Duration::from_millis(self.timeout_ms);
        let index = self.names.iter().position(|n| n == host).unwrap_or(id.host);
        let result = result.clone().map_err(|e| format!("{}: {}", e.kind.as_str(), e.message));
        self.observed.borrow_mut().polls.push(PollRecord { host: index, at_ms: sim_ms(), elapsed_ms, result, in_time });
    }
}

thread_local! {
    /// The first panic message seen on this thread while a simulation runs on it.
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    static IN_SIM: Cell<bool> = const { Cell::new(false) };
}

/// Installs (once per process) a panic hook that records panics of simulated code, so a panic inside a
/// detached poll task, which tokio would swallow, still fails the run.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_SIM.with(Cell::get) {
                // `try_borrow_mut`: a panic while the runner reads the slot must not turn into a double panic.
                PANIC.with(|p| {
                    if let Ok(mut slot) = p.try_borrow_mut() {
                        slot.get_or_insert_with(|| info.to_string());
                    }
                });
            }
            previous(info);
        }));
    });
}

/// The state of the sidecar's link to one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Healthy,
    Partitioned,
    Held,
}

struct World<'a> {
    sim: turmoil::Sim<'a>,
    cluster: SharedCluster,
    names: Vec<String>,
    links: Vec<Link>,
    latency: Vec<u64>,
    net_delay_ms: u64,
    /// When each node was last touched by an action.
    touched: Vec<u64>,
}

impl World<'_> {
    fn apply(&mut self, now: u64, action: &Action) -> bool {
        let name = |i: usize| self.names[i].clone();
        let mut c = self.cluster.borrow_mut();
        let node = match action {
            Action::Crash(i)
            | Action::Restart(i)
            | Action::Promote(i)
            | Action::Demote(i)
            | Action::Partition(i)
            | Action::Repair(i)
            | Action::Hold(i)
            | Action::Release(i)
            | Action::Latency(i, _)
            | Action::SlowReply(i, _)
            | Action::PauseReplay(i, _)
            | Action::Stall(i, _)
            | Action::WrongPassword(i, _)
            | Action::Impostor(i, _)
            | Action::RevokeReceiverView(i, _) => Some(*i),
            Action::Load(_) | Action::Writing(_) => None,
        };
        if let Some(i) = node {
            if i >= c.nodes.len() {
                return false;
            }
            self.touched[i] = now;
        }
        match *action {
            Action::Crash(i) if c.nodes[i].up => {
                c.nodes[i].up = false;
                drop(c);
                self.sim.crash(name(i));
            }
            Action::Restart(i) if !c.nodes[i].up => {
                c.nodes[i].up = true;
                c.nodes[i].end_sessions();
                drop(c);
                self.sim.bounce(name(i));
            }
            Action::Promote(i) if c.nodes[i].up && c.nodes[i].role == NodeRole::Replica => c.promote(i),
            Action::Demote(i) if c.nodes[i].role == NodeRole::Master => c.demote(i),
            Action::Partition(i) => {
                self.links[i] = Link::Partitioned;
                self.sim.partition(SIDECAR, name(i));
            }
            Action::Repair(i) if self.links[i] == Link::Partitioned => {
                self.links[i] = Link::Healthy;
                self.sim.repair(SIDECAR, name(i));
            }
            Action::Hold(i) if self.links[i] == Link::Healthy => {
                self.links[i] = Link::Held;
                self.sim.hold(SIDECAR, name(i));
            }
            Action::Release(i) if self.links[i] == Link::Held => {
                self.links[i] = Link::Healthy;
                self.sim.release(SIDECAR, name(i));
            }
            Action::Latency(i, ms) => {
                self.latency[i] = ms;
                if ms > 0 {
                    self.sim.set_link_latency(SIDECAR, name(i), Duration::from_millis(ms));
                } else {
                    // Back to the normal spread: min and max must be lowered in this order (min <= max).
                    self.sim.set_link_latency(SIDECAR, name(i), Duration::ZERO);
                    self.sim.set_link_max_message_latency(SIDECAR, name(i), Duration::from_millis(self.net_delay_ms));
                }
            }
            Action::SlowReply(i, ms) => c.nodes[i].slow_reply_ms = ms,
            Action::PauseReplay(i, on) => c.nodes[i].replay_paused = on,
            Action::Stall(i, on) => c.nodes[i].stalled = on,
            Action::WrongPassword(i, on) => {
                let n = &mut c.nodes[i];
                n.password = if on { ROTATED_PASSWORD } else { PASSWORD }.to_owned();
                if on {
                    n.end_sessions();
                }
            }
            Action::Impostor(i, on) => {
                let n = &mut c.nodes[i];
                n.impostor = on;
                // Whoever took the address over also took the connections: the next poll connects anew.
                n.end_sessions();
            }
            Action::RevokeReceiverView(i, on) => c.nodes[i].receiver_view_revoked = on,
            Action::Load(f) => c.load = f,
            Action::Writing(on) => c.writing = on,
            _ => return false,
        }
        true
    }

    /// The actions that end every fault: the calm phase's healing, as an operator (or Patroni) would do it.
    fn healing(&self) -> Vec<Action> {
        let c = self.cluster.borrow();
        let mut a = vec![Action::Load(1), Action::Writing(true)];
        for (i, n) in c.nodes.iter().enumerate() {
            if !n.up {
                a.push(Action::Restart(i));
            }
            match self.links[i] {
                Link::Partitioned => a.push(Action::Repair(i)),
                Link::Held => a.push(Action::Release(i)),
                Link::Healthy => {}
            }
            if self.latency[i] > 0 {
                a.push(Action::Latency(i, 0));
            }
            if n.slow_reply_ms > 0 {
                a.push(Action::SlowReply(i, 0));
            }
            if n.replay_paused {
                a.push(Action::PauseReplay(i, false));
            }
            if n.stalled {
                a.push(Action::Stall(i, false));
            }
            if n.password != PASSWORD {
                a.push(Action::WrongPassword(i, false));
            }
            if n.impostor {
                a.push(Action::Impostor(i, false));
            }
            if n.receiver_view_revoked {
                a.push(Action::RevokeReceiverView(i, false));
            }
        }
        // Exactly one master: the one on the highest timeline stays; without one, the most advanced replica
        // is promoted.
        let masters: Vec<usize> = (0..c.nodes.len()).filter(|&i| c.nodes[i].role == NodeRole::Master).collect();
        let keep = masters.iter().copied().max_by_key(|&i| (c.nodes[i].timeline, std::cmp::Reverse(i)));
        match keep {
            Some(k) => a.extend(masters.iter().filter(|&&i| i != k).map(|&i| Action::Demote(i))),
            None => {
                let best = (0..c.nodes.len()).max_by_key(|&i| (c.nodes[i].receive_lsn, std::cmp::Reverse(i)));
                a.extend(best.map(Action::Promote));
            }
        }
        a
    }

    fn truth(&self, now: u64, answering_since: &mut [u64], timeout_ms: u64) -> Vec<NodeTruth> {
        let c = self.cluster.borrow();
        c.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let answering = n.up
                    && self.links[i] == Link::Healthy
                    && n.slow_reply_ms == 0
                    && n.password == PASSWORD
                    && !n.impostor
                    && self.latency[i] * 20 <= timeout_ms;
                // A reply or a link slower than normal but not beyond the deadline may or may not make an
                // iteration fail (a new connection costs more round trips than a reused one): no claim is
                // made about such a node either way.
                // Sessions ended since the sidecar last connected: its next poll on the old session fails, a
                // failure still to come, so no claim is made until it has connected again.
                let answering = answering && n.fresh_session;
                let certain = answering
                    || !n.up
                    || self.links[i] != Link::Healthy
                    || n.password != PASSWORD
                    || n.impostor
                    || n.slow_reply_ms >= timeout_ms
                    || self.latency[i] >= timeout_ms;
                if !answering {
                    answering_since[i] = u64::MAX;
                } else if answering_since[i] == u64::MAX || self.touched[i] > answering_since[i] {
                    answering_since[i] = now.max(self.touched[i]);
                }
                NodeTruth {
                    answering,
                    certain,
                    answering_since_ms: answering_since[i],
                    role: n.role,
                    connections: n.connections,
                    latency_ms: self.latency[i],
                    timeline: n.timeline,
                }
            })
            .collect()
    }
}

fn config(script: &Script, names: &[String]) -> Result<Config, ConfigError> {
    let s = script.settings;
    let vars = [
        ("pg_status__hosts", names.join(",")),
        ("pg_status__pg_port", PG_PORT.to_string()),
        ("pg_status__pg_user", crate::model::USER.to_owned()),
        ("pg_status__pg_password", PASSWORD.to_owned()),
        ("pg_status__sleep_ms", s.sleep_ms.to_string()),
        ("pg_status__query_timeout_ms", s.query_timeout_ms.to_string()),
        ("pg_status__max_fails", s.max_fails.to_string()),
        ("pg_status__conn_max_age_ms", s.conn_max_age_ms.to_string()),
        ("pg_status__sync_max_lag_ms", s.sync_max_lag_ms.to_string()),
        ("pg_status__sync_max_lag_bytes", s.sync_max_lag_bytes.to_string()),
        ("pg_status__split_brain", s.split_brain().as_str().to_owned()),
        ("PGSSLMODE", s.ssl_mode.to_owned()),
    ];
    Config::from_vars(vars)
}

fn describe_poll(names: &[String], p: &PollRecord) -> String {
    let host = &names[p.host];
    match &p.result {
        Ok(o) if p.in_time => {
            let lsn = |l: Option<pg_status_core::lsn::Lsn>| l.map_or("null".to_owned(), |l| l.to_string());
            match o.role {
                Role::Master => format!(
                    "{host} ok: master lsn {} timeline {} ({} ms)",
                    lsn(o.current_lsn),
                    o.timeline.map_or("?".to_owned(), |t| t.to_string()),
                    p.elapsed_ms
                ),
                Role::Replica => format!(
                    "{host} ok: replica receive {} replay {} delay {} ms ({} ms)",
                    lsn(o.receive_lsn),
                    lsn(o.replay_lsn),
                    o.replay_delay_ms.map_or("null".to_owned(), |d| d.to_string()),
                    p.elapsed_ms
                ),
            }
        }
        Ok(_) => format!("{host} answered after the deadline ({} ms)", p.elapsed_ms),
        Err(e) => format!("{host} failed after {} ms: {e}", p.elapsed_ms),
    }
}

/// Everything the sidecar's side of the simulation runs: the production poll driver and, when the scenario has
/// one, the read-your-writes client waiting on its publications.
struct Sidecar {
    config: Config,
    log: SimLog,
    observed: Rc<RefCell<Observed>>,
    cluster: SharedCluster,
    plan: Option<ReadPlan>,
    reads: Rc<RefCell<Vec<ReadRecord>>>,
}

impl Sidecar {
    async fn run<R: Runtime>(self, rt: R) {
        let driver = Driver::new(rt.clone(), &self.config, self.log);
        let published = driver.published();
        if let Some(plan) = self.plan {
            let client = reader::run(rt, published.clone(), self.cluster, plan, self.reads, sim_ms);
            drop(tokio::task::spawn_local(client));
        }
        self.observed.borrow_mut().snapshots = Some(Rc::new(move || arc_swap::Guard::into_inner(published.load())));
        driver.run(std::future::pending::<()>()).await;
    }
}

fn describe_read(names: &[String], read: &ReadRecord) -> String {
    let name = |i: usize| names.get(i).map_or("?", String::as_str);
    let answer = match read.answer {
        Ok(Choice::Replica(i)) => format!("replica {}", name(i)),
        Ok(Choice::Master(i)) => format!("master {}", name(i)),
        Ok(Choice::Nothing) => "404".to_owned(),
        Err(status) => status.to_string(),
    };
    format!(
        "/replica?min_lsn={}&wait_ms={} -> {answer} after {} ms",
        read.min_lsn,
        read.wait_ms,
        read.answered_ms.saturating_sub(read.issued_ms)
    )
}

/// Runs scenario `name` with `seed`. With `verbose`, the trace also shows every poll and the cluster's state
/// once a second.
pub fn run(seed: u64, name: &str, verbose: bool) -> Result<Report, RunError> {
    run_with(seed, name, Options { verbose, ..Options::default() })
}

/// How to run a simulation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Show every poll and the cluster's state once a second.
    pub verbose: bool,
    /// Make the sidecar's timers fire this much late: a deliberately broken runtime, to show that the
    /// oracle notices (0 for the real thing).
    pub late_timers_ms: u64,
    /// `PGSSLMODE` instead of the one drawn from the seed (`disable`, `prefer`, `allow`).
    pub ssl_mode: Option<&'static str>,
    /// `pg_status__split_brain` instead of the one drawn from the seed.
    pub split_brain: Option<SplitBrainPolicy>,
}

/// The turmoil runtime with timers that fire late by a fixed amount (see [`Options::late_timers_ms`]).
#[derive(Clone)]
struct LateTimers {
    inner: TurmoilRuntime,
    late: Duration,
}

impl Clock for LateTimers {
    fn now(&self) -> std::time::Instant {
        self.inner.now()
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> LocalBoxFuture<()> {
        self.inner.sleep_until(deadline + self.late)
    }
}

impl Runtime for LateTimers {
    type Stream = <TurmoilRuntime as Runtime>::Stream;

    fn connect(&self, host: &str, port: u16) -> LocalBoxFuture<std::io::Result<Self::Stream>> {
        self.inner.connect(host, port)
    }

    fn spawn(&self, future: LocalBoxFuture<()>) {
        self.inner.spawn(future);
    }
}

/// Runs scenario `name` with `seed` and `options`.
pub fn run_with(seed: u64, name: &str, options: Options) -> Result<Report, RunError> {
    let verbose = options.verbose;
    install_panic_hook();
    let mut script = scenario::build(name, seed)?;
    if let Some(mode) = options.ssl_mode {
        script.settings.ssl_mode = mode;
    }
    if let Some(policy) = options.split_brain {
        script.settings.policy = policy;
    }
    let s = script.settings;
    let mut rng = Rng::new(seed).fork();
    let cluster: SharedCluster = Rc::new(RefCell::new(Cluster::new(s.nodes, &mut rng)));
    let names: Vec<String> = cluster.borrow().nodes.iter().map(|n| n.name.clone()).collect();
    let config = config(&script, &names)?;

    let mut trace = Vec::new();
    trace.push(format!("seed {seed}, scenario {}: {}", script.name, s));
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .tick_duration(Duration::from_millis(TICK_MS))
        .simulation_duration(Duration::from_millis(script.end_ms + 60_000))
        .min_message_latency(Duration::ZERO)
        .max_message_latency(Duration::from_millis(s.net_delay_ms))
        .build();
    for (i, n) in names.iter().enumerate() {
        let cluster = cluster.clone();
        sim.host(n.as_str(), move || NodeServer::new(cluster.clone(), i).run());
    }
    let observed = Rc::new(RefCell::new(Observed::default()));
    let reads: Rc<RefCell<Vec<ReadRecord>>> = Rc::default();
    {
        let observed = observed.clone();
        let log = SimLog { observed: observed.clone(), names: names.clone(), timeout_ms: s.query_timeout_ms };
        let (cluster, reads) = (cluster.clone(), reads.clone());
        let plan = script.reads;
        sim.client(SIDECAR, async move {
            let late = Duration::from_millis(options.late_timers_ms);
            let sidecar = Sidecar { config, log, observed, cluster, plan, reads };
            if late.is_zero() {
                sidecar.run(TurmoilRuntime).await;
            } else {
                sidecar.run(LateTimers { inner: TurmoilRuntime, late }).await;
            }
            Ok(())
        });
    }

    let n = names.len();
    let mut world = World {
        sim,
        cluster: cluster.clone(),
        names: names.clone(),
        links: vec![Link::Healthy; n],
        latency: vec![0; n],
        net_delay_ms: s.net_delay_ms,
        touched: vec![0; n],
    };
    let mut oracle = Oracle::new(names.clone(), s);
    let mut next_action = 0;
    let mut calm_since = None;
    let mut answering_since = vec![0u64; n];
    let mut truth_key: Vec<(bool, bool, NodeRole)> = Vec::new();
    let mut stable_since = 0;
    let mut last_snapshot: Option<Arc<Snapshot>> = None;
    let mut answers = Answers::default();
    let mut shown = Answers::default();
    let mut violations_shown = 0;
    let mut shares = ReadShares::default();
    let line = |trace: &mut Vec<String>, at: u64, who: &str, text: &str| {
        trace.push(format!("{at:>7} ms  {who:<9} {text}"));
    };
    IN_SIM.with(|f| f.set(true));
    PANIC.with(|p| p.borrow_mut().take());

    loop {
        let now = u64::try_from(world.sim.elapsed().as_millis()).unwrap_or(u64::MAX);
        if now >= script.end_ms {
            break;
        }
        while let Some((at, action)) = script.actions.get(next_action).filter(|(at, _)| *at <= now) {
            let _ = at;
            if world.apply(now, action) {
                line(&mut trace, now, "cluster", &action.describe(&names));
            }
            next_action += 1;
        }
        if calm_since.is_none() && now >= script.calm_at_ms {
            line(&mut trace, now, "cluster", "calm phase: every fault ends, the cluster is healed");
            for action in world.healing() {
                if world.apply(now, &action) {
                    line(&mut trace, now, "cluster", &action.describe(&names));
                }
            }
            calm_since = Some(now);
        }
        cluster.borrow_mut().advance(now);
        if verbose && now % 1000 < TICK_MS {
            let c = cluster.borrow();
            let mut text = String::from("state:");
            for (i, node) in c.nodes.iter().enumerate() {
                let _ = write!(
                    text,
                    " {} {}{} tl{} {}",
                    node.name,
                    if node.up { "" } else { "down " },
                    node.role,
                    node.timeline,
                    pg_status_core::lsn::Lsn(node.lsn())
                );
                if node.role == NodeRole::Replica {
                    let _ = write!(text, " (lag {} B)", c.true_lag_bytes(i));
                }
                text.push(';');
            }
            drop(c);
            line(&mut trace, now, "cluster", &text);
        }

        let stepped = world.sim.step();
        let now = u64::try_from(world.sim.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let Some(message) = PANIC.with(|p| p.borrow_mut().take()) {
            oracle.external(now, "no input makes the program panic", message);
        }
        if let Err(e) = stepped {
            oracle.external(now, "the simulation runs to its end", e.to_string());
            break;
        }

        let (polls, events, snapshots) = {
            let mut o = observed.borrow_mut();
            (std::mem::take(&mut o.polls), std::mem::take(&mut o.events), o.snapshots.clone())
        };
        for p in &polls {
            oracle.record(p);
            if verbose {
                line(&mut trace, p.at_ms, "poll", &describe_poll(&names, p));
            }
        }
        for (at, e) in &events {
            oracle.logged(e);
            line(&mut trace, *at, "pg-status", e);
        }
        for read in std::mem::take(&mut *reads.borrow_mut()) {
            oracle.check_read(&read);
            shares.count(&read);
            if verbose {
                line(&mut trace, read.answered_ms, "client", &describe_read(&names, &read));
            }
        }
        let Some(snapshots) = snapshots else { continue };
        let snapshot = snapshots();
        if last_snapshot.as_ref().is_none_or(|l| !Arc::ptr_eq(l, &snapshot)) {
            answers = oracle.check_snapshot(now, &snapshot);
            last_snapshot = Some(snapshot.clone());
            if answers != shown && snapshot.ready {
                let show = |a: &Option<String>| a.clone().unwrap_or_else(|| "404".to_owned());
                line(
                    &mut trace,
                    now,
                    "answer",
                    &format!("/master -> {}; hosts {}", show(&answers.master), answers.hosts),
                );
                shown = answers.clone();
            }
        }

        let nodes = world.truth(now, &mut answering_since, s.query_timeout_ms);
        let key: Vec<(bool, bool, NodeRole)> = nodes.iter().map(|t| (t.answering, t.certain, t.role)).collect();
        if key != truth_key {
            truth_key = key;
            stable_since = now;
        }
        let truth = Truth { nodes, stable_since_ms: stable_since, calm_since_ms: calm_since };
        let master = answers.master.as_ref().and_then(|m| names.iter().position(|n| n == m));
        oracle.check_truth(now, &truth, &snapshot, master);
        for v in &oracle.violations()[violations_shown..] {
            trace.push(format!("{:>7} ms  VIOLATION {}: {}", v.at_ms, v.invariant, v.detail));
        }
        violations_shown = oracle.violations().len();
    }
    IN_SIM.with(|f| f.set(false));
    let bound = s.sleep_ms + s.query_timeout_ms;
    let latencies = oracle.failover_latencies.clone();
    if !latencies.is_empty() {
        trace.push(format!(
            "failover detection latencies: {:?} ms (bound sleep_ms + query_timeout_ms = {bound} ms, plus network delay)",
            latencies
        ));
    }
    if let Some(plan) = script.reads {
        trace.push(format!(
            "read-your-writes with wait_ms={}: {} requests, {:.1}% answered by a replica ({:.1}% without waiting), \
             longest wait {} ms",
            plan.wait_ms,
            shares.requests,
            shares.replica_percent(),
            shares.at_once_percent(),
            shares.longest_ms
        ));
    }
    Ok(Report {
        seed,
        scenario: script.name,
        trace,
        violations: oracle.violations().to_vec(),
        failover_latencies: latencies,
        failover_bound_ms: bound,
        late_timers_ms: options.late_timers_ms,
        ssl_mode: options.ssl_mode,
        split_brain: options.split_brain,
        reads: script.reads.map(|_| shares),
    })
}
