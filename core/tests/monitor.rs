//! Behaviour of the polling state machine: scheduling, deadlines, connection reuse, failure counting,
//! transitions and readiness (DESIGN 0-2, 11), including a proptest state-machine test against a reference
//! model.

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use common::*;
use pg_status_core::config::SplitBrainPolicy;
use pg_status_core::monitor::{Action, Event, Monitor, PollError, PollErrorKind, PollId, Transition, Warning};
use pg_status_core::observation::{Observation, PollQuery, Receiver, Role};
use pg_status_core::snapshot::Health;
use pg_status_core::HostIndex;
use pg_status_reference::{schedule, History};
use proptest::prelude::*;

fn drain_actions(m: &mut Monitor, now: Instant) -> Vec<(PollId, Instant, bool)> {
    std::iter::from_fn(|| m.poll_action(now))
        .map(|Action::Poll { id, deadline, reconnect, .. }| (id, deadline, reconnect))
        .collect()
}

fn lines(m: &mut Monitor) -> Vec<String> {
    std::iter::from_fn(|| m.poll_event()).filter(|e| !e.is_error()).map(|e| e.to_string()).collect()
}

fn fail() -> Result<pg_status_core::observation::Observation, PollError> {
    Err(PollError::new(PollErrorKind::Connect, "connection refused"))
}

