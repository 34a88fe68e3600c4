//! The PostgreSQL sink against the real server at `IIOT_PG_URL` (issue 7): exact
//! values, idempotent commits, gaps, data loss, dead letters, migrations, and
//! faults (a backend killed mid-commit or between commits, a poison value, a
//! missing table, an unreachable server). Each test works in its own schema.
#![cfg(feature = "postgres")]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::pg::PgEnv;
use common::sink::{T0, accepted, all_types, dev, doubles, expected_rows, ts};
use iiot_core::codec::DecodeError;
use iiot_core::types::{DataLoss, DataLossReason, Sample, Sequence, Value};
use iiot_ingest::record::{
    CommitBatch, CommitReport, DeadLetter, DeadLetterReason, DeviceSequenceState, Gap, GapChange,
};
use iiot_ingest::sink::postgres::{PostgresConfig, PostgresSink, SCHEMA_VERSION, TimescaleMode};
use iiot_ingest::sink::{ErrorCode, Sink, SinkError, SinkErrorKind, SqlState};

/// PostgreSQL keeps microseconds.
const US: i64 = 1_000;

macro_rules! env_or_skip {
    ($name:expr) => {
        match PgEnv::new($name).await {
            Some(env) => env,
            None => return,
        }
    };
}

fn gap(device: &str, first: u64, last: u64, announced: bool) -> Gap {
    Gap {
        device_id: dev(device),
        first: Sequence(first),
        last: Sequence(last),
        first_seen: ts(T0 - T0 % US),
        announced,
    }
}

/// Every value kind comes back exactly (times at microsecond resolution), over
/// several COPY chunks; the schema is created on plain PostgreSQL (no
/// TimescaleDB here) at the current version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_value_type_round_trips_through_copy() {
    let env = env_or_skip!("types");
    let mut sink = env.sink().await;
    let batch = CommitBatch {
        telemetry: vec![
            accepted("dev-a", 1, 1, all_types(T0)),
            accepted("dev-b", u64::MAX, 2, doubles(20_000, T0)),
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
    assert_eq!(env.count("samples").await, rows as i64);
    assert_eq!(env.count("messages").await, 2);
    assert_eq!(env.samples().await, expected_rows([&batch], US));
    let version: i32 = env
        .client
        .query_one(
            &format!("SELECT max(version) FROM {}", env.table("schema_version")),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, SCHEMA_VERSION);
    let timescale: bool = env
        .client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sink.is_hypertable(), timescale);
    env.cleanup().await;
}

/// The same CommitBatch twice, then again from a restarted sink: no new rows,
/// reported as skipped. Repeats inside one CommitBatch are written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_and_repeated_batches_write_once() {
    let env = env_or_skip!("idem");
    let a = accepted("dev-a", 1, 10, doubles(5, T0));
    let b = accepted("dev-b", 1, 10, doubles(3, T0)); // same message id, other device
    let batch = CommitBatch {
        telemetry: vec![a.clone(), b, a.clone(), a],
        ..CommitBatch::default()
    };
    let mut sink = env.sink().await;
    assert_eq!(
        sink.commit(&batch).await.unwrap(),
        CommitReport {
            batches_written: 2,
            batches_skipped: 2,
            rows_written: 8
        }
    );
    assert_eq!(
        sink.commit(&batch).await.unwrap(),
        CommitReport {
            batches_written: 0,
            batches_skipped: 4,
            rows_written: 0
        }
    );
    drop(sink);
    let mut restarted = env.sink().await;
    assert_eq!(restarted.commit(&batch).await.unwrap().rows_written, 0);
    assert_eq!(env.count("samples").await, 8);
    assert_eq!(env.count("messages").await, 2);
    assert_eq!(env.samples().await, expected_rows([&batch], US));
    env.cleanup().await;
}

