//! Outbox benchmarks (issue 4), side by side with a raw append-only file and the field
//! guide's SQLite WAL outbox. 200-byte records.
//!
//! CI only compiles this (`cargo bench --no-run`). Run by hand:
//!
//! ```text
//! cargo bench -p iiot-edge --bench outbox -- all --rounds 3 --secs 4  # medians of 3
//! cargo bench -p iiot-edge --bench outbox -- ew1 --secs 10
//! cargo bench -p iiot-edge --bench outbox -- rss --gib 1 --cache-mib 64
//! cargo bench -p iiot-edge --features sled --bench outbox -- all --engine sled  # the sled engine
//! ```
//!
//! Scenarios: `ew1` `raw1` `sqlite1` (one fsync per record), `ew8` (8 concurrent
//! appenders), `gc10` `raw10` `sqlite10` (one flush per 10 ms window), `drain`, `rss`.

use std::fs::OpenOptions;
use std::io::Write;
use std::num::NonZeroUsize;
use std::path::Path;
use std::time::{Duration, Instant};

use iiot_core::publish::OutboundMessage;
use iiot_core::types::{DeviceId, Sequence};
use iiot_edge::outbox::{Durability, Engine, Outbox, OutboxConfig, WhenFull};

/// The engine under test (`--engine log|sled`, default log; sled needs `--features sled`).
static ENGINE: std::sync::OnceLock<Engine> = std::sync::OnceLock::new();

const RECORD: usize = 200;
const TOPIC: &str = "acme/site/area/line/plc/plc-01/telemetry";

fn payload() -> Vec<u8> {
    // 200 bytes of record: topic + payload, as stored by the SQLite and raw baselines too.
    vec![0x5a; RECORD - TOPIC.len()]
}

fn nz(v: usize) -> NonZeroUsize {
    NonZeroUsize::new(v).unwrap_or(NonZeroUsize::MIN)
}

fn config(durability: Durability) -> OutboxConfig {
    let mut c = OutboxConfig::default();
    c.set_durability(durability)
        .set_engine(*ENGINE.get().unwrap_or(&Engine::Log))
        .set_max_bytes(nz(8 << 30))
        .set_when_full(WhenFull::Block)
        .set_max_age(None);
    c
}

async fn open(dir: &Path, durability: Durability) -> Outbox {
    Outbox::open(
        dir.join("ob"),
        DeviceId::new("bench").unwrap(),
        config(durability),
    )
    .await
    .unwrap()
}

fn report(name: &str, records: u64, elapsed: Duration) -> f64 {
    let rate = records as f64 / elapsed.as_secs_f64();
    println!("{name:<10} {records:>10} records in {elapsed:>8.2?}  {rate:>12.0} records/s");
    rate
}

