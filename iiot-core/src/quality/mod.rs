//! Quality: OPC-UA status codes and the legacy OPC DA quality byte.
//!
//! A [`Quality`] is an OPC-UA `StatusCode` (OPC 10000-4 §7.39): 32 bits whose top
//! two bits are the [`Severity`], bits 16-27 the sub-code, and whose low 16 bits are
//! flags that add information without changing the meaning: structure and
//! semantics changed (bits 15, 14), the info type (bits 10-11), the [`Limit`] bits
//! (8-9), overflow (7) and the historian bits (0-4).
//!
//! Drivers report one of the named constants ([`Quality::BAD_NO_COMMUNICATION`],
//! [`Quality::UNCERTAIN_LAST_USABLE_VALUE`], …). Brownfield devices and historians
//! that speak the legacy OPC DA quality byte convert with [`Quality::to_da`] and
//! [`Quality::from_da`]; the exact mapping and which pairs round-trip are in
//! [`da`].
//!
//! ```
//! use iiot_core::quality::{Limit, Quality, Severity, da};
//!
//! let q = Quality::BAD_NO_COMMUNICATION;
//! assert_eq!(q.severity(), Severity::Bad);
//! assert_eq!(q.name(), Some("Bad_NoCommunication"));
//! assert_eq!(q.to_string(), "Bad_NoCommunication (0x80310000)");
//! assert_eq!(q.to_da(), da::COMM_FAILURE);
//!
//! let q = Quality::from_da(0x45); // Uncertain, last usable, low limited
//! assert_eq!(q, Quality::UNCERTAIN_LAST_USABLE_VALUE.with_limit(Limit::Low));
//! assert!(q.is_usable());
//! assert_eq!(q.to_da(), 0x45);
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

mod codes;
pub mod da;

/// The quality of a value, held as an OPC-UA `StatusCode` (32 bits).
///
/// Serialized (serde) as the plain `u32` status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Quality(u32);

/// The severity of a status code: its top two bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// `00`: the value can be used.
    Good,
    /// `01`: the value can be used with care.
    Uncertain,
    /// `10` (and the reserved `11`, which we treat as Bad): never use the value.
    Bad,
}

/// The limit bits of a status code (bits 8-9), the same two bits as the `LL` field
/// of an OPC DA quality byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Limit {
    /// `00`: the value moves freely.
    #[default]
    None,
    /// `01`: the value is at its lower limit.
    Low,
    /// `10`: the value is at its upper limit.
    High,
    /// `11`: the value is constant and cannot move.
    Constant,
}

impl Limit {
    /// The limit in the two low bits of `bits` (the DA `LL` field).
    pub const fn from_bits(bits: u8) -> Self {
        match bits & 0b11 {
            0b00 => Self::None,
            0b01 => Self::Low,
            0b10 => Self::High,
            _ => Self::Constant,
        }
    }

    /// The two-bit value (`0..=3`), as in the DA `LL` field.
    pub const fn bits(self) -> u8 {
        match self {
            Self::None => 0b00,
            Self::Low => 0b01,
            Self::High => 0b10,
            Self::Constant => 0b11,
        }
    }
}

/// What the info bits (0-9) of a status code describe: bits 10-11.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InfoType {
    /// `00`: the info bits are not used and should be zero.
    NotUsed,
    /// `01`: the info bits (limit, overflow, historian) describe a data value.
    DataValue,
    /// `10` or `11`: reserved.
    Reserved,
}

const SEVERITY_SHIFT: u32 = 30;
const CODE_MASK: u32 = 0xFFFF_0000;
const SUB_CODE_MASK: u32 = 0x0FFF_0000;
const STRUCTURE_CHANGED: u32 = 1 << 15;
const SEMANTICS_CHANGED: u32 = 1 << 14;
const INFO_TYPE_SHIFT: u32 = 10;
const INFO_TYPE_MASK: u32 = 0b11 << INFO_TYPE_SHIFT;
const INFO_TYPE_DATA_VALUE: u32 = 0b01 << INFO_TYPE_SHIFT;
const LIMIT_SHIFT: u32 = 8;
const LIMIT_MASK: u32 = 0b11 << LIMIT_SHIFT;
const OVERFLOW: u32 = 1 << 7;
const HISTORIAN_MASK: u32 = 0x1F;

impl Quality {
    /// From a raw OPC-UA status code.
    pub const fn from_status_code(code: u32) -> Self {
        Self(code)
    }

    /// The raw OPC-UA status code, flags included.
    pub const fn status_code(self) -> u32 {
        self.0
    }

    /// The code without its flag bits (the top 16 bits): what names the condition.
    pub const fn code(self) -> u32 {
        self.0 & CODE_MASK
    }