/// Gaps opened, split and closed are in the gaps table and come back from
/// `load_sequence_state`, also from a new sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_and_sequence_state_survive_restart() {
    let env = env_or_skip!("gaps");
    let mut sink = env.sink().await;
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
            GapChange::Opened(gap("dev-c", 1, 3, true)),
        ],
        ..CommitBatch::default()
    };
    sink.commit(&first).await.unwrap();
    assert_eq!(
        sink.load_sequence_state().await.unwrap(),
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
            // Only announced loss, no batch stored: resumes after the gap.
            DeviceSequenceState {
                device_id: dev("dev-c"),
                highest_seq: Sequence(3),
                open_gaps: vec![gap("dev-c", 1, 3, true)],
            },
        ]
    );
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
                at: ts(T0 + 50_000),
            },
            GapChange::Narrowed {
                device_id: dev("dev-a"),
                first: Sequence(20),
                remaining: vec![],
                at: ts(T0 + 50_000),
            },
        ],
        ..CommitBatch::default()
    };
    sink.commit(&second).await.unwrap();
    sink.commit(&second).await.unwrap(); // a replay changes nothing
    drop(sink);
    let mut sink = env.sink().await;
    let state = sink.load_sequence_state().await.unwrap();
    assert_eq!(state[0].highest_seq, Sequence(21));
    assert_eq!(
        state[0].open_gaps,
        vec![gap("dev-a", 5, 6, false), gap("dev-a", 8, 9, false)]
    );
    assert_eq!(env.count("gaps").await, 4);
    env.cleanup().await;
}

