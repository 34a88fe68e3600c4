//! The Kafka sink against a real Kafka-compatible broker (issue 7): tansu, at
//! `IIOT_KAFKA_URL` or started by the test. Every record is fetched back: keys,
//! partitions, per-device order, headers, values; retries and their duplicates;
//! typed errors; a broker killed and replaced mid-test.
#![cfg(feature = "kafka")]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::kafka::{Fetched, KafkaEnv, Tansu, broker, fetch_all, free_port, own_broker, topics};
use common::sink::{T0, accepted, all_types, dev, doubles, ts};
use iiot_core::codec::protobuf::{decode_data_loss, decode_telemetry, encode_telemetry};
use iiot_core::codec::{DecodeError, Limits};
use iiot_core::types::{DataLoss, DataLossReason, Sequence};
use iiot_ingest::record::{
    AcceptedBatch, CommitBatch, CommitReport, DeadLetter, DeadLetterReason, Gap, GapChange,
};
use iiot_ingest::sink::kafka::records::{
    CONTENT_TYPE_TELEMETRY, HEADER_CONTENT_TYPE, HEADER_DETAIL, HEADER_DEVICE_ID, HEADER_EVENT,
    HEADER_MESSAGE_ID, HEADER_REASON, HEADER_RECEIVED_AT, HEADER_SEQ, HEADER_TOPIC,
};
use iiot_ingest::sink::kafka::{
    EVENT_DATA_LOSS, EVENT_GAP_NARROWED, EVENT_GAP_OPENED, KafkaConfig, KafkaSink, partition_for,
};
use iiot_ingest::sink::{Sink, SinkError};

macro_rules! broker_or_skip {
    () => {
        match broker().await {
            Some(env) => env,
            None => return,
        }
    };
}

fn config(env_addr: &str, test: &str) -> (KafkaConfig, (String, String, String)) {
    let names = topics(test);
    let mut c = KafkaConfig::new(env_addr);
    c.set_topics(&names.0, &names.1, &names.2)
        .set_partitions(3)
        .set_connect_timeout(Duration::from_secs(10))
        .set_request_timeout(Duration::from_secs(10));
    (c, names)
}

/// Batch `seq` of `device`, with a message id unique to (device, seq).
fn batch(device: &str, seq: u64, samples: usize) -> AcceptedBatch {
    let dev_no = u128::from(device.bytes().map(u32::from).sum::<u32>());
    accepted(
        device,
        seq,
        (dev_no << 64) | u128::from(seq),
        doubles(samples, T0 + seq as i64),
    )
}

fn dead_letter(topic: &str, payload: &'static [u8], reason: DeadLetterReason) -> DeadLetter {
    DeadLetter {
        topic: topic.into(),
        payload: Bytes::from_static(payload),
        reason,
        detail: format!("detail of {topic}"),
        received_at: ts(T0 + 7),
    }
}

fn key_of(f: &Fetched) -> (String, String) {
    (f.key(), f.header(HEADER_MESSAGE_ID))
}

