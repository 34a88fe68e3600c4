//! Identity check and rustls client configuration, done before connecting.
//!
//! The guide's rule: the client certificate's CN equals the client id (the device
//! id). A wrong file is reported with its path and the problem, before any socket
//! is opened.

use std::path::Path;
use std::sync::Arc;

use iiot_core::types::Timestamp;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::error::{IdentityError, IdentityProblem};

fn fail(path: &Path, problem: IdentityProblem) -> IdentityError {
    IdentityError {
        path: path.to_owned(),
        problem,
    }
}

fn read(path: &Path) -> Result<Vec<u8>, IdentityError> {
    std::fs::read(path).map_err(|e| fail(path, IdentityProblem::Unreadable(e)))
}

/// Reads every certificate of a PEM file; at least one.
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| fail(path, IdentityProblem::BadPem))?;
    if certs.is_empty() {
        return Err(fail(path, IdentityProblem::NoCertificate));
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file.
pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, IdentityError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => fail(path, IdentityProblem::NoPrivateKey),
        _ => fail(path, IdentityProblem::BadPem),
    })
}

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_unix_nanos(secs.saturating_mul(1_000_000_000).max(0))
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Checks validity period (at `now`) and, when `client_id` is given, that the CN equals it.
pub(crate) fn check_certificate(
    path: &Path,
    der: &CertificateDer<'_>,
    client_id: Option<&str>,
    now: Timestamp,
) -> Result<(), IdentityError> {
    let (_, cert) = X509Certificate::from_der(der.as_ref())
        .map_err(|_| fail(path, IdentityProblem::BadCertificate))?;
    let now_s = now.unix_nanos() / 1_000_000_000;
    let validity = cert.validity();
    let not_before = validity.not_before.timestamp();
    let not_after = validity.not_after.timestamp();
    if now_s < not_before {
        return Err(fail(
            path,
            IdentityProblem::NotYetValid {
                not_before: ts(not_before),
            },
        ));
    }
    if now_s > not_after {
        return Err(fail(
            path,
            IdentityProblem::Expired {
                not_after: ts(not_after),
            },
        ));
    }
    if let Some(client_id) = client_id {
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .ok_or_else(|| fail(path, IdentityProblem::NoCommonName))?;
        if cn != client_id {
            return Err(fail(
                path,
                IdentityProblem::CommonNameMismatch {
                    common_name: cn.to_owned(),
                    client_id: client_id.to_owned(),
                },
            ));
        }
    }
    Ok(())
}

/// Builds the rustls client configuration: the CA file as the only trust anchors
/// and, for mTLS, the client certificate and key after the identity check.
pub(crate) fn client_config(
    ca_path: &Path,
    identity: Option<(&Path, &Path)>,
    client_id: Option<&str>,
) -> Result<Arc<rustls::ClientConfig>, IdentityError> {
    let now = Timestamp::now();
    let mut roots = rustls::RootCertStore::empty();
    for ca in read_certs(ca_path)? {
        check_certificate(ca_path, &ca, None, now)?;
        roots
            .add(ca)
            .map_err(|e| fail(ca_path, IdentityProblem::Tls(Box::new(e))))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(ca_path, IdentityProblem::Tls(Box::new(e))))?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert_path, key_path)) => {
            let chain = read_certs(cert_path)?;
            check_certificate(cert_path, &chain[0], client_id, now)?;
            let key = read_key(key_path)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| fail(key_path, IdentityProblem::Tls(Box::new(e))))?
        }
    };
    Ok(Arc::new(config))
}
