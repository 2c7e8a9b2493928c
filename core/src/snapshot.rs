//! The immutable view of all hosts that request handlers answer from, and how it is derived from the latest
//! observations and kept up to date; the master's election is `election`'s, a replica's lag
//! `lag`'s, and the JSON documents [`crate::render`]'s.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{ReplicaFallback, SplitBrainPolicy};
use crate::election::elect_master;
use crate::host_index::HostIndex;
use crate::lag::{replica_lag, Reference};
use crate::lsn::Lsn;
use crate::observation::{Observation, Role};
use crate::render::{push_json_str, push_opt_str};

/// A host's health as the failure counting sees it (DESIGN 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// Its first iteration has not ended yet.
    Unknown,
    /// Its last iteration succeeded.
    Alive,
    /// It failed at least once but fewer than `max_fails` times in a row.
    PossiblyDead,
    /// It failed `max_fails` times in a row.
    Dead,
}

/// The fixed facts about a host, shared by every snapshot.
#[derive(Debug, PartialEq, Eq)]
pub struct HostName {
    /// The host as written in `pg_status__hosts`.
    pub name: Arc<str>,
    /// The JSON answer naming it, `{"host": "<name>", "dc": .., "geo": .., "port": ..}`, built once so answers
    /// need not allocate.
    pub json: Arc<str>,
    /// The port pg-status polls it on, which is the one clients connect to.
    pub port: u16,
    /// Its data centre, when locality by DC is configured.
    pub dc: Option<Arc<str>>,
    /// Its region, when locality by geo is configured.
    pub geo: Option<Arc<str>>,
    /// Whether it is in this instance's data centre.
    pub local_dc: bool,
    /// Whether it is in this instance's region.
    pub local_geo: bool,
}

/// One host in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStatus {
    /// Who it is.
    pub id: Arc<HostName>,
    /// Failure-counting health.
    pub health: Health,
    /// Its last measured role; `None` when it is dead or was never seen alive.
    pub role: Option<Role>,
    /// Replication delay in milliseconds (0 on a master); `None` when there is no measurement.
    pub lag_ms: Option<u64>,
    /// Replication lag in bytes (0 on a master); `None` when there is no measurement.
    pub lag_bytes: Option<u64>,
    /// Its own latest WAL position: written on a master, replayed on a replica.
    pub lsn: Option<Lsn>,
    /// `lag_ms` is within `pg_status__sync_max_lag_ms`.
    pub sync_by_time: bool,
    /// `lag_bytes` is within `pg_status__sync_max_lag_bytes`.
    pub sync_by_bytes: bool,
    /// The timeline it reported, when known.
    pub timeline: Option<u32>,
}

impl HostStatus {
    /// True when the host has a usable measurement: seen alive, and not dead since.
    pub fn alive(&self) -> bool {
        self.role.is_some()
    }

    /// True when this host may be handed out as a replica (health preference aside).
    pub fn is_replica(&self) -> bool {
        self.role == Some(Role::Replica)
    }
}

/// Thresholds and locality that answers need besides the hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// `pg_status__sync_max_lag_ms`.
    pub sync_max_lag_ms: u64,
    /// `pg_status__sync_max_lag_bytes`.
    pub sync_max_lag_bytes: u64,
    /// Locality by DC is in use.
    pub locality_dc: bool,
    /// Locality by geo is in use.
    pub locality_geo: bool,
    /// Who wins a split brain.
    pub split_brain: SplitBrainPolicy,
    /// The largest `wait_ms` a request may ask for, in milliseconds.
    pub max_wait_ms: u64,
    /// What replica routes answer when no replica qualifies, unless a request says otherwise.
    pub replica_fallback: ReplicaFallback,
}

/// Everything a request handler needs, consistent across hosts, never mutated once published.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Every host has finished its first iteration.
    pub ready: bool,
    /// The hosts in `pg_status__hosts` order.
    pub hosts: Vec<HostStatus>,
    /// Index of the elected master (DESIGN 4).
    pub master: Option<HostIndex>,
    /// Thresholds and locality.
    pub settings: Settings,
    /// The elected master's WAL position that the replicas' lag was measured against.
    master_lsn: Option<Lsn>,
    /// The elected master's newest WAL sample, whose arrival re-derives every replica.
    master_sample: Option<(Instant, Lsn)>,
}

impl PartialEq for Snapshot {
    fn eq(&self, other: &Snapshot) -> bool {
        self.ready == other.ready
            && self.hosts == other.hosts
            && self.master == other.master
            && self.settings == other.settings
    }
}

/// When a host's observation was taken and, for a master, where its WAL stood at its recent polls (test
/// support, with [`HostInput`]).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default)]
pub struct HostTimes<'a> {
    /// When the last observation arrived.
    pub observed_at: Option<Instant>,
    /// `(when, pg_current_wal_lsn)` of the host's recent polls as master, oldest first.
    pub wal_history: &'a [(Instant, Lsn)],
}

/// What the derivation needs to know about one host. Test support: the monitor derives its snapshots itself.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct HostInput<'a> {
    /// Who it is.
    pub id: &'a Arc<HostName>,
    /// Its health.
    pub health: Health,
    /// Its last observation, kept while possibly dead and dropped once dead.
    pub last: Option<&'a Observation>,
}

