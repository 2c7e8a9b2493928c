//! What the truth says about connections and refreshes: connections opened per host stay within decision
//! 2's bound (1 + elapsed / conn_max_age + failures, plus one each time the server ended its sessions), and
//! a hung or slow host never delays the refresh of the others.

use pg_status_reference::schedule;

use super::{Oracle, Truth};

impl Oracle {
    /// Connections per host against the reference's bound.
    pub(super) fn check_connections(&mut self, at_ms: u64, truth: &Truth) {
        for (i, n) in truth.nodes.iter().enumerate() {
            let failures = self.hosts[i].history.failures;
            // The connection watch reconnects without a failed poll each time the server ends its sessions.
            let bound = schedule::max_connections(at_ms, self.settings.conn_max_age_ms, failures, n.sessions_ended);
            if n.connections > bound {
                let detail = format!(
                    "{}: {} connections accepted after {at_ms} ms with {failures} failures (bound {bound})",
                    self.names[i], n.connections
                );
                // Once per host: the count only grows from here, and the first excess is the one to replay.
                if !self.conn_reported[i] {
                    self.conn_reported[i] = true;
                    self.violate(at_ms, "connections per host <= 1 + elapsed/conn_max_age + failures", detail);
                }
            }
        }
    }

    /// Every host that answers is polled successfully every sleep_ms (plus its own round trips), once
    /// whatever it went through has settled.
    pub(super) fn check_refresh(&mut self, at_ms: u64, truth: &Truth, slack: u64) {
        let s = self.settings;
        for (i, n) in truth.nodes.iter().enumerate() {
            if !n.answering {
                continue;
            }
            let settled = n.answering_since_ms.saturating_add(s.query_timeout_ms + 2 * s.sleep_ms + 2 * slack);
            if at_ms < settled {
                continue;
            }
            let last = self.hosts[i].last_ok_ms.unwrap_or(0);
            if at_ms > last + s.sleep_ms + slack {
                let detail = format!(
                    "{} answers since {} ms but its last successful poll ended at {last} ms",
                    self.names[i], n.answering_since_ms
                );
                self.violate(at_ms, "a hung or slow host never delays the refresh of the others", detail);
            }
        }
    }
}
