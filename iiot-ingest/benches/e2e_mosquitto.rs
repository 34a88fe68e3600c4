//! Rows per second end to end through Mosquitto (issue 7): pre-encoded telemetry
//! batches published with QoS 1 to a Mosquitto process the bench starts itself,
//! received by the MQTT source (persistent session, manual acks after commit),
//! through the pipeline (decode, validate, dedupe, gaps, batching) into the
//! PostgreSQL sink. Timed from the first publish until the pipeline reports every
//! row committed; the row count in the table must equal the rows published, or
//! the bench panics.
//!
//! Baselines on the same rows, in the same run, rounds interleaved:
//!
//! - **direct**: the same payloads through an in-memory source into the same
//!   pipeline and sink (no broker);
//! - **psql COPY**: `psql -c "COPY … FROM STDIN (FORMAT binary)"` of the same
//!   rows (written by the sink's own encoder), one transaction;
//! - **publish only**: the same publishes to a topic nobody subscribes to, timed
//!   to the last PUBACK (what the publisher and the broker's ingress can do).
//!
//! Run: `cargo bench -p iiot-ingest --bench e2e_mosquitto`. Environment:
//! `IIOT_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`),
//! `IIOT_BENCH_ROWS` (default 200 000), `IIOT_BENCH_COMMIT_ROWS` (rows per
//! commit, default 10 000), `IIOT_BENCH_ROUNDS` (default 3; medians reported),
//! `IIOT_BENCH_BROKER_INFLIGHT` (Mosquitto's `max_inflight_messages`, default
//! 1 000), `IIOT_BENCH_SOURCE_CHANNEL` (the MQTT source's `channel_capacity`,
//! default: every message of a round plus 1 000, see below),
//! `IIOT_BENCH_PUB_INFLIGHT` (the publisher's in-flight window, default 1 000),
//! `IIOT_BENCH_SHARED` (`0`: a plain instead of a `$share/…` telemetry
//! subscription), `IIOT_MOSQUITTO` (the binary, default `mosquitto` on PATH),
//! `IIOT_BENCH_MQTT` (the source's protocol: `5`, the default, or `3.1.1`).
//!
//! Why the source channel holds a whole round by default: it is what the
//! figures before the fix of the MQTT source deadlock were taken with.
//! Mosquitto 2.0.11 does not hold its deliveries to this (MQTT 3.1.1)
//! subscriber to `max_inflight_messages` (its log showed 381 un-acknowledged
//! QoS 1 messages out at a limit of 20), and with a backlog larger than
//! `channel_capacity` the source used to stall (its session task waited on the
//! full channel while the pipeline's acks waited for it). That is fixed
//! (`tests/mqtt_backlog.rs`); `IIOT_BENCH_SOURCE_CHANNEL=1000` (the library
//! default) now runs through. See docs/BENCHMARKS.md.
//! Without mosquitto or a reachable PostgreSQL it prints why and exits 0. Works
//! in schemas `iiot_bench_e2e_*`, dropped at the end; all traffic is to
//! 127.0.0.1.
#![allow(missing_docs)]

use std::io::Write as _;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use bytes::Bytes;
use iiot_core::codec::json;
use iiot_core::topic::UnsPath;
use iiot_core::types::{DeviceId, Status};
use iiot_ingest::record::CommitBatch;
use iiot_ingest::sink::postgres::copy::{SAMPLE_COLUMNS, SampleCopyEncoder};
use iiot_ingest::source::memory::MemorySource;
use iiot_ingest::source::mqtt::{MqttSource, MqttSourceConfig};
use iiot_ingest::{Pipeline, PipelineConfig, PipelineHandle, PipelineStats};
use tokio_util::sync::CancellationToken;

#[path = "../tests/common/mod.rs"]
mod common;
mod sink_common;
use common::mosquitto::{Mosquitto, Publisher};
use sink_common::pg::{count, reset, sink_for};
use sink_common::{SAMPLES_PER_BATCH, build, env_usize, median, payloads, psql_copy, rate};

/// The source's MQTT version from `IIOT_BENCH_MQTT` (`5` by default, or `3.1.1`).
fn bench_protocol() -> iiot_protocols::mqtt::MqttVersion {
    match std::env::var("IIOT_BENCH_MQTT").as_deref() {
        Ok("3.1.1" | "4" | "v4") => iiot_protocols::mqtt::MqttVersion::V311,
        _ => iiot_protocols::mqtt::MqttVersion::V5,
    }
}

