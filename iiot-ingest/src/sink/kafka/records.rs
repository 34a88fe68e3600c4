//! The Kafka records a [`CommitBatch`] becomes, and the partition each goes to.
//!
//! **Stability:** header names, their text forms and the event values are a wire
//! format read by other programs. Add headers freely; never rename one or change
//! the form of its value.

use std::collections::{BTreeMap, HashSet};

use iiot_core::codec::protobuf::{
    encode_command, encode_command_ack, encode_data_loss, encode_telemetry,
};
use iiot_core::types::{DataLoss, DeviceId, MessageId, Timestamp};
use rskafka::chrono::{DateTime, Utc};
use rskafka::record::Record;

use crate::recent::RecentSet;
use crate::record::{
    AcceptedAck, AcceptedBatch, AcceptedCommand, CommitBatch, DeadLetter, Gap, GapChange,
};

/// Header: the batch's or event's message id, a 26-character ULID.
pub const HEADER_MESSAGE_ID: &str = "message_id";
/// Header: the batch's per-device sequence number, decimal.
pub const HEADER_SEQ: &str = "seq";
/// Header: the device id (the same bytes as the key of telemetry and events).
pub const HEADER_DEVICE_ID: &str = "device_id";
/// Header: the MQTT topic the payload arrived on.
pub const HEADER_TOPIC: &str = "topic";
/// Header: when ingest received the payload, RFC 3339 with nanoseconds.
pub const HEADER_RECEIVED_AT: &str = "received_at";
/// Header: the dead letter's [`DeadLetterReason::label`](crate::record::DeadLetterReason::label).
pub const HEADER_REASON: &str = "reason";
/// Header: the dead letter's human-readable detail.
pub const HEADER_DETAIL: &str = "detail";
/// Header: what an events-topic record is ([`EVENT_DATA_LOSS`],
/// [`EVENT_GAP_OPENED`], [`EVENT_GAP_NARROWED`]) or a commands-topic record is
/// ([`EVENT_COMMAND`], [`EVENT_COMMAND_ACK`]).
pub const HEADER_EVENT: &str = "event";
/// Header: the command's id, a 26-character ULID (commands topic).
pub const HEADER_COMMAND_ID: &str = "command_id";
/// Header: an ack's state, snake_case (`completed`, `rejected`, …).
pub const HEADER_STATE: &str = "state";
/// Header: `true` for an ack the device re-sent for a duplicate command id,
/// else `false`.
pub const HEADER_DUPLICATE: &str = "duplicate";
/// Header: the value's format, one of the `CONTENT_TYPE_*` constants.
pub const HEADER_CONTENT_TYPE: &str = "content_type";

/// Event: a gateway announced lost records; the value is a v1 Protobuf `DataLoss`.
pub const EVENT_DATA_LOSS: &str = "data_loss";
/// Event: a gap opened; the value is JSON
/// `{"device_id","first","last","first_seen","announced"}`.
pub const EVENT_GAP_OPENED: &str = "gap_opened";
/// Event: late data narrowed or closed a gap; the value is JSON
/// `{"device_id","first","at","remaining":[{"first","last","first_seen","announced"}]}`
/// where `first` names the gap that changed and an empty `remaining` closed it.
pub const EVENT_GAP_NARROWED: &str = "gap_narrowed";

/// Event: a command as its issuer published it; the value is a v1 Protobuf `Command`.
pub const EVENT_COMMAND: &str = "command";
/// Event: a device's command ack; the value is a v1 Protobuf `CommandAck`.
pub const EVENT_COMMAND_ACK: &str = "command_ack";

/// Content type of telemetry values.
pub const CONTENT_TYPE_TELEMETRY: &str = "application/x-protobuf; proto=iiot.v1.TelemetryBatch";
/// Content type of data-loss values.
pub const CONTENT_TYPE_DATA_LOSS: &str = "application/x-protobuf; proto=iiot.v1.DataLoss";
/// Content type of gap events.
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// Content type of command values.
pub const CONTENT_TYPE_COMMAND: &str = "application/x-protobuf; proto=iiot.v1.Command";
/// Content type of command-ack values.
pub const CONTENT_TYPE_COMMAND_ACK: &str = "application/x-protobuf; proto=iiot.v1.CommandAck";

/// Which of the sink's topics a record goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Dest {
    Telemetry = 0,
    DeadLetter = 1,
    Events = 2,
    Commands = 3,
}

impl Dest {
    /// Every topic, in index order.
    pub(crate) const ALL: [Self; 4] = [
        Self::Telemetry,
        Self::DeadLetter,
        Self::Events,
        Self::Commands,
    ];

