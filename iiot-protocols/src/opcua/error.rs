//! Typed errors of the OPC-UA driver.

use iiot_core::quality::Quality;

use super::convert::ConvertError;

/// A configuration that cannot make a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpcUaConfigError {
    /// The TOML does not fit the configuration (an unknown key, a wrong type).
    #[error("cannot parse the OPC-UA configuration: {message}")]
    Parse {
        /// The parser's message, with the line.
        message: String,
    },
    /// Not an `opc.tcp://` URL.
    #[error("OPC-UA endpoint {endpoint:?} is not an opc.tcp:// URL")]
    Endpoint {
        /// What was given.
        endpoint: String,
    },
    /// Security policy, mode and certificates do not go together.
    #[error("OPC-UA security: {problem}")]
    Security {
        /// What is wrong.
        problem: String,
    },
    /// A duration of zero, or a maximum below its minimum.
    #[error(
        "OPC-UA `{what}` must be more than zero (and `reconnect_max` at least `reconnect_min`, `session_timeout` below 49 days)"
    )]
    Duration {
        /// The key.
        what: &'static str,
    },
    /// One tag of the map is wrong.
    #[error("OPC-UA tag {tag:?}: {problem}")]
    Tag {
        /// The tag's name.
        tag: String,
        /// What is wrong.
        problem: String,
    },
    /// The client could not be built (its certificate store, its key).
    #[error("cannot build the OPC-UA client: {problem}")]
    Client {
        /// What async-opcua said.
        problem: String,
    },
}

/// An operation of the OPC-UA client failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpcUaError {
    /// The server could not be reached or refused the session.
    #[error("cannot connect to OPC-UA server {endpoint}: {status}")]
    Connect {
        /// The endpoint URL.
        endpoint: String,
        /// The status (e.g. `BadNotConnected`, `BadTimeout`, `BadIdentityTokenRejected`).
        status: String,
    },
    /// The server offers no endpoint with the configured policy and mode.
    #[error(
        "OPC-UA server {endpoint} offers no endpoint with security policy {policy} and mode {mode}"
    )]
    NoMatchingEndpoint {
        /// The endpoint URL.
        endpoint: String,
        /// The configured policy.
        policy: &'static str,
        /// The configured mode.
        mode: String,
    },
    /// The server's certificate is not in the trusted directory.
    #[error(
        "the certificate of OPC-UA server {endpoint} is not trusted ({status}); it was stored in {rejected}: review it and move it to {trusted} to trust this server"
    )]
    UntrustedServer {
        /// The endpoint URL.
        endpoint: String,
        /// The status (`BadCertificateUntrusted`, `BadSecurityChecksFailed`, ...).
        status: String,
        /// Where the rejected certificate is.
        rejected: String,
        /// Where trusted certificates go.
        trusted: String,
    },
    /// A service call failed as a whole (not per node).
    #[error("OPC-UA {op} failed: {status}")]
    Service {
        /// The service (`read`, `write`, `browse`).
        op: &'static str,
        /// The status as OPC-UA names it.
        status: String,
        /// The status as a quality.
        quality: Quality,
    },
    /// A node the server does not have, or that refused the operation.
    #[error("OPC-UA node {node}: {status}")]
    Node {
        /// The node id.
        node: String,
        /// The status as OPC-UA names it (`BadNodeIdUnknown`, `BadNotWritable`,
        /// `BadTypeMismatch`, ...).
        status: String,
        /// The status as a quality.
        quality: Quality,
    },
    /// A value could not be converted.
    #[error(transparent)]
    Convert(#[from] ConvertError),
    /// Not connected to the server right now.
    #[error("not connected to OPC-UA server {endpoint}")]
    NotConnected {
        /// The endpoint URL.
        endpoint: String,
    },
    /// The server did not answer in time.
    #[error("OPC-UA {op} got no answer within {timeout:?}")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// The limit.
        timeout: std::time::Duration,
    },
}

impl OpcUaError {
    /// The quality a reading would carry after this error.
    pub fn quality(&self) -> Quality {
        match self {
            Self::Service { quality, .. } | Self::Node { quality, .. } => *quality,
            Self::Convert(e) => e.quality(),
            Self::Timeout { .. } => Quality::BAD_TIMEOUT,
            _ => Quality::BAD_COMMUNICATION_ERROR,
        }
    }
}
