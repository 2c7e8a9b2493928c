//! The PostgreSQL side of a poll: opening a connection over the runtime's stream, and running the poll query.
//!
//! This is the only place that opens database connections; how they use TLS is [`crate::poller::tls`]'s business.

use std::cell::Cell;
use std::error::Error as _;
use std::future::Future as _;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use futures_channel::oneshot;
use pg_status_core::config::SslMode;
use pg_status_core::monitor::{PollError, PollErrorKind};
use pg_status_core::observation::{Observation, PollQuery, INSUFFICIENT_PRIVILEGE};
use pg_status_core::wire::{AuthMethods, WireError};
use tokio_postgres::config::SslMode as WireMode;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::poller::guarded::{Guard, Guarded};
use crate::poller::runtime::Runtime;
use crate::poller::tls::{HandshakeError, PgTls};

/// How long a closed session may take to say goodbye to its server before its socket is dropped regardless.
///
/// tokio-postgres keeps a connection open until every answer it waits for has arrived, so a hung server would
/// otherwise hold the socket forever.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What a connection does when it ends by itself (the server closed it, or the socket failed): the poll
/// driver's connection watch, which tells the core at once.
pub type OnClose = Rc<dyn Fn()>;

/// An open connection to one host. Dropping it closes the connection (within a second: `CLOSE_GRACE`).
pub struct Session {
    client: Client,
    /// The wire checks and read budget of the connection.
    guard: Rc<Guard>,
    /// Set when the connection has ended: the server closed it or the socket failed.
    ended: Rc<Cell<bool>>,
    /// Dropped together with the client; its closing tells the connection task to stop waiting for the server.
    _alive: oneshot::Sender<()>,
}

impl Session {
    /// True once the connection has ended (the server closed it, or the socket failed): the session can
    /// only fail from now on.
    pub fn has_ended(&self) -> bool {
        self.ended.get()
    }
}

/// How to log in: the parts of tokio-postgres' configuration that are the same for every host.
pub fn login(user: &str, password: &str, database: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config.user(user).password(password).dbname(database).application_name("pg-status");
    config
}

/// Where one host is and how to log in to it.
pub(crate) struct Target {
    /// DNS name or IP address, without brackets.
    pub(crate) host: String,
    /// TCP port.
    pub(crate) port: u16,
    /// User, password and database.
    pub(crate) login: tokio_postgres::Config,
    /// `pg_status__connect_timeout`, named in the error when a connection is not open in time (the core
    /// decides when that is).
    pub(crate) connect_timeout: Duration,
    /// TLS settings (`PGSSL*`).
    pub(crate) tls: PgTls,
    /// The authentication methods the server may ask for (`pg_status__require_auth`).
    pub(crate) require_auth: AuthMethods,
    /// Tells the driver that one of this host's connections ended by itself.
    pub(crate) on_close: OnClose,
}

/// Opens a session with `target`: TCP through the runtime, TLS as its `tls` says, then PostgreSQL's start-up
/// and authentication.
///
/// As libpq does, `PGSSLMODE=prefer` retries without TLS on a new connection when the TLS handshake fails,
/// and `allow` retries with TLS when `pg_hba.conf` refuses the plain session (as a `hostssl`-only server
/// does; a wrong password is not retried). The caller bounds the time this takes; dropping the future abandons
/// the attempt and closes the socket.
///
/// Everything the server sends passes the core's wire checks first (`guarded`): a message larger
/// than the read limit, more bytes than it, or an authentication method outside `require_auth`
/// (`pg_status__require_auth`) fails the attempt before the client library acts on it.
///
/// `on_close` runs when the session's connection ends by itself, while open or after the session is dropped.
pub(crate) async fn open<R: Runtime>(rt: &R, target: &Target) -> Result<Session, PollError> {
    if let Some(reason) = target.tls.broken_reason() {
        return Err(PollError::new(PollErrorKind::Connect, reason));
    }
    let attempt = |mode| open_as(rt, target, mode);
    let second = |first: Attempt, mode, without: &'static str| async move {
        attempt(mode).await.map_err(|e| {
            let message = format!("{} ({without}: {})", e.error.message, first.error.message);
            Attempt { error: PollError::new(e.error.kind, message), ..e }
        })
    };
    let result = match target.tls.mode() {
        SslMode::Disable => attempt(WireMode::Disable).await,
        SslMode::Prefer => match attempt(WireMode::Prefer).await {
            Err(first) if first.handshake_failed => second(first, WireMode::Disable, "with TLS").await,
            other => other,
        },
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => attempt(WireMode::Require).await,
        SslMode::Allow => match attempt(WireMode::Disable).await {
            Err(first) if first.refused_by_hba => second(first, WireMode::Require, "without TLS").await,
            other => other,
        },
    };
    result.map_err(|a| a.error)
}

/// A failed connection attempt.
struct Attempt {
    error: PollError,
    /// The TLS handshake failed (not the server declining TLS, nor anything after the handshake).
    handshake_failed: bool,
    /// `pg_hba.conf` refused the session (SQLSTATE 28000), as it does a plain session to a `hostssl`-only
    /// server. A wrong password (28P01) is not this: retrying it over TLS would only fail again.
    refused_by_hba: bool,
}

