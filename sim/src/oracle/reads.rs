//! Read-your-writes requests (`/replica?min_lsn=..&wait_ms=..`, see [`ReadRecord`]): never held longer
//! than `wait_ms`; a replica handed out has replayed `min_lsn`, as pg-status saw it and truly (along one
//! history); a request some replica satisfies gets a replica; waiting never loses a replica answer.

use pg_status_core::config::SplitBrainPolicy;
use pg_status_core::select::Choice;

use super::Oracle;
use crate::reader::ReadRecord;

impl Oracle {
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
            let name = self.names.get(i.get()).cloned().unwrap_or_default();
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
}
