//! HAProxy (Debian's package) run in the foreground from a configuration text, stopped by [`HaProxy`]'s
//! `Drop`, and killed with the test process if that dies. The configuration is checked first (`haproxy -c`),
//! and its warnings are kept so a test can insist on a configuration HAProxy has nothing to say about.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::error::IoContext;
use crate::{Error, Result};

/// The program, as Debian's package installs it on `PATH`.
pub const PROGRAM: &str = "haproxy";

/// A running HAProxy.
pub struct HaProxy {
    child: Child,
    log: PathBuf,
    warnings: Vec<String>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for HaProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HaProxy(pid {})", self.child.id())
    }
}

impl HaProxy {
    /// Checks `config` with `haproxy -c` (an invalid one is an error carrying HAProxy's words) and starts
    /// HAProxy with it in the foreground (`-db`), its output going to a log file.
    pub fn start(config: &str) -> Result<HaProxy> {
        let dir = tempfile::Builder::new()
            .prefix("pg-status-tests-haproxy-")
            .tempdir()
            .context(|| "creating HAProxy's directory".into())?;
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, config).context(|| "writing haproxy.cfg".into())?;
        let checked = Command::new(PROGRAM)
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .output()
            .context(|| format!("running {PROGRAM} -c (apt-get install haproxy)"))?;
        let said = format!("{}{}", String::from_utf8_lossy(&checked.stdout), String::from_utf8_lossy(&checked.stderr));
        if !checked.status.success() {
            return Err(Error::Environment(format!("HAProxy refuses the configuration:\n{said}\n{config}")));
        }
        let warnings = said.lines().filter(|l| l.contains("[WARNING]") || l.contains("[ALERT]")).map(str::to_owned);
        let warnings = warnings.collect();
        let log = dir.path().join("haproxy.log");
        let out = std::fs::File::create(&log).context(|| "creating HAProxy's log".into())?;
        let err = out.try_clone().context(|| "sharing HAProxy's log".into())?;
        let mut cmd = Command::new(PROGRAM);
        cmd.arg("-db").arg("-f").arg(&cfg).current_dir(dir.path()).stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: the closure runs in the child between fork and exec and only calls prctl, which is
        // async-signal-safe. It makes the kernel kill HAProxy when the spawning thread dies, so a test process
        // killed without running Drop leaves no HAProxy behind.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().context(|| format!("starting {PROGRAM}"))?;
        Ok(HaProxy { child, log, warnings, _dir: dir })
    }

    /// The warnings (and alerts) `haproxy -c` printed about the configuration.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The end of HAProxy's output, at most `max` bytes, for failure messages.
    pub fn log_tail(&self, max: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(max);
        let start = (start..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
        format!("\n--- HAProxy output ---\n{}", &text[start..])
    }

    /// Whether HAProxy is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
