//! The cluster model: the ground truth the oracle checks pg-status against.
//!
//! Each node has a role, a timeline and WAL positions that advance at rates drawn from the seed; the
//! scenario promotes, demotes, crashes, pauses and stalls nodes. The simulated servers answer the poll query
//! from this model, so whatever pg-status reports can be compared with what was true.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use pg_status_core::lsn::Lsn;
use pg_status_core::observation::{INSUFFICIENT_PRIVILEGE, POLL_QUERY, POLL_QUERY_WITHOUT_RECEIVER};

use crate::pgwire::{self, Database, QueryResult, Reply, SqlError};
use crate::rng::Rng;

/// The port every simulated server listens on.
pub const PG_PORT: u16 = 5432;
/// The user the sidecar logs in as.
pub const USER: &str = "postgres";
/// The password every node accepts unless a scenario changes it.
pub const PASSWORD: &str = "postgres";
/// Where WAL starts on the first timeline (PostgreSQL's first record after initdb is near here).
const WAL_START: u64 = 0x300_0060;
/// PostgreSQL's default WAL segment size, for `pg_walfile_name`.
const WAL_SEGMENT: u64 = 16 << 20;

/// Column names of the poll query's answer, as PostgreSQL would name them.
pub const POLL_COLUMNS: &[&str] = &[
    "pg_is_in_recovery",
    "pg_current_wal_lsn",
    "pg_last_wal_receive_lsn",
    "pg_last_wal_replay_lsn",
    "int8",
    "pg_walfile_name",
    "pid",
    "received_tli",
    "latest_end_lsn",
];

/// Column names of the poll query without the WAL receiver: the first six of [`POLL_COLUMNS`].
pub const POLL_COLUMNS_WITHOUT_RECEIVER: &[&str] = POLL_COLUMNS.split_at(6).0;

/// A node's role in the truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    /// Accepts writes.
    Master,
    /// In recovery, streaming from the current master.
    Replica,
}

impl fmt::Display for NodeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeRole::Master => "master",
            NodeRole::Replica => "replica",
        })
    }
}

/// One PostgreSQL server in the model.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its host name, as the sidecar knows it.
    pub name: String,
    /// Master or replica.
    pub role: NodeRole,
    /// The timeline it is on.
    pub timeline: u32,
    /// The server process runs.
    pub up: bool,
    /// Master: WAL written so far.
    pub insert_lsn: u64,
    /// Replica: WAL received so far.
    pub receive_lsn: u64,
    /// Replica: WAL replayed so far.
    pub replay_lsn: u64,
    /// Replica: the end of WAL its sender last reported (`latest_end_lsn`), which runs ahead of what was
    /// received while the receiver falls behind.
    pub latest_end_lsn: u64,
    /// Replica: simulated time (ms) at which the master wrote the last replayed WAL.
    pub replay_commit_ms: Option<u64>,
    /// Replica: replay is paused (`pg_wal_replay_pause()`).
    pub replay_paused: bool,
    /// Replica: the WAL receiver is stuck (no new WAL arrives).
    pub stalled: bool,
    /// Master: bytes of WAL written per ms while the load is on.
    pub write_rate: u64,
    /// Replica: bytes received per ms at most.
    pub receive_rate: u64,
    /// Replica: bytes replayed per ms at most.
    pub replay_rate: u64,
    /// The server answers queries this late (0: at once).
    pub slow_reply_ms: u64,
    /// The password it accepts.
    pub password: String,
    /// Something that is not PostgreSQL answers at its address (a wrong port, a hostile host).
    pub impostor: bool,
    /// SELECT on `pg_stat_wal_receiver` is revoked from the sidecar's role: the full poll query is refused
    /// with SQLSTATE 42501, as PostgreSQL refuses it when it plans the query.
    pub receiver_view_revoked: bool,
    /// Bumped when its sessions are terminated (restart, demotion, an administrator).
    pub session_epoch: u64,
    /// A session was opened since the last bump of `session_epoch`: until then, a client that held a
    /// session learns of its end only when it next uses it (a failure still to come).
    pub fresh_session: bool,
    /// TCP connections the server accepted.
    pub connections: u64,
    /// Sessions that logged in.
    pub sessions: u64,
}

impl Node {
    /// Terminates every session (a restart, a demotion, an administrator's `pg_terminate_backend`).
    pub fn end_sessions(&mut self) {
        self.session_epoch += 1;
        self.fresh_session = false;
    }

    /// Its own WAL position: written on a master, replayed on a replica.
    pub fn lsn(&self) -> u64 {
        match self.role {
            NodeRole::Master => self.insert_lsn,
            NodeRole::Replica => self.replay_lsn,
        }
    }
}

