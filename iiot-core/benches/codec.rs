//! Codec benchmark: encode and decode of a 50-sample telemetry batch, Protobuf vs
//! the JSON form, in one run, with bytes per message and the ratios.
//!
//! Run: `cargo bench -p iiot-core --bench codec`. Goal (issue #3): Protobuf at
//! least 3x smaller and at least 5x faster to decode than the JSON form.

use std::hint::black_box;
use std::time::{Duration, Instant};

use iiot_core::codec::{Limits, json, protobuf};
use iiot_core::quality::Quality;
use iiot_core::types::{
    BatchMetadata, DeviceId, MessageId, Sample, Sequence, TagPath, TelemetryBatch, Timestamp, Value,
};

/// A realistic batch: 50 tags of a filling line, mostly analog values with
/// measurement noise, some states and counters, per-sample source times within
/// the last second, a few non-Good qualities.
fn batch(distinct_tags: u32) -> TelemetryBatch {
    let base: i64 = 1_764_120_152_000_000_000;
    let mut samples = Vec::with_capacity(50);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..50u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let t = i % distinct_tags;
        let tag = TagPath::new(format!(
            "line{}/filler{}/{}_{:02}",
            t % 3 + 1,
            t % 4 + 1,
            ["level", "pressure", "temperature", "flow", "valve_position"][t as usize % 5],
            t
        ))
        .unwrap();
        let time = Timestamp::from_unix_nanos(base - (x % 1_000_000_000) as i64).unwrap();
        let value = match i % 10 {
            0..=6 => Value::Double((x % 100_000) as f64 / 1000.0 + 0.000_123),
            7 => Value::Bool(x.is_multiple_of(2)),
            8 => Value::Int((x % 1_000_000) as i64),
            _ => Value::Float((x % 10_000) as f32 / 100.0),
        };
        let quality = if i % 17 == 0 {
            Quality::from_da(68)
        } else {
            Quality::GOOD
        };
        samples.push(Sample::new(tag, Some(value), quality, time).unwrap());
    }
    TelemetryBatch {
        message_id: MessageId::from_parts(1_764_120_152_000, 0xABCD),
        device_id: DeviceId::new("filler-plc-07").unwrap(),
        seq: Sequence(1_234_567),
        gateway_time: Timestamp::from_unix_nanos(base).unwrap(),
        samples,
        metadata: BatchMetadata {
            firmware_version: Some("2.4.1".into()),
            gateway_id: Some("gw-hall3".into()),
        },
    }
}

/// Median ns per call over `rounds` timed rounds of about 100 ms each.
fn measure(mut f: impl FnMut()) -> f64 {
    let warm = Instant::now();
    let mut n = 0u64;
    while warm.elapsed() < Duration::from_millis(300) {
        f();
        n += 1;
    }
    let per_round = (n / 3).max(1);
    let mut rounds: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_round {
                f();
            }
            t.elapsed().as_nanos() as f64 / per_round as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() / 2]
}

fn run(name: &str, b: &TelemetryBatch) {
    let limits = Limits::default();
    let pb = protobuf::encode_telemetry(b);
    let js = json::encode_telemetry(b);
    assert_eq!(&protobuf::decode_telemetry(&pb, &limits).unwrap(), b);
    assert_eq!(&json::decode_telemetry(&js, &limits).unwrap(), b);

    let pb_enc = measure(|| {
        black_box(protobuf::encode_telemetry(black_box(b)));
    });
    let js_enc = measure(|| {
        black_box(json::encode_telemetry(black_box(b)));
    });
    let pb_dec = measure(|| {
        black_box(protobuf::decode_telemetry(black_box(&pb), &limits).unwrap());
    });
    let js_dec = measure(|| {
        black_box(json::decode_telemetry(black_box(&js), &limits).unwrap());
    });
    println!("\n{name}");
    println!("                                 protobuf        json   ratio (json/protobuf)");
    println!(
        "bytes per message            {:>12} {:>11} {:>7.2}x",
        pb.len(),
        js.len(),
        js.len() as f64 / pb.len() as f64
    );
    println!(
        "encode, us per message       {:>12.2} {:>11.2} {:>7.2}x",
        pb_enc / 1e3,
        js_enc / 1e3,
        js_enc / pb_enc
    );
    println!(
        "decode, us per message       {:>12.2} {:>11.2} {:>7.2}x",
        pb_dec / 1e3,
        js_dec / 1e3,
        js_dec / pb_dec
    );
    println!(
        "decode, messages per second  {:>12.0} {:>11.0}",
        1e9 / pb_dec,
        1e9 / js_dec
    );
    let size_ok = js.len() as f64 / pb.len() as f64 >= 3.0;
    let speed_ok = js_dec / pb_dec >= 5.0;
    println!(
        "goals: >= 3x smaller: {}; >= 5x faster decode: {}",
        if size_ok { "met" } else { "MISSED" },
        if speed_ok { "met" } else { "MISSED" }
    );
}

fn main() {
    // `cargo test --benches` / `cargo bench --no-run` pass no `--bench`; only `cargo bench` runs.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    run(
        "50-sample batch, 50 distinct tags (one scan of 50 tags)",
        &batch(50),
    );
    run(
        "50-sample batch, 10 tags x 5 scans (store-and-forward batching)",
        &batch(10),
    );
}
