//! The halves as separate processes against Mosquitto: `iiot sim`, `iiot gateway`
//! and `iiot ingest`. The gateway reaches the broker through a relay the test cuts;
//! in the middle of that outage the gateway is killed with SIGKILL and restarted on
//! the same outbox, and later the ingest worker is killed and restarted too.
//!
//! Afterwards every produced sample is stored exactly once (issue 8). "Produced" is
//! what the gateway's produced log says (`produced_log`: one line per batch once its
//! append to the outbox is durable, written by the process itself, so it survives the
//! SIGKILL) together with the outbox's own view (the `open` line of each run carries
//! the outbox's `next_seq`, the `stopped` line of the clean run its final counters):
//! - the outbox made exactly the batches `[first open.next_seq, stopped.next_seq)`
//!   durable, and dropped, expired and lost none of them;
//! - the store holds exactly those sequence numbers, each once, with no gap recorded;
//! - every batch in the log is stored with its message id, its sample count and, per
//!   sample, its tag and source timestamp, each (tag, time) once;
//! - the only durable batches without a line are the one per kill that the kill caught
//!   between append and line, just below the next run's `open.next_seq`; they are
//!   stored once and complete (sample rows = their message's count);
//! - the clean run's `stopped` counts equal its lines, and its
//!   `iiot_reference_gateway_samples_total` metric never ran ahead of them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::{
    ChildGuard, free_port, mqtt_available, mqtt_url, sample_config, scrape, unique, write,
};
use iiot_core::types::MessageId;
use iiot_protocols::mqtt::{MqttConfig, Session};
use iiot_reference::demo::Relay;
use iiot_reference::gateway::{ProducedEntry, ProducedSample};
use tokio_util::sync::CancellationToken;

/// Where ingest writes.
enum Store {
    Sqlite(std::path::PathBuf),
    Postgres { url: String, prefix: String },
}

impl Store {
    fn toml(&self) -> String {
        match self {
            Self::Sqlite(db) => format!("[sink.sqlite]\npath = {:?}\n", db.display().to_string()),
            Self::Postgres { url, prefix } => format!(
                "[sink.postgres]\nurl = {url:?}\ntable_prefix = {prefix:?}\ntimescale = \"off\"\n"
            ),
        }
    }

    /// (sequence numbers in order, distinct message ids, gap rows) of `device`.
    async fn stored(&self, device: &str) -> (Vec<i64>, i64, i64) {
        match self {
            Self::Sqlite(db) => stored_sqlite(db, device),
            Self::Postgres { url, prefix } => {
                let Ok((c, conn)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await
                else {
                    return (Vec::new(), 0, 0);
                };
                tokio::spawn(conn);
                let seqs = c
                    .query(
                        &format!("SELECT seq::bigint FROM {prefix}messages WHERE device_id = $1 ORDER BY seq"),
                        &[&device],
                    )
                    .await
                    .map(|rows| rows.iter().map(|r| r.get::<_, i64>(0)).collect())
                    .unwrap_or_default();
                let one = |sql: String| {
                    let c = &c;
                    async move {
                        c.query_one(&sql, &[&device])
                            .await
                            .map_or(-1, |r| r.get::<_, i64>(0))
                    }
                };
                let ids = one(format!(
                    "SELECT count(DISTINCT message_id) FROM {prefix}samples WHERE device_id = $1"
                ))
                .await;
                let gaps = one(format!(
                    "SELECT count(*) FROM {prefix}gaps WHERE device_id = $1"
                ))
                .await;
                (seqs, ids, gaps)
            }
        }
    }
}

/// A stored batch: its `messages` row and its sample rows.
#[derive(Debug, Default)]
struct StoredBatch {
    /// `messages` rows with this seq (one when all is well).
    message_ids: Vec<Vec<u8>>,
    /// `messages.samples` of the first.
    count: i64,
    /// Sample rows with this seq: (message id, tag, time in the store's unit).
    samples: Vec<(Vec<u8>, String, i64)>,
}

impl Store {
    /// A sample's source time in the unit the store keeps: SQLite nanoseconds,
    /// PostgreSQL microseconds (the sink drops the sub-microsecond part).
    fn time(&self, ns: i64) -> i64 {
        match self {
            Self::Sqlite(_) => ns,
            Self::Postgres { .. } => ns.div_euclid(1_000),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "SQLite",
            Self::Postgres { .. } => "PostgreSQL",
        }
    }