/// Dead letters are stored byte for byte with topic, reason label, detail and
/// time (a NUL in the detail, which PostgreSQL text refuses, becomes U+FFFD);
/// data-loss records as such; a replayed commit adds neither twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_and_data_loss_are_stored_exactly() {
    let env = env_or_skip!("dead");
    let mut sink = env.sink().await;
    let payload: Vec<u8> = (0..=255).rev().collect();
    let dead = DeadLetter {
        topic: "acme/s1/a1/l1/plc/dev-a/telemetry".into(),
        payload: Bytes::from(payload.clone()),
        reason: DeadLetterReason::Decode(DecodeError::Protobuf {
            reason: "truncated varint".into(),
        }),
        detail: "truncated varint".into(),
        received_at: ts(T0),
    };
    let mut loss = DataLoss::new(
        dev("dev-a"),
        Sequence(100),
        Sequence(u64::MAX),
        u64::MAX - 100,
        DataLossReason::Expired,
        ts(T0),
    )
    .unwrap();
    loss.bytes = Some(u64::MAX);
    let batch = CommitBatch {
        data_loss: vec![loss.clone()],
        dead_letters: vec![
            dead.clone(),
            DeadLetter {
                payload: Bytes::from_static(b"\0"),
                reason: DeadLetterReason::DeviceMismatch,
                // PostgreSQL text refuses NUL; a dead letter must never be refused.
                detail: "nul \0 inside".into(),
                ..dead.clone()
            },
        ],
        ..CommitBatch::default()
    };
    sink.commit(&batch).await.unwrap();
    sink.commit(&batch).await.unwrap();
    assert_eq!(env.count("dead_letter").await, 2);
    assert_eq!(env.count("data_loss").await, 1);
    let r = env
        .client
        .query_one(
            &format!(
                "SELECT topic, reason, detail, payload, \
                 (extract(epoch FROM received_at) * 1000000)::int8 FROM {} \
                 WHERE length(payload) > 1",
                env.table("dead_letter")
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, &str>(0), dead.topic);
    assert_eq!(r.get::<_, &str>(1), "decode:malformed_protobuf");
    assert_eq!(r.get::<_, &str>(2), dead.detail);
    assert_eq!(r.get::<_, &[u8]>(3), &payload[..]);
    assert_eq!(r.get::<_, i64>(4), T0 / US);
    let nul_detail: String = env
        .client
        .query_one(
            &format!(
                "SELECT detail FROM {} WHERE length(payload) = 1",
                env.table("dead_letter")
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(nul_detail, "nul \u{fffd} inside");
    let r = env
        .client
        .query_one(
            &format!(
                "SELECT message_id, first_seq::text, last_seq::text, lost_count::text, reason, \
                 lost_bytes::text FROM {}",
                env.table("data_loss")
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, &[u8]>(0), &loss.message_id.to_bytes()[..]);
    assert_eq!(r.get::<_, &str>(1), "100");
    assert_eq!(r.get::<_, &str>(2), u64::MAX.to_string());
    assert_eq!(r.get::<_, &str>(3), (u64::MAX - 100).to_string());
    assert_eq!(r.get::<_, &str>(4), "expired");
    assert_eq!(r.get::<_, &str>(5), u64::MAX.to_string());
    env.cleanup().await;
}

/// The sink's backend is killed (`pg_terminate_backend`) while its COPY waits
/// for a lock the test holds: the commit fails with `Unavailable`, nothing is
/// committed, and the next commit reconnects and writes every row exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_killed_mid_commit_then_reconnects_without_loss_or_duplicates() {
    let env = env_or_skip!("killmid");
    let mut sink = env.sink().await;
    let batch = CommitBatch {
        telemetry: vec![
            accepted("dev-a", 1, 1, doubles(500, T0)),
            accepted("dev-a", 2, 2, doubles(500, T0)),
        ],
        ..CommitBatch::default()
    };
    let mut locker = common::services::pg_client().await.unwrap();
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute(&format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        env.table("samples")
    ))
    .await
    .unwrap();
    let to_commit = batch.clone();
    let task = tokio::spawn(async move {
        let r = sink.commit(&to_commit).await;
        (sink, r)
    });
    // Wait (bounded) until the sink's session is blocked on our lock, mid-commit.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = env
            .client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE application_name = $1 AND wait_event_type = 'Lock'",
                &[&env.schema],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "sink never blocked on the lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(env.terminate_sinks().await, 1);
    let (mut sink, result) = task.await.unwrap();
    assert!(
        matches!(result, Err(SinkError::Unavailable { .. })),
        "{result:?}"
    );
    lock.rollback().await.unwrap();
    assert_eq!(env.count("messages").await, 0);
    assert_eq!(env.count("samples").await, 0);
    let report = sink.commit(&batch).await.unwrap();
    assert_eq!(report.rows_written, 1000);
    assert_eq!(sink.commit(&batch).await.unwrap().batches_skipped, 2);
    assert_eq!(env.count("samples").await, 1000);
    assert_eq!(env.samples().await, expected_rows([&batch], US));
    env.cleanup().await;
}

/// The sink's idle backend is killed between commits: the next commit either
/// notices the closed connection and reconnects at once, or fails with
/// `Unavailable` and the one after that reconnects. No loss, no duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_killed_between_commits_then_reconnects() {
    let env = env_or_skip!("killidle");
    let mut sink = env.sink().await;
    let first = CommitBatch {
        telemetry: vec![accepted("dev-a", 1, 1, doubles(10, T0))],
        ..CommitBatch::default()
    };
    let second = CommitBatch {
        telemetry: vec![accepted("dev-a", 2, 2, doubles(10, T0))],
        ..CommitBatch::default()
    };
    sink.commit(&first).await.unwrap();
    assert_eq!(env.terminate_sinks().await, 1);
    let mut unavailable = 0;
    let report = loop {
        match sink.commit(&second).await {
            Ok(r) => break r,
            Err(SinkError::Unavailable { .. }) if unavailable == 0 => unavailable += 1,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(report.rows_written, 10);
    assert_eq!(env.count("samples").await, 20);
    assert_eq!(env.samples().await, expected_rows([&first, &second], US));
    env.cleanup().await;
}

/// A value PostgreSQL refuses (text with a NUL byte, SQLSTATE 22021) makes the
/// commit `Rejected` with nothing of the batch committed; the sink keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_value_is_rejected_and_nothing_is_committed() {
    let env = env_or_skip!("poison");
    let mut sink = env.sink().await;
    let good = accepted("dev-a", 1, 1, doubles(10, T0));
    let poison = accepted(
        "dev-a",
        2,
        2,
        vec![Sample::good(
            common::sink::tag("x"),
            Value::String("a\0b".into()),
            ts(T0),
        )],
    );
    let batch = CommitBatch {
        telemetry: vec![good.clone(), poison],
        gaps: vec![GapChange::Opened(gap("dev-a", 5, 6, false))],
        ..CommitBatch::default()
    };
    let err = sink.commit(&batch).await.unwrap_err();
    assert!(matches!(err, SinkError::Rejected { .. }), "{err}");
    assert_eq!(err.sqlstate(), SqlState::new("22021"), "{err}");
    for table in ["messages", "samples", "gaps"] {
        assert_eq!(env.count(table).await, 0, "{table}");
    }
    // Bisected: the good half commits on the same sink.
    let rest = CommitBatch {
        telemetry: vec![good],
        ..CommitBatch::default()
    };
    assert_eq!(sink.commit(&rest).await.unwrap().rows_written, 10);
    assert_eq!(env.count("samples").await, 10);
    env.cleanup().await;
}

/// A table dropped under the sink is a setup problem, not the batch's fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_table_is_setup_error() {
    let env = env_or_skip!("missing");
    let mut sink = env.sink().await;
    env.client
        .batch_execute(&format!("DROP TABLE {}", env.table("samples")))
        .await
        .unwrap();
    let batch = CommitBatch {
        telemetry: vec![accepted("dev-a", 1, 1, doubles(1, T0))],
        ..CommitBatch::default()
    };
    let err = sink.commit(&batch).await.unwrap_err();
    assert!(matches!(err, SinkError::Setup { .. }), "{err}");
    // undefined_table
    assert_eq!(err.sqlstate(), SqlState::new("42P01"), "{err}");
    env.cleanup().await;
}

