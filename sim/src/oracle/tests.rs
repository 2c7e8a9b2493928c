//! The oracle must catch what it claims to catch: each check is shown a broken answer here.
use std::time::{Duration, Instant};

use pg_status_core::config::{Config, SplitBrainPolicy};
use pg_status_core::lsn::Lsn;
use pg_status_core::monitor::{Action, Monitor, PollError, PollErrorKind};
use pg_status_core::select::Choice;
use pg_status_core::HostIndex;

use pg_status_reference::build::{master, replica as replica_at};

use super::*;
use crate::reader::ReadRecord;

/// A caught-up replica at `lsn`.
pub(super) fn replica(lsn: u64) -> Observation {
    replica_at(lsn, 0)
}

fn settings(max_fails: u32) -> Settings {
    Settings {
        nodes: 2,
        sleep_ms: 100,
        query_timeout_ms: 200,
        max_fails,
        conn_max_age_ms: 1000,
        sync_max_lag_ms: 1000,
        sync_max_lag_bytes: 1000,
        net_delay_ms: 1,
        policy: SplitBrainPolicy::HostOrder,
        ssl_mode: "disable",
        fast_sleep_ms: 0,
        fast_window_ms: 60_000,
    }
}

/// Feeds the same results to a real monitor (max_fails 2) and to an oracle with `oracle_max_fails`.
fn feed(oracle_max_fails: u32, results: &[(usize, Result<Observation, PollError>)]) -> (Oracle, Snapshot) {
    let vars = [
        ("pg_status__hosts", "db1,db2"),
        ("pg_status__max_fails", "2"),
        ("pg_status__sync_max_lag_ms", "1000"),
        ("pg_status__sync_max_lag_bytes", "1000"),
    ];
    let config = Config::from_vars(vars).expect("a valid configuration");
    let start = Instant::now();
    let mut monitor = Monitor::new(&config, start);
    let mut oracle = Oracle::new(vec!["db1".into(), "db2".into()], settings(oracle_max_fails));
    let mut last = [master(100), replica(100)];
    for (step, (host, result)) in results.iter().enumerate() {
        let now = start + Duration::from_secs(20 * step as u64);
        monitor.handle_timeout(now);
        let mut id = None;
        while let Some(Action::Poll { id: poll, .. }) = monitor.poll_action(now) {
            if poll.host.get() == *host {
                id = Some(poll);
            } else {
                // The other host answers as it did before, so only `host` changes.
                let again = last[poll.host].clone();
                monitor.handle_poll_result(poll, Ok(again.clone()), now);
                oracle.record(&PollRecord {
                    host: poll.host.get(),
                    at_ms: 0,
                    elapsed_ms: 1,
                    result: Ok(again),
                    in_time: true,
                });
            }
        }
        let id = id.expect("the host is due");
        if let Ok(o) = result {
            last[*host] = o.clone();
        }
        monitor.handle_poll_result(id, result.clone(), now);
        let result = result.clone().map_err(|e| e.message);
        oracle.record(&PollRecord { host: *host, at_ms: 0, elapsed_ms: 1, result, in_time: true });
        while let Some(event) = monitor.poll_event() {
            oracle.logged(0, &event.to_string());
        }
    }
    (oracle, monitor.snapshot())
}

fn fail() -> Result<Observation, PollError> {
    Err(PollError::new(PollErrorKind::Connect, "refused"))
}

#[test]
fn agreeing_answers_pass() {
    let (mut oracle, snapshot) = feed(2, &[(0, Ok(master(100))), (1, Ok(replica(100))), (1, fail())]);
    oracle.check_snapshot(10, &snapshot);
    assert!(oracle.violations().is_empty(), "{:?}", oracle.violations());
}

#[test]
fn a_master_named_while_two_claim_it_is_caught_when_refusing() {
    // The monitor runs with host order and names db1 while both claim master; refusing, that is wrong.
    let (mut oracle, snapshot) = feed(2, &[(0, Ok(master(100))), (1, Ok(master(200)))]);
    assert_eq!(snapshot.master, Some(HostIndex::new(0)));
    oracle.settings.policy = SplitBrainPolicy::Refuse;
    oracle.check_snapshot(10, &snapshot);
    assert!(
        oracle.violations().iter().any(|v| v.invariant.starts_with("refusing a split brain")),
        "{:?}",
        oracle.violations()
    );
}

#[test]
fn a_wrong_failure_count_is_caught() {
    let (mut oracle, snapshot) = feed(3, &[(0, Ok(master(100))), (1, Ok(replica(100))), (1, fail()), (1, fail())]);
    oracle.check_snapshot(10, &snapshot);
    assert!(oracle.violations().iter().any(|v| v.invariant.starts_with("dead exactly")), "{:?}", oracle.violations());
}

#[test]
fn a_master_other_than_decision_4_is_caught() {
    let (mut oracle, mut snapshot) = feed(2, &[(0, Ok(master(100))), (1, Ok(replica(100)))]);
    snapshot.master = Some(HostIndex::new(1));
    oracle.check_snapshot(10, &snapshot);
    let names: Vec<&str> = oracle.violations().iter().map(|v| v.invariant).collect();
    assert!(names.contains(&"/master names the host decision 4 elects"), "{names:?}");
}

