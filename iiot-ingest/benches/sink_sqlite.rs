//! Rows per second through the SQLite sink (a file in a temporary directory, WAL,
//! `synchronous = FULL`), beside row-by-row INSERT of the same rows through
//! rusqlite with one prepared statement in one transaction on the same schema.
//!
//! Run: `cargo bench -p iiot-ingest --bench sink_sqlite`. Environment:
//! `IIOT_BENCH_ROWS` (default 200 000), `IIOT_BENCH_COMMIT_ROWS` (default
//! 10 000), `IIOT_BENCH_ROUNDS` (default 3; medians).
#![allow(missing_docs)]

use std::time::Instant;

use iiot_core::types::Value;
use iiot_ingest::record::CommitBatch;
use iiot_ingest::sink::Sink;
use iiot_ingest::sink::sqlite::{SqliteConfig, SqliteSink};
use rusqlite::params;

mod sink_common;
use sink_common::{build, env_usize, median, rate};

#[tokio::main]
async fn main() {
    let rows = env_usize("IIOT_BENCH_ROWS", 200_000);
    let commit_rows = env_usize("IIOT_BENCH_COMMIT_ROWS", 10_000);
    let rounds = env_usize("IIOT_BENCH_ROUNDS", 3).max(1);
    let commits = build(rows, commit_rows);
    let rows: usize = commits.iter().map(CommitBatch::sample_count).sum();
    println!(
        "rows {rows}, {} commits of {} rows, median of {rounds}",
        commits.len(),
        commits[0].sample_count()
    );
    let dir = tempfile::TempDir::new().unwrap();
    let mut sink_times = Vec::new();
    let mut insert_times = Vec::new();
    let mut insert_ntx_times = Vec::new();
    for round in 0..rounds {
        // The sink, on a fresh file.
        let path = dir.path().join(format!("sink-{round}.sqlite3"));
        let mut sink = SqliteSink::open(SqliteConfig::new(&path)).await.unwrap();
        let t = Instant::now();
        for c in &commits {
            sink.commit(c).await.unwrap();
        }
        sink_times.push(t.elapsed());
        drop(sink);

        // Row by row on the same schema (created by the sink): all rows in one
        // transaction, and one transaction per CommitBatch like the sink.
        for (name, per_commit) in [("insert-1tx", false), ("insert-ntx", true)] {
            let path = dir.path().join(format!("{name}-{round}.sqlite3"));
            drop(SqliteSink::open(SqliteConfig::new(&path)).await.unwrap());
            let mut conn = rusqlite::Connection::open(&path).unwrap();
            conn.pragma_update(None, "synchronous", "FULL").unwrap();
            let t = Instant::now();
            if per_commit {
                for c in &commits {
                    insert_rows(&mut conn, std::slice::from_ref(c));
                }
            } else {
                insert_rows(&mut conn, &commits);
            }
            if per_commit {
                insert_ntx_times.push(t.elapsed());
            } else {
                insert_times.push(t.elapsed());
            }
        }
    }
    let sink_t = median(sink_times);
    let insert_t = median(insert_times);
    let insert_ntx_t = median(insert_ntx_times);
    println!("| path | rows/s (median) | median time | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| SQLite sink, {} commits | {:.0} | {sink_t:.2?} | {:.2}x INSERT |",
        commits.len(),
        rate(rows, sink_t),
        insert_t.as_secs_f64() / sink_t.as_secs_f64()
    );
    println!(
        "| rusqlite row-by-row INSERT, 1 transaction | {:.0} | {insert_t:.2?} | 1.00x |",
        rate(rows, insert_t)
    );
    println!(
        "| rusqlite row-by-row INSERT, {} transactions | {:.0} | {insert_ntx_t:.2?} | {:.2}x INSERT |",
        commits.len(),
        rate(rows, insert_ntx_t),
        insert_t.as_secs_f64() / insert_ntx_t.as_secs_f64()
    );
}

/// Inserts the samples of `commits` row by row in one transaction.
fn insert_rows(conn: &mut rusqlite::Connection, commits: &[CommitBatch]) {
    let tx = conn.transaction().unwrap();
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO iiot_samples (time, device_id, tag, value_type, v_double, \
                 v_int, v_bool, quality, message_id, seq) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .unwrap();
        for c in commits {
            for a in &c.telemetry {
                let id = a.batch.message_id.to_bytes();
                for s in &a.batch.samples {
                    let (double, int, boolean) = match s.value() {
                        Some(Value::Double(x)) => (Some(*x), None, None),
                        Some(Value::Float(x)) => (Some(f64::from(*x)), None, None),
                        Some(Value::Int(x)) => (None, Some(*x), None),
                        Some(Value::Bool(x)) => (None, None, Some(*x)),
                        _ => (None, None, None),
                    };
                    stmt.execute(params![
                        s.source_time().unix_nanos(),
                        a.batch.device_id.as_str(),
                        s.tag().as_str(),
                        s.value().map(Value::type_name),
                        double,
                        int,
                        boolean,
                        i64::from(s.quality().status_code()),
                        &id[..],
                        a.batch.seq.0 as i64,
                    ])
                    .unwrap();
                }
            }
        }
    }
    tx.commit().unwrap();
}
