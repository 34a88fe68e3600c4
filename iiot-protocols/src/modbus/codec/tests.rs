use super::*;
use crate::modbus::map::{Area, RegisterMap, TagConfig};

fn tag(dt: DataType, order: ByteOrder) -> Tag {
    tag_with(dt, order, |_| {})
}

fn tag_with(dt: DataType, order: ByteOrder, f: impl FnOnce(&mut TagConfig)) -> Tag {
    let mut c = TagConfig::new("t", Area::HoldingRegister, 0, dt);
    c.order = order;
    if dt == DataType::String {
        c.length = Some(5);
    }
    if dt == DataType::Bit {
        c.bit = Some(3);
    }
    f(&mut c);
    let map = RegisterMap::from_config(&crate::modbus::map::MapConfig {
        poll_groups: std::collections::BTreeMap::new(),
        tags: vec![c],
    })
    .unwrap();
    map.tags()[0].clone()
}

use ByteOrder::{Abcd, Badc, Cdab, Dcba};

/// (type, order, wire words, value): every type in every order.
#[allow(clippy::too_many_lines, clippy::many_single_char_names)]
fn golden() -> Vec<(DataType, ByteOrder, Vec<u16>, Value)> {
    use DataType::*;
    let mut v = vec![
        // 16-bit: only the byte swap matters.
        (U16, Abcd, vec![0x1234], Value::UInt(0x1234)),
        (U16, Cdab, vec![0x1234], Value::UInt(0x1234)),
        (U16, Badc, vec![0x3412], Value::UInt(0x1234)),
        (U16, Dcba, vec![0x3412], Value::UInt(0x1234)),
        (U16, Abcd, vec![0xFFFF], Value::UInt(65535)),
        (U16, Abcd, vec![0x0000], Value::UInt(0)),
        (I16, Abcd, vec![0x8000], Value::Int(-32768)),
        (I16, Badc, vec![0x0080], Value::Int(-32768)),
        (I16, Abcd, vec![0x7FFF], Value::Int(32767)),
        (I16, Dcba, vec![0xFEFF], Value::Int(-2)),
        (I16, Cdab, vec![0xFFFE], Value::Int(-2)),
        // 32-bit integers.
        (U32, Abcd, vec![0x1234, 0x5678], Value::UInt(0x1234_5678)),
        (U32, Cdab, vec![0x5678, 0x1234], Value::UInt(0x1234_5678)),
        (U32, Badc, vec![0x3412, 0x7856], Value::UInt(0x1234_5678)),
        (U32, Dcba, vec![0x7856, 0x3412], Value::UInt(0x1234_5678)),
        (
            U32,
            Abcd,
            vec![0xFFFF, 0xFFFF],
            Value::UInt(u64::from(u32::MAX)),
        ),
        (
            I32,
            Abcd,
            vec![0x8000, 0x0000],
            Value::Int(i64::from(i32::MIN)),
        ),
        (
            I32,
            Cdab,
            vec![0x0000, 0x8000],
            Value::Int(i64::from(i32::MIN)),
        ),
        (
            I32,
            Badc,
            vec![0x0080, 0x0000],
            Value::Int(i64::from(i32::MIN)),
        ),
        (
            I32,
            Dcba,
            vec![0x0000, 0x0080],
            Value::Int(i64::from(i32::MIN)),
        ),
        (
            I32,
            Abcd,
            vec![0x7FFF, 0xFFFF],
            Value::Int(i64::from(i32::MAX)),
        ),
        (
            I32,
            Dcba,
            vec![0xFFFF, 0xFF7F],
            Value::Int(i64::from(i32::MAX)),
        ),
        (I32, Abcd, vec![0xFFFF, 0xFFFE], Value::Int(-2)),
        // 64-bit integers (ABCDEFGH, GHEFCDAB, BADCFEHG, HGFEDCBA).
        (
            U64,
            Abcd,
            vec![0x0102, 0x0304, 0x0506, 0x0708],
            Value::UInt(0x0102_0304_0506_0708),
        ),
        (
            U64,
            Cdab,
            vec![0x0708, 0x0506, 0x0304, 0x0102],
            Value::UInt(0x0102_0304_0506_0708),
        ),
        (
            U64,
            Badc,
            vec![0x0201, 0x0403, 0x0605, 0x0807],
            Value::UInt(0x0102_0304_0506_0708),
        ),
        (
            U64,
            Dcba,
            vec![0x0807, 0x0605, 0x0403, 0x0201],
            Value::UInt(0x0102_0304_0506_0708),
        ),
        (U64, Abcd, vec![0xFFFF; 4], Value::UInt(u64::MAX)),
        (I64, Abcd, vec![0x8000, 0, 0, 0], Value::Int(i64::MIN)),
        (I64, Cdab, vec![0, 0, 0, 0x8000], Value::Int(i64::MIN)),
        (I64, Badc, vec![0x0080, 0, 0, 0], Value::Int(i64::MIN)),
        (I64, Dcba, vec![0, 0, 0, 0x0080], Value::Int(i64::MIN)),
        (
            I64,
            Abcd,
            vec![0x7FFF, 0xFFFF, 0xFFFF, 0xFFFF],
            Value::Int(i64::MAX),
        ),
        (I64, Abcd, vec![0xFFFF; 4], Value::Int(-1)),
        // f32 123.456 = 0x42F6E979.
        (F32, Abcd, vec![0x42F6, 0xE979], Value::Float(123.456)),
        (F32, Cdab, vec![0xE979, 0x42F6], Value::Float(123.456)),
        (F32, Badc, vec![0xF642, 0x79E9], Value::Float(123.456)),
        (F32, Dcba, vec![0x79E9, 0xF642], Value::Float(123.456)),
        // f64 pi = 0x400921FB54442D18.
        (
            F64,
            Abcd,
            vec![0x4009, 0x21FB, 0x5444, 0x2D18],
            Value::Double(std::f64::consts::PI),
        ),
        (
            F64,
            Cdab,
            vec![0x2D18, 0x5444, 0x21FB, 0x4009],
            Value::Double(std::f64::consts::PI),
        ),
        (
            F64,
            Badc,
            vec![0x0940, 0xFB21, 0x4454, 0x182D],
            Value::Double(std::f64::consts::PI),
        ),
        (
            F64,
            Dcba,
            vec![0x182D, 0x4454, 0xFB21, 0x0940],
            Value::Double(std::f64::consts::PI),
        ),
        // Strings: byte order inside registers, NUL padded.
        (
            String,
            Abcd,
            vec![0x4845, 0x4C4C, 0x4F00],
            Value::String("HELLO".into()),
        ),
        (
            String,
            Badc,
            vec![0x4548, 0x4C4C, 0x004F],
            Value::String("HELLO".into()),
        ),
        (
            String,
            Abcd,
            vec![0x4849, 0x0000, 0x0000],
            Value::String("HI".into()),
        ),
        (
            String,
            Abcd,
            vec![0, 0, 0],
            Value::String(std::string::String::new()),
        ),
    ];
    // Special floats in all four orders.
    for (bits, val) in [
        (0x7FC0_0000u32, f32::NAN),
        (0x7F80_0000, f32::INFINITY),
        (0xFF80_0000, f32::NEG_INFINITY),
        (0x8000_0000, -0.0f32),
        (0x0000_0001, f32::from_bits(1)),
        (0x7F7F_FFFF, f32::MAX),
    ] {
        assert_eq!(val.to_bits(), bits);
        let [a, b, c, d] = bits.to_be_bytes();
        let w = |x: u8, y: u8| u16::from_be_bytes([x, y]);
        v.push((F32, Abcd, vec![w(a, b), w(c, d)], Value::Float(val)));
        v.push((F32, Cdab, vec![w(c, d), w(a, b)], Value::Float(val)));
        v.push((F32, Badc, vec![w(b, a), w(d, c)], Value::Float(val)));
        v.push((F32, Dcba, vec![w(d, c), w(b, a)], Value::Float(val)));
    }
    for (bits, val) in [
        (0x7FF8_0000_0000_0000u64, f64::NAN),
        (0x7FF0_0000_0000_0000, f64::INFINITY),
        (0xFFF0_0000_0000_0000, f64::NEG_INFINITY),
        (0x8000_0000_0000_0000, -0.0f64),
        (0x7FEF_FFFF_FFFF_FFFF, f64::MAX),
    ] {
        assert_eq!(val.to_bits(), bits);
        let b = bits.to_be_bytes();
        let w = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let s = |i: usize| u16::from_be_bytes([b[i + 1], b[i]]);
        v.push((F64, Abcd, vec![w(0), w(2), w(4), w(6)], Value::Double(val)));
        v.push((F64, Cdab, vec![w(6), w(4), w(2), w(0)], Value::Double(val)));
        v.push((F64, Badc, vec![s(0), s(2), s(4), s(6)], Value::Double(val)));
        v.push((F64, Dcba, vec![s(6), s(4), s(2), s(0)], Value::Double(val)));
    }
    v
}

