//! The embedded SQLite sink (issue 7): exact values of every type, idempotent
//! commits across redelivery and restarts, gaps, data loss and dead letters, and
//! a model check of random commit sequences.
#![cfg(feature = "sqlite")]

mod common;

use std::collections::HashSet;

use bytes::Bytes;
use common::sink::{
    T0, accepted, all_types, dev, doubles, expected_rows, sqlite_count, sqlite_samples, ts,
};
use iiot_core::codec::DecodeError;
use iiot_core::quality::Quality;
use iiot_core::types::{DataLoss, DataLossReason, Sample, Sequence, Value};
use iiot_ingest::record::{
    AcceptedBatch, CommitBatch, CommitReport, DeadLetter, DeadLetterReason, DeviceSequenceState,
    Gap, GapChange,
};
use iiot_ingest::sink::sqlite::{SqliteConfig, SqliteSink};
use iiot_ingest::sink::{ErrorCode, Sink, SinkError, SinkErrorKind};
use proptest::prelude::*;
use tempfile::TempDir;

async fn open(dir: &TempDir) -> SqliteSink {
    SqliteSink::open(SqliteConfig::new(dir.path().join("ingest.sqlite3")))
        .await
        .unwrap()
}

fn inspect(dir: &TempDir) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.path().join("ingest.sqlite3")).unwrap()
}

fn gap(device: &str, first: u64, last: u64, announced: bool) -> Gap {
    Gap {
        device_id: dev(device),
        first: Sequence(first),
        last: Sequence(last),
        first_seen: ts(T0 + 5),
        announced,
    }
}

/// Every value kind (NaN, -0.0, i64::MIN, u64::MAX, bytes, strings, a missing
/// value with Bad quality) comes back exactly, nanosecond times included.
#[tokio::test]
async fn every_value_type_round_trips_exactly() {
    let dir = TempDir::new().unwrap();
    let mut sink = open(&dir).await;
    let batch = CommitBatch {
        telemetry: vec![
            accepted("dev-a", 1, 1, all_types(T0)),
            accepted("dev-b", u64::MAX, 2, doubles(10, T0)),
        ],
        ..CommitBatch::default()
    };
    let report = sink.commit(&batch).await.unwrap();
    let rows = batch.sample_count() as u64;
    assert_eq!(
        report,
        CommitReport {
            batches_written: 2,
            batches_skipped: 0,
            rows_written: rows
        }
    );
    let db = inspect(&dir);
    assert_eq!(sqlite_count(&db, "iiot_", "samples"), rows as i64);
    assert_eq!(sqlite_count(&db, "iiot_", "messages"), 2);
    assert_eq!(sqlite_samples(&db, "iiot_"), expected_rows([&batch], 1));
    let mode: String = db
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    // The missing value is stored as such, with its Bad quality.
    let none: (Option<String>, i64) = db
        .query_row(
            "SELECT value_type, quality FROM iiot_samples WHERE tag = 'types/none'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        none,
        (None, i64::from(Quality::BAD_NO_COMMUNICATION.status_code()))
    );
}

/// The same CommitBatch twice (redelivery after a crash between commit and ack),
/// also after a restart: no new rows, and the report says skipped.
#[tokio::test]
async fn recommit_writes_nothing_and_reports_skipped() {
    let dir = TempDir::new().unwrap();
    let batch = CommitBatch {
        telemetry: vec![
            accepted("dev-a", 1, 10, doubles(5, T0)),
            accepted("dev-a", 2, 11, doubles(7, T0)),
        ],
        ..CommitBatch::default()
    };
    let mut sink = open(&dir).await;
    assert_eq!(sink.commit(&batch).await.unwrap().rows_written, 12);
    let again = sink.commit(&batch).await.unwrap();
    assert_eq!(
        again,
        CommitReport {
            batches_written: 0,
            batches_skipped: 2,
            rows_written: 0
        }
    );
    drop(sink);
    let mut restarted = open(&dir).await;
    assert_eq!(restarted.commit(&batch).await.unwrap().batches_skipped, 2);
    let db = inspect(&dir);
    assert_eq!(sqlite_count(&db, "iiot_", "samples"), 12);
    assert_eq!(sqlite_samples(&db, "iiot_"), expected_rows([&batch], 1));
}

