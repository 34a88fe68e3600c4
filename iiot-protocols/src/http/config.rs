//! Configuration of the HTTP(S) image fetcher.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where PEM text comes from: a file (read when the fetcher is built) or the text
/// itself. In a config file: `{ path = "/etc/iiot/plant-ca.pem" }` or
/// `{ pem = "-----BEGIN CERTIFICATE-----\n..." }`.
///
/// `Debug` shows a path but never inline PEM (it may be a private key).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum PemSource {
    /// A PEM file.
    Path(PathBuf),
    /// PEM text (one or more `-----BEGIN ...-----` blocks).
    Pem(String),
}

impl PemSource {
    /// A PEM file.
    pub fn path(path: impl Into<PathBuf>) -> Self {
        Self::Path(path.into())
    }

    /// PEM text.
    pub fn pem(text: impl Into<String>) -> Self {
        Self::Pem(text.into())
    }

    /// The file, for a [`PemSource::Path`].
    pub fn as_path(&self) -> Option<&Path> {
        match self {
            Self::Path(p) => Some(p),
            Self::Pem(_) => None,
        }
    }
}

impl fmt::Debug for PemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Path(p) => f.debug_tuple("Path").field(p).finish(),
            Self::Pem(text) => write!(f, "Pem(<{} bytes>)", text.len()),
        }
    }
}

/// What the configured CA certificates do to the system's trust roots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CaPolicy {
    /// The configured CAs are the only trust anchors: a server certificate from
    /// any other CA, public ones included, is refused. This is what a plant's
    /// image server with a private CA wants. With no CA configured the system's
    /// roots are used. Default.
    #[default]
    Replace,
    /// The configured CAs are trusted in addition to the system's roots.
    Extend,
}

/// Configuration of an [`HttpFetch`](super::HttpFetch). Deserializes with
/// `deny_unknown_fields`; every field has a default. Durations are human strings
/// in config files (`connect_timeout = "10s"`, see [`iiot_core::duration`]).
///
/// ```toml
/// connect_timeout = "5s"
/// ca = [{ path = "/etc/iiot/plant-ca.pem" }]
/// bearer_token = "..."
/// client_cert = { path = "/etc/iiot/gw-7.pem" }
/// client_key = { path = "/etc/iiot/gw-7.key" }
/// ```
///
/// `Debug` redacts the bearer token and inline PEM.
///
/// ## Defaults
///
/// | field | default |
/// |---|---|
/// | `connect_timeout` | 10 s (TCP connect and TLS handshake; reading the body has no timeout here, the OTA agent puts its own around every chunk) |
/// | `ca` | none: the system's trust roots (rustls-native-certs) |
/// | `ca_policy` | [`CaPolicy::Replace`]: a configured CA is the only trust anchor |
/// | `bearer_token` | none (no `Authorization` header) |
/// | `client_cert`, `client_key` | none (no client certificate) |
///
/// The User-Agent is always [`USER_AGENT`](super::USER_AGENT). Proxies come from the
/// environment (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`), as curl reads them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpFetchConfig {
    #[serde(with = "iiot_core::duration::human")]
    pub(crate) connect_timeout: Duration,
    pub(crate) ca: Vec<PemSource>,
    pub(crate) ca_policy: CaPolicy,
    pub(crate) bearer_token: Option<String>,
    pub(crate) client_cert: Option<PemSource>,
    pub(crate) client_key: Option<PemSource>,
}

impl Default for HttpFetchConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            ca: Vec::new(),
            ca_policy: CaPolicy::Replace,
            bearer_token: None,
            client_cert: None,
            client_key: None,
        }
    }
}

impl fmt::Debug for HttpFetchConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpFetchConfig")
            .field("connect_timeout", &self.connect_timeout)
            .field("ca", &self.ca)
            .field("ca_policy", &self.ca_policy)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .finish()
    }
}

impl HttpFetchConfig {
    /// The defaults (see the table above).
    pub fn new() -> Self {
        Self::default()
    }

    /// How long connecting (TCP and the TLS handshake) may take. Default 10 s.
    pub fn set_connect_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.connect_timeout = timeout;
        self
    }

    /// Trusts the CA certificates of a PEM file (one or more certificates).
    pub fn add_ca_path(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.ca.push(PemSource::path(path));
        self
    }

    /// Trusts the CA certificates of PEM text (one or more certificates).
    pub fn add_ca_pem(&mut self, pem: impl Into<String>) -> &mut Self {
        self.ca.push(PemSource::pem(pem));
        self
    }

    /// Whether configured CAs replace the system's roots (default) or extend them.
    pub fn set_ca_policy(&mut self, policy: CaPolicy) -> &mut Self {
        self.ca_policy = policy;
        self
    }

    /// Sends `Authorization: Bearer {token}` with every request. The token is
    /// never logged nor shown by `Debug`; reqwest drops it when a redirect leaves
    /// the host.
    pub fn set_bearer_token(&mut self, token: impl Into<String>) -> &mut Self {
        self.bearer_token = Some(token.into());
        self
    }

    /// Presents a client certificate (chain, leaf first) and its private key, both
    /// PEM, for mutual TLS.
    pub fn set_client_identity(&mut self, cert: PemSource, key: PemSource) -> &mut Self {
        self.client_cert = Some(cert);
        self.client_key = Some(key);
        self
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The configured CA certificates.
    pub fn ca(&self) -> &[PemSource] {
        &self.ca
    }

    /// What the configured CAs do to the system's roots.
    pub fn ca_policy(&self) -> CaPolicy {
        self.ca_policy
    }

    /// Whether a bearer token is configured (the token itself is not handed out).
    pub fn has_bearer_token(&self) -> bool {
        self.bearer_token.is_some()
    }

    /// The client certificate and key, when both are configured.
    pub fn client_identity(&self) -> Option<(&PemSource, &PemSource)> {
        self.client_cert.as_ref().zip(self.client_key.as_ref())
    }
}
