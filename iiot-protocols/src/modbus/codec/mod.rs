//! The value codec: registers ⇄ typed values, in every byte and word order.
//!
//! Decoding reorders the received registers into big-endian bytes (undo the word swap,
//! then the byte swap), reads the type from them and applies `raw × scale + offset`.
//! Encoding is the exact inverse. Unscaled tags decode to their native [`Value`]
//! variant (`u16`/`u32`/`u64` → `UInt`, signed → `Int`, `f32` → `Float`, `f64` →
//! `Double`); scaled tags decode to `Double`.

use iiot_core::types::Value;

use super::map::{ByteOrder, DataType, Tag};

/// Why a value could not be encoded for a write (or registers decoded for a read).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The value's type does not fit the tag's type (text for a number, a number for a string).
    #[error("a {given} value cannot be written to a {expected:?} tag")]
    TypeMismatch {
        /// The tag's type.
        expected: DataType,
        /// The value's type name.
        given: &'static str,
    },
    /// The raw value after removing scale and offset is outside the type's range (or not finite for an integer).
    #[error("raw value {raw} is out of range for {data_type:?}")]
    OutOfRange {
        /// The tag's type.
        data_type: DataType,
        /// The raw value.
        raw: f64,
    },
    /// A string longer than the tag's length.
    #[error("string of {len} bytes exceeds the tag's {max} bytes")]
    StringTooLong {
        /// Bytes given.
        len: usize,
        /// The tag's length.
        max: u16,
    },
    /// Fewer registers than the type needs.
    #[error("{needed} registers needed, {got} given")]
    Short {
        /// Registers needed.
        needed: usize,
        /// Registers given.
        got: usize,
    },
}

/// Registers in wire order → big-endian bytes.
pub fn words_to_bytes(words: &[u16], order: ByteOrder) -> Vec<u8> {
    let mut out = Vec::with_capacity(words.len() * 2);
    let mut push = |w: u16| {
        let [hi, lo] = w.to_be_bytes();
        if order.byte_swap() {
            out.extend_from_slice(&[lo, hi]);
        } else {
            out.extend_from_slice(&[hi, lo]);
        }
    };
    if order.word_swap() {
        words.iter().rev().copied().for_each(&mut push);
    } else {
        words.iter().copied().for_each(&mut push);
    }
    out
}

/// Big-endian bytes → registers in wire order (the inverse of [`words_to_bytes`]).
/// An odd trailing byte is padded with 0.
pub fn bytes_to_words(bytes: &[u8], order: ByteOrder) -> Vec<u16> {
    let mut words: Vec<u16> = bytes
        .chunks(2)
        .map(|c| {
            let hi = c[0];
            let lo = c.get(1).copied().unwrap_or(0);
            if order.byte_swap() {
                u16::from_be_bytes([lo, hi])
            } else {
                u16::from_be_bytes([hi, lo])
            }
        })
        .collect();
    if order.word_swap() {
        words.reverse();
    }
    words
}

fn arr<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    b.get(..N)?.try_into().ok()
}

/// Decodes a register tag from its registers (`words[0]` is the tag's first register).
///
/// # Errors
/// [`CodecError::Short`] when `words` is shorter than the tag.
pub fn decode_registers(tag: &Tag, words: &[u16]) -> Result<Value, CodecError> {
    let needed = usize::from(tag.width);
    let words = words.get(..needed).ok_or(CodecError::Short {
        needed,
        got: words.len(),
    })?;
    let first = words.first().copied().unwrap_or(0);
    let b = words_to_bytes(words, tag.order);
    let short = || CodecError::Short {
        needed,
        got: words.len(),
    };
    let raw = match tag.data_type {
        DataType::Bool => return Ok(Value::Bool(first != 0)),
        DataType::Bit => return Ok(Value::Bool(first >> (tag.bit & 15) & 1 == 1)),
        DataType::String => {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            let end = end.min(usize::from(tag.length));
            return Ok(Value::String(
                String::from_utf8_lossy(&b[..end]).into_owned(),
            ));
        }
        DataType::U16 => Value::UInt(u64::from(u16::from_be_bytes(arr(&b).ok_or_else(short)?))),
        DataType::I16 => Value::Int(i64::from(i16::from_be_bytes(arr(&b).ok_or_else(short)?))),
        DataType::U32 => Value::UInt(u64::from(u32::from_be_bytes(arr(&b).ok_or_else(short)?))),
        DataType::I32 => Value::Int(i64::from(i32::from_be_bytes(arr(&b).ok_or_else(short)?))),
        DataType::U64 => Value::UInt(u64::from_be_bytes(arr(&b).ok_or_else(short)?)),
        DataType::I64 => Value::Int(i64::from_be_bytes(arr(&b).ok_or_else(short)?)),
        DataType::F32 => Value::Float(f32::from_be_bytes(arr(&b).ok_or_else(short)?)),
        DataType::F64 => Value::Double(f64::from_be_bytes(arr(&b).ok_or_else(short)?)),
    };
    if tag.is_scaled() {
        let x = raw.as_f64().unwrap_or(f64::NAN);
        Ok(Value::Double(x * tag.scale + tag.offset))
    } else {
        Ok(raw)
    }
}

