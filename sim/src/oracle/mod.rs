//! The oracle: checks DESIGN.md's invariants at every simulated step.
//!
//! It keeps its own record of what pg-status has seen (every finished poll iteration, as the driver
//! reports it) and asks the pure request handler ([`pg_status_core::http::handle`]) what a client would be
//! told from the published snapshot. Answers are checked against the reference model
//! ([`pg_status_reference`]: decision 1's failure counting, decision 3's lag, decision 4's election,
//! decision 5's filters) fed with those polls, and against the cluster model's truth. One module per
//! invariant:
//!
//! - [`health`]: dead exactly at the `max_fails`-th failure, transitions logged, readiness, privilege
//!   warnings;
//! - [`routes`]: `/master`, the filtered replica routes and `/hosts`;
//! - [`reads`]: read-your-writes requests that wait for a replica;
//! - [`connections`]: connections per host, and the refresh of hosts that answer;
//! - [`failover`]: the failover bound and calm-phase convergence;
//! - [`episodes`]: failover episodes, and split brain on fresh evidence.

use pg_status_core::config::ReplicaFallback;
use pg_status_core::monitor::Warning;
use pg_status_core::observation::{Observation, Receiver, Role};
use pg_status_core::snapshot::{self, Health, Snapshot};
use pg_status_reference::{History, Host};

use crate::model::NodeRole;
use crate::scenario::Settings;

mod connections;
mod episodes;
mod failover;
mod health;
mod reads;
mod routes;

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
    /// Its finished iterations, as the reference counts them (decision 1).
    history: History,
    /// When the last successful iteration ended.
    last_ok_ms: Option<u64>,
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
        match (&poll.result, poll.in_time) {
            (Ok(observation), true) => {
                if observation.receiver == Receiver::NotRead {
                    self.receiver_refused_polls += 1;
                }
                h.history.succeed(observation.clone());
                h.last_ok_ms = Some(poll.at_ms);
            }
            _ => h.history.fail(self.settings.max_fails),
        }
    }

    /// Every host as the reference takes it: health by decision 1, and the observation still usable.
    fn reference_hosts(&self) -> Vec<Host<'_>> {
        self.hosts.iter().map(|h| h.history.host(self.settings.max_fails)).collect()
    }

    /// The observation of host `i` that answers may use: its last success while alive or possibly dead.
    fn usable(&self, i: usize) -> Option<&Observation> {
        self.hosts.get(i).and_then(|h| h.history.host(self.settings.max_fails).last)
    }

    /// The thresholds and policy of the run, in the core's terms, for the reference's views and filters.
    fn reference_settings(&self) -> snapshot::Settings {
        let s = self.settings;
        snapshot::Settings {
            sync_max_lag_ms: s.sync_max_lag_ms,
            sync_max_lag_bytes: s.sync_max_lag_bytes,
            locality_dc: false,
            locality_geo: false,
            split_brain: s.policy,
            max_wait_ms: 0,
            replica_fallback: ReplicaFallback::Master,
        }
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// Names of hosts, comma-separated.
    fn show_all(&self, hosts: &[usize]) -> String {
        hosts.iter().map(|&i| self.names[i].as_str()).collect::<Vec<_>>().join(", ")
    }

    /// Checks everything that depends only on the published snapshot and the reference. Returns the
    /// answers a trace shows.
    pub fn check_snapshot(&mut self, at_ms: u64, snapshot: &Snapshot) -> Answers {
        self.check_health(at_ms, snapshot);
        if !snapshot.ready {
            return Answers::default();
        }
        let master = self.check_routes(at_ms, snapshot);
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

    /// Checks what depends on the truth: connections per host, refresh of answering hosts, the failover
    /// bound, calm-phase convergence. `master` is the host `/master` names at this step.
    pub fn check_truth(&mut self, at_ms: u64, truth: &Truth, snapshot: &Snapshot, master: Option<usize>) {
        let max_latency = truth.nodes.iter().map(|n| n.latency_ms).max().unwrap_or(0);
        // Network delay: a new connection costs about four round trips (TCP, startup, password, query), and
        // turmoil delivers messages at step boundaries (up to one more step each).
        let slack = 8 * (self.settings.net_delay_ms + max_latency + crate::run::TICK_MS) + 10;
        for (i, n) in truth.nodes.iter().enumerate() {
            if let Some(t) = self.touched.get_mut(i) {
                *t = n.touched_ms;
            }
        }
        self.check_connections(at_ms, truth);
        self.check_refresh(at_ms, truth, slack);
        self.check_failover(at_ms, truth, snapshot, master, slack);
        self.check_calm(at_ms, truth, snapshot, slack);
    }
}

#[cfg(test)]
mod tests;
