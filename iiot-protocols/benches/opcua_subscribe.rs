//! OPC-UA subscription throughput and client CPU (issue 18): a server publishing
//! 1 000 Double items that all change every 100 ms, in a separate process (this bench
//! binary started again as async-opcua's server, so the publisher is not what is
//! measured), and two clients subscribing to the same items one after the other:
//!
//! 1. ours: an [`OpcUaSource`] handing each notification to a counting reading sink
//!    (conversion to a core sample included);
//! 2. the baseline: Python asyncua (`benches/peers/opcua_client.py`, with `IIOT_PYTHON`
//!    as for the interop tests), counting in its data change handler.
//!
//! Both subscribe with a 100 ms publishing interval, sampling interval 0 (every change)
//! and queue size 10.
//!
//! Each runs `IIOT_BENCH_SECONDS` (default 10) after its first notification. Reported:
//! notifications, notifications per second, the client process's CPU seconds (user +
//! system from /proc), notifications per CPU second, and the ratio of ours to asyncua's
//! (goal: at least 5). Knobs: `IIOT_BENCH_ITEMS` (1000), `IIOT_BENCH_SAMPLING_MS` (0),
//! `IIOT_BENCH_QUEUE` (10), `IIOT_BENCH_MAX_PER_PUBLISH` (the config's default, 500),
//! and `IIOT_BENCH_ENDPOINT` to measure both clients against another server serving
//! `ns=2;s=Bench.{i}` (`tests/peers/opcua_server.py PORT --items N`).
//!
//! `cargo bench -p iiot-protocols --bench opcua_subscribe`

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use iiot_core::source::{ReadingSink, SinkClosed, Source};
use iiot_core::types::{Sample, Value};
use iiot_protocols::opcua::sim::{SimConfig, SimServer};
use iiot_protocols::opcua::{OpcUaConfig, OpcUaSource};

const SERVER_ENV: &str = "IIOT_OPCUA_BENCH_SERVER";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// This process's CPU time (user + system) from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// The server mode: `Bench.{i}` for every item, all changed every 100 ms.
async fn serve(port: u16, items: usize) {
    let server = SimServer::start(SimConfig {
        port,
        ..SimConfig::default()
    })
    .await
    .expect("start the OPC-UA server");
    let names: Vec<String> = (0..items).map(|i| format!("Bench.{i}")).collect();
    for n in &names {
        server.add(n, &Value::Double(0.0), false).expect("add");
    }
    println!("READY");
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut k = 0u32;
    loop {
        tick.tick().await;
        k = k.wrapping_add(1);
        let base = f64::from(k);
        server
            .set_many(
                names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (n.as_str(), Value::Double(base + i as f64 * 0.001))),
            )
            .expect("set");
    }
}

/// Counts readings; remembers when the first came.
struct Counting {
    n: Arc<AtomicU64>,
    first: Arc<std::sync::OnceLock<Instant>>,
}

