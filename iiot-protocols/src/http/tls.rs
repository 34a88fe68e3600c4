//! The rustls client configuration: trust roots, client identity, ALPN.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{debug, warn};

use super::config::{CaPolicy, HttpFetchConfig, PemSource};
use super::error::{HttpConfigError, PemProblem, PemRole};

fn bad(role: PemRole, source: &PemSource, problem: PemProblem) -> HttpConfigError {
    HttpConfigError::BadPem {
        role,
        path: source.as_path().map(ToOwned::to_owned),
        problem,
    }
}

fn bytes(role: PemRole, source: &PemSource) -> Result<Vec<u8>, HttpConfigError> {
    match source {
        PemSource::Path(path) => std::fs::read(path).map_err(|e| HttpConfigError::Unreadable {
            role,
            path: path.clone(),
            source: e,
        }),
        PemSource::Pem(text) => Ok(text.as_bytes().to_vec()),
    }
}

/// Every certificate of a PEM input; at least one.
fn certs(
    role: PemRole,
    source: &PemSource,
) -> Result<Vec<CertificateDer<'static>>, HttpConfigError> {
    let pem = bytes(role, source)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad(role, source, PemProblem::NotPem))?;
    if certs.is_empty() {
        return Err(bad(role, source, PemProblem::NoCertificate));
    }
    Ok(certs)
}

/// The first private key of a PEM input.
fn key(source: &PemSource) -> Result<PrivateKeyDer<'static>, HttpConfigError> {
    let role = PemRole::ClientKey;
    let pem = bytes(role, source)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => bad(role, source, PemProblem::NoPrivateKey),
        _ => bad(role, source, PemProblem::NotPem),
    })
}

fn system_roots(roots: &mut rustls::RootCertStore) {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        warn!(error = %e, "cannot load some of the system's trust roots");
    }
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if ignored > 0 {
        debug!(ignored, "system trust roots rustls cannot use");
    }
    if added == 0 {
        warn!("no system trust roots: https:// servers can only be verified with a configured CA");
    }
}

/// The rustls configuration for reqwest (aws-lc-rs, the workspace's provider).
pub(crate) fn client_config(
    config: &HttpFetchConfig,
) -> Result<rustls::ClientConfig, HttpConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    for source in &config.ca {
        for ca in certs(PemRole::Ca, source)? {
            roots.add(ca).map_err(|e| HttpConfigError::Tls {
                role: PemRole::Ca,
                source: Box::new(e),
            })?;
        }
    }
    if config.ca.is_empty() || config.ca_policy == CaPolicy::Extend {
        system_roots(&mut roots);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpConfigError::Client(Box::new(e)))?
        .with_root_certificates(roots);
    let mut tls = match (&config.client_cert, &config.client_key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key_source)) => {
            let chain = certs(PemRole::ClientCertificate, cert)?;
            let key = key(key_source)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| HttpConfigError::Tls {
                    role: PemRole::ClientKey,
                    source: Box::new(e),
                })?
        }
        _ => return Err(HttpConfigError::IncompleteIdentity),
    };
    // reqwest leaves ALPN to a preconfigured TLS; it speaks HTTP/1.1 only here.
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}
