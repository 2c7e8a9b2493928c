//! The HTTP listening socket, made with socket2 for a long accept backlog and dual-stack IPv6.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};

use pg_status_core::config::ListenAddress;
use socket2::{Domain, Protocol, Socket, Type};

/// Connections the kernel queues while the server is busy; the standard library's 128 overflows under bursts.
pub const BACKLOG: i32 = 1024;

/// The listening socket could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// Why the system refused.
    #[source]
    pub source: io::Error,
}

/// Binds and listens on `listen` and `port` (0 picks a free port). [`ListenAddress::Any`] listens on IPv6 and
/// IPv4 at once; on a system without IPv6 it falls back to IPv4 only.
pub fn bind(listen: ListenAddress, port: u16) -> Result<TcpListener, BindError> {
    match listen {
        ListenAddress::Ip(ip) => bind_one(SocketAddr::new(ip, port), false),
        ListenAddress::Any => {
            let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
            match bind_one(v6, true) {
                Err(e) if is_no_ipv6(&e.source) => {
                    bind_one(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port), false)
                }
                other => other,
            }
        }
    }
}

fn bind_one(addr: SocketAddr, dual_stack: bool) -> Result<TcpListener, BindError> {
    let fail = |source| BindError { addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    // A restart must not wait for the previous process's connections to leave TIME_WAIT.
    socket.set_reuse_address(true).map_err(fail)?;
    if dual_stack {
        socket.set_only_v6(false).map_err(fail)?;
    }
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(BACKLOG).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    Ok(socket.into())
}

/// The system has no IPv6 at all (as opposed to the address being taken).
fn is_no_ipv6(error: &io::Error) -> bool {
    error.raw_os_error() == Some(rustix::io::Errno::AFNOSUPPORT.raw_os_error())
        || error.kind() == io::ErrorKind::AddrNotAvailable
}
