//! A read-your-writes client inside the simulation: it "commits" on the true master, then asks
//! `/replica?min_lsn=<that commit>&wait_ms=W` through the core's handler and the runtime's own wait
//! ([`pg_status::server::wait::for_replica`]) on simulated time, exactly as a waiting HTTP request is served.
//!
//! Each answer is recorded with what pg-status saw and what was true, for the oracle, and with the answer the
//! same request would have had without waiting, so a run reports how much waiting raised the replica share.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::Guard;
use pg_status::clock::Clock;
use pg_status::publish::Published;
use pg_status::server::wait;
use pg_status_core::http::{self, Prepared, Selection};
use pg_status_core::lsn::Lsn;
use pg_status_core::select::Choice;
use pg_status_core::snapshot::Snapshot;

use crate::model::{NodeRole, SharedCluster};

/// How the client reads: one request every `every_ms`, each willing to wait `wait_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPlan {
    /// Simulated ms between two requests.
    pub every_ms: u64,
    /// The `wait_ms` each request asks for.
    pub wait_ms: u64,
}

/// One read-your-writes request and its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRecord {
    /// When it was asked, in simulated ms.
    pub issued_ms: u64,
    /// When it was answered, in simulated ms.
    pub answered_ms: u64,
    /// The `wait_ms` it was granted (what it asked for, capped by `pg_status__max_wait_ms`).
    pub wait_ms: u64,
    /// The position of the write it must see: the WAL position of the master pg-status named when it was
    /// asked (the client writes there).
    pub min_lsn: Lsn,
    /// That master's timeline.
    pub timeline: u32,
    /// The answer the request would have had at once, without waiting.
    pub at_once: Choice,
    /// The answer it had, or the status of an answer that named no host choice at all.
    pub answer: Result<Choice, u16>,
    /// Whether the snapshot it was answered from had a replica that satisfied it.
    pub satisfied: bool,
    /// The answered host's position as that snapshot showed it.
    pub seen_lsn: Option<Lsn>,
    /// The answered host's timeline as that snapshot showed it.
    pub seen_timeline: Option<u32>,
    /// The answered host's true position (replayed on a replica, written on a master) and timeline when the
    /// answer was given.
    pub true_position: Option<(Lsn, u32)>,
}

/// How the reads of a run went, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadShares {
    /// Requests answered.
    pub requests: u64,
    /// Of those, answered by a replica.
    pub replica: u64,
    /// Of those, that a request without `wait_ms` would have had a replica for.
    pub at_once_replica: u64,
    /// The longest time a request was held, in ms.
    pub longest_ms: u64,
}

impl ReadShares {
    /// Counts one answered request.
    pub fn count(&mut self, record: &ReadRecord) {
        self.requests += 1;
        self.replica += u64::from(matches!(record.answer, Ok(Choice::Replica(_))));
        self.at_once_replica += u64::from(matches!(record.at_once, Choice::Replica(_)));
        self.longest_ms = self.longest_ms.max(record.answered_ms.saturating_sub(record.issued_ms));
    }

    /// Adds the counts of another run.
    pub fn add(&mut self, other: &ReadShares) {
        self.requests += other.requests;
        self.replica += other.replica;
        self.at_once_replica += other.at_once_replica;
        self.longest_ms = self.longest_ms.max(other.longest_ms);
    }

    /// The share of replica answers, in percent (0 without requests).
    pub fn replica_percent(&self) -> f64 {
        percent(self.replica, self.requests)
    }

    /// The share of replica answers the same requests would have had without waiting, in percent.
    pub fn at_once_percent(&self) -> f64 {
        percent(self.at_once_replica, self.requests)
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        // Counts of a run stay far below 2^52: the conversion is exact.
        100.0 * part as f64 / whole as f64
    }
}

