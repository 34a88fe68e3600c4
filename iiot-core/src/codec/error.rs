//! Decode errors.

use super::LimitError;
use crate::types::ValidationError;

/// Why a payload could not become a typed message. Ingest dead-letters the payload
/// with this reason; nothing is dropped silently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload is empty.
    #[error("empty payload")]
    Empty,
    /// A limit for untrusted input was exceeded.
    #[error("limit exceeded: {0}")]
    Limit(#[from] LimitError),
    /// The bytes are not a valid Protobuf message of the expected type.
    #[error("malformed protobuf: {reason}")]
    Protobuf {
        /// What the decoder reported.
        reason: String,
    },
    /// The text is not valid JSON of the expected shape.
    #[error("malformed JSON at line {line} column {column}: {reason}")]
    Json {
        /// 1-based line (0 when unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// What the parser reported.
        reason: String,
    },
    /// The payload carries no schema version (or version 0).
    #[error("no schema_version in payload")]
    MissingVersion,
    /// The payload's schema version is not one this build understands.
    #[error("unsupported schema_version {version}")]
    UnsupportedVersion {
        /// The version found.
        version: u64,
    },
    /// This message kind has no JSON form.
    #[error("message kind {kind} has no JSON form")]
    NoJsonForm {
        /// The kind.
        kind: &'static str,
    },
    /// The message decoded but breaks a domain rule.
    #[error("invalid {field}: {error}")]
    Invalid {
        /// Where in the message (e.g. `samples[3].tag`).
        field: String,
        /// The rule broken.
        error: ValidationError,
    },
}

impl DecodeError {
    /// A stable short label for metrics and dead-letter rows, e.g. `unsupported_version`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Limit(_) => "limit",
            Self::Protobuf { .. } => "malformed_protobuf",
            Self::Json { .. } => "malformed_json",
            Self::MissingVersion => "missing_version",
            Self::UnsupportedVersion { .. } => "unsupported_version",
            Self::NoJsonForm { .. } => "no_json_form",
            Self::Invalid { .. } => "invalid",
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, error: ValidationError) -> Self {
        Self::Invalid {
            field: field.into(),
            error,
        }
    }

    pub(crate) fn from_json(e: &serde_json::Error) -> Self {
        Self::Json {
            line: e.line(),
            column: e.column(),
            reason: e.to_string(),
        }
    }
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// This message kind has no JSON form.
    #[error("message kind {kind} has no JSON form")]
    NoJsonForm {
        /// The kind.
        kind: &'static str,
    },
}