/// A unique violation (SQLSTATE 23505, here from a UNIQUE index an operator
/// added on `(device_id, tag, time)`) is `Rejected`, typed: the SQLSTATE is the
/// error's code and the tokio-postgres error its source, with the server's
/// constraint name. Nothing of the batch is committed; the sink keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_violation_is_rejected_with_sqlstate_23505() {
    let env = env_or_skip!("unique");
    let mut sink = env.sink().await;
    env.client
        .batch_execute(&format!(
            "CREATE UNIQUE INDEX one_per_time ON {} (device_id, tag, time)",
            env.table("samples")
        ))
        .await
        .unwrap();
    let first = CommitBatch {
        telemetry: vec![accepted("dev-a", 1, 1, doubles(3, T0))],
        ..CommitBatch::default()
    };
    sink.commit(&first).await.unwrap();
    let good = accepted("dev-a", 2, 2, doubles(1, T0 + 10_000_000));
    let again = CommitBatch {
        telemetry: vec![good.clone(), accepted("dev-a", 3, 3, doubles(3, T0))],
        ..CommitBatch::default()
    };
    let err = sink.commit(&again).await.unwrap_err();
    assert_eq!(err.kind(), SinkErrorKind::Rejected, "{err}");
    assert!(!err.is_transient());
    let code = err.sqlstate().expect("the server's SQLSTATE");
    assert_eq!((code.as_str(), code.class()), ("23505", "23"));
    assert_eq!(err.code(), Some(ErrorCode::SqlState(code)));
    let source = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<tokio_postgres::Error>())
        .expect("the tokio-postgres error is the source");
    assert_eq!(
        source.code(),
        Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
    );
    let db = source.as_db_error().unwrap();
    assert_eq!(db.constraint(), Some("one_per_time"));
    assert_eq!(env.count("messages").await, 1);
    assert_eq!(env.count("samples").await, 3);
    let rest = CommitBatch {
        telemetry: vec![good],
        ..CommitBatch::default()
    };
    assert_eq!(sink.commit(&rest).await.unwrap().rows_written, 1);
    assert_eq!(env.count("samples").await, 4);
    env.cleanup().await;
}