/// Telemetry, data loss, gap changes and dead letters come back from the broker
/// exactly: one telemetry record per batch keyed by device id on the partition
/// Kafka's partitioner picks, each device's records in sequence order, headers
/// naming the dedupe key, values decoding to the original batches (re-encoded
/// byte for byte), dead letters byte-exact with their reason, topic and detail.
/// Small produce requests (8 KiB) split partitions into several requests
/// without reordering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_come_back_keyed_ordered_and_exact() {
    let env: KafkaEnv = broker_or_skip!();
    let (mut cfg, (t_tel, t_dl, t_ev)) = config(&env.addr, "roundtrip");
    cfg.set_max_batch_bytes(NonZeroUsize::new(8 * 1024).unwrap());
    let mut sink = KafkaSink::connect(cfg).await.unwrap();
    assert_eq!(sink.partition_counts(), Some((3, 3, 3)));

    let devices = ["dev-a", "dev-b", "dev-c", "dev-d", "dev-e"];
    let mut first = CommitBatch::default();
    let mut second = CommitBatch::default();
    for seq in 1..=30 {
        for d in devices {
            let target = if seq <= 20 { &mut first } else { &mut second };
            target.telemetry.push(batch(d, seq, 10));
        }
    }
    // Every value kind, NaN and -0.0 included.
    second
        .telemetry
        .push(accepted("dev-a", 31, 9_999, all_types(T0)));
    // Repeated within a commit: sent once.
    second.telemetry.push(batch("dev-b", 21, 10));
    let mut loss = DataLoss::new(
        dev("dev-c"),
        Sequence(100),
        Sequence(109),
        10,
        DataLossReason::Overflow,
        ts(T0),
    )
    .unwrap();
    loss.detail = Some("outbox full".into());
    loss.bytes = Some(4096);
    first.data_loss.push(loss.clone());
    let gap = Gap {
        device_id: dev("dev-d"),
        first: Sequence(40),
        last: Sequence(44),
        first_seen: ts(T0),
        announced: false,
    };
    first.gaps.push(GapChange::Opened(gap.clone()));
    second.gaps.push(GapChange::Narrowed {
        device_id: dev("dev-d"),
        first: Sequence(40),
        remaining: vec![Gap {
            first: Sequence(42),
            ..gap.clone()
        }],
        at: ts(T0 + 5),
    });
    let garbage: &'static [u8] = &[0xff, 0x00, 0x13, 0x37, 0x00, 0xfe];
    first.dead_letters.push(dead_letter(
        "acme/s1/a1/l1/plc/dev-x/telemetry",
        garbage,
        DeadLetterReason::Decode(DecodeError::Protobuf {
            reason: "invalid wire type".into(),
        }),
    ));
    second.dead_letters.push(dead_letter(
        "not a uns topic",
        b"",
        DeadLetterReason::BadTopic,
    ));

    let r1 = sink.commit(&first).await.unwrap();
    assert_eq!(
        r1,
        CommitReport {
            batches_written: 100,
            batches_skipped: 0,
            rows_written: 1000
        }
    );
    let r2 = sink.commit(&second).await.unwrap();
    assert_eq!(r2.batches_written, 51);
    assert_eq!(r2.batches_skipped, 1);
    assert_eq!(r2.rows_written, 500 + all_types(T0).len() as u64);

    // Telemetry.
    let tel = fetch_all(&env.addr, &t_tel).await;
    assert_eq!(tel.len(), 151);
    let originals: BTreeMap<(String, String), &AcceptedBatch> = first
        .telemetry
        .iter()
        .chain(&second.telemetry)
        .map(|a| {
            let b = &a.batch;
            ((b.device_id.to_string(), b.message_id.to_string()), a)
        })
        .collect();
    let mut seen = HashSet::new();
    let mut last_seq: BTreeMap<String, (i32, u64)> = BTreeMap::new();
    for f in &tel {
        let key = f.key();
        assert!(seen.insert(key_of(f)), "duplicate {:?}", key_of(f));
        assert_eq!(f.header(HEADER_DEVICE_ID), key);
        assert_eq!(f.partition, partition_for(key.as_bytes(), 3), "{key}");
        assert_eq!(f.header(HEADER_CONTENT_TYPE), CONTENT_TYPE_TELEMETRY);
        let original = originals[&key_of(f)];
        let value = f.record.value.as_deref().unwrap();
        assert_eq!(value, &encode_telemetry(&original.batch)[..]);
        let decoded = decode_telemetry(value, &Limits::default()).unwrap();
        assert_eq!(encode_telemetry(&decoded), value);
        assert_eq!(decoded.device_id.as_str(), key);
        assert_eq!(decoded.message_id, original.batch.message_id);
        assert_eq!(decoded.samples.len(), original.batch.samples.len());
        if original.batch.seq.0 <= 30 {
            assert_eq!(&decoded, &original.batch);
        }
        let seq: u64 = f.header(HEADER_SEQ).parse().unwrap();
        assert_eq!(seq, decoded.seq.0);
        assert_eq!(f.header(HEADER_TOPIC), original.topic);
        assert_eq!(
            f.header(HEADER_RECEIVED_AT),
            original.received_at.to_rfc3339()
        );
        assert_eq!(
            f.record.timestamp.timestamp_millis(),
            original.batch.gateway_time.unix_millis()
        );
        // Offsets ascend within a partition, so this is the device's order.
        if let Some((p, prev)) = last_seq.insert(key.clone(), (f.partition, seq)) {
            assert_eq!(p, f.partition, "{key} moved partitions");
            assert_eq!(seq, prev + 1, "{key} out of order");
        }
    }
    assert_eq!(seen.len(), originals.len());
    assert!(last_seq.values().all(|&(_, s)| s >= 30));

    // Dead letters: byte-exact, with reason, topic and detail.
    let dl = fetch_all(&env.addr, &t_dl).await;
    assert_eq!(dl.len(), 2);
    let by_topic: BTreeMap<String, &Fetched> =
        dl.iter().map(|f| (f.header(HEADER_TOPIC), f)).collect();
    let g = by_topic["acme/s1/a1/l1/plc/dev-x/telemetry"];
    assert_eq!(g.record.value.as_deref(), Some(garbage));
    assert_eq!(g.header(HEADER_REASON), "decode:malformed_protobuf");
    assert_eq!(
        g.header(HEADER_DETAIL),
        "detail of acme/s1/a1/l1/plc/dev-x/telemetry"
    );
    assert_eq!(g.key(), "acme/s1/a1/l1/plc/dev-x/telemetry");
    let b = by_topic["not a uns topic"];
    assert_eq!(b.record.value.as_deref().unwrap_or_default(), b"");
    assert_eq!(b.header(HEADER_REASON), "bad_topic");

    // Events: data loss as Protobuf, gap changes as JSON, all keyed by device.
    let ev = fetch_all(&env.addr, &t_ev).await;
    assert_eq!(ev.len(), 3);
    let kinds: Vec<String> = ev.iter().map(|f| f.header(HEADER_EVENT)).collect();
    let dl_rec = ev
        .iter()
        .find(|f| f.header(HEADER_EVENT) == EVENT_DATA_LOSS)
        .unwrap();
    assert_eq!(dl_rec.key(), "dev-c");
    assert_eq!(
        dl_rec.header(HEADER_MESSAGE_ID),
        loss.message_id.to_string()
    );
    let back =
        decode_data_loss(dl_rec.record.value.as_deref().unwrap(), &Limits::default()).unwrap();
    assert_eq!(back, loss);
    let gaps: Vec<&Fetched> = ev.iter().filter(|f| f.key() == "dev-d").collect();
    assert_eq!(gaps.len(), 2, "{kinds:?}");
    // Same device, same partition, commit order.
    assert_eq!(gaps[0].header(HEADER_EVENT), EVENT_GAP_OPENED);
    assert_eq!(gaps[1].header(HEADER_EVENT), EVENT_GAP_NARROWED);
    let opened: serde_json::Value =
        serde_json::from_slice(gaps[0].record.value.as_deref().unwrap()).unwrap();
    assert_eq!(opened["first"], 40);
    assert_eq!(opened["last"], 44);
    assert_eq!(opened["device_id"], "dev-d");
    let narrowed: serde_json::Value =
        serde_json::from_slice(gaps[1].record.value.as_deref().unwrap()).unwrap();
    assert_eq!(narrowed["remaining"][0]["first"], 42);
    assert_eq!(narrowed["remaining"][0]["last"], 44);

    // Kafka is not a query store.
    assert!(sink.load_sequence_state().await.unwrap().is_empty());
}

