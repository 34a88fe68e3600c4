//! Rows per second through the Kafka sink into tansu (memory storage) on this
//! machine: the same pre-built `CommitBatch`es as the other sink benches, each
//! telemetry batch one record (Protobuf re-encode, key, headers), `acks = all`.
//!
//! Run: `cargo bench -p iiot-ingest --bench sink_kafka`. Uses `IIOT_KAFKA_URL`,
//! else starts `tansu` (PATH or `~/.cargo/bin`) on a free port and kills it at
//! the end; skips with a message when neither works. `IIOT_BENCH_ROWS` (default
//! 200 000), `IIOT_BENCH_COMMIT_ROWS` (default 10 000), `IIOT_BENCH_ROUNDS`
//! (default 3; medians).
#![allow(missing_docs)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use iiot_ingest::record::CommitBatch;
use iiot_ingest::sink::Sink;
use iiot_ingest::sink::kafka::{KafkaConfig, KafkaSink};

mod sink_common;
use sink_common::{build, env_usize, median, rate};

struct Broker(Option<Child>);

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn broker() -> Option<(String, Broker)> {
    if let Ok(url) = std::env::var("IIOT_KAFKA_URL") {
        return Some((url, Broker(None)));
    }
    let bin = std::env::var_os("HOME")
        .map(|h| std::path::PathBuf::from(h).join(".cargo/bin/tansu"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| "tansu".into());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(bin)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let guard = Broker(Some(child));
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Some((format!("127.0.0.1:{port}"), guard));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::main]
async fn main() {
    let rows = env_usize("IIOT_BENCH_ROWS", 200_000);
    let commit_rows = env_usize("IIOT_BENCH_COMMIT_ROWS", 10_000);
    let rounds = env_usize("IIOT_BENCH_ROUNDS", 3).max(1);
    let Some((addr, _broker)) = broker().await else {
        println!("skipping: no IIOT_KAFKA_URL and no tansu binary that starts");
        return;
    };
    let commits = build(rows, commit_rows);
    let rows: usize = commits.iter().map(CommitBatch::sample_count).sum();
    let records: usize = commits.iter().map(|c| c.telemetry.len()).sum();
    println!(
        "rows {rows} in {records} records, {} commits of {} rows, median of {rounds}",
        commits.len(),
        commits[0].sample_count()
    );
    let mut times = Vec::new();
    for round in 0..rounds {
        let mut cfg = KafkaConfig::new(&addr);
        cfg.set_topics(
            format!("bench.{round}.telemetry"),
            format!("bench.{round}.dead_letter"),
            format!("bench.{round}.events"),
        );
        let mut sink = KafkaSink::connect(cfg).await.unwrap();
        let t = Instant::now();
        for c in &commits {
            sink.commit(c).await.unwrap();
        }
        times.push(t.elapsed());
    }
    let t = median(times);
    println!("| path | rows/s (median) | records/s | median time |");
    println!("|---|---:|---:|---:|");
    println!(
        "| Kafka sink into tansu (memory), {} commits | {:.0} | {:.0} | {t:.2?} |",
        commits.len(),
        rate(rows, t),
        rate(records, t)
    );
}