/// Encodes a value for a register tag into its registers, in wire order.
///
/// Numbers are converted to the tag's type after removing scale and offset
/// (`raw = (value − offset) / scale`); integer types round to nearest and refuse values
/// out of range. A `bit` tag encodes to the register with only its bit set (callers
/// merge it into the current register).
///
/// # Errors
/// [`CodecError::TypeMismatch`], [`CodecError::OutOfRange`] or [`CodecError::StringTooLong`].
pub fn encode_registers(tag: &Tag, value: &Value) -> Result<Vec<u16>, CodecError> {
    let dt = tag.data_type;
    let mismatch = || CodecError::TypeMismatch {
        expected: dt,
        given: value.type_name(),
    };
    let bytes: Vec<u8> = match dt {
        DataType::Bool | DataType::Bit => {
            let on = as_bool(value).ok_or_else(mismatch)?;
            let w: u16 = if dt == DataType::Bit {
                u16::from(on) << (tag.bit & 15)
            } else {
                u16::from(on)
            };
            return Ok(vec![w]);
        }
        DataType::String => {
            let Value::String(s) = value else {
                return Err(mismatch());
            };
            if s.len() > usize::from(tag.length) {
                return Err(CodecError::StringTooLong {
                    len: s.len(),
                    max: tag.length,
                });
            }
            let mut b = s.as_bytes().to_vec();
            b.resize(usize::from(tag.width) * 2, 0);
            b
        }
        // Unscaled floats keep their exact bits (NaN payloads, signalling NaNs, -0.0).
        DataType::F32 if !tag.is_scaled() && matches!(value, Value::Float(_)) => {
            let Value::Float(f) = value else {
                return Err(mismatch());
            };
            f.to_be_bytes().to_vec()
        }
        DataType::F32 | DataType::F64 => {
            let raw = unscale(tag, value).ok_or_else(mismatch)?;
            if dt == DataType::F32 {
                (raw as f32).to_be_bytes().to_vec()
            } else {
                raw.to_be_bytes().to_vec()
            }
        }
        DataType::U16 | DataType::I16 | DataType::U32 | DataType::I32 => {
            let (lo, hi) = match dt {
                DataType::U16 => (0, i128::from(u16::MAX)),
                DataType::I16 => (i128::from(i16::MIN), i128::from(i16::MAX)),
                DataType::U32 => (0, i128::from(u32::MAX)),
                _ => (i128::from(i32::MIN), i128::from(i32::MAX)),
            };
            let n = integer(tag, value, lo, hi).ok_or_else(mismatch)??;
            let full = n.to_be_bytes();
            let w = usize::from(tag.width) * 2;
            full[full.len() - w..].to_vec()
        }
        DataType::U64 => {
            let n = integer(tag, value, 0, i128::from(u64::MAX)).ok_or_else(mismatch)??;
            (n as u64).to_be_bytes().to_vec()
        }
        DataType::I64 => {
            let n = integer(tag, value, i128::from(i64::MIN), i128::from(i64::MAX))
                .ok_or_else(mismatch)??;
            (n as i64).to_be_bytes().to_vec()
        }
    };
    Ok(bytes_to_words(&bytes, tag.order))
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Int(i) => Some(*i != 0),
        Value::UInt(u) => Some(*u != 0),
        _ => None,
    }
}

/// The raw float value for a float tag: exact for unscaled values (keeps NaN payloads, -0.0).
fn unscale(tag: &Tag, v: &Value) -> Option<f64> {
    let x = match v {
        Value::Double(d) => *d,
        Value::Float(f) => f64::from(*f),
        Value::Int(i) => *i as f64,
        Value::UInt(u) => *u as f64,
        _ => return None,
    };
    Some(if tag.is_scaled() {
        (x - tag.offset) / tag.scale
    } else {
        x
    })
}

/// The raw integer for an integer tag; `None` on a type mismatch, `Some(Err)` when out of range.
fn integer(tag: &Tag, v: &Value, lo: i128, hi: i128) -> Option<Result<i128, CodecError>> {
    let exact = match v {
        Value::Int(i) if !tag.is_scaled() => Some(i128::from(*i)),
        Value::UInt(u) if !tag.is_scaled() => Some(i128::from(*u)),
        Value::Int(_) | Value::UInt(_) | Value::Double(_) | Value::Float(_) => None,
        _ => return None,
    };
    let n = if let Some(n) = exact {
        n
    } else {
        {
            let raw = unscale(tag, v)?.round();
            // Exclusive bound: 2^64 and beyond cannot be represented by the types here.
            if !raw.is_finite() || raw.abs() >= 18_446_744_073_709_551_616.0 * 2.0 {
                return Some(Err(CodecError::OutOfRange {
                    data_type: tag.data_type,
                    raw,
                }));
            }
            raw as i128
        }
    };
    if n < lo || n > hi {
        return Some(Err(CodecError::OutOfRange {
            data_type: tag.data_type,
            raw: n as f64,
        }));
    }
    Some(Ok(n))
}

#[cfg(test)]
mod tests;
