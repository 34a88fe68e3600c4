//! The binary COPY stream for the samples table.
//!
//! **Stability:** this is PostgreSQL's binary COPY format for the column list in
//! [`SAMPLE_COLUMNS`]; it changes with the schema version. It is public so tools
//! and benchmarks can produce exactly the bytes the sink sends (for example to
//! pipe them into `psql -c "COPY … FROM STDIN (FORMAT binary)"`).

use bytes::{BufMut, Bytes, BytesMut};
use iiot_core::types::Value;

use super::types::{TIMESTAMP_LEN, numeric_len, pg_micros, put_numeric};
use crate::record::AcceptedBatch;

/// The column list of the samples table in the order the stream carries them.
pub const SAMPLE_COLUMNS: &str = "time, device_id, tag, value_type, v_double, v_int, v_uint, \
     v_bool, v_text, v_bytes, quality, message_id, seq";

/// Number of columns in [`SAMPLE_COLUMNS`].
const FIELDS: i16 = 13;

/// Signature, flags and header-extension length of a binary COPY stream.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Writes samples as rows of a binary COPY stream.
///
/// ```
/// use iiot_ingest::sink::postgres::copy::SampleCopyEncoder;
///
/// let mut enc = SampleCopyEncoder::new();
/// // enc.push_batch(&accepted) for each batch …
/// let stream = enc.finish();
/// assert!(stream.starts_with(b"PGCOPY\n\xff\r\n\0"));
/// ```
#[derive(Debug)]
pub struct SampleCopyEncoder {
    buf: BytesMut,
    rows: u64,
}

impl Default for SampleCopyEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SampleCopyEncoder {
    /// A stream with its header written.
    pub fn new() -> Self {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        buf.put_slice(HEADER);
        Self { buf, rows: 0 }
    }

    /// Appends one row per sample of `accepted`.
    pub fn push_batch(&mut self, accepted: &AcceptedBatch) {
        let b = &accepted.batch;
        let device = b.device_id.as_str().as_bytes();
        let message_id = b.message_id.to_bytes();
        let seq = b.seq.0;
        let seq_len = numeric_len(seq);
        for s in &b.samples {
            let buf = &mut self.buf;
            buf.reserve(128 + device.len() + s.tag().as_str().len());
            buf.put_i16(FIELDS);
            buf.put_i32(TIMESTAMP_LEN);
            buf.put_i64(pg_micros(s.source_time()));
            put_bytes(buf, device);
            put_bytes(buf, s.tag().as_str().as_bytes());
            match s.value() {
                None => put_nulls(buf, 7),
                Some(v) => put_value(buf, v),
            }
            buf.put_i32(8);
            buf.put_i64(i64::from(s.quality().status_code()));
            put_bytes(buf, &message_id);
            buf.put_i32(seq_len);
            put_numeric(buf, seq);
            self.rows += 1;
        }
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes buffered and not yet taken.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Takes what is buffered (the stream continues with the next bytes).
    pub fn take(&mut self) -> Bytes {
        self.buf.split().freeze()
    }

    /// Writes the trailer and returns the rest of the stream.
    pub fn finish(mut self) -> Bytes {
        self.buf.put_i16(-1);
        self.buf.freeze()
    }
}

fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    // Lengths come from validated ids (≤ 1 KiB) or values that the decoder bounded
    // by its message size limit, far below i32::MAX.
    buf.put_i32(b.len() as i32);
    buf.put_slice(b);
}

fn put_nulls(buf: &mut BytesMut, n: usize) {
    for _ in 0..n {
        buf.put_i32(-1);
    }
}