impl ReadingSink for Counting {
    async fn send(&mut self, reading: Sample) -> Result<(), SinkClosed> {
        std::hint::black_box(&reading);
        self.first.get_or_init(Instant::now);
        self.n.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

struct Outcome {
    notifications: u64,
    seconds: f64,
    cpu: f64,
}

impl Outcome {
    fn per_cpu_second(&self) -> f64 {
        self.notifications as f64 / self.cpu.max(1e-9)
    }
    fn row(&self, who: &str) -> String {
        format!(
            "| {who} | {} | {:.0} | {:.2} | {:.0} |",
            self.notifications,
            self.notifications as f64 / self.seconds,
            self.cpu,
            self.per_cpu_second()
        )
    }
}

async fn ours(endpoint: &str, items: usize, seconds: u64) -> Outcome {
    let mut cfg = OpcUaConfig::new(endpoint);
    cfg.publishing_interval = Duration::from_millis(100);
    for i in 0..items {
        cfg = cfg
            .with_tag(&format!("bench/{i}"), format!("ns=2;s=Bench.{i}"))
            .unwrap();
    }
    // Sampling interval 0: the server reports every change (no aliasing between its
    // 100 ms updates and a 100 ms sampling clock); the same settings as the baseline.
    let sampling = env_num("IIOT_BENCH_SAMPLING_MS", 0);
    let queue = u32::try_from(env_num("IIOT_BENCH_QUEUE", 10)).unwrap_or(10);
    if let Ok(m) = std::env::var("IIOT_BENCH_MAX_PER_PUBLISH") {
        cfg.max_notifications_per_publish = m.parse().expect("a number");
    }
    for t in &mut cfg.tags {
        t.sampling_interval = Some(Duration::from_millis(sampling));
        t.queue_size = queue;
    }
    let (source, _) = OpcUaSource::new("bench", cfg).unwrap();
    let n = Arc::new(AtomicU64::new(0));
    let first = Arc::new(std::sync::OnceLock::new());
    let sink = Counting {
        n: n.clone(),
        first: first.clone(),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(source.run(sink, async move {
        let _ = stop_rx.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(60);
    while first.get().is_none() {
        assert!(Instant::now() < deadline, "no notification within 60 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let the initial values pass, then measure a steady window.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (n0, cpu0, t0) = (n.load(Ordering::Relaxed), cpu_seconds(), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (n1, cpu1, t1) = (n.load(Ordering::Relaxed), cpu_seconds(), Instant::now());
    let _ = stop_tx.send(());
    let _ = task.await;
    Outcome {
        notifications: n1 - n0,
        seconds: (t1 - t0).as_secs_f64(),
        cpu: cpu1 - cpu0,
    }
}

fn asyncua(endpoint: &str, items: usize, seconds: u64) -> Option<Outcome> {
    let Ok(py) = std::env::var("IIOT_PYTHON") else {
        eprintln!("IIOT_PYTHON is not set: no asyncua baseline (see .ci/run)");
        return None;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peers/opcua_client.py");
    let out = Command::new(py)
        .args([script, endpoint, &items.to_string(), &seconds.to_string()])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "asyncua client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(Outcome {
        notifications: v["notifications"].as_u64()?,
        seconds: v["seconds"].as_f64()?,
        cpu: v["cpu_seconds"].as_f64()?,
    })
}

/// Kills the server process when dropped.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let items = usize::try_from(env_num("IIOT_BENCH_ITEMS", 1000)).unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    if let Ok(port) = std::env::var(SERVER_ENV) {
        rt.block_on(serve(port.parse().expect("port"), items));
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let seconds = env_num("IIOT_BENCH_SECONDS", 10);
    if let Ok(endpoint) = std::env::var("IIOT_BENCH_ENDPOINT") {
        // Another server (tests/peers/opcua_server.py --items N, say) serving Bench.{i}.
        let ours = rt.block_on(ours(&endpoint, items, seconds));
        println!("{}", ours.row("iiot-rs OpcUaSource"));
        if let Some(t) = asyncua(&endpoint, items, seconds) {
            println!("{}", t.row("Python asyncua"));
        }
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(SERVER_ENV, port.to_string())
        .env("IIOT_BENCH_ITEMS", items.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server process");
    let stdout = child.stdout.take().unwrap();
    let _server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "READY", "the server process started");
    let endpoint = format!("opc.tcp://127.0.0.1:{port}/");
    eprintln!("{items} items changing every 100 ms at {endpoint}; {seconds} s per client");

    let ours = rt.block_on(ours(&endpoint, items, seconds));
    let theirs = asyncua(&endpoint, items, seconds);
    println!("| client | notifications | per second | CPU seconds | per CPU second |");
    println!("|---|---|---|---|---|");
    println!("{}", ours.row("iiot-rs OpcUaSource"));
    if let Some(t) = &theirs {
        println!("{}", t.row("Python asyncua"));
        println!(
            "ratio (ours / asyncua, notifications per CPU second): {:.1}x",
            ours.per_cpu_second() / t.per_cpu_second()
        );
    }
}
