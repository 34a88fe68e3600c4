//! On-disk encoding of the outbox: keys, segments, data-loss events and the meta record.
//!
//! **Stability warning:** this is a disk format. Fields are appended, never reordered or
//! reused; a change that old stores cannot read bumps [`FORMAT_VERSION`]. All integers are
//! big-endian (keys sort by sequence number that way) and explicit: no host-endian
//! conversions anywhere.
//!
//! Decoders take untrusted bytes (a disk can rot): they never panic, never allocate more
//! than the input's length, and report [`DecodeError`].

use bytes::Bytes;
use iiot_core::publish::{OutboundMessage, QoS};
use iiot_core::types::{DataLoss, DataLossReason, DeviceId, MessageId, Sequence, Timestamp};

/// Version of the layout below. Stored under [`META_FORMAT`].
pub(crate) const FORMAT_VERSION: u32 = 1;

/// Key of the format marker.
pub(crate) const META_FORMAT: &[u8] = b"m/format";
/// Key of the [`Meta`] record.
pub(crate) const META_STATE: &[u8] = b"m/state";
/// Prefix of segment keys: `s` + first sequence (u64 BE).
pub(crate) const SEG_PREFIX: u8 = b's';
/// Prefix of data-loss keys: `l` + loss id (u64 BE).
pub(crate) const LOSS_PREFIX: u8 = b'l';

/// Bytes of per-record framing inside a segment (timestamp, flags, topic and payload lengths).
pub(crate) const RECORD_OVERHEAD: usize = 8 + 1 + 2 + 4;
/// Bytes of a segment header (version, first sequence, count).
const SEG_HEADER: usize = 1 + 8 + 4;
/// Segment layout version.
const SEG_VERSION: u8 = 1;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum DecodeError {
    /// The input ended early.
    #[error("truncated at byte {at}")]
    Truncated {
        /// Offset where more bytes were needed.
        at: usize,
    },
    /// A version byte we do not know.
    #[error("unknown version {0}")]
    Version(u32),
    /// A field holds an impossible value.
    #[error("invalid field {0}")]
    Invalid(&'static str),
}

/// A segment key for `first`.
pub(crate) fn seg_key(first: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = SEG_PREFIX;
    k[1..].copy_from_slice(&first.to_be_bytes());
    k
}

/// A data-loss key for `id`.
pub(crate) fn loss_key(id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = LOSS_PREFIX;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

/// The number inside a segment or loss key.
pub(crate) fn key_number(key: &[u8]) -> Result<u64, DecodeError> {
    let arr: [u8; 8] = key
        .get(1..9)
        .and_then(|s| s.try_into().ok())
        .ok_or(DecodeError::Invalid("key"))?;
    Ok(u64::from_be_bytes(arr))
}

/// One stored record, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its sequence number.
    pub seq: Sequence,
    /// When it was appended (gateway clock).
    pub appended_at: Timestamp,
    /// The message to publish.
    pub message: OutboundMessage,
}

/// The bytes a record occupies in a segment; also what counts against the byte bound.
pub(crate) fn record_len(message: &OutboundMessage) -> usize {
    RECORD_OVERHEAD + message.topic.len() + message.payload.len()
}

/// Encodes records with consecutive sequence numbers starting at `first`.
pub(crate) fn encode_segment<'a>(
    first: u64,
    records: impl ExactSizeIterator<Item = (i64, &'a OutboundMessage)>,
    total_len: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEG_HEADER + total_len);
    out.push(SEG_VERSION);
    out.extend_from_slice(&first.to_be_bytes());
    out.extend_from_slice(&(records.len() as u32).to_be_bytes());
    for (at, m) in records {
        out.extend_from_slice(&at.to_be_bytes());
        let flags = u8::from(m.qos == QoS::AtLeastOnce) | (u8::from(m.retain) << 1);
        out.push(flags);
        // Lengths were checked against the record limit (< 4 GiB, topic < 64 KiB) on append.
        out.extend_from_slice(&(m.topic.len() as u16).to_be_bytes());
        out.extend_from_slice(&(m.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(m.topic.as_bytes());
        out.extend_from_slice(&m.payload);
    }
    out
}

/// A cursor over untrusted bytes.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, at: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(DecodeError::Truncated { at: self.at })?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    fn done(&self) -> bool {
        self.at == self.buf.len()
    }
}

