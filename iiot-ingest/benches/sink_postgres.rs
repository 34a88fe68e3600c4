//! Rows per second through the PostgreSQL sink, beside two baselines on the same
//! rows and the same table, in the same run:
//!
//! - `psql -c "COPY … FROM STDIN (FORMAT binary)"` fed a binary COPY file of the
//!   same rows (written by the sink's own encoder);
//! - row-by-row `INSERT` (one prepared statement per row) in one transaction.
//!
//! and the whole pipeline on the same rows: pre-encoded Protobuf payloads
//! through an in-memory source, the schema-version router, validation, dedupe,
//! gap tracking, batching and the same sink, until every delivery is acknowledged.
//!
//! Run: `cargo bench -p iiot-ingest --bench sink_postgres`. Environment:
//! `IIOT_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`),
//! `IIOT_BENCH_ROWS` (default 200 000), `IIOT_BENCH_COMMIT_ROWS` (rows per
//! commit, default 10 000), `IIOT_BENCH_ROUNDS` (default 3; the median is
//! reported). Without a reachable server it prints why and exits 0. Works in
//! schemas `iiot_bench_*`, dropped at the end.
#![allow(missing_docs)]

use std::io::Write as _;
use std::time::Instant;

use iiot_core::types::{Sample, Value};
use iiot_ingest::record::{AcceptedBatch, CommitBatch};
use iiot_ingest::sink::Sink;
use iiot_ingest::sink::postgres::copy::{SAMPLE_COLUMNS, SampleCopyEncoder};
use iiot_ingest::sink::postgres::types::{PgTime, PgU64};
use iiot_ingest::source::memory::MemorySource;
use iiot_ingest::{Pipeline, PipelineConfig};
use tokio_postgres::types::ToSql;
use tokio_util::sync::CancellationToken;

mod sink_common;
use sink_common::pg::{count, reset, sink_for};
use sink_common::{SAMPLES_PER_BATCH, build, env_usize, median, payloads, psql_copy, rate};

fn insert_params(accepted: &AcceptedBatch, sample: &Sample) -> Vec<Box<dyn ToSql + Sync + Send>> {
    let value = sample.value();
    let (double, int, boolean) = match value {
        Some(Value::Double(x)) => (Some(*x), None, None),
        Some(Value::Float(x)) => (Some(f64::from(*x)), None, None),
        Some(Value::Int(x)) => (None, Some(*x), None),
        Some(Value::Bool(x)) => (None, None, Some(*x)),
        _ => (None, None, None),
    };
    vec![
        Box::new(PgTime(sample.source_time())),
        Box::new(accepted.batch.device_id.as_str().to_owned()),
        Box::new(sample.tag().as_str().to_owned()),
        Box::new(value.map(|v| v.type_name().to_owned())),
        Box::new(double),
        Box::new(int),
        Box::new(None::<PgU64>),
        Box::new(boolean),
        Box::new(None::<String>),
        Box::new(None::<Vec<u8>>),
        Box::new(i64::from(sample.quality().status_code())),
        Box::new(accepted.batch.message_id.to_bytes().to_vec()),
        Box::new(PgU64(accepted.batch.seq.0)),
    ]
}

