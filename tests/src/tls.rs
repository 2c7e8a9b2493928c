//! TLS for test clusters: a throw-away certificate authority made with the `openssl` command, server and
//! client certificates signed by it, CRLs, and switching a running [`Node`] to `ssl = on` with them.
//!
//! The certificates name the node's loopback address, which is only known once the node runs, so TLS is
//! switched on after the start (`ALTER SYSTEM` and a configuration reload: every `ssl_*` setting is
//! reloadable). The `pg_hba.conf` is this module's own file, named by `hba_file` in the cluster's extra
//! configuration ([`TlsFiles::cluster_conf`]), so tests can demand TLS and client certificates per user.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::IoContext;
use crate::pg::{Node, PgBinaries};
use crate::wait::wait_until_ok;
use crate::{Error, Result};

/// A database user that may log in only over TLS with a client certificate whose CN is its name.
pub const CLIENT_CERT_USER: &str = "tls_client";
/// A database user that may log in only over TLS (any client certificate or none).
pub const TLS_ONLY_USER: &str = "tls_only";
/// The password of both users.
pub const TLS_USER_PASSWORD: &str = "tls-secret";

/// The `pg_hba.conf` of TLS test clusters: the harness's own sessions and replication as usual (plain
/// TCP with a password), [`CLIENT_CERT_USER`] over TLS with a verified client certificate only,
/// [`TLS_ONLY_USER`] over TLS only.
pub const HBA: &str = "\
local all all trust
local replication all trust
hostssl all tls_client 127.0.0.0/8 scram-sha-256 clientcert=verify-full
hostssl all tls_only 127.0.0.0/8 scram-sha-256
host all tls_client 127.0.0.0/8 reject
host all tls_only 127.0.0.0/8 reject
host all all 127.0.0.0/8 scram-sha-256
host replication all 127.0.0.0/8 scram-sha-256
";

/// A directory of certificates and keys (PEM) for one test, deleted on drop.
pub struct TlsFiles {
    dir: tempfile::TempDir,
    bins: PgBinaries,
}

/// A certificate and its private key.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, unencrypted).
    pub key: PathBuf,
}

impl TlsFiles {
    /// A fresh directory, readable by the server's OS user, holding [`HBA`] and a certificate authority
    /// `ca` (see [`TlsFiles::ca`]).
    pub fn new(bins: &PgBinaries) -> Result<TlsFiles> {
        let dir = tempfile::Builder::new()
            .prefix("pg-status-tls-")
            .tempdir()
            .context(|| "creating the TLS directory".into())?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .context(|| format!("chmod {}", dir.path().display()))?;
        let files = TlsFiles { dir, bins: bins.clone() };
        std::fs::write(files.path("pg_hba.conf"), HBA).context(|| "writing pg_hba.conf".into())?;
        files.make_ca("ca")?;
        Ok(files)
    }

    /// A path in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The `postgresql.conf` lines a TLS test cluster starts with: [`HBA`] as its `pg_hba.conf`.
    pub fn cluster_conf(&self) -> Vec<String> {
        vec![format!("hba_file = '{}'", self.path("pg_hba.conf").display())]
    }

    /// The certificate authority made by [`TlsFiles::new`].
    pub fn ca(&self) -> KeyPair {
        KeyPair { cert: self.path("ca.crt"), key: self.path("ca.key") }
    }

