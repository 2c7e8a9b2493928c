//! The simulated world the runner drives: the turmoil simulation, the cluster model, the sidecar's links to
//! each node; how a scenario's actions change them, what healing the calm phase needs, and the truth the
//! oracle checks against.

use std::time::Duration;

use crate::model::{NodeRole, SharedCluster, PASSWORD};
use crate::oracle::NodeTruth;
use crate::run::{ROTATED_PASSWORD, SIDECAR};
use crate::scenario::Action;

/// The state of the sidecar's link to one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    Healthy,
    Partitioned,
    Held,
}

pub(crate) struct World<'a> {
    pub(crate) sim: turmoil::Sim<'a>,
    pub(crate) cluster: SharedCluster,
    pub(crate) names: Vec<String>,
    pub(crate) links: Vec<Link>,
    pub(crate) latency: Vec<u64>,
    pub(crate) net_delay_ms: u64,
    /// When each node was last touched by an action.
    pub(crate) touched: Vec<u64>,
}

impl World<'_> {
    pub(crate) fn apply(&mut self, now: u64, action: &Action) -> bool {
        let name = |i: usize| self.names[i].clone();
        let mut c = self.cluster.borrow_mut();
        let node = match action {
            Action::Crash(i)
            | Action::Restart(i)
            | Action::Promote(i)
            | Action::Demote(i)
            | Action::Partition(i)
            | Action::Repair(i)
            | Action::Hold(i)
            | Action::Release(i)
            | Action::Latency(i, _)
            | Action::SlowReply(i, _)
            | Action::PauseReplay(i, _)
            | Action::Stall(i, _)
            | Action::WrongPassword(i, _)
            | Action::Impostor(i, _)
            | Action::RevokeReceiverView(i, _) => Some(*i),
            Action::Load(_) | Action::Writing(_) => None,
        };
        if let Some(i) = node {
            if i >= c.nodes.len() {
                return false;
            }
            self.touched[i] = now;
        }
        match *action {
            Action::Crash(i) if c.nodes[i].up => {
                c.nodes[i].up = false;
                drop(c);
                self.sim.crash(name(i));
            }
            Action::Restart(i) if !c.nodes[i].up => {
                c.nodes[i].up = true;
                c.nodes[i].end_sessions();
                drop(c);
                self.sim.bounce(name(i));
            }
            Action::Promote(i) if c.nodes[i].up && c.nodes[i].role == NodeRole::Replica => c.promote(i),
            Action::Demote(i) if c.nodes[i].role == NodeRole::Master => c.demote(i),
            Action::Partition(i) => {
                self.links[i] = Link::Partitioned;
                self.sim.partition(SIDECAR, name(i));
            }
            Action::Repair(i) if self.links[i] == Link::Partitioned => {
                self.links[i] = Link::Healthy;
                self.sim.repair(SIDECAR, name(i));
            }
            Action::Hold(i) if self.links[i] == Link::Healthy => {
                self.links[i] = Link::Held;
                self.sim.hold(SIDECAR, name(i));
            }
            Action::Release(i) if self.links[i] == Link::Held => {
                self.links[i] = Link::Healthy;
                self.sim.release(SIDECAR, name(i));
            }
            Action::Latency(i, ms) => {
                self.latency[i] = ms;
                if ms > 0 {
                    self.sim.set_link_latency(SIDECAR, name(i), Duration::from_millis(ms));
                } else {
                    // Back to the normal spread: min and max must be lowered in this order (min <= max).
                    self.sim.set_link_latency(SIDECAR, name(i), Duration::ZERO);
                    self.sim.set_link_max_message_latency(SIDECAR, name(i), Duration::from_millis(self.net_delay_ms));
                }
            }
            Action::SlowReply(i, ms) => c.nodes[i].slow_reply_ms = ms,
            Action::PauseReplay(i, on) => c.nodes[i].replay_paused = on,
            Action::Stall(i, on) => c.nodes[i].stalled = on,
            Action::WrongPassword(i, on) => {
                let n = &mut c.nodes[i];
                n.password = if on { ROTATED_PASSWORD } else { PASSWORD }.to_owned();
                if on {
                    n.end_sessions();
                }
            }
            Action::Impostor(i, on) => {
                let n = &mut c.nodes[i];
                n.impostor = on;
                // Whoever took the address over also took the connections: the next poll connects anew.
                n.end_sessions();
            }
            Action::RevokeReceiverView(i, on) => c.nodes[i].receiver_view_revoked = on,
            Action::Load(f) => c.load = f,
            Action::Writing(on) => c.writing = on,
            _ => return false,
        }
        true
    }

    /// The actions that end every fault: the calm phase's healing, as an operator (or Patroni) would do it.
    pub(crate) fn healing(&self) -> Vec<Action> {
        let c = self.cluster.borrow();
        let mut a = vec![Action::Load(1), Action::Writing(true)];
        for (i, n) in c.nodes.iter().enumerate() {
            if !n.up {
                a.push(Action::Restart(i));
            }
            match self.links[i] {
                Link::Partitioned => a.push(Action::Repair(i)),
                Link::Held => a.push(Action::Release(i)),
                Link::Healthy => {}
            }
            if self.latency[i] > 0 {
                a.push(Action::Latency(i, 0));
            }
            if n.slow_reply_ms > 0 {
                a.push(Action::SlowReply(i, 0));
            }
            if n.replay_paused {
                a.push(Action::PauseReplay(i, false));
            }
            if n.stalled {
                a.push(Action::Stall(i, false));
            }
            if n.password != PASSWORD {
                a.push(Action::WrongPassword(i, false));
            }
            if n.impostor {
                a.push(Action::Impostor(i, false));
            }
            if n.receiver_view_revoked {
                a.push(Action::RevokeReceiverView(i, false));
            }
        }
        // Exactly one master: the one on the highest timeline stays; without one, the most advanced replica
        // is promoted.
        let masters: Vec<usize> = (0..c.nodes.len()).filter(|&i| c.nodes[i].role == NodeRole::Master).collect();
        let keep = masters.iter().copied().max_by_key(|&i| (c.nodes[i].timeline, std::cmp::Reverse(i)));
        match keep {
            Some(k) => a.extend(masters.iter().filter(|&&i| i != k).map(|&i| Action::Demote(i))),
            None => {
                let best = (0..c.nodes.len()).max_by_key(|&i| (c.nodes[i].receive_lsn, std::cmp::Reverse(i)));
                a.extend(best.map(Action::Promote));
            }
        }
        a
    }

    pub(crate) fn truth(&self, now: u64, answering_since: &mut [u64], timeout_ms: u64) -> Vec<NodeTruth> {
        let c = self.cluster.borrow();
        c.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let answering = n.up
                    && self.links[i] == Link::Healthy
                    && n.slow_reply_ms == 0
                    && n.password == PASSWORD
                    && !n.impostor
                    && self.latency[i] * 20 <= timeout_ms;
                // A reply or a link slower than normal but not beyond the deadline may or may not make an
                // iteration fail (a new connection costs more round trips than a reused one): no claim is
                // made about such a node either way.
                // Sessions ended since the sidecar last connected: its next poll on the old session fails, a
                // failure still to come, so no claim is made until it has connected again.
                let answering = answering && n.fresh_session;
                let certain = answering
                    || !n.up
                    || self.links[i] != Link::Healthy
                    || n.password != PASSWORD
                    || n.impostor
                    || n.slow_reply_ms >= timeout_ms
                    || self.latency[i] >= timeout_ms;
                if !answering {
                    answering_since[i] = u64::MAX;
                } else if answering_since[i] == u64::MAX || self.touched[i] > answering_since[i] {
                    answering_since[i] = now.max(self.touched[i]);
                }
                NodeTruth {
                    answering,
                    certain,
                    answering_since_ms: answering_since[i],
                    role: n.role,
                    connections: n.connections,
                    latency_ms: self.latency[i],
                    timeline: n.timeline,
                    touched_ms: self.touched[i],
                    sessions_ended: n.session_epoch,
                }
            })
            .collect()
    }
}