/// The whole cluster at one simulated instant.
#[derive(Debug)]
pub struct Cluster {
    /// The nodes, in the sidecar's host order.
    pub nodes: Vec<Node>,
    /// Simulated time of the last [`Cluster::advance`], in ms.
    pub now_ms: u64,
    /// The master writes WAL (off: an idle master, whose replicas' replay timestamps age).
    pub writing: bool,
    /// Multiplies the masters' write rates (a load spike).
    pub load: u64,
    /// Per timeline: (time ms, WAL position) as its master wrote it, for replay timestamps and fork points.
    history: BTreeMap<u32, Vec<(u64, u64)>>,
}

impl Cluster {
    /// A cluster of `n` nodes named `db1..dbN`: the first is master on timeline 1, the others caught-up
    /// replicas; rates come from `rng`.
    pub fn new(n: usize, rng: &mut Rng) -> Cluster {
        let nodes = (0..n)
            .map(|i| Node {
                name: format!("db{}", i + 1),
                role: if i == 0 { NodeRole::Master } else { NodeRole::Replica },
                timeline: 1,
                up: true,
                insert_lsn: WAL_START,
                receive_lsn: WAL_START,
                replay_lsn: WAL_START,
                latest_end_lsn: WAL_START,
                replay_commit_ms: Some(0),
                replay_paused: false,
                stalled: false,
                write_rate: rng.range(50, 2_000),
                receive_rate: rng.range(4_000, 20_000),
                replay_rate: rng.range(3_000, 20_000),
                slow_reply_ms: 0,
                password: PASSWORD.to_owned(),
                impostor: false,
                receiver_view_revoked: false,
                session_epoch: 0,
                fresh_session: false,
                connections: 0,
                sessions: 0,
            })
            .collect();
        let mut history = BTreeMap::new();
        history.insert(1, vec![(0, WAL_START)]);
        Cluster { nodes, now_ms: 0, writing: true, load: 1, history }
    }

