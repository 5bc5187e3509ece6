//! TLS for the HTTP API and the sync endpoint (`rustls`, HTTP/1.1 and HTTP/2 by ALPN).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TlsError {
    pub message: String,
}

fn err(message: String) -> TlsError {
    TlsError { message }
}

/// A server configuration from a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or
/// SEC1).
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let read = |p: &Path, what: &str| {
        std::fs::read(p).map_err(|e| {
            err(format!(
                "cannot read the TLS {what} \"{}\": {e}",
                p.display()
            ))
        })
    };
    let cert_pem = read(cert, "certificate")?;
    let key_pem = read(key, "key")?;
    let chain: Vec<_> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            err(format!(
                "the TLS certificate \"{}\" is not valid PEM: {e}",
                cert.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(err(format!(
            "the TLS certificate \"{}\" holds no certificate",
            cert.display()
        )));
    }
    // The first PKCS#8, PKCS#1 or SEC1 section; other sections are skipped.
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => err(format!(
            "the TLS key \"{}\" holds no private key",
            key.display()
        )),
        e => err(format!(
            "the TLS key \"{}\" is not valid PEM: {e}",
            key.display()
        )),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(format!("TLS setup failed: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            err(format!(
                "the TLS certificate and key do not fit together: {e}"
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