/// One connection attempt with tokio-postgres' TLS mode `mode`.
async fn open_as<R: Runtime>(rt: &R, target: &Target, mode: WireMode) -> Result<Session, Attempt> {
    let Target { host, port, login, tls, require_auth: allowed, on_close, .. } = target;
    let (host, port, allowed) = (host.as_str(), *port, *allowed);
    let stream = rt.connect(host, port).await.map_err(|e| {
        let shown = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        let error = PollError::new(PollErrorKind::Connect, format!("cannot connect to {shown}: {e}"));
        Attempt { error, handshake_failed: false, refused_by_hba: false }
    })?;
    let guard = Guard::new(allowed);
    let stream = Guarded::new(stream, guard.clone());
    let mut login = login.clone();
    login.ssl_mode(mode);
    let handshake = tls.handshake(host, guard.clone());
    let (client, connection) = login.connect_raw(stream, handshake).await.map_err(|e| match guard.refused() {
        Some(refused) => Attempt { error: refused_error(&refused), handshake_failed: false, refused_by_hba: false },
        None => Attempt {
            error: startup_error(&e),
            handshake_failed: HandshakeError::caused(&e),
            refused_by_hba: e.code() == Some(&tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
        },
    })?;
    // A oneshot channel is about 100 bytes; an async-channel with its listener was about 770, per host.
    let (alive, closed) = oneshot::channel::<()>();
    let task_rt = rt.clone();
    // The connection future ends by itself once the client is gone and no answer is pending; the second
    // branch bounds the wait when the server never answers. The connection is polled in place rather than
    // awaited in an `async` block, which would keep room for it twice in the task (1,232 bytes per host
    // instead of 432).
    let mut connection = connection;
    let ended = Rc::new(Cell::new(false));
    let watch = (ended.clone(), on_close.clone());
    let run = futures_lite::future::poll_fn(move |cx| {
        let polled = Pin::new(&mut connection).poll(cx);
        if polled.is_ready() {
            watch.0.set(true);
            (watch.1)();
        }
        polled.map(drop)
    });
    let give_up = async move {
        // Nothing is ever sent: the receiver completes exactly when the session (and the sender) is dropped.
        let _ = closed.await;
        task_rt.sleep_until(task_rt.now() + CLOSE_GRACE).await;
    };
    let task = futures_lite::future::or(run, give_up);
    rt.spawn(Box::pin(task));
    Ok(Session { client, guard, ended, _alive: alive })
}

/// Runs the poll query in the form `query` (one round trip, simple-query protocol) and parses its single row.
///
/// When the server refuses that form for lack of privilege (SQLSTATE 42501: the role may not read
/// `pg_stat_wal_receiver`), the form the core names for that case runs instead on the same session, within
/// the caller's deadline; the observation says what could not be read. Each query may read up to the wire
/// checks' limit, whatever the connection read before.
pub async fn query(session: &Session, query: PollQuery) -> Result<Observation, PollError> {
    let mut form = query;
    let messages = loop {
        session.guard.refill();
        match session.client.simple_query(form.sql()).await {
            Ok(messages) => break messages,
            Err(e) => match (session.guard.refused(), form.on_refusal()) {
                (Some(refused), _) => return Err(refused_error(&refused)),
                (None, Some(next)) if e.code().is_some_and(|c| c.code() == INSUFFICIENT_PRIVILEGE) => form = next,
                _ => return Err(query_error(&e)),
            },
        }
    };
    let mut rows = messages.iter().filter_map(|m| match m {
        SimpleQueryMessage::Row(row) => Some(row),
        _ => None,
    });
    let bad_reply = |text: String| PollError::new(PollErrorKind::BadReply, text);
    let row = rows.next().ok_or_else(|| bad_reply("the poll query returned no row".to_owned()))?;
    if rows.next().is_some() {
        return Err(bad_reply("the poll query returned more than one row".to_owned()));
    }
    let values = (0..row.len())
        .map(|i| row.try_get(i))
        .collect::<Result<Vec<Option<&str>>, _>>()
        .map_err(|e| bad_reply(describe(&e)))?;
    Observation::from_row(&values).map_err(|e| bad_reply(e.to_string()))
}

/// The poll error of a connection whose server's bytes the wire checks refused.
fn refused_error(refused: &WireError) -> PollError {
    let kind = match refused {
        WireError::AuthNotAllowed { .. } => PollErrorKind::Auth,
        _ => PollErrorKind::BadReply,
    };
    PollError::new(kind, refused.to_string())
}

/// Classifies a failure of the start-up phase (after TCP connected).
fn startup_error(error: &tokio_postgres::Error) -> PollError {
    let text = describe(error);
    // SQLSTATE class 28 is "invalid authorization specification" (wrong password, unknown role, pg_hba.conf).
    let auth = error.code().is_some_and(|c| c.code().starts_with("28")) || text.starts_with("authentication error");
    let kind = if auth {
        PollErrorKind::Auth
    } else if error.is_closed() {
        PollErrorKind::Closed
    } else {
        PollErrorKind::Connect
    };
    PollError::new(kind, text)
}

/// Classifies a failure of the poll query on an open session.
fn query_error(error: &tokio_postgres::Error) -> PollError {
    let text = describe(error);
    let io = error.source().is_some_and(|s| s.is::<std::io::Error>());
    let kind = if error.as_db_error().is_some() {
        PollErrorKind::Query
    } else if error.is_closed() || io {
        PollErrorKind::Closed
    } else {
        PollErrorKind::BadReply
    };
    PollError::new(kind, text)
}

/// The error with its causes, on one line. tokio-postgres' own `Display` shows only the outermost layer
/// ("db error"), and server messages may span lines (DETAIL, HINT). None of it contains the password: the
/// client never echoes it and the server never sends it.
fn describe(error: &tokio_postgres::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}
