//! TLS to PostgreSQL with rustls (ring provider), configured by libpq's variables and following libpq's
//! meaning of `PGSSLMODE`.
//!
//! | `PGSSLMODE` | what pg-status does |
//! |---|---|
//! | `disable` | plain TCP only |
//! | `allow` | plain first; when the server refuses the plain session (an authorization error such as a `hostssl`-only `pg_hba.conf`), a second connection with TLS |
//! | `prefer` (default) | TLS when the server offers it, plain when it does not or when the TLS handshake fails (a second connection) |
//! | `require` | TLS or nothing |
//! | `verify-ca` | TLS; the server's chain must lead to a root in `PGSSLROOTCERT`; the host name is not checked |
//! | `verify-full` | as `verify-ca`, and the certificate must name the host (DNS name or IP address) as written in `pg_status__hosts` |
//!
//! In `allow`, `prefer` and `require` the certificate is not checked, unless `PGSSLROOTCERT` is given: then
//! the chain is checked as in `verify-ca` (libpq does the same when its root file exists).
//!
//! `PGSSLCERT` and `PGSSLKEY` (PEM) give a client certificate for mutual TLS in every mode that uses TLS.
//! `PGSSLCRL` (PEM, one or more CRLs) is checked whenever the server's chain is verified: the server's own
//! certificate must be covered by a CRL of its issuer and not be revoked (OpenSSL's default CRL check, which
//! libpq uses). Even without certificate checks the server must prove it holds the key of the certificate it
//! presents. Channel binding (`SCRAM-SHA-256-PLUS`) is not offered: SCRAM authentication works as with a
//! client that does not support it.
//!
//! Every file is read and parsed at start-up, so a missing, unreadable or malformed file stops the program
//! with one line naming the variable and the path.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use pg_status_core::config::{SslMode, TlsConfig};
use pg_status_core::wire::MessageStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{self, CryptoProvider};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, TlsConnect};

use crate::clock::LocalBoxFuture;
use crate::poller::guarded::{check_decrypted, Guard};

/// Why the TLS settings cannot be used; `Display` is the one line printed before exiting with status 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// A file named by a variable is missing, unreadable or not what the variable needs.
    #[error("{var}={path:?}: {reason}")]
    File {
        /// The variable (`PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`, `PGSSLCRL`).
        var: &'static str,
        /// The path it holds.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The mode needs a file that was not given.
    #[error("PGSSLMODE={mode:?}: {reason}")]
    Mode {
        /// The mode as written.
        mode: &'static str,
        /// What is missing.
        reason: String,
    },
}

/// How connections to PostgreSQL use TLS: the mode and, when it may use TLS, the rustls configuration.
/// Cheap to clone (the configuration is shared).
#[derive(Clone)]
pub struct PgTls {
    mode: SslMode,
    /// `None` for `disable`, or when the settings could not be loaded (see `broken`).
    client: Option<Arc<ClientConfig>>,
    /// Why the settings could not be loaded: every connection then fails with this text.
    broken: Option<Arc<str>>,
}

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTls").field("mode", &self.mode.as_str()).field("broken", &self.broken).finish()
    }
}

