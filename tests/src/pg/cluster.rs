//! The cluster guard: a primary and its streaming replicas, started together and stopped by `Drop`, with a
//! watcher that stops them when the test process dies without dropping it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use super::{Node, PgBinaries, SERVER_TIMEOUT};
use crate::error::IoContext;
use crate::wait::wait_until_ok;
use crate::{Error, Result};

/// How to build a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of streaming replicas besides the primary.
    pub replicas: usize,
    /// The password of the `postgres` database user (TCP connections use SCRAM password authentication).
    pub password: String,
    /// Extra `postgresql.conf` lines for every node.
    pub extra_conf: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions { replicas: 2, password: "postgres".into(), extra_conf: Vec::new() }
    }
}

impl ClusterOptions {
    /// Options for a primary with `replicas` streaming replicas and the default password `postgres`.
    pub fn with_replicas(replicas: usize) -> ClusterOptions {
        ClusterOptions { replicas, ..ClusterOptions::default() }
    }
}

/// A primary and its streaming replicas, each a separate PostgreSQL server on its own loopback address and
/// port. Dropping the cluster stops every server (`pg_ctl stop -m immediate`) and deletes the data.
pub struct Cluster {
    nodes: Vec<Node>,
    /// Stops the servers and deletes the directory if this process dies without dropping the cluster.
    watcher: Option<std::process::Child>,
    // Dropped after the nodes (fields drop in declaration order), so the servers stop before their files go.
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Creates and starts a cluster: initdb for the primary, `pg_basebackup -R` for each replica, and waits
    /// until every replica streams from the primary.
    pub fn start(bins: &PgBinaries, options: ClusterOptions) -> Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix("pg-status-tests-")
            .tempdir()
            .context(|| "creating the cluster's temporary directory".into())?;
        bins.give(dir.path())?;
        let bins = Arc::new(bins.clone());
        let root = dir.path().to_owned();
        let watcher = spawn_watcher(&bins, &root)?;
        let mut cluster = Cluster { nodes: Vec::new(), watcher: Some(watcher), _dir: dir };

        let primary = Node::new(&bins, &root, 0, &options.password)?;
        primary.initdb()?;
        primary.write_config(&options.extra_conf)?;
        cluster.nodes.push(primary);
        cluster.nodes[0].start()?;

        for i in 1..=options.replicas {
            let replica = Node::new(&bins, &root, i, &options.password)?;
            replica.base_backup_from(&cluster.nodes[0])?;
            replica.write_config(&options.extra_conf)?;
            cluster.nodes.push(replica);
            cluster.nodes[i].start()?;
        }
        cluster.wait_streaming(SERVER_TIMEOUT)?;
        Ok(cluster)
    }

    /// Every node, the initial primary first, then the replicas in creation order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `i` (0 is the initial primary).
    ///
    /// # Panics
    /// When `i` is out of range (a test bug).
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// The node created as primary. After a promotion it may no longer be the master.
    pub fn primary(&self) -> &Node {
        &self.nodes[0]
    }

    /// The nodes created as replicas.
    pub fn replicas(&self) -> &[Node] {
        &self.nodes[1..]
    }

    /// Waits until the initial primary has one streaming WAL sender per replica.
    pub fn wait_streaming(&self, timeout: Duration) -> Result<()> {
        let want = self.nodes.len() - 1;
        let primary = self.primary();
        wait_until_ok(timeout, "every replica to stream from the primary", || -> Result<()> {
            let n = primary.value("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")?;
            if n.as_deref() == Some(&want.to_string()) {
                Ok(())
            } else {
                Err(Error::SqlResult { node: primary.name().into(), detail: format!("{n:?} streaming, want {want}") })
            }
        })
    }

    /// Waits until every running replica has replayed the primary's current WAL position.
    pub fn wait_caught_up(&self, timeout: Duration) -> Result<()> {
        let target = self.primary().current_wal_lsn()?;
        for replica in self.replicas() {
            replica.wait_replayed(target, timeout)?;
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            node.drop_client();
            let _ = node.stop_mode("immediate");
        }
        if let Some(mut watcher) = self.watcher.take() {
            let _ = watcher.kill();
            let _ = watcher.wait();
        }
    }
}

/// Starts a detached shell that waits for this test process to end and then stops every server under `root`
/// and deletes it: a test process killed by a timeout or a signal never runs `Drop`, and its servers must not
/// outlive it. `Drop` kills the watcher after a normal stop.
fn spawn_watcher(bins: &PgBinaries, root: &Path) -> Result<std::process::Child> {
    const SCRIPT: &str = r#"
        while kill -0 "$WATCH_PID" 2>/dev/null; do sleep 1; done
        for d in "$WATCH_ROOT"/node*; do
            if [ -f "$d/postmaster.pid" ]; then
                if [ -n "$WATCH_USER" ]; then
                    runuser -u "$WATCH_USER" -- "$WATCH_PG_CTL" -D "$d" -m immediate -w -t 30 stop
                else
                    "$WATCH_PG_CTL" -D "$d" -m immediate -w -t 30 stop
                fi
            fi
        done
        rm -rf "$WATCH_ROOT"
    "#;
    Command::new("sh")
        .args(["-c", SCRIPT])
        .env("WATCH_PID", std::process::id().to_string())
        .env("WATCH_ROOT", root)
        .env("WATCH_PG_CTL", bins.bindir().join("pg_ctl"))
        .env("WATCH_USER", bins.run_as.as_ref().map(|u| u.name.as_str()).unwrap_or(""))
        .current_dir(std::env::temp_dir())
        // Holding none of the test's pipes, so nothing waits for the watcher to exit.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context(|| "starting the cluster watcher".into())
}