    /// The sub-code (bits 16-27), e.g. `0x031` for `Bad_NoCommunication`.
    pub const fn sub_code(self) -> u16 {
        ((self.0 & SUB_CODE_MASK) >> 16) as u16
    }

    /// The same code with every flag bit cleared.
    #[must_use]
    pub const fn without_flags(self) -> Self {
        Self(self.0 & CODE_MASK)
    }

    /// The severity from the top two bits; the reserved `11` counts as Bad.
    pub const fn severity(self) -> Severity {
        match self.0 >> SEVERITY_SHIFT {
            0b00 => Severity::Good,
            0b01 => Severity::Uncertain,
            _ => Severity::Bad,
        }
    }

    /// Whether the severity is Good.
    pub const fn is_good(self) -> bool {
        self.0 >> SEVERITY_SHIFT == 0
    }

    /// Whether the severity is Uncertain.
    pub const fn is_uncertain(self) -> bool {
        self.0 >> SEVERITY_SHIFT == 0b01
    }

    /// Whether the severity is Bad (including the reserved severity `11`).
    pub const fn is_bad(self) -> bool {
        self.0 >> SEVERITY_SHIFT >= 0b10
    }

    /// Whether the value may be used: Good or Uncertain.
    pub const fn is_usable(self) -> bool {
        !self.is_bad()
    }

    /// The OPC-UA symbolic name of the code (flags ignored), e.g.
    /// `"Bad_NoCommunication"`, when it is one of the named constants.
    pub fn name(self) -> Option<&'static str> {
        codes::name_of(self.code())
    }

    /// The info type (bits 10-11).
    pub const fn info_type(self) -> InfoType {
        match (self.0 & INFO_TYPE_MASK) >> INFO_TYPE_SHIFT {
            0b00 => InfoType::NotUsed,
            0b01 => InfoType::DataValue,
            _ => InfoType::Reserved,
        }
    }

    /// The limit bits (8-9). Read as they are, whatever the info type says: a
    /// server that sets them means them.
    pub const fn limit(self) -> Limit {
        Limit::from_bits(((self.0 & LIMIT_MASK) >> LIMIT_SHIFT) as u8)
    }

    /// The same code with the given limit bits. A limit other than
    /// [`Limit::None`] also sets the info type to DataValue, as OPC 10000-4
    /// requires for the limit bits to be meaningful. [`Limit::None`] clears the
    /// limit bits, and the DataValue info type too when no other info bit
    /// (overflow, historian) is set, so `q.with_limit(l).with_limit(Limit::None)`
    /// is `q` for a code without flags.
    #[must_use]
    pub const fn with_limit(self, limit: Limit) -> Self {
        let cleared = self.0 & !LIMIT_MASK;
        match limit {
            Limit::None => {
                let info_bits = cleared & (OVERFLOW | HISTORIAN_MASK);
                if info_bits == 0 && cleared & INFO_TYPE_MASK == INFO_TYPE_DATA_VALUE {
                    Self(cleared & !INFO_TYPE_MASK)
                } else {
                    Self(cleared)
                }
            }
            _ => Self(
                (cleared & !INFO_TYPE_MASK)
                    | INFO_TYPE_DATA_VALUE
                    | ((limit.bits() as u32) << LIMIT_SHIFT),
            ),
        }
    }

    /// Bit 15: the structure of the associated data value has changed.
    pub const fn structure_changed(self) -> bool {
        self.0 & STRUCTURE_CHANGED != 0
    }

    /// Bit 14: the semantics of the associated data value have changed (e.g. its
    /// engineering units); clients should re-read the metadata before using it.
    pub const fn semantics_changed(self) -> bool {
        self.0 & SEMANTICS_CHANGED != 0
    }

    /// Bit 7: more changes occurred than the monitored item's queue could hold.
    pub const fn overflow(self) -> bool {
        self.0 & OVERFLOW != 0
    }

    /// The historian bits (0-4): bits 0-1 raw / calculated / interpolated, bit 2
    /// partial, bit 3 extra data, bit 4 multi value.
    pub const fn historian_bits(self) -> u8 {
        (self.0 & HISTORIAN_MASK) as u8
    }
}

impl From<u32> for Quality {
    fn from(code: u32) -> Self {
        Self(code)
    }
}

impl From<Quality> for u32 {
    fn from(q: Quality) -> u32 {
        q.0
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Good => "Good",
            Self::Uncertain => "Uncertain",
            Self::Bad => "Bad",
        })
    }
}

/// `Bad_NoCommunication (0x80310000)`; a code we do not name prints its severity,
/// e.g. `unnamed Bad (0x80AB0000)`. The hex is the full code, flags included.
impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} (0x{:08X})", self.0),
            None => write!(f, "unnamed {} (0x{:08X})", self.severity(), self.0),
        }
    }
}

#[cfg(test)]
mod tests;
