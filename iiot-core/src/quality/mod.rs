//! Quality: OPC-UA status codes and the legacy OPC DA quality byte.
//! (Placeholder: the full mapping tables land with the quality module.)

/// The quality of a value, held as an OPC-UA `StatusCode` (32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Quality(u32);

impl Quality {
    /// Good (0x00000000).
    pub const GOOD: Self = Self(0);
    /// Bad, non-specific (0x80000000).
    pub const BAD: Self = Self(0x8000_0000);
    /// From a raw OPC-UA status code.
    pub const fn from_status_code(code: u32) -> Self {
        Self(code)
    }
    /// The raw OPC-UA status code.
    pub const fn status_code(self) -> u32 {
        self.0
    }
    /// Whether the severity is Good.
    pub const fn is_good(self) -> bool {
        self.0 >> 30 == 0
    }
}

impl Quality {
    /// The legacy OPC DA quality byte (placeholder mapping by severity only).
    pub const fn to_da(self) -> u8 {
        match self.0 >> 30 {
            0 => 0xC0,
            1 => 0x40,
            _ => 0x00,
        }
    }
    /// From a legacy OPC DA quality byte (placeholder mapping by class only).
    pub const fn from_da(b: u8) -> Self {
        match b >> 6 {
            3 => Self::GOOD,
            1 => Self(0x4000_0000),
            _ => Self::BAD,
        }
    }
}