#[test]
fn every_host_is_polled_at_once_then_sleep_ms_after_its_iteration_ended() {
    let t0 = start();
    let mut m = Monitor::new(&config(3, 1000, 500, 60_000, 3), t0);
    let first = drain_actions(&mut m, t0);
    assert_eq!(first.iter().map(|a| a.0.host.get()).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(first.iter().all(|a| a.1 == t0 + ms(500) && a.2), "deadline = now + query_timeout, fresh connections");
    m.handle_poll_result(first[0].0, Ok(master(100)), t0 + ms(10));
    m.handle_poll_result(first[1].0, Ok(replica(100, 0)), t0 + ms(200));
    assert_eq!(m.poll_timeout(), Some(t0 + ms(500)), "host 2's deadline is the next timer");
    m.handle_timeout(t0 + ms(501));
    assert_eq!(m.snapshot().hosts[2].health, Health::PossiblyDead, "a silent iteration fails at its deadline");
    assert!(drain_actions(&mut m, t0 + ms(1009)).is_empty());
    let second = drain_actions(&mut m, t0 + ms(1010));
    assert_eq!(second.iter().map(|a| (a.0.host.get(), a.2)).collect::<Vec<_>>(), [(0, false)], "connection reused");
    assert_eq!(drain_actions(&mut m, t0 + ms(1200)).iter().map(|a| a.0.host.get()).collect::<Vec<_>>(), [1]);
    let third = drain_actions(&mut m, t0 + ms(1501));
    assert_eq!(
        third.iter().map(|a| (a.0.host.get(), a.2)).collect::<Vec<_>>(),
        [(2, true)],
        "reconnect after a failure"
    );
}

#[test]
fn connections_are_recycled_after_conn_max_age() {
    let t0 = start();
    let mut m = Monitor::new(&config(1, 100, 50, 1000, 3), t0);
    let mut now = t0;
    let mut reconnects = Vec::new();
    for _ in 0..25 {
        let actions = drain_actions(&mut m, now);
        assert_eq!(actions.len(), 1);
        reconnects.push(actions[0].2);
        now += ms(10);
        m.handle_poll_result(actions[0].0, Ok(master(1)), now);
        now += ms(100);
    }
    // Iterations start every 110 ms; a connection opened at t is replaced at the first start >= t + 1000 ms.
    let opened: Vec<usize> = reconnects.iter().enumerate().filter(|(_, r)| **r).map(|(i, _)| i).collect();
    assert_eq!(opened, [0, 10, 20]);
}

#[test]
fn possibly_dead_at_the_first_failure_dead_at_max_fails_and_alive_at_the_first_success() {
    let t0 = start();
    let mut m = Monitor::new(&config(2, 100, 50, 60_000, 3), t0);
    let a = drain_actions(&mut m, t0);
    m.handle_poll_result(a[0].0, Ok(master(5000)), t0 + ms(1));
    m.handle_poll_result(a[1].0, Ok(replica(5000, 0)), t0 + ms(1));
    assert_eq!(
        lines(&mut m),
        [
            "h0: master",
            "h1: replica",
            "h1: synchronous in time",
            "h1: synchronous in bytes",
            "ready: every host has been polled once"
        ]
    );
    let mut now = t0 + ms(1);
    for expected in [Health::PossiblyDead, Health::PossiblyDead, Health::Dead] {
        now += ms(100);
        let a = drain_actions(&mut m, now);
        for (id, _, _) in &a {
            let result = if id.host.get() == 1 { fail() } else { Ok(master(5000)) };
            m.handle_poll_result(*id, result, now);
        }
        let snap = m.snapshot();
        assert_eq!(snap.hosts[1].health, expected);
        if expected == Health::PossiblyDead {
            assert_eq!(snap.hosts[1].lag_bytes, Some(0), "measurements are kept while possibly dead");
        } else {
            assert_eq!((snap.hosts[1].lag_bytes, snap.hosts[1].lsn, snap.hosts[1].alive()), (None, None, false));
        }
    }
    let events: Vec<Event> = std::iter::from_fn(|| m.poll_event()).collect();
    let shown: Vec<String> = events.iter().filter(|e| !e.is_error()).map(|e| e.to_string()).collect();
    assert_eq!(shown, ["h1: possible dead", "h1: dead"]);
    assert_eq!(events.iter().filter(|e| e.is_error()).count(), 3, "each failure until dead is logged");
    // Further identical failures while dead are not logged again.
    now += ms(100);
    for (id, _, _) in drain_actions(&mut m, now) {
        m.handle_poll_result(id, if id.host.get() == 1 { fail() } else { Ok(master(5000)) }, now);
    }
    assert_eq!(std::iter::from_fn(|| m.poll_event()).count(), 0);
    now += ms(100);
    for (id, _, _) in drain_actions(&mut m, now) {
        m.handle_poll_result(id, if id.host.get() == 1 { Ok(replica(5000, 0)) } else { Ok(master(5000)) }, now);
    }
    assert_eq!(lines(&mut m), ["h1: replica", "h1: synchronous in time", "h1: synchronous in bytes"]);
    assert_eq!(m.snapshot().hosts[1].health, Health::Alive);
}

#[test]
fn a_success_after_the_deadline_is_a_timeout_and_stale_results_are_ignored() {
    let t0 = start();
    let mut m = Monitor::new(&config(1, 100, 50, 60_000, 2), t0);
    let a = drain_actions(&mut m, t0);
    m.handle_poll_result(a[0].0, Ok(master(1)), t0 + ms(51));
    assert_eq!(m.snapshot().hosts[0].health, Health::PossiblyDead);
    m.handle_poll_result(a[0].0, Ok(master(1)), t0 + ms(52));
    assert_eq!(m.snapshot().hosts[0].health, Health::PossiblyDead, "a second report of the same iteration is ignored");
    let b = drain_actions(&mut m, t0 + ms(151));
    m.handle_poll_result(
        PollId { host: HostIndex::new(0), iteration: b[0].0.iteration + 7 },
        Ok(master(1)),
        t0 + ms(152),
    );
    assert_eq!(m.snapshot().hosts[0].health, Health::PossiblyDead, "unknown iterations are ignored");
    m.handle_poll_result(b[0].0, Ok(master(1)), t0 + ms(160));
    assert_eq!(m.snapshot().hosts[0].health, Health::Alive);
}

#[test]
fn ready_once_every_host_finished_its_first_iteration_even_by_failing() {
    let t0 = start();
    let mut m = Monitor::new(&config(2, 100, 50, 60_000, 3), t0);
    assert!(!m.snapshot().ready);
    let a = drain_actions(&mut m, t0);
    m.handle_poll_result(a[0].0, Ok(master(1)), t0);
    assert!(!m.is_ready());
    m.handle_poll_result(a[1].0, fail(), t0);
    assert!(m.is_ready() && m.snapshot().ready);
    let readies = std::iter::from_fn(|| m.poll_event()).filter(|e| *e == Event::Ready).count();
    assert_eq!(readies, 1);
    assert!(!m.snapshot().hosts[1].alive(), "a host never seen alive has no measurements");
}

#[test]
fn sync_changes_are_announced_once_each() {
    let t0 = start();
    let mut m = Monitor::new(&config(2, 100, 50, 60_000, 3), t0);
    let mut now = t0;
    let mut step = |m: &mut Monitor, master_lsn: u64, replay: u64, delay: u64| {
        for (id, _, _) in drain_actions(m, now) {
            let obs = if id.host.get() == 0 { master(master_lsn) } else { replica(replay, delay) };
            m.handle_poll_result(id, Ok(obs), now);
        }
        now += ms(100);
    };
    step(&mut m, 10_000, 10_000, 0);
    lines(&mut m);
    // Behind every WAL position the master was seen at: the replay delay counts in full.
    step(&mut m, 20_000, 5_000, 5_000);
    assert_eq!(lines(&mut m), ["h1: out of sync in bytes", "h1: out of sync in time"]);
    step(&mut m, 20_000, 5_000, 6_000);
    assert_eq!(lines(&mut m), Vec::<String>::new(), "no repeats while nothing changes");
    step(&mut m, 20_000, 20_000, 6_000);
    assert_eq!(lines(&mut m), ["h1: synchronous in time", "h1: synchronous in bytes"]);
}

#[test]
fn split_brain_is_announced_when_it_starts_and_ends() {
    let t0 = start();
    let mut m = Monitor::new(&config(2, 100, 50, 60_000, 3), t0);
    for (id, _, _) in drain_actions(&mut m, t0) {
        m.handle_poll_result(id, Ok(master(1)), t0);
    }
    let events: Vec<String> = std::iter::from_fn(|| m.poll_event()).map(|e| e.to_string()).collect();
    assert!(events.contains(&"split brain: h0, h1".to_string()), "{events:?}");
    assert_eq!(m.snapshot().master, Some(HostIndex::new(0)), "the first master in host order wins");
    let now = t0 + ms(100);
    for (id, _, _) in drain_actions(&mut m, now) {
        m.handle_poll_result(id, if id.host.get() == 0 { fail() } else { Ok(master(1)) }, now);
    }
    let events: Vec<String> = std::iter::from_fn(|| m.poll_event()).map(|e| e.to_string()).collect();
    assert!(events.contains(&"split brain ended".to_string()), "{events:?}");
    assert_eq!(m.snapshot().master, Some(HostIndex::new(1)), "a possibly dead master gives way to a healthy one");
}

#[test]
fn refresh_requests_are_coalesced_into_one_extra_poll_per_replica() {
    let t0 = start();
    let mut m = Monitor::new(&config(3, 1000, 500, 60_000, 3), t0);
    let a = drain_actions(&mut m, t0);
    m.handle_poll_result(a[0].0, Ok(master(1)), t0);
    m.handle_poll_result(a[1].0, Ok(replica(1, 0)), t0);
    // h2 stays in flight.
    for _ in 0..5 {
        m.request_refresh(t0 + ms(10));
    }
    let extra = drain_actions(&mut m, t0 + ms(10));
    assert_eq!(extra.iter().map(|a| a.0.host.get()).collect::<Vec<_>>(), [1], "only the idle replica, once");
    m.handle_poll_result(a[2].0, Ok(replica(1, 0)), t0 + ms(20));
    assert_eq!(drain_actions(&mut m, t0 + ms(20)).iter().map(|a| a.0.host.get()).collect::<Vec<_>>(), [2]);
}

/// One step of the state-machine test.
#[derive(Debug, Clone)]
enum Step {
    /// Advance the clock.
    Tick(u64),
    /// The in-flight iteration of a host (modulo the host count) succeeds as master or replica.
    Succeed { host: usize, master: bool, lsn: u64, delay: u64 },
    /// The in-flight iteration of a host fails.
    Fail(usize),
    /// The server closes a host's idle connection (the runtime's connection watch reports it).
    Close(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1u64..400).prop_map(Step::Tick),
        (0usize..4, any::<bool>(), 0u64..5000, 0u64..3000).prop_map(|(host, master, lsn, delay)| Step::Succeed {
            host,
            master,
            lsn,
            delay
        }),
        (0usize..4).prop_map(Step::Fail),
        (0usize..4).prop_map(Step::Close),
    ]
}

