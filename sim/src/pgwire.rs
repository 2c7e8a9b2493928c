//! A small PostgreSQL server side of protocol v3: enough for a real client (tokio-postgres, libpq, psql) to
//! connect with a password, run simple queries and hang up.
//!
//! The codec is pure (bytes in, messages out) and the session runs over any `AsyncRead + AsyncWrite`, so the
//! same server answers inside turmoil and on real loopback sockets (the benchmark runs a thousand of them).
//! What the server answers comes from a [`Database`]: the simulation's cluster model, or anything else.

use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Protocol version 3.0 as sent in a StartupMessage.
const PROTOCOL_3_0: i32 = 196_608;
/// The request code of an SSLRequest.
const SSL_REQUEST: i32 = 80_877_103;
/// The request code of a GSSENCRequest.
const GSSENC_REQUEST: i32 = 80_877_104;
/// The request code of a CancelRequest.
const CANCEL_REQUEST: i32 = 80_877_102;
/// The largest message this server accepts; the poll query is a few hundred bytes.
pub const MAX_MESSAGE: usize = 1 << 20;

/// SQLSTATE of a wrong password (`invalid_password`).
pub const INVALID_PASSWORD: &str = "28P01";
/// SQLSTATE of a protocol violation.
pub const PROTOCOL_VIOLATION: &str = "08P01";
/// SQLSTATE of a syntax error, used for any query the server does not know.
pub const SYNTAX_ERROR: &str = "42601";
/// SQLSTATE of "feature not supported", used for the extended-query protocol.
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";

/// Why the byte stream is not valid protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A length field is below its minimum or above [`MAX_MESSAGE`].
    #[error("invalid message length {0}")]
    Length(i64),
    /// The first message is neither a StartupMessage nor a known request.
    #[error("unsupported protocol version or request code {0}")]
    Version(i32),
    /// A string is not terminated or not UTF-8.
    #[error("malformed string in a {0} message")]
    String(&'static str),
}

/// What a client sends before authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupRequest {
    /// `SSLRequest`: the server answers `N` (no TLS) and waits for the next startup packet.
    Ssl,
    /// `GSSENCRequest`: answered `N` as well.
    GssEnc,
    /// `CancelRequest`: the server closes the connection.
    Cancel,
    /// `StartupMessage` with its parameters, in the order sent.
    Startup(Vec<(String, String)>),
}

/// A message of the normal (typed) phase from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frontend {
    /// `p`: a password (or a SASL response; this server asks only for cleartext).
    Password(String),
    /// `Q`: a simple query.
    Query(String),
    /// `S`: the end of an extended-query batch.
    Sync,
    /// `X`: the client hangs up.
    Terminate,
    /// Any other message type, by its tag byte.
    Other(u8),
}