/// No committed row for this long means the run is stuck (lost messages, a
/// deadlock): fail loudly instead of waiting forever.
const STALL: Duration = Duration::from_secs(30);

/// The broker's limits, raised so that its queues are not what is measured.
/// `max_inflight_messages`: un-acknowledged QoS 1 messages out to one client;
/// `max_queued_messages` / `max_queued_bytes`: messages held per client past that
/// window (default 1 000, beyond which QoS 1 messages are dropped).
fn broker_limits(inflight: usize, queued: usize) -> String {
    format!(
        "max_inflight_messages {inflight}\n\
         max_inflight_bytes 0\n\
         max_queued_messages {queued}\n\
         max_queued_bytes 0\n\
         set_tcp_nodelay true"
    )
}

/// Waits until the pipeline reports `rows` rows committed; panics when no row is
/// committed for [`STALL`] or the pipeline ends first.
async fn wait_rows(handle: &mut PipelineHandle, rows: u64, what: &str) -> PipelineStats {
    let mut last = handle.stats();
    while last.rows_written < rows {
        let seen = last.rows_written;
        match tokio::time::timeout(STALL, handle.wait_for(|s| s.rows_written > seen)).await {
            Ok(s) if s.rows_written > seen => last = s,
            Ok(s) => panic!("{what}: the pipeline ended after {seen} of {rows} rows: {s:?}"),
            Err(elapsed) => panic!(
                "{what}: no row committed for {STALL:?} ({elapsed}); {seen} of {rows} rows committed \
                 (lost messages or a stuck ack path): {last:?}"
            ),
        }
    }
    last
}

/// Checks a finished run wrote exactly `rows` rows, by its counters and by the
/// table; panics otherwise.
async fn verify(
    client: &tokio_postgres::Client,
    schema: &str,
    stats: &PipelineStats,
    rows: usize,
    what: &str,
) {
    let in_table = count(client, schema).await;
    assert!(
        stats.rows_written == rows as u64 && in_table == rows as i64,
        "{what}: published {rows} rows, pipeline wrote {}, table holds {in_table}: {stats:?}",
        stats.rows_written
    );
    assert_eq!(
        stats.dead_letter_total(),
        0,
        "{what}: dead letters: {stats:?}"
    );
}

struct E2e {
    total: Duration,
    publish: Duration,
    stats: PipelineStats,
}

/// One end-to-end round: a fresh persistent session, subscription checked with
/// a status probe, then the clock runs from the first publish until every row
/// is committed.
#[allow(clippy::too_many_arguments)]
async fn e2e_round(
    broker: &Mosquitto,
    url: &str,
    schema: &str,
    commits: &[CommitBatch],
    rows: usize,
    cfg: &PipelineConfig,
    round: usize,
    pub_inflight: u16,
    channel: NonZeroUsize,
) -> E2e {
    let ent = format!("bench{}r{round}", std::process::id());
    let msgs = payloads(commits, &ent);
    let mut source_cfg = MqttSourceConfig {
        url: broker.url(),
        protocol: bench_protocol(),
        client_id: format!("{ent}-ingest"),
        channel_capacity: channel,
        ..MqttSourceConfig::default()
    };
    source_cfg.filters = vec![
        if std::env::var("IIOT_BENCH_SHARED").as_deref() == Ok("0") {
            format!("{ent}/+/+/+/+/+/telemetry/#")
        } else {
            format!("$share/{ent}/{ent}/+/+/+/+/+/telemetry/#")
        },
        format!("{ent}/+/+/+/+/+/status"),
    ];
    let source = MqttSource::start(&source_cfg).unwrap();
    let (mut handle, pipeline) = Pipeline::new(source, sink_for(url, schema).await, cfg.clone());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(pipeline.run(cancel.clone()));
    let mut publisher =
        Publisher::connect_with(broker.port(), &format!("{ent}-pub"), pub_inflight).await;

    // The source subscribes once connected; a status probe on the second
    // filter (subscribed after the telemetry one) proves both are live.
    let probe_dev = DeviceId::new("probe").unwrap();
    let probe_topic = UnsPath::new(&ent, "plant1", "area1", "line1", "plc", probe_dev.clone())
        .unwrap()
        .status()
        .to_string();
    let probe = Bytes::from(json::encode_status(&Status::birth(probe_dev)));
    let mut live = false;
    for _ in 0..50 {
        publisher
            .publish_all(&[(probe_topic.clone(), probe.clone())])
            .await;
        if tokio::time::timeout(Duration::from_millis(200), handle.wait_for(|s| s.acked > 0))
            .await
            .is_ok()
        {
            live = true;
            break;
        }
    }
    assert!(live, "the MQTT source never received the probe");

    let t = Instant::now();
    publisher.publish_all(&msgs).await;
    let publish = t.elapsed();
    let seen = wait_rows(&mut handle, rows as u64, "end to end").await;
    let total = t.elapsed();
    drop(seen);
    cancel.cancel();
    let stats = task.await.unwrap().unwrap();
    publisher.disconnect().await;
    E2e {
        total,
        publish,
        stats,
    }
}