    /// The node index of `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The master replicas stream from: the running master on the highest timeline (first in order on ties).
    pub fn upstream(&self) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, n) in self.nodes.iter().enumerate() {
            if n.up && n.role == NodeRole::Master && best.is_none_or(|b| n.timeline > self.nodes[b].timeline) {
                best = Some(i);
            }
        }
        best
    }

    /// Moves the model to `now_ms`: masters write, replicas receive and replay.
    pub fn advance(&mut self, now_ms: u64) {
        let dt = now_ms.saturating_sub(self.now_ms);
        self.now_ms = now_ms;
        if dt == 0 {
            return;
        }
        for n in &mut self.nodes {
            if n.up && n.role == NodeRole::Master && self.writing {
                n.insert_lsn += n.write_rate.saturating_mul(self.load).saturating_mul(dt);
                self.history.entry(n.timeline).or_default().push((now_ms, n.insert_lsn));
            }
        }
        let Some(up) = self.upstream() else { return };
        let (up_tl, up_lsn) = (self.nodes[up].timeline, self.nodes[up].insert_lsn);
        let fork = self.history.get(&up_tl).and_then(|h| h.first()).map_or(0, |&(_, lsn)| lsn);
        for i in 0..self.nodes.len() {
            let n = &mut self.nodes[i];
            if !n.up || n.role != NodeRole::Replica {
                continue;
            }
            if n.timeline < up_tl {
                // Following a new timeline: WAL past the fork point belongs to the old history (pg_rewind).
                n.timeline = up_tl;
                n.receive_lsn = n.receive_lsn.min(fork);
                n.replay_lsn = n.replay_lsn.min(fork);
            }
            if n.timeline == up_tl && n.latest_end_lsn > up_lsn {
                // A report from an older history: the new upstream's is the one that counts.
                n.latest_end_lsn = up_lsn;
            }
            if !n.stalled && n.timeline == up_tl {
                n.receive_lsn = up_lsn.min(n.receive_lsn + n.receive_rate.saturating_mul(dt)).max(n.receive_lsn);
                // The sender reports its end of WAL with every message, ahead of what the receiver has taken in.
                n.latest_end_lsn = n.latest_end_lsn.max(up_lsn);
            }
            if !n.replay_paused {
                n.replay_lsn = n.receive_lsn.min(n.replay_lsn + n.replay_rate.saturating_mul(dt)).max(n.replay_lsn);
            }
            let tl = n.timeline;
            let replay = n.replay_lsn;
            if let Some(h) = self.history.get(&tl) {
                // The last write at or before the replayed position is the last replayed "commit".
                let at = h.partition_point(|&(_, lsn)| lsn <= replay);
                if at > 0 {
                    self.nodes[i].replay_commit_ms = Some(h[at - 1].0);
                }
            }
        }
    }

    /// Promotes a replica: it replays what it received and starts a new timeline as master.
    pub fn promote(&mut self, i: usize) {
        let tl = self.nodes.iter().map(|n| n.timeline).max().unwrap_or(1) + 1;
        let now = self.now_ms;
        let n = &mut self.nodes[i];
        n.role = NodeRole::Master;
        n.timeline = tl;
        n.replay_lsn = n.receive_lsn.max(n.replay_lsn);
        n.insert_lsn = n.replay_lsn;
        n.replay_paused = false;
        n.stalled = false;
        self.history.insert(tl, vec![(now, n.insert_lsn)]);
    }

    /// Demotes a master to a replica of the current upstream (a restart in recovery: sessions end).
    pub fn demote(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.role = NodeRole::Replica;
        n.receive_lsn = n.insert_lsn;
        n.replay_lsn = n.insert_lsn;
        n.latest_end_lsn = n.insert_lsn;
        n.end_sessions();
    }

    /// The poll query's answer from node `i` at `now_ms` ([`POLL_COLUMNS`]).
    pub fn poll_row(&self, i: usize, now_ms: u64) -> Vec<Option<String>> {
        let n = &self.nodes[i];
        let lsn = |v: u64| Some(Lsn(v).to_string());
        match n.role {
            NodeRole::Master => vec![
                Some("f".into()),
                lsn(n.insert_lsn),
                None,
                None,
                None,
                Some(format!(
                    "{:08X}{:08X}{:08X}",
                    n.timeline,
                    n.insert_lsn >> 32,
                    (n.insert_lsn & 0xFFFF_FFFF) / WAL_SEGMENT
                )),
                None,
                None,
                None,
            ],
            NodeRole::Replica => {
                let streaming = !n.stalled && self.upstream().is_some();
                vec![
                    Some("t".into()),
                    None,
                    lsn(n.receive_lsn),
                    lsn(n.replay_lsn),
                    n.replay_commit_ms.map(|c| now_ms.saturating_sub(c).to_string()),
                    None,
                    streaming.then(|| (1000 + i).to_string()),
                    streaming.then(|| n.timeline.to_string()),
                    streaming.then(|| lsn(n.latest_end_lsn)).flatten(),
                ]
            }
        }
    }

    /// The replay lag of replica `i` in bytes, measured against the current upstream (for traces).
    pub fn true_lag_bytes(&self, i: usize) -> u64 {
        let n = &self.nodes[i];
        let master = self.upstream().map_or(n.receive_lsn, |m| self.nodes[m].insert_lsn);
        master.max(n.receive_lsn).saturating_sub(n.replay_lsn)
    }
}

/// A shared handle to the cluster, as the servers and the scenario runner hold it (one thread).
pub type SharedCluster = Rc<RefCell<Cluster>>;

/// One node's server: answers logins and the poll query from the shared cluster model.
#[derive(Debug, Clone)]
pub struct NodeServer {
    cluster: SharedCluster,
    node: usize,
}

impl NodeServer {
    /// The server of node `node`.
    pub fn new(cluster: SharedCluster, node: usize) -> NodeServer {
        NodeServer { cluster, node }
    }

    /// Accepts connections on [`PG_PORT`] of the current turmoil host and serves each in its own task.
    pub async fn run(self) -> turmoil::Result {
        let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PG_PORT)).await?;
        let server = Rc::new(self);
        let mut pid: i32 = 1000;
        loop {
            let (stream, _) = listener.accept().await?;
            server.cluster.borrow_mut().nodes[server.node].connections += 1;
            pid = pid.wrapping_add(1);
            let server = server.clone();
            if server.cluster.borrow().nodes[server.node].impostor {
                tokio::task::spawn_local(impostor(stream));
                continue;
            }
            tokio::task::spawn_local(async move {
                // A session's end, clean or not, is the client's business; the server just forgets it.
                let _ = pgwire::serve(stream, &*server, pid).await;
            });
        }
    }
}

/// What answers at a node's address while something that is not PostgreSQL holds it: after the client's first
/// message, a header announcing a 2 GiB message, then zeros, until the client goes away (at most 1 MiB, so a
/// client without a read limit shows as a violation rather than a simulation that never ends).
async fn impostor(mut stream: turmoil::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut first = [0u8; 8];
    if stream.read_exact(&mut first).await.is_err() {
        return;
    }
    let mut chunk = vec![0u8; 16 * 1024];
    chunk[..5].copy_from_slice(&[b'R', 0x7f, 0xff, 0xff, 0xf0]);
    for _ in 0..64 {
        if stream.write_all(&chunk).await.is_err() {
            return;
        }
        chunk[..5].fill(0);
    }
    // Then silence: the connection stays open until the client closes it.
    let _ = stream.read(&mut first).await;
}