/// Takes one startup-phase packet off the front of `buf`, or `None` until it is complete.
pub fn decode_startup(buf: &mut BytesMut) -> Option<Result<StartupRequest, ProtocolError>> {
    if buf.len() < 8 {
        return None;
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let Some(len) = usize::try_from(len).ok().filter(|&l| (8..=MAX_MESSAGE).contains(&l)) else {
        return Some(Err(ProtocolError::Length(i64::from(len))));
    };
    if buf.len() < len {
        return None;
    }
    let mut packet = buf.split_to(len);
    packet.advance(4);
    let code = packet.get_i32();
    Some(match code {
        SSL_REQUEST => Ok(StartupRequest::Ssl),
        GSSENC_REQUEST => Ok(StartupRequest::GssEnc),
        CANCEL_REQUEST => Ok(StartupRequest::Cancel),
        PROTOCOL_3_0 => parse_parameters(&packet).map(StartupRequest::Startup),
        other => Err(ProtocolError::Version(other)),
    })
}

fn parse_parameters(mut body: &[u8]) -> Result<Vec<(String, String)>, ProtocolError> {
    let mut params = Vec::new();
    loop {
        let key = take_cstr(&mut body, "StartupMessage")?;
        if key.is_empty() {
            return Ok(params);
        }
        let value = take_cstr(&mut body, "StartupMessage")?;
        params.push((key, value));
    }
}

fn take_cstr(body: &mut &[u8], message: &'static str) -> Result<String, ProtocolError> {
    let end = body.iter().position(|&b| b == 0).ok_or(ProtocolError::String(message))?;
    let text = std::str::from_utf8(&body[..end]).map_err(|_| ProtocolError::String(message))?.to_owned();
    *body = &body[end + 1..];
    Ok(text)
}

/// Takes one typed message off the front of `buf`, or `None` until it is complete.
pub fn decode_message(buf: &mut BytesMut) -> Option<Result<Frontend, ProtocolError>> {
    if buf.len() < 5 {
        return None;
    }
    let tag = buf[0];
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    let Some(len) = usize::try_from(len).ok().filter(|&l| (4..=MAX_MESSAGE).contains(&l)) else {
        return Some(Err(ProtocolError::Length(i64::from(len))));
    };
    if buf.len() < len + 1 {
        return None;
    }
    let message = buf.split_to(len + 1);
    let mut body = &message[5..];
    Some(match tag {
        b'p' => take_cstr(&mut body, "PasswordMessage").map(Frontend::Password),
        b'Q' => take_cstr(&mut body, "Query").map(Frontend::Query),
        b'S' => Ok(Frontend::Sync),
        b'X' => Ok(Frontend::Terminate),
        other => Ok(Frontend::Other(other)),
    })
}

/// Appends one backend message: its tag, its length and the body written by `body`.
fn message(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let at = out.len();
    out.put_i32(0);
    body(out);
    // A message body is bounded by what this module writes (at most a few kilobytes), far below i32::MAX.
    let len = i32::try_from(out.len() - at).unwrap_or(i32::MAX);
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(out: &mut BytesMut, s: &str) {
    out.put_slice(s.as_bytes());
    out.put_u8(0);
}

/// `AuthenticationOk`.
pub fn auth_ok(out: &mut BytesMut) {
    message(out, b'R', |b| b.put_i32(0));
}

/// `AuthenticationCleartextPassword`.
pub fn auth_cleartext(out: &mut BytesMut) {
    message(out, b'R', |b| b.put_i32(3));
}

/// `ParameterStatus`.
pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    message(out, b'S', |b| {
        put_cstr(b, name);
        put_cstr(b, value);
    });
}

/// `BackendKeyData`.
pub fn backend_key_data(out: &mut BytesMut, pid: i32, secret: i32) {
    message(out, b'K', |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

/// `ReadyForQuery` in the idle state.
pub fn ready_for_query(out: &mut BytesMut) {
    message(out, b'Z', |b| b.put_u8(b'I'));
}

/// `RowDescription` of text columns (type `text`, OID 25), with the given names.
pub fn row_description(out: &mut BytesMut, columns: &[&str]) {
    message(out, b'T', |b| {
        b.put_i16(i16::try_from(columns.len()).unwrap_or(i16::MAX));
        for name in columns {
            put_cstr(b, name);
            b.put_i32(0); // table OID
            b.put_i16(0); // column number
            b.put_i32(25); // type OID: text
            b.put_i16(-1); // variable length
            b.put_i32(-1); // no type modifier
            b.put_i16(0); // text format
        }
    });
}

/// `DataRow`; `None` is SQL NULL.
pub fn data_row(out: &mut BytesMut, values: &[Option<String>]) {
    message(out, b'D', |b| {
        b.put_i16(i16::try_from(values.len()).unwrap_or(i16::MAX));
        for value in values {
            match value {
                Some(v) => {
                    b.put_i32(i32::try_from(v.len()).unwrap_or(i32::MAX));
                    b.put_slice(v.as_bytes());
                }
                None => b.put_i32(-1),
            }
        }
    });
}

/// `CommandComplete` with its tag, e.g. `SELECT 1`.
pub fn command_complete(out: &mut BytesMut, tag: &str) {
    message(out, b'C', |b| put_cstr(b, tag));
}

/// `EmptyQueryResponse`.
pub fn empty_query(out: &mut BytesMut) {
    message(out, b'I', |_| {});
}

/// `ErrorResponse` with severity, SQLSTATE and message.
pub fn error_response(out: &mut BytesMut, severity: &str, code: &str, text: &str) {
    message(out, b'E', |b| {
        b.put_u8(b'S');
        put_cstr(b, severity);
        b.put_u8(b'V');
        put_cstr(b, severity);
        b.put_u8(b'C');
        put_cstr(b, code);
        b.put_u8(b'M');
        put_cstr(b, text);
        b.put_u8(0);
    });
}

/// An error a [`Database`] answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    /// SQLSTATE, five characters.
    pub code: &'static str,
    /// The message.
    pub message: String,
}

impl SqlError {
    /// What PostgreSQL answers a wrong password with (28P01).
    pub fn wrong_password(user: &str) -> SqlError {
        SqlError { code: INVALID_PASSWORD, message: format!("password authentication failed for user \"{user}\"") }
    }
}

/// The answer to a simple query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryResult {
    /// One row of text values under these column names.
    Row {
        /// Column names, one per value.
        columns: &'static [&'static str],
        /// The values; `None` is SQL NULL.
        values: Vec<Option<String>>,
    },
    /// An error; the session stays usable.
    Error(SqlError),
}

