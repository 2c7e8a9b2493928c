//! What pg-status accepts from a PostgreSQL server on the wire, checked before the client library sees it.
//!
//! The client library buffers a message of whatever size its header announces and reads for as long as bytes
//! arrive, so one hostile or misconfigured host (a wrong port, a man in the middle) could make it allocate
//! gigabytes and keep the polling thread busy. The runtime passes every byte a server sends through
//! [`ServerStream`] first: it frames the backend messages, refuses one that announces more than
//! [`READ_LIMIT`], and refuses an authentication request that `pg_status__require_auth` does not allow, before
//! the client could answer it with the password. The byte budget per poll is the runtime's ([`READ_LIMIT`]
//! too), since it is the runtime that reads.

use std::fmt;

/// The most bytes one poll iteration may read from a server (connect, TLS, start-up and the poll query
/// together), and so also the largest message it accepts.
///
/// A poll's reply is a few hundred bytes and a start-up with TLS a few KiB (mostly the certificate chain);
/// 64 KiB leaves room for long server notices and large certificate chains while keeping a hostile host's
/// cost to a few dozen microseconds of the polling thread and 64 KiB of memory.
pub const READ_LIMIT: usize = 64 * 1024;

/// The protocol code of an SSLRequest (PostgreSQL's "1234.5679").
const SSL_REQUEST_CODE: u32 = 80_877_103;

/// An authentication method the server may ask for, as `pg_status__require_auth` names them (libpq's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AuthMethod {
    /// The server lets the session in without asking for anything (`trust`, or a certificate alone).
    None,
    /// The password in clear text (`password` in `pg_hba.conf`).
    Password,
    /// An MD5 hash of the password.
    Md5,
    /// SCRAM-SHA-256, which never sends the password.
    ScramSha256,
}

impl AuthMethod {
    /// Every method, in the order the documentation lists them.
    pub const ALL: [AuthMethod; 4] = [AuthMethod::Password, AuthMethod::Md5, AuthMethod::ScramSha256, AuthMethod::None];

    /// The name used in `pg_status__require_auth`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::Password => "password",
            AuthMethod::Md5 => "md5",
            AuthMethod::ScramSha256 => "scram-sha-256",
        }
    }

    /// The method named `name`, if it is one.
    pub fn from_name(name: &str) -> Option<AuthMethod> {
        AuthMethod::ALL.into_iter().find(|m| m.as_str() == name)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The authentication methods pg-status may use (`pg_status__require_auth`); by default every one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthMethods(u8);

impl AuthMethods {
    /// Every method: what pg-status does when `pg_status__require_auth` is not set (as libpq does).
    pub const ANY: AuthMethods = AuthMethods(0b1111);

    /// Exactly the methods listed.
    pub fn only(methods: &[AuthMethod]) -> AuthMethods {
        AuthMethods(methods.iter().fold(0, |bits, m| bits | m.bit()))
    }

    /// Whether `method` is allowed.
    pub fn allows(self, method: AuthMethod) -> bool {
        self.0 & method.bit() != 0
    }
}

impl Default for AuthMethods {
    fn default() -> AuthMethods {
        AuthMethods::ANY
    }
}

impl fmt::Display for AuthMethods {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> =
            AuthMethod::ALL.into_iter().filter(|m| self.allows(*m)).map(AuthMethod::as_str).collect();
        f.write_str(&names.join(","))
    }
}

/// Why a server's bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A message header announced more than [`READ_LIMIT`] bytes.
    #[error("the server announced a message of {len} bytes (type {}), more than the {READ_LIMIT} bytes pg-status accepts in one poll", show_tag(*.tag))]
    MessageTooLong {
        /// The message type byte.
        tag: u8,
        /// The length field of its header (which counts itself).
        len: u32,
    },
    /// A message header announced fewer than the four bytes of its own length field.
    #[error("the server sent a malformed message header (type {}, length {len}): this is not a PostgreSQL server", show_tag(*.tag))]
    BadLength {
        /// The message type byte.
        tag: u8,
        /// The length field.
        len: u32,
    },
    /// One poll read more than [`READ_LIMIT`] bytes in all.
    #[error("the server sent more than the {READ_LIMIT} bytes pg-status accepts in one poll")]
    TooMuchData,
    /// The server asked for an authentication method that `pg_status__require_auth` does not allow.
    #[error("the server asked for {} authentication, which pg_status__require_auth={allowed} does not allow", .method.as_str())]
    AuthNotAllowed {
        /// What the server asked for.
        method: AuthMethod,
        /// What is allowed.
        allowed: AuthMethods,
    },
}