/// Reads by `plan` until the simulation ends, pushing each answered request to `records`; `now_ms` reads the
/// simulated clock in ms for the records.
pub async fn run<C: Clock>(
    clock: C,
    published: Arc<Published>,
    cluster: SharedCluster,
    plan: ReadPlan,
    records: Rc<RefCell<Vec<ReadRecord>>>,
    now_ms: fn() -> u64,
) {
    // One round-robin cursor for every request, as the HTTP front end has.
    let cursor = Rc::new(Cell::new(0usize));
    let every = Duration::from_millis(plan.every_ms.max(1));
    let mut next = clock.now();
    loop {
        next += every;
        clock.sleep_until(next).await;
        let snapshot = Guard::into_inner(published.load());
        if !snapshot.ready {
            continue;
        }
        // The client writes where pg-status says the master is; the write succeeds if that node truly is a
        // running master, and the request must then see what it has written by now.
        let written = snapshot.master.and_then(|m| {
            let c = cluster.borrow();
            c.nodes.get(m.get()).filter(|n| n.up && n.role == NodeRole::Master).map(|n| (Lsn(n.insert_lsn), n.timeline))
        });
        let Some((min_lsn, timeline)) = written else { continue };
        let target = format!("/replica?min_lsn={min_lsn}&wait_ms={}", plan.wait_ms);
        let issued_ms = now_ms();
        let selection = match http::prepare(&snapshot, "GET", &target, None) {
            Prepared::Select(selection) => selection,
            // A replica route is neither the metrics nor the host list.
            Prepared::Metrics | Prepared::Hosts => continue,
            Prepared::Respond(response) => {
                records.borrow_mut().push(ReadRecord {
                    issued_ms,
                    answered_ms: issued_ms,
                    wait_ms: plan.wait_ms,
                    min_lsn,
                    timeline,
                    at_once: Choice::Nothing,
                    answer: Err(response.status),
                    satisfied: false,
                    seen_lsn: None,
                    seen_timeline: None,
                    true_position: None,
                });
                continue;
            }
        };
        // What the answer would be without waiting, on a copy of the cursor so the real one is not moved.
        let at_once = selection.answer(&snapshot, &mut cursor.get()).0;
        // The wait as granted (capped by pg_status__max_wait_ms), which the oracle holds the answer to.
        let request = Request { issued_ms, wait_ms: selection.wait_ms, min_lsn, timeline, at_once };
        // As the HTTP front end does: a request that can be answered now is, from the snapshot it was asked on.
        if selection.answer_now(&snapshot) {
            records.borrow_mut().push(request.answered(&selection, &snapshot, &cursor, &cluster, now_ms()));
            continue;
        }
        let (clock, published, cluster, cursor, records) =
            (clock.clone(), published.clone(), cluster.clone(), cursor.clone(), records.clone());
        drop(tokio::task::spawn_local(async move {
            let snapshot = wait::for_replica(&clock, &published, &selection).await;
            records.borrow_mut().push(request.answered(&selection, &snapshot, &cursor, &cluster, now_ms()));
        }));
    }
}

/// A request as it was asked.
#[derive(Debug, Clone, Copy)]
struct Request {
    issued_ms: u64,
    wait_ms: u64,
    min_lsn: Lsn,
    timeline: u32,
    at_once: Choice,
}

impl Request {
    /// Answers the request from `snapshot` at `now_ms` and records what was seen and what was true.
    fn answered(
        self,
        selection: &Selection,
        snapshot: &Snapshot,
        cursor: &Cell<usize>,
        cluster: &SharedCluster,
        now_ms: u64,
    ) -> ReadRecord {
        let mut position = cursor.get();
        let (choice, _) = selection.answer(snapshot, &mut position);
        cursor.set(position);
        let host = choice.host();
        let seen = host.and_then(|i| snapshot.host(i));
        let c = cluster.borrow();
        ReadRecord {
            issued_ms: self.issued_ms,
            answered_ms: now_ms,
            wait_ms: self.wait_ms,
            min_lsn: self.min_lsn,
            timeline: self.timeline,
            at_once: self.at_once,
            answer: Ok(choice),
            satisfied: selection.satisfied(snapshot),
            seen_lsn: seen.and_then(|h| h.lsn),
            seen_timeline: seen.and_then(|h| h.timeline),
            true_position: host.and_then(|i| c.nodes.get(i.get())).map(|n| (Lsn(n.lsn()), n.timeline)),
        }
    }
}
