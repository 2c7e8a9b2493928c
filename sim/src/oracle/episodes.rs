//! The oracle's checks of failover episodes (DESIGN 2) and of split brain declared on fresh evidence only
//! (DESIGN 4), from the poll reports, pg-status's log lines and the truth.
//!
//! - No host is polled more often than the fast interval allows (one immediate extra poll aside: the one a
//!   closed connection or a new master claim asks for).
//! - Outside episodes a host that answered is polled `sleep_ms` after its previous poll, no sooner, unless
//!   something happened to it (its connection closed, a new master claim asked for fresh evidence) or a
//!   `wait_ms` reader asked for a refresh.
//! - No episode starts without a change: episodes off, one already running, or no transition at that moment
//!   (the connection watch aside) is a violation; none lasts longer than its window plus one fast interval.
//! - During an episode, /master names the promoted replica within one fast interval plus a round trip of
//!   the moment the old master was known to be in doubt.
//! - No split brain is announced while a claimant's evidence is older than the newest claim.

use std::collections::VecDeque;

use pg_status_core::observation::Role;
use pg_status_core::snapshot::{Health, Snapshot};

use super::{PollRecord, Truth};
use crate::scenario::Settings;

/// What the episode checks remember per host.
#[derive(Debug, Clone, Default)]
struct HostPolls {
    /// Starts of its recent polls, in ms, oldest first.
    starts: VecDeque<u64>,
    /// When its previous poll ended, and whether it succeeded.
    previous: Option<(u64, bool)>,
    /// When its current claim to be master (a successful poll as master after none) was first seen.
    claim_since: Option<u64>,
    /// When the poll of its last success started.
    evidence_ms: Option<u64>,
}

/// The episode and fresh-evidence checks.
#[derive(Debug, Clone)]
pub(crate) struct EpisodeChecks {
    settings: Settings,
    names: Vec<String>,
    hosts: Vec<HostPolls>,
    /// When the running episode started.
    running_since: Option<u64>,
    /// When the last episode ended.
    last_ended_ms: Option<u64>,
    /// When a transition line was last logged.
    last_transition_ms: Option<u64>,
    /// When a host's poll last showed it master for the first time in a row (a new claim), in ms.
    last_claim_ms: Option<u64>,
    /// Since when the snapshot's elected master is not healthy (possibly dead, dead, or none).
    doubt_since: Option<u64>,
    /// Whether a `wait_ms` reader asks for refreshes in this run.
    refreshes: bool,
    /// Promotion-to-/master latencies measured during episodes, in ms.
    pub(crate) fast_latencies: Vec<u64>,
    /// The moment (the later of the truth's stable-since and the doubt) of the last failover timed.
    timed: Option<u64>,
    /// The largest extra link delay seen recently, and until when it counts: messages sent before a link
    /// got faster still arrive at the old pace.
    peak_latency: (u64, u64),
}

