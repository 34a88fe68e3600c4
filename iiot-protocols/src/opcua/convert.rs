//! Between OPC-UA and core: node ids, values, status codes and timestamps.
//!
//! | OPC-UA | core [`Value`] |
//! |---|---|
//! | Boolean | `Bool` |
//! | SByte, Int16, Int32, Int64 | `Int` |
//! | Byte, UInt16, UInt32, UInt64 | `UInt` |
//! | Float | `Float` |
//! | Double | `Double` |
//! | String, LocalizedText (its text) | `String` |
//! | ByteString | `Bytes` |
//! | DateTime | `Int`: nanoseconds since 1970-01-01 UTC (negative before it) |
//! | Empty (no value) | no value: the reading carries only its status |
//! | arrays, structures, GUIDs, node ids, ... | [`ConvertError`]: the reading has no value and quality `Bad_NotSupported` |
//!
//! DateTime maps to an integer, not a new core value type: every sink already stores
//! `Int`, and nanoseconds since the Unix epoch is how core's own timestamps count. A
//! DateTime outside the `i64` range of nanoseconds (before 1677-09-21 or after
//! 2262-04-11, which includes OPC-UA's null DateTime of 1601-01-01) is a
//! [`ConvertError::DateTimeRange`].
//!
//! The status code becomes the quality unchanged ([`Quality::from_status_code`]): all
//! 32 bits, so sub-codes, limit bits and historian bits survive.

use std::str::FromStr;

use bytes::Bytes;
use iiot_core::quality::Quality;
use iiot_core::types::{Timestamp, Value};
use opcua::types::{
    ByteString, DataValue, DateTime, Identifier, LocalizedText, NodeId, StatusCode, UAString,
    Variant,
};

/// 100 ns ticks from 1601-01-01 (OPC-UA's epoch) to 1970-01-01.
const UNIX_EPOCH_TICKS: i64 = 116_444_736_000_000_000;

/// A node id, parsed and checked, in its string form (`ns=2;s=Line1.Temp`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeRef(pub(crate) NodeId);

impl NodeRef {
    /// Parses the string form of OPC-UA Part 6, 5.3.1.10: an optional `ns=<index>;`
    /// then `i=<number>`, `s=<text>`, `g=<guid>` or `b=<base64>`.
    ///
    /// # Errors
    /// [`ConvertError::NodeId`] when `text` is not a node id.
    pub fn parse(text: &str) -> Result<Self, ConvertError> {
        NodeId::from_str(text.trim())
            .map(Self)
            .map_err(|_| ConvertError::NodeId {
                text: text.to_owned(),
            })
    }

    /// The namespace index.
    pub fn namespace(&self) -> u16 {
        self.0.namespace
    }

    /// The numeric identifier, for a numeric node id.
    pub fn numeric(&self) -> Option<u32> {
        match self.0.identifier {
            Identifier::Numeric(n) => Some(n),
            _ => None,
        }
    }
}

impl std::fmt::Display for NodeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The library leaves out `ns=0;`, which parses back the same.
        self.0.fmt(f)
    }
}

impl FromStr for NodeRef {
    type Err = ConvertError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A value that has no core form, or a node id that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// Not the string form of a node id.
    #[error(
        "{text:?} is not a node id (expected `ns=<index>;i=<number>`, `;s=<text>`, `;g=<guid>` or `;b=<base64>`)"
    )]
    NodeId {
        /// What was given.
        text: String,
    },
    /// An OPC-UA type without a core value (arrays, structures, ...).
    #[error("OPC-UA values of type {type_name} have no core value type")]
    Unsupported {
        /// The OPC-UA type.
        type_name: String,
    },
    /// A DateTime outside the nanosecond range of an `i64`.
    #[error("DateTime {ticks} (100 ns ticks since 1601) is outside 1677-09-21..2262-04-11")]
    DateTimeRange {
        /// The raw ticks.
        ticks: i64,
    },
    /// A write value that does not fit the node's data type.
    #[error("{value} does not fit the node's data type {data_type}")]
    DoesNotFit {
        /// The value, as text.
        value: String,
        /// The OPC-UA data type.
        data_type: &'static str,
    },
    /// A node whose data type is not one a write can encode.
    #[error("writes to nodes of data type {data_type} are not supported")]
    WriteType {
        /// The data type's node id.
        data_type: String,
    },
}

