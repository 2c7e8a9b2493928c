//! Failover episodes and the connection watch (DESIGN 2), and split brain declared on fresh evidence only
//! (DESIGN 4): the monitor driven by a small deterministic world in 1 ms steps.

use std::time::{Duration, Instant};

use pg_status_core::config::Config;
use pg_status_core::monitor::{Action, Monitor, PollError, PollErrorKind, PollId};
use pg_status_core::snapshot::Health;
use pg_status_core::HostIndex;
use pg_status_reference::build::{master, replica};

/// What a simulated server does when polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    Master,
    Replica,
    /// Connection refused.
    Down,
    /// Never answers.
    Hung,
}

/// Poll round trip of an answering server.
const RTT: u64 = 2;

struct World {
    m: Monitor,
    t0: Instant,
    now: Instant,
    servers: Vec<Server>,
    /// Iterations in flight with the time their answer arrives (`None`: never).
    in_flight: Vec<(PollId, Option<Instant>)>,
    /// `(host, start in ms)` of every poll.
    polls: Vec<(usize, u64)>,
    /// Every event line, with its time in ms.
    lines: Vec<(u64, String)>,
}

fn config(vars: &[(&str, &str)]) -> Config {
    let mut all = vec![("pg_status__hosts", "h0,h1,h2")];
    all.extend_from_slice(vars);
    Config::from_vars(all.iter().map(|(k, v)| (k.to_string(), v.to_string()))).expect("a valid configuration")
}

impl World {
    fn new(config: &Config) -> World {
        let t0 = Instant::now();
        World {
            m: Monitor::new(config, t0),
            t0,
            now: t0,
            servers: vec![Server::Master, Server::Replica, Server::Replica],
            in_flight: Vec::new(),
            polls: Vec::new(),
            lines: Vec::new(),
        }
    }

    fn ms(&self) -> u64 {
        (self.now - self.t0).as_millis() as u64
    }

    fn drain(&mut self) {
        while let Some(Action::Poll { id, .. }) = self.m.poll_action(self.now) {
            self.polls.push((id.host.get(), self.ms()));
            let answer = match self.servers[id.host] {
                Server::Hung => None,
                Server::Down => Some(self.now + Duration::from_millis(1)),
                Server::Master | Server::Replica => Some(self.now + Duration::from_millis(RTT)),
            };
            self.in_flight.push((id, answer));
        }
        while let Some(e) = self.m.poll_event() {
            let at = self.ms();
            self.lines.push((at, e.to_string()));
        }
    }

    /// Runs the world until `until` ms after the start.
    fn run_until(&mut self, until: u64) {
        while self.ms() < until {
            self.drain();
            self.now += Duration::from_millis(1);
            let now = self.now;
            let due: Vec<PollId> =
                self.in_flight.iter().filter(|(_, at)| at.is_some_and(|at| at <= now)).map(|(id, _)| *id).collect();
            self.in_flight.retain(|(_, at)| !at.is_some_and(|at| at <= now));
            for id in due {
                let result = match self.servers[id.host] {
                    Server::Master => Ok(master(100)),
                    Server::Replica => Ok(replica(100, 0)),
                    Server::Down | Server::Hung => Err(PollError::new(PollErrorKind::Connect, "connection refused")),
                };
                self.m.handle_poll_result(id, result, now);
            }
            if self.m.poll_timeout().is_some_and(|t| t <= now) {
                self.m.handle_timeout(now);
                let m = &self.m;
                // The monitor forgets an iteration it expired; so does the world.
                self.in_flight.retain(|(id, _)| m.counters(id.host).is_some_and(|c| c.iterations == id.iteration));
            }
        }
        self.drain();
    }

    /// The server of `host` goes away and, as the runtime would, its idle connection's close is reported.
    fn crash_with_close(&mut self, host: usize) {
        self.servers[host] = Server::Down;
        let idle = !self.in_flight.iter().any(|(id, _)| id.host.get() == host);
        if idle {
            self.m.handle_connection_closed(HostIndex::new(host), self.now);
        }
    }

    fn master(&self) -> Option<usize> {
        self.m.snapshot().master.map(HostIndex::get)
    }

    fn polls_of(&self, host: usize, from: u64, to: u64) -> Vec<u64> {
        self.polls.iter().filter(|(h, at)| *h == host && (from..to).contains(at)).map(|(_, at)| *at).collect()
    }

    fn lines_from(&self, from: u64) -> Vec<String> {
        self.lines.iter().filter(|(at, _)| *at >= from).map(|(_, l)| l.clone()).collect()
    }

