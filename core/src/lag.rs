//! A replica's lag (DESIGN 3), measured against the elected master's last WAL position and recent history.

use std::time::Instant;

use crate::host_index::HostIndex;
use crate::lsn::Lsn;
use crate::observation::Observation;
use crate::snapshot::{HostInput, HostTimes};

/// What replicas are measured against: the elected master's WAL position and recent history.
pub(crate) struct Reference<'a> {
    /// The master's `pg_current_wal_lsn` at its last poll.
    pub(crate) lsn: Option<Lsn>,
    /// Its recent `(when, position)` samples, oldest first.
    pub(crate) history: &'a [(Instant, Lsn)],
}

impl<'a> Reference<'a> {
    /// The reference of the elected master `master`.
    pub(crate) fn of(master: Option<HostIndex>, hosts: &[HostInput<'_>], times: &[HostTimes<'a>]) -> Reference<'a> {
        Reference {
            lsn: master.and_then(|m| hosts.get(m.get())?.last).and_then(|o| o.current_lsn),
            history: master.and_then(|m| times.get(m.get())).map_or(&[], |t| t.wal_history),
        }
    }
}
/// Lag of a replica (DESIGN 3): bytes behind the furthest WAL position known to exist (the master's at its
/// last poll, the replica's received WAL, and the end of WAL its receiver's sender last reported), and the
/// replay delay unless it has replayed everything the master had at its last poll.
///
/// The replay delay is the age of the last replayed commit, which on a quiet master says nothing about
/// lag: WAL without commits (a checkpoint record) makes a replica that is milliseconds behind look minutes
/// late. So it is also bounded by the master's history: a replica that has replayed what the master had at
/// time t is at most `observed_at - t` behind.
pub(crate) fn replica_lag(obs: &Observation, observed_at: Option<Instant>, reference: &Reference<'_>) -> (u64, u64) {
    let replay = obs.replay_lsn.unwrap_or_default();
    let furthest = reference.lsn.max(obs.receive_lsn).max(obs.latest_end_lsn).unwrap_or(replay);
    let lag_bytes = furthest.bytes_after(replay);
    let raw_ms = obs.replay_delay_ms.unwrap_or(0);
    let lag_ms = match (reference.lsn, obs.replay_lsn) {
        (Some(m), Some(r)) if r >= m => 0,
        (_, Some(r)) => {
            let bound = observed_at.and_then(|seen| {
                let (at, _) = reference.history.iter().rev().find(|(_, lsn)| *lsn <= r)?;
                Some(u64::try_from(seen.saturating_duration_since(*at).as_millis()).unwrap_or(u64::MAX))
            });
            bound.map_or(raw_ms, |b| raw_ms.min(b))
        }
        _ => raw_ms,
    };
    (lag_ms, lag_bytes)
}
