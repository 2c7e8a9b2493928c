//! Failover episodes (DESIGN 2): which change starts one, and when it is over.
//!
//! While the master is in doubt every host is polled at the fast interval, so a promotion is seen within one
//! fast interval instead of one `sleep_ms`. An episode starts only on a change, never because a state
//! persists, and ends once the same healthy master, unopposed, answered two of its fast polls, or when its
//! window is over, whichever comes first. The monitor owns the scheduling; this module only decides.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::host_index::HostIndex;

/// What started a failover episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EpisodeCause {
    /// A poll of the elected master failed.
    MasterFailed,
    /// The elected master closed its idle connection.
    MasterClosed,
    /// The elected master answered, but no longer as master (or another host is elected in its place).
    MasterSteppedDown,
    /// A host that was not the elected master claims to be master.
    NewClaim,
}

impl EpisodeCause {
    /// A short lowercase name, for structured logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EpisodeCause::MasterFailed => "master_poll_failed",
            EpisodeCause::MasterClosed => "master_connection_closed",
            EpisodeCause::MasterSteppedDown => "master_stepped_down",
            EpisodeCause::NewClaim => "new_master_claim",
        }
    }

    /// The cause in words, after the host's name.
    fn describe(self) -> &'static str {
        match self {
            EpisodeCause::MasterFailed => "the master's poll failed",
            EpisodeCause::MasterClosed => "the master closed its connection",
            EpisodeCause::MasterSteppedDown => "the master no longer answers as master",
            EpisodeCause::NewClaim => "a new host claims to be master",
        }
    }
}

/// How a failover episode ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EpisodeOutcome {
    /// This host was elected, healthy and unopposed, at two fast polls in a row.
    Master(Arc<str>),
    /// The window (`pg_status__fast_window_ms`) ran out first.
    WindowOver,
}

/// The start-up line and the end line of an episode, as [`crate::monitor::Event`] shows them.
pub(crate) fn started_line(f: &mut fmt::Formatter<'_>, host: &str, cause: EpisodeCause, fast: Duration) -> fmt::Result {
    write!(
        f,
        "failover episode started: {host}: {}; polling every host every {} ms",
        cause.describe(),
        fast.as_millis()
    )
}

/// See [`started_line`].
pub(crate) fn ended_line(
    f: &mut fmt::Formatter<'_>,
    outcome: &EpisodeOutcome,
    lasted: Duration,
    sleep: Duration,
) -> fmt::Result {
    let lasted = lasted.as_millis();
    match outcome {
        EpisodeOutcome::Master(host) => write!(f, "failover episode ended after {lasted} ms: {host} is the master"),
        EpisodeOutcome::WindowOver => write!(
            f,
            "failover episode ended after {lasted} ms without a confirmed master (pg_status__fast_window_ms); \
             polling every {} ms until the next change",
            sleep.as_millis()
        ),
    }
}

/// What the episode rules look at after each input: the elected master if it is healthy, and the healthy
/// hosts that claim to be master.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Watch {
    /// The elected master, when it is alive (not possibly dead).
    pub(crate) master: Option<HostIndex>,
    /// Alive hosts whose last poll said master, in host order.
    pub(crate) claims: Vec<HostIndex>,
}

impl Watch {
    /// The master an episode may end on: healthy, and the only healthy host claiming the role.
    pub(crate) fn unopposed(&self) -> Option<HostIndex> {
        self.master.filter(|m| self.claims == [*m])
    }
}

