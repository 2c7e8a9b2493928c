//! The oracle: checks DESIGN.md's invariants at every simulated step.
//!
//! It keeps its own reference of what pg-status has seen (every finished poll iteration, as the driver
//! reports it) and asks the pure request handler ([`pg_status_core::http::handle`]) what a client would be
//! told from the published snapshot. Answers are checked against that reference (decision 4's election,
//! decision 3's lag, decision 1's failure counting) and against the cluster model's truth (failover bound,
//! refresh of healthy hosts, connection count, calm-phase convergence).

use pg_status_core::config::SplitBrainPolicy;
use pg_status_core::http::handle;
use pg_status_core::lsn::Lsn;
use pg_status_core::monitor::Warning;
use pg_status_core::observation::{Observation, Receiver, Role};
use pg_status_core::select::Choice;
use pg_status_core::snapshot::{Health, Snapshot};

use crate::model::NodeRole;
use crate::reader::ReadRecord;
use crate::scenario::Settings;

mod episodes;

use episodes::EpisodeChecks;

/// One finished poll iteration, as the driver reported it.
#[derive(Debug, Clone)]
pub struct PollRecord {
    /// Host index.
    pub host: usize,
    /// When it finished, in simulated ms.
    pub at_ms: u64,
    /// How long it took, in ms.
    pub elapsed_ms: u64,
    /// What came back: an observation, or the failure's kind and message.
    pub result: Result<Observation, String>,
    /// Whether the iteration ended within its deadline (a late success counts as a timeout).
    pub in_time: bool,
}

/// An invariant that did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// When, in simulated ms.
    pub at_ms: u64,
    /// Which invariant (a short stable name).
    pub invariant: &'static str,
    /// What was seen.
    pub detail: String,
}

/// What the oracle knows about one host from the poll reports.
#[derive(Debug, Clone, Default)]
struct HostRef {
    /// Consecutive failed iterations.
    fails: u32,
    /// Some iteration ever succeeded.
    ever_ok: bool,
    /// The last successful observation.
    last_ok: Option<Observation>,
    /// When the last successful iteration ended.
    last_ok_ms: Option<u64>,
    /// Failed iterations in total.
    failures: u64,
    /// Some iteration finished.
    finished: bool,
    /// The last state transition pg-status logged for the host (`dead`, `possible dead`, `master`, ...).
    announced: Option<String>,
}

/// The truth about one node at the current step, as the runner derives it from the model and the faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeTruth {
    /// The node answers the sidecar promptly: up, reachable, not hung, not slow, accepting the password.
    pub answering: bool,
    /// Whether `answering` is a claim: false for a node slow enough that an iteration may or may not end in
    /// time (its checks are skipped, and no failover bound is claimed while one exists).
    pub certain: bool,
    /// Since when it has been answering without interruption (meaningful when `answering`).
    pub answering_since_ms: u64,
    /// Its role in the model.
    pub role: NodeRole,
    /// Connections its server accepted so far.
    pub connections: u64,
    /// Extra network delay on its link, one way, in ms.
    pub latency_ms: u64,
    /// Its timeline in the model.
    pub timeline: u32,
    /// When an action last touched the node or its link, in ms.
    pub touched_ms: u64,
    /// Times its server ended every session (restart, demotion, an administrator): each may close the
    /// sidecar's connection and cost a new one without a failed poll.
    pub sessions_ended: u64,
}

/// The truth at the current step.
#[derive(Debug, Clone)]
pub struct Truth {
    /// Per node, in host order.
    pub nodes: Vec<NodeTruth>,
    /// Since when the set of answering nodes and their roles has not changed.
    pub stable_since_ms: u64,
    /// When the calm phase started, once it has.
    pub calm_since_ms: Option<u64>,
}

/// A failover whose detection is being timed: the truth's master changed to `to` at `since_ms`.
#[derive(Debug, Clone, Copy)]
struct PendingFailover {
    to: usize,
    since_ms: u64,
}

/// Checks invariants step by step and measures failover detection.
#[derive(Debug)]
pub struct Oracle {
    names: Vec<String>,
    settings: Settings,
    hosts: Vec<HostRef>,
    violations: Vec<Violation>,
    cursor: usize,
    /// The answering master the truth had at the previous step.
    true_master: Option<usize>,
    /// The last answering master the truth had (a master change is timed from one to the next).
    last_true_master: Option<usize>,
    pending: Option<PendingFailover>,
    /// Measured failover detection latencies, in ms.
    pub failover_latencies: Vec<u64>,
    /// Hosts whose connection count already broke the bound.
    conn_reported: Vec<bool>,
    /// Successful polls that could not read the WAL receiver's view (the server refused it).
    receiver_refused_polls: u64,
    /// Times the warning about the refused view was logged.
    receiver_refused_warnings: u64,
    /// Failover episodes and split brain on fresh evidence.
    episodes: EpisodeChecks,
    /// When an action last touched each node, as of the last step.
    touched: Vec<u64>,
}

/// The answers the oracle asks for at every snapshot, with the ones a trace shows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Answers {
    /// `/master`.
    pub master: Option<String>,
    /// Each host as the snapshot shows it: `M` master, `R` replica, `?` possibly dead, `-` dead or unknown.
    pub hosts: String,
}

impl Oracle {
    /// An oracle for hosts `names` under `settings`.
    pub fn new(names: Vec<String>, settings: Settings) -> Oracle {
        let n = names.len();
        let hosts = vec![HostRef::default(); n];
        let names_for_episodes = names.clone();
        Oracle {
            names,
            settings,
            hosts,
            violations: Vec::new(),
            cursor: 0,
            true_master: None,
            last_true_master: None,
            pending: None,
            failover_latencies: Vec::new(),
            conn_reported: vec![false; n],
            receiver_refused_polls: 0,
            receiver_refused_warnings: 0,
            episodes: EpisodeChecks::new(names_for_episodes, settings, false),
            touched: vec![0; n],
        }
    }

