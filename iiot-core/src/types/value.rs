//! Typed values.

use std::fmt;

use bytes::Bytes;

/// A typed value of a tag.
///
/// Equality is exact: floats compare by bit pattern, so `NaN == NaN` when the bits
/// agree and `0.0 != -0.0`. That is the equality a codec round trip needs; use
/// [`Value::as_f64`] for numeric comparison.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Value {
    /// IEEE 754 double.
    Double(f64),
    /// IEEE 754 single.
    Float(f32),
    /// Signed 64-bit integer.
    Int(i64),
    /// Unsigned 64-bit integer.
    UInt(u64),
    /// Boolean (coils, discrete inputs, bit tags).
    Bool(bool),
    /// UTF-8 text.
    String(String),
    /// Opaque bytes.
    Bytes(Bytes),
}

impl Value {
    /// The value as a double where that makes sense (numbers and booleans).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::Double(v) => Some(v),
            Self::Float(v) => Some(f64::from(v)),
            Self::Int(v) => Some(v as f64),
            Self::UInt(v) => Some(v as f64),
            Self::Bool(v) => Some(if v { 1.0 } else { 0.0 }),
            Self::String(_) | Self::Bytes(_) => None,
        }
    }

    /// A short name of the variant: `f64`, `f32`, `i64`, `u64`, `bool`, `string`, `bytes`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Double(_) => "f64",
            Self::Float(_) => "f32",
            Self::Int(_) => "i64",
            Self::UInt(_) => "u64",
            Self::Bool(_) => "bool",
            Self::String(_) => "string",
            Self::Bytes(_) => "bytes",
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Double(a), Self::Double(b)) => a.to_bits() == b.to_bits(),
            (Self::Float(a), Self::Float(b)) => a.to_bits() == b.to_bits(),
            (Self::Int(a), Self::Int(b)) => a == b,
            (Self::UInt(a), Self::UInt(b)) => a == b,
            (Self::Bool(a), Self::Bool(b)) => a == b,
            (Self::String(a), Self::String(b)) => a == b,
            (Self::Bytes(a), Self::Bytes(b)) => a == b,
            _ => false,
        }
    }
}
impl Eq for Value {}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Double(v) => write!(f, "{v}"),
            Self::Float(v) => write!(f, "{v}"),
            Self::Int(v) => write!(f, "{v}"),
            Self::UInt(v) => write!(f, "{v}"),
            Self::Bool(v) => write!(f, "{v}"),
            Self::String(v) => write!(f, "{v:?}"),
            Self::Bytes(v) => write!(f, "{} bytes", v.len()),
        }
    }
}

macro_rules! from_impl {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for Value { fn from(x: $t) -> Self { Self::$v(x.into()) } }
    )*};
}
from_impl!(f64 => Double, f32 => Float, i64 => Int, i32 => Int, i16 => Int, u64 => UInt, u32 => UInt, u16 => UInt, bool => Bool, String => String, &str => String, Bytes => Bytes, Vec<u8> => Bytes);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equality_is_bitwise_for_floats() {
        assert_eq!(Value::Double(f64::NAN), Value::Double(f64::NAN));
        assert_ne!(Value::Double(0.0), Value::Double(-0.0));
        assert_ne!(Value::Double(1.0), Value::Float(1.0));
        assert_eq!(Value::from(3u16), Value::UInt(3));
        assert_eq!(Value::Bool(true).as_f64(), Some(1.0));
    }
}