/// A commit retried by the same sink skips what the broker acknowledged; a new
/// sink (a restarted ingest worker, whose memory of acknowledged keys is gone)
/// produces the batches again, and those duplicates are byte-identical records
/// whose `(key, message_id)` lets a consumer drop them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_skip_acknowledged_and_duplicates_carry_the_dedupe_key() {
    let env = broker_or_skip!();
    let (cfg, (t_tel, _, _)) = config(&env.addr, "retry");
    let b = CommitBatch {
        telemetry: (1..=10).map(|s| batch("dev-r", s, 5)).collect(),
        ..CommitBatch::default()
    };
    let mut sink = KafkaSink::connect(cfg.clone()).await.unwrap();
    assert_eq!(sink.commit(&b).await.unwrap().batches_written, 10);
    let again = sink.commit(&b).await.unwrap();
    assert_eq!(
        (
            again.batches_written,
            again.batches_skipped,
            again.rows_written
        ),
        (0, 10, 0)
    );
    assert_eq!(fetch_all(&env.addr, &t_tel).await.len(), 10);

    let mut restarted = KafkaSink::connect(cfg).await.unwrap();
    assert_eq!(restarted.commit(&b).await.unwrap().batches_written, 10);
    let all = fetch_all(&env.addr, &t_tel).await;
    assert_eq!(all.len(), 20);
    let mut first_copy: BTreeMap<(String, String), &Fetched> = BTreeMap::new();
    let mut kept = Vec::new();
    for f in &all {
        match first_copy.get(&key_of(f)) {
            Some(orig) => {
                assert_eq!(orig.record.key, f.record.key);
                assert_eq!(orig.record.value, f.record.value);
                assert_eq!(orig.record.headers, f.record.headers);
            }
            None => {
                first_copy.insert(key_of(f), f);
                kept.push(f.header(HEADER_SEQ).parse::<u64>().unwrap());
            }
        }
    }
    // The consumer's dedupe leaves each batch once, in order.
    assert_eq!(kept, (1..=10).collect::<Vec<_>>());
}

