//! The HTTP listening sockets, made with socket2 for a long accept backlog and dual-stack IPv6: TCP, and a Unix
//! socket for clients on the same machine.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use pg_status_core::config::{ListenAddress, UnixSocketConfig};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

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

/// The Unix socket could not be made.
#[derive(Debug, thiserror::Error)]
pub enum UnixBindError {
    /// Another process accepts connections on the path: a second instance, most likely.
    #[error("cannot listen on unix:{path}: another process is listening on it")]
    InUse {
        /// The socket's path.
        path: PathBuf,
    },
    /// Something other than a socket is at the path, and it is not ours to remove.
    #[error("cannot listen on unix:{path}: the file exists and is not a socket; remove it or choose another path")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// The system refused.
    #[error("cannot listen on unix:{path}: {source}")]
    Io {
        /// The socket's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A listening Unix socket; its file is removed when the socket is dropped (if it is still the same file).
#[derive(Debug)]
pub struct UnixSocket {
    listener: UnixListener,
    file: SocketFile,
}

impl UnixSocket {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// The listener, and the guard that removes the file when dropped.
    pub fn into_parts(self) -> (UnixListener, SocketFile) {
        (self.listener, self.file)
    }
}

/// Removes a socket file made by [`bind_unix`] when dropped, unless another process has replaced it since.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    /// Device and inode of the file made, so a newer instance's socket at the same path is left alone.
    id: (u64, u64),
}

impl SocketFile {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let same = fs::symlink_metadata(&self.path).ok().map(|m| (m.dev(), m.ino()));
        if same == Some(self.id) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Binds and listens on the Unix socket `config.path` and gives the file `config.mode`. A socket file left
/// behind by a process that is gone (connecting to it is refused) is replaced; one that still accepts
/// connections, or a file that is not a socket, is an error.
pub fn bind_unix(config: &UnixSocketConfig) -> Result<UnixSocket, UnixBindError> {
    let path = PathBuf::from(&config.path);
    let fail = |source| UnixBindError::Io { path: path.clone(), source };
    let listener = match listen_unix(&path) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let is_socket = fs::symlink_metadata(&path).map_err(fail)?.file_type().is_socket();
            if !is_socket {
                return Err(UnixBindError::NotASocket { path });
            }
            match UnixStream::connect(&path) {
                Ok(_) => return Err(UnixBindError::InUse { path }),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    fs::remove_file(&path).map_err(fail)?;
                    listen_unix(&path).map_err(fail)?
                }
                Err(e) => return Err(fail(e)),
            }
        }
        other => other.map_err(fail)?,
    };
    let metadata = fs::symlink_metadata(&path).map_err(fail)?;
    let file = SocketFile { path: path.clone(), id: (metadata.dev(), metadata.ino()) };
    // The file exists from `bind` on, so from here on dropping `file` removes it, errors included.
    fs::set_permissions(&path, fs::Permissions::from_mode(config.mode)).map_err(fail)?;
    Ok(UnixSocket { listener, file })
}

fn listen_unix(path: &Path) -> io::Result<UnixListener> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.bind(&SockAddr::unix(path)?)?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}