impl PgTls {
    /// Reads and checks every file the settings name, or libpq's default file in `~/.postgresql` where they
    /// name none ([`TlsConfig::with_default_files`]), and builds the TLS configuration.
    pub fn load(settings: &TlsConfig) -> Result<PgTls, TlsError> {
        let mode = settings.mode;
        if mode == SslMode::Disable {
            return Ok(PgTls { mode, client: None, broken: None });
        }
        // Whatever is there counts, as for libpq's stat(): a directory or a FIFO then fails to load, loudly,
        // instead of being passed over.
        let settings = &settings.with_default_files(|path| std::fs::metadata(path).is_ok());
        let provider = Arc::new(crypto::ring::default_provider());
        let roots = settings.root_cert.as_deref().map(|path| load_roots(path)).transpose()?;
        let crls = settings.crl.as_deref().map(|path| load_crls(path)).transpose()?;
        let verifier: Arc<dyn ServerCertVerifier> = match (mode, roots) {
            (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
                let default = match &settings.default_dir {
                    Some(dir) => format!("or {dir}/root.crt hold them"),
                    None => "HOME is not set, so there is no ~/.postgresql/root.crt".to_owned(),
                };
                return Err(TlsError::Mode {
                    mode: mode.as_str(),
                    reason: format!("PGSSLROOTCERT must name a PEM file of trusted root certificates ({default})"),
                });
            }
            // libpq checks the chain in every TLS mode once it has root certificates.
            (_, Some((path, roots))) => {
                let mut builder = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                if let Some((_, crls)) = crls {
                    // OpenSSL's X509_V_FLAG_CRL_CHECK, which libpq sets: the server's certificate only, and a
                    // missing CRL for its issuer is an error.
                    builder = builder.with_crls(crls).only_check_end_entity_revocation();
                }
                let webpki = builder.build().map_err(|e| TlsError::File {
                    var: "PGSSLROOTCERT",
                    path: path.to_owned(),
                    reason: format!("cannot verify servers with these roots: {e}"),
                })?;
                if mode == SslMode::VerifyFull {
                    webpki
                } else {
                    Arc::new(NameUnchecked { chain: Some(webpki), provider: provider.clone() })
                }
            }
            // allow, prefer, and require without root certificates: no certificate checks (as libpq).
            (_, None) => Arc::new(NameUnchecked { chain: None, provider: provider.clone() }),
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Mode { mode: mode.as_str(), reason: format!("no TLS version available: {e}") })?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let client = match (&settings.cert, &settings.key) {
            (Some(cert_path), Some(key_path)) => {
                let certs = load_certs("PGSSLCERT", cert_path)?;
                let key = load_key(key_path)?;
                builder.with_client_auth_cert(certs, key).map_err(|e| TlsError::File {
                    var: "PGSSLKEY",
                    path: key_path.clone(),
                    reason: format!("cannot be used with PGSSLCERT={cert_path:?}: {e}"),
                })?
            }
            // The configuration refuses one without the other.
            _ => builder.with_no_client_auth(),
        };
        Ok(PgTls { mode, client: Some(Arc::new(client)), broken: None })
    }

    /// Plain connections only (`PGSSLMODE=disable`).
    pub fn disabled() -> PgTls {
        PgTls { mode: SslMode::Disable, client: None, broken: None }
    }

    /// Settings that could not be loaded: every connection attempt fails with `error`, so a caller that did
    /// not check them at start-up still reports the problem on every poll instead of connecting without TLS.
    pub fn broken(error: &TlsError) -> PgTls {
        PgTls { mode: SslMode::Require, client: None, broken: Some(Arc::from(error.to_string())) }
    }

    /// The configured mode.
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// Why connections cannot be made, when the settings are broken.
    pub(crate) fn broken_reason(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// The handshake for one connection to `host` (a DNS name or an IP address): the name is what
    /// `verify-full` checks the certificate against, and what is sent as SNI when it is a DNS name.
    /// The messages inside the TLS session are checked with `guard`, as the plain ones are.
    pub(crate) fn handshake(&self, host: &str, guard: Rc<Guard>) -> Handshake {
        let name = match ServerName::try_from(host.to_owned()) {
            Ok(name) => Ok(name),
            Err(_) => Err(format!("{host:?} is neither a DNS name nor an IP address usable for TLS")),
        };
        Handshake { client: self.client.clone(), name, checks_name: self.mode == SslMode::VerifyFull, guard }
    }
}

/// The largest certificate, key or CRL file pg-status reads: far above any real one (a CRL of a large CA is a
/// few hundred KiB), and small enough that `/dev/zero` or a huge file cannot take the memory.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Reads a regular file named by `var`, of at most [`MAX_FILE_BYTES`]; the error names the variable and the
/// path. A FIFO or a device is refused before it is read, so it can neither hang start-up nor fill memory.
fn read(var: &'static str, path: &str) -> Result<Vec<u8>, TlsError> {
    use std::io::Read as _;
    let fail = |reason: String| TlsError::File { var, path: path.to_owned(), reason };
    // Opening a FIFO for reading blocks until a writer appears, so look at what the path is first.
    let kind = std::fs::metadata(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    if !kind.is_file() {
        return Err(fail("not a regular file".to_owned()));
    }
    let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let size = file.metadata().map_err(|e| fail(format!("cannot read: {e}")))?.len();
    if size > MAX_FILE_BYTES {
        return Err(fail(format!("the file has {size} bytes, more than the {MAX_FILE_BYTES} pg-status reads")));
    }
    let mut bytes = Vec::new();
    // The file may grow between the check and the read: read one byte past the limit at most.
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| fail(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(fail(format!("the file has more than the {MAX_FILE_BYTES} bytes pg-status reads")));
    }
    Ok(bytes)
}

fn load_certs(var: &'static str, path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(var, path)?;
    let fail = |reason: String| TlsError::File { var, path: path.to_owned(), reason };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("not a PEM file of certificates: {e}")))?;
    if certs.is_empty() {
        return Err(fail("no PEM certificate (BEGIN CERTIFICATE) in the file".to_owned()));
    }
    Ok(certs)
}

