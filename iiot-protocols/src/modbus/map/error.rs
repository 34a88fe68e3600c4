//! Map loading errors: each names the tag it is about.

use iiot_core::types::ValidationError;

use super::{Area, ByteOrder, DataType};

/// What is wrong with one tag.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TagProblem {
    /// The name is not a valid tag path.
    #[error("invalid name: {0}")]
    Name(ValidationError),
    /// Another tag has the same name.
    #[error("duplicate name")]
    Duplicate,
    /// Integer address without `area`.
    #[error("an integer address needs `area`")]
    MissingArea,
    /// Notation text that is not Modicon notation.
    #[error("address {text:?} is not Modicon notation (e.g. \"40001\" = holding register 0)")]
    Notation {
        /// The text.
        text: String,
    },
    /// `area` contradicts the area the notation implies.
    #[error("area {given:?} contradicts notation address implying {implied:?}")]
    AreaConflict {
        /// The `area` field.
        given: Area,
        /// The area of the notation.
        implied: Area,
    },
    /// The value runs past address 65535.
    #[error("address {address} + {width} items runs past 65535")]
    AddressOverflow {
        /// Start address.
        address: u16,
        /// Width in items.
        width: u16,
    },
    /// The type cannot live in the area (e.g. f32 in coils, bool in registers).
    #[error("type {data_type:?} cannot live in {area:?}")]
    TypeArea {
        /// The type.
        data_type: DataType,
        /// The area.
        area: Area,
    },
    /// `bit` missing, out of 0..=15, or given for a type other than `bit`.
    #[error("`bit` must be 0..=15 for type bit and absent otherwise (got {bit:?})")]
    Bit {
        /// The `bit` field.
        bit: Option<u8>,
    },
    /// `length` missing, 0, over 250 bytes, or given for a type other than `string`.
    #[error("`length` must be 1..=250 bytes for type string and absent otherwise (got {length:?})")]
    Length {
        /// The `length` field.
        length: Option<u16>,
    },
    /// A word-swapping order for a string.
    #[error("strings accept ABCD or BADC, not {order:?}")]
    StringOrder {
        /// The order.
        order: ByteOrder,
    },
    /// Scale zero or not finite, or offset not finite.
    #[error("scale must be finite and non-zero, offset finite (scale {scale}, offset {offset})")]
    Scaling {
        /// The scale.
        scale: f64,
        /// The offset.
        offset: f64,
    },
    /// Scale/offset or a deadband on a non-numeric type.
    #[error("scale, offset and deadband apply to numeric types only")]
    NotNumeric,
    /// A negative or non-finite deadband.
    #[error("deadband must be finite and >= 0")]
    Deadband,
    /// A poll group that the map does not define.
    #[error("unknown poll group {group:?}")]
    UnknownGroup {
        /// The group name.
        group: String,
    },
    /// `max_report_interval` of zero.
    #[error("max_report_interval must be more than zero")]
    ReportInterval,
}

/// A map that failed to load.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// The text is not valid TOML or JSON for a map.
    #[error("cannot parse {format} register map: {message}")]
    Parse {
        /// `toml` or `json`.
        format: &'static str,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A tag breaks a rule.
    #[error("tag {tag:?}: {problem}")]
    Tag {
        /// The tag's name as written.
        tag: String,
        /// What is wrong.
        problem: TagProblem,
    },
    /// Two tags read the same register (or coil) and neither says `overlap = true`.
    #[error(
        "tags {other:?} and {tag:?} both read register {register}; mark one `overlap = true` \
         if that is intended"
    )]
    Overlap {
        /// The later tag (in address order).
        tag: String,
        /// The tag it overlaps.
        other: String,
        /// The first register both read, in Modicon notation.
        register: String,
    },
    /// A poll group with a zero interval.
    #[error("poll group {group:?}: interval must be more than zero")]
    GroupInterval {
        /// The group.
        group: String,
    },
}
