//! Scenarios: what happens to the cluster and the network, and when.
//!
//! A scenario is a plain list of timed [`Action`]s, drawn from the seed: the named ones script a known
//! story (a failover, a split brain, a hung host...) with seeded timings and victims; the swarm draws the
//! fault probabilities themselves from the seed, as TigerBeetle's VOPR does, so different seeds explore
//! different mixes. Every run has a fault phase followed by a calm phase in which the runner heals
//! everything and the answers must converge to the truth.

use std::fmt;

use pg_status_core::config::SplitBrainPolicy;

use crate::reader::ReadPlan;
use crate::rng::Rng;

/// One thing that happens to a node, its link to the sidecar, or the whole cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The node's server process dies (its sockets close).
    Crash(usize),
    /// The node's server process starts again, in the role it had.
    Restart(usize),
    /// A replica is promoted to master on a new timeline.
    Promote(usize),
    /// A master restarts as a replica of the current master.
    Demote(usize),
    /// Messages between the sidecar and the node are dropped.
    Partition(usize),
    /// The partition ends.
    Repair(usize),
    /// Messages between the sidecar and the node are held (a hang: nothing is lost, nothing arrives).
    Hold(usize),
    /// Held messages are delivered and the link works again.
    Release(usize),
    /// Every message between the sidecar and the node takes this long, in ms (0: back to normal).
    Latency(usize, u64),
    /// The node answers queries this late, in ms (0: at once).
    SlowReply(usize, u64),
    /// Replay on a replica is paused (`true`) or resumed.
    PauseReplay(usize, bool),
    /// A replica's WAL receiver stalls (`true`) or resumes.
    Stall(usize, bool),
    /// The node's password is changed (`true`, and its sessions are terminated) or restored.
    WrongPassword(usize, bool),
    /// Something that is not PostgreSQL takes over the node's address (`true`: a wrong port, a hostile host,
    /// a man in the middle): every new connection gets a message header announcing 2 GiB, then a stream of
    /// bytes. `false` gives the address back to the node's server.
    Impostor(usize, bool),
    /// The masters' write load is multiplied by this factor.
    Load(u64),
    /// The master stops writing (`false`: idle) or writes again.
    Writing(bool),
    /// SELECT on `pg_stat_wal_receiver` is revoked from the sidecar's role on the node (`true`) or granted
    /// again: the full poll query is refused with SQLSTATE 42501.
    RevokeReceiverView(usize, bool),
}

impl Action {
    /// Renders the action for a trace, naming nodes by `names`.
    pub fn describe(&self, names: &[String]) -> String {
        let n = |i: &usize| names.get(*i).cloned().unwrap_or_else(|| format!("node{i}"));
        match self {
            Action::Crash(i) => format!("{} crashes", n(i)),
            Action::Restart(i) => format!("{} restarts", n(i)),
            Action::Promote(i) => format!("{} is promoted to master", n(i)),
            Action::Demote(i) => format!("{} is demoted to replica", n(i)),
            Action::Partition(i) => format!("network: sidecar <-> {} partitioned", n(i)),
            Action::Repair(i) => format!("network: sidecar <-> {} repaired", n(i)),
            Action::Hold(i) => format!("network: sidecar <-> {} hangs (messages held)", n(i)),
            Action::Release(i) => format!("network: sidecar <-> {} released", n(i)),
            Action::Latency(i, ms) => format!("network: sidecar <-> {} latency {ms} ms", n(i)),
            Action::SlowReply(i, ms) => format!("{} answers queries {ms} ms late", n(i)),
            Action::PauseReplay(i, true) => format!("{} pauses replay", n(i)),
            Action::PauseReplay(i, false) => format!("{} resumes replay", n(i)),
            Action::Stall(i, true) => format!("{} stops receiving WAL", n(i)),
            Action::Stall(i, false) => format!("{} receives WAL again", n(i)),
            Action::WrongPassword(i, true) => format!("{} password changed, sessions terminated", n(i)),
            Action::WrongPassword(i, false) => format!("{} password restored", n(i)),
            Action::Impostor(i, true) => format!("{}'s address answers with a 2 GiB message and a byte stream", n(i)),
            Action::Impostor(i, false) => format!("{}'s address belongs to its server again", n(i)),
            Action::Load(f) => format!("write load x{f}"),
            Action::Writing(true) => "master writes".to_owned(),
            Action::Writing(false) => "master goes idle".to_owned(),
            Action::RevokeReceiverView(i, true) => format!("{}: SELECT on pg_stat_wal_receiver revoked", n(i)),
            Action::RevokeReceiverView(i, false) => format!("{}: SELECT on pg_stat_wal_receiver granted", n(i)),
        }
    }
}