impl ConvertError {
    /// The quality of a reading whose value failed to convert.
    pub fn quality(&self) -> Quality {
        Quality::BAD_NOT_SUPPORTED
    }
}

/// An OPC-UA DateTime as nanoseconds since the Unix epoch.
pub(crate) fn unix_nanos(dt: &DateTime) -> Result<i64, ConvertError> {
    let ticks = dt.ticks();
    ticks
        .checked_sub(UNIX_EPOCH_TICKS)
        .and_then(|t| t.checked_mul(100))
        .ok_or(ConvertError::DateTimeRange { ticks })
}

/// Nanoseconds since the Unix epoch as an OPC-UA DateTime (100 ns resolution).
pub(crate) fn date_time(unix_ns: i64) -> DateTime {
    DateTime::from(unix_ns.div_euclid(100) + UNIX_EPOCH_TICKS)
}

/// The core value of a variant; `Ok(None)` for Empty.
///
/// # Errors
/// [`ConvertError`] for a variant without a core value type.
pub fn to_value(v: &Variant) -> Result<Option<Value>, ConvertError> {
    Ok(Some(match v {
        Variant::Empty => return Ok(None),
        Variant::Boolean(b) => Value::Bool(*b),
        Variant::SByte(x) => Value::Int(i64::from(*x)),
        Variant::Int16(x) => Value::Int(i64::from(*x)),
        Variant::Int32(x) => Value::Int(i64::from(*x)),
        Variant::Int64(x) => Value::Int(*x),
        Variant::Byte(x) => Value::UInt(u64::from(*x)),
        Variant::UInt16(x) => Value::UInt(u64::from(*x)),
        Variant::UInt32(x) => Value::UInt(u64::from(*x)),
        Variant::UInt64(x) => Value::UInt(*x),
        Variant::Float(x) => Value::Float(*x),
        Variant::Double(x) => Value::Double(*x),
        Variant::String(s) => Value::String(s.value().clone().unwrap_or_default()),
        Variant::LocalizedText(t) => Value::String(t.text.value().clone().unwrap_or_default()),
        Variant::ByteString(b) => Value::Bytes(Bytes::from(b.value.clone().unwrap_or_default())),
        Variant::DateTime(dt) => Value::Int(unix_nanos(dt)?),
        other => {
            return Err(ConvertError::Unsupported {
                type_name: type_name(other),
            });
        }
    }))
}

fn type_name(v: &Variant) -> String {
    match v {
        Variant::Array(a) => format!("array of {:?}", a.value_type),
        other => format!("{:?}", other.type_id()),
    }
}

/// A data value as the parts of a core sample: value (or why there is none), quality
/// and time (source timestamp, else server timestamp, else `now`).
pub(crate) fn to_parts(
    dv: &DataValue,
    now: Timestamp,
) -> (Result<Option<Value>, ConvertError>, Quality, Timestamp) {
    let quality = Quality::from_status_code(dv.status.map_or(0, |s| s.bits()));
    let time = [dv.source_timestamp.as_ref(), dv.server_timestamp.as_ref()]
        .into_iter()
        .flatten()
        .filter(|t| !t.is_null())
        .find_map(|t| {
            unix_nanos(t)
                .ok()
                .and_then(|ns| Timestamp::from_unix_nanos(ns).ok())
        })
        .unwrap_or(now);
    let value = dv.value.as_ref().map_or(Ok(None), to_value);
    (value, quality, time)
}

/// The quality of an OPC-UA status code.
pub(crate) fn quality(status: StatusCode) -> Quality {
    Quality::from_status_code(status.bits())
}