#[tokio::main]
async fn main() {
    let url = std::env::var("IIOT_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let rows = env_usize("IIOT_BENCH_ROWS", 200_000);
    let commit_rows = env_usize("IIOT_BENCH_COMMIT_ROWS", 10_000);
    let rounds = env_usize("IIOT_BENCH_ROUNDS", 3).max(1);

    let Ok((client, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await else {
        eprintln!("sink_postgres bench: PostgreSQL at {url} unreachable; skipped");
        return;
    };
    tokio::spawn(conn);
    let mut client = client;

    let commits = build(rows, commit_rows);
    let rows: usize = commits.iter().map(CommitBatch::sample_count).sum();
    println!(
        "rows {rows}, {} commits of {} rows, {SAMPLES_PER_BATCH} samples per telemetry batch, median of {rounds}",
        commits.len(),
        commits[0].sample_count()
    );

    // Both COPY paths get fresh schemas with the sink's own DDL. Their rounds
    // alternate (sink, psql, sink, psql, …) so that both see the same load from
    // whatever else runs on the machine.
    let s_sink = "iiot_bench_sink";
    let s_psql = "iiot_bench_psql";
    for s in [s_sink, s_psql] {
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
            .await
            .unwrap();
    }
    let mut sink = sink_for(&url, s_sink).await;
    drop(sink_for(&url, s_psql).await);
    // The psql input: the same rows, written by the sink's own encoder.
    let mut enc = SampleCopyEncoder::new();
    for c in &commits {
        for a in &c.telemetry {
            enc.push_batch(a);
        }
    }
    let file = std::env::temp_dir().join(format!("iiot-bench-{}.pgcopy", std::process::id()));
    let bytes = enc.finish();
    std::fs::File::create(&file)
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    let copy_sql =
        format!("COPY {s_psql}.iiot_samples ({SAMPLE_COLUMNS}) FROM STDIN (FORMAT binary)");
    // The same rows as one CommitBatch: one transaction, like the psql COPY.
    let one = CommitBatch {
        telemetry: commits
            .iter()
            .flat_map(|c| c.telemetry.iter().cloned())
            .collect(),
        ..CommitBatch::default()
    };
    // The pipeline's input: every telemetry batch as the Protobuf payload a
    // gateway publishes, with its UNS topic.
    let payloads = payloads(&commits, "acme");
    let mut pipeline_times = Vec::new();
    let mut sink_times = Vec::new();
    let mut one_times = Vec::new();
    let mut psql_times = Vec::new();
    let mut psql_ok = true;
    for _ in 0..rounds {
        // 1. The sink: pre-built CommitBatches, messages ledger + binary COPY,
        //    one transaction per CommitBatch.
        reset(&client, s_sink).await;
        let t = Instant::now();
        for c in &commits {
            sink.commit(c).await.unwrap();
        }
        sink_times.push(t.elapsed());

        // 1b. The sink, all rows in one CommitBatch.
        reset(&client, s_sink).await;
        let t = Instant::now();
        sink.commit(&one).await.unwrap();
        one_times.push(t.elapsed());

        // 1c. The whole pipeline: decode, validate, dedupe, gaps, batch, sink, ack.
        reset(&client, s_sink).await;
        let (source, feed) = MemorySource::new(payloads.len());
        for (topic, payload) in &payloads {
            feed.try_send(topic.clone(), payload.clone()).unwrap();
        }
        drop(feed);
        let cfg = PipelineConfig {
            batch_max_rows: std::num::NonZeroUsize::new(commit_rows).unwrap(),
            max_in_flight: std::num::NonZeroUsize::new(payloads.len()).unwrap(),
            ..PipelineConfig::default()
        };
        let (_handle, pipeline) = Pipeline::new(source, sink_for(&url, s_sink).await, cfg);
        let t = Instant::now();
        let run = pipeline.run(CancellationToken::new()).await.unwrap();
        pipeline_times.push(t.elapsed());
        assert_eq!(run.rows_written as usize, rows);

        // 2. psql COPY of the same rows in one transaction.
        reset(&client, s_psql).await;
        match psql_copy(&url, &copy_sql, &file) {
            Ok(elapsed) => psql_times.push(elapsed),
            Err(why) => {
                eprintln!("{why}");
                psql_ok = false;
            }
        }
    }
    let copied = count(&client, s_psql).await;
    let _ = std::fs::remove_file(&file);

    // 3. Row-by-row INSERT in one transaction.
    reset(&client, s_psql).await;
    let insert = client
        .prepare(&format!(
            "INSERT INTO {s_psql}.iiot_samples ({SAMPLE_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        ))
        .await
        .unwrap();
    let tx = client.transaction().await.unwrap();
    let t = Instant::now();
    for c in &commits {
        for a in &c.telemetry {
            for s in &a.batch.samples {
                let p = insert_params(a, s);
                let refs: Vec<&(dyn ToSql + Sync)> = p
                    .iter()
                    .map(|b| b.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                tx.execute(&insert, &refs).await.unwrap();
            }
        }
    }
    tx.commit().await.unwrap();
    let insert_t = t.elapsed();

    let sink_t = median(sink_times.clone());
    let sink_best = sink_times.iter().min().copied().unwrap_or_default();
    let sink_r = rate(rows, sink_t);
    println!("| path | rows/s (median) | rows/s (best) | median time | ratio (median) |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| sink: ledger + binary COPY, {} commits | {sink_r:.0} | {:.0} | {sink_t:.2?} | 1.00x |",
        commits.len(),
        rate(rows, sink_best)
    );
    let pipe_t = median(pipeline_times.clone());
    let pipe_best = pipeline_times.iter().min().copied().unwrap_or_default();
    let pipe_r = rate(rows, pipe_t);
    println!(
        "| pipeline: decode + validate + dedupe + gaps + sink + ack | {pipe_r:.0} | {:.0} | {pipe_t:.2?} | {:.2}x |",
        rate(rows, pipe_best),
        pipe_r / sink_r
    );
    let one_t = median(one_times.clone());
    let one_best = one_times.iter().min().copied().unwrap_or_default();
    println!(
        "| sink: ledger + binary COPY, 1 commit | {:.0} | {:.0} | {one_t:.2?} | {:.2}x |",
        rate(rows, one_t),
        rate(rows, one_best),
        sink_t.as_secs_f64() / one_t.as_secs_f64()
    );
    if psql_ok && copied == rows as i64 {
        let psql_t = median(psql_times.clone());
        let psql_best = psql_times.iter().min().copied().unwrap_or_default();
        let r = rate(rows, psql_t);
        println!(
            "| psql COPY binary, 1 transaction | {r:.0} | {:.0} | {psql_t:.2?} | pipeline = {:.2}x psql; sink = {:.2}x psql (best: {:.2}x; 1 commit: {:.2}x) |",
            rate(rows, psql_best),
            pipe_r / r,
            sink_r / r,
            psql_best.as_secs_f64() / sink_best.as_secs_f64(),
            psql_t.as_secs_f64() / one_t.as_secs_f64()
        );
    } else {
        println!("| psql COPY binary | failed ({copied} rows copied) | | | |");
    }
    let r = rate(rows, insert_t);
    println!(
        "| row-by-row INSERT, 1 transaction | {r:.0} | | {insert_t:.2?} | pipeline = {:.1}x INSERT; sink = {:.1}x INSERT |",
        pipe_r / r,
        sink_r / r
    );
    println!(
        "cores available: {}",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );
    for s in [s_sink, s_psql] {
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
            .await
            .unwrap();
    }
}
