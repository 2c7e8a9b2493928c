//! Selection invariants of DESIGN.md as property tests: never a dead or unseen host, filters respected,
//! healthy before possibly dead, locality, round-robin fairness, deterministic "most synchronous", and master
//! election order.

mod common;

use common::*;
use pg_status_core::config::{ReplicaFallback, SplitBrainPolicy};
use pg_status_core::lsn::Lsn;
use pg_status_core::observation::Role;
use pg_status_core::select::{candidates as list, check, select, Choice, Filter, Pick};
use pg_status_core::snapshot::{Health, Snapshot};
use pg_status_core::HostIndex;
use pg_status_reference::{election, routes, Host, View};
use proptest::prelude::*;

fn spec() -> impl Strategy<Value = Spec> {
    let health = prop_oneof![
        Just(Health::Alive),
        Just(Health::Alive),
        Just(Health::PossiblyDead),
        Just(Health::Dead),
        Just(Health::Unknown)
    ];
    let obs = prop_oneof![
        (0u64..3000).prop_map(master),
        (0u64..3000, 0u64..3000).prop_map(|(lsn, delay)| replica(lsn, delay)),
        (0u64..3000, 0u64..3000, proptest::option::weighted(0.8, 1u32..3)).prop_map(|(lsn, delay, timeline)| {
            let mut obs = replica(lsn, delay);
            obs.timeline = timeline;
            obs
        }),
    ];
    let dc = prop_oneof![Just(Some("x")), Just(Some("y"))];
    (health, proptest::option::weighted(0.9, obs), dc).prop_map(|(health, obs, dc)| {
        // A dead or never-finished host has no observation, as the monitor guarantees.
        let obs = if matches!(health, Health::Dead | Health::Unknown) { None } else { obs };
        Spec { health, obs, dc }
    })
}

fn filter() -> impl Strategy<Value = Filter> {
    (
        proptest::option::of(0u64..2000),
        proptest::option::of(0u64..2000),
        any::<bool>(),
        proptest::option::of((0u64..3000).prop_map(Lsn)),
        proptest::option::weighted(0.2, 1u32..3),
    )
        .prop_map(|(max_lag_ms, max_lag_bytes, either, min_lsn, timeline)| Filter {
            max_lag_ms,
            max_lag_bytes,
            either,
            min_lsn,
            timeline,
        })
}

/// What the snapshot shows of each host, for the reference to filter on.
fn views(snap: &Snapshot) -> Vec<View> {
    snap.hosts.iter().map(View::of).collect()
}

/// The filter, as the reference states it.
fn satisfies(snap: &Snapshot, i: usize, f: &Filter) -> bool {
    routes::admits(f, &View::of(&snap.hosts[i]))
}

/// The hosts with `health` that pass `f`, as the reference states it.
fn candidates(snap: &Snapshot, f: &Filter, health: Health) -> Vec<usize> {
    let views = views(snap);
    (0..views.len()).filter(|&i| views[i].health == health && routes::admits(f, &views[i])).collect()
}

proptest! {
    #![proptest_config(proptest_config(500, "tests/proptest-regressions/select.txt"))]

    #[test]
    fn choices_respect_health_filters_and_fallback(
        specs in proptest::collection::vec(spec(), 0..7),
        f in filter(),
        most_sync in any::<bool>(),
        cursor in 0usize..10,
        local in proptest::option::of(Just("x")),
    ) {
        let mut settings = settings();
        settings.locality_dc = local.is_some();
        let snap = snapshot(&specs, settings, local);
        let pick = if most_sync { Pick::MostSyncByBytes } else { Pick::RoundRobin };
        let choice = select(&snap, &f, pick, ReplicaFallback::Master, &mut cursor.clone());
        let views = views(&snap);
        let tier = routes::preferred(&views, &f);
        match choice {
            Choice::Replica(i) => {
                let (h, i) = (&snap.hosts[i], i.get());
                prop_assert!(h.alive() && h.health != Health::Dead, "never a dead or unseen host");
                prop_assert!(satisfies(&snap, i, &f), "the filter holds at the last poll");
                prop_assert!(tier.contains(&i), "healthy replicas are preferred");
                if most_sync {
                    prop_assert_eq!(Some(i), routes::most_sync(&views, &tier), "the smallest lag_bytes, ties by host order");
                } else {
                    let rank = |j: usize| {
                        let id = &snap.hosts[j].id;
                        routes::closeness(&snap.settings, id.local_dc, id.local_geo)
                    };
                    prop_assert!(routes::closest(&tier, rank).contains(&i), "a local replica is preferred when one qualifies");
                }
            }
            Choice::Master(i) => {
                prop_assert!(tier.is_empty());
                prop_assert_eq!(Some(i), snap.master);
                prop_assert_eq!(snap.hosts[i].role, Some(Role::Master));
            }
            Choice::Nothing => {
                prop_assert!(tier.is_empty() && snap.master.is_none());
            }
        }
    }

    #[test]
    fn round_robin_is_fair_over_a_stable_set(
        specs in proptest::collection::vec(spec(), 1..7),
        cursor in 0usize..10,
        k in 1usize..60,
    ) {
        let snap = snapshot(&specs, settings(), None);
        let f = Filter::default();
        let set = candidates(&snap, &f, Health::Alive);
        prop_assume!(!set.is_empty());
        let mut cursor = cursor;
        let mut counts = vec![0usize; snap.hosts.len()];
        for _ in 0..k {
            let Choice::Replica(i) = select(&snap, &f, Pick::RoundRobin, ReplicaFallback::Master, &mut cursor) else {
                return Err(TestCaseError::fail("a healthy replica exists"));
            };
            counts[i] += 1;
        }
        let m = set.len();
        for &i in &set {
            prop_assert!(counts[i] == k / m || counts[i] == k.div_ceil(m), "{:?} over {:?} in {} requests", counts, set, k);
        }
    }

    #[test]
    fn a_per_host_check_passes_exactly_for_healthy_listed_replicas_and_the_list_heads_the_round_robin(
        specs in proptest::collection::vec(spec(), 0..7),
        f in filter(),
        cursor in 0usize..10,
        local in proptest::option::of(Just("x")),
    ) {
        let mut settings = settings();
        settings.locality_dc = local.is_some();
        let snap = snapshot(&specs, settings, local);
        let mut after_list = cursor;
        let listed = list(&snap, &f, &mut after_list);
        let mut expected = candidates(&snap, &f, Health::Alive);
        expected.extend(candidates(&snap, &f, Health::PossiblyDead));
        let mut sorted: Vec<usize> = listed.iter().map(|i| i.get()).collect();
        sorted.sort_unstable();
        expected.sort_unstable();
        prop_assert_eq!(&sorted, &expected, "every qualifying replica, once");
        for i in HostIndex::all(snap.hosts.len()) {
            let passes = check(&snap, &f, i).is_ok();
            prop_assert_eq!(passes, listed.contains(&i) && snap.hosts[i].health == Health::Alive, "host {}", i);
        }
        let mut after_select = cursor;
        let choice = select(&snap, &f, Pick::RoundRobin, ReplicaFallback::None, &mut after_select);
        prop_assert_eq!(choice.host(), listed.first().copied(), "the list starts with /replica's answer");
        prop_assert_eq!(after_list, after_select, "both move the cursor alike");
        if let Some(m) = snap.master {
            prop_assert!(!listed.contains(&m), "the master is never listed");
        }
    }

    #[test]
    fn master_election_follows_health_then_host_order(specs in proptest::collection::vec(spec(), 0..7)) {
        let snap = snapshot(&specs, settings(), None);
        let hosts: Vec<Host<'_>> = specs.iter().map(|s| Host { health: s.health, last: s.obs.as_ref() }).collect();
        prop_assert_eq!(snap.master.map(HostIndex::get), election::master(&hosts, SplitBrainPolicy::HostOrder));
    }
}

