//! TLS from the router to the shards (`backend.tls = "verify-full"`):
//! SSLRequest, then a rustls handshake that checks the shard's certificate
//! against `backend.tls_ca_file` and the shard's host name or IP address
//! (libpq's `sslmode=verify-full`; PostgreSQL protocol docs §55.2.10).

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

/// SSLRequest code (PostgreSQL protocol docs §55.7).
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// The client TLS configuration for shards; equal when built from the same
/// CA file contents (so a reload with an unchanged file keeps the pools).
#[derive(Clone)]
pub struct BackendTls {
    config: Arc<rustls::ClientConfig>,
    ca_pem: Arc<[u8]>,
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackendTls(verify-full)")
    }
}

impl PartialEq for BackendTls {
    fn eq(&self, other: &Self) -> bool {
        self.ca_pem == other.ca_pem
    }
}

impl Eq for BackendTls {}

impl BackendTls {
    /// Trusts the certificates in the PEM file `ca_file`.
    ///
    /// Errors: a message naming the file (unreadable, no certificate, or a
    /// certificate rustls cannot use as a trust anchor).
    pub fn load(ca_file: &std::path::Path) -> Result<BackendTls, String> {
        let p = ca_file.display();
        let pem = std::fs::read(ca_file).map_err(|e| format!("backend.tls_ca_file {p}: {e}"))?;
        let mut roots = rustls::RootCertStore::empty();
        let mut n = 0;
        for c in CertificateDer::pem_slice_iter(&pem) {
            let c = c.map_err(|e| format!("backend.tls_ca_file {p}: {e}"))?;
            roots
                .add(c)
                .map_err(|e| format!("backend.tls_ca_file {p}: {e}"))?;
            n += 1;
        }
        if n == 0 {
            return Err(format!("backend.tls_ca_file {p}: no CERTIFICATE block"));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("backend TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(BackendTls {
            config: Arc::new(config),
            ca_pem: pem.into(),
        })
    }

    /// Sends SSLRequest on `stream` and runs the handshake, verifying the
    /// certificate for `host`. Returns the encrypted stream.
    ///
    /// Errors: a message — the shard declined TLS (`ssl = off`), I/O, or
    /// a certificate that does not verify.
    pub async fn connect(
        &self,
        mut stream: TcpStream,
        host: &str,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
        stream
            .write_all(&SSL_REQUEST)
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = [0u8; 1];
        stream
            .read_exact(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        if answer[0] != b'S' {
            return Err(
                "the shard does not accept TLS (ssl = off?) but backend.tls is verify-full".into(),
            );
        }
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("invalid host name {host:?} for TLS: {e}"))?;
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))
    }
}
