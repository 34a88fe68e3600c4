//! The OPC-UA connection and its tag map, as written in a TOML file (or any serde
//! format), checked by [`OpcUaConfig::validate`].

use std::path::PathBuf;
use std::time::Duration;

use iiot_core::source::Deadband;
use iiot_core::types::TagPath;
use serde::{Deserialize, Serialize};

use super::convert::NodeRef;
use super::error::OpcUaConfigError;

/// Security policy of the secure channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityPolicy {
    /// No signing, no encryption: only on a network nobody else can reach.
    #[default]
    None,
    /// `Basic256Sha256` (RSA 2048-4096, SHA-256).
    Basic256Sha256,
    /// `Aes128_Sha256_RsaOaep` (RSA 2048-4096, AES-128, SHA-256).
    Aes128Sha256RsaOaep,
}

impl SecurityPolicy {
    /// The policy's name as the OPC-UA specification spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "None",
            Self::Basic256Sha256 => "Basic256Sha256",
            Self::Aes128Sha256RsaOaep => "Aes128_Sha256_RsaOaep",
        }
    }
}

/// Message security mode of the secure channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityMode {
    /// Messages are neither signed nor encrypted (only with policy `none`).
    #[default]
    None,
    /// Messages are signed, not encrypted.
    Sign,
    /// Messages are signed and encrypted.
    SignAndEncrypt,
}

/// How the secure channel is protected and which server certificates are trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// The policy (`none`, `basic256_sha256`, `aes128_sha256_rsa_oaep`). Default `none`.
    #[serde(default)]
    pub policy: SecurityPolicy,
    /// The mode (`none`, `sign`, `sign_and_encrypt`). Default `none`.
    #[serde(default)]
    pub mode: SecurityMode,
    /// The client's application instance certificate (`.der` or `.pem`), required with a
    /// policy other than `none`. Relative paths are relative to `pki_dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<PathBuf>,
    /// The client's private key (PEM), required with a policy other than `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<PathBuf>,
    /// The certificate store: servers whose certificate (DER) is in `trusted/` are
    /// accepted; an unknown server's certificate is written to `rejected/` and the
    /// connection refused ([`OpcUaError::UntrustedServer`](super::OpcUaError::UntrustedServer)):
    /// review it and move it to `trusted/` to trust that server. Default `pki`.
    #[serde(default = "default_pki_dir")]
    pub pki_dir: PathBuf,
    /// Trust any server certificate and store it in `trusted/` (trust on first use).
    /// For commissioning only. Default false.
    #[serde(default)]
    pub trust_unknown_server: bool,
}

fn default_pki_dir() -> PathBuf {
    PathBuf::from("pki")
}

impl Default for SecurityConfig {
    /// Policy and mode `none`, no certificate, the store in `pki`.
    fn default() -> Self {
        Self {
            policy: SecurityPolicy::None,
            mode: SecurityMode::None,
            certificate: None,
            private_key: None,
            pki_dir: default_pki_dir(),
            trust_unknown_server: false,
        }
    }
}

/// Who the client is to the server.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Identity {
    /// No user.
    #[default]
    Anonymous,
    /// User name and password (send it only over `sign_and_encrypt`, or the server's
    /// policy must encrypt the token).
    UserName {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
}

/// A server-side deadband: the server filters data changes itself (an OPC-UA
/// DataChangeFilter), instead of the gateway runtime's report by exception.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerDeadband {
    /// Report when the value moved by more than this many engineering units.
    Absolute(f64),
    /// Report when the value moved by more than this percentage of the node's EURange
    /// (the server refuses it for a node without one; the tag then reads Bad with the
    /// server's status).
    Percent(f64),
}

impl ServerDeadband {
    pub(crate) fn value(self) -> f64 {
        match self {
            Self::Absolute(v) | Self::Percent(v) => v,
        }
    }
}

