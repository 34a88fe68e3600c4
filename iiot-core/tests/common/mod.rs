//! Shared proptest strategies for iiot-core tests.
#![allow(dead_code, unreachable_pub)]

use iiot_core::quality::Quality;
use iiot_core::types::{
    BatchMetadata, DeviceId, MessageId, Sample, Sequence, TagPath, TelemetryBatch, Timestamp, Value,
};
use proptest::prelude::*;

/// A valid topic segment: printable, no whitespace, no `+ # /`, 1..=12 chars.
pub fn segment() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.:$%é漢-]{1,12}"
}

/// A valid tag path of 1..=3 segments.
pub fn tag_path() -> impl Strategy<Value = TagPath> {
    prop::collection::vec(segment(), 1..=3).prop_map(|s| TagPath::new(s.join("/")).unwrap())
}

/// Finite doubles plus the canonical NaN and both infinities (JSON cannot carry NaN payloads).
pub fn f64_json_safe() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => any::<f64>().prop_filter("finite", |f| f.is_finite()),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(-0.0f64),
    ]
}

/// Finite floats plus canonical NaN and infinities.
pub fn f32_json_safe() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => any::<f32>().prop_filter("finite", |f| f.is_finite()),
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
    ]
}

/// Any value (floats JSON-safe).
pub fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        f64_json_safe().prop_map(Value::Double),
        f32_json_safe().prop_map(Value::Float),
        any::<i64>().prop_map(Value::Int),
        any::<u64>().prop_map(Value::UInt),
        any::<bool>().prop_map(Value::Bool),
        ".{0,40}".prop_map(Value::String),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(Value::from),
    ]
}

/// A timestamp within a day of 2026-11-26, or anywhere in range.
pub fn timestamp() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        4 => 1_764_115_200_000_000_000i64..1_764_201_600_000_000_000i64,
        1 => 0i64..=i64::MAX,
    ]
    .prop_map(|ns| Timestamp::from_unix_nanos(ns).unwrap())
}

/// Any quality code.
pub fn quality() -> impl Strategy<Value = Quality> {
    prop_oneof![
        3 => Just(Quality::GOOD),
        1 => any::<u32>().prop_map(Quality::from_status_code),
        1 => any::<u8>().prop_map(Quality::from_da),
    ]
}

/// A valid sample.
pub fn sample() -> impl Strategy<Value = Sample> {
    (
        tag_path(),
        prop::option::weighted(0.9, value()),
        quality(),
        timestamp(),
    )
        .prop_map(|(t, v, q, ts)| {
            let q = if v.is_none() && q.is_good() {
                Quality::BAD
            } else {
                q
            };
            Sample::new(t, v, q, ts).unwrap()
        })
}

/// A valid batch of up to `max` samples.
pub fn batch(max: usize) -> impl Strategy<Value = TelemetryBatch> {
    (
        any::<u128>(),
        segment(),
        any::<u64>(),
        timestamp(),
        prop::collection::vec(sample(), 0..=max),
        prop::option::of(".{0,20}"),
        prop::option::of(".{0,20}"),
        0usize..4,
    )
        .prop_map(|(id, dev, seq, ts, samples, fw, gw, pool)| {
            // With pool > 0, tags repeat (several scans of the same tags in one
            // batch), which exercises the tag table of the Protobuf form.
            let samples = if pool == 0 || samples.is_empty() {
                samples
            } else {
                let tags: Vec<TagPath> =
                    samples.iter().take(pool).map(|s| s.tag().clone()).collect();
                samples
                    .into_iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let (_, v, q, t) = s.into_parts();
                        Sample::new(tags[i % tags.len()].clone(), v, q, t).unwrap()
                    })
                    .collect()
            };
            (id, dev, seq, ts, samples, fw, gw)
        })
        .prop_map(|(id, dev, seq, ts, samples, fw, gw)| TelemetryBatch {
            message_id: MessageId::from_u128(id),
            device_id: DeviceId::new(dev).unwrap(),
            seq: Sequence(seq),
            gateway_time: ts,
            samples,
            metadata: BatchMetadata {
                firmware_version: fw,
                gateway_id: gw,
            },
        })
}
