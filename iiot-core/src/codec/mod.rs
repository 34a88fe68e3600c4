//! Codecs: the Protobuf form (what iiot-rs gateways send) and the JSON form
//! (what brownfield devices send). Both map to the same domain types.
//!
//! Decoders take [`Limits`] and check them before and while decoding; a payload
//! that breaks one gets a [`DecodeError`] naming the limit. Use
//! [`crate::version::Router`] when the schema version and wire form of a payload
//! are not known in advance (ingest): it reads the version first and keeps the
//! original bytes on failure so they can be dead-lettered.
//!
//! **Stability:** both wire forms are contracts; see `docs/contracts.md`.

mod error;
pub mod json;
mod limits;
pub mod protobuf;
pub(crate) mod wire;

pub use error::{DecodeError, EncodeError};
pub use limits::{LimitError, Limits};

/// The schema version this build writes and the only one it decodes.
pub const SCHEMA_VERSION: u32 = 1;

/// The two wire forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireFormat {
    /// Protobuf (`proto/iiot/v1`).
    Protobuf,
    /// The JSON form.
    Json,
}

impl WireFormat {
    /// Tells the form of a payload from its first non-whitespace byte: `{` is JSON.
    ///
    /// No valid iiot Protobuf message starts with `{` (0x7B would be field 15 with
    /// the deprecated group wire type), so the test is unambiguous for our messages.
    pub fn sniff(payload: &[u8]) -> Self {
        match payload.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Self::Json,
            _ => Self::Protobuf,
        }
    }

    /// `protobuf` or `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Protobuf => "protobuf",
            Self::Json => "json",
        }
    }
}