#[test]
fn a_replica_handed_out_beyond_its_filter_is_caught() {
    let (mut oracle, mut snapshot) = feed(2, &[(0, Ok(master(10_000))), (1, Ok(replica(100)))]);
    oracle.check_snapshot(10, &snapshot);
    assert!(oracle.violations().is_empty(), "{:?}", oracle.violations());
    // A snapshot that understates db2's lag makes byte-filtered routes hand it out.
    snapshot.hosts[1].lag_bytes = Some(0);
    oracle.check_snapshot(20, &snapshot);
    let names: Vec<&str> = oracle.violations().iter().map(|v| v.invariant).collect();
    assert!(
        names.contains(&"a filtered answer satisfied its filter at its last poll, else master or 404"),
        "{names:?}"
    );
}

#[test]
fn a_hosts_document_disagreeing_with_the_polls_is_caught() {
    let (mut oracle, mut snapshot) = feed(2, &[(0, Ok(master(10_000))), (1, Ok(replica(100)))]);
    snapshot.hosts[1].lsn = Some(Lsn(1));
    oracle.check_snapshot(10, &snapshot);
    let names: Vec<&str> = oracle.violations().iter().map(|v| v.invariant).collect();
    assert!(names.contains(&"/hosts shows each host as its last polls did"), "{names:?}");
}

#[test]
fn stale_refresh_too_many_connections_and_a_missed_failover_are_caught() {
    let (mut oracle, snapshot) = feed(2, &[(0, Ok(master(100))), (1, Ok(replica(100)))]);
    let node = |role, connections| NodeTruth {
        answering: true,
        certain: true,
        answering_since_ms: 0,
        role,
        connections,
        latency_ms: 0,
        timeline: 1,
        touched_ms: 0,
        sessions_ended: 0,
    };
    // db2 is the only answering master since 0 ms, yet /master names db1; db1 opened 50 connections;
    // neither host was polled since 0 ms.
    let truth = Truth {
        nodes: vec![node(NodeRole::Replica, 50), node(NodeRole::Master, 1)],
        stable_since_ms: 0,
        calm_since_ms: None,
    };
    oracle.check_truth(5_000, &truth, &snapshot, Some(0));
    let names: Vec<&str> = oracle.violations().iter().map(|v| v.invariant).collect();
    for expected in [
        "connections per host <= 1 + elapsed/conn_max_age + failures",
        "a hung or slow host never delays the refresh of the others",
        "failover: /master names the new master within sleep + query_timeout",
    ] {
        assert!(names.contains(&expected), "{expected}: {names:?}");
    }
}

#[test]
fn read_your_writes_answers_behind_min_lsn_late_or_lost_to_the_master_are_caught() {
    let mut oracle = Oracle::new(vec!["db1".into(), "db2".into()], settings(2));
    let good = ReadRecord {
        issued_ms: 1_000,
        answered_ms: 1_030,
        wait_ms: 50,
        min_lsn: Lsn(500),
        timeline: 1,
        at_once: Choice::Master(HostIndex::new(0)),
        answer: Ok(Choice::Replica(HostIndex::new(1))),
        satisfied: true,
        seen_lsn: Some(Lsn(500)),
        seen_timeline: Some(1),
        true_position: Some((Lsn(520), 1)),
    };
    oracle.check_read(&good);
    // A fallback to the master at the deadline, and a replica whose history was rewound on a new timeline.
    oracle.check_read(&ReadRecord {
        answered_ms: 1_050,
        answer: Ok(Choice::Master(HostIndex::new(0))),
        satisfied: false,
        ..good.clone()
    });
    oracle.check_read(&ReadRecord { true_position: Some((Lsn(300), 2)), ..good.clone() });
    assert!(oracle.violations().is_empty(), "{:?}", oracle.violations());

    let broken = [
        (ReadRecord { seen_lsn: Some(Lsn(499)), ..good.clone() }, "as pg-status saw it"),
        (ReadRecord { true_position: Some((Lsn(499), 1)), ..good.clone() }, "has truly replayed it"),
        (ReadRecord { answered_ms: 1_051, ..good.clone() }, "held longer than its wait_ms"),
        (ReadRecord { answer: Ok(Choice::Master(HostIndex::new(0))), ..good.clone() }, "some replica satisfies"),
        (
            ReadRecord {
                at_once: Choice::Replica(HostIndex::new(1)),
                answer: Ok(Choice::Nothing),
                satisfied: false,
                ..good.clone()
            },
            "never loses a replica answer",
        ),
        (ReadRecord { answer: Err(503), ..good.clone() }, "names a host"),
    ];
    for (record, invariant) in broken {
        let mut oracle = Oracle::new(vec!["db1".into(), "db2".into()], settings(2));
        oracle.check_read(&record);
        let names: Vec<&str> = oracle.violations().iter().map(|v| v.invariant).collect();
        assert!(names.iter().any(|n| n.contains(invariant)), "{invariant}: {names:?} for {record:?}");
    }
}