/// The broker process is killed between commits: the next commit fails with
/// `Unavailable` within the configured timeouts (no panic, no hang), and so does
/// a reconnect attempt while it is down; a new broker on the same port (memory
/// storage: the old records are gone) gets the retried batch after the sink
/// reconnects and recreates its topics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_then_replaced_gives_unavailable_then_reconnects() {
    let Some(mut first) = own_broker().await else {
        return;
    };
    let addr = first.addr();
    let (mut cfg, (t_tel, _, t_ev)) = config(&addr, "restart");
    cfg.set_connect_timeout(Duration::from_secs(2))
        .set_request_timeout(Duration::from_secs(3));
    let mut sink = KafkaSink::connect(cfg).await.unwrap();
    let before = CommitBatch {
        telemetry: (1..=3).map(|s| batch("dev-k", s, 3)).collect(),
        ..CommitBatch::default()
    };
    assert_eq!(sink.commit(&before).await.unwrap().batches_written, 3);

    first.kill();
    let after = CommitBatch {
        telemetry: (4..=6).map(|s| batch("dev-k", s, 3)).collect(),
        gaps: vec![GapChange::Opened(Gap {
            device_id: dev("dev-k"),
            first: Sequence(7),
            last: Sequence(7),
            first_seen: ts(T0),
            announced: false,
        })],
        ..CommitBatch::default()
    };
    for attempt in 0..2 {
        let started = Instant::now();
        let err = sink.commit(&after).await.unwrap_err();
        assert!(
            matches!(err, SinkError::Unavailable { .. }),
            "attempt {attempt}: {err}"
        );
        assert!(err.is_transient());
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "attempt {attempt} took {:?}",
            started.elapsed()
        );
    }

    let _second = Tansu::start_on(first.port).await.unwrap();
    let report = sink.commit(&after).await.unwrap();
    assert_eq!((report.batches_written, report.batches_skipped), (3, 0));
    let tel = fetch_all(&addr, &t_tel).await;
    let seqs: Vec<String> = tel.iter().map(|f| f.header(HEADER_SEQ)).collect();
    assert_eq!(seqs, ["4", "5", "6"]);
    assert_eq!(fetch_all(&addr, &t_ev).await.len(), 1);
    // Records the first broker acknowledged are not sent again.
    assert_eq!(sink.commit(&before).await.unwrap().batches_skipped, 3);
}