/// A batch repeated inside one CommitBatch is written once.
#[tokio::test]
async fn duplicates_within_one_commit_are_written_once() {
    let dir = TempDir::new().unwrap();
    let mut sink = open(&dir).await;
    let a = accepted("dev-a", 1, 20, doubles(4, T0));
    let b = accepted("dev-b", 1, 20, doubles(3, T0)); // same message id, other device
    let batch = CommitBatch {
        telemetry: vec![a.clone(), b.clone(), a.clone(), a],
        ..CommitBatch::default()
    };
    let report = sink.commit(&batch).await.unwrap();
    assert_eq!(
        report,
        CommitReport {
            batches_written: 2,
            batches_skipped: 2,
            rows_written: 7
        }
    );
    let db = inspect(&dir);
    assert_eq!(sqlite_count(&db, "iiot_", "samples"), 7);
    assert_eq!(sqlite_samples(&db, "iiot_"), expected_rows([&batch], 1));
}

/// Gaps opened, narrowed (split) and closed are reflected in the gaps table and
/// come back from `load_sequence_state`, also after a restart.
#[tokio::test]
async fn gaps_open_narrow_close_and_restore() {
    let dir = TempDir::new().unwrap();
    let mut sink = open(&dir).await;
    assert!(sink.load_sequence_state().await.unwrap().is_empty());
    let big = u64::MAX - 10;
    let first = CommitBatch {
        telemetry: vec![
            accepted("dev-a", 4, 1, doubles(1, T0)),
            accepted("dev-a", 21, 2, doubles(1, T0)),
            accepted("dev-b", big, 3, doubles(1, T0)),
        ],
        gaps: vec![
            GapChange::Opened(gap("dev-a", 5, 9, false)),
            GapChange::Opened(gap("dev-a", 20, 20, true)),
            GapChange::Opened(gap("dev-b", big - 5, big - 1, false)),
        ],
        ..CommitBatch::default()
    };
    sink.commit(&first).await.unwrap();
    let state = sink.load_sequence_state().await.unwrap();
    assert_eq!(
        state,
        vec![
            DeviceSequenceState {
                device_id: dev("dev-a"),
                highest_seq: Sequence(21),
                open_gaps: vec![gap("dev-a", 5, 9, false), gap("dev-a", 20, 20, true)],
            },
            DeviceSequenceState {
                device_id: dev("dev-b"),
                highest_seq: Sequence(big),
                open_gaps: vec![gap("dev-b", big - 5, big - 1, false)],
            },
        ]
    );
    // Seq 7 arrives: 5..=9 splits into 5..=6 and 8..=9. 20 arrives: closed.
    let second = CommitBatch {
        telemetry: vec![
            accepted("dev-a", 7, 4, doubles(1, T0)),
            accepted("dev-a", 20, 5, doubles(1, T0)),
        ],
        gaps: vec![
            GapChange::Narrowed {
                device_id: dev("dev-a"),
                first: Sequence(5),
                remaining: vec![gap("dev-a", 5, 6, false), gap("dev-a", 8, 9, false)],
                at: ts(T0 + 50),
            },
            GapChange::Narrowed {
                device_id: dev("dev-a"),
                first: Sequence(20),
                remaining: vec![],
                at: ts(T0 + 50),
            },
        ],
        ..CommitBatch::default()
    };
    sink.commit(&second).await.unwrap();
    // Replaying the commit changes nothing.
    sink.commit(&second).await.unwrap();
    drop(sink);
    let mut sink = open(&dir).await;
    let state = sink.load_sequence_state().await.unwrap();
    assert_eq!(state[0].highest_seq, Sequence(21));
    assert_eq!(
        state[0].open_gaps,
        vec![gap("dev-a", 5, 6, false), gap("dev-a", 8, 9, false)]
    );
    assert_eq!(sqlite_count(&inspect(&dir), "iiot_", "gaps"), 3);
}