/// Header of a segment and the size and time of each of its records, without copying payloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentIndex {
    /// Sequence of the first record.
    pub(crate) first: u64,
    /// Per record: (appended_at ns, stored length).
    pub(crate) records: Vec<(i64, usize)>,
}

impl SegmentIndex {
    /// One past the last sequence in the segment.
    pub(crate) fn end(&self) -> u64 {
        self.first.saturating_add(self.records.len() as u64)
    }
}

/// Walks a segment, calling `each(seq, appended_at, flags, topic, payload_range)` per record.
fn walk_segment<'a>(
    buf: &'a [u8],
    mut each: impl FnMut(u64, i64, u8, &'a [u8], (usize, usize)) -> Result<(), DecodeError>,
) -> Result<u64, DecodeError> {
    let mut r = Reader::new(buf);
    let version = r.u8()?;
    if version != SEG_VERSION {
        return Err(DecodeError::Version(u32::from(version)));
    }
    let first = r.u64()?;
    let count = r.u32()?;
    first
        .checked_add(u64::from(count))
        .ok_or(DecodeError::Invalid("segment range"))?;
    for i in 0..u64::from(count) {
        let at = r.i64()?;
        let flags = r.u8()?;
        let topic_len = usize::from(r.u16()?);
        let payload_len = r.u32()? as usize;
        let topic = r.take(topic_len)?;
        let start = r.at;
        r.take(payload_len)?;
        each(first + i, at, flags, topic, (start, r.at))?;
    }
    if !r.done() {
        return Err(DecodeError::Invalid("trailing bytes"));
    }
    Ok(first)
}

/// Reads a segment's index (sizes and times) without copying payloads.
pub(crate) fn index_segment(buf: &[u8]) -> Result<SegmentIndex, DecodeError> {
    let mut records = Vec::new();
    let first = walk_segment(buf, |_, at, _, topic, (s, e)| {
        records.push((at, RECORD_OVERHEAD + topic.len() + (e - s)));
        Ok(())
    })?;
    Ok(SegmentIndex { first, records })
}

/// Decodes the records of a segment with `seq >= from` into `out`, sharing `buf` for
/// payloads. Stops once `out` holds `max_records` or the next record would pass `max_bytes`
/// (the first record is always taken). Returns `true` when it stopped for a limit.
pub(crate) fn decode_segment(
    buf: &Bytes,
    from: u64,
    max_records: usize,
    max_bytes: usize,
    out: &mut Vec<Record>,
    bytes_so_far: &mut usize,
) -> Result<bool, DecodeError> {
    let full = buf.clone();
    let mut stopped = false;
    walk_segment(buf, |seq, at, flags, topic, (s, e)| {
        if seq < from || stopped {
            return Ok(());
        }
        let len = RECORD_OVERHEAD + topic.len() + (e - s);
        if out.len() >= max_records || (!out.is_empty() && *bytes_so_far + len > max_bytes) {
            stopped = true;
            return Ok(());
        }
        let topic = std::str::from_utf8(topic).map_err(|_| DecodeError::Invalid("topic"))?;
        let appended_at =
            Timestamp::from_unix_nanos(at).map_err(|_| DecodeError::Invalid("time"))?;
        let qos = if flags & 1 == 1 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        *bytes_so_far += len;
        out.push(Record {
            seq: Sequence(seq),
            appended_at,
            message: OutboundMessage::new(topic, full.slice(s..e))
                .with_qos(qos)
                .with_retain(flags & 2 == 2),
        });
        Ok(())
    })?;
    Ok(stopped)
}

