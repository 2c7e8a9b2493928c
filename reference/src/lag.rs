//! Decision 3: how far behind a replica is, in bytes and in time.

use pg_status_core::lsn::Lsn;
use pg_status_core::observation::Observation;

/// Bytes of WAL the replica `obs` knows exist but has not replayed: from its replay position (0 when unknown)
/// up to the furthest of the master's last position, its own receive position and its WAL receiver's
/// latest end; 0 when it has replayed past all of them.
pub fn bytes(obs: &Observation, master_lsn: Option<Lsn>) -> u64 {
    let replay = obs.replay_lsn.map_or(0, |l| l.0);
    let known = [master_lsn, obs.receive_lsn, obs.latest_end_lsn];
    let furthest = known.iter().flatten().map(|l| l.0).max();
    match furthest {
        Some(f) if f > replay => f - replay,
        _ => 0,
    }
}

/// Milliseconds the replica `obs` is behind: its replay delay (0 when null), but 0 once it has replayed
/// everything the master had at its last poll. `seen` is, when known, when the observation arrived and the
/// master's `(when, position)` samples (all in ms on one clock): then the delay is also at most the time
/// since the master was last at a position the replica has replayed.
pub fn time(obs: &Observation, master_lsn: Option<Lsn>, seen: Option<(u64, &[(u64, Lsn)])>) -> u64 {
    if let (Some(master), Some(replay)) = (master_lsn, obs.replay_lsn) {
        if replay.0 >= master.0 {
            return 0;
        }
    }
    let delay = obs.replay_delay_ms.unwrap_or(0);
    let (Some((observed_at, history)), Some(replay)) = (seen, obs.replay_lsn) else { return delay };
    let replayed_sample = history.iter().filter(|(_, lsn)| lsn.0 <= replay.0).map(|(at, _)| *at).max();
    match replayed_sample {
        Some(at) => delay.min(observed_at.saturating_sub(at)),
        None => delay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::replica;

    #[test]
    fn bytes_count_wal_known_to_exist_and_never_go_below_zero() {
        let mut r = replica(7_000, 5_000);
        assert_eq!(bytes(&r, Some(Lsn(10_000))), 3_000, "behind the master");
        r.receive_lsn = Some(Lsn(12_000));
        assert_eq!(bytes(&r, Some(Lsn(10_000))), 5_000, "received but not replayed, ahead of the master's poll");
        r.latest_end_lsn = Some(Lsn(15_000));
        assert_eq!(bytes(&r, Some(Lsn(1_000))), 8_000, "what the receiver's sender reported");
        assert_eq!(bytes(&replica(9_000, 0), Some(Lsn(1_000))), 0, "ahead of a stale master poll");
        r.replay_lsn = None;
        assert_eq!(bytes(&r, None), 15_000, "an unknown replay position counts as 0");
    }

    #[test]
    fn time_is_the_replay_delay_unless_caught_up_or_bounded_by_the_masters_history() {
        let r = replica(7_000, 5_000);
        assert_eq!(time(&r, Some(Lsn(10_000)), None), 5_000);
        assert_eq!(time(&r, Some(Lsn(7_000)), None), 0, "replayed everything the master had");
        let mut quiet = r.clone();
        quiet.replay_delay_ms = None;
        assert_eq!(time(&quiet, Some(Lsn(10_000)), None), 0, "a null delay");
        // The master was at 6000 at 1000 ms and at 8000 at 1900 ms; observed at 2000 ms, the replica had
        // replayed 7000: at most 1000 ms behind.
        let history = [(1_000, Lsn(6_000)), (1_900, Lsn(8_000))];
        assert_eq!(time(&r, Some(Lsn(10_000)), Some((2_000, &history))), 1_000);
        assert_eq!(time(&r, Some(Lsn(10_000)), Some((2_000, &history[1..]))), 5_000, "no replayed sample");
    }
}