/// The reference model of one host: what the monitor must conclude from the same history (decision 1, from
/// the reference crate), and what it cost in connections.
#[derive(Debug, Clone, Default)]
struct ModelHost {
    history: History,
    connections: u64,
    closes: u64,
}

proptest! {
    #![proptest_config(proptest_config(300, "tests/proptest-regressions/monitor.txt"))]

    #[test]
    fn monitor_matches_the_reference_model(
        hosts in 1usize..4,
        max_fails in 1u32..4,
        steps in proptest::collection::vec(step(), 1..120),
    ) {
        let (sleep, timeout, max_age) = (100, 250, 700);
        let t0 = start();
        let mut now = t0;
        let mut m = Monitor::new(&config(hosts, sleep, timeout, max_age, max_fails), t0);
        let mut model = vec![ModelHost::default(); hosts];
        let mut in_flight: BTreeMap<usize, (PollId, Instant)> = BTreeMap::new();
        let mut idle_since: BTreeMap<usize, Instant> = (0..hosts).map(|h| (h, t0)).collect();

        for step in steps {
            for (id, deadline, reconnect) in drain_actions(&mut m, now) {
                prop_assert!(!in_flight.contains_key(&id.host.get()), "one iteration per host at a time");
                prop_assert_eq!(deadline, now + ms(timeout));
                if reconnect { model[id.host.get()].connections += 1; }
                in_flight.insert(id.host.get(), (id, deadline));
                idle_since.remove(&id.host.get());
            }
            // Scheduling never starves a host: an idle host is polled within sleep_ms of its iteration's end.
            for (&h, &since) in &idle_since {
                prop_assert!(now <= since + ms(sleep), "host {} idle since {:?} at {:?}", h, since - t0, now - t0);
            }
            match step {
                Step::Tick(d) => {
                    let target = now + ms(d);
                    // Advance through every timer on the way, as a runtime would.
                    while let Some(t) = m.poll_timeout().filter(|t| *t <= target) {
                        now = now.max(t);
                        let expired: Vec<usize> = in_flight.iter().filter(|(_, (_, dl))| now >= *dl).map(|(h, _)| *h).collect();
                        m.handle_timeout(now);
                        for h in expired {
                            in_flight.remove(&h);
                            idle_since.insert(h, now);
                            model[h].history.fail(max_fails);
                        }
                        for (id, deadline, reconnect) in drain_actions(&mut m, now) {
                            if reconnect { model[id.host.get()].connections += 1; }
                            in_flight.insert(id.host.get(), (id, deadline));
                            idle_since.remove(&id.host.get());
                        }
                    }
                    now = now.max(target);
                    let expired: Vec<usize> = in_flight.iter().filter(|(_, (_, dl))| now >= *dl).map(|(h, _)| *h).collect();
                    m.handle_timeout(now);
                    for h in expired {
                        in_flight.remove(&h);
                        idle_since.insert(h, now);
                        model[h].history.fail(max_fails);
                    }
                }
                Step::Succeed { host, master: is_master, lsn, delay } => {
                    if let Some((id, _)) = in_flight.remove(&(host % hosts)) {
                        let obs = if is_master { master(lsn) } else { replica(lsn, delay) };
                        m.handle_poll_result(id, Ok(obs.clone()), now);
                        model[id.host.get()].history.succeed(obs);
                        idle_since.insert(id.host.get(), now);
                    }
                }
                Step::Close(host) => {
                    let host = host % hosts;
                    if !in_flight.contains_key(&host) {
                        m.handle_connection_closed(HostIndex::new(host), now);
                        model[host].closes += 1;
                        // Polled at once: due now, so the idle-time bound restarts here.
                        idle_since.insert(host, now);
                    }
                }
                Step::Fail(host) => {
                    if let Some((id, _)) = in_flight.remove(&(host % hosts)) {
                        m.handle_poll_result(id, fail(), now);
                        model[id.host.get()].history.fail(max_fails);
                        idle_since.insert(id.host.get(), now);
                    }
                }
            }
            let snap = m.snapshot();
            prop_assert_eq!(&snap, &m.snapshot_from_scratch(), "the incremental snapshot equals a full derivation");
            prop_assert_eq!(snap.ready, model.iter().all(|h| h.history.finished));
            for (h, (status, mh)) in snap.hosts.iter().zip(&model).enumerate() {
                prop_assert_eq!(status.health, mh.history.health(max_fails), "host {}", h);
                prop_assert_eq!(status.alive(), mh.history.host(max_fails).last.is_some(), "host {} measurements", h);
                if status.health == Health::Dead {
                    prop_assert!(status.lag_ms.is_none() && status.lag_bytes.is_none() && status.lsn.is_none());
                }
                let elapsed = (now - t0).as_millis() as u64;
                let failures = mh.history.failures;
                prop_assert!(mh.connections <= schedule::max_connections(elapsed, max_age, failures, mh.closes),
                    "host {}: {} connections in {} ms with {} failures", h, mh.connections, elapsed, failures);
            }
            let counted: Vec<u32> = (0..hosts).map(|h| m.counters(HostIndex::new(h)).unwrap().consecutive_failures).collect();
            prop_assert_eq!(counted, model.iter().map(|h| h.history.fails).collect::<Vec<_>>());
            std::iter::from_fn(|| m.poll_event()).for_each(drop);
        }
    }
}

