//! rustls client configurations for MQTT over TLS, read from PEM files.

use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// Why a TLS configuration could not be made, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read { what: &'static str, path: String, source: std::io::Error },
    #[error("{what} {path} holds no PEM certificate; expected a file starting with -----BEGIN CERTIFICATE-----")]
    NoCertificate { what: &'static str, path: String },
    #[error("client key {path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: String },
    #[error("{what} {path}: {message}")]
    Invalid { what: &'static str, path: String, message: String },
}

/// Client certificate chain and key files for mutual TLS.
#[derive(Debug, Clone, Copy)]
pub struct ClientIdentity<'a> {
    pub cert_file: &'a Path,
    pub key_file: &'a Path,
}

/// A client configuration trusting the CA in `ca_file`, presenting `identity` if given.
pub fn client_config(ca_file: &Path, identity: Option<ClientIdentity<'_>>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates("CA file", ca_file)? {
        roots.add(certificate).map_err(|e| invalid("CA file", ca_file, e))?;
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("CA file", ca_file, e))?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(identity) => {
            let chain = certificates("client certificate", identity.cert_file)?;
            let key = private_key(identity.key_file)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                let message =
                    format!("{e} (with key {}); a v3 certificate whose key is this one", identity.key_file.display());
                invalid("client certificate", identity.cert_file, message)
            })?
        }
    };
    Ok(Arc::new(config))
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.display().to_string(), source })
}

fn invalid(what: &'static str, path: &Path, error: impl std::fmt::Display) -> TlsError {
    TlsError::Invalid { what, path: path.display().to_string(), message: error.to_string() }
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certificates = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(what, path, e))?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate { what, path: path.display().to_string() });
    }
    Ok(certificates)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("client key", path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| invalid("client key", path, e))?
        .ok_or_else(|| TlsError::NoKey { path: path.display().to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_named_in_the_error() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("ca.crt");
        std::fs::write(&path, "not a certificate").unwrap();
        let error = client_config(&path, None).unwrap_err().to_string();
        assert!(error.contains("ca.crt") && error.contains("no PEM certificate"), "{error}");
        let missing = client_config(&folder.path().join("missing.crt"), None).unwrap_err().to_string();
        assert!(missing.starts_with("cannot read CA file"), "{missing}");
    }
}