/// A query's answer and how long the server takes before sending it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Wait this long before answering (a slow server).
    pub delay: Duration,
    /// What to answer.
    pub result: QueryResult,
}

/// What the server answers from: logins, queries and its parameters.
pub trait Database {
    /// Checks a login. `Err` refuses it with that error (SQLSTATE 28P01 for a wrong password).
    fn authenticate(&self, user: &str, database: &str, password: &str) -> Result<(), SqlError>;

    /// Answers a simple query.
    fn query(&self, sql: &str) -> Reply;

    /// Called when a session is established (authenticated), for connection counting. Returns a token that
    /// [`Database::session_valid`] is later asked about.
    fn session_opened(&self) -> u64 {
        0
    }

    /// False once the session opened with `token` must end (an administrator terminated it, or the server
    /// restarted into another role): checked before every query, answered with FATAL 57P01 as PostgreSQL does.
    fn session_valid(&self, token: u64) -> bool {
        let _ = token;
        true
    }
}

/// The server parameters reported at start-up, as PostgreSQL 15 reports them.
const PARAMETERS: &[(&str, &str)] = &[
    ("server_version", "15.8"),
    ("server_encoding", "UTF8"),
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO, MDY"),
    ("integer_datetimes", "on"),
    ("IntervalStyle", "postgres"),
    ("standard_conforming_strings", "on"),
    ("TimeZone", "UTC"),
    ("application_name", ""),
    ("is_superuser", "off"),
];

/// Why a session ended other than by the client's `Terminate` or close.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The client broke the protocol.
    #[error("protocol: {0}")]
    Protocol(#[from] ProtocolError),
}