    fn first_line(&self, starting: &str) -> Option<u64> {
        self.lines.iter().find(|(_, l)| l.starts_with(starting)).map(|(at, _)| *at)
    }
}

#[test]
fn steady_state_polls_only_at_sleep_ms() {
    let mut w = World::new(&config(&[]));
    w.run_until(30_000);
    for host in 0..3 {
        // At 0, then sleep_ms (5000) after each poll ended (2 ms later).
        assert_eq!(w.polls_of(host, 0, 30_000), [0, 5002, 10_004, 15_006, 20_008, 25_010], "host {host}");
    }
    assert!(w.first_line("failover episode").is_none(), "{:?}", w.lines);
}

#[test]
fn a_closed_master_connection_starts_an_episode_that_sees_the_promotion_within_a_fast_interval() {
    let mut w = World::new(&config(&[]));
    w.run_until(10_500);
    assert_eq!(w.master(), Some(0));
    w.crash_with_close(0);
    w.run_until(10_510);
    assert_eq!(w.m.snapshot().hosts[0].health, Health::PossiblyDead, "polled at once, refused: possibly dead");
    assert_eq!(
        w.lines_from(10_500)[0],
        "failover episode started: h0: the master closed its connection; polling every host every 100 ms"
    );
    assert!(w.m.in_episode());
    w.run_until(12_500);
    // Every host is polled every fast interval during the episode, never more often.
    for host in 0..3 {
        let polls = w.polls_of(host, 10_600, 12_500);
        assert!(polls.len() >= 17, "host {host}: {polls:?}");
        assert!(polls.windows(2).all(|p| p[1] - p[0] >= 100), "host {host}: {polls:?}");
    }
    w.servers[1] = Server::Master;
    let promoted = w.ms();
    let mut seen = None;
    while seen.is_none() && w.ms() < promoted + 1_000 {
        w.run_until(w.ms() + 1);
        seen = (w.master() == Some(1)).then(|| w.ms());
    }
    let seen = seen.expect("the promoted replica is elected");
    assert!(seen - promoted <= 100 + RTT + 1, "elected {} ms after the promotion", seen - promoted);
    w.run_until(promoted + 1_000);
    let ended = w.first_line("failover episode ended").expect("the episode ended");
    // Two polls of the new master begun in the episode: the one that saw the promotion, and the next one a
    // fast interval later.
    assert!(ended >= seen + 100 && ended <= seen + 2 * (100 + RTT) + 1, "ended at {ended}, master seen at {seen}");
    assert!(w.lines_from(ended)[0].ends_with(": h1 is the master"), "{:?}", w.lines_from(ended));
    assert!(!w.m.in_episode());
    assert_eq!(w.m.episodes_total(), 1);
    // Back to sleep_ms for the healthy hosts; the down one is retried at sleep_ms too (it was the master).
    w.run_until(ended + 20_000);
    for host in 1..3 {
        let polls = w.polls_of(host, ended + 1, ended + 20_000);
        assert!(polls.windows(2).all(|p| p[1] - p[0] >= 5000), "host {host}: {polls:?}");
        assert!(polls.len() >= 3, "host {host}: {polls:?}");
    }
    assert_eq!(w.m.episodes_total(), 1, "{:?}", w.lines);
    assert!(w.first_line("split brain").is_none(), "{:?}", w.lines);
}

#[test]
fn a_hung_master_starts_an_episode_at_its_first_failed_poll() {
    let mut w = World::new(&config(&[("pg_status__query_timeout_ms", "800")]));
    w.run_until(6_000);
    w.servers[0] = Server::Hung;
    w.run_until(12_000);
    // Its poll at 10,004 hangs until the deadline, 800 ms later.
    let started = w.first_line("failover episode started").expect("an episode");
    assert_eq!(started, 10_804);
    assert!(w.lines_from(started).iter().any(|l| l.contains("h0: the master's poll failed")), "{:?}", w.lines);
    let replica_polls = w.polls_of(1, 10_805, 12_000);
    assert!(replica_polls.len() >= 10, "{replica_polls:?}");
}

