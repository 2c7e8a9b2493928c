//! What `/proc` says about a process: resident memory, threads and CPU time.

use std::time::Duration;

use crate::error::{Error, Result};

fn read(pid: u32, file: &str) -> Result<String> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).map_err(|e| Error::Proc {
        pid,
        file: file.to_owned(),
        detail: e.to_string(),
    })
}

/// A field of `/proc/PID/status` as a number (the first word after the colon).
fn status_field(pid: u32, name: &str) -> Result<u64> {
    let text = read(pid, "status")?;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Error::Proc { pid, file: "status".into(), detail: format!("no numeric {name} line") })
}

/// Resident memory (`VmRSS`) in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    status_field(pid, "VmRSS")
}

/// The largest resident memory seen by the kernel (`VmHWM`) in KiB.
pub fn peak_rss_kib(pid: u32) -> Result<u64> {
    status_field(pid, "VmHWM")
}

/// Number of threads (`Threads`).
pub fn threads(pid: u32) -> Result<u64> {
    status_field(pid, "Threads")
}

/// Clock ticks per second, the unit of `utime` and `stime`.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name, handled below.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(100)
}

/// CPU time used so far by every thread of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTime {
    /// `utime + stime` from `/proc/PID/stat`, in clock ticks (usually 10 ms each).
    pub ticks: u64,
    /// Time on CPU from the scheduler (`/proc/PID/task/*/schedstat`, nanoseconds): finer than ticks.
    pub sched_ns: u64,
}

impl CpuTime {
    /// `utime + stime` as a duration.
    pub fn ticks_duration(&self) -> Duration {
        Duration::from_nanos(self.ticks.saturating_mul(1_000_000_000) / clock_ticks_per_second())
    }

    /// The CPU time used between `earlier` and `self`: (ticks, scheduler nanoseconds).
    pub fn since(&self, earlier: &CpuTime) -> CpuTime {
        CpuTime {
            ticks: self.ticks.saturating_sub(earlier.ticks),
            sched_ns: self.sched_ns.saturating_sub(earlier.sched_ns),
        }
    }
}

/// The process's CPU time so far.
pub fn cpu_time(pid: u32) -> Result<CpuTime> {
    let stat = read(pid, "stat")?;
    // The command name may contain spaces and parentheses: the fields start after the last ')'.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    // After ')': state is field 3 of proc(5), so utime (field 14) and stime (field 15) are at 11 and 12.
    let field = |i: usize| -> Result<u64> {
        fields.get(i).and_then(|f| f.parse().ok()).ok_or_else(|| Error::Proc {
            pid,
            file: "stat".into(),
            detail: format!("field {} is missing or not a number", i + 3),
        })
    };
    let ticks = field(11)? + field(12)?;
    let mut sched_ns = 0u64;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| Error::Proc {
        pid,
        file: "task".into(),
        detail: e.to_string(),
    })?;
    for task in tasks.flatten() {
        // A thread may end between the listing and the read; it no longer counts.
        if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) {
            sched_ns += text.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    Ok(CpuTime { ticks, sched_ns })
}

/// Samples a process's resident memory and thread count in the background until stopped.
pub struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u64, u64)>>,
}

impl Sampler {
    /// Samples `pid` every `every` for at most `max_for`.
    pub fn start(pid: u32, every: Duration, max_for: Duration) -> Sampler {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let (mut rss, mut threads) = (0, 0);
            while !flag.load(Ordering::Relaxed) && started.elapsed() < max_for {
                rss = rss.max(rss_kib(pid).unwrap_or(0));
                threads = threads.max(self::threads(pid).unwrap_or(0));
                std::thread::sleep(every);
            }
            (rss, threads)
        });
        Sampler { stop, thread: Some(thread) }
    }

    /// Stops sampling; returns the largest resident memory (KiB) and thread count seen.
    pub fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or((0, 0))
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
