//! Which host a route hands out (DESIGN 5): the route's filters, health preference, locality, round robin
//! or "most synchronous", the master fallback, the per-host check and the candidate list.

use crate::config::ReplicaFallback;
use crate::host_index::HostIndex;
use crate::lsn::Lsn;
use crate::snapshot::{Health, HostStatus, Snapshot};

/// The constraints a replica must satisfy, at its last poll, to be handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Filter {
    /// Largest acceptable `lag_ms`; `None` is no time constraint.
    pub max_lag_ms: Option<u64>,
    /// Largest acceptable `lag_bytes`; `None` is no byte constraint.
    pub max_lag_bytes: Option<u64>,
    /// With both constraints given: satisfying either is enough (`_or_` routes) instead of both.
    pub either: bool,
    /// The replica must have replayed at least this far.
    pub min_lsn: Option<Lsn>,
    /// The replica must report this timeline. Set with `min_lsn` under `pg_status__split_brain=timeline`, to
    /// the elected master's: positions compare only along one history, and at the same positions a replica
    /// still on an older timeline (or showing none) may hold WAL that differs from what the master wrote.
    pub timeline: Option<u32>,
}

/// Why a host does not satisfy a [`Filter`], in the terms a per-host check's answer gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// It has no measurement (dead, or never seen alive).
    Unmeasured,
    /// Its time lag is over the limit.
    LagMs(u64),
    /// Its byte lag is over the limit.
    LagBytes(u64),
    /// Both lags are over their limits (on an `_or_` route, where either would do).
    LagBoth(u64, u64),
    /// It has not replayed up to `min_lsn`; its replay position, when known.
    Behind(Option<Lsn>),
    /// It is not on the timeline the filter asks for; the one it shows, when known.
    Timeline(Option<u32>),
}

impl Filter {
    /// Whether `host`, a replica with measurements, satisfies the filter.
    pub fn accepts(&self, host: &HostStatus) -> bool {
        self.verdict(host).is_ok()
    }

    /// Whether `host` satisfies the filter, and if not, the first reason why (time, bytes, `min_lsn`,
    /// timeline).
    pub fn verdict(&self, host: &HostStatus) -> Result<(), Rejection> {
        let (Some(lag_ms), Some(lag_bytes)) = (host.lag_ms, host.lag_bytes) else { return Err(Rejection::Unmeasured) };
        let time_ok = self.max_lag_ms.map(|max| lag_ms <= max);
        let bytes_ok = self.max_lag_bytes.map(|max| lag_bytes <= max);
        let lag = match (time_ok, bytes_ok) {
            (Some(false), Some(false)) if self.either => Err(Rejection::LagBoth(lag_ms, lag_bytes)),
            (Some(_), Some(_)) if self.either => Ok(()),
            (Some(false), _) => Err(Rejection::LagMs(lag_ms)),
            (_, Some(false)) => Err(Rejection::LagBytes(lag_bytes)),
            _ => Ok(()),
        };
        lag?;
        if let Some(min) = self.min_lsn {
            if host.lsn.is_none_or(|lsn| lsn < min) {
                return Err(Rejection::Behind(host.lsn));
            }
        }
        match self.timeline {
            Some(t) if host.timeline != Some(t) => Err(Rejection::Timeline(host.timeline)),
            _ => Ok(()),
        }
    }
}

/// How to pick among the replicas that pass the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// The next one after the last host handed out, in host order, cyclically (one cursor for all routes).
    RoundRobin,
    /// The one with the smallest `lag_bytes`, ties by host order; locality is not considered.
    MostSyncByBytes,
}

/// The outcome of a selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// A replica that passed the filter, by index.
    Replica(HostIndex),
    /// No replica passed: the elected master, by index.
    Master(HostIndex),
    /// Neither a replica nor a master (or no fallback to the master was wanted).
    Nothing,
}

impl Choice {
    /// The chosen host's index, if any.
    pub fn host(self) -> Option<HostIndex> {
        match self {
            Choice::Replica(i) | Choice::Master(i) => Some(i),
            Choice::Nothing => None,
        }
    }
}

/// Why a per-host check refuses a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It is dead, or was never seen alive.
    Dead,
    /// Its last poll failed (HAProxy's own `fall` and `rise` smooth this).
    PossiblyDead,
    /// It is not a replica.
    NotReplica,
    /// It is a healthy replica that does not satisfy the filter.
    Filter(Rejection),
}