#[test]
fn golden_vectors_decode() {
    for (dt, order, words, want) in golden() {
        let t = tag(dt, order);
        let got = decode_registers(&t, &words).unwrap();
        assert_eq!(got, want, "{dt:?} {order:?} {words:04X?}");
    }
}

#[test]
fn golden_vectors_encode() {
    for (dt, order, words, value) in golden() {
        let t = tag(dt, order);
        let got = encode_registers(&t, &value).unwrap();
        assert_eq!(got, words, "{dt:?} {order:?} {value:?}");
    }
}

#[test]
fn every_order_round_trips_every_type() {
    use DataType::*;
    for dt in [U16, I16, U32, I32, U64, I64, F32, F64] {
        for order in ByteOrder::ALL {
            let t = tag(dt, order);
            let words: Vec<u16> = (0..t.width)
                .map(|i| 0x1100 * (i + 1) + 0x22 * i + 1)
                .collect();
            let v = decode_registers(&t, &words).unwrap();
            assert_eq!(encode_registers(&t, &v).unwrap(), words, "{dt:?} {order:?}");
        }
    }
}

#[test]
fn bit_and_bool() {
    let t = tag(DataType::Bit, Abcd);
    assert_eq!(decode_registers(&t, &[0b1000]).unwrap(), Value::Bool(true));
    assert_eq!(decode_registers(&t, &[0b0111]).unwrap(), Value::Bool(false));
    assert_eq!(
        encode_registers(&t, &Value::Bool(true)).unwrap(),
        vec![0b1000]
    );
}