/// A violation found by these checks: when, which invariant, what was seen.
pub(crate) type Found = (u64, &'static str, String);

impl EpisodeChecks {
    /// Checks for `names` under `settings`; `refreshes` when a reader with `wait_ms` runs.
    pub(crate) fn new(names: Vec<String>, settings: Settings, refreshes: bool) -> EpisodeChecks {
        let n = names.len();
        EpisodeChecks {
            settings,
            names,
            hosts: vec![HostPolls::default(); n],
            running_since: None,
            last_ended_ms: None,
            last_transition_ms: None,
            last_claim_ms: None,
            doubt_since: None,
            refreshes,
            fast_latencies: Vec::new(),
            timed: None,
            peak_latency: (0, 0),
        }
    }

    /// The fast interval in effect (the core never polls faster than `sleep_ms` anyway); 0 when off.
    fn fast(&self) -> u64 {
        self.settings.fast_sleep_ms.min(self.settings.sleep_ms)
    }

    /// The slack a poll's timing may show: the simulated network and turmoil's steps.
    fn slack(&self) -> u64 {
        2 * (self.settings.net_delay_ms + crate::run::TICK_MS) + 2
    }

    /// Takes one finished poll, with `touched_ms` the last time something happened to its node.
    pub(crate) fn record(&mut self, poll: &PollRecord, touched_ms: u64, found: &mut Vec<Found>) {
        let start = poll.at_ms.saturating_sub(poll.elapsed_ms);
        let fast = self.fast();
        let slack = self.slack();
        let sleep = self.settings.sleep_ms;
        let name = self.names.get(poll.host).cloned().unwrap_or_default();
        let (running_since, last_claim, refreshes) = (self.running_since, self.last_claim_ms, self.refreshes);
        let last_ended = self.last_ended_ms;
        let timeout = self.settings.query_timeout_ms;
        let Some(h) = self.hosts.get_mut(poll.host) else { return };
        // Three starts within one interval: more than the regular poll plus one immediate extra one.
        let window = if fast == 0 { sleep } else { fast };
        h.starts.push_back(start);
        while h.starts.front().is_some_and(|&s| s + window <= start) {
            h.starts.pop_front();
        }
        if h.starts.len() > 3 && !refreshes {
            let detail = format!("{name}: polls started at {:?} ms, within {window} ms", h.starts);
            found.push((poll.at_ms, "no host is polled more often than once per fast_sleep_ms", detail));
        }
        // Outside episodes, after a success: sleep_ms, unless something happened that asks for sooner.
        if let Some((ended, ok)) = h.previous {
            // Scheduled outside every episode: after the last one ended, and before any running one began.
            let outside =
                running_since.is_none_or(|since| since > start + slack) && last_ended.is_none_or(|e| start > e + slack);
            let explained = touched_ms + slack >= ended
                // A claim asks for fresh evidence from every claimant, right after a poll in flight.
                || last_claim.is_some_and(|c| c + timeout + slack >= ended)
                || running_since.is_some_and(|since| since <= start + slack);
            if outside && ok && !explained && !refreshes && start + slack < ended + sleep {
                let detail = format!("{name}: a poll started at {start} ms after the previous one ended at {ended} ms");
                found.push((poll.at_ms, "outside episodes polls follow sleep_ms", detail));
            }
        }
        let ok = poll.in_time && poll.result.is_ok();
        h.previous = Some((poll.at_ms, ok));
        match &poll.result {
            Ok(o) if poll.in_time => {
                h.evidence_ms = Some(start);
                if o.role == Role::Master {
                    if h.claim_since.is_none() {
                        h.claim_since = Some(poll.at_ms);
                        self.last_claim_ms = Some(poll.at_ms);
                    }
                } else {
                    h.claim_since = None;
                }
            }
            _ => h.claim_since = None,
        }
    }

    /// Takes one line pg-status logged at `at_ms`.
    pub(crate) fn logged(&mut self, at_ms: u64, line: &str, found: &mut Vec<Found>) {
        let transition = ["possible dead", "dead", "master", "replica"];
        if line.split_once(": ").is_some_and(|(_, what)| transition.contains(&what)) {
            self.last_transition_ms = Some(at_ms);
        }
        if let Some(rest) = line.strip_prefix("failover episode started: ") {
            if self.fast() == 0 {
                found.push((at_ms, "no episode starts while episodes are off", line.to_owned()));
            }
            if self.running_since.is_some() {
                found.push((at_ms, "one failover episode at a time", line.to_owned()));
            }
            let watched = rest.contains("closed its connection");
            if !watched && self.last_transition_ms != Some(at_ms) {
                found.push((at_ms, "no episode starts without a change that triggers it", line.to_owned()));
            }
            self.running_since = Some(at_ms);
        } else if line.starts_with("failover episode ended") {
            self.last_ended_ms = Some(at_ms);
            match self.running_since.take() {
                None => found.push((at_ms, "an episode ends only after it started", line.to_owned())),
                Some(since) => self.check_length(since, at_ms, line, found),
            }
        } else if let Some(list) = line.strip_prefix("split brain: ") {
            let claimants: Vec<usize> =
                list.split(", ").filter_map(|n| self.names.iter().position(|x| x == n)).collect();
            let newest = claimants.iter().filter_map(|&i| self.hosts[i].claim_since).max();
            for &i in &claimants {
                let evidence = self.hosts[i].evidence_ms;
                if let (Some(newest), Some(evidence)) = (newest, evidence) {
                    // Both sides read the same clock, rounded to ms: one ms of tolerance.
                    if evidence + 1 < newest {
                        let detail = format!(
                            "{line}: {}'s evidence is a poll begun at {evidence} ms, before the newest claim \
                             ({newest} ms)",
                            self.names[i]
                        );
                        found.push((at_ms, "split brain is declared on fresh evidence only", detail));
                    }
                }
            }
        }
    }

    fn check_length(&self, since: u64, at_ms: u64, line: &str, found: &mut Vec<Found>) {
        let longest = self.settings.fast_window_ms + self.fast() + self.slack();
        if at_ms > since + longest {
            let detail = format!("{line} (started at {since} ms, longest {longest} ms)");
            found.push((at_ms, "no episode lasts longer than fast_window_ms plus one fast interval", detail));
        }
    }

    /// Checks at every step: an episode still running past its window, and the failover bound during an
    /// episode. `master` is what /master names; `true_master` the truth's (when certain).
    pub(crate) fn check(
        &mut self,
        at_ms: u64,
        truth: &Truth,
        snapshot: &Snapshot,
        master: Option<usize>,
        true_master: Option<usize>,
        found: &mut Vec<Found>,
    ) {
        if let Some(since) = self.running_since {
            self.check_length(since, at_ms, "failover episode still running", found);
        }
        let doubt = self.doubt_since;
        let healthy = snapshot.master.filter(|&m| snapshot.host(m).is_some_and(|h| h.health == Health::Alive));
        if !snapshot.ready || healthy.is_some() {
            self.doubt_since = None;
        } else if self.doubt_since.is_none() {
            self.doubt_since = Some(at_ms);
        }
        let latency_now = truth.nodes.iter().map(|n| n.latency_ms).max().unwrap_or(0);
        if latency_now >= self.peak_latency.0 || at_ms > self.peak_latency.1 {
            self.peak_latency = (latency_now, at_ms + 2 * self.settings.query_timeout_ms);
        }
        let (Some(m), Some(doubt), Some(episode)) = (true_master, doubt, self.running_since) else { return };
        let from = truth.stable_since_ms.max(doubt);
        if episode > from || self.fast() == 0 || self.timed == Some(from) {
            return;
        }
        let max_latency = self.peak_latency.0;
        // A fast interval, then the poll's round trip (a new connection: about four).
        let mut bound = self.fast() + 8 * (self.settings.net_delay_ms + max_latency + crate::run::TICK_MS) + 10;
        // A node that only just began to answer (back from a hang or a slow spell, not a promoted replica
        // that answered all along) may first have to see a poll begun before that run into its deadline.
        let timeout = self.settings.query_timeout_ms;
        if truth.nodes.get(m).is_some_and(|n| n.answering_since_ms.saturating_add(timeout) >= from) {
            bound += timeout;
        }
        if master == Some(m) {
            self.fast_latencies.push(at_ms - from);
            self.timed = Some(from);
        } else if at_ms > from + bound {
            let detail = format!(
                "in an episode since {episode} ms, the master in doubt since {doubt} ms, truth stable since {} ms \
                 with {} the master; /master -> {} after {bound} ms",
                truth.stable_since_ms,
                self.names[m],
                master.map_or("404".to_owned(), |i| self.names[i].clone())
            );
            found.push((
                at_ms,
                "failover during an episode: /master follows within fast_sleep_ms + a round trip",
                detail,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    //! Each check is shown a broken run here, so it is known to catch what it claims to.
    use pg_status_reference::build;

    use super::*;

    fn settings(fast_sleep_ms: u64) -> Settings {
        Settings {
            nodes: 2,
            sleep_ms: 100,
            query_timeout_ms: 200,
            max_fails: 3,
            conn_max_age_ms: 10_000,
            sync_max_lag_ms: 1000,
            sync_max_lag_bytes: 1000,
            net_delay_ms: 1,
            policy: pg_status_core::config::SplitBrainPolicy::HostOrder,
            ssl_mode: "disable",
            fast_sleep_ms,
            fast_window_ms: 1000,
        }
    }

    fn checks(fast_sleep_ms: u64) -> EpisodeChecks {
        EpisodeChecks::new(vec!["db1".to_owned(), "db2".to_owned()], settings(fast_sleep_ms), false)
    }

    fn poll(host: usize, start: u64, end: u64, role: Role) -> PollRecord {
        let observation = if role == Role::Master { build::master(1) } else { build::replica(1, 0) };
        PollRecord { host, at_ms: end, elapsed_ms: end - start, result: Ok(observation), in_time: true }
    }

    fn names(found: &[Found]) -> Vec<&'static str> {
        found.iter().map(|f| f.1).collect()
    }

    #[test]
    fn episodes_without_a_change_while_off_or_too_long_are_caught() {
        let mut found = Vec::new();
        let mut off = checks(0);
        off.logged(10, "db1: possible dead", &mut found);
        off.logged(
            10,
            "failover episode started: db1: the master's poll failed; polling every host every 0 ms",
            &mut found,
        );
        assert_eq!(names(&found), ["no episode starts while episodes are off"]);

        let mut found = Vec::new();
        let mut on = checks(20);
        on.logged(10, "failover episode started: db1: a new host claims to be master; polling ...", &mut found);
        assert_eq!(names(&found), ["no episode starts without a change that triggers it"]);
        on.logged(2000, "failover episode ended after 1990 ms: db1 is the master", &mut found);
        assert!(names(&found).contains(&"no episode lasts longer than fast_window_ms plus one fast interval"));
    }

    #[test]
    fn polls_too_close_together_and_early_polls_outside_episodes_are_caught() {
        let mut found = Vec::new();
        let mut c = checks(20);
        for start in [0, 5, 10, 15] {
            c.record(&poll(1, start, start + 2, Role::Replica), 0, &mut found);
        }
        assert!(names(&found).contains(&"no host is polled more often than once per fast_sleep_ms"));

        let mut found = Vec::new();
        let mut c = checks(20);
        c.record(&poll(1, 1000, 1002, Role::Replica), 0, &mut found);
        c.record(&poll(1, 1050, 1052, Role::Replica), 0, &mut found);
        assert_eq!(names(&found), ["outside episodes polls follow sleep_ms"]);
    }

    #[test]
    fn a_split_brain_declared_on_stale_evidence_is_caught() {
        let mut found = Vec::new();
        let mut c = checks(20);
        c.record(&poll(0, 0, 2, Role::Master), 0, &mut found);
        c.record(&poll(1, 500, 502, Role::Master), 0, &mut found);
        c.logged(502, "split brain: db1, db2", &mut found);
        assert!(names(&found).contains(&"split brain is declared on fresh evidence only"), "{found:?}");
        let mut found = Vec::new();
        c.record(&poll(0, 502, 504, Role::Master), 0, &mut found);
        c.record(&poll(1, 502, 504, Role::Master), 0, &mut found);
        c.logged(504, "split brain: db1, db2", &mut found);
        assert!(found.is_empty(), "{found:?}");
    }
}
