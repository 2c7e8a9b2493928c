//! Decision 5: which replicas a route may hand out, in what order of preference.

use pg_status_core::config::SplitBrainPolicy;
use pg_status_core::lsn::Lsn;
use pg_status_core::observation::Role;
use pg_status_core::select::Filter;
use pg_status_core::snapshot::{Health, Settings};

use crate::election::{self, Host};
use crate::view::View;

/// The routes that hand out one replica (round robin, or the most synchronous for the last), each taking the
/// lag and `min_lsn` parameters.
pub const REPLICA_ROUTES: [&str; 6] = [
    "/replica",
    "/sync_by_time",
    "/sync_by_bytes",
    "/sync_by_time_or_bytes",
    "/sync_by_time_and_bytes",
    "/most_sync_by_bytes",
];

/// The filter of a selection route (`/replica`, `/replicas`, `/sync_by_*`, `/most_sync_by_bytes`) for the
/// request's `lag_ms`, `lag_bytes` and `min_lsn`. `/replica` and `/replicas` apply only the thresholds given;
/// the `/sync_by_*` routes and `/most_sync_by_bytes` fill a missing one from the global settings, the time
/// route using only time, the bytes route only bytes, `_or_` either. Under `timeline`, a `min_lsn` counts
/// only on the elected master's timeline.
pub fn filter(
    path: &str,
    lag_ms: Option<u64>,
    lag_bytes: Option<u64>,
    min_lsn: Option<Lsn>,
    hosts: &[Host<'_>],
    settings: &Settings,
) -> Filter {
    let time = Some(lag_ms.unwrap_or(settings.sync_max_lag_ms));
    let bytes = Some(lag_bytes.unwrap_or(settings.sync_max_lag_bytes));
    let (max_lag_ms, max_lag_bytes) = match path {
        "/replica" | "/replicas" => (lag_ms, lag_bytes),
        "/sync_by_time" => (time, None),
        "/sync_by_bytes" => (None, bytes),
        _ => (time, bytes),
    };
    let timeline = match min_lsn {
        Some(_) if settings.split_brain == SplitBrainPolicy::Timeline => {
            let master = election::master(hosts, settings.split_brain);
            master.and_then(|m| hosts[m].usable()).and_then(|o| o.timeline)
        }
        _ => None,
    };
    Filter { max_lag_ms, max_lag_bytes, either: path == "/sync_by_time_or_bytes", min_lsn, timeline }
}

/// Whether a host shown as `view` passes `filter`: a measured replica within the thresholds (both, or
/// either for `_or_`), replayed up to `min_lsn`, on the filter's timeline if it names one.
pub fn admits(filter: &Filter, view: &View) -> bool {
    let (Some(Role::Replica), Some(ms), Some(bytes)) = (view.role, view.lag_ms, view.lag_bytes) else {
        return false;
    };
    let mut verdicts = Vec::new();
    if let Some(max) = filter.max_lag_ms {
        verdicts.push(ms <= max);
    }
    if let Some(max) = filter.max_lag_bytes {
        verdicts.push(bytes <= max);
    }
    let lag = if filter.either && verdicts.len() == 2 { verdicts.contains(&true) } else { !verdicts.contains(&false) };
    let replayed = match filter.min_lsn {
        Some(min) => view.lsn.is_some_and(|lsn| lsn.0 >= min.0),
        None => true,
    };
    let history = match filter.timeline {
        Some(t) => view.timeline == Some(t),
        None => true,
    };
    lag && replayed && history
}

/// The replicas a round-robin or most-synchronous answer may come from: those that pass `filter` among the
/// alive hosts, or among the possibly dead ones when no alive host passes; dead and unseen hosts never.
pub fn preferred(views: &[View], filter: &Filter) -> Vec<usize> {
    for health in [Health::Alive, Health::PossiblyDead] {
        let tier: Vec<usize> =
            (0..views.len()).filter(|&i| views[i].health == health && admits(filter, &views[i])).collect();
        if !tier.is_empty() {
            return tier;
        }
    }
    Vec::new()
}

/// `/most_sync_by_bytes`: the one of `tier` with the smallest `lag_bytes`, the first in host order on ties.
pub fn most_sync(views: &[View], tier: &[usize]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for &i in tier {
        if best.is_none_or(|b| views[i].lag_bytes < views[b].lag_bytes) {
            best = Some(i);
        }
    }
    best
}

/// How close a host is for locality (lower is closer): 0 in this instance's data centre, 1 in its region,
/// 2 elsewhere; each counts only when that locality is configured.
pub fn closeness(settings: &Settings, local_dc: bool, local_geo: bool) -> u8 {
    if settings.locality_dc && local_dc {
        0
    } else if settings.locality_geo && local_geo {
        1
    } else {
        2
    }
}

/// The closest hosts of `tier` by `rank` (see [`closeness`]): round robin runs among them only.
pub fn closest(tier: &[usize], rank: impl Fn(usize) -> u8) -> Vec<usize> {
    let Some(best) = tier.iter().map(|&i| rank(i)).min() else { return Vec::new() };
    tier.iter().copied().filter(|&i| rank(i) == best).collect()
}

/// Where round robin starts looking, among `n` hosts, for a cursor (one plus the host last handed out).
pub fn start(cursor: usize, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        cursor % (n + 1) % n
    }
}

