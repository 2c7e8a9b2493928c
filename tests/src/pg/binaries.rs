//! Finding the PostgreSQL server programs, and running them as the `postgres` OS user when the tests run as
//! root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::error::IoContext;
use crate::{Error, Result};

/// The PostgreSQL server programs to use, and the OS user to run them as.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    bindir: PathBuf,
    pub(super) run_as: Option<OsUser>,
}

/// An OS user the server programs run as (when the tests run as root).
#[derive(Debug, Clone)]
pub(super) struct OsUser {
    pub(super) name: String,
    uid: u32,
    gid: u32,
}

impl PgBinaries {
    /// Finds the PostgreSQL binaries: `PG_BINDIR` if set, else `/usr/lib/postgresql/15/bin`, else
    /// `pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`. When running as root, the `postgres`
    /// OS user must exist.
    pub fn locate() -> Result<PgBinaries> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(dir) = std::env::var_os("PG_BINDIR") {
            candidates.push(dir.into());
        }
        candidates.push("/usr/lib/postgresql/15/bin".into());
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
            if out.status.success() {
                candidates.push(String::from_utf8_lossy(&out.stdout).trim().into());
            }
        }
        if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
            let mut versions: Vec<(u32, PathBuf)> = entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok().map(|v| (v, e.path().join("bin"))))
                .collect();
            versions.sort_by_key(|v| std::cmp::Reverse(v.0));
            candidates.extend(versions.into_iter().map(|(_, p)| p));
        }
        let bindir = candidates
            .into_iter()
            .find(|dir| ["initdb", "pg_ctl", "pg_basebackup", "postgres"].iter().all(|b| dir.join(b).is_file()))
            .ok_or_else(|| {
                Error::Environment(
                    "no directory with initdb, pg_ctl, pg_basebackup and postgres (tried PG_BINDIR, \
                     /usr/lib/postgresql/15/bin, pg_config --bindir, /usr/lib/postgresql/*/bin)"
                        .into(),
                )
            })?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let run_as = if unsafe { libc::geteuid() } == 0 { Some(OsUser::lookup("postgres")?) } else { None };
        Ok(PgBinaries { bindir, run_as })
    }

    /// The directory holding the server programs.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// A command running the server program `program`, as the `postgres` OS user when the tests run as root.
    pub fn command(&self, program: &str) -> Command {
        let path = self.bindir.join(program);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", &user.name, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        };
        // The server user may not be able to enter the test's working directory.
        cmd.current_dir(std::env::temp_dir()).stdin(Stdio::null());
        cmd
    }

    /// Gives `path` to the server user (a no-op when not running as root).
    pub fn give(&self, path: &Path) -> Result<()> {
        if let Some(user) = &self.run_as {
            std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
                .context(|| format!("chown {} to {}", path.display(), user.name))?;
        }
        Ok(())
    }
}

impl OsUser {
    fn lookup(name: &str) -> Result<OsUser> {
        let out = |args: &[&str]| -> Result<u32> {
            let o = Command::new("id").args(args).arg(name).output().context(|| format!("running id for {name}"))?;
            if !o.status.success() {
                return Err(Error::Environment(format!(
                    "running as root, but the OS user {name:?} that PostgreSQL must run as does not exist"
                )));
            }
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse()
                .map_err(|_| Error::Environment(format!("id {args:?} {name} printed no number")))
        };
        Ok(OsUser { name: name.to_owned(), uid: out(&["-u"])?, gid: out(&["-g"])? })
    }
}

/// Runs a command to completion and turns a failure into [`Error::Command`] with its output.
pub(super) fn run(mut cmd: Command, extra: impl FnOnce() -> String) -> Result<Output> {
    let line = format!("{cmd:?}");
    let out = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).output().context(|| format!("spawning {line}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(Error::Command {
            command: line,
            status: out.status.to_string(),
            output: format!(
                "{}{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                extra()
            ),
        })
    }
}