impl Database for NodeServer {
    fn authenticate(&self, user: &str, _database: &str, password: &str) -> Result<(), SqlError> {
        let cluster = self.cluster.borrow();
        if user == USER && password == cluster.nodes[self.node].password {
            Ok(())
        } else {
            Err(SqlError::wrong_password(user))
        }
    }

    fn query(&self, sql: &str) -> Reply {
        let cluster = self.cluster.borrow();
        let node = &cluster.nodes[self.node];
        let delay = Duration::from_millis(node.slow_reply_ms);
        let full = sql == POLL_QUERY;
        if !full && sql != POLL_QUERY_WITHOUT_RECEIVER {
            let message = format!("syntax error at or near \"{}\"", sql.split_whitespace().next().unwrap_or(""));
            return Reply { delay, result: QueryResult::Error(SqlError { code: pgwire::SYNTAX_ERROR, message }) };
        }
        if full && node.receiver_view_revoked {
            let message = "permission denied for view pg_stat_wal_receiver".to_owned();
            return Reply { delay, result: QueryResult::Error(SqlError { code: INSUFFICIENT_PRIVILEGE, message }) };
        }
        let now = turmoil::sim_elapsed().map_or(cluster.now_ms, |d| u64::try_from(d.as_millis()).unwrap_or(0));
        let mut values = cluster.poll_row(self.node, now);
        let columns = if full {
            POLL_COLUMNS
        } else {
            values.truncate(POLL_COLUMNS_WITHOUT_RECEIVER.len());
            POLL_COLUMNS_WITHOUT_RECEIVER
        };
        Reply { delay, result: QueryResult::Row { columns, values } }
    }

    fn session_opened(&self) -> u64 {
        let mut cluster = self.cluster.borrow_mut();
        let node = &mut cluster.nodes[self.node];
        node.sessions += 1;
        node.fresh_session = true;
        node.session_epoch
    }

    fn session_valid(&self, token: u64) -> bool {
        self.cluster.borrow().nodes[self.node].session_epoch == token
    }
}

/// A server that answers the poll query with a fixed row, without a cluster model: for many fake hosts on
/// real sockets (benchmarks), where [`crate::pgwire::serve`] runs over tokio's TCP streams.
#[derive(Debug, Clone)]
pub struct StaticNode {
    /// The password it accepts (for [`USER`]).
    pub password: String,
    /// The poll query's row.
    pub row: Vec<Option<String>>,
}

impl StaticNode {
    /// A master on timeline 1 at `lsn`.
    pub fn master(lsn: u64) -> StaticNode {
        let mut cluster = Cluster::new(1, &mut Rng::new(0));
        cluster.nodes[0].insert_lsn = lsn;
        StaticNode { password: PASSWORD.to_owned(), row: cluster.poll_row(0, 0) }
    }

    /// A caught-up replica on timeline 1 at `lsn`.
    pub fn replica(lsn: u64) -> StaticNode {
        let mut cluster = Cluster::new(2, &mut Rng::new(0));
        let node = &mut cluster.nodes[1];
        node.receive_lsn = lsn;
        node.replay_lsn = lsn;
        StaticNode { password: PASSWORD.to_owned(), row: cluster.poll_row(1, 0) }
    }
}

impl Database for StaticNode {
    fn authenticate(&self, user: &str, _database: &str, password: &str) -> Result<(), SqlError> {
        if user == USER && password == self.password {
            Ok(())
        } else {
            Err(SqlError::wrong_password(user))
        }
    }

    fn query(&self, sql: &str) -> Reply {
        let result = if sql == POLL_QUERY {
            QueryResult::Row { columns: POLL_COLUMNS, values: self.row.clone() }
        } else if sql == POLL_QUERY_WITHOUT_RECEIVER {
            let values = self.row.iter().take(POLL_COLUMNS_WITHOUT_RECEIVER.len()).cloned().collect();
            QueryResult::Row { columns: POLL_COLUMNS_WITHOUT_RECEIVER, values }
        } else {
            QueryResult::Error(SqlError { code: pgwire::SYNTAX_ERROR, message: "only the poll query is served".into() })
        };
        Reply { delay: Duration::ZERO, result }
    }
}
