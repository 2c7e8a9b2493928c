//! Snapshot derivation: the elected master, each replica's lag and flags, and the `/hosts` document
//! (DESIGN 1, 3, 4 and 7).

mod common;

use common::*;
use pg_status_core::config::SplitBrainPolicy;
use pg_status_core::lsn::Lsn;
use pg_status_core::observation::Observation;
use pg_status_core::snapshot::{Health, Settings};
use pg_status_core::HostIndex;

/// A master at `lsn` on `timeline`.
fn master_on(lsn: u64, timeline: u32) -> Observation {
    let mut o = master(lsn);
    o.timeline = Some(timeline);
    o
}

/// A replica that has received up to `receive` and replayed up to `replay`, `delay` ms behind in time.
fn replica_at(receive: u64, replay: u64, delay: u64) -> Observation {
    let mut o = replica(replay, delay);
    o.receive_lsn = Some(Lsn(receive));
    o
}

fn policy(split_brain: SplitBrainPolicy) -> Settings {
    Settings { split_brain, ..settings() }
}

#[test]
fn lag_is_measured_against_the_master_and_an_idle_master_does_not_make_replicas_late() {
    let specs = [
        Spec::alive(master_on(10_000, 1)),
        Spec::alive(replica_at(10_000, 7_000, 5_000)),
        Spec::alive(replica_at(10_000, 10_000, 60_000)),
    ];
    let snap = snapshot(&specs, settings(), None);
    assert_eq!(snap.master, Some(HostIndex::new(0)));
    assert_eq!((snap.hosts[1].lag_bytes, snap.hosts[1].lag_ms), (Some(3_000), Some(5_000)));
    assert!(!snap.hosts[1].sync_by_bytes && !snap.hosts[1].sync_by_time);
    assert_eq!((snap.hosts[2].lag_bytes, snap.hosts[2].lag_ms), (Some(0), Some(0)));
    assert!(snap.hosts[2].sync_by_bytes && snap.hosts[2].sync_by_time);
}

#[test]
fn received_but_unreplayed_wal_counts_as_lag_even_ahead_of_the_master_poll() {
    let specs = [Spec::alive(master_on(1_000, 1)), Spec::alive(replica_at(5_000, 2_000, 0))];
    assert_eq!(snapshot(&specs, settings(), None).hosts[1].lag_bytes, Some(3_000));
}

#[test]
fn wal_the_receiver_knows_of_counts_as_lag_when_the_master_poll_is_stale() {
    let mut r = replica_at(1_000, 1_000, 0);
    r.latest_end_lsn = Some(Lsn(9_000));
    let specs = [Spec::alive(master_on(1_000, 1)), Spec::alive(r.clone())];
    let snap = snapshot(&specs, settings(), None);
    assert_eq!(snap.hosts[1].lag_bytes, Some(8_000), "not byte-synchronous while WAL is missing");
    assert!(!snap.hosts[1].sync_by_bytes);
    // Behind what it knows of, never below zero, and an unreadable receiver changes nothing else.
    r.latest_end_lsn = Some(Lsn(500));
    let specs = [Spec::alive(master_on(1_000, 1)), Spec::alive(r)];
    assert_eq!(snapshot(&specs, settings(), None).hosts[1].lag_bytes, Some(0));
}

#[test]
fn election_prefers_healthy_masters_then_host_order_or_timeline() {
    let (old, new) = (master_on(100, 1), master_on(50, 2));
    let specs = [Spec::new(Health::PossiblyDead, Some(old.clone())), Spec::alive(old.clone()), Spec::alive(new)];
    assert_eq!(snapshot(&specs, settings(), None).master, Some(HostIndex::new(1)));
    let timeline = policy(SplitBrainPolicy::Timeline);
    assert_eq!(snapshot(&specs, timeline, None).master, Some(HostIndex::new(2)));
    let only_possibly_dead = [Spec::new(Health::PossiblyDead, Some(old.clone()))];
    assert_eq!(snapshot(&only_possibly_dead, timeline, None).master, Some(HostIndex::new(0)));
    let dead = [Spec::new(Health::Dead, Some(old))];
    assert_eq!(snapshot(&dead, timeline, None).master, None);
}

#[test]
fn refusing_a_split_brain_elects_nobody_while_two_healthy_hosts_claim_master() {
    let (old, new, r) = (master_on(100, 1), master_on(50, 2), replica_at(50, 50, 0));
    let refuse = policy(SplitBrainPolicy::Refuse);
    let two = [Spec::alive(old.clone()), Spec::alive(r.clone()), Spec::alive(new.clone())];
    let snap = snapshot(&two, refuse, None);
    assert_eq!((snap.master, snap.refused_claimants()), (None, vec![HostIndex::new(0), HostIndex::new(2)]));
    // One healthy claim and one possibly dead: no split brain, the healthy one is master.
    let one = [Spec::new(Health::PossiblyDead, Some(old)), Spec::alive(r), Spec::alive(new)];
    let snap = snapshot(&one, refuse, None);
    assert_eq!((snap.master, snap.refused_claimants()), (Some(HostIndex::new(2)), vec![]));
    // The same two claims under host order elect the first and refuse nothing.
    let snap = snapshot(&two, settings(), None);
    assert_eq!((snap.master, snap.refused_claimants()), (Some(HostIndex::new(0)), vec![]));
}

#[test]
fn hosts_json_keeps_the_spec_field_order_and_nulls_for_dead_hosts() {
    let specs = [Spec::alive(master_on(0x300_0060, 1)), Spec::new(Health::Dead, None)];
    let snap = snapshot(&specs, settings(), None);
    let json = snap.hosts_json();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v[0]["lsn"], "0/3000060");
    assert_eq!(v[1]["alive"], false);
    assert!(v[1]["lag_ms"].is_null() && v[1]["lsn"].is_null());
    assert_eq!(v[1]["sync_by_time"], false);
    let order: Vec<usize> = [
        "\"host\"",
        "\"dc\"",
        "\"geo\"",
        "\"port\"",
        "\"master\"",
        "\"alive\"",
        "\"possible_dead\"",
        "\"lag_ms\"",
        "\"sync_by_time\"",
        "\"lag_bytes\"",
        "\"sync_by_bytes\"",
        "\"lsn\"",
        "\"timeline\"",
    ]
    .iter()
    .map(|k| json.find(k).unwrap())
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{json}");
}
