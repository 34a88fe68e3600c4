//! Errors of building the fetcher, and the mapping of HTTP failures onto
//! [`FetchErrorKind`].

use std::error::Error as StdError;
use std::fmt::{self, Write as _};
use std::io;
use std::path::{Path, PathBuf};

use iiot_core::ota::{FetchError, FetchErrorKind};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// Which PEM input of an [`HttpFetchConfig`](super::HttpFetchConfig) a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PemRole {
    /// A trusted CA certificate (`ca`).
    Ca,
    /// The client certificate chain (`client_cert`).
    ClientCertificate,
    /// The client's private key (`client_key`).
    ClientKey,
}

impl fmt::Display for PemRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ca => "CA certificate",
            Self::ClientCertificate => "client certificate",
            Self::ClientKey => "client key",
        })
    }
}

/// What is wrong with a PEM input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum PemProblem {
    /// Not valid PEM.
    #[error("not valid PEM")]
    NotPem,
    /// No certificate in it.
    #[error("no certificate in it")]
    NoCertificate,
    /// No private key in it.
    #[error("no private key in it")]
    NoPrivateKey,
}

/// Why an [`HttpFetch`](super::HttpFetch) cannot be built from its configuration.
/// Nothing secret (token, key material) is in any variant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpConfigError {
    /// A PEM file cannot be read (missing, permissions).
    #[error("cannot read the {role} file {}: {source}", .path.display())]
    Unreadable {
        /// Which input.
        role: PemRole,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A PEM input is not valid or holds nothing of its kind.
    #[error("{role} {}: {problem}", origin(.path.as_deref()))]
    BadPem {
        /// Which input.
        role: PemRole,
        /// The file, or `None` for inline PEM.
        path: Option<PathBuf>,
        /// What is wrong.
        problem: PemProblem,
    },
    /// Only one of `client_cert` and `client_key` is set.
    #[error("a client certificate needs its key and a key its certificate")]
    IncompleteIdentity,
    /// rustls refused a certificate or the key (a CA that is not a usable trust
    /// anchor, a key that does not match its certificate, an unsupported algorithm).
    #[error("{role} rejected by TLS: {source}")]
    Tls {
        /// Which input.
        role: PemRole,
        /// The TLS library's error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The bearer token cannot be sent as an HTTP header value (control
    /// characters, line breaks).
    #[error("the bearer token is not a valid HTTP header value")]
    BadToken,
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] Box<dyn StdError + Send + Sync>),
}

fn origin(path: Option<&Path>) -> String {
    match path {
        Some(p) => p.display().to_string(),
        None => "(inline PEM)".to_owned(),
    }
}

/// The fetch error for an HTTP status other than 200, 206 and a handled 416.
pub(crate) fn status_error(status: StatusCode, headers: &HeaderMap, shown: &str) -> FetchError {
    let code = status.as_u16();
    let kind = match code {
        404 | 410 => FetchErrorKind::NotFound,
        408 | 429 | 500..=599 => FetchErrorKind::Unavailable,
        // A redirect that was not followed, 401, 403 and the other client errors.
        300..=499 => FetchErrorKind::Refused,
        _ => FetchErrorKind::Protocol,
    };
    let mut message = format!("GET {shown}: HTTP {status}");
    if (300..400).contains(&code) {
        message.push_str(" (redirect not followed)");
    }
    if let Some(after) = headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()) {
        // A number of seconds or an HTTP date: short, and nothing secret.
        if after.len() <= 40 {
            let _ = write!(message, " (Retry-After: {after})");
        }
    }
    FetchError::new(kind, message)
}

/// The fetch error for a request that got no response (connect, TLS, redirect).
pub(crate) fn send_error(e: &reqwest::Error, shown: &str) -> FetchError {
    if let Some(tls) = find_rustls(e) {
        return tls_error(tls, shown);
    }
    let kind = if e.is_redirect() {
        FetchErrorKind::Refused
    } else if e.is_builder() {
        FetchErrorKind::Unsupported
    } else {
        // Connect failures, timeouts, resets before the response head.
        FetchErrorKind::Unavailable
    };
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_redirect() {
        "redirect refused"
    } else {
        "request failed"
    };
    FetchError::new(kind, format!("GET {shown}: {what}: {}", chain(e)))
}

/// The fetch error for a body that failed while being read.
pub(crate) fn body_error(e: &reqwest::Error, shown: &str, received: u64) -> FetchError {
    if let Some(tls) = find_rustls(e) {
        return tls_error(tls, shown);
    }
    FetchError::new(
        FetchErrorKind::Unavailable,
        format!(
            "GET {shown}: body failed after {received} bytes: {}",
            chain(e)
        ),
    )
}

