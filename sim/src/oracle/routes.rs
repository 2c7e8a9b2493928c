//! What clients are told once pg-status is ready, checked against the reference fed with the same polls:
//! `/master` names the host decision 4 elects (or, refusing a split brain, 503 naming the claimants); a
//! replica route hands out a replica that satisfied its filter at its last poll, healthy before possibly
//! dead (decision 5), else the master or 404; no route names a dead host or one never seen alive; a
//! replica's `lag_ms` never exceeds decision 3's; `/hosts` shows each host as its last polls did.

use pg_status_core::http::handle;
use pg_status_core::lsn::Lsn;
use pg_status_core::observation::Role;
use pg_status_core::select::Filter;
use pg_status_core::snapshot::{Health, Snapshot};
use pg_status_reference::{election, lsn, routes, view, View};

use super::Oracle;

/// A request the oracle asks: target, route, and its `lag_ms`, `lag_bytes` and `min_lsn` parameters.
type Request<'a> = (String, &'a str, Option<u64>, Option<u64>, Option<Lsn>);

impl Oracle {
    /// Asks `/master` and every replica route of the snapshot; returns the host `/master` names.
    pub(super) fn check_routes(&mut self, at_ms: u64, snapshot: &Snapshot) -> Option<usize> {
        let s = self.settings;
        let settings = self.reference_settings();
        let (refused, expected, views, requests) = {
            let hosts = self.reference_hosts();
            let expected = election::master(&hosts, s.policy);
            let master_lsn = expected.and_then(|m| hosts[m].last).and_then(|o| o.current_lsn);
            let min_lsn = master_lsn.unwrap_or_default();
            let mid_lsn = Lsn(min_lsn.0.saturating_sub(s.sync_max_lag_bytes / 2));
            let (tm, tb) = (s.sync_max_lag_ms, s.sync_max_lag_bytes);
            let targets: [Request<'_>; 10] = [
                ("/replica".into(), "/replica", None, None, None),
                (format!("/replica?lag_ms={}", tm / 2), "/replica", Some(tm / 2), None, None),
                (format!("/replica?lag_bytes={}", tb / 2), "/replica", None, Some(tb / 2), None),
                (format!("/replica?min_lsn={min_lsn}"), "/replica", None, None, Some(min_lsn)),
                (format!("/replica?min_lsn={mid_lsn}&lag_ms={tm}"), "/replica", Some(tm), None, Some(mid_lsn)),
                ("/sync_by_time".into(), "/sync_by_time", None, None, None),
                ("/sync_by_bytes".into(), "/sync_by_bytes", None, None, None),
                ("/sync_by_time_or_bytes".into(), "/sync_by_time_or_bytes", None, None, None),
                ("/sync_by_time_and_bytes".into(), "/sync_by_time_and_bytes", None, None, None),
                ("/most_sync_by_bytes".into(), "/most_sync_by_bytes", None, None, None),
            ];
            let requests: Vec<(String, Filter, bool)> = targets
                .into_iter()
                .map(|(target, path, ms, bytes, min)| {
                    let filter = routes::filter(path, ms, bytes, min, &hosts, &settings);
                    (target, filter, path == "/most_sync_by_bytes")
                })
                .collect();
            let refused = election::refused_claimants(&hosts, s.policy);
            (refused, expected, view::views(&hosts, &settings, None), requests)
        };

        let master = if refused.is_empty() {
            self.ask(at_ms, snapshot, "/master")
        } else {
            self.ask_refused(at_ms, snapshot, &refused);
            None
        };
        if master != expected {
            let show = |i: Option<usize>| i.map_or("404".to_owned(), |i| self.names[i].clone());
            let detail = format!("/master -> {}, decision 4 over the polls says {}", show(master), show(expected));
            self.violate(at_ms, "/master names the host decision 4 elects", detail);
        }
        self.check_time_lag(at_ms, snapshot, &views);

        // The core also bounds a replica's time lag by the master's WAL history, which only lowers decision
        // 3's value (checked above); filters are judged on the lower of the two.
        let bounded: Vec<View> = views
            .iter()
            .zip(&snapshot.hosts)
            .map(|(v, h)| View { lag_ms: v.lag_ms.map(|ms| h.lag_ms.map_or(ms, |got| got.min(ms))), ..*v })
            .collect();
        for (target, filter, most) in requests {
            let got = self.ask(at_ms, snapshot, &target);
            let tier = routes::preferred(&bounded, &filter);
            let bytes = |i: usize| bounded[i].lag_bytes;
            let ok = match got {
                Some(i) if tier.contains(&i) => !most || tier.iter().all(|&j| bytes(j) >= bytes(i)),
                other => tier.is_empty() && other == expected,
            };
            if !ok {
                let passing: Vec<String> = (0..bounded.len())
                    .filter(|&i| {
                        matches!(bounded[i].health, Health::Alive | Health::PossiblyDead)
                            && routes::admits(&filter, &bounded[i])
                    })
                    .map(|i| {
                        let doubt = if bounded[i].health == Health::Alive { "" } else { " (possibly dead)" };
                        format!("{}{doubt}", self.names[i])
                    })
                    .collect();
                let show = |i: Option<usize>| i.map_or("404".to_owned(), |i| self.names[i].clone());
                let detail = format!(
                    "{target} -> {}; replicas passing at their last poll: [{}]; master {}",
                    show(got),
                    passing.join(", "),
                    show(expected)
                );
                let invariant = "a filtered answer satisfied its filter at its last poll, else master or 404";
                self.violate(at_ms, invariant, detail);
            }
            if let Some(i) = got.filter(|&i| !refused.is_empty() && views[i].role == Some(Role::Master)) {
                let detail = format!("{target} -> {} while {} claim master", self.names[i], self.show_all(&refused));
                self.violate(at_ms, "refusing a split brain, no answer names a master while two claim it", detail);
            }
            if let Some(i) = got.filter(|&i| views[i].role.is_none()) {
                let detail = format!("{target} -> {} (dead or never seen alive)", self.names[i]);
                self.violate(at_ms, "no route returns a dead host or one never seen alive", detail);
            }
        }
        if let Some(m) = master.filter(|&m| views[m].role.is_none()) {
            let detail = format!("/master -> {} (dead or never seen alive)", self.names[m]);
            self.violate(at_ms, "no route returns a dead host or one never seen alive", detail);
        }
        master
    }

