//! A Kafka-compatible broker for tests, and reading topics back.
//!
//! [`broker`] uses `IIOT_KAFKA_URL` (`host:port`) when set; otherwise it starts a
//! tansu process (from `PATH` or `~/.cargo/bin/tansu`) with memory storage on a
//! free 127.0.0.1 port, killed by pid when the guard drops (also when the test
//! fails). When neither works it reports the service [`missing`].
//!
//! Reading back goes up to the high watermark that fetch returns: tansu's answer
//! to a Latest-offset query is wrong.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rskafka::client::ClientBuilder;
use rskafka::client::partition::UnknownTopicHandling;
use rskafka::record::Record;

use super::services::missing;

/// The tansu binary: on `PATH`, else `~/.cargo/bin/tansu`.
pub fn tansu_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("tansu"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let p = PathBuf::from(std::env::var_os("HOME")?).join(".cargo/bin/tansu");
        p.is_file().then_some(p)
    })
}

/// A free 127.0.0.1 port (bound to port 0, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tansu broker process this test started; killed (by pid) on drop.
#[derive(Debug)]
pub struct Tansu {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Tansu {
    /// Starts tansu with memory storage on `port` and waits (up to 30 s) until it
    /// accepts connections.
    pub async fn start_on(port: u16) -> Result<Self, String> {
        let bin = tansu_binary().ok_or("no tansu binary on PATH or in ~/.cargo/bin")?;
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .arg("broker")
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            // No `.env` pickup from the test's working directory.
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let mut me = Self {
            child: Some(child),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = me.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(format!("tansu exited at start: {status}"));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(me);
            }
            if Instant::now() > deadline {
                return Err(format!("tansu did not listen on {port} within 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts tansu on a free port.
    pub async fn start() -> Result<Self, String> {
        Self::start_on(free_port()).await
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the process (by its pid) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where the tests' broker is; holds the process when the test started one.
#[derive(Debug)]
pub struct KafkaEnv {
    /// `host:port`.
    pub addr: String,
    /// The broker process, when this test started it.
    pub own: Option<Tansu>,
}

/// `IIOT_KAFKA_URL`, else a tansu this test starts; `None` after [`missing`].
pub async fn broker() -> Option<KafkaEnv> {
    if let Ok(url) = std::env::var("IIOT_KAFKA_URL") {
        let addr = url
            .trim_start_matches("tcp://")
            .trim_end_matches('/')
            .to_owned();
        return Some(KafkaEnv { addr, own: None });
    }
    match Tansu::start().await {
        Ok(t) => Some(KafkaEnv {
            addr: t.addr(),
            own: Some(t),
        }),
        Err(why) => {
            missing("Kafka", &format!("IIOT_KAFKA_URL unset and {why}"));
            None
        }
    }
}

/// A broker this test owns (for killing and restarting), even when
/// `IIOT_KAFKA_URL` names a shared one; `None` after [`missing`].
pub async fn own_broker() -> Option<Tansu> {
    match Tansu::start().await {
        Ok(t) => Some(t),
        Err(why) => {
            missing("tansu", &why);
            None
        }
    }
}

/// Topic names unique to one test run.
pub fn topics(test: &str) -> (String, String, String) {
    let run = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    (
        format!("it.{test}.{run}.telemetry"),
        format!("it.{test}.{run}.dead_letter"),
        format!("it.{test}.{run}.events"),
    )
}

/// One record read back, with where it was.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub partition: i32,
    pub offset: i64,
    pub record: Record,
}

impl Fetched {
    /// A header as text.
    pub fn header(&self, name: &str) -> String {
        String::from_utf8(self.record.headers.get(name).cloned().unwrap_or_default()).unwrap()
    }

    /// The key as text.
    pub fn key(&self) -> String {
        String::from_utf8(self.record.key.clone().unwrap_or_default()).unwrap()
    }
}

/// Every record of `topic` on the broker at `addr`, partition by partition, in
/// offset order, read up to each partition's high watermark.
pub async fn fetch_all(addr: &str, topic: &str) -> Vec<Fetched> {
    let client = ClientBuilder::new(vec![addr.to_owned()])
        .build()
        .await
        .unwrap();
    let partitions = client
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.name == topic)
        .map_or_else(|| panic!("topic {topic} not found"), |t| t.partitions);
    let mut out = Vec::new();
    let mut ids: Vec<i32> = partitions.into_iter().collect();
    ids.sort_unstable();
    for p in ids {
        let pc = client
            .partition_client(topic, p, UnknownTopicHandling::Retry)
            .await
            .unwrap();
        let mut offset = 0;
        for _ in 0..1_000 {
            let (records, high_watermark) =
                pc.fetch_records(offset, 1..50_000_000, 100).await.unwrap();
            for r in records {
                offset = offset.max(r.offset + 1);
                out.push(Fetched {
                    partition: p,
                    offset: r.offset,
                    record: r.record,
                });
            }
            if offset >= high_watermark {
                break;
            }
        }
    }
    out
}
