//! `pg-status-sim`: runs one simulation (or many) and prints its timeline.
//!
//! `cargo run -p pg-status-sim -- --seed N [--scenario NAME] [--trace] [--seeds COUNT]`
//!
//! Without `--scenario` the swarm runs. `--scenario all` runs every named scenario and the swarm. With
//! `--seeds COUNT`, seeds N..N+COUNT run and only a summary is printed (failures with their replay command,
//! and the failover detection latencies). A run that breaks an invariant prints the command that replays it
//! and the program exits with status 1. `--late-timers-ms` runs the driver on a deliberately broken runtime
//! whose timers fire late, to see what a failure looks like.

use std::process::ExitCode;

use pg_status_core::config::SplitBrainPolicy;
use pg_status_sim::reader::ReadShares;
use pg_status_sim::run::{run_with, Options, Report};
use pg_status_sim::scenario::NAMED;

struct Args {
    seed: u64,
    scenario: String,
    trace: bool,
    seeds: Option<u64>,
    late_timers_ms: u64,
    ssl_mode: Option<&'static str>,
    split_brain: Option<SplitBrainPolicy>,
}

const USAGE: &str = "usage: pg-status-sim --seed N [--scenario NAME|all|swarm] [--trace] [--seeds COUNT] \
                     [--sslmode disable|prefer|allow] [--split-brain host_order|timeline|refuse] [--late-timers-ms MS (a deliberately broken runtime, to see a failure)]";

fn parse() -> Result<Args, String> {
    let mut args = Args {
        seed: 0,
        scenario: "swarm".to_owned(),
        trace: false,
        seeds: None,
        late_timers_ms: 0,
        ssl_mode: None,
        split_brain: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--seed" => args.seed = value("--seed")?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--scenario" => args.scenario = value("--scenario")?,
            "--trace" => args.trace = true,
            "--late-timers-ms" => {
                args.late_timers_ms =
                    value("--late-timers-ms")?.parse().map_err(|e| format!("--late-timers-ms: {e}"))?
            }
            "--sslmode" => {
                let mode = value("--sslmode")?;
                args.ssl_mode = Some(match mode.as_str() {
                    "disable" => "disable",
                    "prefer" => "prefer",
                    "allow" => "allow",
                    other => return Err(format!("--sslmode: {other:?} is not disable, prefer or allow")),
                });
            }
            "--split-brain" => {
                let policy = value("--split-brain")?;
                let found = SplitBrainPolicy::ALL.into_iter().find(|p| p.as_str() == policy);
                args.split_brain = Some(
                    found.ok_or_else(|| format!("--split-brain: {policy:?} is not host_order, timeline or refuse"))?,
                );
            }
            "--seeds" => args.seeds = Some(value("--seeds")?.parse().map_err(|e| format!("--seeds: {e}"))?),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    // Nearest-rank percentile; the index is within bounds because p <= 1.
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let scenarios: Vec<String> = if args.scenario == "all" {
        NAMED.iter().map(|s| s.to_string()).chain(["swarm".to_owned()]).collect()
    } else {
        vec![args.scenario.clone()]
    };
    let mut failed = false;
    for scenario in &scenarios {
        let Some(count) = args.seeds else {
            match run_with(
                args.seed,
                scenario,
                Options {
                    verbose: args.trace,
                    late_timers_ms: args.late_timers_ms,
                    ssl_mode: args.ssl_mode,
                    split_brain: args.split_brain,
                },
            ) {
                Ok(report) => {
                    for line in &report.trace {
                        println!("{line}");
                    }
                    failed |= !finish(&report);
                }
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            }
            continue;
        };
        let mut latencies = Vec::new();
        let mut ratios = Vec::new();
        let mut failures = 0;
        let mut reads: Option<ReadShares> = None;
        for seed in args.seed..args.seed.saturating_add(count) {
            match run_with(
                seed,
                scenario,
                Options {
                    verbose: false,
                    late_timers_ms: args.late_timers_ms,
                    ssl_mode: args.ssl_mode,
                    split_brain: args.split_brain,
                },
            ) {
                Ok(report) => {
                    latencies.extend(report.failover_latencies.iter().copied());
                    ratios.extend(report.failover_latencies.iter().map(|&l| l * 100 / report.failover_bound_ms));
                    if let Some(shares) = &report.reads {
                        reads.get_or_insert_with(ReadShares::default).add(shares);
                    }
                    if !report.passed() {
                        failures += 1;
                        finish(&report);
                    }
                }
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            }
        }
        latencies.sort_unstable();
        ratios.sort_unstable();
        println!(
            "{scenario:<16} seeds {}..{}: {failures} failed; failover detection over {} failovers: p50 {} ms, p99 {} ms, \
             max {} ms; as % of sleep_ms+query_timeout_ms: p50 {}%, p99 {}%, max {}%",
            args.seed,
            args.seed.saturating_add(count),
            latencies.len(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or(0),
            percentile(&ratios, 0.5),
            percentile(&ratios, 0.99),
            ratios.last().copied().unwrap_or(0),
        );
        if let Some(reads) = reads {
            println!(
                "{scenario:<16} read-your-writes over {} requests: {:.1}% answered by a replica ({:.1}% without \
                 waiting), longest wait {} ms",
                reads.requests,
                reads.replica_percent(),
                reads.at_once_percent(),
                reads.longest_ms
            );
        }
        failed |= failures > 0;
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Prints a failed run's violations and replay command; true when it passed.
fn finish(report: &Report) -> bool {
    if report.passed() {
        return true;
    }
    eprintln!("seed {} scenario {}: {} invariant violation(s)", report.seed, report.scenario, report.violations.len());
    for v in &report.violations {
        eprintln!("  at {} ms: {}: {}", v.at_ms, v.invariant, v.detail);
    }
    eprintln!("replay: {}", report.replay_command());
    false
}