/// Sinks starting together on an empty schema migrate once, without error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_are_serialised() {
    let env = env_or_skip!("migrate");
    let (a, b, c) = tokio::join!(
        PostgresSink::connect(env.config.clone()),
        PostgresSink::connect(env.config.clone()),
        PostgresSink::connect(env.config.clone()),
    );
    a.unwrap();
    b.unwrap();
    c.unwrap();
    assert_eq!(
        env.count("schema_version").await,
        i64::from(SCHEMA_VERSION),
        "each migration applied once"
    );
    env.cleanup().await;
}

/// Nothing listens: `Unavailable` within the connect timeout (needs no server).
#[tokio::test]
async fn unreachable_server_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut config = PostgresConfig::new(format!("postgres://postgres@127.0.0.1:{port}/test"));
    config.set_connect_timeout(Duration::from_secs(2));
    let err = PostgresSink::connect(config).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
}

/// Invalid identifiers and URLs are setup errors, found without connecting.
#[test]
fn invalid_config_is_setup_error() {
    let mut c = PostgresConfig::default();
    c.set_schema("public; DROP TABLE x");
    assert!(matches!(PostgresSink::new(c), Err(SinkError::Setup { .. })));
    let c = PostgresConfig::new("postgres://[::1");
    assert!(matches!(PostgresSink::new(c), Err(SinkError::Setup { .. })));
}

/// Holds an ACCESS EXCLUSIVE lock on the samples table in its own session until
/// dropped (rolled back).
async fn lock_samples(env: &PgEnv) -> tokio_postgres::Client {
    let locker = common::services::pg_client().await.unwrap();
    locker
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            env.table("samples")
        ))
        .await
        .unwrap();
    locker
}

/// A commit future dropped mid-transaction (cancel safety): nothing is
/// committed, and the next commit discards that session, reconnects and writes
/// every row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_commit_future_leaves_nothing_half_written() {
    let env = env_or_skip!("cancel");
    let mut sink = env.sink().await;
    let batch = CommitBatch {
        telemetry: vec![accepted("dev-a", 1, 1, doubles(100, T0))],
        ..CommitBatch::default()
    };
    let locker = lock_samples(&env).await;
    // The commit blocks on the lock; give up on it after a moment.
    let cancelled = tokio::time::timeout(Duration::from_millis(300), sink.commit(&batch)).await;
    assert!(cancelled.is_err(), "commit should have been blocked");
    drop(locker); // releases the lock
    let report = sink.commit(&batch).await.unwrap();
    assert_eq!(report.rows_written, 100);
    assert_eq!(env.count("samples").await, 100);
    assert_eq!(env.count("messages").await, 1);
    env.cleanup().await;
}

/// A commit that runs into `statement_timeout` is `Unavailable` (retry later),
/// and a retry after the blockage goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_is_unavailable_and_retry_succeeds() {
    let mut env = env_or_skip!("timeout");
    env.config.set_statement_timeout(Duration::from_millis(200));
    let mut sink = env.sink().await;
    let batch = CommitBatch {
        telemetry: vec![accepted("dev-a", 1, 1, doubles(10, T0))],
        ..CommitBatch::default()
    };
    let locker = lock_samples(&env).await;
    let err = sink.commit(&batch).await.unwrap_err();
    assert!(matches!(err, SinkError::Unavailable { .. }), "{err}");
    assert_eq!(err.sqlstate(), SqlState::new("57014"), "{err}");
    drop(locker);
    assert_eq!(sink.commit(&batch).await.unwrap().rows_written, 10);
    assert_eq!(env.count("samples").await, 10);
    env.cleanup().await;
}