    /// The `topic` label of metrics.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Telemetry => "telemetry",
            Self::DeadLetter => "dead_letter",
            Self::Events => "events",
            Self::Commands => "commands",
        }
    }
}

/// The idempotency key of a record that has one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum AckKey {
    Telemetry(DeviceId, MessageId),
    DataLoss(DeviceId, MessageId),
    Command(DeviceId, MessageId),
    /// An ack: its command, state, time and duplicate flag.
    CommandAck(DeviceId, MessageId, &'static str, i64, bool),
}

/// One record ready to produce.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub(crate) dest: Dest,
    pub(crate) record: Record,
    pub(crate) ack_key: Option<AckKey>,
    /// Samples in it (telemetry only).
    pub(crate) samples: u64,
}

/// The records of `batch`, in order: telemetry, data loss, gap changes, dead
/// letters, commands, acks. Telemetry repeated within `batch` or found in
/// `recent` (the keys the broker acknowledged lately) is left out and counted in
/// the second value; so are data loss, commands and acks, uncounted.
pub(crate) fn build(
    batch: &CommitBatch,
    recent: Option<&RecentSet<AckKey>>,
) -> (Vec<Outgoing>, u64) {
    let recently_acked = |k: &AckKey| recent.is_some_and(|r| r.contains(k));
    let mut out = Vec::with_capacity(
        batch.telemetry.len() + batch.data_loss.len() + batch.gaps.len() + batch.dead_letters.len(),
    );
    let mut seen = HashSet::new();
    let mut skipped = 0;
    for a in &batch.telemetry {
        let key = AckKey::Telemetry(a.batch.device_id.clone(), a.batch.message_id);
        if recently_acked(&key) || !seen.insert(key.clone()) {
            skipped += 1;
            continue;
        }
        out.push(Outgoing {
            dest: Dest::Telemetry,
            record: telemetry_record(a),
            ack_key: Some(key),
            samples: a.batch.samples.len() as u64,
        });
    }
    for d in &batch.data_loss {
        let key = AckKey::DataLoss(d.device_id.clone(), d.message_id);
        if recently_acked(&key) || !seen.insert(key.clone()) {
            continue;
        }
        out.push(Outgoing {
            dest: Dest::Events,
            record: data_loss_record(d),
            ack_key: Some(key),
            samples: 0,
        });
    }
    for g in &batch.gaps {
        out.push(Outgoing {
            dest: Dest::Events,
            record: gap_record(g),
            ack_key: None,
            samples: 0,
        });
    }
    for d in &batch.dead_letters {
        out.push(Outgoing {
            dest: Dest::DeadLetter,
            record: dead_letter_record(d),
            ack_key: None,
            samples: 0,
        });
    }
    for c in &batch.commands {
        let key = AckKey::Command(c.command.device_id.clone(), c.command.id);
        if recently_acked(&key) || !seen.insert(key.clone()) {
            continue;
        }
        out.push(Outgoing {
            dest: Dest::Commands,
            record: command_record(c),
            ack_key: Some(key),
            samples: 0,
        });
    }
    for a in &batch.command_acks {
        let k = &a.ack;
        let key = AckKey::CommandAck(
            k.device_id.clone(),
            k.command_id,
            k.state.as_str(),
            k.time.unix_nanos(),
            k.duplicate,
        );
        if recently_acked(&key) || !seen.insert(key.clone()) {
            continue;
        }
        out.push(Outgoing {
            dest: Dest::Commands,
            record: command_ack_record(a),
            ack_key: Some(key),
            samples: 0,
        });
    }
    (out, skipped)
}

fn time(t: Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(t.unix_nanos())
}

fn headers<const N: usize>(pairs: [(&str, String); N]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_bytes()))
        .collect()
}

/// Key = device id; value = the batch re-encoded as v1 Protobuf; timestamp = the
/// gateway time.
pub(crate) fn telemetry_record(a: &AcceptedBatch) -> Record {
    let b = &a.batch;
    Record {
        key: Some(b.device_id.as_str().as_bytes().to_vec()),
        value: Some(encode_telemetry(b)),
        headers: headers([
            (HEADER_MESSAGE_ID, b.message_id.to_string()),
            (HEADER_SEQ, b.seq.0.to_string()),
            (HEADER_DEVICE_ID, b.device_id.as_str().to_owned()),
            (HEADER_TOPIC, a.topic.clone()),
            (HEADER_RECEIVED_AT, a.received_at.to_rfc3339()),
            (HEADER_CONTENT_TYPE, CONTENT_TYPE_TELEMETRY.to_owned()),
        ]),
        timestamp: time(b.gateway_time),
    }
}