/// One tag: an OPC-UA variable read through a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagConfig {
    /// The tag path of its readings (`line1/temp`).
    pub name: TagPath,
    /// The node id in its string form: `ns=2;s=Line1.Temp`, `ns=2;i=5001`,
    /// `ns=3;g=72962b91-fa75-4ae6-8d28-b404dc7daf63`, `ns=1;b=M/RnY3g=` (opaque, base64).
    pub node: String,
    /// How often the server samples the value. Default: the publishing interval.
    #[serde(
        default,
        with = "iiot_core::duration::human::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub sampling_interval: Option<Duration>,
    /// How many changes the server keeps between two publishes (the newest are kept).
    /// Default 10.
    #[serde(default = "default_queue_size")]
    pub queue_size: u32,
    /// The runtime's report-by-exception deadband (the gateway's one deadband).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadband: Option<Deadband>,
    /// With `deadband`: report at least this often even without change.
    #[serde(
        default,
        with = "iiot_core::duration::human::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_report_interval: Option<Duration>,
    /// The alternative: the server filters (a DataChangeFilter). It turns the runtime's
    /// report by exception off for this tag, so it cannot be combined with `deadband`
    /// or `max_report_interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_deadband: Option<ServerDeadband>,
    /// Commands may write it. Default false.
    #[serde(default)]
    pub writable: bool,
}

fn default_queue_size() -> u32 {
    10
}

/// An OPC-UA server and the tags read from it.
///
/// ```toml
/// endpoint = "opc.tcp://plc.local:4840/"
/// publishing_interval = "500ms"
///
/// [security]
/// policy = "basic256_sha256"
/// mode = "sign_and_encrypt"
/// certificate = "own/cert.der"
/// private_key = "private/private.pem"
/// pki_dir = "/var/lib/iiot/pki"
///
/// [identity.user_name]
/// user = "gateway"
/// password = "secret"
///
/// [[tags]]
/// name = "line1/temp"
/// node = "ns=2;s=Line1.Temp"
/// deadband = { absolute = 0.5 }
/// max_report_interval = "1m"
///
/// [[tags]]
/// name = "line1/setpoint"
/// node = "ns=2;i=5001"
/// writable = true
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcUaConfig {
    /// The server's endpoint URL (`opc.tcp://host:4840/path`).
    pub endpoint: String,
    /// The secure channel. Default: policy and mode `none`.
    #[serde(default)]
    pub security: SecurityConfig,
    /// The user. Default anonymous.
    #[serde(default)]
    pub identity: Identity,
    /// How long the server keeps the session without the client. Default 60 s.
    #[serde(
        default = "default_session_timeout",
        with = "iiot_core::duration::human"
    )]
    pub session_timeout: Duration,
    /// How long a request (connect, read, write, browse) may take. Default 10 s.
    #[serde(
        default = "default_request_timeout",
        with = "iiot_core::duration::human"
    )]
    pub request_timeout: Duration,
    /// The session is checked this often when no publish arrives; after three misses
    /// the connection counts as lost. Default 5 s.
    #[serde(default = "default_keep_alive", with = "iiot_core::duration::human")]
    pub keep_alive_interval: Duration,
    /// First reconnect delay. Default 500 ms.
    #[serde(default = "default_reconnect_min", with = "iiot_core::duration::human")]
    pub reconnect_min: Duration,
    /// Longest reconnect delay. Default 30 s.
    #[serde(default = "default_reconnect_max", with = "iiot_core::duration::human")]
    pub reconnect_max: Duration,
    /// How often the server sends the changes of a subscription. Default 1 s.
    #[serde(
        default = "default_publishing_interval",
        with = "iiot_core::duration::human"
    )]
    pub publishing_interval: Duration,
    /// Most notifications in one publish message (0: no limit); the rest follow in the
    /// next message at once. Default 500: against async-opcua's own server, publishes of
    /// 1 000 or more notifications arrived at a third to two thirds of the rate (see
    /// docs/BENCHMARKS.md), and bounded messages keep latency even.
    #[serde(default = "default_max_notifications")]
    pub max_notifications_per_publish: u32,
    /// The tags.
    #[serde(default)]
    pub tags: Vec<TagConfig>,
}

fn default_max_notifications() -> u32 {
    500
}
fn default_session_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(5)
}
fn default_reconnect_min() -> Duration {
    Duration::from_millis(500)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(30)
}
fn default_publishing_interval() -> Duration {
    Duration::from_secs(1)
}