/// Persistent counters and cursors; rewritten atomically with every commit group.
///
/// **Stability warning:** do not reorder fields; append new ones at the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Meta {
    /// First live sequence: everything below was acknowledged, dropped or expired.
    pub(crate) head: u64,
    /// Next sequence to assign.
    pub(crate) next_seq: u64,
    /// Live records (sequence >= head).
    pub(crate) backlog_records: u64,
    /// Bytes of stored segments not yet removed.
    pub(crate) backlog_bytes: u64,
    /// Records ever appended.
    pub(crate) appended: u64,
    /// Records dropped by the drop-oldest policy.
    pub(crate) dropped_records: u64,
    /// Bytes dropped by the drop-oldest policy.
    pub(crate) dropped_bytes: u64,
    /// Records expired by the age bound.
    pub(crate) expired_records: u64,
    /// Bytes expired by the age bound.
    pub(crate) expired_bytes: u64,
    /// Records found unreadable and discarded.
    pub(crate) unreadable_records: u64,
    /// Next data-loss key.
    pub(crate) next_loss_id: u64,
}

const META_FIELDS: usize = 11;

impl Meta {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let f = [
            self.head,
            self.next_seq,
            self.backlog_records,
            self.backlog_bytes,
            self.appended,
            self.dropped_records,
            self.dropped_bytes,
            self.expired_records,
            self.expired_bytes,
            self.unreadable_records,
            self.next_loss_id,
        ];
        let mut out = Vec::with_capacity(4 + 8 * META_FIELDS);
        out.extend_from_slice(&(META_FIELDS as u32).to_be_bytes());
        for v in f {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out
    }

    pub(crate) fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        let n = r.u32()? as usize;
        if n < META_FIELDS {
            return Err(DecodeError::Invalid("meta field count"));
        }
        let mut f = [0u64; META_FIELDS];
        for v in &mut f {
            *v = r.u64()?;
        }
        // Newer writers may append fields; they are ignored here.
        Ok(Self {
            head: f[0],
            next_seq: f[1],
            backlog_records: f[2],
            backlog_bytes: f[3],
            appended: f[4],
            dropped_records: f[5],
            dropped_bytes: f[6],
            expired_records: f[7],
            expired_bytes: f[8],
            unreadable_records: f[9],
            next_loss_id: f[10],
        })
    }
}

fn reason_code(r: DataLossReason) -> u8 {
    match r {
        DataLossReason::Overflow => 1,
        DataLossReason::Expired => 2,
        DataLossReason::StoreCorrupt => 3,
        DataLossReason::Unreadable => 4,
        _ => 0,
    }
}

fn reason_from(code: u8) -> DataLossReason {
    match code {
        1 => DataLossReason::Overflow,
        2 => DataLossReason::Expired,
        3 => DataLossReason::StoreCorrupt,
        4 => DataLossReason::Unreadable,
        _ => DataLossReason::Unknown,
    }
}

const LOSS_VERSION: u8 = 1;

/// Encodes a data-loss event.
pub(crate) fn encode_loss(l: &DataLoss) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(LOSS_VERSION);
    out.extend_from_slice(&l.message_id.to_bytes());
    let dev = l.device_id.as_str().as_bytes();
    // Device ids are at most 128 bytes.
    out.push(dev.len() as u8);
    out.extend_from_slice(dev);
    out.extend_from_slice(&l.first_seq().0.to_be_bytes());
    out.extend_from_slice(&l.last_seq().0.to_be_bytes());
    out.extend_from_slice(&l.count().to_be_bytes());
    out.push(reason_code(l.reason));
    out.extend_from_slice(&l.detected_at.unix_nanos().to_be_bytes());
    match l.bytes {
        Some(b) => {
            out.push(1);
            out.extend_from_slice(&b.to_be_bytes());
        }
        None => out.push(0),
    }
    let detail = l.detail.as_deref().unwrap_or("").as_bytes();
    let detail = &detail[..detail.len().min(u16::MAX as usize)];
    out.push(u8::from(l.detail.is_some()));
    out.extend_from_slice(&(detail.len() as u16).to_be_bytes());
    out.extend_from_slice(detail);
    out
}

