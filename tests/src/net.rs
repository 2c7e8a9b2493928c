//! Loopback addresses and free ports, so that every cluster, proxy and pg-status process of a test run has
//! its own address and port and tests can run in parallel.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::IoContext;
use crate::Result;

static NEXT_ADDRESS: AtomicU32 = AtomicU32::new(0);

/// A loopback address not handed out before in this process: `127.0.B.C` with `B` derived from the process id
/// (so parallel test processes rarely share addresses) and `C` counting up from 2.
///
/// Every address in 127.0.0.0/8 routes to the loopback interface on Linux, so no setup is needed.
pub fn next_loopback() -> Ipv4Addr {
    let n = NEXT_ADDRESS.fetch_add(1, Ordering::Relaxed);
    // 1..=250 for the third octet keeps away from 127.0.0.x, which other software on the machine may use.
    let process_octet = (std::process::id() % 250) as u8 + 1;
    let third = process_octet.wrapping_add((n / 250) as u8);
    let fourth = (n % 250) as u8 + 2;
    Ipv4Addr::new(127, 0, third, fourth)
}

/// A TCP port that is free on `ip` right now (the kernel picks it; the listener is closed before returning).
pub fn free_port(ip: Ipv4Addr) -> Result<u16> {
    let listener = TcpListener::bind((ip, 0)).context(|| format!("binding {ip}:0 to find a free port"))?;
    let port = listener.local_addr().context(|| format!("reading the port bound on {ip}"))?.port();
    Ok(port)
}

/// A free socket address on a fresh loopback address.
pub fn free_socket_addr() -> Result<SocketAddr> {
    let ip = next_loopback();
    Ok(SocketAddr::from((ip, free_port(ip)?)))
}

/// Raises this process's soft limit of open files to `wanted` (or to the hard limit, whichever is lower) and
/// returns the new soft limit. Tests that open thousands of client connections call it first.
pub fn raise_nofile_limit(wanted: u64) -> Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own; RLIMIT_NOFILE is a valid resource.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(crate::Error::io("getrlimit(RLIMIT_NOFILE)", std::io::Error::last_os_error()));
    }
    let target = (wanted as libc::rlim_t).min(limit.rlim_max);
    if limit.rlim_cur < target {
        limit.rlim_cur = target;
        // SAFETY: setrlimit reads the struct we own; the soft limit does not exceed the hard limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(crate::Error::io("setrlimit(RLIMIT_NOFILE)", std::io::Error::last_os_error()));
        }
    }
    // rlim_t is u64 on Linux but not on every platform.
    #[allow(clippy::unnecessary_cast)]
    Ok(limit.rlim_cur as u64)
}