/// The sidecar's settings for a run (what `pg_status__*` would say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Number of PostgreSQL nodes.
    pub nodes: usize,
    /// `pg_status__sleep_ms`.
    pub sleep_ms: u64,
    /// `pg_status__query_timeout_ms`.
    pub query_timeout_ms: u64,
    /// `pg_status__max_fails`.
    pub max_fails: u32,
    /// `pg_status__conn_max_age_ms`.
    pub conn_max_age_ms: u64,
    /// `pg_status__sync_max_lag_ms`.
    pub sync_max_lag_ms: u64,
    /// `pg_status__sync_max_lag_bytes`.
    pub sync_max_lag_bytes: u64,
    /// Upper bound of the normal one-way network delay, in ms.
    pub net_delay_ms: u64,
    /// `pg_status__split_brain`.
    pub policy: SplitBrainPolicy,
    /// `PGSSLMODE`: the simulated servers decline TLS, so `prefer` continues in plain text on the same
    /// connection and `allow` retries with TLS only when `pg_hba.conf` refuses the plain session.
    pub ssl_mode: &'static str,
    /// `pg_status__fast_sleep_ms` (0: failover episodes off).
    pub fast_sleep_ms: u64,
    /// `pg_status__fast_window_ms`.
    pub fast_window_ms: u64,
}

impl Settings {
    /// `pg_status__split_brain` as these settings have it.
    pub fn split_brain(&self) -> SplitBrainPolicy {
        self.policy
    }

    /// Settings drawn from the seed, within ranges where a run stays short.
    pub fn draw(rng: &mut Rng, nodes: usize) -> Settings {
        let query_timeout_ms = rng.range(120, 400);
        Settings {
            nodes,
            sleep_ms: rng.range(20, 300),
            query_timeout_ms,
            max_fails: u32::try_from(rng.range(1, 5)).unwrap_or(3),
            conn_max_age_ms: rng.range(500, 5_000),
            sync_max_lag_ms: rng.range(100, 2_000),
            sync_max_lag_bytes: rng.range(10_000, 2_000_000),
            net_delay_ms: rng.range(1, 4),
            policy: if rng.chance(0.3) { SplitBrainPolicy::Timeline } else { SplitBrainPolicy::HostOrder },
            // `--sslmode` overrides the draw for a replay.
            ssl_mode: ["disable", "prefer", "allow"][rng.index(3)],
            fast_sleep_ms: 0,
            fast_window_ms: 60_000,
        }
    }

    /// Draws the failover-episode settings from their own generator, so a seed keeps the rest of its run.
    /// A fifth of the runs turn episodes off; `needs_episodes` rules that out.
    fn draw_fast(&mut self, seed: u64, needs_episodes: bool) {
        let mut rng = Rng::new(seed ^ 0x0fa5_7fa5_7fa5_7fa5);
        let off = !needs_episodes && rng.chance(0.2);
        self.fast_sleep_ms = if off { 0 } else { rng.range(5, self.sleep_ms.max(6) - 1) };
        let period = self.sleep_ms + self.query_timeout_ms;
        self.fast_window_ms = rng.range(2 * period, 12 * period);
    }
}

/// A whole run: settings, timed actions, and when the calm phase starts and the run ends.
#[derive(Debug, Clone)]
pub struct Script {
    /// The scenario's name.
    pub name: String,
    /// The sidecar's settings.
    pub settings: Settings,
    /// Actions with their simulated time in ms, in time order.
    pub actions: Vec<(u64, Action)>,
    /// When the faults end and healing starts, in ms.
    pub calm_at_ms: u64,
    /// When the run ends, in ms.
    pub end_ms: u64,
    /// How a read-your-writes client reads with `wait_ms` during the run, if one does.
    pub reads: Option<ReadPlan>,
}

