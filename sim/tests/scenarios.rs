//! Every named scenario over many seeds, the swarm over many more, and determinism.
//!
//! `SIM_SEEDS` sets how many seeds each named scenario runs (default 10; the swarm runs four times as many).
//! A failure names the seed and prints the command that replays it.

use pg_status_sim::run::run;

fn seeds() -> u64 {
    std::env::var("SIM_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10)
}

/// Runs `scenario` for `count` seeds and fails with every broken run's violations and replay command.
fn check(scenario: &str, count: u64) {
    check_seeds(scenario, 0..count);
}

fn check_seeds(scenario: &str, seeds: std::ops::Range<u64>) {
    let count = seeds.end - seeds.start;
    let mut failures = Vec::new();
    for seed in seeds {
        let report = run(seed, scenario, false).expect("the scenario exists");
        if !report.passed() {
            let violations: Vec<String> = report
                .violations
                .iter()
                .map(|v| format!("  at {} ms: {}: {}", v.at_ms, v.invariant, v.detail))
                .collect();
            failures.push(format!("seed {seed}:\n{}\n  replay: {}", violations.join("\n"), report.replay_command()));
        }
    }
    assert!(
        failures.is_empty(),
        "{scenario}: {} of {count} seeds broke invariants\n{}",
        failures.len(),
        failures.join("\n")
    );
}

macro_rules! scenario_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check(stringify!($name), seeds());
            }
        )*
    };
}

scenario_tests!(
    failover,
    switchover,
    split_brain,
    hung_host,
    hung_master,
    slow_master,
    flapping_host,
    all_down,
    replica_stalled,
    replica_lagging,
    idle_master,
    wrong_password,
    latency,
    read_your_writes,
    impostor,
    receiver_view_revoked,
    master_shutdown,
    master_hang,
    replica_crash,
    no_promotion,
);

#[test]
fn every_named_scenario_has_a_test() {
    let here = include_str!("scenarios.rs");
    for name in pg_status_sim::scenario::NAMED {
        assert!(here.contains(&format!("    {name},\n")), "scenario {name} is not run by the tests");
    }
}

/// The swarm's seeds in four parts, so the test threads share them.
fn swarm_part(part: u64) {
    let n = seeds();
    check_seeds("swarm", part * n..(part + 1) * n);
}

#[test]
fn swarm_1() {
    swarm_part(0);
}

#[test]
fn swarm_2() {
    swarm_part(1);
}

#[test]
fn swarm_3() {
    swarm_part(2);
}

#[test]
fn swarm_4() {
    swarm_part(3);
}

#[test]
fn the_same_seed_replays_byte_for_byte() {
    for (scenario, seed) in [("failover", 3), ("swarm", 11)] {
        let a = run(seed, scenario, true).expect("the scenario exists").trace.join("\n");
        let b = run(seed, scenario, true).expect("the scenario exists").trace.join("\n");
        assert!(a.lines().count() > 20, "the trace shows the run:\n{a}");
        assert!(a == b, "{scenario} seed {seed} gave two different traces");
    }
}

#[test]
fn different_seeds_give_different_runs() {
    let a = run(1, "swarm", true).expect("the scenario exists").trace.join("\n");
    let b = run(2, "swarm", true).expect("the scenario exists").trace.join("\n");
    assert_ne!(a, b);
}

#[test]
fn failover_is_detected_and_timed() {
    let report = run(5, "failover", false).expect("the scenario exists");
    assert!(report.passed(), "{:?}", report.violations);
    assert!(!report.failover_latencies.is_empty(), "the promotion must be seen:\n{}", report.trace.join("\n"));
}

#[test]
fn the_oracle_notices_a_runtime_whose_timers_fire_late() {
    use pg_status_sim::run::{run_with, Options};
    let report =
        run_with(5, "failover", Options { late_timers_ms: 400, ..Options::default() }).expect("the scenario exists");
    let broken: Vec<&str> = report.violations.iter().map(|v| v.invariant).collect();
    assert!(
        broken.iter().any(|v| v.starts_with("failover") || v.starts_with("a hung or slow host")),
        "late timers must break the failover bound or the refresh of hosts: {broken:?}"
    );
}

/// Regression: with `PGSSLMODE=allow`, an iteration refused for a wrong password (28P01) used to open a
/// second connection to retry with TLS, so a host with a wrong password got two connections per failed
/// iteration and the invariant "connections per host <= 1 + elapsed / conn_max_age + failures" broke; the
/// failure was also reported as `connect` instead of `auth`. Only a `pg_hba.conf` refusal (28000) is retried
/// with TLS now. Replay: `cargo run -p pg-status-sim -- --seed 5 --scenario wrong_password --trace
/// --sslmode allow`.
#[test]
fn regression_allow_mode_retry_doubles_connections_on_a_wrong_password() {
    use pg_status_sim::run::{run_with, Options};
    let report =
        run_with(5, "wrong_password", Options { ssl_mode: Some("allow"), ..Options::default() }).expect("exists");
    assert!(report.passed(), "{:#?}\nreplay: {}", report.violations, report.replay_command());
}

#[test]
fn prefer_and_allow_log_in_as_disable_does_when_the_server_declines_tls() {
    use pg_status_sim::run::{run_with, Options};
    for mode in ["prefer", "allow"] {
        let report = run_with(3, "failover", Options { ssl_mode: Some(mode), ..Options::default() }).expect("exists");
        assert!(report.passed(), "{mode}: {:#?}\nreplay: {}", report.violations, report.replay_command());
    }
}

