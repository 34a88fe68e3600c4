//! Sink test helpers: batch builders, the rows a commit should leave behind, and
//! readers that load the samples table of either sink into the same shape.

use std::collections::HashSet;

use bytes::Bytes;
use iiot_core::quality::Quality;
use iiot_core::types::{
    DeviceId, MessageId, Sample, Sequence, TagPath, TelemetryBatch, Timestamp, Value,
};
use iiot_ingest::record::{AcceptedBatch, CommitBatch};

/// A timestamp from nanoseconds.
pub fn ts(ns: i64) -> Timestamp {
    Timestamp::from_unix_nanos(ns).unwrap()
}

/// 2026-01-01T00:00:00.123456789Z: has a sub-microsecond part on purpose.
pub const T0: i64 = 1_767_225_600_123_456_789;

/// A device id.
pub fn dev(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

/// A tag path.
pub fn tag(s: &str) -> TagPath {
    TagPath::new(s).unwrap()
}

/// An accepted batch with a fixed message id.
pub fn accepted(device: &str, seq: u64, id: u128, samples: Vec<Sample>) -> AcceptedBatch {
    let mut batch = TelemetryBatch::new(dev(device), Sequence(seq), samples);
    batch.message_id = MessageId::from_u128(id);
    batch.gateway_time = ts(T0);
    AcceptedBatch {
        topic: format!("acme/s1/a1/l1/plc/{device}/telemetry"),
        batch,
        received_at: ts(T0 + 1_000_000),
    }
}

/// `n` Good double samples, one per millisecond from `t`.
pub fn doubles(n: usize, t: i64) -> Vec<Sample> {
    (0..n)
        .map(|i| {
            Sample::good(
                tag(&format!("line1/tag{}", i % 50)),
                i as f64 * 0.5,
                ts(t + i as i64 * 1_000_000),
            )
        })
        .collect()
}

/// One sample of every value kind, including the edge values.
pub fn all_types(t: i64) -> Vec<Sample> {
    let values: Vec<Value> = vec![
        Value::Double(1.5),
        Value::Double(f64::NAN),
        Value::Double(-0.0),
        Value::Double(f64::INFINITY),
        Value::Double(f64::MIN_POSITIVE),
        Value::Float(-0.0),
        Value::Float(f32::NAN),
        Value::Float(3.25),
        Value::Int(i64::MIN),
        Value::Int(i64::MAX),
        Value::Int(0),
        Value::UInt(u64::MAX),
        Value::UInt(0),
        Value::UInt(i64::MAX as u64 + 1),
        Value::Bool(true),
        Value::Bool(false),
        Value::String("héllo ✓ 'quoted' \"x\"".into()),
        Value::String(String::new()),
        Value::Bytes(Bytes::from_static(&[0, 255, 1, 0])),
        Value::Bytes(Bytes::new()),
    ];
    let mut out: Vec<Sample> = values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let q = if i % 3 == 0 {
                Quality::UNCERTAIN_LAST_USABLE_VALUE
            } else {
                Quality::GOOD
            };
            Sample::new(tag(&format!("types/v{i}")), Some(v), q, ts(t + i as i64)).unwrap()
        })
        .collect();
    out.push(Sample::without_value(
        tag("types/none"),
        Quality::BAD_NO_COMMUNICATION,
        ts(t + 100),
    ));
    out
}

/// A sample row as either sink stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSample {
    pub time_ns: i64,
    pub device: String,
    pub tag: String,
    pub value: Option<Value>,
    pub quality: u32,
    pub message_id: [u8; 16],
    pub seq: u64,
}

/// Sorts rows into a canonical order for comparison.
pub fn sorted(mut v: Vec<StoredSample>) -> Vec<StoredSample> {
    v.sort_by_cached_key(|s| format!("{s:?}"));
    v
}

/// The rows `batches` should produce: the first occurrence of each
/// `(device_id, message_id)` only, times truncated to `time_res_ns`.
pub fn expected_rows<'a>(
    batches: impl IntoIterator<Item = &'a CommitBatch>,
    time_res_ns: i64,
) -> Vec<StoredSample> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for cb in batches {
        for a in &cb.telemetry {
            let b = &a.batch;
            if !seen.insert((b.device_id.clone(), b.message_id)) {
                continue;
            }
            for s in &b.samples {
                let ns = s.source_time().unix_nanos();
                out.push(StoredSample {
                    time_ns: ns - ns % time_res_ns,
                    device: b.device_id.as_str().to_owned(),
                    tag: s.tag().as_str().to_owned(),
                    value: s.value().cloned(),
                    quality: s.quality().status_code(),
                    message_id: b.message_id.to_bytes(),
                    seq: b.seq.0,
                });
            }
        }
    }
    sorted(out)
}

/// The value columns of one row, as read back.
#[derive(Debug, Default)]
pub struct ValueColumns {
    pub value_type: Option<String>,
    pub double: Option<f64>,
    pub int: Option<i64>,
    pub uint: Option<u64>,
    pub boolean: Option<bool>,
    pub text: Option<String>,
    pub bytes: Option<Vec<u8>>,
}

