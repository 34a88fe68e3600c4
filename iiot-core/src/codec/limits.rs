//! Limits for untrusted input.

use serde::{Deserialize, Serialize};

/// Bounds applied to every payload before and while it is decoded, so a hostile
/// or broken sender cannot make a consumer allocate without bound.
///
/// ## Defaults
///
/// | field | default |
/// |---|---|
/// | `max_payload_bytes` | 1 MiB |
/// | `max_samples_per_batch` | 10 000 |
/// | `max_tag_len` | 256 bytes |
/// | `max_string_value_len` | 4 KiB |
/// | `max_bytes_value_len` | 64 KiB |
/// | `max_text_len` | 256 bytes (ids, firmware version, gateway id, reasons) |
/// | `max_map_entries` | 1 000 (configuration settings) |
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest payload accepted, checked before any parsing.
    pub max_payload_bytes: usize,
    /// Most samples in one telemetry batch, counted before samples are decoded.
    pub max_samples_per_batch: usize,
    /// Longest tag path.
    pub max_tag_len: usize,
    /// Longest string value.
    pub max_string_value_len: usize,
    /// Longest bytes value.
    pub max_bytes_value_len: usize,
    /// Longest short text field (device id, firmware version, gateway id, reason, detail).
    pub max_text_len: usize,
    /// Most entries in a map (configuration settings).
    pub max_map_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 1024 * 1024,
            max_samples_per_batch: 10_000,
            max_tag_len: 256,
            max_string_value_len: 4096,
            max_bytes_value_len: 64 * 1024,
            max_text_len: 256,
            max_map_entries: 1000,
        }
    }
}

/// A limit that a payload exceeded. Each limit has its own variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// The payload is larger than `max_payload_bytes`.
    #[error("payload is {len} bytes, limit {limit}")]
    PayloadTooLarge {
        /// Payload length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// More samples than `max_samples_per_batch`.
    #[error("batch has {count} samples, limit {limit}")]
    TooManySamples {
        /// Samples found (counting stops just past the limit).
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A tag path longer than `max_tag_len`.
    #[error("tag of sample {index} is {len} bytes, limit {limit}")]
    TagTooLong {
        /// Index of the sample.
        index: usize,
        /// Tag length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A string value longer than `max_string_value_len`.
    #[error("string value of sample {index} is {len} bytes, limit {limit}")]
    StringValueTooLong {
        /// Index of the sample (or 0 outside telemetry).
        index: usize,
        /// Length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A bytes value longer than `max_bytes_value_len`.
    #[error("bytes value of sample {index} is {len} bytes, limit {limit}")]
    BytesValueTooLong {
        /// Index of the sample (or 0 outside telemetry).
        index: usize,
        /// Length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A short text field longer than `max_text_len`.
    #[error("field {field} is {len} bytes, limit {limit}")]
    TextTooLong {
        /// The field.
        field: &'static str,
        /// Length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A map with more than `max_map_entries` entries.
    #[error("map {field} has {count} entries, limit {limit}")]
    TooManyEntries {
        /// The field.
        field: &'static str,
        /// Entries.
        count: usize,
        /// The limit.
        limit: usize,
    },
}

impl Limits {
    /// Checks the payload size.
    ///
    /// # Errors
    /// [`LimitError::PayloadTooLarge`].
    pub fn check_payload(&self, len: usize) -> Result<(), LimitError> {
        if len > self.max_payload_bytes {
            return Err(LimitError::PayloadTooLarge {
                len,
                limit: self.max_payload_bytes,
            });
        }
        Ok(())
    }

    /// Checks the length of the tag of sample `index`.
    ///
    /// # Errors
    /// [`LimitError::TagTooLong`].
    pub fn check_tag(&self, index: usize, tag: &str) -> Result<(), LimitError> {
        if tag.len() > self.max_tag_len {
            return Err(LimitError::TagTooLong {
                index,
                len: tag.len(),
                limit: self.max_tag_len,
            });
        }
        Ok(())
    }

    /// Checks the size of a string or bytes value of sample `index`.
    ///
    /// # Errors
    /// [`LimitError::StringValueTooLong`] or [`LimitError::BytesValueTooLong`].
    pub fn check_value(&self, index: usize, v: &crate::types::Value) -> Result<(), LimitError> {
        use crate::types::Value;
        match v {
            Value::String(s) if s.len() > self.max_string_value_len => {
                Err(LimitError::StringValueTooLong {
                    index,
                    len: s.len(),
                    limit: self.max_string_value_len,
                })
            }
            Value::Bytes(b) if b.len() > self.max_bytes_value_len => {
                Err(LimitError::BytesValueTooLong {
                    index,
                    len: b.len(),
                    limit: self.max_bytes_value_len,
                })
            }
            _ => Ok(()),
        }
    }

    /// Checks the entry count of a map or list (settings, a heartbeat's sources)
    /// against `max_map_entries`.
    ///
    /// # Errors
    /// [`LimitError::TooManyEntries`] naming `field`.
    pub fn check_entries(&self, field: &'static str, count: usize) -> Result<(), LimitError> {
        if count > self.max_map_entries {
            return Err(LimitError::TooManyEntries {
                field,
                count,
                limit: self.max_map_entries,
            });
        }
        Ok(())
    }

    /// Checks a short text field against `max_text_len`.
    ///
    /// # Errors
    /// [`LimitError::TextTooLong`].
    pub fn check_text(&self, field: &'static str, s: &str) -> Result<(), LimitError> {
        if s.len() > self.max_text_len {
            return Err(LimitError::TextTooLong {
                field,
                len: s.len(),
                limit: self.max_text_len,
            });
        }
        Ok(())
    }
}
