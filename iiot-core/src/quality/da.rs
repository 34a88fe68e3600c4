//! The legacy OPC DA quality byte (`QQSSSSLL`) and its mapping to OPC-UA status
//! codes.
//!
//! The byte holds the primary quality `QQ` (00 Bad, 01 Uncertain, 11 Good; 10 is
//! not used and is read as Bad), a sub-status `SSSS` and the limit `LL` (00 none,
//! 01 low, 10 high, 11 constant). The limit maps one to one to the OPC-UA limit
//! bits (see [`Limit`]). The constants below are the DA codes with their limit
//! field zero.
//!
//! # The mapping
//!
//! The pairs follow OPC 10000-8 Annex A (tables "Quality mapping" for the COM UA
//! wrapper and proxy). Every pair in this table round-trips in both directions, for
//! each of the four limit values: `from_da(to_da(q)) == q` where `q` is the UA code
//! [`with_limit`](Quality::with_limit) the limit, and `to_da(from_da(b)) == b`.
//!
//! | DA byte | DA name | OPC-UA code |
//! |---|---|---|
//! | 0x00 | BAD | `Bad` |
//! | 0x04 | CONFIG_ERROR | `Bad_ConfigurationError` |
//! | 0x08 | NOT_CONNECTED | `Bad_NotConnected` |
//! | 0x0C | DEVICE_FAILURE | `Bad_DeviceFailure` |
//! | 0x10 | SENSOR_FAILURE | `Bad_SensorFailure` |
//! | 0x14 | LAST_KNOWN | `Bad_CommunicationError` (see below) |
//! | 0x18 | COMM_FAILURE | `Bad_NoCommunication` |
//! | 0x1C | OUT_OF_SERVICE | `Bad_OutOfService` |
//! | 0x20 | WAITING_FOR_INITIAL_DATA | `Bad_WaitingForInitialData` |
//! | 0x40 | UNCERTAIN | `Uncertain` |
//! | 0x44 | LAST_USABLE | `Uncertain_LastUsableValue` |
//! | 0x50 | SENSOR_CAL | `Uncertain_SensorNotAccurate` |
//! | 0x54 | EGU_EXCEEDED | `Uncertain_EngineeringUnitsExceeded` |
//! | 0x58 | SUB_NORMAL | `Uncertain_SubNormal` |
//! | 0xC0 | GOOD | `Good` |
//! | 0xD8 | LOCAL_OVERRIDE | `Good_LocalOverride` |
//!
//! **LAST_KNOWN (0x14).** OPC 10000-8 Table A.61 maps it to `Bad_OutOfService`, the
//! same code as OUT_OF_SERVICE, and the reverse table has no entry for it: taken
//! literally, 0x14 would come back as 0x1C. Mapping it to
//! `Uncertain_NoCommunicationLastUsableValue` would turn a value the DA server
//! called Bad into a usable one, which we refuse to do. We follow the OPC UA
//! companion specification for PROFINET RIO (its "classic status codes" table),
//! which gives "no communication, last usable value" (status byte 0x14) the code
//! `Bad_CommunicationError` and "no communication, no last usable value" (0x18)
//! `Bad_NoCommunication`. The severity stays Bad and both bytes round-trip.
//!
//! # One-way mappings (UA → DA)
//!
//! UA codes without a DA sub-status map to the closest one, never across severity:
//!
//! | OPC-UA code | DA byte | why |
//! |---|---|---|
//! | `Bad_Timeout`, `Bad_ServerNotConnected` | 0x18 COMM_FAILURE | the source could not be reached |
//! | `Bad_TypeMismatch`, `Bad_NodeIdUnknown` | 0x04 CONFIG_ERROR | the point is configured wrongly |
//! | `Uncertain_NoCommunicationLastUsableValue` | 0x44 LAST_USABLE | last usable value, Uncertain like the source |
//! | any other Good / Uncertain / Bad code | 0xC0 / 0x40 / 0x00 | the non-specific code of its severity |
//!
//! A UA code with the reserved severity `11` is Bad and maps to the Bad column.
//!
//! # One-way mappings (DA → UA)
//!
//! A DA byte with an undocumented sub-status, or with `QQ = 10`, maps to the
//! non-specific UA code of its primary quality (`10` counts as Bad), with its limit.
//! `to_da` of that gives the non-specific DA byte of the same class and the same
//! limit, so the class and limit survive every byte even when the sub-status cannot.

use super::{Limit, Quality, Severity};