/// Decodes a data-loss event.
pub(crate) fn decode_loss(buf: &[u8]) -> Result<DataLoss, DecodeError> {
    let mut r = Reader::new(buf);
    let v = r.u8()?;
    if v != LOSS_VERSION {
        return Err(DecodeError::Version(u32::from(v)));
    }
    let id = MessageId::from_slice(r.take(16)?).map_err(|_| DecodeError::Invalid("id"))?;
    let dev_len = usize::from(r.u8()?);
    let dev = std::str::from_utf8(r.take(dev_len)?).map_err(|_| DecodeError::Invalid("device"))?;
    let device = DeviceId::new(dev).map_err(|_| DecodeError::Invalid("device"))?;
    let first = r.u64()?;
    let last = r.u64()?;
    let count = r.u64()?;
    let reason = reason_from(r.u8()?);
    let at = Timestamp::from_unix_nanos(r.i64()?).map_err(|_| DecodeError::Invalid("time"))?;
    let bytes = match r.u8()? {
        0 => None,
        _ => Some(r.u64()?),
    };
    let has_detail = r.u8()? == 1;
    let dlen = usize::from(r.u16()?);
    let detail = std::str::from_utf8(r.take(dlen)?).map_err(|_| DecodeError::Invalid("detail"))?;
    let mut loss = DataLoss::new(device, Sequence(first), Sequence(last), count, reason, at)
        .map_err(|_| DecodeError::Invalid("range"))?;
    loss.message_id = id;
    loss.bytes = bytes;
    loss.detail = has_detail.then(|| detail.to_owned());
    Ok(loss)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str, payload: &'static [u8]) -> OutboundMessage {
        OutboundMessage::new(topic, payload)
    }

    #[test]
    fn segment_bytes_are_exact() {
        let m = msg("a/b", b"\x01\x02");
        let enc = encode_segment(258, [(5i64, &m)].into_iter(), record_len(&m));
        assert_eq!(
            enc,
            [
                1, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 1, // header: version, first=258, count=1
                0, 0, 0, 0, 0, 0, 0, 5, // appended_at
                1, // flags: QoS1, not retained
                0, 3, 0, 0, 0, 2, // topic len, payload len
                b'a', b'/', b'b', 1, 2
            ]
        );
    }

    #[test]
    fn segment_round_trips_and_filters() {
        let a = msg("t/1", b"one");
        let b = msg("t/2", b"two!")
            .with_retain(true)
            .with_qos(QoS::AtMostOnce);
        let total = record_len(&a) + record_len(&b);
        let enc = Bytes::from(encode_segment(
            10,
            [(1i64, &a), (2i64, &b)].into_iter(),
            total,
        ));
        let mut out = Vec::new();
        let mut n = 0;
        decode_segment(&enc, 11, 10, usize::MAX, &mut out, &mut n).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].seq, Sequence(11));
        assert_eq!(out[0].message, b);
        let idx = index_segment(&enc).unwrap();
        assert_eq!(idx.first, 10);
        assert_eq!(idx.records, vec![(1, record_len(&a)), (2, record_len(&b))]);
        assert_eq!(idx.end(), 12);
    }

    #[test]
    fn truncated_or_garbage_segments_are_errors() {
        let a = msg("t", b"xyz");
        let enc = encode_segment(1, [(0i64, &a)].into_iter(), record_len(&a));
        for cut in 0..enc.len() {
            assert!(index_segment(&enc[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = enc.clone();
        bad.push(0);
        assert!(index_segment(&bad).is_err());
        // A huge claimed count does not allocate or panic.
        let mut huge = enc;
        huge[9..13].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(index_segment(&huge).is_err());
    }

    #[test]
    fn meta_round_trips() {
        let m = Meta {
            head: 1,
            next_seq: 2,
            backlog_records: 3,
            backlog_bytes: 4,
            appended: 5,
            dropped_records: 6,
            dropped_bytes: 7,
            expired_records: 8,
            expired_bytes: 9,
            unreadable_records: 10,
            next_loss_id: 11,
        };
        assert_eq!(Meta::decode(&m.encode()).unwrap(), m);
        assert!(Meta::decode(&m.encode()[..20]).is_err());
    }

    #[test]
    fn loss_round_trips() {
        let mut l = DataLoss::new(
            DeviceId::new("plc-1").unwrap(),
            Sequence(3),
            Sequence(9),
            7,
            DataLossReason::Expired,
            Timestamp::from_unix_nanos(42).unwrap(),
        )
        .unwrap();
        l.bytes = Some(1400);
        l.detail = Some("age bound".into());
        let enc = encode_loss(&l);
        assert_eq!(decode_loss(&enc).unwrap(), l);
        for cut in 0..enc.len() {
            assert!(decode_loss(&enc[..cut]).is_err());
        }
    }
}