/// Round robin: the first host of `group` at or after [`start`], in host order, cyclically.
pub fn next(group: &[usize], cursor: usize, n: usize) -> Option<usize> {
    let from = start(cursor, n);
    (from..n).chain(0..from).find(|i| group.contains(i))
}

/// `/replicas`: every host that passes `filter` (alive or possibly dead), alive ones first, then by `rank`,
/// each group in host order from the round-robin start on.
pub fn list(views: &[View], filter: &Filter, rank: impl Fn(usize) -> u8, cursor: usize) -> Vec<usize> {
    let n = views.len();
    let from = start(cursor, n);
    let mut all: Vec<usize> = (0..n)
        .filter(|&i| matches!(views[i].health, Health::Alive | Health::PossiblyDead) && admits(filter, &views[i]))
        .collect();
    all.sort_by_key(|&i| (views[i].health != Health::Alive, rank(i), (i + n - from) % n));
    all
}

/// `host=` on a selection route: the host passes when it is alive (not possibly dead) and passes `filter`.
pub fn passes_check(view: &View, filter: &Filter) -> bool {
    view.health == Health::Alive && admits(filter, view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::settings;

    fn replica(health: Health, lag_ms: u64, lag_bytes: u64, lsn: u64) -> View {
        View {
            health,
            role: Some(Role::Replica),
            lag_ms: Some(lag_ms),
            sync_by_time: false,
            lag_bytes: Some(lag_bytes),
            sync_by_bytes: false,
            lsn: Some(Lsn(lsn)),
            timeline: Some(1),
        }
    }

    #[test]
    fn each_route_applies_its_thresholds_and_the_global_defaults() {
        let s = settings();
        let f = |path, ms, bytes| {
            let f = filter(path, ms, bytes, None, &[], &s);
            (f.max_lag_ms, f.max_lag_bytes, f.either)
        };
        assert_eq!(f("/replica", None, Some(5)), (None, Some(5), false), "only what is given");
        assert_eq!(f("/sync_by_time", None, Some(5)), (Some(1000), None, false), "time only, global default");
        assert_eq!(f("/sync_by_bytes", Some(7), None), (None, Some(1000), false));
        assert_eq!(f("/sync_by_time_or_bytes", Some(7), None), (Some(7), Some(1000), true));
        assert_eq!(f("/sync_by_time_and_bytes", None, None), (Some(1000), Some(1000), false));
        assert_eq!(f("/most_sync_by_bytes", None, Some(3)), (Some(1000), Some(3), false));
    }

    #[test]
    fn filters_lag_min_lsn_and_timeline() {
        let v = replica(Health::Alive, 500, 2000, 100);
        let both = Filter { max_lag_ms: Some(1000), max_lag_bytes: Some(1000), ..Filter::default() };
        assert!(!admits(&both, &v));
        assert!(admits(&Filter { either: true, ..both }, &v));
        assert!(admits(&Filter::default(), &v), "no constraint");
        assert!(!admits(&Filter { min_lsn: Some(Lsn(101)), ..Filter::default() }, &v));
        assert!(admits(&Filter { min_lsn: Some(Lsn(100)), ..Filter::default() }, &v));
        assert!(!admits(&Filter { timeline: Some(2), ..Filter::default() }, &v));
        let master = View { role: Some(Role::Master), ..v };
        assert!(!admits(&Filter::default(), &master), "never the master");
    }

    #[test]
    fn healthy_first_most_synchronous_closest_and_round_robin_from_the_cursor() {
        let views = [
            replica(Health::PossiblyDead, 0, 0, 1),
            replica(Health::Alive, 0, 30, 1),
            replica(Health::Alive, 0, 20, 1),
            replica(Health::Alive, 0, 20, 1),
            replica(Health::Dead, 0, 0, 1),
        ];
        let any = Filter::default();
        assert_eq!(preferred(&views, &any), [1, 2, 3]);
        assert_eq!(preferred(&views[..1], &any), [0], "possibly dead when nothing alive passes");
        assert_eq!(most_sync(&views, &[1, 2, 3]), Some(2), "smallest lag, host order on ties");
        assert_eq!(closest(&[1, 2, 3], |i| if i == 1 { 2 } else { 1 }), [2, 3]);
        assert_eq!(next(&[1, 3], 0, 5), Some(1));
        assert_eq!(next(&[1, 3], 2, 5), Some(3), "after host 1 was handed out");
        assert_eq!(next(&[1, 3], 4, 5), Some(1), "cyclically");
        assert_eq!(list(&views, &any, |_| 2, 3), [3, 1, 2, 0]);
        assert!(passes_check(&views[1], &any) && !passes_check(&views[0], &any));
    }
}