/// The change between two looks that starts an episode, with the host it is about: the healthy master lost
/// (its poll failed, or it answers as a replica), or a host claiming master that did not before (which
/// includes one elected in place of a master that still claims). `failed` tells whether a host's last poll
/// failed.
pub(crate) fn trigger(
    before: &Watch,
    after: &Watch,
    failed: impl Fn(HostIndex) -> bool,
) -> Option<(HostIndex, EpisodeCause)> {
    if let Some(m) = before.master {
        if !after.claims.contains(&m) {
            let cause = if failed(m) { EpisodeCause::MasterFailed } else { EpisodeCause::MasterSteppedDown };
            return Some((m, cause));
        }
    }
    let new_claim = after.claims.iter().copied().find(|c| !before.claims.contains(c) && before.master != Some(*c));
    new_claim
        .or_else(|| after.master.filter(|&now| before.master.is_some_and(|m| m != now)))
        .map(|c| (c, EpisodeCause::NewClaim))
}

/// A running episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Episode {
    /// When it started.
    pub(crate) started: Instant,
    /// The unopposed master seen at the episode's polls of it so far, and how many polls in a row saw it.
    confirmed: Option<(HostIndex, u8)>,
}

/// How many polls in a row must find the same unopposed master for an episode to end.
pub(crate) const CONFIRMATIONS: u8 = 2;

impl Episode {
    /// An episode starting at `now`.
    pub(crate) fn new(now: Instant) -> Episode {
        Episode { started: now, confirmed: None }
    }

    /// Takes in a finished poll of `host` that started at `poll_started`, with `unopposed` the unopposed
    /// master after it. Returns true once the episode has seen its master often enough to end.
    pub(crate) fn observe(&mut self, host: HostIndex, poll_started: Instant, unopposed: Option<HostIndex>) -> bool {
        let Some(master) = unopposed else {
            self.confirmed = None;
            return false;
        };
        let count = match self.confirmed {
            Some((m, n)) if m == master => n,
            _ => 0,
        };
        // Only the master's own polls count, and only those begun in the episode: a poll started before
        // it says nothing about what changed since.
        let count = if host == master && poll_started >= self.started { count.saturating_add(1) } else { count };
        self.confirmed = Some((master, count));
        count >= CONFIRMATIONS
    }

    /// When the window ends.
    pub(crate) fn window_end(&self, window: Duration) -> Instant {
        self.started + window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(master: Option<usize>, claims: &[usize]) -> Watch {
        Watch { master: master.map(HostIndex::new), claims: claims.iter().copied().map(HostIndex::new).collect() }
    }

    fn started(host: usize, cause: EpisodeCause) -> Option<(HostIndex, EpisodeCause)> {
        Some((HostIndex::new(host), cause))
    }

    #[test]
    fn a_change_starts_an_episode_a_persisting_state_does_not() {
        let none = |_| false;
        let failed = |_| true;
        assert_eq!(trigger(&watch(Some(0), &[0]), &watch(None, &[]), failed), started(0, EpisodeCause::MasterFailed));
        assert_eq!(
            trigger(&watch(Some(0), &[0]), &watch(None, &[]), none),
            started(0, EpisodeCause::MasterSteppedDown)
        );
        assert_eq!(trigger(&watch(Some(0), &[0]), &watch(Some(0), &[0, 1]), none), started(1, EpisodeCause::NewClaim));
        assert_eq!(
            trigger(&watch(Some(1), &[0, 1]), &watch(Some(0), &[0, 1]), none),
            started(0, EpisodeCause::NewClaim),
            "another claimant elected instead of a master that still claims"
        );
        assert_eq!(
            trigger(&watch(Some(1), &[1]), &watch(Some(0), &[0, 1]), none),
            started(0, EpisodeCause::NewClaim),
            "a returning old master wins by host order"
        );
        assert_eq!(trigger(&watch(None, &[]), &watch(Some(1), &[1]), none), started(1, EpisodeCause::NewClaim));
        assert_eq!(trigger(&watch(None, &[]), &watch(None, &[]), none), None, "no master, still none: no change");
        assert_eq!(trigger(&watch(Some(0), &[0]), &watch(Some(0), &[0]), none), None);
        assert_eq!(trigger(&watch(Some(0), &[0, 1]), &watch(Some(0), &[0, 1]), none), None);
    }
}