    /// Everything stored for `device`, by sequence number.
    async fn contents(&self, device: &str) -> BTreeMap<i64, StoredBatch> {
        let mut out: BTreeMap<i64, StoredBatch> = BTreeMap::new();
        match self {
            Self::Sqlite(db) => {
                let conn = rusqlite::Connection::open(db).unwrap();
                let mut s = conn
                    .prepare(
                        "SELECT seq, message_id, samples FROM iiot_messages WHERE device_id = ?1",
                    )
                    .unwrap();
                let rows = s
                    .query_map([device], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, Vec<u8>>(1)?,
                            r.get::<_, i64>(2)?,
                        ))
                    })
                    .unwrap();
                for row in rows {
                    let (seq, id, count) = row.unwrap();
                    out.entry(seq).or_default().add_message(id, count);
                }
                let mut s = conn
                    .prepare(
                        "SELECT seq, message_id, tag, time FROM iiot_samples WHERE device_id = ?1",
                    )
                    .unwrap();
                let rows = s
                    .query_map([device], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, Vec<u8>>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, i64>(3)?,
                        ))
                    })
                    .unwrap();
                for row in rows {
                    let (seq, id, tag, time) = row.unwrap();
                    out.entry(seq).or_default().samples.push((id, tag, time));
                }
            }
            Self::Postgres { url, prefix } => {
                let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                let q = format!(
                    "SELECT seq::bigint, message_id, samples::bigint FROM {prefix}messages WHERE device_id = $1"
                );
                for r in c.query(&q, &[&device]).await.unwrap() {
                    out.entry(r.get(0))
                        .or_default()
                        .add_message(r.get(1), r.get(2));
                }
                let q = format!(
                    "SELECT seq::bigint, message_id, tag, time FROM {prefix}samples WHERE device_id = $1"
                );
                for r in c.query(&q, &[&device]).await.unwrap() {
                    let time: std::time::SystemTime = r.get(3);
                    let us = time
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_micros();
                    out.entry(r.get(0)).or_default().samples.push((
                        r.get(1),
                        r.get(2),
                        i64::try_from(us).unwrap(),
                    ));
                }
            }
        }
        out
    }
}

impl StoredBatch {
    fn add_message(&mut self, id: Vec<u8>, count: i64) {
        if self.message_ids.is_empty() {
            self.count = count;
        }
        self.message_ids.push(id);
    }
}