/// The named scenarios, in the order `--scenario all` runs them.
pub const NAMED: &[&str] = &[
    "failover",
    "switchover",
    "split_brain",
    "hung_host",
    "hung_master",
    "slow_master",
    "flapping_host",
    "all_down",
    "replica_stalled",
    "replica_lagging",
    "idle_master",
    "wrong_password",
    "latency",
    "read_your_writes",
    "impostor",
    "receiver_view_revoked",
    "master_shutdown",
    "master_hang",
    "replica_crash",
    "no_promotion",
];

/// Why a scenario cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScenarioError {
    /// No scenario has that name.
    #[error("unknown scenario {0:?}; known: {list}, swarm", list = NAMED.join(", "))]
    Unknown(String),
}

/// A scenario by name, its timings and victims drawn from `seed`.
pub fn build(name: &str, seed: u64) -> Result<Script, ScenarioError> {
    let mut rng = Rng::new(seed);
    if name == "swarm" {
        let mut script = swarm(&mut rng);
        script.settings.draw_fast(seed, false);
        return Ok(script);
    }
    if !NAMED.contains(&name) {
        return Err(ScenarioError::Unknown(name.to_owned()));
    }
    let nodes = rng.range(2, 4) as usize;
    let mut settings = Settings::draw(&mut rng, nodes);
    settings.draw_fast(seed, matches!(name, "master_shutdown" | "master_hang" | "replica_crash" | "no_promotion"));
    if name == "read_your_writes" {
        // Polling seldom enough that a fresh write is almost never visible in the last poll: the case for waiting.
        settings.sleep_ms = rng.range(300, 1_000);
    }
    let period = settings.sleep_ms + settings.query_timeout_ms;
    // The fault lands after every host has been polled a few times.
    let t0 = 3 * period + rng.range(0, period);
    let master = 0;
    let replica = 1 + rng.index(nodes - 1);
    let other = (1..nodes).find(|&i| i != replica);
    let hold = (u64::from(settings.max_fails) + 2) * period + rng.range(0, 2 * period);
    let mut a: Vec<(u64, Action)> = Vec::new();
    let mut reads = None;
    match name {
        "failover" => {
            let delay = rng.range(0, 2 * period);
            if rng.chance(0.5) {
                a.push((t0, Action::Crash(master)));
                a.push((t0 + delay, Action::Promote(replica)));
            } else {
                // Promotion first: the old master is still up when the new one appears (a brief split brain).
                a.push((t0, Action::Promote(replica)));
                a.push((t0 + delay, Action::Crash(master)));
            }
            if let Some(o) = other {
                a.push((t0 + delay + rng.range(0, period), Action::Stall(o, rng.chance(0.3))));
            }
            a.push((t0 + delay + hold, Action::Restart(master)));
        }
        "switchover" => {
            a.push((t0, Action::Demote(master)));
            a.push((t0 + rng.range(10, period), Action::Promote(replica)));
        }
        "split_brain" => {
            a.push((t0, Action::Partition(master)));
            a.push((t0 + rng.range(0, period), Action::Promote(replica)));
            a.push((t0 + hold, Action::Repair(master)));
        }
        "hung_host" => {
            a.push((t0, Action::Hold(replica)));
            a.push((t0 + hold, Action::Release(replica)));
        }
        "hung_master" => {
            a.push((t0, Action::Hold(master)));
            a.push((t0 + rng.range(0, period), Action::Promote(replica)));
            a.push((t0 + hold, Action::Release(master)));
        }
        "slow_master" => {
            a.push((t0, Action::SlowReply(master, settings.query_timeout_ms + rng.range(1, 200))));
            a.push((t0 + hold, Action::SlowReply(master, 0)));
        }
        "flapping_host" => {
            let victim = if rng.chance(0.5) { master } else { replica };
            let mut t = t0;
            while t < t0 + 2 * hold {
                a.push((t, Action::Partition(victim)));
                t += rng.range(20, 2 * period);
                a.push((t, Action::Repair(victim)));
                t += rng.range(20, 2 * period);
            }
        }
        "all_down" => {
            for i in 0..nodes {
                a.push((t0 + rng.range(0, 50), Action::Crash(i)));
            }
            for i in 0..nodes {
                a.push((t0 + hold + rng.range(0, period), Action::Restart(i)));
            }
        }
        "replica_stalled" => {
            a.push((t0, Action::Stall(replica, true)));
            a.push((t0 + hold, Action::Stall(replica, false)));
        }
        "replica_lagging" => {
            a.push((t0, Action::Load(rng.range(10, 40))));
            a.push((t0 + rng.range(0, period), Action::PauseReplay(replica, true)));
            a.push((t0 + hold, Action::PauseReplay(replica, false)));
            a.push((t0 + hold + rng.range(0, period), Action::Load(1)));
        }
        "idle_master" => {
            a.push((t0, Action::Writing(false)));
            a.push((t0 + hold, Action::Writing(true)));
        }
        "wrong_password" => {
            let victim = if rng.chance(0.5) { master } else { replica };
            a.push((t0, Action::WrongPassword(victim, true)));
            a.push((t0 + hold, Action::WrongPassword(victim, false)));
        }
        "impostor" => {
            // The master or a replica; the other hosts must be polled on time all along.
            let victim = if rng.chance(0.5) { master } else { replica };
            a.push((t0, Action::Impostor(victim, true)));
            a.push((t0 + hold, Action::Impostor(victim, false)));
        }
        "latency" => {
            let victim = if rng.chance(0.5) { master } else { replica };
            // Either well within the deadline (a slow network) or far beyond it (effectively a hang).
            let ms = if rng.chance(0.5) { settings.query_timeout_ms / 20 } else { settings.query_timeout_ms * 2 };
            a.push((t0, Action::Latency(victim, ms.max(1))));
            a.push((t0 + hold, Action::Latency(victim, 0)));
        }
        "read_your_writes" => {
            // A client reads its own writes all along, willing to wait 50 ms for a replica; meanwhile a replica
            // pauses replay, a write burst outruns the replicas, and the master fails over.
            reads = Some(ReadPlan { every_ms: rng.range(5, 20), wait_ms: 50 });
            a.push((t0, Action::PauseReplay(replica, true)));
            a.push((t0 + period, Action::PauseReplay(replica, false)));
            let burst = t0 + 2 * period;
            a.push((burst, Action::Load(rng.range(10, 40))));
            a.push((burst + period, Action::Load(1)));
            let failover = burst + 3 * period;
            a.push((failover, Action::Crash(master)));
            a.push((failover + rng.range(0, period), Action::Promote(replica)));
            a.push((failover + hold, Action::Restart(master)));
        }
        "receiver_view_revoked" => {
            // A hardening step on the master replicates to every replica; a failover happens meanwhile.
            for i in 0..nodes {
                a.push((t0, Action::RevokeReceiverView(i, true)));
            }
            a.push((t0 + hold, Action::Crash(master)));
            a.push((t0 + hold + rng.range(0, period), Action::Promote(replica)));
            a.push((t0 + 2 * hold, Action::Restart(master)));
            for i in 0..nodes {
                a.push((t0 + 3 * hold, Action::RevokeReceiverView(i, false)));
            }
        }
        "master_shutdown" => {
            // A clean stop: the master's connection closes, then a replica is promoted a moment later.
            a.push((t0, Action::Crash(master)));
            a.push((t0 + rng.range(0, 2 * period), Action::Promote(replica)));
            a.push((t0 + hold, Action::Restart(master)));
        }
        "master_hang" => {
            // No FIN: the episode can only start at the first poll that fails by its deadline.
            a.push((t0, Action::Hold(master)));
            a.push((t0 + settings.query_timeout_ms + rng.range(0, 2 * period), Action::Promote(replica)));
            a.push((t0 + hold, Action::Release(master)));
        }
        "replica_crash" => {
            a.push((t0, Action::Crash(replica)));
            a.push((t0 + hold, Action::Restart(replica)));
        }
        "no_promotion" => {
            // The master goes and nobody is promoted: the episode's window runs out, polling calms down.
            a.push((t0, Action::Crash(master)));
            a.push((t0 + settings.fast_window_ms + 3 * period, Action::Restart(master)));
        }
        _ => return Err(ScenarioError::Unknown(name.to_owned())),
    }
    a.sort_by_key(|(t, _)| *t);
    let last = a.last().map_or(t0, |(t, _)| *t);
    let calm_at_ms = last + period;
    let end_ms = calm_at_ms + calm_length(&settings);
    Ok(Script { name: name.to_owned(), settings, actions: a, calm_at_ms, end_ms, reads })
}

