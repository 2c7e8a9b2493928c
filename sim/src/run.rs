//! The runner: builds the turmoil world (one simulated PostgreSQL server per node, the sidecar's real poll
//! driver as the client), plays a scenario's actions, advances the cluster model, and asks the oracle at
//! every step. Everything it prints comes from simulated time and the seed, so a seed replays byte for byte.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::{Arc, Once};
use std::time::Duration;

use pg_status::clock::{Clock, LocalBoxFuture};
use pg_status::poller::driver::{Driver, EventLog};
use pg_status::poller::runtime::Runtime;
use pg_status_core::config::{Config, ConfigError, SplitBrainPolicy};
use pg_status_core::monitor::{Event, PollError, PollId};
use pg_status_core::observation::{Observation, Role};
use pg_status_core::select::Choice;
use pg_status_core::snapshot::Snapshot;
use pg_status_core::HostIndex;

use crate::model::{Cluster, NodeRole, NodeServer, SharedCluster, PASSWORD, PG_PORT};
use crate::oracle::{Answers, Oracle, PollRecord, Truth, Violation};
use crate::reader::{self, ReadPlan, ReadRecord, ReadShares};
use crate::rng::Rng;
use crate::runtime::TurmoilRuntime;
use crate::scenario::{self, ScenarioError, Script};
use crate::world::{Link, World};

/// Simulated time per turmoil step. Timers fire at their exact instant within a step; only message delivery
/// is rounded to steps. Two milliseconds halve the cost of a run against one, at no loss for timeouts of
/// hundreds of milliseconds.
pub const TICK_MS: u64 = 2;
/// The turmoil name of the sidecar.
pub(crate) const SIDECAR: &str = "sidecar";
/// The password a changed node accepts instead of the sidecar's.
pub(crate) const ROTATED_PASSWORD: &str = "rotated";

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
        // In time by the monitor's own definition, on the same clock readings it uses (the paused simulated
        // clock does not move within a poll of the driver).
        let in_time = pg_status_core::monitor::in_time(elapsed, Duration::from_millis(self.timeout_ms));
        let index = self.names.iter().position(|n| n == host).unwrap_or(id.host.get());
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
        ("pg_status__fast_sleep_ms", s.fast_sleep_ms.to_string()),
        ("pg_status__fast_window_ms", s.fast_window_ms.to_string()),
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
    let name = |i: HostIndex| names.get(i.get()).map_or("?", String::as_str);
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
    install_panic_hook();
    let mut runner = Runner::new(seed, name, options)?;
    IN_SIM.with(|f| f.set(true));
    PANIC.with(|p| p.borrow_mut().take());
    while runner.step() {}
    IN_SIM.with(|f| f.set(false));
    Ok(runner.finish())
}

/// One run in progress: the world, the oracle, and what the runner remembers between steps.
struct Runner<'a> {
    seed: u64,
    options: Options,
    script: Script,
    names: Vec<String>,
    cluster: SharedCluster,
    world: World<'a>,
    oracle: Oracle,
    observed: Rc<RefCell<Observed>>,
    reads: Rc<RefCell<Vec<ReadRecord>>>,
    trace: Vec<String>,
    /// The next scenario action to play.
    next_action: usize,
    /// When the calm phase began.
    calm_since: Option<u64>,
    /// Per node, since when it has answered (see [`World::truth`]).
    answering_since: Vec<u64>,
    /// Which nodes answer and their roles, at the last step, and since when that holds.
    truth_key: Vec<(bool, bool, NodeRole)>,
    stable_since: u64,
    last_snapshot: Option<Arc<Snapshot>>,
    /// The answers at the last snapshot, and the last ones the trace showed.
    answers: Answers,
    shown: Answers,
    violations_shown: usize,
    shares: ReadShares,
}