/// DA BAD, non-specific.
pub const BAD: u8 = 0x00;
/// DA BAD, configuration error.
pub const CONFIG_ERROR: u8 = 0x04;
/// DA BAD, not connected.
pub const NOT_CONNECTED: u8 = 0x08;
/// DA BAD, device failure.
pub const DEVICE_FAILURE: u8 = 0x0C;
/// DA BAD, sensor failure.
pub const SENSOR_FAILURE: u8 = 0x10;
/// DA BAD, last known value (communication failed, a last known value is available).
pub const LAST_KNOWN: u8 = 0x14;
/// DA BAD, communication failure (no last known value).
pub const COMM_FAILURE: u8 = 0x18;
/// DA BAD, out of service.
pub const OUT_OF_SERVICE: u8 = 0x1C;
/// DA BAD, waiting for initial data.
pub const WAITING_FOR_INITIAL_DATA: u8 = 0x20;
/// DA UNCERTAIN, non-specific.
pub const UNCERTAIN: u8 = 0x40;
/// DA UNCERTAIN, last usable value (68).
pub const LAST_USABLE: u8 = 0x44;
/// DA UNCERTAIN, sensor not accurate.
pub const SENSOR_CAL: u8 = 0x50;
/// DA UNCERTAIN, engineering units exceeded.
pub const EGU_EXCEEDED: u8 = 0x54;
/// DA UNCERTAIN, sub-normal.
pub const SUB_NORMAL: u8 = 0x58;
/// DA GOOD, non-specific (192).
pub const GOOD: u8 = 0xC0;
/// DA GOOD, local override.
pub const LOCAL_OVERRIDE: u8 = 0xD8;

/// The documented pairs that round-trip, DA byte (limit zero) to UA code.
pub(super) const PAIRS: &[(u8, Quality)] = &[
    (BAD, Quality::BAD),
    (CONFIG_ERROR, Quality::BAD_CONFIGURATION_ERROR),
    (NOT_CONNECTED, Quality::BAD_NOT_CONNECTED),
    (DEVICE_FAILURE, Quality::BAD_DEVICE_FAILURE),
    (SENSOR_FAILURE, Quality::BAD_SENSOR_FAILURE),
    (LAST_KNOWN, Quality::BAD_COMMUNICATION_ERROR),
    (COMM_FAILURE, Quality::BAD_NO_COMMUNICATION),
    (OUT_OF_SERVICE, Quality::BAD_OUT_OF_SERVICE),
    (
        WAITING_FOR_INITIAL_DATA,
        Quality::BAD_WAITING_FOR_INITIAL_DATA,
    ),
    (UNCERTAIN, Quality::UNCERTAIN),
    (LAST_USABLE, Quality::UNCERTAIN_LAST_USABLE_VALUE),
    (SENSOR_CAL, Quality::UNCERTAIN_SENSOR_NOT_ACCURATE),
    (EGU_EXCEEDED, Quality::UNCERTAIN_ENGINEERING_UNITS_EXCEEDED),
    (SUB_NORMAL, Quality::UNCERTAIN_SUB_NORMAL),
    (GOOD, Quality::GOOD),
    (LOCAL_OVERRIDE, Quality::GOOD_LOCAL_OVERRIDE),
];

/// UA codes that map to a DA byte without coming back (see the module docs).
const ONE_WAY: &[(Quality, u8)] = &[
    (Quality::BAD_TIMEOUT, COMM_FAILURE),
    (Quality::BAD_SERVER_NOT_CONNECTED, COMM_FAILURE),
    (Quality::BAD_TYPE_MISMATCH, CONFIG_ERROR),
    (Quality::BAD_NODE_ID_UNKNOWN, CONFIG_ERROR),
    (
        Quality::UNCERTAIN_NO_COMMUNICATION_LAST_USABLE_VALUE,
        LAST_USABLE,
    ),
];

/// The severity a DA byte's primary quality stands for (`10`, not used, is Bad).
pub(super) const fn da_severity(byte: u8) -> Severity {
    match byte >> 6 {
        0b11 => Severity::Good,
        0b01 => Severity::Uncertain,
        _ => Severity::Bad,
    }
}

const fn non_specific(severity: Severity) -> (u8, Quality) {
    match severity {
        Severity::Good => (GOOD, Quality::GOOD),
        Severity::Uncertain => (UNCERTAIN, Quality::UNCERTAIN),
        Severity::Bad => (BAD, Quality::BAD),
    }
}

impl Quality {
    /// The legacy OPC DA quality byte (`QQSSSSLL`) for this status code: primary
    /// quality from the severity, sub-status from the code (see the
    /// [mapping tables](crate::quality::da)), limit from the limit bits. Other flag bits are
    /// dropped.
    pub fn to_da(self) -> u8 {
        let code = self.code();
        let qqss = PAIRS
            .iter()
            .find(|(_, q)| q.0 == code)
            .map(|(b, _)| *b)
            .or_else(|| ONE_WAY.iter().find(|(q, _)| q.0 == code).map(|(_, b)| *b))
            .unwrap_or_else(|| non_specific(self.severity()).0);
        qqss | self.limit().bits()
    }

    /// The status code for a legacy OPC DA quality byte (`QQSSSSLL`). Documented
    /// sub-statuses map to their OPC-UA code, others to the non-specific code of the
    /// primary quality; the limit field becomes the limit bits (see
    /// [`with_limit`](Self::with_limit)). Never fails: every byte has a status code.
    pub fn from_da(byte: u8) -> Self {
        let qqss = byte & 0xFC;
        let base = PAIRS
            .iter()
            .find(|(b, _)| *b == qqss)
            .map_or_else(|| non_specific(da_severity(byte)).1, |(_, q)| *q);
        base.with_limit(Limit::from_bits(byte))
    }
}