    /// Makes a self-signed certificate authority `name` (`name.crt`, `name.key`), with the files an
    /// `openssl ca` needs to issue CRLs.
    pub fn make_ca(&self, name: &str) -> Result<KeyPair> {
        let pair = KeyPair { cert: self.path(&format!("{name}.crt")), key: self.path(&format!("{name}.key")) };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "3",
            "-subj",
            &format!("/CN=pg-status test CA {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &path_str(&pair.key),
            "-out",
            &path_str(&pair.cert),
        ])?;
        std::fs::write(self.path(&format!("{name}.index")), "").context(|| "writing the CA index".into())?;
        std::fs::write(self.path(&format!("{name}.crlnumber")), "01\n").context(|| "writing crlnumber".into())?;
        let conf = format!(
            "[ca]\ndefault_ca = this\n[this]\ndatabase = {index}\ncrlnumber = {crlnumber}\ndefault_md = sha256\n\
             default_crl_days = 3\ncertificate = {cert}\nprivate_key = {key}\n[crl_ext]\n\
             authorityKeyIdentifier = keyid:always\n",
            index = self.path(&format!("{name}.index")).display(),
            crlnumber = self.path(&format!("{name}.crlnumber")).display(),
            cert = pair.cert.display(),
            key = pair.key.display(),
        );
        std::fs::write(self.path(&format!("{name}.cnf")), conf).context(|| "writing the CA config".into())?;
        Ok(pair)
    }

    /// Issues a certificate `name` signed by `ca`: common name `cn`, the extensions `extensions` (OpenSSL
    /// syntax, one per line, e.g. `subjectAltName = IP:127.0.0.2`).
    pub fn issue(&self, ca: &KeyPair, name: &str, cn: &str, extensions: &[&str]) -> Result<KeyPair> {
        let pair = KeyPair { cert: self.path(&format!("{name}.crt")), key: self.path(&format!("{name}.key")) };
        let csr = self.path(&format!("{name}.csr"));
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &path_str(&pair.key),
            "-out",
            &path_str(&csr),
        ])?;
        let ext = self.path(&format!("{name}.ext"));
        let mut text = "basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n".to_owned();
        for line in extensions {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&ext, text).context(|| "writing the extension file".into())?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &path_str(&csr),
            "-CA",
            &path_str(&ca.cert),
            "-CAkey",
            &path_str(&ca.key),
            "-CAcreateserial",
            "-days",
            "2",
            "-sha256",
            "-extfile",
            &path_str(&ext),
            "-out",
            &path_str(&pair.cert),
        ])?;
        Ok(pair)
    }

    /// A server certificate for the IP address `ip` signed by `ca`.
    pub fn server_cert(&self, ca: &KeyPair, name: &str, ip: Ipv4Addr) -> Result<KeyPair> {
        let san = format!("subjectAltName = IP:{ip}");
        self.issue(ca, name, &ip.to_string(), &[&san, "extendedKeyUsage = serverAuth"])
    }

    /// A client certificate for the database user `user` (its common name) signed by `ca`.
    pub fn client_cert(&self, ca: &KeyPair, name: &str, user: &str) -> Result<KeyPair> {
        self.issue(ca, name, user, &["extendedKeyUsage = clientAuth"])
    }

    /// A CRL (PEM) of the authority `ca_name` (made by [`TlsFiles::make_ca`]) revoking `revoked`.
    pub fn crl(&self, ca_name: &str, file: &str, revoked: &[&KeyPair]) -> Result<PathBuf> {
        let conf = path_str(&self.path(&format!("{ca_name}.cnf")));
        for pair in revoked {
            openssl(&["ca", "-config", &conf, "-revoke", &path_str(&pair.cert)])?;
        }
        let out = self.path(file);
        openssl(&["ca", "-config", &conf, "-gencrl", "-crlexts", "crl_ext", "-out", &path_str(&out)])?;
        Ok(out)
    }

    /// Gives a server key to the server's OS user with mode 0600, as PostgreSQL demands.
    fn give_key(&self, key: &Path) -> Result<()> {
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600))
            .context(|| format!("chmod {}", key.display()))?;
        self.bins.give(key)
    }

    /// Switches `node` to `ssl = on` with `server` as its certificate and `client_ca` as the authority its
    /// clients' certificates must come from, and waits until the running server uses them.
    pub fn enable_ssl(&self, node: &Node, server: &KeyPair, client_ca: &KeyPair) -> Result<()> {
        self.give_key(&server.key)?;
        for path in [&server.cert, &client_ca.cert] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
                .context(|| format!("chmod {}", path.display()))?;
        }
        let cert = path_str(&server.cert);
        // One statement at a time: ALTER SYSTEM refuses to run in the implicit transaction of a batch.
        for (name, value) in [
            ("ssl", "on".to_owned()),
            ("ssl_cert_file", cert.clone()),
            ("ssl_key_file", path_str(&server.key)),
            ("ssl_ca_file", path_str(&client_ca.cert)),
        ] {
            node.execute(&format!("ALTER SYSTEM SET {name} = '{value}'"))?;
        }
        node.execute("SELECT pg_reload_conf()")?;
        wait_until_ok(Duration::from_secs(20), &format!("{} to use {cert}", node.name()), || -> Result<()> {
            // A new session sees the reloaded configuration for sure.
            let mut client = node.connect_as(crate::pg::HARNESS_APPLICATION_NAME)?;
            let rows = client
                .simple_query("SELECT current_setting('ssl') || ' ' || current_setting('ssl_cert_file')")
                .map_err(|source| Error::Sql { node: node.name().into(), sql: "SHOW ssl".into(), source })?;
            let value = rows.iter().find_map(|m| match m {
                postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            });
            if value.as_deref() == Some(&format!("on {cert}")) {
                Ok(())
            } else {
                Err(Error::SqlResult { node: node.name().into(), detail: format!("ssl and cert: {value:?}") })
            }
        })
    }

    /// Creates [`CLIENT_CERT_USER`] and [`TLS_ONLY_USER`] on `node` (a master).
    pub fn create_users(&self, node: &Node) -> Result<()> {
        node.execute(&format!(
            "CREATE ROLE {CLIENT_CERT_USER} LOGIN SUPERUSER PASSWORD '{TLS_USER_PASSWORD}'; \
             CREATE ROLE {TLS_ONLY_USER} LOGIN SUPERUSER PASSWORD '{TLS_USER_PASSWORD}'"
        ))
    }
}

/// Whether the `openssl` command is there.
pub fn openssl_available() -> bool {
    Command::new("openssl").arg("version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

fn path_str(path: &Path) -> String {
    path.display().to_string()
}

/// Runs `openssl` with `args`; a failure carries its output.
fn openssl(args: &[&str]) -> Result<()> {
    let line = format!("openssl {}", args.join(" "));
    let out = Command::new("openssl").args(args).stdin(Stdio::null()).output().context(|| format!("running {line}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Command {
            command: line,
            status: out.status.to_string(),
            output: format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        })
    }
}
