//! Builders shared by the core's integration and property tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use pg_status_core::config::{Config, ReplicaFallback, SplitBrainPolicy};
use pg_status_core::lsn::Lsn;
use pg_status_core::observation::{Observation, Receiver, Role};
use pg_status_core::snapshot::{Health, HostInput, HostName, HostSpec, Settings, Snapshot};

/// A configuration for `n` hosts named h0, h1, ... with the given timings in milliseconds.
pub fn config(n: usize, sleep: u64, timeout: u64, max_age: u64, max_fails: u32) -> Config {
    let hosts: Vec<String> = (0..n).map(|i| format!("h{i}")).collect();
    Config::from_vars([
        ("pg_status__hosts".to_string(), hosts.join(",")),
        ("pg_status__sleep_ms".to_string(), sleep.to_string()),
        ("pg_status__query_timeout_ms".to_string(), timeout.to_string()),
        ("pg_status__conn_max_age_ms".to_string(), max_age.to_string()),
        ("pg_status__max_fails".to_string(), max_fails.to_string()),
        ("pg_status__sync_max_lag_ms".to_string(), "1000".to_string()),
        ("pg_status__sync_max_lag_bytes".to_string(), "1000".to_string()),
    ])
    .expect("the test configuration is valid")
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn master(lsn: u64) -> Observation {
    Observation {
        role: Role::Master,
        current_lsn: Some(Lsn(lsn)),
        receive_lsn: None,
        replay_lsn: None,
        replay_delay_ms: None,
        timeline: Some(1),
        latest_end_lsn: None,
        receiver: Receiver::Readable,
    }
}

pub fn replica(replay: u64, delay_ms: u64) -> Observation {
    Observation {
        role: Role::Replica,
        current_lsn: None,
        receive_lsn: Some(Lsn(replay)),
        replay_lsn: Some(Lsn(replay)),
        replay_delay_ms: Some(delay_ms),
        timeline: Some(1),
        latest_end_lsn: None,
        receiver: Receiver::Readable,
    }
}

pub fn settings() -> Settings {
    Settings {
        sync_max_lag_ms: 1000,
        sync_max_lag_bytes: 1000,
        locality_dc: false,
        locality_geo: false,
        split_brain: SplitBrainPolicy::HostOrder,
        max_wait_ms: 1000,
        replica_fallback: ReplicaFallback::Master,
    }
}

/// One host of a hand-built snapshot.
#[derive(Debug, Clone)]
pub struct Spec {
    pub health: Health,
    pub obs: Option<Observation>,
    pub dc: Option<&'static str>,
}

pub fn snapshot(specs: &[Spec], settings: Settings, current_dc: Option<&str>) -> Snapshot {
    let ids: Vec<Arc<HostName>> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let name = format!("h{i}");
            Arc::new(HostName::new(HostSpec {
                name: &name,
                port: port(i),
                dc: s.dc,
                current_dc,
                ..HostSpec::default()
            }))
        })
        .collect();
    let inputs: Vec<HostInput<'_>> =
        specs.iter().zip(&ids).map(|(s, id)| HostInput { id, health: s.health, last: s.obs.as_ref() }).collect();
    Snapshot::derive(true, &inputs, settings)
}

/// The port host `i` of a hand-built snapshot is polled on: 5432 plus its index.
pub fn port(i: usize) -> u16 {
    5432 + u16::try_from(i).unwrap_or(0)
}

pub fn start() -> Instant {
    Instant::now()
}