/// Key = device id; value = the event as v1 Protobuf `DataLoss`.
pub(crate) fn data_loss_record(d: &DataLoss) -> Record {
    Record {
        key: Some(d.device_id.as_str().as_bytes().to_vec()),
        value: Some(encode_data_loss(d)),
        headers: headers([
            (HEADER_EVENT, EVENT_DATA_LOSS.to_owned()),
            (HEADER_MESSAGE_ID, d.message_id.to_string()),
            (HEADER_DEVICE_ID, d.device_id.as_str().to_owned()),
            (HEADER_CONTENT_TYPE, CONTENT_TYPE_DATA_LOSS.to_owned()),
        ]),
        timestamp: time(d.detected_at),
    }
}

fn gap_json(g: &Gap) -> serde_json::Value {
    serde_json::json!({
        "first": g.first.0,
        "last": g.last.0,
        "first_seen": g.first_seen.to_rfc3339(),
        "announced": g.announced,
    })
}

/// Key = device id; value = JSON (see [`EVENT_GAP_OPENED`], [`EVENT_GAP_NARROWED`]).
pub(crate) fn gap_record(change: &GapChange) -> Record {
    let (device, event, value, at) = match change {
        GapChange::Opened(g) => {
            let mut v = gap_json(g);
            v["device_id"] = g.device_id.as_str().into();
            (&g.device_id, EVENT_GAP_OPENED, v, g.first_seen)
        }
        GapChange::Narrowed {
            device_id,
            first,
            remaining,
            at,
        } => {
            let v = serde_json::json!({
                "device_id": device_id.as_str(),
                "first": first.0,
                "at": at.to_rfc3339(),
                "remaining": remaining.iter().map(gap_json).collect::<Vec<_>>(),
            });
            (device_id, EVENT_GAP_NARROWED, v, *at)
        }
    };
    Record {
        key: Some(device.as_str().as_bytes().to_vec()),
        value: Some(value.to_string().into_bytes()),
        headers: headers([
            (HEADER_EVENT, event.to_owned()),
            (HEADER_DEVICE_ID, device.as_str().to_owned()),
            (HEADER_CONTENT_TYPE, CONTENT_TYPE_JSON.to_owned()),
        ]),
        timestamp: time(at),
    }
}

/// Key = device id; value = the command re-encoded as v1 Protobuf `Command`;
/// timestamp = its `issued_at`.
pub(crate) fn command_record(a: &AcceptedCommand) -> Record {
    let c = &a.command;
    Record {
        key: Some(c.device_id.as_str().as_bytes().to_vec()),
        value: Some(encode_command(c)),
        headers: headers([
            (HEADER_EVENT, EVENT_COMMAND.to_owned()),
            (HEADER_COMMAND_ID, c.id.to_string()),
            (HEADER_DEVICE_ID, c.device_id.as_str().to_owned()),
            (HEADER_TOPIC, a.topic.clone()),
            (HEADER_RECEIVED_AT, a.received_at.to_rfc3339()),
            (HEADER_CONTENT_TYPE, CONTENT_TYPE_COMMAND.to_owned()),
        ]),
        timestamp: time(c.issued_at),
    }
}

/// Key = device id; value = the ack re-encoded as v1 Protobuf `CommandAck`;
/// timestamp = the ack's time.
pub(crate) fn command_ack_record(a: &AcceptedAck) -> Record {
    let k = &a.ack;
    Record {
        key: Some(k.device_id.as_str().as_bytes().to_vec()),
        value: Some(encode_command_ack(k)),
        headers: headers([
            (HEADER_EVENT, EVENT_COMMAND_ACK.to_owned()),
            (HEADER_COMMAND_ID, k.command_id.to_string()),
            (HEADER_DEVICE_ID, k.device_id.as_str().to_owned()),
            (HEADER_STATE, k.state.as_str().to_owned()),
            (HEADER_DUPLICATE, k.duplicate.to_string()),
            (HEADER_TOPIC, a.topic.clone()),
            (HEADER_RECEIVED_AT, a.received_at.to_rfc3339()),
            (HEADER_CONTENT_TYPE, CONTENT_TYPE_COMMAND_ACK.to_owned()),
        ]),
        timestamp: time(k.time),
    }
}

/// Key = the MQTT topic (a device's dead letters stay in order); value = the
/// original bytes.
pub(crate) fn dead_letter_record(d: &DeadLetter) -> Record {
    Record {
        key: Some(d.topic.as_bytes().to_vec()),
        value: Some(d.payload.to_vec()),
        headers: headers([
            (HEADER_REASON, d.reason.label()),
            (HEADER_TOPIC, d.topic.clone()),
            (HEADER_DETAIL, d.detail.clone()),
            (HEADER_RECEIVED_AT, d.received_at.to_rfc3339()),
        ]),
        timestamp: time(d.received_at),
    }
}