#[test]
fn transitions_use_the_spec_wording() {
    let words: Vec<&str> = [
        Transition::PossiblyDead,
        Transition::Dead,
        Transition::Master,
        Transition::Replica,
        Transition::SyncInTime,
        Transition::OutOfSyncInTime,
        Transition::SyncInBytes,
        Transition::OutOfSyncInBytes,
    ]
    .iter()
    .map(|t| t.as_str())
    .collect();
    assert_eq!(
        words,
        [
            "possible dead",
            "dead",
            "master",
            "replica",
            "synchronous in time",
            "out of sync in time",
            "synchronous in bytes",
            "out of sync in bytes"
        ]
    );
}

#[test]
fn a_replica_polled_before_the_master_is_not_announced_out_of_sync() {
    let t0 = start();
    let mut m = Monitor::new(&config(2, 100, 50, 60_000, 3), t0);
    let a = drain_actions(&mut m, t0);
    // The replica answers first, with the large replay delay of an idle primary.
    m.handle_poll_result(a[1].0, Ok(replica(5000, 600_000)), t0 + ms(1));
    m.handle_poll_result(a[0].0, Ok(master(5000)), t0 + ms(2));
    assert_eq!(
        lines(&mut m),
        [
            "h1: replica",
            "h0: master",
            "h1: synchronous in time",
            "h1: synchronous in bytes",
            "ready: every host has been polled once"
        ]
    );
}