fn stored_sqlite(db: &std::path::Path, device: &str) -> (Vec<i64>, i64, i64) {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return (Vec::new(), 0, 0);
    };
    let seqs = conn
        .prepare("SELECT seq FROM iiot_messages WHERE device_id = ?1 ORDER BY seq")
        .and_then(|mut s| {
            s.query_map([device], |r| r.get::<_, i64>(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap_or_default();
    let one = |sql: &str| {
        conn.query_row(sql, [device], |r| r.get::<_, i64>(0))
            .unwrap_or(-1)
    };
    let ids = one("SELECT count(DISTINCT message_id) FROM iiot_samples WHERE device_id = ?1");
    let gaps = one("SELECT count(*) FROM iiot_gaps WHERE device_id = ?1");
    (seqs, ids, gaps)
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_killed_in_an_outage_and_ingest_killed_lose_nothing() {
    if !mqtt_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::Sqlite(dir.path().join("ingest.sqlite3"));
    scenario(dir.path(), &store).await;
}

/// The same into PostgreSQL (IIOT_PG_URL).
#[tokio::test(flavor = "multi_thread")]
async fn into_postgres_too() {
    if !mqtt_available() {
        return;
    }
    let Some(url) = common::postgres_url().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("refp{}_", std::process::id());
    let store = Store::Postgres {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    scenario(dir.path(), &store).await;
    common::drop_ingest_tables(&url, &prefix).await;
}

/// One gateway run as its produced log tells it.
#[derive(Debug, Default)]
struct Run {
    /// The outbox at open: (next_seq, appended).
    open: (u64, u64),
    /// Whether an unparsable (partial) line preceded this run's `open`.
    after_partial_line: bool,
    /// (seq, message id, samples) per `batch` line.
    batches: Vec<(u64, MessageId, Vec<ProducedSample>)>,
    /// The `stopped` line: (batches, samples, append_errors, next_seq, appended,
    /// records the outbox dropped, expired or found unreadable).
    stopped: Option<[u64; 7]>,
}

/// The runs in the produced log at `path`. A line that does not parse is accepted
/// only directly before an `open` (a partial line a SIGKILL left).
fn read_produced_log(path: &Path) -> Vec<Run> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut runs: Vec<Run> = Vec::new();
    let mut partial: Option<String> = None;
    for line in text.lines() {
        let entry = match serde_json::from_str::<ProducedEntry>(line) {
            Ok(e) => e,
            Err(e) => {
                assert!(partial.is_none(), "two bad lines in a row: {line:?}: {e}");
                partial = Some(line.to_owned());
                continue;
            }
        };
        match entry {
            ProducedEntry::Open {
                next_seq, appended, ..
            } => runs.push(Run {
                open: (next_seq, appended),
                after_partial_line: partial.take().is_some(),
                ..Run::default()
            }),
            other => {
                assert!(
                    partial.is_none(),
                    "a bad line not before an open: {partial:?}"
                );
                let run = runs.last_mut().expect("a line before the first open");
                assert!(run.stopped.is_none(), "a line after stopped: {line}");
                match other {
                    ProducedEntry::Batch {
                        seq,
                        message_id,
                        samples,
                    } => run.batches.push((seq, message_id, samples)),
                    ProducedEntry::Stopped {
                        batches,
                        samples,
                        append_errors,
                        next_seq,
                        appended,
                        dropped_records,
                        expired_records,
                        unreadable_records,
                    } => {
                        run.stopped = Some([
                            batches,
                            samples,
                            append_errors,
                            next_seq,
                            appended,
                            dropped_records + expired_records,
                            unreadable_records,
                        ]);
                    }
                    e => panic!("unexpected produced-log entry {e:?}"),
                }
            }
        }
    }
    assert!(partial.is_none(), "the log ends in a bad line: {partial:?}");
    runs
}

/// What the gateway produced: the durable range `[first, end)` of sequence numbers,
/// the batches with a log line, and the durable ones without.
struct Produced {
    first: u64,
    end: u64,
    logged: BTreeMap<u64, (MessageId, Vec<ProducedSample>)>,
    unlogged: Vec<u64>,
    /// The clean run's `stopped` sample count.
    last_run_samples: u64,
}

/// Checks the produced log of `kills` SIGKILLed runs and one clean run against the
/// outbox's view, and returns what it proves was produced.
fn produced(path: &Path, kills: usize) -> Produced {
    let runs = read_produced_log(path);
    assert_eq!(runs.len(), kills + 1, "one open line per gateway run");
    let last = runs.last().unwrap();
    let [
        batches,
        samples,
        append_errors,
        end,
        appended,
        discarded,
        unreadable,
    ] = last.stopped.expect("the clean run wrote its stopped line");
    for run in &runs[..kills] {
        assert!(run.stopped.is_none(), "a killed run has no stopped line");
    }
    assert_eq!(
        batches,
        last.batches.len() as u64,
        "clean run: stopped.batches = its batch lines"
    );
    assert_eq!(
        samples,
        last.batches.iter().map(|b| b.2.len() as u64).sum::<u64>(),
        "clean run: stopped.samples = the samples of its batch lines"
    );
    assert_eq!(append_errors, 0, "the outbox refused a batch");
    assert_eq!(discarded, 0, "the outbox dropped or expired records");
    assert_eq!(unreadable, 0, "the outbox found unreadable records");
    let (first, appended0) = runs[0].open;
    assert!(end > first, "nothing produced");
    assert_eq!(
        appended - appended0,
        end - first,
        "the outbox's appended counter agrees with its sequence numbers"
    );

    // Within a run the lines are contiguous from open.next_seq; from one run to the
    // next at most one durable batch (the one the kill caught) has no line.
    let mut logged = BTreeMap::new();
    let mut unlogged = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let from = run.open.0;
        for (k, (seq, id, samples)) in run.batches.iter().enumerate() {
            assert_eq!(*seq, from + k as u64, "run {i}: batch lines not contiguous");
            assert!(!samples.is_empty(), "run {i}: empty batch {seq}");
            logged.insert(*seq, (*id, samples.clone()));
        }
        let logged_end = from + run.batches.len() as u64;
        let next = runs.get(i + 1).map_or(end, |r| r.open.0);
        if i + 1 < runs.len() {
            match caught_by_kill(logged_end, next) {
                Ok(caught) => unlogged.extend(caught),
                Err(e) => panic!("run {i} (killed): {e}"),
            }
        } else {
            assert_eq!(
                next, logged_end,
                "the clean run logged every batch up to stopped.next_seq"
            );
        }
    }
    for (i, run) in runs.iter().enumerate() {
        if run.after_partial_line {
            eprintln!("run {i}: the previous run was killed in the middle of a line");
        }
    }
    Produced {
        first,
        end,
        logged,
        unlogged,
        last_run_samples: samples,
    }
}

/// The durable batch a kill caught between its append and its log line, if any: the
/// killed run logged up to `logged_end` (exclusive) and the outbox reopened at `next`.
/// The batch loop appends one batch at a time, so a kill explains at most one.
fn caught_by_kill(logged_end: u64, next: u64) -> Result<Option<u64>, String> {
    match next.checked_sub(logged_end) {
        Some(0) => Ok(None),
        Some(1) => Ok(Some(logged_end)),
        _ => Err(format!(
            "logged up to {logged_end} but the outbox reopened at {next}"
        )),
    }
}

/// Every produced batch and sample is in `store` exactly once.
fn assert_stored_exactly_once(store: &Store, p: &Produced, stored: &BTreeMap<i64, StoredBatch>) {
    let name = store.name();
    let seqs: Vec<u64> = stored.keys().map(|&s| u64::try_from(s).unwrap()).collect();
    let expected: Vec<u64> = (p.first..p.end).collect();
    assert_eq!(
        seqs, expected,
        "{name}: stored batches = the durable range of the outbox"
    );
    let mut seen: BTreeSet<(String, i64)> = BTreeSet::new();
    let mut rows = 0usize;
    let mut logged_samples = 0usize;
    for (&seq, b) in stored {
        assert_eq!(
            b.message_ids.len(),
            1,
            "{name}: batch {seq} stored {} times",
            b.message_ids.len()
        );
        let id = &b.message_ids[0];
        for (row_id, tag, time) in &b.samples {
            assert_eq!(
                row_id, id,
                "{name}: a sample of batch {seq} carries another message id"
            );
            assert!(
                seen.insert((tag.clone(), *time)),
                "{name}: sample ({tag}, {time}) stored twice"
            );
        }
        rows += b.samples.len();
        assert_eq!(
            b.samples.len() as i64,
            b.count,
            "{name}: batch {seq} has {} sample rows but its message says {}",
            b.samples.len(),
            b.count
        );
        let seq = u64::try_from(seq).unwrap();
        match p.logged.get(&seq) {
            Some((produced_id, samples)) => {
                assert_eq!(
                    id.as_slice(),
                    produced_id.to_bytes(),
                    "{name}: batch {seq}: message id"
                );
                let mut want: Vec<(String, i64)> = samples
                    .iter()
                    .map(|s| (s.tag.clone(), store.time(s.time_ns)))
                    .collect();
                let mut got: Vec<(String, i64)> = b
                    .samples
                    .iter()
                    .map(|(_, t, time)| (t.clone(), *time))
                    .collect();
                want.sort();
                got.sort();
                assert_eq!(got, want, "{name}: batch {seq}: samples (tag, source time)");
                logged_samples += samples.len();
            }
            None => assert!(
                p.unlogged.contains(&seq),
                "{name}: batch {seq} is stored but neither logged nor caught by a kill"
            ),
        }
    }
    eprintln!(
        "{name}: batches {}..{} stored once each, {rows} sample rows; {logged_samples} \
         samples matched one by one with the produced log; {} batch(es) caught by a kill \
         between append and log line {:?}",
        p.first,
        p.end,
        p.unlogged.len(),
        p.unlogged
    );
}

/// The reader of the produced log on a made-up log: a run killed between an append
/// and its line (the outbox reopens one past the last line), then a run killed in the
/// middle of a line, then a clean run.
#[test]
fn produced_log_reader_allows_one_unlogged_batch_per_kill() {
    let dir = tempfile::tempdir().unwrap();
    let id = |n: u128| MessageId::from_parts(1_700_000_000_000, n).to_string();
    let batch = |seq: u64| {
        format!(
            "{{\"event\":\"batch\",\"seq\":{seq},\"message_id\":\"{}\",\
             \"samples\":[{{\"tag\":\"t/a\",\"time_ns\":{seq}}}]}}\n",
            id(u128::from(seq))
        )
    };
    let open = |next: u64| {
        format!(
            "{{\"event\":\"open\",\"device\":\"d\",\"pid\":1,\"next_seq\":{next},\
             \"appended\":{},\"backlog\":0}}\n",
            next - 1
        )
    };
    let text = [
        open(1),
        batch(1),
        batch(2),
        open(4), // 3 was durable, its line lost with the kill
        batch(4),
        "{\"event\":\"batch\",\"seq\":5,\"mes\n".to_owned(), // partial; 5 not durable
        open(5),
        batch(5),
        batch(6),
        "{\"event\":\"stopped\",\"batches\":2,\"samples\":2,\"append_errors\":0,\
         \"next_seq\":7,\"appended\":6,\"dropped_records\":0,\"expired_records\":0,\
         \"unreadable_records\":0}\n"
            .to_owned(),
    ]
    .concat();
    let path = write(dir.path(), "produced.jsonl", &text);
    let p = produced(&path, 2);
    assert_eq!((p.first, p.end), (1, 7));
    assert_eq!(
        p.logged.keys().copied().collect::<Vec<_>>(),
        [1, 2, 4, 5, 6]
    );
    assert_eq!(p.unlogged, [3]);
    assert_eq!(p.last_run_samples, 2);

    // Two lines missing at one kill is more than a kill can explain, and a reopen
    // below what was logged is a lost durable batch.
    assert_eq!(caught_by_kill(3, 3), Ok(None));
    assert_eq!(caught_by_kill(3, 4), Ok(Some(3)));
    assert!(caught_by_kill(2, 4).is_err());
    assert!(caught_by_kill(3, 2).is_err());
}

/// The value of an unlabelled counter in a Prometheus scrape.
fn counter(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

async fn scenario(dir: &std::path::Path, store: &Store) {
    let enterprise = unique("proc");
    let device = unique("plc");

    // The PLC.
    let map = sample_config("plant-map.toml").display().to_string();
    let (sim, plc_addr) = common::start_plc(dir);

    // Ingest into SQLite.
    let ingest_cfg = write(
        dir,
        "ingest.toml",
        &format!(
            "[mqtt]\nurl = {url:?}\nclient_id = {cid:?}\n\
             filters = [\"{enterprise}/+/+/+/+/+/telemetry/#\", \"{enterprise}/+/+/+/+/+/status\"]\n\
             [pipeline]\nbatch_max_delay = \"50ms\"\n{sink}",
            url = mqtt_url(),
            cid = unique("ingest"),
            sink = store.toml(),
        ),
    );
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let mut ingest = ChildGuard::spawn(&[
        "ingest",
        "--config",
        ingest_cfg.to_str().unwrap(),
        "--metrics",
        &metrics,
    ]);
    let cancel = CancellationToken::new();
    let broker: std::net::SocketAddr = mqtt_url()
        .trim_start_matches("mqtt://")
        .parse()
        .expect("IIOT_MQTT_URL as mqtt://IP:PORT");
    let relay = Relay::start(broker, &cancel).await.unwrap();
    assert!(ingest.read_line().starts_with("ingest started"));

    // Wait until ingest's subscriptions are in place: a probe's retained birth arrives.
    let probe = unique("probe");
    let (_h, session, _in) = Session::new(&MqttConfig::new(
        mqtt_url(),
        &probe,
        format!("{enterprise}/s/a/l/probe/{probe}"),
    ))
    .unwrap();
    let stop = CancellationToken::new();
    let probe_task = tokio::spawn(session.run(stop.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !scrape(port).contains(&format!("device=\"{probe}\"")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ingest never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    let _ = probe_task.await;

    // The gateway, killed once.
    let text = common::gateway_toml(
        &device,
        &enterprise,
        Path::new(&map),
        &dir.join("gw"),
        plc_addr.port(),
    )
    .replace("max_delay = \"1s\"", "max_delay = \"100ms\"");
    let produced_log = dir.join("produced.jsonl");
    let text = format!(
        "produced_log = {:?}\n{text}",
        produced_log.display().to_string()
    );
    let gw_cfg = write(dir, "gateway.toml", &text);
    let args = ["gateway", "--config", gw_cfg.to_str().unwrap()];
    let mut gw = ChildGuard::spawn(&args);
    assert!(gw.read_line().contains("running"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Broker outage; the gateway dies in the middle of it and comes back.
    relay.cut();
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(gw); // SIGKILL
    let gw_port = free_port();
    let gw_metrics = format!("127.0.0.1:{gw_port}");
    let mut gw = ChildGuard::spawn(&[args[0], args[1], args[2], "--metrics", &gw_metrics]);
    assert!(gw.read_line().contains("running"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    relay.restore();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The ingest worker dies once too; its persistent session keeps the rest.
    drop(ingest); // SIGKILL
    let ingest_again = ChildGuard::spawn(&["ingest", "--config", ingest_cfg.to_str().unwrap()]);
    let mut ingest = ingest_again;
    assert!(ingest.read_line().starts_with("ingest started"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The metric counts a batch only after its log line: it never runs ahead.
    let gw_metrics = scrape(gw_port);
    let metric = counter(&gw_metrics, "iiot_reference_gateway_samples_total")
        .expect("the gateway serves iiot_reference_gateway_samples_total");
    // The runtime's signals per source: connected to the PLC, reading.
    assert_eq!(
        counter(
            &gw_metrics,
            "iiot_gateway_source_connected{source=\"modbus\"}"
        ),
        Some(1),
        "{gw_metrics}"
    );
    assert!(
        counter(
            &gw_metrics,
            "iiot_gateway_readings_total{source=\"modbus\"}"
        )
        .unwrap_or(0)
            > 0,
        "{gw_metrics}"
    );
    // A clean stop (SIGTERM): stop polling, drain the outbox, exit.
    let status = std::process::Command::new("kill")
        .arg(gw.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !gw.exited() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gateway did not stop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // What the two runs produced, by the produced log and the outbox.
    let p = produced(&produced_log, 1);
    assert!(
        metric > 0 && metric <= p.last_run_samples,
        "metric {metric} vs {} samples produced by the run",
        p.last_run_samples
    );
    let batches = usize::try_from(p.end - p.first).unwrap();

    // Everything the two runs appended is stored once, without holes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut last = store.stored(&device).await;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = store.stored(&device).await;
        let settled = now == last && now.0.len() >= batches.max(4);
        last = now;
        if settled || tokio::time::Instant::now() > deadline {
            break;
        }
    }
    let (seqs, ids, gaps) = last;
    assert!(seqs.len() >= 4, "too few batches: {seqs:?}");
    let first = seqs[0];
    let expected: Vec<i64> = (first..first + seqs.len() as i64).collect();
    assert_eq!(
        seqs, expected,
        "sequence numbers must be contiguous and unique"
    );
    assert_eq!(ids, seqs.len() as i64, "one message id per sequence number");
    assert_eq!(gaps, 0, "ingest recorded a gap");
    // Every produced sample, one by one.
    assert_stored_exactly_once(store, &p, &store.contents(&device).await);
    cancel.cancel();
    drop(ingest);
    drop(sim);
}

/// PostgreSQL down when ingest starts (issue 23): one warning names host, port,
/// database and user; ingest keeps retrying instead of exiting, and ingests once the
/// database answers (here: a TCP proxy to the real server, started on the port ingest
/// was given only after the warning).
#[tokio::test(flavor = "multi_thread")]
async fn ingest_waits_for_a_postgres_that_starts_later() {
    if !mqtt_available() {
        return;
    }
    let Some(url) = common::postgres_url().await else {
        return;
    };
    let real: tokio_postgres::Config = url.parse().unwrap();
    let host = match &real.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        tokio_postgres::config::Host::Unix(_) => return, // a socket: no port to proxy
    };
    let real_port = real.get_ports().first().copied().unwrap_or(5432);
    let port = common::free_port();
    let user = real.get_user().unwrap_or("postgres");
    let db = real.get_dbname().unwrap_or("postgres");
    let late_url = format!("postgres://{user}@127.0.0.1:{port}/{db}");
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("late{}_", std::process::id());
    let cfg = write(
        dir.path(),
        "ingest.toml",
        &format!(
            "[mqtt]\nurl = {:?}\nclient_id = {:?}\nfilters = [\"late-pg/#\"]\n\n[sink.postgres]\nurl = {late_url:?}\ntable_prefix = {prefix:?}\ntimescale = \"off\"\n",
            mqtt_url(),
            common::unique("late-pg"),
        ),
    );
    let mut child = common::bin()
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .args(["ingest", "--config", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _guard = common::KillOnDrop(child);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let wait_for = |what: &str, needle: &dyn Fn(&str) -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if needle(&line) => return line,
                Ok(_) => {}
                Err(e) => panic!("no {what} on stderr: {e}"),
            }
        }
    };
    let target = format!("127.0.0.1:{port}/{db} as {user}");
    let warning = wait_for("warning naming the database", &|l: &str| {
        l.contains(&target)
    });
    assert!(warning.contains("retrying"), "{warning}");

    // The database "starts": a proxy on that port to the real server.
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let upstream = format!("{host}:{real_port}");
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut c, mut s) = (client, server);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c, &mut s2);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s, &mut c2);
            });
        }
    });
    wait_for("the reconnect", &|l: &str| {
        l.contains("PostgreSQL is reachable")
    });
    common::drop_ingest_tables(&url, &prefix).await;
}