fn tls_error(e: &rustls::Error, shown: &str) -> FetchError {
    use rustls::AlertDescription as A;
    let (kind, what) = match e {
        rustls::Error::InvalidCertificate(_)
        | rustls::Error::NoCertificatesPresented
        | rustls::Error::InvalidCertRevocationList(_)
        | rustls::Error::UnsupportedNameType => (
            FetchErrorKind::Refused,
            "TLS certificate verification failed",
        ),
        rustls::Error::AlertReceived(
            A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::AccessDenied
            | A::CertificateRequired,
        ) => (
            FetchErrorKind::Refused,
            "the server refused our TLS client certificate",
        ),
        rustls::Error::AlertReceived(
            A::HandshakeFailure | A::ProtocolVersion | A::InsufficientSecurity,
        )
        | rustls::Error::PeerIncompatible(_) => {
            (FetchErrorKind::Refused, "no TLS parameters in common")
        }
        _ => (FetchErrorKind::Unavailable, "TLS failed"),
    };
    FetchError::new(kind, format!("GET {shown}: {what}: {e}"))
}

/// The first rustls error in the chain. An `io::Error`'s `source()` skips the
/// error it wraps (and hyper-rustls wraps rustls' `io::Error` in another), so
/// each one is looked into.
fn find_rustls<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(e) = next {
        let mut inner: &(dyn StdError + 'static) = e;
        loop {
            if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                return Some(tls);
            }
            match inner
                .downcast_ref::<io::Error>()
                .and_then(io::Error::get_ref)
            {
                Some(wrapped) => inner = wrapped,
                None => break,
            }
        }
        next = e.source();
    }
    None
}

/// The messages of an error and its sources, `: `-joined, skipping a message
/// that the previous one already contains. reqwest's own message is taken
/// without its URL (which may carry a signed query).
fn chain(e: &reqwest::Error) -> String {
    let mut out = String::new();
    // `without_url` needs ownership; the top message is rebuilt from its kind.
    let top = if e.is_timeout() {
        "operation timed out"
    } else if e.is_connect() || e.is_request() {
        "error sending request"
    } else if e.is_body() || e.is_decode() {
        "error reading the body"
    } else if e.is_redirect() {
        "error following a redirect"
    } else {
        "HTTP client error"
    };
    out.push_str(top);
    let mut last = String::new();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !text.is_empty() && !last.contains(&text) && !looks_like_url(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        last = text;
        next = s.source();
    }
    out
}

/// A cautious guard: a source message that quotes a URL is left out, since its
/// query could be a signed credential.
fn looks_like_url(text: &str) -> bool {
    text.contains("://") && text.contains('?')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_kinds() {
        let h = HeaderMap::new();
        let kind = |c: u16| status_error(StatusCode::from_u16(c).unwrap(), &h, "u").kind;
        assert_eq!(kind(404), FetchErrorKind::NotFound);
        assert_eq!(kind(410), FetchErrorKind::NotFound);
        assert_eq!(kind(401), FetchErrorKind::Refused);
        assert_eq!(kind(403), FetchErrorKind::Refused);
        assert_eq!(kind(400), FetchErrorKind::Refused);
        assert_eq!(kind(416), FetchErrorKind::Refused);
        assert_eq!(kind(408), FetchErrorKind::Unavailable);
        assert_eq!(kind(429), FetchErrorKind::Unavailable);
        assert_eq!(kind(500), FetchErrorKind::Unavailable);
        assert_eq!(kind(503), FetchErrorKind::Unavailable);
        assert_eq!(kind(302), FetchErrorKind::Refused);
        assert_eq!(kind(204), FetchErrorKind::Protocol);
    }

    #[test]
    fn retry_after_is_in_the_message() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "120".parse().unwrap());
        let e = status_error(StatusCode::SERVICE_UNAVAILABLE, &h, "http://h/fw.bin");
        assert_eq!(
            e.message,
            "GET http://h/fw.bin: HTTP 503 Service Unavailable (Retry-After: 120)"
        );
    }

    #[test]
    fn config_errors_name_the_input() {
        let e = HttpConfigError::BadPem {
            role: PemRole::Ca,
            path: None,
            problem: PemProblem::NoCertificate,
        };
        assert_eq!(
            e.to_string(),
            "CA certificate (inline PEM): no certificate in it"
        );
        let e = HttpConfigError::BadPem {
            role: PemRole::ClientKey,
            path: Some("/etc/k.pem".into()),
            problem: PemProblem::NoPrivateKey,
        };
        assert_eq!(e.to_string(), "client key /etc/k.pem: no private key in it");
    }
}