/// A message type byte as a character when it is printable, else as a number.
fn show_tag(tag: u8) -> String {
    if tag.is_ascii_graphic() {
        format!("'{}'", tag as char)
    } else {
        format!("0x{tag:02x}")
    }
}

/// Where the reader is in the stream of backend messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Collecting the 5-byte header (type byte and length) of the next message.
    Header { have: usize, bytes: [u8; 5] },
    /// Inside an authentication request, collecting its 4-byte method code.
    AuthCode { have: usize, bytes: [u8; 4], rest: usize },
    /// Skipping the rest of a message body.
    Body { rest: usize },
}

impl Default for Framing {
    fn default() -> Framing {
        Framing::Header { have: 0, bytes: [0; 5] }
    }
}

/// Frames the backend messages of one session and checks each header as soon as it is complete.
#[derive(Debug, Clone)]
pub struct MessageStream {
    framing: Framing,
    allowed: AuthMethods,
    /// An authentication request was seen (so `AuthenticationOk` is not a session without authentication).
    asked: bool,
}

impl MessageStream {
    /// A stream at the start of the server's first message, allowing `allowed` authentication methods.
    pub fn new(allowed: AuthMethods) -> MessageStream {
        MessageStream { framing: Framing::default(), allowed, asked: false }
    }

    /// Takes the next bytes the server sent, in order. An error is final: the session must be closed.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), WireError> {
        while !bytes.is_empty() {
            match &mut self.framing {
                Framing::Header { have, bytes: header } => {
                    let take = (5 - *have).min(bytes.len());
                    header[*have..*have + take].copy_from_slice(&bytes[..take]);
                    *have += take;
                    bytes = &bytes[take..];
                    if *have == 5 {
                        let (tag, len) = (header[0], u32::from_be_bytes([header[1], header[2], header[3], header[4]]));
                        self.framing = self.start_message(tag, len)?;
                    }
                }
                Framing::AuthCode { have, bytes: code, rest } => {
                    let take = (4 - *have).min(bytes.len());
                    code[*have..*have + take].copy_from_slice(&bytes[..take]);
                    *have += take;
                    bytes = &bytes[take..];
                    if *have == 4 {
                        let (rest, code) = (*rest, u32::from_be_bytes(*code));
                        self.check_auth(code)?;
                        self.framing = Framing::Body { rest };
                    }
                }
                Framing::Body { rest } => {
                    let take = (*rest).min(bytes.len());
                    *rest -= take;
                    bytes = &bytes[take..];
                }
            }
            if self.framing == (Framing::Body { rest: 0 }) {
                self.framing = Framing::default();
            }
        }
        Ok(())
    }

    /// Checks a complete header and says what follows it.
    fn start_message(&self, tag: u8, len: u32) -> Result<Framing, WireError> {
        if len < 4 {
            return Err(WireError::BadLength { tag, len });
        }
        let body = len as usize - 4;
        if len as usize > READ_LIMIT {
            return Err(WireError::MessageTooLong { tag, len });
        }
        // 'R' is an authentication request; its first four bytes say which method (0 is "you are in").
        if tag == b'R' && body >= 4 {
            return Ok(Framing::AuthCode { have: 0, bytes: [0; 4], rest: body - 4 });
        }
        Ok(Framing::Body { rest: body })
    }

    /// Checks an authentication request's method code against what is allowed.
    fn check_auth(&mut self, code: u32) -> Result<(), WireError> {
        let method = match code {
            // AuthenticationOk: fine after a request; without one, the session needed no authentication.
            0 if self.asked => return Ok(()),
            0 => AuthMethod::None,
            3 => AuthMethod::Password,
            5 => AuthMethod::Md5,
            10 => AuthMethod::ScramSha256,
            // SASLContinue and SASLFinal belong to the SCRAM exchange that code 10 started.
            11 | 12 if self.asked => return Ok(()),
            // Kerberos, GSS, SSPI and anything unknown: the client library refuses them itself.
            _ => return Ok(()),
        };
        self.asked = true;
        if self.allowed.allows(method) {
            Ok(())
        } else {
            Err(WireError::AuthNotAllowed { method, allowed: self.allowed })
        }
    }
}

