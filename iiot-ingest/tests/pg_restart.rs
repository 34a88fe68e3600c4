//! PostgreSQL crashes under load (immediate shutdown: no checkpoint, crash
//! recovery from the WAL at the next start, as after a power cut) and comes back: the pipeline retries the same batch, reconnects, and every
//! row arrives exactly once. Runs against a private PostgreSQL server the test
//! starts on a free port (so restarting it disturbs nobody), killed by pid at the
//! end even when the test fails.
#![cfg(feature = "postgres")]

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::services::missing;
use iiot_core::codec::protobuf;
use iiot_core::topic::UnsPath;
use iiot_core::types::{DeviceId, MessageId, Sample, Sequence, TagPath, TelemetryBatch, Timestamp};
use iiot_ingest::sink::postgres::{PostgresConfig, PostgresSink};
use iiot_ingest::source::memory::MemorySource;
use iiot_ingest::{Pipeline, PipelineConfig};
use tokio_util::sync::CancellationToken;

/// A throw-away PostgreSQL cluster in a temp dir, run as the `postgres` user.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
    launches: u32,
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.kill();
    }
}

fn as_postgres(bin: &Path, program: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).arg(bin.join(program));
    c
}

impl PrivatePostgres {
    /// `None` (after reporting) when initdb/postgres/runuser are not usable here.
    fn start() -> Option<Self> {
        let bin = match Command::new("pg_config").arg("--bindir").output() {
            Ok(o) if o.status.success() => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
            other => {
                missing(
                    "PostgreSQL server binaries",
                    &format!("pg_config --bindir: {other:?}"),
                );
                return None;
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let chown = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(dir.path())
            .status();
        let init = as_postgres(&bin, "initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        match (chown, init) {
            (Ok(c), Ok(i)) if c.success() && i.status.success() => {}
            (c, i) => {
                missing(
                    "a private PostgreSQL (runuser + initdb as root)",
                    &format!("{c:?} {i:?}"),
                );
                return None;
            }
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut pg = Self {
            dir,
            bin,
            port,
            child: None,
            launches: 0,
        };
        pg.launch();
        Some(pg)
    }

    fn launch(&mut self) {
        let child = as_postgres(&self.bin, "postgres")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-k",
            ])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(
                    self.dir
                        .path()
                        .join(format!("server-{}.log", self.launches)),
                )
                .map_or_else(|_| Stdio::null(), Stdio::from),
            )
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.launches += 1;
        let url = self.url();
        let ready = (0..200).any(|_| {
            let ok = std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && Command::new(self.bin.join("pg_isready"))
                    .args(["-d", &url, "-q"])
                    .status()
                    .is_ok_and(|s| s.success());
            if !ok {
                std::thread::sleep(Duration::from_millis(50));
            }
            ok
        });
        if !ready {
            let log = std::fs::read_to_string(
                self.dir
                    .path()
                    .join(format!("server-{}.log", self.launches - 1)),
            )
            .unwrap_or_default();
            panic!(
                "private PostgreSQL did not start on port {}: {log}",
                self.port
            );
        }
    }

    /// Crashes the server (immediate shutdown) and waits until its port is closed.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Kill the whole server: the postmaster is runuser's child.
            let pattern = format!("postgres -D {}", self.dir.path().join("data").display());
            // SIGQUIT is PostgreSQL's immediate shutdown: every process exits at
            // once without a checkpoint, and the next start runs crash recovery
            // from the WAL, as after a power cut. (SIGKILL of the postmaster alone
            // would leave its backends holding the shared memory.)
            let _ = Command::new("pkill")
                .args(["-QUIT", "-f", "--", &pattern])
                .status();
            let _ = child.kill();
            let _ = child.wait();
            for _ in 0..100 {
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

fn batch(seq: u64) -> TelemetryBatch {
    let t = Timestamp::from_unix_nanos(1_764_120_152_000_000_000 + seq as i64 * 1_000_000).unwrap();
    let samples = (0..10)
        .map(|i| Sample::good(TagPath::new(format!("t{i}")).unwrap(), seq as f64, t))
        .collect();
    let mut b = TelemetryBatch::new(DeviceId::new("plc-01").unwrap(), Sequence(seq), samples);
    b.message_id = MessageId::from_parts(1_764_120_152_000, u128::from(seq));
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_killed_and_restarted_mid_stream_loses_and_duplicates_nothing() {
    let Some(mut pg) = PrivatePostgres::start() else {
        return;
    };
    let mut cfg = PostgresConfig::new(pg.url());
    cfg.set_connect_timeout(Duration::from_secs(2));
    let sink = PostgresSink::connect(cfg).await.unwrap();
    let (source, feed) = MemorySource::new(64);
    let pcfg = PipelineConfig {
        batch_max_rows: std::num::NonZeroUsize::new(100).unwrap(),
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        ..PipelineConfig::default()
    };
    let (handle, pipeline) = Pipeline::new(source, sink, pcfg);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(pipeline.run(cancel.clone()));
    let topic = UnsPath::new(
        "acme",
        "p",
        "a",
        "l",
        "plc",
        DeviceId::new("plc-01").unwrap(),
    )
    .unwrap()
    .telemetry()
    .to_string();
    let send = |range: std::ops::RangeInclusive<u64>| {
        let feed = feed.clone();
        let topic = topic.clone();
        async move {
            for seq in range {
                feed.send(topic.clone(), protobuf::encode_telemetry(&batch(seq)))
                    .await
                    .unwrap();
            }
        }
    };
    let wait = |handle: &iiot_ingest::PipelineHandle, n: u64| {
        let mut h = handle.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(60), h.wait_for(|s| s.acked >= n))
                .await
                .unwrap_or_else(|e| panic!("{e}: {:?}", h.stats()))
        }
    };
    send(1..=200).await;
    wait(&handle, 200).await;
    pg.kill();
    // The outage: the pipeline keeps receiving, its commits fail and are retried.
    let feeder = tokio::spawn(send(201..=400));
    tokio::time::sleep(Duration::from_secs(1)).await;
    pg.launch();
    let stats = wait(&handle, 400).await;
    feeder.await.unwrap();

    let (client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let count = |t: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(&format!("SELECT count(*) FROM public.iiot_{t}"), &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    assert_eq!(count("samples").await, 4000, "{stats:?}");
    assert_eq!(count("messages").await, 400);
    assert!(stats.commit_retries >= 2, "{stats:?}");
    cancel.cancel();
    task.await.unwrap().unwrap();
}