/// Dead letters keep their bytes exactly; data-loss records are stored as such;
/// replaying the commit adds neither twice.
#[tokio::test]
async fn dead_letters_and_data_loss_are_stored_exactly() {
    let dir = TempDir::new().unwrap();
    let mut sink = open(&dir).await;
    let payload: Vec<u8> = (0..=255).collect();
    let dead = DeadLetter {
        topic: "acme/s1/a1/l1/plc/dev-a/telemetry".into(),
        payload: Bytes::from(payload.clone()),
        reason: DeadLetterReason::Decode(DecodeError::UnsupportedVersion { version: 9 }),
        detail: "version 9 is not supported".into(),
        received_at: ts(T0),
    };
    let mut loss = DataLoss::new(
        dev("dev-a"),
        Sequence(100),
        Sequence(u64::MAX),
        u64::MAX - 100,
        DataLossReason::Overflow,
        ts(T0),
    )
    .unwrap();
    loss.bytes = Some(u64::MAX);
    loss.detail = Some("outbox full".into());
    let batch = CommitBatch {
        data_loss: vec![loss.clone()],
        dead_letters: vec![
            dead.clone(),
            DeadLetter {
                payload: Bytes::new(),
                reason: DeadLetterReason::BadTopic,
                ..dead.clone()
            },
        ],
        ..CommitBatch::default()
    };
    sink.commit(&batch).await.unwrap();
    sink.commit(&batch).await.unwrap();
    let db = inspect(&dir);
    assert_eq!(sqlite_count(&db, "iiot_", "dead_letter"), 2);
    assert_eq!(sqlite_count(&db, "iiot_", "data_loss"), 1);
    let (topic, reason, detail, bytes, at): (String, String, String, Vec<u8>, i64) = db
        .query_row(
            "SELECT topic, reason, detail, payload, received_at FROM iiot_dead_letter \
             WHERE length(payload) > 0",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!(
        (topic.as_str(), reason.as_str(), detail.as_str()),
        (
            dead.topic.as_str(),
            "decode:unsupported_version",
            dead.detail.as_str()
        )
    );
    assert_eq!(bytes, payload);
    assert_eq!(at, T0);
    let row = db
        .query_row(
            "SELECT message_id, first_seq, last_seq, lost_count, reason, detail, lost_bytes \
             FROM iiot_data_loss",
            [],
            |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    common::sink::sqlite_u64(r.get_ref(1)?),
                    common::sink::sqlite_u64(r.get_ref(2)?),
                    common::sink::sqlite_u64(r.get_ref(3)?),
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    common::sink::sqlite_u64(r.get_ref(6)?),
                ))
            },
        )
        .unwrap();
    assert_eq!(
        row,
        (
            loss.message_id.to_bytes().to_vec(),
            Some(100),
            Some(u64::MAX),
            Some(u64::MAX - 100),
            "overflow".to_owned(),
            Some("outbox full".to_owned()),
            Some(u64::MAX)
        )
    );
}

/// An invalid table prefix is a setup error, found before any file is touched.
#[tokio::test]
async fn invalid_prefix_is_setup_error() {
    let dir = TempDir::new().unwrap();
    let mut c = SqliteConfig::new(dir.path().join("x.sqlite3"));
    c.set_table_prefix("Bad-Prefix");
    let err = SqliteSink::open(c).await.unwrap_err();
    assert!(matches!(err, SinkError::Setup { .. }), "{err}");
    assert!(!dir.path().join("x.sqlite3").exists());
}

/// A constraint SQLite enforces (here a UNIQUE index an operator added on
/// `(device_id, tag, time)`) makes the commit `Rejected`, typed: SQLite's
/// extended code 2067 (`SQLITE_CONSTRAINT_UNIQUE`, primary 19) and the rusqlite
/// error as its source. Nothing of the batch is committed and the sink keeps
/// working.
#[tokio::test]
async fn constraint_violation_is_rejected_with_the_sqlite_code() {
    let dir = TempDir::new().unwrap();
    let mut sink = open(&dir).await;
    inspect(&dir)
        .execute_batch("CREATE UNIQUE INDEX one_per_time ON iiot_samples (device_id, tag, time)")
        .unwrap();
    let first = CommitBatch {
        telemetry: vec![accepted("dev-a", 1, 1, doubles(3, T0))],
        ..CommitBatch::default()
    };
    sink.commit(&first).await.unwrap();
    // Another message with the same samples: a unique violation.
    let again = CommitBatch {
        telemetry: vec![
            accepted("dev-a", 2, 2, doubles(1, T0 + 10_000_000)),
            accepted("dev-a", 3, 3, doubles(3, T0)),
        ],
        ..CommitBatch::default()
    };
    let err = sink.commit(&again).await.unwrap_err();
    assert_eq!(err.kind(), SinkErrorKind::Rejected, "{err}");
    assert!(matches!(err, SinkError::Rejected { .. }));
    assert!(!err.is_transient());
    assert_eq!(err.code(), Some(ErrorCode::Sqlite(2067)), "{err}");
    assert_eq!(err.code().and_then(|c| c.sqlite_primary()), Some(19));
    assert_eq!(err.sqlstate(), None);
    let source = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<rusqlite::Error>())
        .expect("the rusqlite error is the source");
    assert_eq!(
        source.sqlite_error_code(),
        Some(rusqlite::ErrorCode::ConstraintViolation)
    );
    let db = inspect(&dir);
    assert_eq!(sqlite_count(&db, "iiot_", "messages"), 1);
    assert_eq!(sqlite_count(&db, "iiot_", "samples"), 3);
    // The refused content is the batch's, not the connection's: the good half
    // commits on the same sink.
    let rest = CommitBatch {
        telemetry: vec![again.telemetry[0].clone()],
        ..CommitBatch::default()
    };
    assert_eq!(sink.commit(&rest).await.unwrap().rows_written, 1);
    assert_eq!(sqlite_count(&db, "iiot_", "samples"), 4);
}

