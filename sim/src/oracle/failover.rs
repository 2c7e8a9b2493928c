//! The failover bound and calm-phase convergence, from the cluster model's truth: once the truth is stable,
//! `/master` names the master decision 4 elects among the answering nodes no later than stable-since +
//! sleep_ms + query_timeout_ms (plus network delay); in the calm phase every answer converges to the truth.

use pg_status_core::observation::{Observation, Role};
use pg_status_core::snapshot::{Health, Snapshot};
use pg_status_reference::{build, election, Host};

use super::{Oracle, PendingFailover, Truth};
use crate::model::NodeRole;

impl Oracle {
    /// Decision 4 over the truth: the master the answering nodes elect under the run's policy.
    fn true_master(&self, truth: &Truth) -> Option<usize> {
        let claims: Vec<Option<Observation>> = truth
            .nodes
            .iter()
            .map(|n| {
                let mut claim = build::master(0);
                claim.timeline = Some(n.timeline);
                (n.answering && n.role == NodeRole::Master).then_some(claim)
            })
            .collect();
        let hosts: Vec<Host<'_>> = claims
            .iter()
            .map(|claim| Host {
                health: if claim.is_some() { Health::Alive } else { Health::Unknown },
                last: claim.as_ref(),
            })
            .collect();
        election::master(&hosts, self.settings.policy)
    }

    /// Times failovers and checks their bound. `master` is the host `/master` names at this step.
    pub(super) fn check_failover(
        &mut self,
        at_ms: u64,
        truth: &Truth,
        snapshot: &Snapshot,
        master: Option<usize>,
        slack: u64,
    ) {
        let s = self.settings;
        let true_master = self.true_master(truth);
        // While a node's fate is uncertain there is no claim about who the master must be.
        let certain = truth.nodes.iter().all(|n| n.certain);
        let true_master = true_master.filter(|_| certain);
        let mut found = Vec::new();
        self.episodes.check(at_ms, truth, snapshot, master, true_master, &mut found);
        self.take(found);
        if true_master != self.true_master {
            if let Some(m) = true_master {
                // Start-up is not a failover: only a change from one known master to another is timed.
                // Nor is a change where the previous master still answers as master (a returning old master
                // winning a split brain by host order): only losing the master is a failover.
                let lost =
                    |last: usize| truth.nodes.get(last).is_none_or(|n| !(n.answering && n.role == NodeRole::Master));
                self.pending = self
                    .last_true_master
                    .filter(|&last| last != m && master != Some(m) && lost(last))
                    .map(|_| PendingFailover { to: m, since_ms: truth.stable_since_ms });
                self.last_true_master = Some(m);
            }
            self.true_master = true_master;
        }
        if let Some(p) = self.pending {
            if truth.stable_since_ms != p.since_ms {
                // The truth moved again before detection: this change cannot be timed on its own.
                self.pending = None;
            } else if master == Some(p.to) {
                self.failover_latencies.push(at_ms - p.since_ms);
                self.pending = None;
            }
        }
        let deadline = truth.stable_since_ms + s.sleep_ms + s.query_timeout_ms + slack;
        if let Some(m) = true_master {
            if at_ms >= deadline && master != Some(m) {
                let detail = format!(
                    "truth stable since {} ms with {} the first answering master; /master -> {} \
                     after the bound ({deadline} ms)",
                    truth.stable_since_ms,
                    self.names[m],
                    master.map_or("404".to_owned(), |i| self.names[i].clone())
                );
                self.violate(at_ms, "failover: /master names the new master within sleep + query_timeout", detail);
            }
        }
    }

    /// Calm phase: everything answers; once every host had time to be polled, answers match the truth.
    pub(super) fn check_calm(&mut self, at_ms: u64, truth: &Truth, snapshot: &Snapshot, slack: u64) {
        let s = self.settings;
        if let Some(calm) = truth.calm_since_ms {
            let converge =
                calm + (u64::from(s.max_fails) + 1) * (s.sleep_ms + s.query_timeout_ms) + s.sleep_ms + 2 * slack;
            if at_ms >= converge {
                for (i, n) in truth.nodes.iter().enumerate() {
                    let h = &snapshot.hosts[i];
                    let role = match n.role {
                        NodeRole::Master => Role::Master,
                        NodeRole::Replica => Role::Replica,
                    };
                    if !n.answering || h.health != Health::Alive || h.role != Some(role) {
                        let detail = format!(
                            "{}: truth {} (answering: {}), pg-status says {:?} {:?}",
                            self.names[i], n.role, n.answering, h.health, h.role
                        );
                        self.violate(at_ms, "calm phase: answers converge to the truth", detail);
                    }
                }
            }
        }
    }
}