/// A record larger than `max_batch_bytes` is `Rejected` before anything is
/// sent, and the sink keeps working; a missing topic with `create_topics` off and
/// invalid configs are `Setup`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_records_are_rejected_and_setup_errors_are_typed() {
    let env = broker_or_skip!();
    let (mut cfg, (t_tel, _, _)) = config(&env.addr, "limits");
    cfg.set_max_batch_bytes(NonZeroUsize::new(2_000).unwrap());
    let mut sink = KafkaSink::connect(cfg.clone()).await.unwrap();
    let big = CommitBatch {
        telemetry: vec![batch("dev-z", 1, 10), batch("dev-z", 2, 500)],
        ..CommitBatch::default()
    };
    let err = sink.commit(&big).await.unwrap_err();
    assert!(matches!(err, SinkError::Rejected { .. }), "{err}");
    assert!(!err.is_transient());
    assert_eq!(err.code(), None, "refused by the sink, not the broker");
    assert!(fetch_all(&env.addr, &t_tel).await.is_empty());
    let small = CommitBatch {
        telemetry: vec![batch("dev-z", 1, 10)],
        ..CommitBatch::default()
    };
    assert_eq!(sink.commit(&small).await.unwrap().batches_written, 1);
    assert_eq!(fetch_all(&env.addr, &t_tel).await.len(), 1);

    let (mut missing, _) = config(&env.addr, "nocreate");
    missing.set_create_topics(false);
    let err = KafkaSink::connect(missing).await.unwrap_err();
    assert!(matches!(err, SinkError::Setup { .. }), "{err}");

    let mut bad = cfg;
    bad.set_topics("ok", "not ok", "fine");
    let err = KafkaSink::new(bad).unwrap_err();
    assert!(matches!(err, SinkError::Setup { .. }), "{err}");
}

/// Nothing listens: `Unavailable` within the connect timeout, from `connect`
/// and from `commit` (no broker needed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_is_unavailable() {
    let mut cfg = KafkaConfig::new(format!("127.0.0.1:{}", free_port()));
    cfg.set_connect_timeout(Duration::from_millis(800))
        .set_request_timeout(Duration::from_millis(800));
    let started = Instant::now();
    let err = KafkaSink::connect(cfg.clone()).await.unwrap_err();
    assert!(matches!(err, SinkError::Unavailable { .. }), "{err}");
    let mut sink = KafkaSink::new(cfg).unwrap();
    let b = CommitBatch {
        telemetry: vec![batch("dev-u", 1, 1)],
        ..CommitBatch::default()
    };
    let err = sink.commit(&b).await.unwrap_err();
    assert!(matches!(err, SinkError::Unavailable { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Commands and acks (issue 16) come back from the commands topic: keyed by device
/// id, tagged `event = command` / `command_ack`, values the original Protobuf.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_acks_come_back_on_the_commands_topic() {
    use iiot_core::codec::protobuf::{decode_command, decode_command_ack};
    use iiot_core::types::{CommandState, Value};
    use iiot_ingest::record::{AcceptedAck, AcceptedCommand};
    use iiot_ingest::sink::kafka::{EVENT_COMMAND, EVENT_COMMAND_ACK};
    let env: KafkaEnv = broker_or_skip!();
    let (mut cfg, names) = config(&env.addr, "commands");
    let commands_topic = names.2.replace(".events", ".commands");
    cfg.set_commands_topic(&commands_topic);
    let mut sink = KafkaSink::connect(cfg).await.unwrap();
    let cmd = common::commands::set_command("dev-a", 7, "pump/speed", Value::Double(80.0), 30);
    let mut done = common::commands::ack("dev-a", 7, CommandState::Completed, 3);
    done.result = Some(Value::Double(80.0));
    let mut batch = CommitBatch::default();
    batch.commands.push(AcceptedCommand {
        command: cmd.clone(),
        topic: "acme/s1/a1/l1/plc/dev-a/commands/x".into(),
        received_at: ts(T0),
    });
    batch.command_acks.push(AcceptedAck {
        ack: done.clone(),
        topic: "acme/s1/a1/l1/plc/dev-a/commands/x/ack".into(),
        received_at: ts(T0 + 1),
    });
    sink.commit(&batch).await.unwrap();
    let got = fetch_all(&env.addr, &commands_topic).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let by_event: BTreeMap<String, &Fetched> =
        got.iter().map(|f| (f.header(HEADER_EVENT), f)).collect();
    let c = by_event[EVENT_COMMAND];
    assert_eq!(c.key(), "dev-a");
    let value = c.record.value.as_deref().unwrap();
    assert_eq!(decode_command(value, &Limits::default()).unwrap(), cmd);
    let a = by_event[EVENT_COMMAND_ACK];
    assert_eq!(a.key(), "dev-a");
    assert_eq!(a.partition, c.partition, "one device, one partition");
    let value = a.record.value.as_deref().unwrap();
    assert_eq!(decode_command_ack(value, &Limits::default()).unwrap(), done);
}