impl<'a> Runner<'a> {
    /// Builds the world for scenario `name` with `seed`: the nodes' servers and the sidecar.
    fn new(seed: u64, name: &str, options: Options) -> Result<Runner<'a>, RunError> {
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
        let trace = vec![format!("seed {seed}, scenario {}: {}", script.name, s)];
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
        let world = World {
            sim,
            cluster: cluster.clone(),
            names: names.clone(),
            links: vec![Link::Healthy; n],
            latency: vec![0; n],
            net_delay_ms: s.net_delay_ms,
            touched: vec![0; n],
        };
        let oracle = Oracle::new(names.clone(), s).with_refreshes(script.reads.is_some_and(|r| r.wait_ms > 0));
        Ok(Runner {
            seed,
            options,
            script,
            names,
            cluster,
            world,
            oracle,
            observed,
            reads,
            trace,
            next_action: 0,
            calm_since: None,
            answering_since: vec![0; n],
            truth_key: Vec::new(),
            stable_since: 0,
            last_snapshot: None,
            answers: Answers::default(),
            shown: Answers::default(),
            violations_shown: 0,
            shares: ReadShares::default(),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.world.sim.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn line(&mut self, at: u64, who: &str, text: &str) {
        self.trace.push(format!("{at:>7} ms  {who:<9} {text}"));
    }

    /// One turmoil step with everything around it: the scenario's due actions (and the healing when the calm
    /// phase starts), the cluster model, then the oracle on what the sidecar reported. False once the run
    /// is over.
    fn step(&mut self) -> bool {
        let now = self.now();
        if now >= self.script.end_ms {
            return false;
        }
        self.play_due(now);
        self.cluster.borrow_mut().advance(now);
        if self.options.verbose && now % 1000 < TICK_MS {
            self.show_state(now);
        }
        let stepped = self.world.sim.step();
        let now = self.now();
        if let Some(message) = PANIC.with(|p| p.borrow_mut().take()) {
            self.oracle.external(now, "no input makes the program panic", message);
        }
        if let Err(e) = stepped {
            self.oracle.external(now, "the simulation runs to its end", e.to_string());
            return false;
        }
        self.check(now);
        true
    }

    /// Plays the scenario's actions due at `now`, and heals everything when the calm phase starts.
    fn play_due(&mut self, now: u64) {
        while let Some((_, action)) = self.script.actions.get(self.next_action).filter(|(at, _)| *at <= now) {
            let action = action.clone();
            if self.world.apply(now, &action) {
                let text = action.describe(&self.names);
                self.line(now, "cluster", &text);
            }
            self.next_action += 1;
        }
        if self.calm_since.is_none() && now >= self.script.calm_at_ms {
            self.line(now, "cluster", "calm phase: every fault ends, the cluster is healed");
            for action in self.world.healing() {
                if self.world.apply(now, &action) {
                    let text = action.describe(&self.names);
                    self.line(now, "cluster", &text);
                }
            }
            self.calm_since = Some(now);
        }
    }

    /// The cluster's state in one trace line.
    fn show_state(&mut self, now: u64) {
        let c = self.cluster.borrow();
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
        self.line(now, "cluster", &text);
    }

    /// Hands the oracle what the sidecar reported in the last step (polls, log lines, reads, a new snapshot)
    /// and the truth, and copies new violations into the trace.
    fn check(&mut self, now: u64) {
        let verbose = self.options.verbose;
        let (polls, events, snapshots) = {
            let mut o = self.observed.borrow_mut();
            (std::mem::take(&mut o.polls), std::mem::take(&mut o.events), o.snapshots.clone())
        };
        for p in &polls {
            self.oracle.record(p);
            if verbose {
                let text = describe_poll(&self.names, p);
                self.line(p.at_ms, "poll", &text);
            }
        }
        for (at, e) in &events {
            self.oracle.logged(*at, e);
            self.line(*at, "pg-status", e);
        }
        let reads = std::mem::take(&mut *self.reads.borrow_mut());
        for read in reads {
            self.oracle.check_read(&read);
            self.shares.count(&read);
            if verbose {
                let text = describe_read(&self.names, &read);
                self.line(read.answered_ms, "client", &text);
            }
        }
        let Some(snapshots) = snapshots else { return };
        let snapshot = snapshots();
        if self.last_snapshot.as_ref().is_none_or(|l| !Arc::ptr_eq(l, &snapshot)) {
            self.answers = self.oracle.check_snapshot(now, &snapshot);
            self.last_snapshot = Some(snapshot.clone());
            if self.answers != self.shown && snapshot.ready {
                let show = |a: &Option<String>| a.clone().unwrap_or_else(|| "404".to_owned());
                let text = format!("/master -> {}; hosts {}", show(&self.answers.master), self.answers.hosts);
                self.line(now, "answer", &text);
                self.shown = self.answers.clone();
            }
        }
        let s = self.script.settings;
        let nodes = self.world.truth(now, &mut self.answering_since, s.query_timeout_ms);
        let key: Vec<(bool, bool, NodeRole)> = nodes.iter().map(|t| (t.answering, t.certain, t.role)).collect();
        if key != self.truth_key {
            self.truth_key = key;
            self.stable_since = now;
        }
        let truth = Truth { nodes, stable_since_ms: self.stable_since, calm_since_ms: self.calm_since };
        let master = self.answers.master.as_ref().and_then(|m| self.names.iter().position(|n| n == m));
        self.oracle.check_truth(now, &truth, &snapshot, master);
        for v in &self.oracle.violations()[self.violations_shown..] {
            self.trace.push(format!("{:>7} ms  VIOLATION {}: {}", v.at_ms, v.invariant, v.detail));
        }
        self.violations_shown = self.oracle.violations().len();
    }

    /// The report: the trace with its summary lines, the violations and the measurements.
    fn finish(mut self) -> Report {
        let s = self.script.settings;
        let bound = s.sleep_ms + s.query_timeout_ms;
        let latencies = self.oracle.failover_latencies.clone();
        if !latencies.is_empty() {
            self.trace.push(format!(
                "failover detection latencies: {latencies:?} ms (bound sleep_ms + query_timeout_ms = {bound} ms, \
                 plus network delay)"
            ));
        }
        if !self.oracle.episode_latencies().is_empty() {
            self.trace.push(format!(
                "during failover episodes, /master followed the new master after {:?} ms (fast_sleep_ms = {} ms)",
                self.oracle.episode_latencies(),
                s.fast_sleep_ms
            ));
        }
        if let Some(plan) = self.script.reads {
            self.trace.push(format!(
                "read-your-writes with wait_ms={}: {} requests, {:.1}% answered by a replica ({:.1}% without \
                 waiting), longest wait {} ms",
                plan.wait_ms,
                self.shares.requests,
                self.shares.replica_percent(),
                self.shares.at_once_percent(),
                self.shares.longest_ms
            ));
        }
        Report {
            seed: self.seed,
            scenario: self.script.name.clone(),
            trace: self.trace,
            violations: self.oracle.violations().to_vec(),
            failover_latencies: latencies,
            failover_bound_ms: bound,
            late_timers_ms: self.options.late_timers_ms,
            ssl_mode: self.options.ssl_mode,
            split_brain: self.options.split_brain,
            reads: self.script.reads.map(|_| self.shares),
        }
    }
}