/// Reads until `decode` yields a message; `Ok(None)` when the client closed the connection cleanly.
async fn next<S, T>(
    stream: &mut S,
    buf: &mut BytesMut,
    decode: fn(&mut BytesMut) -> Option<Result<T, ProtocolError>>,
) -> Result<Option<T>, SessionError>
where
    S: AsyncRead + Unpin,
{
    loop {
        if let Some(message) = decode(buf) {
            return Ok(Some(message?));
        }
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// Serves one client connection until it hangs up, breaks the protocol, or fails to log in.
///
/// `pid` is reported in `BackendKeyData`. A protocol violation is answered with an `ErrorResponse` before
/// the connection is closed, as PostgreSQL does.
pub async fn serve<S, D>(mut stream: S, db: &D, pid: i32) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    D: Database + ?Sized,
{
    let mut buf = BytesMut::with_capacity(1024);
    let mut out = BytesMut::with_capacity(1024);
    let result = session(&mut stream, &mut buf, &mut out, db, pid).await;
    if let Err(SessionError::Protocol(e)) = &result {
        out.clear();
        error_response(&mut out, "FATAL", PROTOCOL_VIOLATION, &e.to_string());
        // The connection is being dropped because of the violation; a failed goodbye changes nothing.
        let _ = stream.write_all(&out).await;
    }
    let _ = stream.shutdown().await;
    result
}

async fn session<S, D>(
    stream: &mut S,
    buf: &mut BytesMut,
    out: &mut BytesMut,
    db: &D,
    pid: i32,
) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    D: Database + ?Sized,
{
    // Start-up: any number of SSL/GSS requests (answered "no"), then the StartupMessage.
    let params = loop {
        match next(stream, buf, decode_startup).await? {
            None | Some(StartupRequest::Cancel) => return Ok(()),
            Some(StartupRequest::Ssl | StartupRequest::GssEnc) => stream.write_all(b"N").await?,
            Some(StartupRequest::Startup(params)) => break params,
        }
    };
    let get = |key: &str| params.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_default();
    let user = get("user");
    let database = match get("database") {
        d if d.is_empty() => user.clone(),
        d => d,
    };
    auth_cleartext(out);
    stream.write_all(out).await?;
    out.clear();
    let password = match next(stream, buf, decode_message).await? {
        None | Some(Frontend::Terminate) => return Ok(()),
        Some(Frontend::Password(p)) => p,
        Some(_) => {
            error_response(out, "FATAL", PROTOCOL_VIOLATION, "expected a password response");
            stream.write_all(out).await?;
            return Ok(());
        }
    };
    if let Err(e) = db.authenticate(&user, &database, &password) {
        error_response(out, "FATAL", e.code, &e.message);
        stream.write_all(out).await?;
        return Ok(());
    }
    auth_ok(out);
    for (name, value) in PARAMETERS {
        let value = if *name == "application_name" { get("application_name") } else { (*value).to_owned() };
        parameter_status(out, name, &value);
    }
    backend_key_data(out, pid, pid.wrapping_mul(7919));
    ready_for_query(out);
    stream.write_all(out).await?;
    out.clear();
    let token = db.session_opened();

    // Ready: simple queries until Terminate. Extended-query messages are refused until their Sync.
    let mut refused_batch = false;
    loop {
        let Some(message) = next(stream, buf, decode_message).await? else { return Ok(()) };
        if !db.session_valid(token) {
            error_response(out, "FATAL", "57P01", "terminating connection due to administrator command");
            stream.write_all(out).await?;
            return Ok(());
        }
        match message {
            Frontend::Terminate => return Ok(()),
            Frontend::Query(sql) => {
                if sql.trim().is_empty() {
                    empty_query(out);
                } else {
                    let reply = db.query(&sql);
                    if !reply.delay.is_zero() {
                        tokio::time::sleep(reply.delay).await;
                    }
                    match reply.result {
                        QueryResult::Row { columns, values } => {
                            row_description(out, columns);
                            data_row(out, &values);
                            command_complete(out, "SELECT 1");
                        }
                        QueryResult::Error(e) => error_response(out, "ERROR", e.code, &e.message),
                    }
                }
                ready_for_query(out);
            }
            Frontend::Sync => {
                refused_batch = false;
                ready_for_query(out);
            }
            Frontend::Password(_) | Frontend::Other(_) => {
                if !refused_batch {
                    refused_batch = true;
                    error_response(out, "ERROR", FEATURE_NOT_SUPPORTED, "only the simple query protocol is served");
                }
            }
        }
        stream.write_all(out).await?;
        out.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_packets_decode_and_wait_for_more_bytes() {
        let mut buf = BytesMut::new();
        buf.put_i32(8);
        buf.put_i32(SSL_REQUEST);
        buf.put_i32(29);
        assert_eq!(decode_startup(&mut buf), Some(Ok(StartupRequest::Ssl)));
        assert_eq!(decode_startup(&mut buf), None, "a partial packet waits");
        buf.put_i32(PROTOCOL_3_0);
        buf.put_slice(b"user\0pg\0database\0db\0\0");
        // Length: 4 + 4 + 21 = 29.
        assert_eq!(
            decode_startup(&mut buf),
            Some(Ok(StartupRequest::Startup(vec![("user".into(), "pg".into()), ("database".into(), "db".into())])))
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn bad_lengths_and_versions_are_errors() {
        let mut buf = BytesMut::new();
        buf.put_i32(-1);
        buf.put_i32(0);
        assert_eq!(decode_startup(&mut buf), Some(Err(ProtocolError::Length(-1))));
        let mut buf = BytesMut::new();
        buf.put_i32(8);
        buf.put_i32(12345);
        assert_eq!(decode_startup(&mut buf), Some(Err(ProtocolError::Version(12345))));
        let mut buf = BytesMut::new();
        buf.put_u8(b'Q');
        buf.put_i32(3);
        assert_eq!(decode_message(&mut buf), Some(Err(ProtocolError::Length(3))));
        let mut buf = BytesMut::new();
        buf.put_u8(b'Q');
        buf.put_i32(6);
        buf.put_slice(b"ab");
        assert_eq!(decode_message(&mut buf), Some(Err(ProtocolError::String("Query"))));
    }

    #[test]
    fn typed_messages_decode() {
        let mut buf = BytesMut::new();
        for (tag, body) in [(b'p', &b"secret\0"[..]), (b'Q', b"SELECT 1\0"), (b'S', b""), (b'P', b"x"), (b'X', b"")] {
            buf.put_u8(tag);
            buf.put_i32(i32::try_from(body.len() + 4).expect("small"));
            buf.put_slice(body);
        }
        let got: Vec<_> = std::iter::from_fn(|| decode_message(&mut buf)).collect();
        assert_eq!(
            got,
            vec![
                Ok(Frontend::Password("secret".into())),
                Ok(Frontend::Query("SELECT 1".into())),
                Ok(Frontend::Sync),
                Ok(Frontend::Other(b'P')),
                Ok(Frontend::Terminate),
            ]
        );
    }

    #[test]
    fn backend_messages_carry_their_length() {
        let mut out = BytesMut::new();
        data_row(&mut out, &[Some("t".into()), None]);
        assert_eq!(&out[..], b"D\0\0\0\x0f\0\x02\0\0\0\x01t\xff\xff\xff\xff");
    }
}
