//! Decision 1: a host is possibly dead from its first failed iteration, dead at the `max_fails`-th failure in
//! a row, and alive again at its first success; once dead, its measurements are forgotten.

use pg_status_core::observation::Observation;
use pg_status_core::snapshot::Health;

use crate::election::Host;

/// What the reference remembers of one host's finished iterations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// Some iteration has finished (successfully, with an error, or by timeout).
    pub finished: bool,
    /// Failed iterations since the last success.
    pub fails: u32,
    /// Failed iterations in all.
    pub failures: u64,
    /// The last successful observation, until the host is declared dead.
    pub last_ok: Option<Observation>,
}

impl History {
    /// An iteration that succeeded with `observation`.
    pub fn succeed(&mut self, observation: Observation) {
        self.finished = true;
        self.fails = 0;
        self.last_ok = Some(observation);
    }

    /// An iteration that failed or ran out of time, under `max_fails`.
    pub fn fail(&mut self, max_fails: u32) {
        self.finished = true;
        self.fails += 1;
        self.failures += 1;
        if self.fails >= max_fails {
            self.last_ok = None;
        }
    }

    /// The host's health under `max_fails`.
    pub fn health(&self, max_fails: u32) -> Health {
        if !self.finished {
            Health::Unknown
        } else if self.fails == 0 {
            Health::Alive
        } else if self.fails < max_fails {
            Health::PossiblyDead
        } else {
            Health::Dead
        }
    }

    /// The host as elections and views take it: its health and the observation still usable.
    pub fn host(&self, max_fails: u32) -> Host<'_> {
        let health = self.health(max_fails);
        let usable = matches!(health, Health::Alive | Health::PossiblyDead);
        Host { health, last: self.last_ok.as_ref().filter(|_| usable) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::master;

    #[test]
    fn possibly_dead_at_the_first_failure_dead_at_max_fails_alive_at_the_first_success() {
        let mut h = History::default();
        assert_eq!(h.health(3), Health::Unknown);
        h.fail(3);
        assert_eq!(h.health(3), Health::PossiblyDead, "a first iteration that fails");
        h.succeed(master(10));
        assert_eq!(h.health(3), Health::Alive);
        h.fail(3);
        h.fail(3);
        assert_eq!((h.health(3), h.host(3).last.is_some()), (Health::PossiblyDead, true), "measurements kept");
        h.fail(3);
        assert_eq!((h.health(3), h.host(3).last), (Health::Dead, None), "forgotten once dead");
        assert_eq!(h.failures, 4);
        h.succeed(master(20));
        assert_eq!((h.health(3), h.fails), (Health::Alive, 0), "one success resets the count");
        let mut once = History::default();
        once.fail(1);
        assert_eq!(once.health(1), Health::Dead, "max_fails 1: dead at the first failure");
    }
}