/// What the bytes on a connection's socket are, as far as the checks are concerned.
#[derive(Debug, Clone)]
enum Phase {
    /// Nothing written yet: the first message says whether TLS is asked for.
    Opening { have: usize, bytes: [u8; 8] },
    /// An SSLRequest went out; the next byte read is the server's one-byte answer.
    SslAnswer,
    /// TLS runs on this socket: the messages are checked after decryption, by another [`MessageStream`].
    Tls,
    /// Plain PostgreSQL messages.
    Plain(MessageStream),
}

/// The checks on one connection's socket: what the client writes tells whether TLS is negotiated, and the
/// plain messages the server sends are framed and checked by a [`MessageStream`].
#[derive(Debug, Clone)]
pub struct ServerStream {
    phase: Phase,
    allowed: AuthMethods,
}

impl ServerStream {
    /// The checks for a new connection, allowing `allowed` authentication methods.
    pub fn new(allowed: AuthMethods) -> ServerStream {
        ServerStream { phase: Phase::Opening { have: 0, bytes: [0; 8] }, allowed }
    }

    /// Takes bytes the client wrote, in order (only the first message matters).
    pub fn wrote(&mut self, bytes: &[u8]) {
        if let Phase::Opening { have, bytes: first } = &mut self.phase {
            let take = (8 - *have).min(bytes.len());
            first[*have..*have + take].copy_from_slice(&bytes[..take]);
            *have += take;
            if *have == 8 {
                let code = u32::from_be_bytes([first[4], first[5], first[6], first[7]]);
                self.phase = if code == SSL_REQUEST_CODE {
                    Phase::SslAnswer
                } else {
                    Phase::Plain(MessageStream::new(self.allowed))
                };
            }
        }
    }

    /// Takes bytes the server sent, in order. An error is final: the connection must be closed.
    pub fn read(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        let mut bytes = bytes;
        if let Phase::SslAnswer | Phase::Opening { .. } = self.phase {
            let Some((&first, rest)) = bytes.split_first() else { return Ok(()) };
            match (&self.phase, first) {
                (Phase::SslAnswer, b'S') => {
                    self.phase = Phase::Tls;
                    return Ok(());
                }
                (Phase::SslAnswer, b'N') => {
                    self.phase = Phase::Plain(MessageStream::new(self.allowed));
                    bytes = rest;
                }
                // An error message instead of the answer, or a server speaking before it was asked.
                _ => self.phase = Phase::Plain(MessageStream::new(self.allowed)),
            }
        }
        match &mut self.phase {
            Phase::Plain(messages) => messages.feed(bytes),
            _ => Ok(()),
        }
    }

