//! Which host a route hands out (DESIGN 5): the route's filters, health preference, locality, round robin
//! or "most synchronous", and the master fallback.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::cluster::{Health, HostStatus, Snapshot};
use crate::lsn::Lsn;

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

impl Filter {
    /// Whether `host`, a replica with measurements, satisfies the filter.
    pub fn accepts(&self, host: &HostStatus) -> bool {
        let (Some(lag_ms), Some(lag_bytes)) = (host.lag_ms, host.lag_bytes) else { return false };
        let time_ok = self.max_lag_ms.map(|max| lag_ms <= max);
        let bytes_ok = self.max_lag_bytes.map(|max| lag_bytes <= max);
        let lag_ok = match (time_ok, bytes_ok) {
            (Some(t), Some(b)) if self.either => t || b,
            (Some(t), Some(b)) => t && b,
            (Some(t), None) => t,
            (None, Some(b)) => b,
            (None, None) => true,
        };
        let lsn_ok = match self.min_lsn {
            None => true,
            Some(min) => host.lsn.is_some_and(|lsn| lsn >= min),
        };
        let history_ok = self.timeline.is_none_or(|t| host.timeline == Some(t));
        lag_ok && lsn_ok && history_ok
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
    Replica(usize),
    /// No replica passed: the elected master, by index.
    Master(usize),
    /// Neither a replica nor a master.
    Nothing,
}

impl Choice {
    /// The chosen host's index, if any.
    pub fn host(self) -> Option<usize> {
        match self {
            Choice::Replica(i) | Choice::Master(i) => Some(i),
            Choice::Nothing => None,
        }
    }
}

/// Chooses a host for a replica route. `cursor` holds one plus the index of the host last handed out by
/// round robin (0 before the first), shared by all round-robin routes and request threads.
pub fn select(snapshot: &Snapshot, filter: &Filter, pick: Pick, cursor: &AtomicUsize) -> Choice {
    let hosts = &snapshot.hosts;
    let settings = &snapshot.settings;
    for health in [Health::Alive, Health::PossiblyDead] {
        let matches = |h: &HostStatus| h.health == health && h.is_replica() && filter.accepts(h);
        let found = match pick {
            Pick::MostSyncByBytes => {
                hosts.iter().enumerate().filter(|(_, h)| matches(h)).min_by_key(|(_, h)| h.lag_bytes).map(|(i, _)| i)
            }
            Pick::RoundRobin => {
                // Locality narrows the candidates to the closest non-empty group: same DC, same region, all.
                let local_dc = |h: &HostStatus| settings.locality_dc && h.id.local_dc;
                let local_geo = |h: &HostStatus| settings.locality_geo && h.id.local_geo;
                let tiers: [&dyn Fn(&HostStatus) -> bool; 3] = [&local_dc, &local_geo, &|_| true];
                tiers.iter().find_map(|tier| round_robin(hosts, |h| matches(h) && tier(h), cursor))
            }
        };
        if let Some(i) = found {
            return Choice::Replica(i);
        }
    }
    match snapshot.master {
        Some(m) => Choice::Master(m),
        None => Choice::Nothing,
    }
}

/// The first matching host after the cursor, cyclically; moves the cursor to it without locks.
fn round_robin(hosts: &[HostStatus], matches: impl Fn(&HostStatus) -> bool, cursor: &AtomicUsize) -> Option<usize> {
    let n = hosts.len();
    if n == 0 {
        return None;
    }
    let mut last = cursor.load(Ordering::Relaxed);
    loop {
        // `last` is one plus the index last handed out, so scanning starts right after it.
        let start = last % (n + 1) % n;
        let found = (0..n).map(|k| (start + k) % n).find(|&i| matches(&hosts[i]))?;
        match cursor.compare_exchange_weak(last, found + 1, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Some(found),
            // Another request moved the cursor: pick again after its choice, so both get different hosts.
            Err(now) => last = now,
        }
    }
}
