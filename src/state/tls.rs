//! Client-facing TLS with rustls (ring provider): the server configuration
//! built from `[tls]` PEM files, swapped on SIGHUP, and the handshake that
//! follows an SSLRequest answered `S` (PostgreSQL protocol docs §55.2.10).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// Errors building the TLS configuration; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds no usable item.
    #[error("tls: cannot load {what} from {path}: {message}")]
    Pem {
        /// "certificate" or "private key".
        what: &'static str,
        /// File path.
        path: String,
        /// Cause.
        message: String,
    },
    /// rustls refused the certificate/key pair (e.g. the key does not
    /// match the certificate).
    #[error("tls: certificate {cert} / key {key} refused: {source}")]
    Rustls {
        /// Certificate path.
        cert: String,
        /// Key path.
        key: String,
        /// Cause.
        #[source]
        source: rustls::Error,
    },
}

/// What the front end needs per connection: the acceptor (None = TLS off)
/// and whether plaintext clients are refused.
#[derive(Clone)]
pub struct TlsSettings {
    /// Handshakes with the configured certificate.
    pub acceptor: Option<tokio_rustls::TlsAcceptor>,
    /// `tls.require`.
    pub require: bool,
}

impl TlsSettings {
    /// TLS off.
    pub fn disabled() -> TlsSettings {
        TlsSettings {
            acceptor: None,
            require: false,
        }
    }

    /// Reads the certificate chain and key named by `cfg` (TLS 1.2 and
    /// 1.3, ALPN `postgresql`).
    ///
    /// Errors: [`TlsError`] naming the file that could not be used.
    pub fn load(cfg: &TlsConfig) -> Result<TlsSettings, TlsError> {
        let (Some(cert), Some(key)) = (&cfg.cert_file, &cfg.key_file) else {
            return Ok(TlsSettings::disabled());
        };
        let certs = load_certs(cert)?;
        let key_der = load_key(key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut sc = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key_der))
            .map_err(|source| TlsError::Rustls {
                cert: cert.display().to_string(),
                key: key.display().to_string(),
                source,
            })?;
        sc.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(TlsSettings {
            acceptor: Some(tokio_rustls::TlsAcceptor::from(Arc::new(sc))),
            require: cfg.require,
        })
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::Pem {
        what: "certificate",
        path: path.display().to_string(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        what: "private key",
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        std::fs::write(&cert, "not pem").unwrap();
        std::fs::write(&key, "not pem").unwrap();
        let cfg = TlsConfig {
            cert_file: Some(cert.clone()),
            key_file: Some(key),
            require: false,
        };
        let e = TlsSettings::load(&cfg).err().unwrap().to_string();
        assert!(e.contains("c.pem") && e.contains("certificate"), "{e}");
        assert!(TlsSettings::load(&TlsConfig::default())
            .unwrap()
            .acceptor
            .is_none());
    }
}
