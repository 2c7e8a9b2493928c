//! Failure counting and what is said about it: each host is dead exactly at its `max_fails`-th consecutive
//! failure and alive at its first success (decision 1, from the reference); its last logged transition is
//! its current state (DESIGN 11); pg-status is ready once every host finished an iteration (decision 0);
//! a refused `pg_stat_wal_receiver` is announced (DESIGN 12).

use pg_status_core::observation::Role;
use pg_status_core::snapshot::{Health, Snapshot};

use super::Oracle;

impl Oracle {
    /// Checks health, transitions, readiness and the privilege warning against the snapshot.
    pub(super) fn check_health(&mut self, at_ms: u64, snapshot: &Snapshot) {
        let max_fails = self.settings.max_fails;
        // DESIGN 12: a refused view degrades the measurement, never the host, and the operator is told.
        if self.receiver_refused_polls > 0 && self.receiver_refused_warnings == 0 {
            let detail = format!("{} polls ran without pg_stat_wal_receiver", self.receiver_refused_polls);
            self.violate(at_ms, "a refused pg_stat_wal_receiver is announced with a warning", detail);
        }
        for i in 0..self.hosts.len() {
            let history = &self.hosts[i].history;
            let expected = history.health(max_fails);
            let got = snapshot.hosts.get(i).map(|x| x.health);
            if got != Some(expected) {
                let detail = format!(
                    "{}: {} consecutive failures (max_fails {max_fails}) should be {expected:?}, snapshot says {got:?}",
                    self.names[i], history.fails
                );
                self.violate(at_ms, "dead exactly at the max_fails-th failure, alive at the first success", detail);
            }
        }
        // Each transition is logged when it happens, so the last one logged is the current state.
        for i in 0..self.hosts.len() {
            let expected = match self.hosts[i].history.health(max_fails) {
                Health::Unknown => None,
                Health::Dead => Some("dead"),
                Health::PossiblyDead => Some("possible dead"),
                Health::Alive => self.usable(i).map(|o| if o.role == Role::Master { "master" } else { "replica" }),
            };
            let announced = self.hosts[i].announced.as_deref();
            if announced != expected {
                let detail = format!(
                    "{}: last logged {:?}, its polls say {:?}",
                    self.names[i],
                    announced.unwrap_or("nothing"),
                    expected.unwrap_or("nothing")
                );
                self.violate(at_ms, "each host transition is logged when it happens", detail);
            }
        }
        let ready = self.hosts.iter().all(|h| h.history.finished);
        if snapshot.ready != ready {
            let detail = format!("ready={}", snapshot.ready);
            self.violate(at_ms, "ready once every host finished its first iteration", detail);
        }
    }
}