impl OpcUaConfig {
    /// A configuration for `endpoint` with every default and no tags.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            security: SecurityConfig::default(),
            identity: Identity::Anonymous,
            session_timeout: default_session_timeout(),
            request_timeout: default_request_timeout(),
            keep_alive_interval: default_keep_alive(),
            reconnect_min: default_reconnect_min(),
            reconnect_max: default_reconnect_max(),
            publishing_interval: default_publishing_interval(),
            max_notifications_per_publish: default_max_notifications(),
            tags: Vec::new(),
        }
    }

    /// Adds a tag reading `node` as `name`, with every default.
    ///
    /// # Errors
    /// [`OpcUaConfigError::Tag`] when `name` is not a tag path.
    pub fn with_tag(
        mut self,
        name: &str,
        node: impl Into<String>,
    ) -> Result<Self, OpcUaConfigError> {
        let name = TagPath::new(name).map_err(|e| OpcUaConfigError::Tag {
            tag: name.to_owned(),
            problem: e.to_string(),
        })?;
        self.tags.push(TagConfig {
            name,
            node: node.into(),
            sampling_interval: None,
            queue_size: default_queue_size(),
            deadband: None,
            max_report_interval: None,
            server_deadband: None,
            writable: false,
        });
        Ok(self)
    }

    /// Parses and validates a TOML document.
    ///
    /// # Errors
    /// [`OpcUaConfigError::Parse`] for TOML that does not fit, else what
    /// [`OpcUaConfig::validate`] finds.
    pub fn from_toml_str(text: &str) -> Result<Self, OpcUaConfigError> {
        let c: Self = toml::from_str(text).map_err(|e| OpcUaConfigError::Parse {
            message: e.to_string(),
        })?;
        c.validate()?;
        Ok(c)
    }

    /// Checks what serde cannot: the endpoint's scheme, the security settings together,
    /// every node id, unique tag names, deadbands, durations.
    ///
    /// # Errors
    /// The first problem found, as an [`OpcUaConfigError`].
    pub fn validate(&self) -> Result<(), OpcUaConfigError> {
        if !self.endpoint.starts_with("opc.tcp://") {
            return Err(OpcUaConfigError::Endpoint {
                endpoint: self.endpoint.clone(),
            });
        }
        let s = &self.security;
        match (s.policy, s.mode) {
            (SecurityPolicy::None, SecurityMode::None) => {}
            (SecurityPolicy::None, _) | (_, SecurityMode::None) => {
                return Err(OpcUaConfigError::Security {
                    problem: format!(
                        "policy {} cannot go with mode {:?}: `none` goes only with `none`",
                        s.policy.as_str(),
                        s.mode
                    ),
                });
            }
            _ => {
                if s.certificate.is_none() || s.private_key.is_none() {
                    return Err(OpcUaConfigError::Security {
                        problem: format!(
                            "policy {} needs the client's `certificate` and `private_key`",
                            s.policy.as_str()
                        ),
                    });
                }
            }
        }
        for (what, d) in [
            ("session_timeout", self.session_timeout),
            ("request_timeout", self.request_timeout),
            ("keep_alive_interval", self.keep_alive_interval),
            ("reconnect_min", self.reconnect_min),
            ("publishing_interval", self.publishing_interval),
        ] {
            if d.is_zero() {
                return Err(OpcUaConfigError::Duration { what });
            }
        }
        if self.session_timeout.as_millis() > u128::from(u32::MAX) {
            return Err(OpcUaConfigError::Duration {
                what: "session_timeout",
            });
        }
        if self.reconnect_max < self.reconnect_min {
            return Err(OpcUaConfigError::Duration {
                what: "reconnect_max",
            });
        }
        let mut seen = std::collections::HashSet::new();
        for t in &self.tags {
            let tag = || t.name.to_string();
            if !seen.insert(&t.name) {
                return Err(OpcUaConfigError::Tag {
                    tag: tag(),
                    problem: "a second tag has this name".into(),
                });
            }
            NodeRef::parse(&t.node).map_err(|e| OpcUaConfigError::Tag {
                tag: tag(),
                problem: e.to_string(),
            })?;
            if t.server_deadband.is_some()
                && (t.deadband.is_some() || t.max_report_interval.is_some())
            {
                return Err(OpcUaConfigError::Tag {
                    tag: tag(),
                    problem: "`server_deadband` replaces the runtime's `deadband` and \
                              `max_report_interval`: use one or the other"
                        .into(),
                });
            }
            if t.max_report_interval.is_some() && t.deadband.is_none() {
                return Err(OpcUaConfigError::Tag {
                    tag: tag(),
                    problem: "`max_report_interval` needs a `deadband` (without one every \
                              change is reported)"
                        .into(),
                });
            }
            if t.max_report_interval.is_some_and(|d| d.is_zero()) {
                return Err(OpcUaConfigError::Tag {
                    tag: tag(),
                    problem: "`max_report_interval` must be more than zero".into(),
                });
            }
            let db = match (t.deadband, t.server_deadband) {
                (Some(Deadband::Absolute(v) | Deadband::Percent(v)), _) => Some(v),
                (_, Some(s)) => Some(s.value()),
                _ => None,
            };
            if db.is_some_and(|v| !v.is_finite() || v < 0.0) {
                return Err(OpcUaConfigError::Tag {
                    tag: tag(),
                    problem: "a deadband must be finite and >= 0".into(),
                });
            }
            if matches!(t.server_deadband, Some(ServerDeadband::Percent(p)) if p > 100.0) {
                return Err(OpcUaConfigError::Tag {
                    tag: tag(),
                    problem: "a percent deadband is at most 100".into(),
                });
            }
            if t.queue_size == 0 {
                return Err(OpcUaConfigError::Tag {
                    tag: tag(),
                    problem: "`queue_size` must be at least 1".into(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        endpoint = "opc.tcp://127.0.0.1:4840/"
    "#;

    fn parse(extra: &str) -> Result<OpcUaConfig, OpcUaConfigError> {
        OpcUaConfig::from_toml_str(&format!("{BASE}\n{extra}"))
    }

    #[test]
    fn defaults_and_full_example() {
        let c = parse("").unwrap();
        assert_eq!(c, OpcUaConfig::new("opc.tcp://127.0.0.1:4840/"));
        let c = parse(
            r#"
            publishing_interval = "250ms"
            session_timeout = "2m"
            [security]
            policy = "aes128_sha256_rsa_oaep"
            mode = "sign"
            certificate = "own/cert.der"
            private_key = "private/key.pem"
            [identity.user_name]
            user = "u"
            password = "p"
            [[tags]]
            name = "line1/temp"
            node = "ns=2;s=Line1.Temp"
            sampling_interval = "100ms"
            deadband = { absolute = 0.5 }
            max_report_interval = "1m"
            [[tags]]
            name = "line1/flow"
            node = "ns=2;g=72962b91-fa75-4ae6-8d28-b404dc7daf63"
            server_deadband = { percent = 2.0 }
            writable = true
            "#,
        )
        .unwrap();
        assert_eq!(c.publishing_interval, Duration::from_millis(250));
        assert_eq!(c.security.policy, SecurityPolicy::Aes128Sha256RsaOaep);
        assert_eq!(
            c.tags[0].sampling_interval,
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            c.tags[1].server_deadband,
            Some(ServerDeadband::Percent(2.0))
        );
        assert!(matches!(c.identity, Identity::UserName { .. }));
    }

    #[test]
    fn refusals_name_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("[[tags]]\nname = \"a\"\nnode = \"ns=2;x=1\"", "node id"),
            (
                "[[tags]]\nname = \"a\"\nnode = \"ns=2;i=1\"\n[[tags]]\nname = \"a\"\nnode = \"ns=2;i=2\"",
                "second tag",
            ),
            (
                "[[tags]]\nname = \"a\"\nnode = \"ns=2;i=1\"\ndeadband = { absolute = 1.0 }\nserver_deadband = { absolute = 1.0 }",
                "one or the other",
            ),
            (
                "[[tags]]\nname = \"a\"\nnode = \"ns=2;i=1\"\nmax_report_interval = \"1s\"",
                "needs a `deadband`",
            ),
            (
                "[[tags]]\nname = \"a\"\nnode = \"ns=2;i=1\"\nserver_deadband = { percent = 101.0 }",
                "at most 100",
            ),
            (
                "[security]\nmode = \"sign\"",
                "`none` goes only with `none`",
            ),
            (
                "[security]\npolicy = \"basic256_sha256\"\nmode = \"sign_and_encrypt\"",
                "needs the client's",
            ),
            ("publishing_interval = \"0s\"", "publishing_interval"),
            ("bogus = 1", "unknown field"),
        ];
        for (extra, needle) in cases {
            let e = parse(extra).unwrap_err().to_string();
            assert!(e.contains(needle), "{extra}: {e}");
        }
        let e = OpcUaConfig::from_toml_str("endpoint = \"http://x\"").unwrap_err();
        assert!(matches!(e, OpcUaConfigError::Endpoint { .. }), "{e}");
    }
}