/// The round-robin position shared by every round-robin route: one plus the index of the host last handed
/// out (0 before the first). The caller owns it and passes it to every request in turn.
pub type Cursor = usize;

/// Chooses a host for a replica route: a replica satisfying `filter`, else the master when `fallback`
/// allows it. `cursor` is the caller's round-robin position (see [`Cursor`]), moved past a round-robin pick.
pub fn select(
    snapshot: &Snapshot,
    filter: &Filter,
    pick: Pick,
    fallback: ReplicaFallback,
    cursor: &mut Cursor,
) -> Choice {
    let hosts = &snapshot.hosts;
    let settings = &snapshot.settings;
    for health in [Health::Alive, Health::PossiblyDead] {
        let matches = |h: &HostStatus| h.health == health && h.is_replica() && filter.accepts(h);
        let found = match pick {
            Pick::MostSyncByBytes => hosts
                .iter()
                .enumerate()
                .filter(|(_, h)| matches(h))
                .min_by_key(|(_, h)| h.lag_bytes)
                .map(|(i, _)| HostIndex::new(i)),
            Pick::RoundRobin => {
                // Locality narrows the candidates to the closest non-empty group: same DC, same region, all.
                (0..3).find_map(|tier| round_robin(hosts, |h| matches(h) && locality(settings, h) <= tier, cursor))
            }
        };
        if let Some(i) = found {
            return Choice::Replica(i);
        }
    }
    match (snapshot.master, fallback) {
        (Some(m), ReplicaFallback::Master) => Choice::Master(m),
        _ => Choice::Nothing,
    }
}

/// Every replica satisfying `filter`, in the order round robin would prefer them: healthy before possibly
/// dead, then this instance's data centre, its region, the rest; within each group in host order from the
/// cursor on. The cursor moves past the first entry, as [`select`] would have moved it. Never the master.
pub fn candidates(snapshot: &Snapshot, filter: &Filter, cursor: &mut Cursor) -> Vec<HostIndex> {
    let hosts = &snapshot.hosts;
    let n = hosts.len();
    let mut out = Vec::new();
    if n == 0 {
        return out;
    }
    let start = *cursor % (n + 1) % n;
    for health in [Health::Alive, Health::PossiblyDead] {
        for tier in 0..3 {
            out.extend((0..n).map(|k| (start + k) % n).filter_map(|i| {
                let h = &hosts[i];
                let wanted = h.health == health
                    && h.is_replica()
                    && locality(&snapshot.settings, h) == tier
                    && filter.accepts(h);
                wanted.then_some(HostIndex::new(i))
            }));
        }
    }
    if let Some(&first) = out.first() {
        *cursor = first.get() + 1;
    }
    out
}

/// Whether host `host` is a healthy replica satisfying `filter` (a per-host check), and if not, why.
/// Neither locality nor round robin plays a part.
pub fn check(snapshot: &Snapshot, filter: &Filter, host: HostIndex) -> Result<(), Refusal> {
    let Some(h) = snapshot.host(host) else { return Err(Refusal::Dead) };
    if !h.alive() {
        return Err(Refusal::Dead);
    }
    if h.health != Health::Alive {
        return Err(Refusal::PossiblyDead);
    }
    if !h.is_replica() {
        return Err(Refusal::NotReplica);
    }
    filter.verdict(h).map_err(Refusal::Filter)
}

/// 0 for a host in this instance's data centre, 1 in its region, 2 elsewhere (or without locality).
fn locality(settings: &crate::snapshot::Settings, h: &HostStatus) -> u8 {
    if settings.locality_dc && h.id.local_dc {
        0
    } else if settings.locality_geo && h.id.local_geo {
        1
    } else {
        2
    }
}

/// The first matching host after the cursor, cyclically; moves the cursor to it.
fn round_robin(hosts: &[HostStatus], matches: impl Fn(&HostStatus) -> bool, cursor: &mut Cursor) -> Option<HostIndex> {
    let n = hosts.len();
    if n == 0 {
        return None;
    }
    // The cursor is one plus the index last handed out, so scanning starts right after it.
    let start = *cursor % (n + 1) % n;
    let found = (0..n).map(|k| (start + k) % n).find(|&i| matches(&hosts[i]))?;
    *cursor = found + 1;
    Some(HostIndex::new(found))
}