#[test]
fn a_window_without_a_master_ends_and_a_persisting_outage_starts_no_new_episode() {
    let mut w = World::new(&config(&[("pg_status__fast_window_ms", "3000")]));
    w.run_until(6_000);
    w.crash_with_close(0);
    w.run_until(9_100);
    let ended = w.first_line("failover episode ended").expect("the window ends the episode");
    assert!((9_000..=9_101).contains(&ended), "ended at {ended}");
    assert!(
        w.lines_from(ended)[0].starts_with("failover episode ended after 3000 ms without a confirmed master"),
        "{:?}",
        w.lines_from(ended)
    );
    w.run_until(40_000);
    assert_eq!(w.m.episodes_total(), 1, "the master still gone is no change: {:?}", w.lines);
    for host in 0..3 {
        let polls = w.polls_of(host, ended + 1, 40_000);
        assert!(polls.windows(2).all(|p| p[1] - p[0] >= 5000), "host {host}: {polls:?}");
    }
    // A promotion, later, is a change: a new episode confirms it.
    w.servers[2] = Server::Master;
    w.run_until(50_000);
    assert_eq!(w.master(), Some(2));
    assert_eq!(w.m.episodes_total(), 2, "{:?}", w.lines);
    assert!(!w.m.in_episode());
}

#[test]
fn a_crashed_replica_is_possibly_dead_at_once_and_retried_fast_until_dead() {
    let mut w = World::new(&config(&[]));
    w.run_until(7_000);
    w.crash_with_close(2);
    w.run_until(7_002);
    assert_eq!(w.m.snapshot().hosts[2].health, Health::PossiblyDead);
    w.run_until(7_500);
    assert_eq!(w.m.snapshot().hosts[2].health, Health::Dead, "retried at the fast interval: max_fails reached");
    assert_eq!(w.polls_of(2, 7_000, 7_500), [7_000, 7_101, 7_202]);
    w.run_until(20_000);
    let later = w.polls_of(2, 7_500, 20_000);
    assert!(later.windows(2).all(|p| p[1] - p[0] >= 5000), "{later:?}");
    assert!(w.first_line("failover episode").is_none(), "a replica is no failover: {:?}", w.lines);
    // A replica that merely blinked is back at the next fast retry, not at the next regular poll.
    w.servers[1] = Server::Down;
    w.run_until(20_009);
    assert_eq!(w.m.snapshot().hosts[1].health, Health::PossiblyDead, "{:?}", w.polls_of(1, 15_000, 20_010));
    w.servers[1] = Server::Replica;
    w.run_until(20_200);
    assert_eq!(w.polls_of(1, 20_009, 20_200), [20_109]);
    assert_eq!(w.m.snapshot().hosts[1].health, Health::Alive);
}

#[test]
fn fast_sleep_zero_keeps_the_fixed_schedule() {
    let mut w = World::new(&config(&[("pg_status__fast_sleep_ms", "0")]));
    w.run_until(6_000);
    w.crash_with_close(0);
    w.run_until(30_000);
    for host in 0..3 {
        let polls = w.polls_of(host, 0, 30_000);
        assert!(polls.windows(2).all(|p| p[1] - p[0] >= 5000), "host {host}: {polls:?}");
    }
    assert_eq!(w.m.episodes_total(), 0);
    assert!(w.first_line("failover episode").is_none(), "{:?}", w.lines);
}

#[test]
fn an_old_master_claim_is_checked_before_a_split_brain_is_declared() {
    // The master stops answering (no close: hung) just before its replica is promoted; the old master's
    // last poll, seconds old, still says master when the promoted replica is polled. Before this was
    // checked, that ordinary failover was announced as a split brain.
    let mut w = World::new(&config(&[("pg_status__query_timeout_ms", "1000")]));
    w.run_until(5_500);
    w.servers[0] = Server::Hung;
    w.servers[1] = Server::Master;
    w.run_until(12_000);
    assert!(w.first_line("split brain").is_none(), "{:?}", w.lines);
    // h1's claim, seen at 10,006, made h0's claim stale: its poll begun at 10,004 hung until 11,004, and
    // h0 was polled again at once after it (not a fast interval later).
    assert_eq!(w.polls_of(0, 10_000, 11_100), [10_004, 11_004]);
    assert_eq!(w.master(), Some(1));
}

#[test]
fn two_masters_that_both_confirm_are_a_split_brain() {
    let mut w = World::new(&config(&[]));
    w.run_until(5_500);
    w.servers[1] = Server::Master;
    w.run_until(10_020);
    // h1 claims at 10,006; both claims rest on polls begun at 10,004, so both are polled again at once,
    // and both confirm.
    assert_eq!(w.polls_of(0, 10_000, 10_020), [10_004, 10_006]);
    assert_eq!(w.first_line("split brain"), Some(10_008), "{:?}", w.lines);
    assert!(w.lines_from(10_008).contains(&"split brain: h0, h1".to_string()));
    assert_eq!(w.m.split_brain(), [HostIndex::new(0), HostIndex::new(1)]);
}