/// `value_type` and the six value columns (`v_double` … `v_bytes`).
fn put_value(buf: &mut BytesMut, v: &Value) {
    put_bytes(buf, v.type_name().as_bytes());
    match v {
        Value::Double(x) => {
            buf.put_i32(8);
            buf.put_f64(*x);
            put_nulls(buf, 5);
        }
        Value::Float(x) => {
            buf.put_i32(8);
            buf.put_f64(f64::from(*x));
            put_nulls(buf, 5);
        }
        Value::Int(x) => {
            put_nulls(buf, 1);
            buf.put_i32(8);
            buf.put_i64(*x);
            put_nulls(buf, 4);
        }
        Value::UInt(x) => {
            put_nulls(buf, 2);
            buf.put_i32(numeric_len(*x));
            put_numeric(buf, *x);
            put_nulls(buf, 3);
        }
        Value::Bool(x) => {
            put_nulls(buf, 3);
            buf.put_i32(1);
            buf.put_u8(u8::from(*x));
            put_nulls(buf, 2);
        }
        Value::String(x) => {
            put_nulls(buf, 4);
            put_bytes(buf, x.as_bytes());
            put_nulls(buf, 1);
        }
        Value::Bytes(x) => {
            put_nulls(buf, 5);
            put_bytes(buf, x);
        }
        // A variant added to core later: keep the sample (time, tag, quality)
        // with its type name and no value rather than lose the row.
        _ => put_nulls(buf, 6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iiot_core::quality::Quality;
    use iiot_core::types::{
        DeviceId, MessageId, Sample, Sequence, TagPath, TelemetryBatch, Timestamp,
    };

    #[test]
    fn stream_bytes_are_exact() {
        let t = Timestamp::from_unix_nanos(946_684_800_000_002_000).unwrap(); // 2 µs after 2000
        let mut batch = TelemetryBatch::new(
            DeviceId::new("d").unwrap(),
            Sequence(7),
            vec![Sample::good(TagPath::new("t").unwrap(), true, t)],
        );
        batch.message_id = MessageId::from_u128(1);
        let accepted = AcceptedBatch {
            batch,
            topic: "x".into(),
            received_at: t,
        };
        let mut enc = SampleCopyEncoder::new();
        enc.push_batch(&accepted);
        assert_eq!(enc.rows(), 1);
        let got = enc.finish();
        let mut want: Vec<u8> = HEADER.to_vec();
        want.extend_from_slice(&13i16.to_be_bytes());
        want.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 2]); // time
        want.extend_from_slice(&[0, 0, 0, 1, b'd']);
        want.extend_from_slice(&[0, 0, 0, 1, b't']);
        want.extend_from_slice(&[0, 0, 0, 4, b'b', b'o', b'o', b'l']);
        for _ in 0..3 {
            want.extend_from_slice(&(-1i32).to_be_bytes());
        }
        want.extend_from_slice(&[0, 0, 0, 1, 1]); // v_bool
        for _ in 0..2 {
            want.extend_from_slice(&(-1i32).to_be_bytes());
        }
        want.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0]); // quality Good
        want.extend_from_slice(&[0, 0, 0, 16]);
        want.extend_from_slice(&1u128.to_be_bytes());
        want.extend_from_slice(&[0, 0, 0, 10, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7]); // seq 7
        want.extend_from_slice(&(-1i16).to_be_bytes());
        assert_eq!(&got[..], &want[..]);
    }

    #[test]
    fn every_value_writes_thirteen_fields() {
        let t = Timestamp::UNIX_EPOCH;
        let tag = TagPath::new("t").unwrap();
        let values: Vec<Value> = vec![
            Value::Double(1.0),
            Value::Float(1.0),
            Value::Int(-1),
            Value::UInt(u64::MAX),
            Value::Bool(false),
            Value::String("s".into()),
            Value::Bytes(vec![1, 2].into()),
        ];
        for v in values {
            let mut one = BytesMut::new();
            put_value(&mut one, &v);
            // Walk the seven fields (value_type + six value columns).
            let mut at = 0;
            for _ in 0..7 {
                let len = i32::from_be_bytes(one[at..at + 4].try_into().unwrap());
                at += 4 + usize::try_from(len.max(0)).unwrap();
            }
            assert_eq!(at, one.len(), "{v:?}");
        }
        let _ = Sample::without_value(tag, Quality::BAD, t);
    }
}