/// The built-in data types a write can encode (namespace 0 numeric ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteType {
    Boolean,
    SByte,
    Byte,
    Int16,
    UInt16,
    Int32,
    UInt32,
    Int64,
    UInt64,
    Float,
    Double,
    String,
    DateTime,
    ByteString,
    LocalizedText,
}

impl WriteType {
    /// The type of a node whose DataType attribute is `id`.
    pub(crate) fn of(id: &NodeId) -> Result<Self, ConvertError> {
        let unsupported = || ConvertError::WriteType {
            data_type: id.to_string(),
        };
        if id.namespace != 0 {
            return Err(unsupported());
        }
        Ok(match id.as_u32().ok_or_else(unsupported)? {
            1 => Self::Boolean,
            2 => Self::SByte,
            3 => Self::Byte,
            4 => Self::Int16,
            5 => Self::UInt16,
            6 => Self::Int32,
            7 => Self::UInt32,
            8 => Self::Int64,
            9 => Self::UInt64,
            10 => Self::Float,
            11 => Self::Double,
            12 => Self::String,
            13 | 294 => Self::DateTime, // 294: UtcTime
            15 => Self::ByteString,
            21 => Self::LocalizedText,
            _ => return Err(unsupported()),
        })
    }

    /// The names of every type here ([`WriteType::name`]).
    pub(crate) const NAMES: [&'static str; 15] = [
        "Boolean",
        "SByte",
        "Byte",
        "Int16",
        "UInt16",
        "Int32",
        "UInt32",
        "Int64",
        "UInt64",
        "Float",
        "Double",
        "String",
        "DateTime",
        "ByteString",
        "LocalizedText",
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Boolean => "Boolean",
            Self::SByte => "SByte",
            Self::Byte => "Byte",
            Self::Int16 => "Int16",
            Self::UInt16 => "UInt16",
            Self::Int32 => "Int32",
            Self::UInt32 => "UInt32",
            Self::Int64 => "Int64",
            Self::UInt64 => "UInt64",
            Self::Float => "Float",
            Self::Double => "Double",
            Self::String => "String",
            Self::DateTime => "DateTime",
            Self::ByteString => "ByteString",
            Self::LocalizedText => "LocalizedText",
        }
    }

    /// The command kind a target of this type takes.
    pub(crate) fn kind(self) -> iiot_core::command::ValueKind {
        use iiot_core::command::ValueKind;
        match self {
            Self::Boolean => ValueKind::Bool,
            Self::Float | Self::Double => ValueKind::Number,
            Self::String | Self::LocalizedText => ValueKind::Text,
            Self::ByteString => ValueKind::Bytes,
            _ => ValueKind::Integer,
        }
    }

    /// `value` as a variant of this type: integers must be whole and in range, a float
    /// must hold the number without overflow (f32 rounds), booleans only to Boolean.
    pub(crate) fn encode(self, value: &Value) -> Result<Variant, ConvertError> {
        let no = || ConvertError::DoesNotFit {
            value: value.to_string(),
            data_type: self.name(),
        };
        let int = || -> Result<i128, ConvertError> {
            match *value {
                Value::Int(i) => Ok(i128::from(i)),
                Value::UInt(u) => Ok(i128::from(u)),
                Value::Double(_) | Value::Float(_) => {
                    let f = value.as_f64().ok_or_else(no)?;
                    // Whole and inside i128 (checked before the cast).
                    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1.0e38 {
                        #[allow(clippy::cast_possible_truncation)]
                        Ok(f as i128)
                    } else {
                        Err(no())
                    }
                }
                _ => Err(no()),
            }
        };
        let num = || -> Result<f64, ConvertError> {
            match value {
                Value::Bool(_) | Value::String(_) | Value::Bytes(_) => Err(no()),
                v => v.as_f64().ok_or_else(no),
            }
        };
        Ok(match self {
            Self::Boolean => match value {
                Value::Bool(b) => Variant::Boolean(*b),
                _ => return Err(no()),
            },
            Self::SByte => Variant::SByte(i8::try_from(int()?).map_err(|_| no())?),
            Self::Byte => Variant::Byte(u8::try_from(int()?).map_err(|_| no())?),
            Self::Int16 => Variant::Int16(i16::try_from(int()?).map_err(|_| no())?),
            Self::UInt16 => Variant::UInt16(u16::try_from(int()?).map_err(|_| no())?),
            Self::Int32 => Variant::Int32(i32::try_from(int()?).map_err(|_| no())?),
            Self::UInt32 => Variant::UInt32(u32::try_from(int()?).map_err(|_| no())?),
            Self::Int64 => Variant::Int64(i64::try_from(int()?).map_err(|_| no())?),
            Self::UInt64 => Variant::UInt64(u64::try_from(int()?).map_err(|_| no())?),
            Self::DateTime => Variant::DateTime(Box::new(date_time(
                i64::try_from(int()?).map_err(|_| no())?,
            ))),
            Self::Float => {
                let f = num()?;
                if f.is_finite() && f.abs() > f64::from(f32::MAX) {
                    return Err(no());
                }
                #[allow(clippy::cast_possible_truncation)]
                Variant::Float(f as f32)
            }
            Self::Double => Variant::Double(num()?),
            Self::String => match value {
                Value::String(s) => Variant::String(UAString::from(s.as_str())),
                _ => return Err(no()),
            },
            Self::LocalizedText => match value {
                Value::String(s) => {
                    Variant::LocalizedText(Box::new(LocalizedText::new("", s.as_str())))
                }
                _ => return Err(no()),
            },
            Self::ByteString => match value {
                Value::Bytes(b) => Variant::ByteString(ByteString::from(b.to_vec())),
                _ => return Err(no()),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn node_ids_parse_in_every_form() {
        for (text, ns) in [
            ("ns=2;s=Line1.Temp", 2),
            ("ns=2;i=5001", 2),
            ("i=2253", 0),
            ("ns=3;g=72962b91-fa75-4ae6-8d28-b404dc7daf63", 3),
            ("ns=1;b=M/RnY3g=", 1),
        ] {
            let n = NodeRef::parse(text).unwrap();
            assert_eq!(n.namespace(), ns, "{text}");
            assert_eq!(NodeRef::parse(&n.to_string()).unwrap(), n, "{text}");
        }
        assert_eq!(NodeRef::parse("ns=2;i=5001").unwrap().numeric(), Some(5001));
        for bad in [
            "",
            "ns=2",
            "ns=x;i=1",
            "ns=2;i=notanumber",
            "ns=70000;i=1",
            "s",
            "ns=2;q=1",
        ] {
            assert!(
                matches!(NodeRef::parse(bad), Err(ConvertError::NodeId { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn every_scalar_type_has_its_core_value() {
        let cases = [
            (Variant::Boolean(true), Value::Bool(true)),
            (Variant::SByte(-5), Value::Int(-5)),
            (Variant::Byte(200), Value::UInt(200)),
            (Variant::Int16(-1234), Value::Int(-1234)),
            (Variant::UInt16(54321), Value::UInt(54321)),
            (Variant::Int32(-123_456), Value::Int(-123_456)),
            (Variant::UInt32(4_000_000_000), Value::UInt(4_000_000_000)),
            (Variant::Int64(i64::MIN), Value::Int(i64::MIN)),
            (Variant::UInt64(u64::MAX), Value::UInt(u64::MAX)),
            (Variant::Float(1.5), Value::Float(1.5)),
            (Variant::Double(2.25), Value::Double(2.25)),
            (Variant::from("hello"), Value::String("hello".into())),
            (
                Variant::ByteString(ByteString::from(vec![1u8, 2, 3])),
                Value::Bytes(Bytes::from_static(&[1, 2, 3])),
            ),
            (
                Variant::DateTime(Box::new(date_time(1_700_000_000_123_456_700))),
                Value::Int(1_700_000_000_123_456_700),
            ),
        ];
        for (v, want) in cases {
            assert_eq!(to_value(&v).unwrap(), Some(want), "{v:?}");
        }
        assert_eq!(to_value(&Variant::Empty).unwrap(), None);
        let arr = Variant::from(vec![1i32, 2, 3]);
        assert!(matches!(
            to_value(&arr),
            Err(ConvertError::Unsupported { type_name }) if type_name.contains("array")
        ));
        assert!(matches!(
            to_value(&Variant::DateTime(Box::new(DateTime::null()))),
            Err(ConvertError::DateTimeRange { .. })
        ));
    }

    #[test]
    fn the_whole_status_code_is_the_quality_and_time_falls_back() {
        let now = Timestamp::from_unix_nanos(5).unwrap();
        let mut dv = DataValue::value_only(Variant::Double(1.0));
        dv.status = Some(StatusCode::from(0x808C_0000));
        let (v, q, t) = to_parts(&dv, now);
        assert_eq!(v.unwrap(), Some(Value::Double(1.0)));
        assert_eq!(q.status_code(), 0x808C_0000);
        assert_eq!(t, now, "no timestamps: now");
        dv.server_timestamp = Some(date_time(2_000_000_000));
        assert_eq!(to_parts(&dv, now).2.unix_nanos(), 2_000_000_000);
        dv.source_timestamp = Some(date_time(1_000_000_000));
        assert_eq!(
            to_parts(&dv, now).2.unix_nanos(),
            1_000_000_000,
            "source first"
        );
        dv.status = None;
        assert!(to_parts(&dv, now).1.is_good(), "no status is Good");
    }

    #[test]
    fn writes_check_range_and_kind() {
        use WriteType as W;
        assert_eq!(
            W::Int16.encode(&Value::Int(-5)).unwrap(),
            Variant::Int16(-5)
        );
        assert_eq!(
            W::Byte.encode(&Value::Double(7.0)).unwrap(),
            Variant::Byte(7)
        );
        assert!(W::Byte.encode(&Value::Int(256)).is_err());
        assert!(W::Byte.encode(&Value::Double(7.5)).is_err());
        assert!(W::UInt32.encode(&Value::Int(-1)).is_err());
        assert!(W::Boolean.encode(&Value::Int(1)).is_err());
        assert!(W::Double.encode(&Value::Bool(true)).is_err());
        assert!(W::Float.encode(&Value::Double(1e300)).is_err());
        assert_eq!(
            W::Double.encode(&Value::Int(3)).unwrap(),
            Variant::Double(3.0)
        );
        assert_eq!(
            W::String.encode(&Value::String("x".into())).unwrap(),
            Variant::from("x")
        );
        assert!(W::of(&NodeId::new(0, 11u32)).is_ok());
        assert!(
            W::of(&NodeId::new(0, 884u32)).is_err(),
            "Range is a structure"
        );
        assert!(W::of(&NodeId::new(2, 11u32)).is_err());
    }

    proptest! {
        #[test]
        fn date_times_round_trip_at_100ns(ns in -9_000_000_000_000_000_000i64..9_000_000_000_000_000_000) {
            let back = unix_nanos(&date_time(ns)).unwrap();
            prop_assert_eq!(back, ns.div_euclid(100) * 100);
        }

        #[test]
        fn integer_writes_round_trip(x in any::<i64>()) {
            for t in [WriteType::SByte, WriteType::Int16, WriteType::Int32, WriteType::Int64,
                      WriteType::Byte, WriteType::UInt16, WriteType::UInt32, WriteType::UInt64] {
                if let Ok(v) = t.encode(&Value::Int(x)) {
                    // What was written reads back as the same number.
                    let back = to_value(&v).unwrap().unwrap();
                    prop_assert_eq!(back.as_f64(), Value::Int(x).as_f64());
                    match back {
                        Value::Int(i) => prop_assert_eq!(i, x),
                        Value::UInt(u) => prop_assert_eq!(i128::from(u), i128::from(x)),
                        _ => prop_assert!(false),
                    }
                }
            }
        }
    }
}