impl Snapshot {
    /// Derives a snapshot from each host's health and last observation (test support, like the two below).
    #[doc(hidden)]
    pub fn derive(ready: bool, hosts: &[HostInput<'_>], settings: Settings) -> Snapshot {
        Snapshot::derive_timed(ready, hosts, &[], settings)
    }

    /// Derives a snapshot using also when each observation was taken (`times`, by host index; missing entries
    /// mean unknown), which bounds a replica's time lag by the master's WAL history.
    #[doc(hidden)]
    pub fn derive_timed(ready: bool, hosts: &[HostInput<'_>], times: &[HostTimes<'_>], settings: Settings) -> Snapshot {
        let master = elect_master(hosts, settings.split_brain);
        let reference = Reference::of(master, hosts, times);
        let hosts = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| host_status(h, times.get(i).copied().unwrap_or_default(), &reference, &settings))
            .collect();
        Snapshot {
            ready,
            hosts,
            master,
            settings,
            master_lsn: reference.lsn,
            master_sample: reference.history.last().copied(),
        }
    }

    /// Brings the snapshot up to date after host `changed` got a new health or observation. Only that host is
    /// re-derived unless the election or the master's WAL position moved, which changes every replica's lag.
    /// Returns true when every host was re-derived.
    #[doc(hidden)]
    pub fn update(
        &mut self,
        ready: bool,
        hosts: &[HostInput<'_>],
        times: &[HostTimes<'_>],
        changed: HostIndex,
    ) -> bool {
        let master = elect_master(hosts, self.settings.split_brain);
        let reference = Reference::of(master, hosts, times);
        self.ready = ready;
        if master != self.master
            || reference.lsn != self.master_lsn
            || reference.history.last() != self.master_sample.as_ref()
            || hosts.len() != self.hosts.len()
        {
            *self = Snapshot::derive_timed(ready, hosts, times, self.settings);
            return true;
        }
        if let (Some(slot), Some(input)) = (self.hosts.get_mut(changed.get()), hosts.get(changed.get())) {
            *slot =
                host_status(input, times.get(changed.get()).copied().unwrap_or_default(), &reference, &self.settings);
        }
        false
    }

    /// The host at `index`, if there is one.
    pub fn host(&self, index: HostIndex) -> Option<&HostStatus> {
        self.hosts.get(index.get())
    }

    /// The elected master's status, if a master is elected.
    pub fn master_status(&self) -> Option<&HostStatus> {
        self.master.and_then(|m| self.host(m))
    }

    /// Alive hosts that report themselves master, in host order (more than one is a split brain).
    pub fn claimed_masters(&self) -> impl Iterator<Item = HostIndex> + '_ {
        self.hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| h.health == Health::Alive && h.role == Some(Role::Master))
            .map(|(i, _)| HostIndex::new(i))
    }

    /// Under `pg_status__split_brain=refuse`, the hosts whose claims leave no master, in host order; empty
    /// otherwise, and while at most one healthy host claims master.
    pub fn refused_claimants(&self) -> Vec<HostIndex> {
        if self.settings.split_brain != SplitBrainPolicy::Refuse || self.master.is_some() {
            return Vec::new();
        }
        let claimants: Vec<HostIndex> = self.claimed_masters().collect();
        if claimants.len() > 1 {
            claimants
        } else {
            Vec::new()
        }
    }
}

fn host_status(h: &HostInput<'_>, times: HostTimes<'_>, reference: &Reference<'_>, settings: &Settings) -> HostStatus {
    let usable = h.last.filter(|_| matches!(h.health, Health::Alive | Health::PossiblyDead));
    let Some(obs) = usable else {
        return HostStatus {
            id: h.id.clone(),
            health: h.health,
            role: None,
            lag_ms: None,
            lag_bytes: None,
            lsn: None,
            sync_by_time: false,
            sync_by_bytes: false,
            timeline: None,
        };
    };
    let (lag_ms, lag_bytes) = match obs.role {
        Role::Master => (0, 0),
        Role::Replica => replica_lag(obs, times.observed_at, reference),
    };
    HostStatus {
        id: h.id.clone(),
        health: h.health,
        role: Some(obs.role),
        lag_ms: Some(lag_ms),
        lag_bytes: Some(lag_bytes),
        lsn: obs.lsn(),
        sync_by_time: lag_ms <= settings.sync_max_lag_ms,
        sync_by_bytes: lag_bytes <= settings.sync_max_lag_bytes,
        timeline: obs.timeline,
    }
}

/// What a host's fixed facts ([`HostName`]) are made of: the host as configured, and where this instance
/// runs. Unset fields default to nothing (no locality).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostSpec<'a> {
    /// The host as written in `pg_status__hosts`.
    pub name: &'a str,
    /// The port it is polled on.
    pub port: u16,
    /// Its data centre (`pg_status__hosts_dc`).
    pub dc: Option<&'a str>,
    /// Its region (`pg_status__hosts_geo`).
    pub geo: Option<&'a str>,
    /// This instance's own data centre (`pg_status__current_dc`).
    pub current_dc: Option<&'a str>,
    /// This instance's own region (`pg_status__current_geo`).
    pub current_geo: Option<&'a str>,
}

impl HostName {
    /// Builds a host's fixed facts, its JSON answer included.
    pub fn new(spec: HostSpec<'_>) -> HostName {
        let HostSpec { name, port, dc, geo, current_dc, current_geo } = spec;
        let mut json = String::with_capacity(name.len() + 32);
        json.push_str("{\"host\": ");
        push_json_str(&mut json, name);
        json.push_str(", \"dc\": ");
        push_opt_str(&mut json, dc);
        json.push_str(", \"geo\": ");
        push_opt_str(&mut json, geo);
        // Writing to a String cannot fail.
        let _ = write!(json, ", \"port\": {port}}}");
        HostName {
            name: name.into(),
            json: json.into(),
            port,
            dc: dc.map(Into::into),
            geo: geo.map(Into::into),
            local_dc: current_dc.is_some() && dc == current_dc,
            local_geo: current_geo.is_some() && geo == current_geo,
        }
    }
}