#[test]
fn wal_without_commits_on_a_quiet_master_does_not_make_a_replica_minutes_late() {
    let t0 = start();
    let mut m = Monitor::new(&config(2, 100, 50, 60_000, 3), t0);
    let mut now = t0;
    let mut step = |m: &mut Monitor, master_lsn: u64, replay: u64, delay: u64, replica_first: bool| {
        let mut actions = drain_actions(m, now);
        if replica_first {
            actions.reverse();
        }
        for (id, _, _) in actions {
            let obs = if id.host.get() == 0 { master(master_lsn) } else { replica(replay, delay) };
            m.handle_poll_result(id, Ok(obs), now);
            now += ms(10);
        }
        now += ms(100);
    };
    // The last commit was ten minutes ago; everything is replayed.
    step(&mut m, 10_000, 10_000, 600_000, false);
    assert_eq!(m.snapshot().hosts[1].lag_ms, Some(0));
    // A checkpoint record: the master moves on and the replica is polled before replaying it.
    step(&mut m, 10_100, 10_000, 600_000, false);
    let lag = m.snapshot().hosts[1].lag_ms.unwrap();
    assert!(lag <= 130, "bounded by the master's previous poll, not the last commit's age: {lag} ms");
    assert!(m.snapshot().hosts[1].sync_by_time);
    // A replica that really stopped replaying grows late as the master's history moves on.
    for _ in 0..12 {
        step(&mut m, 20_000, 10_000, 600_000, false);
    }
    assert!(m.snapshot().hosts[1].lag_ms.unwrap() > 1000, "{:?}", m.snapshot().hosts[1].lag_ms);
}