/// Another process holds the write lock past the busy timeout: the commit is
/// `Unavailable` with nothing written, and the retry after the lock is released
/// reopens the database and succeeds.
#[tokio::test]
async fn busy_database_is_unavailable_then_retry_succeeds() {
    let dir = TempDir::new().unwrap();
    let mut config = SqliteConfig::new(dir.path().join("ingest.sqlite3"));
    config.set_busy_timeout(std::time::Duration::from_millis(50));
    let mut sink = SqliteSink::open(config).await.unwrap();
    let batch = CommitBatch {
        telemetry: vec![accepted("dev-a", 1, 1, doubles(3, T0))],
        ..CommitBatch::default()
    };
    let other = inspect(&dir);
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = sink.commit(&batch).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    other.execute_batch("ROLLBACK").unwrap();
    assert_eq!(sqlite_count(&other, "iiot_", "samples"), 0);
    assert_eq!(sink.commit(&batch).await.unwrap().rows_written, 3);
    assert_eq!(sqlite_count(&other, "iiot_", "samples"), 3);
}

// ---- model check -----------------------------------------------------------

fn value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        any::<f64>().prop_map(|v| Some(Value::Double(v))),
        any::<f32>().prop_map(|v| Some(Value::Float(v))),
        any::<i64>().prop_map(|v| Some(Value::Int(v))),
        any::<u64>().prop_map(|v| Some(Value::UInt(v))),
        any::<bool>().prop_map(|v| Some(Value::Bool(v))),
        "[a-z\u{e9}\u{2713}]{0,6}".prop_map(|v| Some(Value::String(v))),
        prop::collection::vec(any::<u8>(), 0..6).prop_map(|v| Some(Value::Bytes(v.into()))),
        Just(None),
    ]
}

fn pool_batch(i: usize) -> impl Strategy<Value = AcceptedBatch> {
    let device = if i.is_multiple_of(2) {
        "dev-a"
    } else {
        "dev-b"
    };
    prop::collection::vec((value(), 0..1_000_000i64), 0..5).prop_map(move |vals| {
        let samples = vals
            .into_iter()
            .enumerate()
            .map(|(k, (v, dt))| {
                let t = ts(T0 + dt);
                let tag = common::sink::tag(&format!("m/t{k}"));
                match v {
                    Some(v) => Sample::good(tag, v, t),
                    None => Sample::without_value(tag, Quality::BAD, t),
                }
            })
            .collect();
        // Message ids repeat across the two devices on purpose.
        accepted(device, i as u64, (i / 2) as u128, samples)
    })
}

#[derive(Debug, Clone)]
enum Step {
    Commit(Vec<usize>),
    Reopen,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            6 => prop::collection::vec(0..6usize, 0..5).prop_map(Step::Commit),
            1 => Just(Step::Reopen),
        ],
        1..8,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random commit sequences with repeats (within and across commits, and
    /// across restarts) leave exactly the model's rows, and every report matches
    /// the model's written/skipped split.
    #[test]
    fn random_commit_sequences_match_the_model(
        pool in (0..6usize).map(pool_batch).collect::<Vec<_>>(),
        steps in steps(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = TempDir::new().unwrap();
            let mut sink = open(&dir).await;
            let mut model: HashSet<usize> = HashSet::new(); // pool index of stored keys
            let mut committed: Vec<CommitBatch> = Vec::new();
            for step in steps {
                match step {
                    Step::Reopen => {
                        drop(sink);
                        sink = open(&dir).await;
                    }
                    Step::Commit(idx) => {
                        let cb = CommitBatch {
                            telemetry: idx.iter().map(|&i| pool[i].clone()).collect(),
                            ..CommitBatch::default()
                        };
                        let mut want = CommitReport::default();
                        for &i in &idx {
                            if model.insert(i) {
                                want.batches_written += 1;
                                want.rows_written += pool[i].batch.samples.len() as u64;
                            } else {
                                want.batches_skipped += 1;
                            }
                        }
                        let got = sink.commit(&cb).await.unwrap();
                        prop_assert_eq!(got, want);
                        committed.push(cb);
                    }
                }
            }
            let db = inspect(&dir);
            prop_assert_eq!(sqlite_samples(&db, "iiot_"), expected_rows(&committed, 1));
            prop_assert_eq!(sqlite_count(&db, "iiot_", "messages"), model.len() as i64);
            Ok(())
        })?;
    }
}