    /// Tells the oracle that a reader with `wait_ms` asks for refreshes in this run (extra polls of the
    /// replicas, spaced by the core's refresh spacing rather than the poll interval).
    pub fn with_refreshes(mut self, refreshes: bool) -> Oracle {
        let names = self.names.clone();
        self.episodes = EpisodeChecks::new(names, self.settings, refreshes);
        self
    }

    /// Promotion-to-/master latencies measured during failover episodes, in ms.
    pub fn episode_latencies(&self) -> &[u64] {
        &self.episodes.fast_latencies
    }

    fn take(&mut self, found: Vec<episodes::Found>) {
        for (at_ms, invariant, detail) in found {
            self.violate(at_ms, invariant, detail);
        }
    }

    /// The violations found so far.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    fn violate(&mut self, at_ms: u64, invariant: &'static str, detail: String) {
        // One report per invariant and detail is enough to replay it; the trace has the rest.
        if self.violations.iter().any(|v| v.invariant == invariant && v.detail == detail) {
            return;
        }
        self.violations.push(Violation { at_ms, invariant, detail });
    }

    /// Records an invariant broken outside the oracle's own checks (a panic, a stopped simulation).
    pub fn external(&mut self, at_ms: u64, invariant: &'static str, detail: String) {
        self.violate(at_ms, invariant, detail);
    }

    /// Takes one line pg-status logged; state transitions (`<host>: dead`, `possible dead`, `master`,
    /// `replica`) are remembered per host.
    pub fn logged(&mut self, at_ms: u64, line: &str) {
        let mut found = Vec::new();
        self.episodes.logged(at_ms, line, &mut found);
        self.take(found);
        let Some((host, what)) = line.split_once(": ") else { return };
        if what == Warning::ReceiverRefused.as_str() {
            self.receiver_refused_warnings += 1;
            if self.receiver_refused_warnings > 1 {
                self.violate(0, "a privilege warning is logged once", format!("again: {line}"));
            }
        }
        if !matches!(what, "dead" | "possible dead" | "master" | "replica") {
            return;
        }
        if let Some(i) = self.index(host) {
            self.hosts[i].announced = Some(what.to_owned());
        }
    }

    /// Takes one finished iteration into the reference.
    pub fn record(&mut self, poll: &PollRecord) {
        let mut found = Vec::new();
        let touched = self.touched.get(poll.host).copied().unwrap_or(0);
        self.episodes.record(poll, touched, &mut found);
        self.take(found);
        let Some(h) = self.hosts.get_mut(poll.host) else { return };
        h.finished = true;
        match (&poll.result, poll.in_time) {
            (Ok(observation), true) => {
                if observation.receiver == Receiver::NotRead {
                    self.receiver_refused_polls += 1;
                }
                h.fails = 0;
                h.ever_ok = true;
                h.last_ok = Some(observation.clone());
                h.last_ok_ms = Some(poll.at_ms);
            }
            _ => {
                h.fails += 1;
                h.failures += 1;
                if h.fails >= self.settings.max_fails {
                    // Once dead, the last observation is forgotten (DESIGN 1).
                    h.last_ok = None;
                }
            }
        }
    }

    fn usable(&self, i: usize) -> bool {
        let h = &self.hosts[i];
        h.ever_ok && h.fails < self.settings.max_fails && h.last_ok.is_some()
    }

    fn role(&self, i: usize) -> Option<Role> {
        self.usable(i).then(|| self.hosts[i].last_ok.as_ref().map(|o| o.role)).flatten()
    }

    /// Hosts whose last poll said master and that have not failed since, in host order.
    fn healthy_claimants(&self) -> Vec<usize> {
        (0..self.hosts.len()).filter(|&i| self.role(i) == Some(Role::Master) && self.hosts[i].fails == 0).collect()
    }

    /// Under `pg_status__split_brain=refuse`, the claimants while more than one healthy host claims master.
    fn refused_claimants(&self) -> Vec<usize> {
        let claimants = self.healthy_claimants();
        if self.settings.policy == SplitBrainPolicy::Refuse && claimants.len() > 1 {
            claimants
        } else {
            Vec::new()
        }
    }

    /// Decision 4 from the reference: the first healthy master, else the first possibly dead one (with
    /// `pg_status__split_brain=timeline`, the one on the highest timeline among them, first on ties; with
    /// `refuse`, none while two healthy hosts claim it).
    fn expected_master(&self) -> Option<usize> {
        if !self.refused_claimants().is_empty() {
            return None;
        }
        let timeline = |i: usize| self.hosts[i].last_ok.as_ref().and_then(|o| o.timeline);
        let pick = |healthy: bool| {
            let mut best: Option<usize> = None;
            for i in 0..self.hosts.len() {
                if self.role(i) != Some(Role::Master) || (self.hosts[i].fails == 0) != healthy {
                    continue;
                }
                let better = match best {
                    None => true,
                    Some(b) => self.settings.policy == SplitBrainPolicy::Timeline && timeline(i) > timeline(b),
                };
                if better {
                    best = Some(i);
                }
            }
            best
        };
        pick(true).or_else(|| pick(false))
    }

    /// (lag_ms, lag_bytes, lsn) of a usable replica: bytes and LSN by decision 3 from the reference; the time
    /// lag as the snapshot has it, once checked against decision 3 (see [`Oracle::time_lag`]).
    fn lag(&self, i: usize, master_lsn: Option<Lsn>, snapshot: &Snapshot) -> Option<(u64, u64, Option<Lsn>)> {
        let (ms, bytes, lsn) = self.design_lag(i, master_lsn)?;
        let ms = snapshot.hosts.get(i).and_then(|h| h.lag_ms).map_or(ms, |got| got.min(ms));
        Some((ms, bytes, lsn))
    }

    /// The core bounds a replica's time lag by the master's WAL history (how long ago the master was where
    /// the replica has replayed to), which can only lower decision 3's value: the snapshot's `lag_ms` must
    /// never exceed it.
    fn time_lag(&mut self, at_ms: u64, snapshot: &Snapshot, master_lsn: Option<Lsn>) {
        for i in 0..self.hosts.len() {
            let (Some((ms, _, _)), Some(got)) =
                (self.design_lag(i, master_lsn), snapshot.hosts.get(i).and_then(|h| h.lag_ms))
            else {
                continue;
            };
            if got > ms {
                let detail = format!("{}: lag_ms {got} above decision 3's {ms}", self.names[i]);
                self.violate(at_ms, "a replica's lag_ms never exceeds decision 3's replay delay", detail);
            }
        }
    }

    /// Decision 3 from the reference: (lag_ms, lag_bytes, lsn) of a usable replica.
    fn design_lag(&self, i: usize, master_lsn: Option<Lsn>) -> Option<(u64, u64, Option<Lsn>)> {
        let o = self.hosts[i].last_ok.as_ref().filter(|o| o.role == Role::Replica && self.usable(i))?;
        let replay = o.replay_lsn.unwrap_or_default();
        let reference = master_lsn.max(o.receive_lsn).max(o.latest_end_lsn).unwrap_or(replay);
        let bytes = reference.bytes_after(replay);
        let caught_up = master_lsn.is_some_and(|m| o.replay_lsn.is_some_and(|r| r >= m));
        let ms = if caught_up { 0 } else { o.replay_delay_ms.unwrap_or(0) };
        Some((ms, bytes, o.replay_lsn))
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// Asks the handler for `target` and returns the host it names (`None` for 404).
    fn ask(&mut self, at_ms: u64, snapshot: &Snapshot, target: &str) -> Option<usize> {
        let response = handle(snapshot, &mut self.cursor, "GET", target, None);
        match response.status {
            200 => {
                let name = String::from_utf8_lossy(response.body.as_bytes()).into_owned();
                let index = self.index(&name);
                if index.is_none() {
                    self.violate(at_ms, "answer names a configured host", format!("{target} -> {name:?}"));
                }
                index
            }
            404 => None,
            status => {
                self.violate(at_ms, "host routes answer 200 or 404 once ready", format!("{target} -> {status}"));
                None
            }
        }
    }

    /// Names of hosts, comma-separated.
    fn show_all(&self, hosts: &[usize]) -> String {
        hosts.iter().map(|&i| self.names[i].as_str()).collect::<Vec<_>>().join(", ")
    }

    /// Refusing a split brain, `/master` must answer 503 naming every claimant in host order.
    fn ask_refused(&mut self, at_ms: u64, snapshot: &Snapshot, claimants: &[usize]) {
        let response = handle(snapshot, &mut self.cursor, "GET", "/master", None);
        let expected = format!("{{\"error_text\": \"split brain: {}\"}}", self.show_all(claimants));
        let body = String::from_utf8_lossy(response.body.as_bytes()).into_owned();
        if response.status != 503 || body != expected {
            let detail = format!("/master -> {} {body}, expected 503 {expected}", response.status);
            self.violate(at_ms, "refusing a split brain, no answer names a master while two claim it", detail);
        }
    }

    /// Checks one answered read-your-writes request (`/replica?min_lsn=..&wait_ms=..`, see [`ReadRecord`]).
    pub fn check_read(&mut self, read: &ReadRecord) {
        let at = read.answered_ms;
        let held = read.answered_ms.saturating_sub(read.issued_ms);
        if held > read.wait_ms {
            let detail =
                format!("asked at {} ms with wait_ms={}, answered after {held} ms", read.issued_ms, read.wait_ms);
            self.violate(at, "a request is never held longer than its wait_ms", detail);
        }
        let choice = match read.answer {
            Ok(choice) => choice,
            Err(status) => {
                let detail = format!("/replica?min_lsn={} -> {status}", read.min_lsn);
                self.violate(at, "a valid read-your-writes request to a ready sidecar names a host", detail);
                return;
            }
        };
        let is_replica = matches!(choice, Choice::Replica(_));
        if let Choice::Replica(i) = choice {
            let name = self.names.get(i).cloned().unwrap_or_default();
            if read.seen_lsn.is_none_or(|seen| seen < read.min_lsn) {
                let seen = read.seen_lsn.map_or("none".to_owned(), |l| l.to_string());
                let detail = format!("{name} handed out for min_lsn {} with replay position {seen}", read.min_lsn);
                self.violate(at, "a replica handed out for min_lsn has replayed it, as pg-status saw it", detail);
            }
            // LSNs compare only along one history. The claim holds where pg-status saw the replica on the write's
            // timeline and it still is: replay only moves forward there. A replica seen on another timeline (or
            // none) may hold a different history at the same positions, and one rewound since has lost WAL.
            // With pg_status__split_brain=timeline the core hands out only replicas seen on the write's
            // timeline, so there the claim stands for every replica still on it.
            let timeline_policy = self.settings.policy == SplitBrainPolicy::Timeline;
            let same_history = |tl: u32| tl == read.timeline && (timeline_policy || read.seen_timeline == Some(tl));
            if let Some((position, timeline)) = read.true_position.filter(|&(_, tl)| same_history(tl)) {
                if position < read.min_lsn {
                    let detail = format!(
                        "{name} handed out for min_lsn {} had truly replayed only {position} (timeline {timeline})",
                        read.min_lsn
                    );
                    self.violate(at, "a replica handed out for min_lsn has truly replayed it", detail);
                }
            }
        }
        if read.satisfied && !is_replica {
            let detail = format!("min_lsn {} answered {choice:?} from a snapshot with a replica for it", read.min_lsn);
            self.violate(at, "a request some replica satisfies is answered by a replica", detail);
        }
        if matches!(read.at_once, Choice::Replica(_)) && !is_replica {
            let detail = format!("min_lsn {}: {:?} at once, {choice:?} after waiting", read.min_lsn, read.at_once);
            self.violate(at, "waiting never loses a replica answer", detail);
        }
    }

    /// Checks everything that depends only on the published snapshot and the reference. Returns the
    /// answers a trace shows.
    pub fn check_snapshot(&mut self, at_ms: u64, snapshot: &Snapshot) -> Answers {
        let s = self.settings;
        // DESIGN 12: a refused view degrades the measurement, never the host, and the operator is told.
        if self.receiver_refused_polls > 0 && self.receiver_refused_warnings == 0 {
            let detail = format!("{} polls ran without pg_stat_wal_receiver", self.receiver_refused_polls);
            self.violate(at_ms, "a refused pg_stat_wal_receiver is announced with a warning", detail);
        }
        // Decision 1: dead exactly at the max_fails-th consecutive failure, alive at the first success.
        for i in 0..self.hosts.len() {
            let h = &self.hosts[i];
            let expected = if !h.finished {
                Health::Unknown
            } else if h.fails == 0 {
                Health::Alive
            } else if h.fails < s.max_fails {
                Health::PossiblyDead
            } else {
                Health::Dead
            };
            let got = snapshot.hosts.get(i).map(|x| x.health);
            if got != Some(expected) {
                let detail = format!(
                    "{}: {} consecutive failures (max_fails {}) should be {expected:?}, snapshot says {got:?}",
                    self.names[i], h.fails, s.max_fails
                );
                self.violate(at_ms, "dead exactly at the max_fails-th failure, alive at the first success", detail);
            }
        }
        // DESIGN 11: each transition is logged when it happens, so the last one logged is the current state.
        for i in 0..self.hosts.len() {
            let h = &self.hosts[i];
            let expected = if !h.finished {
                None
            } else if h.fails >= s.max_fails {
                Some("dead")
            } else if h.fails > 0 {
                Some("possible dead")
            } else {
                self.role(i).map(|r| if r == Role::Master { "master" } else { "replica" })
            };
            if h.announced.as_deref() != expected {
                let detail = format!(
                    "{}: last logged {:?}, its polls say {:?}",
                    self.names[i],
                    h.announced.as_deref().unwrap_or("nothing"),
                    expected.unwrap_or("nothing")
                );
                self.violate(at_ms, "each host transition is logged when it happens", detail);
            }
        }
        let ready = self.hosts.iter().all(|h| h.finished);
        if snapshot.ready != ready {
            self.violate(
                at_ms,
                "ready once every host finished its first iteration",
                format!("ready={}", snapshot.ready),
            );
        }
        if !snapshot.ready {
            return Answers::default();
        }

        // /master: decision 4 over hosts whose last successful poll said master; refusing a split brain, 503
        // naming the claimants.
        let refused = self.refused_claimants();
        let master = if refused.is_empty() {
            self.ask(at_ms, snapshot, "/master")
        } else {
            self.ask_refused(at_ms, snapshot, &refused);
            None
        };
        let expected = self.expected_master();
        if master != expected {
            let show = |i: Option<usize>| i.map_or("404".to_owned(), |i| self.names[i].clone());
            let detail = format!("/master -> {}, decision 4 over the polls says {}", show(master), show(expected));
            self.violate(at_ms, "/master names the host decision 4 elects", detail);
        }
        let master_lsn = expected.and_then(|m| self.hosts[m].last_ok.as_ref()).and_then(|o| o.current_lsn);
        // Trusting timelines, a `min_lsn` compares only with replicas that showed the elected master's timeline.
        let history = if s.policy == SplitBrainPolicy::Timeline {
            expected.and_then(|m| self.hosts[m].last_ok.as_ref()).and_then(|o| o.timeline)
        } else {
            None
        };

        self.time_lag(at_ms, snapshot, master_lsn);
        // Replica routes: every answer must satisfy its filter at the host's last poll, else be the master
        // or 404, and healthy candidates come before possibly dead ones.
        let min_lsn = master_lsn.unwrap_or_default();
        let mid_lsn = Lsn(min_lsn.0.saturating_sub(s.sync_max_lag_bytes / 2));
        let (tm, tb) = (s.sync_max_lag_ms, s.sync_max_lag_bytes);
        type Filter = (Option<u64>, Option<u64>, bool, Option<Lsn>);
        let routes: Vec<(String, Filter, bool)> = vec![
            ("/replica".into(), (None, None, false, None), false),
            (format!("/replica?lag_ms={}", tm / 2), (Some(tm / 2), None, false, None), false),
            (format!("/replica?lag_bytes={}", tb / 2), (None, Some(tb / 2), false, None), false),
            (format!("/replica?min_lsn={min_lsn}"), (None, None, false, Some(min_lsn)), false),
            (format!("/replica?min_lsn={mid_lsn}&lag_ms={tm}"), (Some(tm), None, false, Some(mid_lsn)), false),
            ("/sync_by_time".into(), (Some(tm), None, false, None), false),
            ("/sync_by_bytes".into(), (None, Some(tb), false, None), false),
            ("/sync_by_time_or_bytes".into(), (Some(tm), Some(tb), true, None), false),
            ("/sync_by_time_and_bytes".into(), (Some(tm), Some(tb), false, None), false),
            ("/most_sync_by_bytes".into(), (Some(tm), Some(tb), false, None), true),
        ];
        for (target, (max_ms, max_bytes, either, min), most) in routes {
            let got = self.ask(at_ms, snapshot, &target);
            let accepts = |(ms, bytes, lsn): (u64, u64, Option<Lsn>)| {
                let t = max_ms.map(|m| ms <= m);
                let b = max_bytes.map(|m| bytes <= m);
                let lag_ok = match (t, b) {
                    (Some(t), Some(b)) if either => t || b,
                    (Some(t), Some(b)) => t && b,
                    (Some(t), None) => t,
                    (None, Some(b)) => b,
                    (None, None) => true,
                };
                lag_ok && min.is_none_or(|m| lsn.is_some_and(|l| l >= m))
            };
            let timeline = |i: usize| self.hosts[i].last_ok.as_ref().and_then(|o| o.timeline);
            let same_history = |i: usize| min.is_none() || history.is_none_or(|t| timeline(i) == Some(t));
            let candidates: Vec<(usize, u64, bool)> = (0..self.hosts.len())
                .filter_map(|i| {
                    self.lag(i, master_lsn, snapshot)
                        .filter(|&l| accepts(l) && same_history(i))
                        .map(|l| (i, l.1, self.hosts[i].fails == 0))
                })
                .collect();
            let any_healthy = candidates.iter().any(|c| c.2);
            let tier: Vec<(usize, u64)> =
                candidates.iter().filter(|c| c.2 == any_healthy).map(|c| (c.0, c.1)).collect();
            let show = |i: Option<usize>| i.map_or("404".to_owned(), |i| self.names[i].clone());
            let ok = match got {
                Some(i) if tier.iter().any(|c| c.0 == i) => {
                    !most || tier.iter().all(|c| c.1 >= tier.iter().find(|c| c.0 == i).map_or(0, |c| c.1))
                }
                other => tier.is_empty() && other == expected,
            };
            if !ok {
                let detail = format!(
                    "{target} -> {}; replicas passing at their last poll: [{}]; master {}",
                    show(got),
                    candidates
                        .iter()
                        .map(|c| format!("{}{}", self.names[c.0], if c.2 { "" } else { " (possibly dead)" }))
                        .collect::<Vec<_>>()
                        .join(", "),
                    show(expected)
                );
                self.violate(
                    at_ms,
                    "a filtered answer satisfied its filter at its last poll, else master or 404",
                    detail,
                );
            }
            if let Some(i) = got.filter(|&i| !refused.is_empty() && self.role(i) == Some(Role::Master)) {
                let detail = format!("{target} -> {} while {} claim master", self.names[i], self.show_all(&refused));
                self.violate(at_ms, "refusing a split brain, no answer names a master while two claim it", detail);
            }
            if let Some(i) = got {
                if !self.usable(i) {
                    let detail = format!("{target} -> {} (dead or never seen alive)", self.names[i]);
                    self.violate(at_ms, "no route returns a dead host or one never seen alive", detail);
                }
            }
        }
        if let Some(m) = master.filter(|&m| !self.usable(m)) {
            let detail = format!("/master -> {} (dead or never seen alive)", self.names[m]);
            self.violate(at_ms, "no route returns a dead host or one never seen alive", detail);
        }
        self.check_hosts_document(at_ms, snapshot);
        let hosts = snapshot
            .hosts
            .iter()
            .map(|h| {
                let state = match (h.health, h.role) {
                    (Health::Dead | Health::Unknown, _) | (_, None) => "-",
                    (Health::PossiblyDead, Some(Role::Master)) => "M?",
                    (Health::PossiblyDead, Some(Role::Replica)) => "R?",
                    (Health::Alive, Some(Role::Master)) => "M",
                    (Health::Alive, Some(Role::Replica)) => "R",
                };
                format!("{}={state}", h.id.name)
            })
            .collect::<Vec<_>>()
            .join(" ");
        Answers { master: master.map(|i| self.names[i].clone()), hosts }
    }

    /// `/hosts` must show each host as the reference sees it: alive, master flag and LSN of its last
    /// successful poll while not dead, nulls once dead.
    fn check_hosts_document(&mut self, at_ms: u64, snapshot: &Snapshot) {
        let response = handle(snapshot, &mut self.cursor, "GET", "/hosts", None);
        let body = String::from_utf8_lossy(response.body.as_bytes()).into_owned();
        for i in 0..self.hosts.len() {
            let key = format!("{{\"host\": \"{}\"", self.names[i]);
            let Some(object) = body.find(&key).map(|at| &body[at..]).and_then(|o| o.split('}').next()) else {
                self.violate(at_ms, "/hosts lists every host", format!("{} missing from {body}", self.names[i]));
                continue;
            };
            let usable = self.usable(i);
            let lsn = self.hosts[i].last_ok.as_ref().and_then(Observation::lsn).filter(|_| usable);
            let expected = [
                format!("\"master\": {}", self.role(i) == Some(Role::Master)),
                format!("\"alive\": {usable}"),
                match lsn {
                    Some(l) => format!("\"lsn\": \"{l}\""),
                    None => "\"lsn\": null".to_owned(),
                },
            ];
            if let Some(missing) = expected.iter().find(|e| !object.contains(e.as_str())) {
                let detail = format!("{}: expected {missing} in {object}}}", self.names[i]);
                self.violate(at_ms, "/hosts shows each host as its last polls did", detail);
            }
        }
    }

    /// Checks what depends on the truth: failover bound, refresh of answering hosts, connections per host,
    /// calm-phase convergence. `master` is the host `/master` names at this step.
    pub fn check_truth(&mut self, at_ms: u64, truth: &Truth, snapshot: &Snapshot, master: Option<usize>) {
        let s = self.settings;
        let max_latency = truth.nodes.iter().map(|n| n.latency_ms).max().unwrap_or(0);
        // Network delay: a new connection costs about four round trips (TCP, startup, password, query), and
        // turmoil delivers messages at step boundaries (up to one more step each).
        let slack = 8 * (s.net_delay_ms + max_latency + crate::run::TICK_MS) + 10;

        for (i, n) in truth.nodes.iter().enumerate() {
            if let Some(t) = self.touched.get_mut(i) {
                *t = n.touched_ms;
            }
        }
        // Connections opened per host <= 1 + elapsed / conn_max_age + failures (+ one per time the server
        // ended its sessions: the connection watch reconnects without a failed poll).
        for (i, n) in truth.nodes.iter().enumerate() {
            let bound = 1 + at_ms / s.conn_max_age_ms + self.hosts[i].failures + n.sessions_ended;
            if n.connections > bound {
                let detail = format!(
                    "{}: {} connections accepted after {at_ms} ms with {} failures (bound {bound})",
                    self.names[i], n.connections, self.hosts[i].failures
                );
                // Once per host: the count only grows from here, and the first excess is the one to replay.
                if !self.conn_reported[i] {
                    self.conn_reported[i] = true;
                    self.violate(at_ms, "connections per host <= 1 + elapsed/conn_max_age + failures", detail);
                }
            }
        }

        // A hung or slow host never delays the refresh of the others: every host that answers is polled
        // successfully every sleep_ms (plus its own round trips), once whatever it went through has settled.
        for (i, n) in truth.nodes.iter().enumerate() {
            if !n.answering {
                continue;
            }
            let settled = n.answering_since_ms.saturating_add(s.query_timeout_ms + 2 * s.sleep_ms + 2 * slack);
            if at_ms < settled {
                continue;
            }
            let last = self.hosts[i].last_ok_ms.unwrap_or(0);
            if at_ms > last + s.sleep_ms + slack {
                let detail = format!(
                    "{} answers since {} ms but its last successful poll ended at {last} ms",
                    self.names[i], n.answering_since_ms
                );
                self.violate(at_ms, "a hung or slow host never delays the refresh of the others", detail);
            }
        }

        // Failover bound: once the truth is stable, /master names the first answering master by
        // stable_since + sleep_ms + query_timeout_ms (+ network delay).
        let answering_masters =
            truth.nodes.iter().enumerate().filter(|(_, n)| n.answering && n.role == NodeRole::Master);
        let true_master = match s.policy {
            // Highest timeline, first on ties: `max_by_key` keeps the last maximum, so reverse the index.
            SplitBrainPolicy::Timeline => {
                answering_masters.max_by_key(|(i, n)| (n.timeline, std::cmp::Reverse(*i))).map(|(i, _)| i)
            }
            SplitBrainPolicy::HostOrder => answering_masters.map(|(i, _)| i).next(),
            // Refusing, two answering masters are no master at all.
            SplitBrainPolicy::Refuse => {
                let all: Vec<usize> = answering_masters.map(|(i, _)| i).collect();
                if all.len() == 1 {
                    all.first().copied()
                } else {
                    None
                }
            }
        };
        // While a node's fate is uncertain there is no claim about who the master must be.
        let certain = truth.nodes.iter().all(|n| n.certain);
        let true_master = true_master.filter(|_| certain);
        let mut found = Vec::new();
        self.episodes.check(at_ms, truth, snapshot, master, true_master, &mut found);
        self.take(found);
        if true_master != self.true_master {
            if let Some(m) = true_master {
                // Start-up is not a failover: only a change from one known master to another is timed.
                // Nor is a change where the previous master still answers as master (a returning old master
                // winning a split brain by host order): only losing the master is a failover.
                let lost =
                    |last: usize| truth.nodes.get(last).is_none_or(|n| !(n.answering && n.role == NodeRole::Master));
                self.pending = self
                    .last_true_master
                    .filter(|&last| last != m && master != Some(m) && lost(last))
                    .map(|_| PendingFailover { to: m, since_ms: truth.stable_since_ms });
                self.last_true_master = Some(m);
            }
            self.true_master = true_master;
        }
        if let Some(p) = self.pending {
            if truth.stable_since_ms != p.since_ms {
                // The truth moved again before detection: this change cannot be timed on its own.
                self.pending = None;
            } else if master == Some(p.to) {
                self.failover_latencies.push(at_ms - p.since_ms);
                self.pending = None;
            }
        }
        let deadline = truth.stable_since_ms + s.sleep_ms + s.query_timeout_ms + slack;
        if let Some(m) = true_master {
            if at_ms >= deadline && master != Some(m) {
                let detail = format!(
                    "truth stable since {} ms with {} the first answering master; /master -> {} \
                     after the bound ({deadline} ms)",
                    truth.stable_since_ms,
                    self.names[m],
                    master.map_or("404".to_owned(), |i| self.names[i].clone())
                );
                self.violate(at_ms, "failover: /master names the new master within sleep + query_timeout", detail);
            }
        }

        // Calm phase: everything answers; once every host had time to be polled, answers match the truth.
        if let Some(calm) = truth.calm_since_ms {
            let converge =
                calm + (u64::from(s.max_fails) + 1) * (s.sleep_ms + s.query_timeout_ms) + s.sleep_ms + 2 * slack;
            if at_ms >= converge {
                for (i, n) in truth.nodes.iter().enumerate() {
                    let h = &snapshot.hosts[i];
                    let role = match n.role {
                        NodeRole::Master => Role::Master,
                        NodeRole::Replica => Role::Replica,
                    };
                    if !n.answering || h.health != Health::Alive || h.role != Some(role) {
                        let detail = format!(
                            "{}: truth {} (answering: {}), pg-status says {:?} {:?}",
                            self.names[i], n.role, n.answering, h.health, h.role
                        );
                        self.violate(at_ms, "calm phase: answers converge to the truth", detail);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The oracle must catch what it claims to catch: each check is shown a broken answer here.
    use std::time::{Duration, Instant};

    use pg_status_core::config::Config;
    use pg_status_core::monitor::{Action, Monitor, PollError, PollErrorKind};

    use super::*;

    fn settings(max_fails: u32) -> Settings {
        Settings {
            nodes: 2,
            sleep_ms: 100,
            query_timeout_ms: 200,
            max_fails,
            conn_max_age_ms: 1000,
            sync_max_lag_ms: 1000,
            sync_max_lag_bytes: 1000,
            net_delay_ms: 1,
            policy: SplitBrainPolicy::HostOrder,
            ssl_mode: "disable",
            fast_sleep_ms: 0,
            fast_window_ms: 60_000,
        }
    }

    pub(super) fn master(lsn: u64) -> Observation {
        Observation {
            role: Role::Master,
            current_lsn: Some(Lsn(lsn)),
            receive_lsn: None,
            replay_lsn: None,
            replay_delay_ms: None,
            timeline: Some(1),
            latest_end_lsn: None,
            receiver: Receiver::Readable,
        }
    }

    pub(super) fn replica(lsn: u64) -> Observation {
        Observation {
            role: Role::Replica,
            current_lsn: None,
            receive_lsn: Some(Lsn(lsn)),
            replay_lsn: Some(Lsn(lsn)),
            replay_delay_ms: Some(0),
            timeline: Some(1),
            latest_end_lsn: None,
            receiver: Receiver::Readable,
        }
    }

    /// Feeds the same results to a real monitor (max_fails 2) and to an oracle with `oracle_max_fails`.
    fn feed(oracle_max_fails: u32, results: &[(usize, Result<Observation, PollError>)]) -> (Oracle, Snapshot) {
        let vars = [
            ("pg_status__hosts", "db1,db2"),
            ("pg_status__max_fails", "2"),
            ("pg_status__sync_max_lag_ms", "1000"),
            ("pg_status__sync_max_lag_bytes", "1000"),
        ];
        let config = Config::from_vars(vars).expect("a valid configuration");
        let start = Instant::now();
        let mut monitor = Monitor::new(&config, start);
        let mut oracle = Oracle::new(vec!["db1".into(), "db2".into()], settings(oracle_max_fails));
        let mut last = [master(100), replica(100)];
        for (step, (host, result)) in results.iter().enumerate() {
            let now = start + Duration::from_secs(20 * step as u64);
            monitor.handle_timeout(now);
            let mut id = None;
            while let Some(Action::Poll { id: poll, .. }) = monitor.poll_action(now) {
                if poll.host == *host {
                    id = Some(poll);
                } else {
                    // The other host answers as it did before, so only `host` changes.
                    let again = last[poll.host].clone();
                    monitor.handle_poll_result(poll, Ok(again.clone()), now);
                    oracle.record(&PollRecord {
                        host: poll.host,
                        at_ms: 0,
                        elapsed_ms: 1,
                        result: Ok(again),
                        in_time: true,
                    });
                }
            }
            let id = id.expect("the host is due");
            if let Ok(o) = result {
                last[*host] = o.clone();
            }
            monitor.handle_poll_result(id, result.clone(), now);
            let result = result.clone().map_err(|e| e.message);
            oracle.record(&PollRecord { host: *host, at_ms: 0, elapsed_ms: 1, result, in_time: true });
            while let Some(event) = monitor.poll_event() {
                oracle.logged(0, &event.to_string());
            }
        }
        (oracle, monitor.snapshot())
    }

    fn fail() -> Result<Observation, PollError> {
        Err(PollError::new(PollErrorKind::Connect, "refused"))
    }

    #[test]
    fn agreeing_answers_pass() {
        let (mut oracle, snapshot) = feed(2, &[(0, Ok(master(100))), (1, Ok(replica(100))), (1, fail())]);
        oracle.check_snapshot(10, &snapshot);
        assert!(oracle.violations().is_empty(), "{:?}", oracle.violations());
    }

    #[test]
    fn a_master_named_while_two_claim_it_is_caught_when_refusing() {
        // The monitor runs with host order and names db1 while both claim master; refusing, that is wrong.
        let (mut oracle, snapshot) = feed(2, &[(0, Ok(master(100))), (1, Ok(master(200)))]);
        assert_eq!(snapshot.master, Some(0));
        oracle.settings.policy = SplitBrainPolicy::Refuse;
        oracle.check_snapshot(10, &snapshot);
        assert!(
            oracle.violations().iter().any(|v| v.invariant.starts_with("refusing a split brain")),
            "{:?}",
            oracle.violations()
        );
    }

    #[test]
    fn a_wrong_failure_count_is_caught() {
        let (mut oracle, snapshot) = feed(3, &[(0, Ok(master(100))), (1, Ok(replica(100))), (1, fail()), (1, fail())]);
        oracle.check_snapshot(10, &snapshot);
        assert!(
            oracle.violations().iter().any(|v| v.invariant.starts_with("dead exactly")),
            "{:?}",
            oracle.violations()
        );
    }

    #[test]
    fn a_master_other_than_decision_4_is_caught() {
        let (mut oracle, mut snapshot) = feed(2, &[(0, Ok(master(100))), (1, Ok(replica(100)))]);
        snapshot.master = Some(1);
        oracle.check_snapshot(10, &snapshot);
        let names: Vec<&str> = oracle.violations().iter().map(|v| v.invariant).collect();
        assert!(names.contains(&"/master names the host decision 4 elects"), "{names:?}");
    }

    #[test]
    fn a_replica_handed_out_beyond_its_filter_is_caught() {
        let (mut oracle, mut snapshot) = feed(2, &[(0, Ok(master(10_000))), (1, Ok(replica(100)))]);
        oracle.check_snapshot(10, &snapshot);
        assert!(oracle.violations().is_empty(), "{:?}", oracle.violations());
        // A snapshot that understates db2's lag makes byte-filtered routes hand it out.
        snapshot.hosts[1].lag_bytes = Some(0);
        oracle.check_snapshot(20, &snapshot);
        let names: Vec<&str> = oracle.violations().iter().map(|v| v.invariant).collect();
        assert!(
            names.contains(&"a filtered answer satisfied its filter at its last poll, else master or 404"),
            "{names:?}"
        );
    }

    #[test]
    fn a_hosts_document_disagreeing_with_the_polls_is_caught() {
        let (mut oracle, mut snapshot) = feed(2, &[(0, Ok(master(10_000))), (1, Ok(replica(100)))]);
        snapshot.hosts[1].lsn = Some(Lsn(1));
        oracle.check_snapshot(10, &snapshot);
        let names: Vec<&str> = oracle.violations().iter().map(|v| v.invariant).collect();
        assert!(names.contains(&"/hosts shows each host as its last polls did"), "{names:?}");
    }

    #[test]
    fn stale_refresh_too_many_connections_and_a_missed_failover_are_caught() {
        let (mut oracle, snapshot) = feed(2, &[(0, Ok(master(100))), (1, Ok(replica(100)))]);
        let node = |role, connections| NodeTruth {
            answering: true,
            certain: true,
            answering_since_ms: 0,
            role,
            connections,
            latency_ms: 0,
            timeline: 1,
            touched_ms: 0,
            sessions_ended: 0,
        };
        // db2 is the only answering master since 0 ms, yet /master names db1; db1 opened 50 connections;
        // neither host was polled since 0 ms.
        let truth = Truth {
            nodes: vec![node(NodeRole::Replica, 50), node(NodeRole::Master, 1)],
            stable_since_ms: 0,
            calm_since_ms: None,
        };
        oracle.check_truth(5_000, &truth, &snapshot, Some(0));
        let names: Vec<&str> = oracle.violations().iter().map(|v| v.invariant).collect();
        for expected in [
            "connections per host <= 1 + elapsed/conn_max_age + failures",
            "a hung or slow host never delays the refresh of the others",
            "failover: /master names the new master within sleep + query_timeout",
        ] {
            assert!(names.contains(&expected), "{expected}: {names:?}");
        }
    }

    #[test]
    fn read_your_writes_answers_behind_min_lsn_late_or_lost_to_the_master_are_caught() {
        let mut oracle = Oracle::new(vec!["db1".into(), "db2".into()], settings(2));
        let good = ReadRecord {
            issued_ms: 1_000,
            answered_ms: 1_030,
            wait_ms: 50,
            min_lsn: Lsn(500),
            timeline: 1,
            at_once: Choice::Master(0),
            answer: Ok(Choice::Replica(1)),
            satisfied: true,
            seen_lsn: Some(Lsn(500)),
            seen_timeline: Some(1),
            true_position: Some((Lsn(520), 1)),
        };
        oracle.check_read(&good);
        // A fallback to the master at the deadline, and a replica whose history was rewound on a new timeline.
        oracle.check_read(&ReadRecord {
            answered_ms: 1_050,
            answer: Ok(Choice::Master(0)),
            satisfied: false,
            ..good.clone()
        });
        oracle.check_read(&ReadRecord { true_position: Some((Lsn(300), 2)), ..good.clone() });
        assert!(oracle.violations().is_empty(), "{:?}", oracle.violations());

        let broken = [
            (ReadRecord { seen_lsn: Some(Lsn(499)), ..good.clone() }, "as pg-status saw it"),
            (ReadRecord { true_position: Some((Lsn(499), 1)), ..good.clone() }, "has truly replayed it"),
            (ReadRecord { answered_ms: 1_051, ..good.clone() }, "held longer than its wait_ms"),
            (ReadRecord { answer: Ok(Choice::Master(0)), ..good.clone() }, "some replica satisfies"),
            (
                ReadRecord {
                    at_once: Choice::Replica(1),
                    answer: Ok(Choice::Nothing),
                    satisfied: false,
                    ..good.clone()
                },
                "never loses a replica answer",
            ),
            (ReadRecord { answer: Err(503), ..good.clone() }, "names a host"),
        ];
        for (record, invariant) in broken {
            let mut oracle = Oracle::new(vec!["db1".into(), "db2".into()], settings(2));
            oracle.check_read(&record);
            let names: Vec<&str> = oracle.violations().iter().map(|v| v.invariant).collect();
            assert!(names.iter().any(|n| n.contains(invariant)), "{invariant}: {names:?} for {record:?}");
        }
    }
}