#[test]
fn refresh_rounds_are_spaced_however_many_requests_ask() {
    use pg_status_core::monitor::REFRESH_SPACING;
    let t0 = start();
    let mut m = Monitor::new(&config(2, 1000, 500, 60_000, 3), t0);
    for (id, _, _) in drain_actions(&mut m, t0) {
        m.handle_poll_result(id, Ok(if id.host.get() == 0 { master(1) } else { replica(1, 0) }), t0);
    }
    m.request_refresh(t0 + ms(10));
    let first = drain_actions(&mut m, t0 + ms(10));
    assert_eq!(first.len(), 1);
    m.handle_poll_result(first[0].0, Ok(replica(1, 0)), t0 + ms(11));
    m.request_refresh(t0 + ms(12));
    assert!(drain_actions(&mut m, t0 + ms(12)).is_empty(), "a second round inside the spacing is not granted");
    m.request_refresh(t0 + ms(10) + REFRESH_SPACING);
    assert_eq!(drain_actions(&mut m, t0 + ms(10) + REFRESH_SPACING).len(), 1);
}

/// Starts every iteration due at `now` and answers each with `answer(host, reconnect, query)` 5 ms later;
/// returns `(host, reconnect, query)` of each.
fn round(
    m: &mut Monitor,
    now: Instant,
    answer: impl Fn(usize, bool) -> Result<Observation, PollError>,
) -> Vec<(usize, bool, PollQuery)> {
    let actions: Vec<Action> = std::iter::from_fn(|| m.poll_action(now)).collect();
    actions
        .into_iter()
        .map(|Action::Poll { id, reconnect, query, .. }| {
            m.handle_poll_result(id, answer(id.host.get(), reconnect), now + ms(5));
            (id.host.get(), reconnect, query)
        })
        .collect()
}

fn refused(mut o: Observation) -> Observation {
    o.receiver = Receiver::NotRead;
    o.timeline = if o.role == Role::Master { o.timeline } else { None };
    o
}