/// One direct round: the same payloads through an in-memory source.
async fn direct_round(
    url: &str,
    schema: &str,
    msgs: &[(String, Bytes)],
    cfg: &PipelineConfig,
) -> (Duration, PipelineStats) {
    let (source, feed) = MemorySource::new(msgs.len());
    for (topic, payload) in msgs {
        feed.try_send(topic.clone(), payload.clone()).unwrap();
    }
    drop(feed);
    let (_handle, pipeline) = Pipeline::new(source, sink_for(url, schema).await, cfg.clone());
    let t = Instant::now();
    let stats = pipeline.run(CancellationToken::new()).await.unwrap();
    (t.elapsed(), stats)
}

fn best(v: &[Duration]) -> Duration {
    v.iter().min().copied().unwrap_or_default()
}

#[tokio::main]
async fn main() {
    let url = std::env::var("IIOT_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let rows = env_usize("IIOT_BENCH_ROWS", 200_000);
    let commit_rows = env_usize("IIOT_BENCH_COMMIT_ROWS", 10_000);
    let rounds = env_usize("IIOT_BENCH_ROUNDS", 3).max(1);
    let broker_inflight = env_usize("IIOT_BENCH_BROKER_INFLIGHT", 1000);
    let pub_inflight = u16::try_from(env_usize("IIOT_BENCH_PUB_INFLIGHT", 1000).clamp(1, 65_535))
        .unwrap_or(u16::MAX);

    let Ok((client, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await else {
        eprintln!("e2e_mosquitto bench: PostgreSQL at {url} unreachable; skipped");
        return;
    };
    tokio::spawn(conn);

    let commits = build(rows, commit_rows);
    let rows: usize = commits.iter().map(CommitBatch::sample_count).sum();
    let batches: usize = commits.iter().map(|c| c.telemetry.len()).sum();
    let channel =
        NonZeroUsize::new(env_usize("IIOT_BENCH_SOURCE_CHANNEL", batches + 1000).max(1)).unwrap();
    // Room for every message of a round in the broker's per-client queue.
    let broker = match Mosquitto::try_start(&broker_limits(broker_inflight, batches * 2 + 1000)) {
        Ok(b) => b,
        Err(why) => {
            eprintln!("e2e_mosquitto bench: Mosquitto unavailable ({why}); skipped");
            return;
        }
    };
    println!(
        "rows {rows}, {batches} telemetry batches of {SAMPLES_PER_BATCH} samples, commits of {commit_rows} rows, \
         median of {rounds}; mosquitto on {} (max_inflight_messages {broker_inflight}), \
         source channel {channel}, publisher in-flight {pub_inflight}",
        broker.url()
    );

    let s_sink = "iiot_bench_e2e_sink";
    let s_psql = "iiot_bench_e2e_psql";
    for s in [s_sink, s_psql] {
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
            .await
            .unwrap();
    }
    // Creates both schemas with the sink's own DDL.
    drop(sink_for(&url, s_sink).await);
    drop(sink_for(&url, s_psql).await);

    // The psql input: the same rows, written by the sink's own encoder.
    let mut enc = SampleCopyEncoder::new();
    for c in &commits {
        for a in &c.telemetry {
            enc.push_batch(a);
        }
    }
    let file = broker.dir().join("rows.pgcopy");
    std::fs::File::create(&file)
        .unwrap()
        .write_all(&enc.finish())
        .unwrap();
    let copy_sql =
        format!("COPY {s_psql}.iiot_samples ({SAMPLE_COLUMNS}) FROM STDIN (FORMAT binary)");

    let cfg = PipelineConfig {
        batch_max_rows: NonZeroUsize::new(commit_rows).unwrap(),
        ..PipelineConfig::default()
    };
    let direct_msgs = payloads(&commits, "acme");
    let nosub_msgs = payloads(&commits, &format!("nosub{}", std::process::id()));
    let mut nosub = Publisher::connect_with(broker.port(), "bench-nosub", pub_inflight).await;

    let mut direct_t = Vec::new();
    let mut e2e_t = Vec::new();
    let mut e2e_pub_t = Vec::new();
    let mut psql_t = Vec::new();
    let mut nosub_t = Vec::new();
    let mut psql_ok = true;
    for round in 0..rounds {
        // 1. Direct: in-memory source → pipeline → sink.
        reset(&client, s_sink).await;
        let (d, direct_stats) = direct_round(&url, s_sink, &direct_msgs, &cfg).await;
        verify(&client, s_sink, &direct_stats, rows, "direct").await;
        direct_t.push(d);

        // 2. End to end through Mosquitto.
        reset(&client, s_sink).await;
        let e = e2e_round(
            &broker,
            &url,
            s_sink,
            &commits,
            rows,
            &cfg,
            round,
            pub_inflight,
            channel,
        )
        .await;
        verify(&client, s_sink, &e.stats, rows, "end to end").await;
        println!(
            "round {round}: direct {d:.2?}; e2e {:.2?} (publishing {:.2?}), {} commits, {} deliveries, \
             {} duplicates suppressed, {} at the sink",
            e.total,
            e.publish,
            e.stats.commits,
            e.stats.received,
            e.stats.duplicates_suppressed,
            e.stats.duplicates_at_sink
        );
        e2e_t.push(e.total);
        e2e_pub_t.push(e.publish);

        // 3. psql COPY of the same rows in one transaction.
        reset(&client, s_psql).await;
        match psql_copy(&url, &copy_sql, &file) {
            Ok(elapsed) if count(&client, s_psql).await == rows as i64 => psql_t.push(elapsed),
            other => {
                eprintln!("psql COPY failed: {other:?}");
                psql_ok = false;
            }
        }

        // 4. Publish only: the same messages, nobody subscribed.
        let t = Instant::now();
        nosub.publish_all(&nosub_msgs).await;
        nosub_t.push(t.elapsed());
    }
    nosub.disconnect().await;

    let direct_m = median(direct_t.clone());
    let direct_r = rate(rows, direct_m);
    let e2e_m = median(e2e_t.clone());
    let e2e_r = rate(rows, e2e_m);
    println!("| path | rows/s (median) | rows/s (best) | median time | ratio (medians) |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| direct: in-memory source → pipeline → PostgreSQL sink | {direct_r:.0} | {:.0} | {direct_m:.2?} | 1.00x |",
        rate(rows, best(&direct_t))
    );
    println!(
        "| **end to end**: publish QoS 1 → Mosquitto → MQTT source → pipeline → sink → PUBACK | {e2e_r:.0} | {:.0} | {e2e_m:.2?} | e2e = {:.2}x direct |",
        rate(rows, best(&e2e_t)),
        e2e_r / direct_r
    );
    if psql_ok {
        let psql_m = median(psql_t.clone());
        let psql_r = rate(rows, psql_m);
        println!(
            "| psql COPY binary, 1 transaction | {psql_r:.0} | {:.0} | {psql_m:.2?} | e2e = {:.2}x psql; direct = {:.2}x psql |",
            rate(rows, best(&psql_t)),
            e2e_r / psql_r,
            direct_r / psql_r
        );
    } else {
        println!("| psql COPY binary | failed | | | |");
    }
    let pub_m = median(e2e_pub_t.clone());
    println!(
        "| publishing phase of the e2e runs (to the last PUBACK) | {:.0} | {:.0} | {pub_m:.2?} | {:.0} msg/s |",
        rate(rows, pub_m),
        rate(rows, best(&e2e_pub_t)),
        rate(batches, pub_m)
    );
    let nosub_m = median(nosub_t.clone());
    println!(
        "| publish only, no subscriber (to the last PUBACK) | {:.0} | {:.0} | {nosub_m:.2?} | {:.0} msg/s |",
        rate(rows, nosub_m),
        rate(rows, best(&nosub_t)),
        rate(batches, nosub_m)
    );
    println!(
        "cores available: {}",
        std::thread::available_parallelism().map_or(0, NonZeroUsize::get)
    );
    // Connection chatter left out; anything else (dropped messages, limits) shown.
    let chatter = [
        "New connection from",
        "New client connected",
        "closed its connection",
        "disconnected.",
    ];
    let log = broker.log();
    let notable: Vec<&str> = log
        .lines()
        .filter(|l| !chatter.iter().any(|c| l.contains(c)))
        .collect();
    if !notable.is_empty() {
        println!("mosquitto log, connection notices left out:");
        for l in notable {
            println!("  {l}");
        }
    }
    for s in [s_sink, s_psql] {
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
            .await
            .unwrap();
    }
}