/// The sink's backend is killed in the middle of the COPY stream, with part of
/// the rows already inserted in the open transaction (a row trigger stops the
/// COPY halfway on an advisory lock the test holds): `Unavailable`, nothing
/// committed, and the next commit reconnects and writes every row exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_killed_mid_copy_stream_then_reconnects() {
    let env = env_or_skip!("killcopy");
    let mut sink = env.sink().await;
    let key = i64::from(std::process::id()) << 8 | 7;
    env.client
        .batch_execute(&format!(
            "CREATE FUNCTION \"{s}\".gate() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.tag = 'gate/row' THEN PERFORM pg_advisory_xact_lock_shared({key}); \
             END IF; RETURN NEW; END $$; \
             CREATE TRIGGER gate BEFORE INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION \"{s}\".gate()",
            s = env.schema,
            t = env.table("samples")
        ))
        .await
        .unwrap();
    let mut telemetry: Vec<_> = (0..200)
        .map(|i| accepted("dev-a", i, u128::from(i), doubles(100, T0)))
        .collect();
    telemetry[100].batch.samples[0] = Sample::good(common::sink::tag("gate/row"), 1.0, ts(T0));
    let batch = CommitBatch {
        telemetry,
        ..CommitBatch::default()
    };
    let locker = common::services::pg_client().await.unwrap();
    locker
        .execute("SELECT pg_advisory_lock($1)", &[&key])
        .await
        .unwrap();
    let to_commit = batch.clone();
    let task = tokio::spawn(async move {
        let r = sink.commit(&to_commit).await;
        (sink, r)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stuck: i64 = env
            .client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
                 AND wait_event_type = 'Lock' AND query LIKE 'COPY%'",
                &[&env.schema],
            )
            .await
            .unwrap()
            .get(0);
        if stuck > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "COPY never reached the gate row");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(env.terminate_sinks().await, 1);
    let (mut sink, result) = task.await.unwrap();
    assert!(
        matches!(result, Err(SinkError::Unavailable { .. })),
        "{result:?}"
    );
    assert_eq!(env.count("samples").await, 0);
    assert_eq!(env.count("messages").await, 0);
    drop(locker); // releases the advisory lock
    let report = sink.commit(&batch).await.unwrap();
    assert_eq!(report.rows_written, 20_000);
    assert_eq!(sink.commit(&batch).await.unwrap().batches_skipped, 200);
    assert_eq!(env.samples().await, expected_rows([&batch], US));
    env.cleanup().await;
}

/// `timescale = require` on a server without the extension is a setup error;
/// `off` gives plain tables even where it exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timescale_modes_on_this_server() {
    let mut env = env_or_skip!("tsmode");
    let available: bool = env
        .client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    env.config.set_timescale(TimescaleMode::Off);
    assert!(!env.sink().await.is_hypertable());
    env.config.set_timescale(TimescaleMode::Require);
    let required = PostgresSink::connect(env.config.clone()).await;
    if available {
        assert!(required.unwrap().is_hypertable());
    } else {
        let err = required.unwrap_err();
        assert!(matches!(err, SinkError::Setup { .. }), "{err}");
    }
    env.cleanup().await;
}

/// Two workers commit the same batches at once (a redelivery that reached a
/// second shared-subscription worker): every row is written exactly once, and
/// between them the two reports count each batch once as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sinks_committing_the_same_batch_write_once() {
    let env = env_or_skip!("race");
    let batch = CommitBatch {
        telemetry: (0..50)
            .map(|i| accepted("dev-a", i, u128::from(i), doubles(40, T0)))
            .collect(),
        ..CommitBatch::default()
    };
    let (mut a, mut b) = (env.sink().await, env.sink().await);
    let (ra, rb) = tokio::join!(a.commit(&batch), b.commit(&batch));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.batches_written + rb.batches_written, 50);
    assert_eq!(ra.batches_skipped + rb.batches_skipped, 50);
    assert_eq!(ra.rows_written + rb.rows_written, 2_000);
    assert_eq!(env.count("samples").await, 2_000);
    assert_eq!(env.samples().await, expected_rows([&batch], US));
    env.cleanup().await;
}