fn load_roots(path: &str) -> Result<(&str, RootCertStore), TlsError> {
    if path == "system" {
        return Err(TlsError::File {
            var: "PGSSLROOTCERT",
            path: path.to_owned(),
            reason: "the system's certificate store is not supported; give a PEM file of root certificates".into(),
        });
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(load_certs("PGSSLROOTCERT", path)?);
    if added == 0 {
        return Err(TlsError::File {
            var: "PGSSLROOTCERT",
            path: path.to_owned(),
            reason: format!("none of its {ignored} certificates can be used as a trusted root"),
        });
    }
    Ok((path, roots))
}

fn load_key(path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read("PGSSLKEY", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::File {
        var: "PGSSLKEY",
        path: path.to_owned(),
        reason: format!("no PEM private key (PKCS#8, PKCS#1 or SEC1) in the file: {e}"),
    })
}

fn load_crls(path: &str) -> Result<(&str, Vec<CertificateRevocationListDer<'static>>), TlsError> {
    let bytes = read("PGSSLCRL", path)?;
    let fail = |reason: String| TlsError::File { var: "PGSSLCRL", path: path.to_owned(), reason };
    let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("not a PEM file of CRLs: {e}")))?;
    if crls.is_empty() {
        return Err(fail("no PEM revocation list (BEGIN X509 CRL) in the file".to_owned()));
    }
    Ok((path, crls))
}

/// Every mode but `verify-full`: the server's name is never checked. With root certificates (`verify-ca`,
/// and the weaker modes once roots are given) the chain, validity and revocation are; without them
/// (`allow`, `prefer`, `require`) nothing is. Either way the server must prove it holds the certificate's
/// key: the handshake signatures are verified.
#[derive(Debug)]
struct NameUnchecked {
    /// The chain check, when there are root certificates.
    chain: Option<Arc<WebPkiServerVerifier>>,
    /// Its signature algorithms verify the handshake.
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NameUnchecked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            // webpki checks the name only after the chain, validity and revocation have passed.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS handshake of one connection, handed to tokio-postgres, which runs it after the server agreed to
/// TLS (and never when the session's mode is `disable`).
pub struct Handshake {
    client: Option<Arc<ClientConfig>>,
    name: Result<ServerName<'static>, String>,
    /// `verify-full`: the name must be usable.
    checks_name: bool,
    /// The wire checks of the connection, applied to the decrypted messages.
    guard: Rc<Guard>,
}

/// A failed TLS handshake (as opposed to a server that declines TLS), so `prefer` can retry without TLS.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct HandshakeError(#[from] io::Error);

impl HandshakeError {
    /// Whether tokio-postgres failed because a TLS handshake of ours failed.
    pub(crate) fn caused(error: &tokio_postgres::Error) -> bool {
        std::error::Error::source(error).is_some_and(|cause| cause.is::<HandshakeError>())
    }
}

impl<S> TlsConnect<S> for Handshake
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    type Stream = TlsStream<S>;
    type Error = HandshakeError;
    type Future = LocalBoxFuture<Result<TlsStream<S>, HandshakeError>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let Some(client) = self.client else {
                return Err(io::Error::other("TLS is not configured (PGSSLMODE=disable)").into());
            };
            let name = match self.name {
                Ok(name) => name,
                // Only verify-full needs the name; elsewhere any name will do (no SNI for an IP address).
                Err(_) if !self.checks_name => ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into()),
                Err(reason) => return Err(io::Error::new(io::ErrorKind::InvalidInput, reason).into()),
            };
            let stream = tokio_rustls::TlsConnector::from(client).connect(name, stream).await?;
            let messages = self.guard.messages();
            Ok(TlsStream(Box::new(TlsSession { stream, guard: self.guard, messages })))
        })
    }
}