fn warnings(m: &mut Monitor) -> Vec<(String, Warning)> {
    std::iter::from_fn(|| m.poll_event())
        .filter_map(|e| match e {
            Event::Warning { host, warning } => Some((host.to_string(), warning)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_refused_receiver_view_is_remembered_per_connection_and_warned_about_once() {
    let t0 = start();
    // conn_max_age 1000 ms: the third round below opens new connections.
    let mut m = Monitor::new(&config(2, 400, 100, 1000, 3), t0);
    let refuse = |host: usize, _| Ok(refused(if host == 0 { master(100) } else { replica(100, 0) }));
    let first = round(&mut m, t0, refuse);
    assert_eq!(first, [(0, true, PollQuery::Full), (1, true, PollQuery::Full)], "new connections try it all");
    let snap = m.snapshot();
    assert!(snap.hosts.iter().all(|h| h.health == Health::Alive), "a refused view is not a failed poll");
    assert_eq!(
        (snap.master, snap.hosts[1].lag_bytes, snap.hosts[1].timeline),
        (Some(HostIndex::new(0)), Some(0), None)
    );
    assert_eq!(warnings(&mut m), [("h0".to_owned(), Warning::ReceiverRefused)], "one warning for both hosts");

    // The same connection keeps the form without the view; a new one tries the full query again, and host 0
    // answers it in full this time (a GRANT meanwhile).
    let mut now = t0 + ms(405);
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.extend(round(
            &mut m,
            now,
            |host, reconnect| {
                if host == 0 && reconnect {
                    Ok(master(100))
                } else {
                    refuse(host, reconnect)
                }
            },
        ));
        now += ms(405);
    }
    let host0: Vec<(bool, PollQuery)> = seen.iter().filter(|s| s.0 == 0).map(|s| (s.1, s.2)).collect();
    assert_eq!(
        host0,
        [(false, PollQuery::WithoutReceiver), (false, PollQuery::WithoutReceiver), (true, PollQuery::Full)]
    );
    assert!(warnings(&mut m).is_empty(), "never again");
    let next = round(&mut m, now, |host, _| if host == 0 { Ok(master(100)) } else { fail() });
    assert_eq!(next, [(0, false, PollQuery::Full), (1, false, PollQuery::WithoutReceiver)]);
    // A failure closes the connection: the next one tries the full query.
    now += ms(405);
    let after = round(&mut m, now, refuse);
    assert_eq!(after[1], (1, true, PollQuery::Full), "host 1 after its failure");
}

#[test]
fn hidden_receiver_details_and_a_blind_timeline_policy_are_warned_about_once_each() {
    let t0 = start();
    let mut config = config(3, 100, 50, 60_000, 3);
    config.split_brain = SplitBrainPolicy::Timeline;
    let mut m = Monitor::new(&config, t0);
    let hidden = || {
        let mut o = replica(100, 0);
        o.receiver = Receiver::DetailsHidden;
        o.timeline = None;
        o
    };
    let answer = |host: usize, _| Ok(if host == 0 { master(100) } else { hidden() });
    let mut now = t0;
    let mut all = Vec::new();
    for _ in 0..3 {
        let polls = round(&mut m, now, answer);
        assert!(polls.iter().all(|p| p.2 == PollQuery::Full), "hidden details need no other query");
        all.extend(warnings(&mut m));
        now += ms(105);
    }
    assert_eq!(all, [("h1".to_owned(), Warning::ReceiverHidden), ("h1".to_owned(), Warning::TimelinesHidden)]);
    let text = Event::Warning { host: "h1".into(), warning: Warning::ReceiverHidden }.to_string();
    assert!(text.starts_with("h1: ") && text.contains("pg_read_all_stats") && text.contains("pg_monitor"), "{text}");
    let text = Warning::ReceiverRefused.as_str();
    assert!(text.contains("SELECT") && text.contains("pg_catalog.pg_stat_wal_receiver"), "{text}");

    // Without the timeline policy, hidden timelines cost no policy warning.
    let mut m = Monitor::new(&common::config(2, 100, 50, 60_000, 3), t0);
    round(&mut m, t0, answer);
    assert_eq!(warnings(&mut m), [("h1".to_owned(), Warning::ReceiverHidden)]);
}

#[test]
fn the_connect_deadline_is_the_connect_timeout_when_it_ends_before_the_poll_deadline() {
    let t0 = start();
    let with = |vars: &[(&str, &str)]| {
        let mut all = vec![("pg_status__hosts", "h0")];
        all.extend_from_slice(vars);
        let config = pg_status_core::config::Config::from_vars(all.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .expect("valid");
        let mut m = Monitor::new(&config, t0);
        match m.poll_action(t0) {
            Some(Action::Poll { deadline, connect_deadline, .. }) => (deadline, connect_deadline),
            None => panic!("the first poll is due at once"),
        }
    };
    assert_eq!(with(&[]), (t0 + ms(5000), Some(t0 + ms(2000))), "defaults: 2 s to connect, 5 s in all");
    assert_eq!(with(&[("pg_status__query_timeout_ms", "1500")]), (t0 + ms(1500), None), "the poll deadline first");
    assert_eq!(with(&[("pg_status__connect_timeout", "0")]), (t0 + ms(5000), None), "0: only the poll deadline");
}

#[test]
fn an_answer_exactly_at_the_deadline_is_a_timeout() {
    use pg_status_core::monitor::in_time;
    assert!(in_time(ms(499), ms(500)));
    assert!(!in_time(ms(500), ms(500)));
    let t0 = start();
    let mut m = Monitor::new(&config(1, 100, 500, 60_000, 3), t0);
    let a = drain_actions(&mut m, t0);
    m.handle_poll_result(a[0].0, Ok(master(1)), t0 + ms(500));
    assert_eq!(m.snapshot().hosts[0].health, Health::PossiblyDead);
}

proptest! {
    #[test]
    fn poll_error_messages_are_kept_whole_or_cut_short_and_marked(message in ".{0,400}", repeat in 1usize..8) {
        use pg_status_core::monitor::{MAX_ERROR_MESSAGE, TRUNCATED};
        // Up to 8 x 400 characters of up to 4 bytes: messages on both sides of the limit.
        let message = message.repeat(repeat);
        let kept = PollError::new(PollErrorKind::Query, message.clone()).message;
        if message.len() <= MAX_ERROR_MESSAGE {
            prop_assert_eq!(kept, message);
        } else {
            prop_assert!(kept.len() <= MAX_ERROR_MESSAGE, "{} bytes kept", kept.len());
            let head = kept.strip_suffix(TRUNCATED).expect("marked as cut");
            prop_assert!(message.starts_with(head) && head.len() + 4 > MAX_ERROR_MESSAGE - TRUNCATED.len());
        }
    }
}