    /// The core bounds a replica's time lag by the master's WAL history (how long ago the master was where
    /// the replica has replayed to), which can only lower decision 3's value: the snapshot's `lag_ms` must
    /// never exceed it.
    fn check_time_lag(&mut self, at_ms: u64, snapshot: &Snapshot, views: &[View]) {
        for (i, v) in views.iter().enumerate() {
            let design = v.lag_ms.filter(|_| v.role == Some(Role::Replica));
            let (Some(ms), Some(got)) = (design, snapshot.hosts.get(i).and_then(|h| h.lag_ms)) else { continue };
            if got > ms {
                let detail = format!("{}: lag_ms {got} above decision 3's {ms}", self.names[i]);
                self.violate(at_ms, "a replica's lag_ms never exceeds decision 3's replay delay", detail);
            }
        }
    }

    /// Asks the handler for `target` and returns the host it names (`None` for 404).
    fn ask(&mut self, at_ms: u64, snapshot: &Snapshot, target: &str) -> Option<usize> {
        let response = handle(snapshot, &mut self.cursor, "GET", target, None);
        match response.status {
            200 => {
                let name = String::from_utf8_lossy(response.body.as_bytes()).into_owned();
                let index = self.index(&name);
                if index.is_none() {
                    self.violate(at_ms, "answer names a configured host", format!("{target} -> {name:?}"));
                }
                index
            }
            404 => None,
            status => {
                self.violate(at_ms, "host routes answer 200 or 404 once ready", format!("{target} -> {status}"));
                None
            }
        }
    }

    /// Refusing a split brain, `/master` must answer 503 naming every claimant in host order.
    fn ask_refused(&mut self, at_ms: u64, snapshot: &Snapshot, claimants: &[usize]) {
        let response = handle(snapshot, &mut self.cursor, "GET", "/master", None);
        let expected = format!("{{\"error_text\": \"split brain: {}\"}}", self.show_all(claimants));
        let body = String::from_utf8_lossy(response.body.as_bytes()).into_owned();
        if response.status != 503 || body != expected {
            let detail = format!("/master -> {} {body}, expected 503 {expected}", response.status);
            self.violate(at_ms, "refusing a split brain, no answer names a master while two claim it", detail);
        }
    }

    /// `/hosts` must show each host as the reference sees it: alive, master flag and LSN of its last
    /// successful poll while not dead, nulls once dead.
    pub(super) fn check_hosts_document(&mut self, at_ms: u64, snapshot: &Snapshot) {
        let views = view::views(&self.reference_hosts(), &self.reference_settings(), None);
        let response = handle(snapshot, &mut self.cursor, "GET", "/hosts", None);
        let body = String::from_utf8_lossy(response.body.as_bytes()).into_owned();
        for (i, v) in views.iter().enumerate() {
            let key = format!("{{\"host\": \"{}\"", self.names[i]);
            let Some(object) = body.find(&key).map(|at| &body[at..]).and_then(|o| o.split('}').next()) else {
                self.violate(at_ms, "/hosts lists every host", format!("{} missing from {body}", self.names[i]));
                continue;
            };
            let expected = [
                format!("\"master\": {}", v.role == Some(Role::Master)),
                format!("\"alive\": {}", v.role.is_some()),
                match v.lsn {
                    Some(l) => format!("\"lsn\": \"{}\"", lsn::show(l)),
                    None => "\"lsn\": null".to_owned(),
                },
            ];
            if let Some(missing) = expected.iter().find(|e| !object.contains(e.as_str())) {
                let detail = format!("{}: expected {missing} in {object}}}", self.names[i]);
                self.violate(at_ms, "/hosts shows each host as its last polls did", detail);
            }
        }
    }
}