/// A TLS session over the runtime's stream, as tokio-postgres wants it.
///
/// Boxed: tokio-postgres keeps `MaybeTlsStream<Stream, TlsStream>` in every connection, and rustls's client
/// state inline would make every plain connection several KiB larger too (measured: 3 KiB per host).
pub struct TlsStream<S>(Box<TlsSession<S>>);

/// The rustls session and the checks of the messages it carries.
struct TlsSession<S> {
    stream: tokio_rustls::client::TlsStream<S>,
    guard: Rc<Guard>,
    messages: MessageStream,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let session = &mut *self.0;
        let start = buf.filled().len();
        std::task::ready!(Pin::new(&mut session.stream).poll_read(cx, buf))?;
        Poll::Ready(check_decrypted(&session.guard, &mut session.messages, buf, start))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0.stream).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for TlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(mode: SslMode) -> TlsConfig {
        TlsConfig { mode, root_cert: None, cert: None, key: None, crl: None, default_dir: None }
    }

    #[test]
    fn modes_without_files_load() {
        for mode in [SslMode::Disable, SslMode::Allow, SslMode::Prefer, SslMode::Require] {
            let tls = PgTls::load(&settings(mode)).expect("loads");
            assert_eq!(tls.mode(), mode);
            assert_eq!(tls.client.is_some(), mode != SslMode::Disable);
        }
    }

    #[test]
    fn verifying_modes_need_roots() {
        for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
            let error = PgTls::load(&settings(mode)).expect_err("refused");
            assert!(error.to_string().starts_with(&format!("PGSSLMODE=\"{}\": PGSSLROOTCERT", mode.as_str())));
        }
    }

    #[test]
    fn bad_files_name_the_variable_and_path() {
        let dir = std::env::temp_dir().join(format!("pg-status-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").expect("write");
        let garbage = garbage.to_string_lossy().into_owned();
        let missing = dir.join("missing.pem").to_string_lossy().into_owned();
        let cases = [
            (
                TlsConfig { root_cert: Some(missing.clone()), ..settings(SslMode::VerifyFull) },
                "PGSSLROOTCERT",
                &missing,
            ),
            (TlsConfig { root_cert: Some(garbage.clone()), ..settings(SslMode::VerifyCa) }, "PGSSLROOTCERT", &garbage),
            (TlsConfig { crl: Some(garbage.clone()), ..settings(SslMode::Prefer) }, "PGSSLCRL", &garbage),
            (
                TlsConfig { cert: Some(garbage.clone()), key: Some(garbage.clone()), ..settings(SslMode::Require) },
                "PGSSLCERT",
                &garbage,
            ),
        ];
        for (config, var, path) in cases {
            let line = PgTls::load(&config).expect_err("refused").to_string();
            assert!(line.starts_with(&format!("{var}={path:?}: ")), "{line}");
            assert!(!line.contains('\n'), "{line}");
        }
        let system = TlsConfig { root_cert: Some("system".into()), ..settings(SslMode::VerifyFull) };
        assert!(PgTls::load(&system).expect_err("refused").to_string().contains("not supported"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
