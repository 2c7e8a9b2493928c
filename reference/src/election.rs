//! Decision 4: which host is the master, and when a split brain leaves none.

use pg_status_core::config::SplitBrainPolicy;
use pg_status_core::observation::{Observation, Role};
use pg_status_core::snapshot::Health;

/// One host as the reference takes it: its health and its last observation (kept while possibly dead,
/// dropped once dead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host<'a> {
    /// Its health (decision 1).
    pub health: Health,
    /// Its last successful observation, if it may still be used.
    pub last: Option<&'a Observation>,
}

impl Host<'_> {
    /// The observation a snapshot may use: the last one while alive or possibly dead.
    pub fn usable(&self) -> Option<&Observation> {
        match self.health {
            Health::Alive | Health::PossiblyDead => self.last,
            Health::Dead | Health::Unknown => None,
        }
    }

    fn claims_master(&self, health: Health) -> bool {
        self.health == health && self.usable().is_some_and(|o| o.role == Role::Master)
    }
}

/// The alive hosts whose last poll said master, in host order.
pub fn claimants(hosts: &[Host<'_>]) -> Vec<usize> {
    (0..hosts.len()).filter(|&i| hosts[i].claims_master(Health::Alive)).collect()
}

/// Under `refuse`, the claimants while two or more alive hosts claim master; otherwise none.
pub fn refused_claimants(hosts: &[Host<'_>], policy: SplitBrainPolicy) -> Vec<usize> {
    let claims = claimants(hosts);
    if policy == SplitBrainPolicy::Refuse && claims.len() >= 2 {
        claims
    } else {
        Vec::new()
    }
}

/// The elected master: the first alive host claiming master, else the first possibly dead one; under
/// `timeline`, the one with the highest timeline among them (an unknown timeline is the lowest), host order
/// breaking ties; under `refuse`, none while two alive hosts claim it.
pub fn master(hosts: &[Host<'_>], policy: SplitBrainPolicy) -> Option<usize> {
    if !refused_claimants(hosts, policy).is_empty() {
        return None;
    }
    for health in [Health::Alive, Health::PossiblyDead] {
        let mut best: Option<usize> = None;
        for i in 0..hosts.len() {
            if !hosts[i].claims_master(health) {
                continue;
            }
            let better = match best {
                None => true,
                Some(b) => policy == SplitBrainPolicy::Timeline && timeline(&hosts[i]) > timeline(&hosts[b]),
            };
            if better {
                best = Some(i);
            }
        }
        if best.is_some() {
            return best;
        }
    }
    None
}

fn timeline(host: &Host<'_>) -> Option<u32> {
    host.usable().and_then(|o| o.timeline)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{master as primary, replica};

    fn on(mut o: Observation, timeline: Option<u32>) -> Observation {
        o.timeline = timeline;
        o
    }

    #[test]
    fn healthy_before_possibly_dead_then_host_order_or_timeline() {
        let (old, new, r) = (on(primary(100), Some(1)), on(primary(50), Some(2)), replica(50, 0));
        let host = |health, last| Host { health, last: Some(last) };
        let hosts = [host(Health::PossiblyDead, &new), host(Health::Alive, &r), host(Health::Alive, &old)];
        assert_eq!(master(&hosts, SplitBrainPolicy::HostOrder), Some(2), "alive before possibly dead");
        let hosts = [host(Health::Alive, &old), host(Health::Alive, &new), host(Health::Alive, &new)];
        assert_eq!(master(&hosts, SplitBrainPolicy::HostOrder), Some(0));
        assert_eq!(master(&hosts, SplitBrainPolicy::Timeline), Some(1), "highest timeline, first on ties");
        let unknown = on(primary(50), None);
        let hosts = [host(Health::Alive, &unknown), host(Health::Alive, &old)];
        assert_eq!(master(&hosts, SplitBrainPolicy::Timeline), Some(1), "an unknown timeline is lowest");
        let hosts = [host(Health::PossiblyDead, &old), host(Health::Dead, &new), host(Health::Unknown, &new)];
        assert_eq!(master(&hosts, SplitBrainPolicy::HostOrder), Some(0), "a possibly dead one stands in");
        assert_eq!(master(&hosts[1..], SplitBrainPolicy::HostOrder), None, "never a dead or unseen host");
    }

    #[test]
    fn refusing_two_alive_claims_elects_nobody() {
        let (a, b) = (primary(100), primary(200));
        let hosts = [Host { health: Health::Alive, last: Some(&a) }, Host { health: Health::Alive, last: Some(&b) }];
        assert_eq!(refused_claimants(&hosts, SplitBrainPolicy::Refuse), [0, 1]);
        assert_eq!(master(&hosts, SplitBrainPolicy::Refuse), None);
        assert_eq!(refused_claimants(&hosts, SplitBrainPolicy::HostOrder), Vec::<usize>::new());
        let hosts = [hosts[0], Host { health: Health::PossiblyDead, last: Some(&b) }];
        assert_eq!(master(&hosts, SplitBrainPolicy::Refuse), Some(0), "a possibly dead claim is no split brain");
    }
}
