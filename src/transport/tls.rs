//! TLS termination: `https://` and `wss://` with rustls, from PEM files.

use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{key}: {reason}")]
    Pem {
        /// Configuration key.
        key: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The certificate and key do not form a usable configuration.
    #[error("tls: {0}")]
    Config(String),
}

/// The acceptor for the configured certificate, or `None` without TLS. With `http2`, ALPN offers
/// `h2` before `http/1.1`: API clients that offer both get HTTP/2, while WebSocket clients
/// (browsers offer only `http/1.1` for a WebSocket; most libraries offer nothing) stay on HTTP/1.1,
/// where the upgrade lives.
pub fn acceptor(config: &TlsConfig, http2: bool) -> Result<Option<TlsAcceptor>, TlsError> {
    let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) else { return Ok(None) };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect())
        .map_err(|e| TlsError::Pem { key: "tls.cert_file", reason: format!("{}: {e}", cert_file.display()) })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            key: "tls.cert_file",
            reason: format!("{} holds no certificate", cert_file.display()),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| TlsError::Pem { key: "tls.key_file", reason: format!("{}: {e}", key_file.display()) })?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    server.alpn_protocols = if http2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}
