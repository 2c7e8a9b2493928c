//! Builders that the tests of pg-status share: observations, settings, configurations and hand-built
//! snapshots.

use std::sync::Arc;
use std::time::Duration;

use pg_status_core::config::{Config, ReplicaFallback, SplitBrainPolicy};
use pg_status_core::lsn::Lsn;
use pg_status_core::observation::{Observation, Receiver, Role};
use pg_status_core::snapshot::{Health, HostInput, HostName, HostSpec, Settings, Snapshot};

/// A master at WAL position `lsn`, on timeline 1, with a readable WAL receiver view.
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

/// A replica on timeline 1 that has received and replayed up to `replay`, its last replayed commit
/// `delay_ms` old.
pub fn replica(replay: u64, delay_ms: u64) -> Observation {
    let mut o = master(0);
    o.role = Role::Replica;
    o.current_lsn = None;
    o.receive_lsn = Some(Lsn(replay));
    o.replay_lsn = Some(Lsn(replay));
    o.replay_delay_ms = Some(delay_ms);
    o
}

/// Thresholds of 1000 ms and 1000 bytes, no locality, host order, `max_wait_ms` 1000, falling back to the
/// master.
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

/// A configuration for `n` hosts named h0, h1, ... with the given timings in milliseconds and the
/// thresholds of [`settings`].
///
/// # Panics
/// When the values make no valid configuration (a zero period or `max_fails`): a test's own mistake.
pub fn config(n: usize, sleep: u64, timeout: u64, max_age: u64, max_fails: u32) -> Config {
    let hosts: Vec<String> = (0..n).map(name).collect();
    let vars = [
        ("pg_status__hosts", hosts.join(",")),
        ("pg_status__sleep_ms", sleep.to_string()),
        ("pg_status__query_timeout_ms", timeout.to_string()),
        ("pg_status__conn_max_age_ms", max_age.to_string()),
        ("pg_status__max_fails", max_fails.to_string()),
        ("pg_status__sync_max_lag_ms", "1000".to_owned()),
        ("pg_status__sync_max_lag_bytes", "1000".to_owned()),
    ];
    Config::from_vars(vars.map(|(k, v)| (k.to_owned(), v))).unwrap_or_else(|e| panic!("a test configuration: {e}"))
}

/// `n` milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The name of host `i` in built configurations and snapshots: `h<i>`.
pub fn name(i: usize) -> String {
    format!("h{i}")
}

/// The port host `i` of a built snapshot is polled on: 5432 plus its index.
pub fn port(i: usize) -> u16 {
    5432 + u16::try_from(i).unwrap_or(0)
}

/// One host of a hand-built snapshot.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Its health.
    pub health: Health,
    /// Its last observation.
    pub obs: Option<Observation>,
    /// Its data centre.
    pub dc: Option<&'static str>,
}

impl Spec {
    /// A host with `health` and last observation `obs`, in no data centre.
    pub fn new(health: Health, obs: Option<Observation>) -> Spec {
        Spec { health, obs, dc: None }
    }

    /// An alive host that last answered `obs`.
    pub fn alive(obs: Observation) -> Spec {
        Spec::new(Health::Alive, Some(obs))
    }
}

/// A ready snapshot of `specs` (named by [`name`], polled on [`port`]) under `settings`, this instance in
/// data centre `current_dc`.
pub fn snapshot(specs: &[Spec], settings: Settings, current_dc: Option<&str>) -> Snapshot {
    let ids: Vec<Arc<HostName>> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let name = name(i);
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
