//! The poller thread: the poll [`driver`] feeding the core, one poll iteration of a host (`poll`), the
//! PostgreSQL connections ([`pg`], behind the core's wire checks in `guarded`, with [`tls`]), host-name
//! look-ups ([`resolve`]) and the [`runtime`] trait the driver runs on (smol and async-io here, a simulated
//! network in the simulation).

pub mod driver;
mod guarded;
pub mod pg;
mod poll;
pub mod resolve;
pub mod runtime;
pub mod tls;