impl ValueColumns {
    /// Rebuilds the value. `bytes` next to a float holds its exact bits (SQLite's
    /// way to keep NaN and -0.0).
    pub fn value(self) -> Option<Value> {
        Some(match self.value_type?.as_str() {
            "f64" => match self.bytes {
                Some(bits) => {
                    Value::Double(f64::from_bits(u64::from_be_bytes(bits.try_into().unwrap())))
                }
                None => Value::Double(self.double.unwrap()),
            },
            "f32" => match self.bytes {
                Some(bits) => {
                    Value::Float(f32::from_bits(u32::from_be_bytes(bits.try_into().unwrap())))
                }
                None => Value::Float(self.double.unwrap() as f32),
            },
            "i64" => Value::Int(self.int.unwrap()),
            "u64" => Value::UInt(self.uint.unwrap()),
            "bool" => Value::Bool(self.boolean.unwrap()),
            "string" => Value::String(self.text.unwrap()),
            "bytes" => Value::Bytes(self.bytes.unwrap().into()),
            other => panic!("unknown value_type {other}"),
        })
    }
}

/// A SQLite `u64` column (INTEGER, or 20-digit TEXT above `i64::MAX`).
pub fn sqlite_u64(v: rusqlite::types::ValueRef<'_>) -> Option<u64> {
    match v {
        rusqlite::types::ValueRef::Null => None,
        rusqlite::types::ValueRef::Integer(i) => Some(u64::try_from(i).unwrap()),
        rusqlite::types::ValueRef::Text(t) => {
            Some(std::str::from_utf8(t).unwrap().parse().unwrap())
        }
        other => panic!("u64 stored as {other:?}"),
    }
}

/// Every row of a SQLite samples table.
pub fn sqlite_samples(conn: &rusqlite::Connection, prefix: &str) -> Vec<StoredSample> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT time, device_id, tag, value_type, v_double, v_int, v_uint, v_bool, v_text, \
             v_bytes, quality, message_id, seq FROM \"{prefix}samples\""
        ))
        .unwrap();
    let mut rows = stmt.query([]).unwrap();
    let mut out = Vec::new();
    while let Some(r) = rows.next().unwrap() {
        let id: Vec<u8> = r.get(11).unwrap();
        out.push(StoredSample {
            time_ns: r.get(0).unwrap(),
            device: r.get(1).unwrap(),
            tag: r.get(2).unwrap(),
            value: ValueColumns {
                value_type: r.get(3).unwrap(),
                double: r.get(4).unwrap(),
                int: r.get(5).unwrap(),
                uint: sqlite_u64(r.get_ref(6).unwrap()),
                boolean: r.get(7).unwrap(),
                text: r.get(8).unwrap(),
                bytes: r.get(9).unwrap(),
            }
            .value(),
            quality: r.get(10).unwrap(),
            message_id: id.try_into().unwrap(),
            seq: sqlite_u64(r.get_ref(12).unwrap()).unwrap(),
        });
    }
    sorted(out)
}

/// Row count of a SQLite table `{prefix}{table}`.
pub fn sqlite_count(conn: &rusqlite::Connection, prefix: &str, table: &str) -> i64 {
    conn.query_row(
        &format!("SELECT count(*) FROM \"{prefix}{table}\""),
        [],
        |r| r.get(0),
    )
    .unwrap()
}

/// A memory sink that commits only when given permits (`gate`), so a test can look
/// between receipt and commit (ack-after-commit, back-pressure); `asked` counts the
/// commits the pipeline asked for.
#[derive(Clone)]
pub struct GatedSink {
    pub inner: iiot_ingest::sink::memory::MemorySink,
    pub gate: std::sync::Arc<tokio::sync::Semaphore>,
    pub asked: std::sync::Arc<tokio::sync::watch::Sender<u32>>,
}

impl GatedSink {
    /// A closed gate in front of `inner`.
    pub fn new(inner: iiot_ingest::sink::memory::MemorySink) -> Self {
        Self {
            inner,
            gate: std::sync::Arc::new(tokio::sync::Semaphore::new(0)),
            asked: std::sync::Arc::new(tokio::sync::watch::channel(0).0),
        }
    }
}

impl iiot_ingest::sink::Sink for GatedSink {
    async fn commit(
        &mut self,
        b: &CommitBatch,
    ) -> Result<iiot_ingest::record::CommitReport, iiot_ingest::sink::SinkError> {
        self.asked.send_modify(|n| *n += 1);
        let permit =
            self.gate.acquire().await.map_err(|e| {
                iiot_ingest::sink::SinkError::unavailable("gate closed").with_source(e)
            })?;
        permit.forget();
        self.inner.commit(b).await
    }
    async fn load_sequence_state(
        &mut self,
    ) -> Result<Vec<iiot_ingest::record::DeviceSequenceState>, iiot_ingest::sink::SinkError> {
        self.inner.load_sequence_state().await
    }
}