    /// Whether TLS was negotiated (the plain messages are then checked after decryption).
    pub fn is_tls(&self) -> bool {
        matches!(self.phase, Phase::Tls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn auth(code: u32) -> Vec<u8> {
        message(b'R', &code.to_be_bytes())
    }

    const STARTUP: [u8; 8] = [0, 0, 0, 8, 0, 3, 0, 0];
    const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

    #[test]
    fn an_ordinary_session_passes_in_pieces_of_any_size() {
        let mut stream: Vec<u8> = Vec::new();
        for part in [auth(10), auth(11), auth(12), auth(0), message(b'S', b"server_version\x0015\x00")] {
            stream.extend(part);
        }
        stream.extend(message(b'Z', b"I"));
        for chunk in [1, 2, 3, 7, stream.len()] {
            let mut checks = ServerStream::new(AuthMethods::only(&[AuthMethod::ScramSha256]));
            checks.wrote(&STARTUP);
            for piece in stream.chunks(chunk) {
                checks.read(piece).expect("an ordinary session passes");
            }
        }
    }

    #[test]
    fn a_huge_announced_message_is_refused_at_its_header() {
        let mut checks = ServerStream::new(AuthMethods::ANY);
        checks.wrote(&STARTUP);
        let header = [b'R', 0x7f, 0xff, 0xff, 0xf0];
        assert_eq!(checks.read(&header), Err(WireError::MessageTooLong { tag: b'R', len: 0x7fff_fff0 }));
    }

    #[test]
    fn zeros_are_not_a_message() {
        let mut checks = ServerStream::new(AuthMethods::ANY);
        checks.wrote(&STARTUP);
        assert_eq!(checks.read(&[0; 16]), Err(WireError::BadLength { tag: 0, len: 0 }));
    }

    #[test]
    fn cleartext_is_refused_when_only_scram_is_allowed() {
        let mut checks = ServerStream::new(AuthMethods::only(&[AuthMethod::ScramSha256]));
        checks.wrote(&STARTUP);
        let err = checks.read(&auth(3)).expect_err("cleartext refused");
        assert_eq!(
            err.to_string(),
            "the server asked for password authentication, which pg_status__require_auth=scram-sha-256 does not allow"
        );
        let mut checks = ServerStream::new(AuthMethods::only(&[AuthMethod::ScramSha256]));
        checks.wrote(&STARTUP);
        assert!(checks.read(&auth(5)).is_err(), "md5 refused");
    }

    #[test]
    fn a_session_without_authentication_needs_none() {
        let mut checks = ServerStream::new(AuthMethods::only(&[AuthMethod::ScramSha256]));
        checks.wrote(&STARTUP);
        assert_eq!(
            checks.read(&auth(0)),
            Err(WireError::AuthNotAllowed {
                method: AuthMethod::None,
                allowed: AuthMethods::only(&[AuthMethod::ScramSha256])
            })
        );
        let mut checks = ServerStream::new(AuthMethods::only(&[AuthMethod::None]));
        checks.wrote(&STARTUP);
        assert_eq!(checks.read(&auth(0)), Ok(()));
    }

    #[test]
    fn after_tls_is_agreed_the_socket_carries_records_not_messages() {
        let mut checks = ServerStream::new(AuthMethods::ANY);
        checks.wrote(&SSL_REQUEST);
        checks.read(b"S").expect("answer");
        assert!(checks.is_tls());
        // A TLS record header would be a malformed message; it is not checked here.
        checks.read(&[0x16, 0x03, 0x03, 0x00, 0x40]).expect("records pass");
    }

    #[test]
    fn a_declined_tls_request_is_followed_by_plain_messages() {
        let mut checks = ServerStream::new(AuthMethods::ANY);
        checks.wrote(&SSL_REQUEST);
        let mut answer = b"N".to_vec();
        answer.extend([b'R', 0x7f, 0xff, 0xff, 0xf0]);
        assert!(matches!(checks.read(&answer), Err(WireError::MessageTooLong { .. })));
    }

    #[test]
    fn a_message_of_exactly_the_limit_is_accepted() {
        let mut checks = MessageStream::new(AuthMethods::ANY);
        let len = READ_LIMIT as u32;
        checks.feed(&[b'N', (len >> 24) as u8, (len >> 16) as u8, (len >> 8) as u8, len as u8]).expect("at the limit");
        let mut checks = MessageStream::new(AuthMethods::ANY);
        let len = len + 1;
        assert!(checks.feed(&[b'N', (len >> 24) as u8, (len >> 16) as u8, (len >> 8) as u8, len as u8]).is_err());
    }
}