#[test]
fn scale_and_offset() {
    let t = tag_with(DataType::I16, Abcd, |c| {
        c.scale = 0.1;
        c.offset = -10.0;
    });
    // raw -500 → -50 - 10 = -60
    let v = decode_registers(&t, &[(-500i16) as u16]).unwrap();
    assert!((v.as_f64().unwrap() + 60.0).abs() < 1e-9, "{v:?}");
    assert_eq!(
        encode_registers(&t, &Value::Double(-60.0)).unwrap(),
        vec![(-500i16) as u16]
    );
    // 3276.8 → raw 32768 > i16::MAX
    assert!(matches!(
        encode_registers(&t, &Value::Double(3_276.8)),
        Err(CodecError::OutOfRange { .. })
    ));
    assert!(matches!(
        encode_registers(&t, &Value::Double(f64::NAN)),
        Err(CodecError::OutOfRange { .. })
    ));
    let f = tag_with(DataType::F32, Cdab, |c| c.scale = 2.0);
    let w = encode_registers(&f, &Value::Double(3.0)).unwrap();
    assert_eq!(decode_registers(&f, &w).unwrap(), Value::Double(3.0));
}

#[test]
fn encode_refuses_wrong_type_and_range() {
    let t = tag(DataType::U16, Abcd);
    assert!(matches!(
        encode_registers(&t, &Value::String("x".into())),
        Err(CodecError::TypeMismatch { .. })
    ));
    assert!(matches!(
        encode_registers(&t, &Value::Int(-1)),
        Err(CodecError::OutOfRange { .. })
    ));
    assert!(matches!(
        encode_registers(&t, &Value::UInt(65_536)),
        Err(CodecError::OutOfRange { .. })
    ));
    let s = tag(DataType::String, Abcd);
    assert!(matches!(
        encode_registers(&s, &Value::String("TOOLONG".into())),
        Err(CodecError::StringTooLong { len: 7, max: 5 })
    ));
    let u = tag(DataType::U64, Abcd);
    assert!(matches!(
        encode_registers(&u, &Value::Double(1e30)),
        Err(CodecError::OutOfRange { .. })
    ));
}

#[test]
fn short_input_is_an_error_not_a_panic() {
    for dt in [
        DataType::U32,
        DataType::F64,
        DataType::String,
        DataType::U16,
    ] {
        let t = tag(dt, Abcd);
        assert!(decode_registers(&t, &[]).is_err());
    }
}

#[test]
fn invalid_utf8_decodes_lossy() {
    let t = tag(DataType::String, Abcd);
    let v = decode_registers(&t, &[0xFFFE, 0x4142, 0x4300]).unwrap();
    assert_eq!(v, Value::String("\u{FFFD}\u{FFFD}ABC".into()));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn numeric() -> impl Strategy<Value = DataType> {
        prop::sample::select(vec![
            DataType::U16,
            DataType::I16,
            DataType::U32,
            DataType::I32,
            DataType::U64,
            DataType::I64,
            DataType::F32,
            DataType::F64,
        ])
    }

    proptest! {
        /// Any register words decode, and encode back to the same words (unscaled).
        #[test]
        fn decode_then_encode_is_identity(dt in numeric(), o in 0usize..4, words in prop::collection::vec(any::<u16>(), 4)) {
            let t = tag(dt, ByteOrder::ALL[o]);
            let w = &words[..usize::from(t.width)];
            let v = decode_registers(&t, w).unwrap();
            prop_assert_eq!(encode_registers(&t, &v).unwrap(), w.to_vec());
        }

        /// Decoding never panics, whatever the tag and the words.
        #[test]
        fn decode_never_panics(dt in numeric(), o in 0usize..4, scale in -1e6f64..1e6, words in prop::collection::vec(any::<u16>(), 0..6)) {
            let t = tag_with(dt, ByteOrder::ALL[o], |c| if scale != 0.0 { c.scale = scale });
            let _ = decode_registers(&t, &words);
        }

        /// Strings: any text up to the length round-trips in both byte orders.
        #[test]
        fn strings_round_trip(s in "[ -~]{0,5}", swap in any::<bool>()) {
            let t = tag(DataType::String, if swap { ByteOrder::Badc } else { ByteOrder::Abcd });
            let w = encode_registers(&t, &Value::String(s.clone())).unwrap();
            prop_assert_eq!(decode_registers(&t, &w).unwrap(), Value::String(s));
        }
    }
}
