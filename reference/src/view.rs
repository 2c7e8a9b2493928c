//! What a snapshot shows of each host (decisions 1, 3 and 7): role, lag, position and the two sync flags,
//! or nothing for a dead or never seen host.

use pg_status_core::lsn::Lsn;
use pg_status_core::observation::Role;
use pg_status_core::snapshot::{Health, HostStatus, Settings};

use crate::election::{self, Host};
use crate::lag;

/// One host as a snapshot should show it, its fields in the order `/hosts` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// Its health.
    pub health: Health,
    /// Its last measured role; `None` when dead or never seen alive.
    pub role: Option<Role>,
    /// Milliseconds behind (0 on a master).
    pub lag_ms: Option<u64>,
    /// `lag_ms` within `pg_status__sync_max_lag_ms` (false without a measurement).
    pub sync_by_time: bool,
    /// Bytes behind (0 on a master).
    pub lag_bytes: Option<u64>,
    /// `lag_bytes` within `pg_status__sync_max_lag_bytes` (false without a measurement).
    pub sync_by_bytes: bool,
    /// Its own position: written on a master, replayed on a replica.
    pub lsn: Option<Lsn>,
    /// The timeline it reported.
    pub timeline: Option<u32>,
}

impl View {
    /// What the core's snapshot shows of a host, to compare with the reference or to filter on.
    pub fn of(status: &HostStatus) -> View {
        View {
            health: status.health,
            role: status.role,
            lag_ms: status.lag_ms,
            sync_by_time: status.sync_by_time,
            lag_bytes: status.lag_bytes,
            sync_by_bytes: status.sync_by_bytes,
            lsn: status.lsn,
            timeline: status.timeline,
        }
    }

    /// A host without measurements.
    fn unmeasured(health: Health) -> View {
        View {
            health,
            role: None,
            lag_ms: None,
            sync_by_time: false,
            lag_bytes: None,
            sync_by_bytes: false,
            lsn: None,
            timeline: None,
        }
    }
}

/// When one host's observation arrived and, for a master, where its WAL stood at recent polls, in ms.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing<'a> {
    /// When its last observation arrived.
    pub observed_at_ms: Option<u64>,
    /// `(when, position)` of its recent polls as master, oldest first.
    pub wal_history: &'a [(u64, Lsn)],
}

/// Every host's view under `settings`; with `timing` (by host index), a replica's time lag is bounded by
/// the elected master's history.
pub fn views(hosts: &[Host<'_>], settings: &Settings, timing: Option<&[Timing<'_>]>) -> Vec<View> {
    let master = election::master(hosts, settings.split_brain);
    let master_lsn = master.and_then(|m| hosts[m].usable()).and_then(|o| o.current_lsn);
    let history: &[(u64, Lsn)] = match (master, timing) {
        (Some(m), Some(timing)) => timing.get(m).map_or(&[], |t| t.wal_history),
        _ => &[],
    };
    let mut all = Vec::with_capacity(hosts.len());
    for (i, host) in hosts.iter().enumerate() {
        let Some(obs) = host.usable() else {
            all.push(View::unmeasured(host.health));
            continue;
        };
        let (lag_ms, lag_bytes, lsn) = match obs.role {
            Role::Master => (0, 0, obs.current_lsn),
            Role::Replica => {
                let observed_at = timing.and_then(|t| t.get(i)).and_then(|t| t.observed_at_ms);
                let seen = observed_at.map(|at| (at, history));
                (lag::time(obs, master_lsn, seen), lag::bytes(obs, master_lsn), obs.replay_lsn)
            }
        };
        all.push(View {
            health: host.health,
            role: Some(obs.role),
            lag_ms: Some(lag_ms),
            sync_by_time: lag_ms <= settings.sync_max_lag_ms,
            lag_bytes: Some(lag_bytes),
            sync_by_bytes: lag_bytes <= settings.sync_max_lag_bytes,
            lsn,
            timeline: obs.timeline,
        });
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{master, replica, settings};

    #[test]
    fn a_master_lags_by_nothing_replicas_by_decision_3_and_dead_hosts_show_nothing() {
        let (m, r) = (master(10_000), replica(7_000, 5_000));
        let hosts = [
            Host { health: Health::Alive, last: Some(&m) },
            Host { health: Health::PossiblyDead, last: Some(&r) },
            Host { health: Health::Dead, last: Some(&r) },
        ];
        let shown = views(&hosts, &settings(), None);
        assert_eq!((shown[0].lag_ms, shown[0].lag_bytes, shown[0].lsn), (Some(0), Some(0), Some(Lsn(10_000))));
        assert_eq!((shown[1].lag_ms, shown[1].lag_bytes, shown[1].lsn), (Some(5_000), Some(3_000), Some(Lsn(7_000))));
        assert!(!shown[1].sync_by_time && !shown[1].sync_by_bytes, "over the 1000 ms and 1000 byte thresholds");
        assert_eq!(shown[2], View::unmeasured(Health::Dead));
        let timing = [Timing { observed_at_ms: None, wal_history: &[(0, Lsn(7_000))] }, Timing::default()];
        assert_eq!(views(&hosts, &settings(), Some(&timing))[1].lag_ms, Some(5_000), "no observation time");
    }
}