async fn every_write(dir: &Path, appenders: usize, secs: u64) -> f64 {
    let ob = open(dir, Durability::EveryWrite).await;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..appenders {
        let ob = ob.clone();
        tasks.push(tokio::spawn(async move {
            let p = payload();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let _ = ob
                    .append(OutboundMessage::new(TOPIC, p.clone()))
                    .await
                    .unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let el = start.elapsed();
    ob.close().await;
    report(&format!("ew{appenders}"), total, el)
}

async fn group_commit(dir: &Path, secs: u64) -> f64 {
    let ob = open(
        dir,
        Durability::GroupCommit {
            window: Duration::from_millis(10),
        },
    )
    .await;
    let p = payload();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut n = 0u64;
    let mut last = None;
    while Instant::now() < deadline {
        last = Some(
            ob.append(OutboundMessage::new(TOPIC, p.clone()))
                .await
                .unwrap(),
        );
        n += 1;
    }
    // Count only what is on disk: wait for the last record's flush.
    if let Some(a) = last {
        a.durable().await.unwrap();
    }
    let el = start.elapsed();
    ob.close().await;
    report("gc10", n, el)
}

fn raw_file(dir: &Path, window: Option<Duration>, secs: u64) -> f64 {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("raw.log"))
        .unwrap();
    let mut rec = Vec::with_capacity(RECORD + 4);
    rec.extend_from_slice(&(RECORD as u32).to_be_bytes());
    rec.extend_from_slice(TOPIC.as_bytes());
    rec.extend_from_slice(&payload());
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut last_sync = start;
    let mut n = 0u64;
    while Instant::now() < deadline {
        f.write_all(&rec).unwrap();
        n += 1;
        match window {
            None => f.sync_data().unwrap(),
            Some(w) if last_sync.elapsed() >= w => {
                f.sync_data().unwrap();
                last_sync = Instant::now();
            }
            Some(_) => {}
        }
    }
    f.sync_data().unwrap();
    report(
        if window.is_some() { "raw10" } else { "raw1" },
        n,
        start.elapsed(),
    )
}

fn sqlite(dir: &Path, window: Option<Duration>, secs: u64) -> f64 {
    let db = rusqlite::Connection::open(dir.join("outbox.sqlite")).unwrap();
    db.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,
           payload BLOB NOT NULL, created_at INTEGER NOT NULL, sent INTEGER NOT NULL DEFAULT 0);",
    )
    .unwrap();
    let p = payload();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut n = 0u64;
    let mut tx_open = false;
    let mut tx_start = start;
    while Instant::now() < deadline {
        if !tx_open {
            db.execute_batch("BEGIN").unwrap();
            tx_open = true;
            tx_start = Instant::now();
        }
        db.prepare_cached("INSERT INTO outbox (topic, payload, created_at) VALUES (?1, ?2, ?3)")
            .unwrap()
            .execute(rusqlite::params![TOPIC, p, n as i64])
            .unwrap();
        n += 1;
        if window.is_none_or(|w| tx_start.elapsed() >= w) {
            db.execute_batch("COMMIT").unwrap();
            tx_open = false;
        }
    }
    if tx_open {
        db.execute_batch("COMMIT").unwrap();
    }
    report(
        if window.is_some() {
            "sqlite10"
        } else {
            "sqlite1"
        },
        n,
        start.elapsed(),
    )
}

async fn fill(ob: &Outbox, records: u64) {
    let p = payload();
    let mut last = None;
    for _ in 0..records {
        last = Some(
            ob.append(OutboundMessage::new(TOPIC, p.clone()))
                .await
                .unwrap(),
        );
    }
    if let Some(a) = last {
        a.durable().await.unwrap();
    }
}

async fn drain(dir: &Path, records: u64) -> f64 {
    let gc = Durability::GroupCommit {
        window: Duration::from_millis(10),
    };
    let ob = open(dir, gc).await;
    fill(&ob, records).await;
    let start = Instant::now();
    let mut from = Sequence(0);
    let mut n = 0u64;
    loop {
        let batch = ob.read(from, nz(1000), nz(1 << 20)).await.unwrap();
        let Some(last) = batch.last() else { break };
        from = Sequence(last.seq.0 + 1);
        n += batch.len() as u64;
        ob.ack(last.seq);
    }
    ob.sync().await;
    let el = start.elapsed();
    ob.close().await;
    report("drain", n, el)
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

async fn rss(dir: &Path, gib: f64, cache_mib: usize) {
    let gc = Durability::GroupCommit {
        window: Duration::from_millis(10),
    };
    let mut cfg = config(gc);
    cfg.set_cache_bytes(nz(cache_mib << 20));
    let path = dir.join("ob");
    let device = DeviceId::new("bench").unwrap();
    let ob = Outbox::open(&path, device.clone(), cfg.clone())
        .await
        .unwrap();
    let records = (gib * f64::from(1u32 << 30) / RECORD as f64) as u64;
    let start = Instant::now();
    fill(&ob, records).await;
    let s = ob.stats();
    let mib = |f: &str| rss_kib(f) / 1024;
    println!(
        "rss        engine {:?} (sled cache {cache_mib} MiB); backlog {} records, {:.2} GiB, filled in {:.1?}",
        ENGINE.get().unwrap_or(&Engine::Log),
        s.backlog_records,
        s.backlog_bytes as f64 / f64::from(1u32 << 30),
        start.elapsed(),
    );
    println!(
        "rss        after filling (same process):  VmRSS {} MiB, peak VmHWM {} MiB",
        mib("VmRSS:"),
        mib("VmHWM:")
    );
    ob.close().await;
    // Holding the backlog is measured in a fresh process, as a gateway restarting behind
    // it would: this process's allocator keeps what filling used.
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("rss-reopen")
        .arg(&path)
        .arg(records.to_string())
        .arg("--engine")
        .arg(if *ENGINE.get().unwrap_or(&Engine::Log) == Engine::Sled {
            "sled"
        } else {
            "log"
        })
        .arg("--cache-mib")
        .arg(cache_mib.to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let _ = device;
}

/// The second half of `rss`, in its own process: reopen the backlog, drain half.
async fn rss_reopen(path: &Path, records: u64, cache_mib: usize) {
    let mib = |f: &str| rss_kib(f) / 1024;
    let before = mib("VmRSS:");
    let gc = Durability::GroupCommit {
        window: Duration::from_millis(10),
    };
    let mut cfg = config(gc);
    cfg.set_cache_bytes(nz(cache_mib << 20));
    let start = Instant::now();
    let ob = Outbox::open(path, DeviceId::new("bench").unwrap(), cfg)
        .await
        .unwrap();
    let s = ob.stats();
    println!(
        "rss        fresh process (VmRSS {before} MiB before opening): reopened {} records \
         in {:.1?}: VmRSS {} MiB",
        s.backlog_records,
        start.elapsed(),
        mib("VmRSS:")
    );
    let mut from = Sequence(0);
    let mut n = 0u64;
    let drain_start = Instant::now();
    while n < records / 2 {
        let batch = ob.read(from, nz(1000), nz(1 << 20)).await.unwrap();
        let Some(last) = batch.last() else { break };
        from = Sequence(last.seq.0 + 1);
        n += batch.len() as u64;
        ob.ack(last.seq);
    }
    ob.sync().await;
    println!(
        "rss        after draining half ({n} records in {:.1?}): VmRSS {} MiB, peak VmHWM {} MiB",
        drain_start.elapsed(),
        mib("VmRSS:"),
        mib("VmHWM:")
    );
    ob.close().await;
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let arg = |name: &str, default: f64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let secs = arg("--secs", 5.0) as u64;
    let gib = arg("--gib", 1.0);
    let cache_mib = arg("--cache-mib", 64.0) as usize;
    let engine = match args
        .iter()
        .position(|a| a == "--engine")
        .and_then(|i| args.get(i + 1))
    {
        Some(e) if e == "sled" => {
            if !cfg!(feature = "sled") {
                eprintln!(
                    "--engine sled needs the sled engine built in: \
                     cargo bench -p iiot-edge --features sled --bench outbox -- ..."
                );
                std::process::exit(2);
            }
            Engine::Sled
        }
        _ => Engine::Log,
    };
    let _ = ENGINE.set(engine);
    println!("engine {engine:?}");
    let which: Vec<&str> = args
        .iter()
        .filter(|a| {
            !a.starts_with("--") && a.parse::<f64>().is_err() && *a != "sled" && *a != "log"
        })
        .map(String::as_str)
        .collect();
    if which.is_empty() {
        println!(
            "usage: cargo bench -p iiot-edge --bench outbox -- <all|ew1|raw1|sqlite1|ew8|gc10|raw10|sqlite10|drain|rss> [--secs N] [--gib G] [--rounds R] [--engine log|sled]"
        );
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let base = std::env::var("IIOT_BENCH_DIR")
        .unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    let run = |name: &str| which.contains(&name) || which.contains(&"all");
    let tmp = || tempfile::tempdir_in(&base).unwrap();
    let rounds = (arg("--rounds", 1.0) as usize).max(1);
    if let Some(i) = args.iter().position(|a| a == "rss-reopen") {
        let path = std::path::PathBuf::from(&args[i + 1]);
        let records = args[i + 2].parse().unwrap_or(0);
        rt.block_on(rss_reopen(&path, records, cache_mib));
        return;
    }
    rt.block_on(async {
        // Scenarios interleave round by round so that a burst of disk contention from other
        // processes hits all of them alike; the medians are compared.
        let mut results: Vec<(&str, Vec<f64>)> = Vec::new();
        let mut push = |name: &'static str, v: f64| match results.iter_mut().find(|r| r.0 == name) {
            Some(r) => r.1.push(v),
            None => results.push((name, vec![v])),
        };
        let w = Some(Duration::from_millis(10));
        for _ in 0..rounds {
            if run("ew1") {
                push("ew1", every_write(tmp().path(), 1, secs).await);
            }
            if run("raw1") {
                push("raw1", raw_file(tmp().path(), None, secs));
            }
            if run("sqlite1") {
                push("sqlite1", sqlite(tmp().path(), None, secs));
            }
            if run("ew8") {
                push("ew8", every_write(tmp().path(), 8, secs).await);
            }
            if run("gc10") {
                push("gc10", group_commit(tmp().path(), secs).await);
            }
            if run("raw10") {
                push("raw10", raw_file(tmp().path(), w, secs));
            }
            if run("sqlite10") {
                push("sqlite10", sqlite(tmp().path(), w, secs));
            }
            if run("drain") {
                push("drain", drain(tmp().path(), 200_000).await);
            }
        }
        if which.contains(&"rss") {
            rss(tmp().path(), gib, cache_mib).await;
        }
        let median = |name: &str| {
            results.iter().find(|r| r.0 == name).map(|r| {
                let mut v = r.1.clone();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            })
        };
        for (name, _) in &results {
            if let Some(m) = median(name) {
                println!("median {name:<10} {m:>12.0} records/s");
            }
        }
        let ratio = |name: &str, a: Option<f64>, b: Option<f64>| {
            if let (Some(a), Some(b)) = (a, b) {
                println!("ratio {name:<22} {:.2}x", a / b);
            }
        };
        ratio("ew1 / raw1", median("ew1"), median("raw1"));
        ratio("ew1 / sqlite1", median("ew1"), median("sqlite1"));
        ratio("ew8 / ew1", median("ew8"), median("ew1"));
        ratio("gc10 / raw10", median("gc10"), median("raw10"));
        ratio("gc10 / sqlite10", median("gc10"), median("sqlite10"));
    });
}