/// How long the calm phase lasts: long enough for every host to come back, with time to spare for checking.
fn calm_length(s: &Settings) -> u64 {
    (u64::from(s.max_fails) + 3) * (s.sleep_ms + s.query_timeout_ms) + 200
}

/// Swarm testing: the probability of each kind of fault is itself drawn from the seed, then faults are
/// drawn from those probabilities at random moments of the fault phase.
fn swarm(rng: &mut Rng) -> Script {
    let nodes = rng.range(2, 5) as usize;
    let settings = Settings::draw(rng, nodes);
    let period = settings.sleep_ms + settings.query_timeout_ms;
    // Weights of the fault kinds; a zero leaves that kind out of this run entirely.
    let mut weights = [0u64; 13];
    for w in &mut weights {
        *w = if rng.chance(0.3) { 0 } else { rng.range(1, 10) };
    }
    let total: u64 = weights.iter().sum::<u64>().max(1);
    let fault_end = rng.range(10, 30) * period;
    let mean_gap = rng.range(period / 4, 2 * period).max(1);
    let mut actions = Vec::new();
    let mut t = 3 * period;
    while t < fault_end {
        let node = rng.index(nodes);
        let mut pick = rng.range(0, total - 1);
        let kind = weights.iter().position(|&w| {
            if pick < w {
                true
            } else {
                pick -= w;
                false
            }
        });
        let undo_after = rng.range(10, 4 * period);
        let mut pair = |on: Action, off: Action| {
            actions.push((t, on));
            actions.push((t + undo_after, off));
        };
        match kind {
            Some(0) => pair(Action::Crash(node), Action::Restart(node)),
            Some(1) => actions.push((t, Action::Promote(node))),
            Some(2) => actions.push((t, Action::Demote(node))),
            Some(3) => pair(Action::Partition(node), Action::Repair(node)),
            Some(4) => pair(Action::Hold(node), Action::Release(node)),
            Some(5) => {
                let ms = if rng.chance(0.5) { settings.query_timeout_ms / 20 } else { settings.query_timeout_ms * 2 };
                pair(Action::Latency(node, ms.max(1)), Action::Latency(node, 0));
            }
            Some(6) => {
                // Around the deadline too: a reply a few ms before, at, or after it must count as it should.
                let t = settings.query_timeout_ms;
                let ms = match rng.range(0, 3) {
                    0 => t + 50,
                    1 => t.saturating_sub(rng.range(0, 5)),
                    2 => t + rng.range(0, 5),
                    _ => t / 2,
                };
                pair(Action::SlowReply(node, ms), Action::SlowReply(node, 0))
            }
            Some(7) => pair(Action::PauseReplay(node, true), Action::PauseReplay(node, false)),
            Some(8) => pair(Action::Stall(node, true), Action::Stall(node, false)),
            Some(9) => pair(Action::WrongPassword(node, true), Action::WrongPassword(node, false)),
            Some(10) => pair(Action::Load(rng.range(2, 40)), Action::Load(1)),
            Some(11) => pair(Action::RevokeReceiverView(node, true), Action::RevokeReceiverView(node, false)),
            _ => pair(Action::Writing(false), Action::Writing(true)),
        }
        t += rng.range(1, 2 * mean_gap);
    }
    actions.sort_by_key(|(t, _)| *t);
    let last = actions.last().map_or(fault_end, |(t, _)| *t).max(fault_end);
    let calm_at_ms = last + 1;
    let end_ms = calm_at_ms + calm_length(&settings);
    let reads = if rng.chance(0.5) {
        Some(ReadPlan { every_ms: rng.range(10, 2 * period), wait_ms: [0, 10, 50, 200][rng.index(4)] })
    } else {
        None
    };
    Script { name: "swarm".to_owned(), settings, actions, calm_at_ms, end_ms, reads }
}

impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} nodes, sleep_ms={} query_timeout_ms={} max_fails={} conn_max_age_ms={} sync_max_lag_ms={} \
             sync_max_lag_bytes={} split_brain={} PGSSLMODE={} fast_sleep_ms={} fast_window_ms={} \
             network delay <= {} ms",
            self.nodes,
            self.sleep_ms,
            self.query_timeout_ms,
            self.max_fails,
            self.conn_max_age_ms,
            self.sync_max_lag_ms,
            self.sync_max_lag_bytes,
            self.split_brain().as_str(),
            self.ssl_mode,
            self.fast_sleep_ms,
            self.fast_window_ms,
            self.net_delay_ms
        )
    }
}