/// Kafka's `murmur2` hash (the Java client's `Utils.murmur2`), so that this sink
/// and Kafka's default partitioner put a key on the same partition.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, b) in tail.iter().enumerate().rev() {
            h ^= u32::from(*b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `key` among `partitions` (> 0), as Kafka's default
/// partitioner chooses it for a keyed record.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use bytes::Bytes;
    use iiot_core::types::{Sample, Sequence, TagPath, TelemetryBatch};

    use super::*;
    use crate::record::DeadLetterReason;

    /// Vectors of the Java client's `Utils.murmur2`.
    #[test]
    fn murmur2_matches_kafka() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (data, want) in cases {
            assert_eq!(murmur2(data), want, "{:?}", String::from_utf8_lossy(data));
        }
        for n in 1..8 {
            assert!((0..n).contains(&partition_for(b"dev-a", n)));
        }
        assert_eq!(partition_for(b"21", 1), 0);
    }

    fn accepted(dev: &str, seq: u64, id: u128) -> AcceptedBatch {
        let t = Timestamp::from_unix_nanos(1_767_225_600_123_456_789).unwrap();
        let tag = TagPath::new("line1/temp").unwrap();
        let mut batch = TelemetryBatch::new(
            DeviceId::new(dev).unwrap(),
            Sequence(seq),
            vec![Sample::good(tag, 21.5, t)],
        );
        batch.message_id = MessageId::from_parts(1, id);
        batch.gateway_time = t;
        AcceptedBatch {
            batch,
            topic: format!("a/s/ar/l/plc/{dev}/telemetry"),
            received_at: t,
        }
    }

    #[test]
    fn telemetry_record_carries_key_headers_and_original_encoding() {
        let a = accepted("dev-1", 42, 7);
        let r = telemetry_record(&a);
        assert_eq!(r.key.as_deref(), Some(&b"dev-1"[..]));
        assert_eq!(r.value.as_deref(), Some(&encode_telemetry(&a.batch)[..]));
        let h = |k: &str| String::from_utf8(r.headers[k].clone()).unwrap();
        assert_eq!(h(HEADER_SEQ), "42");
        assert_eq!(h(HEADER_MESSAGE_ID), a.batch.message_id.to_string());
        assert_eq!(h(HEADER_MESSAGE_ID).len(), 26);
        assert_eq!(h(HEADER_TOPIC), a.topic);
        assert_eq!(h(HEADER_RECEIVED_AT), "2026-01-01T00:00:00.123456789Z");
        assert_eq!(r.timestamp.timestamp_millis(), 1_767_225_600_123);
    }

    #[test]
    fn build_skips_repeats_and_recent_keys() {
        let mut recent = RecentSet::new(NonZeroUsize::new(2).unwrap(), None);
        let t = Timestamp::UNIX_EPOCH;
        let batch = CommitBatch {
            telemetry: vec![
                accepted("d", 1, 1),
                accepted("d", 1, 1),
                accepted("d", 2, 2),
            ],
            dead_letters: vec![DeadLetter {
                topic: "x/y".into(),
                payload: Bytes::from_static(&[0, 1, 2]),
                reason: DeadLetterReason::BadTopic,
                detail: "no".into(),
                received_at: Timestamp::UNIX_EPOCH,
            }],
            ..CommitBatch::default()
        };
        let (out, skipped) = build(&batch, Some(&recent));
        assert_eq!((out.len(), skipped), (3, 1));
        assert_eq!(
            build(&batch, None).1,
            1,
            "no memory: only the repeat is skipped"
        );
        assert_eq!(out[2].dest, Dest::DeadLetter);
        assert_eq!(out[2].record.value.as_deref(), Some(&[0u8, 1, 2][..]));
        assert_eq!(out[2].record.headers[HEADER_REASON], b"bad_topic");
        recent.insert(out[0].ack_key.clone().unwrap(), t);
        let (out, skipped) = build(&batch, Some(&recent));
        assert_eq!((out.len(), skipped), (2, 2));
        // Bounded: the oldest key goes first.
        recent.insert(
            AckKey::Telemetry(DeviceId::new("e").unwrap(), MessageId::from_parts(1, 1)),
            t,
        );
        recent.insert(
            AckKey::Telemetry(DeviceId::new("f").unwrap(), MessageId::from_parts(1, 1)),
            t,
        );
        assert_eq!(recent.len(), 2);
        assert_eq!(build(&batch, Some(&recent)).1, 1);
    }

    #[test]
    fn commands_and_acks_go_to_the_commands_topic_keyed_by_device() {
        use iiot_core::codec::Limits;
        use iiot_core::codec::protobuf::{decode_command, decode_command_ack};
        use iiot_core::types::{
            Command, CommandAck, CommandState, Constraints, Operation, Value, WRITE,
        };

        let t = Timestamp::from_unix_nanos(1_767_225_600_123_456_789).unwrap();
        let command = Command {
            id: MessageId::from_parts(1, 9),
            device_id: DeviceId::new("dev-1").unwrap(),
            action: WRITE.into(),
            target: TagPath::new("sp").unwrap(),
            op: Operation::Set(Value::Double(80.0)),
            issued_at: t,
            expires_at: t.saturating_add(std::time::Duration::from_secs(30)),
            issuer: "ops".into(),
            reason: String::new(),
            constraints: Constraints::default(),
        };
        let ack = CommandAck {
            command_id: command.id,
            device_id: command.device_id.clone(),
            state: CommandState::Completed,
            time: t,
            detail: None,
            result: None,
            duplicate: false,
            reason: None,
            received_at: None,
        };
        let mut dup = ack.clone();
        dup.duplicate = true;
        let c = AcceptedCommand {
            command: command.clone(),
            topic: "a/s/ar/l/plc/dev-1/commands/x".into(),
            received_at: t,
        };
        let acks: Vec<AcceptedAck> = [ack.clone(), ack.clone(), dup]
            .into_iter()
            .map(|a| AcceptedAck {
                ack: a,
                topic: "a/s/ar/l/plc/dev-1/commands/x/ack".into(),
                received_at: t,
            })
            .collect();
        let batch = CommitBatch {
            commands: vec![c.clone(), c],
            command_acks: acks,
            ..CommitBatch::default()
        };
        let (out, skipped) = build(&batch, None);
        assert_eq!(skipped, 0, "only telemetry repeats are counted");
        // One command, one ack, one duplicate ack (a different event).
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|o| o.dest == Dest::Commands));
        let h = |o: &Outgoing, k: &str| String::from_utf8(o.record.headers[k].clone()).unwrap();
        assert_eq!(out[0].record.key.as_deref(), Some(&b"dev-1"[..]));
        assert_eq!(h(&out[0], HEADER_EVENT), EVENT_COMMAND);
        assert_eq!(h(&out[0], HEADER_COMMAND_ID), command.id.to_string());
        let value = out[0].record.value.as_deref().unwrap();
        assert_eq!(decode_command(value, &Limits::default()).unwrap(), command);
        assert_eq!(h(&out[1], HEADER_EVENT), EVENT_COMMAND_ACK);
        assert_eq!(h(&out[1], HEADER_STATE), "completed");
        assert_eq!(h(&out[1], HEADER_DUPLICATE), "false");
        assert_eq!(h(&out[2], HEADER_DUPLICATE), "true");
        let value = out[1].record.value.as_deref().unwrap();
        assert_eq!(decode_command_ack(value, &Limits::default()).unwrap(), ack);
        assert_eq!(
            out[1].record.timestamp.timestamp_millis(),
            1_767_225_600_123
        );
        // Acknowledged keys are not sent again by a retried commit.
        let mut recent = RecentSet::new(NonZeroUsize::new(8).unwrap(), None);
        for o in &out {
            recent.insert(o.ack_key.clone().unwrap(), t);
        }
        assert!(build(&batch, Some(&recent)).0.is_empty());
    }

    #[test]
    fn gap_events_are_json() {
        let d = DeviceId::new("dev-9").unwrap();
        let g = Gap {
            device_id: d.clone(),
            first: Sequence(5),
            last: Sequence(u64::MAX),
            first_seen: Timestamp::UNIX_EPOCH,
            announced: false,
        };
        let r = gap_record(&GapChange::Opened(g.clone()));
        let v: serde_json::Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        assert_eq!(v["last"].as_u64(), Some(u64::MAX));
        assert_eq!(v["device_id"], "dev-9");
        assert_eq!(r.headers[HEADER_EVENT], EVENT_GAP_OPENED.as_bytes());
        let r = gap_record(&GapChange::Narrowed {
            device_id: d,
            first: Sequence(5),
            remaining: vec![],
            at: Timestamp::UNIX_EPOCH,
        });
        let v: serde_json::Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        assert_eq!(v["remaining"].as_array().map(Vec::len), Some(0));
        assert_eq!(v["first"], 5);
    }
}