#[test]
fn timeline_policy_prefers_the_newest_timeline_and_host_order_breaks_ties() {
    let mut old = master(500);
    old.timeline = Some(1);
    let mut new = master(100);
    new.timeline = Some(2);
    let mut settings = settings();
    settings.split_brain = SplitBrainPolicy::Timeline;
    let specs = [
        Spec { health: Health::Alive, obs: Some(old), dc: None },
        Spec { health: Health::Alive, obs: Some(new.clone()), dc: None },
        Spec { health: Health::Alive, obs: Some(new), dc: None },
    ];
    assert_eq!(snapshot(&specs, settings, None).master, Some(HostIndex::new(1)));
}

#[test]
fn trusting_timelines_min_lsn_counts_only_replicas_on_the_masters_timeline() {
    // h0 was promoted to timeline 2; h1 already follows it; h2 still shows timeline 1, past the promotion
    // point, and h3 shows no timeline at all (its WAL receiver is not running).
    let mut new_master = master(1000);
    new_master.timeline = Some(2);
    let on = |timeline: Option<u32>, lsn: u64| {
        let mut obs = replica(lsn, 0);
        obs.timeline = timeline;
        Spec { health: Health::Alive, obs: Some(obs), dc: None }
    };
    let specs = [
        Spec { health: Health::Alive, obs: Some(new_master), dc: None },
        on(Some(2), 900),
        on(Some(1), 1000),
        on(None, 1000),
    ];
    let answers = |policy: SplitBrainPolicy, target: &str| -> Vec<String> {
        let mut settings = settings();
        settings.split_brain = policy;
        let snap = snapshot(&specs, settings, None);
        let mut cursor = 0;
        let mut seen: Vec<String> = (0..6)
            .map(|_| {
                let response = pg_status_core::http::handle(&snap, &mut cursor, "GET", target, None);
                String::from_utf8_lossy(response.body.as_bytes()).into_owned()
            })
            .collect();
        seen.sort();
        seen.dedup();
        seen
    };
    // Trusting host order, positions are compared as they are, as upstream does.
    assert_eq!(answers(SplitBrainPolicy::HostOrder, "/replica?min_lsn=0/3E8"), ["h2", "h3"]);
    // Trusting timelines, neither compares with a write on timeline 2: the master, until they follow it.
    assert_eq!(answers(SplitBrainPolicy::Timeline, "/replica?min_lsn=0/3E8"), ["h0"]);
    assert_eq!(answers(SplitBrainPolicy::Timeline, "/replica?min_lsn=0/384"), ["h1"]);
    // Without min_lsn the timeline plays no part.
    assert_eq!(answers(SplitBrainPolicy::Timeline, "/replica"), ["h1", "h2", "h3"]);
}

#[test]
fn round_robin_cycles_in_host_order_from_the_last_answer() {
    let specs: Vec<Spec> = [master(10), replica(10, 0), replica(10, 0), replica(10, 0)]
        .into_iter()
        .map(|obs| Spec { health: Health::Alive, obs: Some(obs), dc: None })
        .collect();
    let snap = snapshot(&specs, settings(), None);
    let mut cursor = 0;
    let picks: Vec<Option<usize>> = (0..5)
        .map(|_| select(&snap, &Filter::default(), Pick::RoundRobin, ReplicaFallback::Master, &mut cursor).host())
        .map(|host| host.map(HostIndex::get))
        .collect();
    assert_eq!(picks, [Some(1), Some(2), Some(3), Some(1), Some(2)]);
}