#[test]
fn an_unknown_scenario_is_an_error() {
    assert!(run(0, "no_such_scenario", false).is_err());
}

#[test]
fn waiting_for_a_replica_raises_the_share_of_replica_answers() {
    // Polling every 300-1000 ms while the master writes all the time: without waiting, the last poll of a replica
    // almost never shows a write made just now; with wait_ms=50 the refresh round does, except while the faults
    // of the scenario leave no replica that could (a paused or outrun replica, a failover).
    let mut total = pg_status_sim::reader::ReadShares::default();
    let mut runs = Vec::new();
    for seed in 0..seeds() {
        let report = run(seed, "read_your_writes", false).expect("the scenario exists");
        assert!(report.passed(), "seed {seed}: {:?}\n  replay: {}", report.violations, report.replay_command());
        let shares = report.reads.expect("the scenario reads");
        assert!(shares.requests > 100, "seed {seed}: only {} requests", shares.requests);
        runs.push(format!("seed {seed}: {:.1}% vs {:.1}% at once", shares.replica_percent(), shares.at_once_percent()));
        total.add(&shares);
    }
    assert!(total.at_once_percent() < 5.0, "without waiting: {:.1}%; {runs:?}", total.at_once_percent());
    assert!(total.replica_percent() > 70.0, "with wait_ms=50: {:.1}%; {runs:?}", total.replica_percent());
}

#[test]
fn the_oracle_notices_requests_held_past_their_wait_ms() {
    use pg_status_sim::run::{run_with, Options};
    let report = run_with(1, "read_your_writes", Options { late_timers_ms: 100, ..Options::default() })
        .expect("the scenario exists");
    let broken: Vec<&str> = report.violations.iter().map(|v| v.invariant).collect();
    assert!(broken.contains(&"a request is never held longer than its wait_ms"), "{broken:?}");
}

#[test]
fn after_a_split_brain_heals_the_policy_decides_who_stays_master() {
    use pg_status_core::config::SplitBrainPolicy as SplitBrain;
    use pg_status_sim::run::{run_with, Options};
    // In `split_brain` db1, the master, is cut off from the sidecar, a replica is promoted onto a new timeline,
    // and the link heals while db1 still claims master: two masters until the calm phase demotes db1.
    for policy in [SplitBrain::HostOrder, SplitBrain::Timeline, SplitBrain::Refuse] {
        for seed in 0..seeds() {
            let report = run_with(seed, "split_brain", Options { split_brain: Some(policy), ..Options::default() })
                .expect("the scenario exists");
            assert!(
                report.passed(),
                "{policy:?} seed {seed}: {:?}\n  replay: {}",
                report.violations,
                report.replay_command()
            );
            let healed =
                report.trace.iter().position(|l| l.contains("sidecar <-> db1 repaired")).expect("the link heals");
            let calm = report.trace.iter().position(|l| l.contains("calm phase")).expect("a calm phase");
            let masters: Vec<&str> = report.trace[healed..calm]
                .iter()
                .filter_map(|l| l.split("/master -> ").nth(1))
                .filter_map(|rest| rest.split(';').next())
                .collect();
            let trace = || report.trace.join("\n");
            assert!(!masters.is_empty(), "{policy:?} seed {seed}: answers after the link heals\n{}", trace());
            match policy {
                // Upstream's rule: the stale old master is first in host order and wins again.
                SplitBrain::HostOrder => assert!(masters.contains(&"db1"), "seed {seed}: {masters:?}\n{}", trace()),
                // Evidence: the promoted host is on the newer timeline and stays master.
                SplitBrain::Timeline => assert!(!masters.contains(&"db1"), "seed {seed}: {masters:?}\n{}", trace()),
                // Failing closed: no master while both claim it (the oracle checks every answer of the run), and
                // the stale old master is never named again.
                SplitBrain::Refuse => assert!(!masters.contains(&"db1"), "seed {seed}: {masters:?}\n{}", trace()),
            }
            assert!(
                report.trace[healed..calm].iter().any(|l| l.contains("split brain: db1, ")),
                "{policy:?} seed {seed}: the split brain is announced\n{}",
                trace()
            );
        }
    }
}

#[test]
fn a_revoked_receiver_view_is_warned_about_once_and_costs_no_host() {
    use pg_status_core::monitor::Warning;
    // In `receiver_view_revoked` SELECT on pg_stat_wal_receiver is revoked on every node, a failover
    // happens, and the grant comes back; the oracle holds every host to its usual invariants meanwhile.
    for seed in 0..seeds() {
        let report = run(seed, "receiver_view_revoked", false).expect("the scenario exists");
        assert!(report.passed(), "seed {seed}: {:?}\n  replay: {}", report.violations, report.replay_command());
        let warned = report.trace.iter().filter(|l| l.ends_with(Warning::ReceiverRefused.as_str())).count();
        assert_eq!(warned, 1, "seed {seed}: the warning once\n{}", report.trace.join("\n"));
        let failed = report.trace.iter().filter(|l| l.contains("permission denied")).count();
        assert_eq!(failed, 1, "seed {seed}: only the warning mentions the refusal\n{}", report.trace.join("\n"));
    }
}
