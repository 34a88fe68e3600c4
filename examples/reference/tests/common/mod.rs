//! Helpers for the `iiot` binary tests: run it, and kill what a test started even
//! when the test fails.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};

/// The binary under test.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_iiot"));
    c.env("RUST_LOG", "warn");
    c
}

/// The crate's directory.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A sample config shipped in `config/`.
pub fn sample_config(name: &str) -> PathBuf {
    crate_dir().join("config").join(name)
}

/// The golden vectors of iiot-core.
pub fn vectors_dir() -> PathBuf {
    crate_dir().join("../../iiot-core/tests/vectors")
}

/// Runs the binary to completion with `args`.
pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run iiot")
}

/// Runs the binary with `stdin` as its standard input.
pub fn run_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write as _;
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn iiot");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("wait iiot")
}

/// A child process killed (by its pid, through the handle) and reaped on drop,
/// so a failing test leaves nothing listening.
pub struct ChildGuard {
    child: Child,
    stdout: Option<BufReader<ChildStdout>>,
}

impl ChildGuard {
    /// Spawns the binary with `args`, stdout piped, stderr inherited.
    pub fn spawn(args: &[&str]) -> Self {
        let mut child = bin()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn iiot");
        let stdout = child.stdout.take().map(BufReader::new);
        Self { child, stdout }
    }

    /// Spawns the binary with `args`, stdout and stderr piped; read stderr with
    /// [`ChildGuard::kill_and_stderr`].
    pub fn spawn_with_stderr(args: &[&str]) -> Self {
        Self::spawn_logging(args, "warn")
    }

    /// As [`ChildGuard::spawn_with_stderr`], logging at `filter` (`RUST_LOG`).
    pub fn spawn_logging(args: &[&str], filter: &str) -> Self {
        let mut child = bin()
            .env("RUST_LOG", filter)
            .args(args)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn iiot");
        let stdout = child.stdout.take().map(BufReader::new);
        Self { child, stdout }
    }

    /// Kills the process and returns everything it wrote to stderr (when spawned
    /// with [`ChildGuard::spawn_with_stderr`]).
    pub fn kill_and_stderr(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut text = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut text);
        }
        text
    }

    /// The next line of its stdout (panics when it ended first).
    pub fn read_line(&mut self) -> String {
        let mut line = String::new();
        let n = self
            .stdout
            .as_mut()
            .expect("stdout")
            .read_line(&mut line)
            .expect("read stdout");
        assert!(
            n > 0,
            "iiot ended before printing: {:?}",
            self.child.try_wait()
        );
        line.trim_end().to_owned()
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Any child process, killed by its pid and reaped on drop (also when the test fails).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write file");
    p
}

/// `IIOT_MQTT_URL`, default `mqtt://127.0.0.1:1883`.
pub fn mqtt_url() -> String {
    std::env::var("IIOT_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".to_owned())
}

/// Whether a missing service fails the test (`IIOT_REQUIRE_SERVICES=1`).
pub fn services_required() -> bool {
    std::env::var("IIOT_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Whether the broker of [`mqtt_url`] accepts TCP connections; prints why not
/// (or panics under `IIOT_REQUIRE_SERVICES=1`).
pub fn mqtt_available() -> bool {
    let url = mqtt_url();
    let hostport = url
        .trim_start_matches("mqtt://")
        .trim_start_matches("mqtts://")
        .to_owned();
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(&hostport)
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| {
            std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(2)).is_ok()
        });
    if !reachable {
        assert!(
            !services_required(),
            "MQTT broker required (IIOT_REQUIRE_SERVICES=1) but {url} is unreachable"
        );
        eprintln!("skipping: MQTT broker {url} unreachable");
    }
    reachable
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `GET /metrics` of a Prometheus endpoint, as text.
pub fn scrape(port: u16) -> String {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

impl ChildGuard {
    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Its exit code once it exits on its own, looking every 20 ms for at most
    /// `timeout`; `None` when it still runs (or died by a signal).
    pub fn exit_code(&mut self, timeout: std::time::Duration) -> Option<i32> {
        let end = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }
}

/// `IIOT_PG_URL` when PostgreSQL answers there; otherwise prints why and returns
/// `None`, or fails when `IIOT_REQUIRE_SERVICES=1`.
pub async fn postgres_url() -> Option<String> {
    let url = std::env::var("IIOT_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    if let Err(e) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        assert!(
            !services_required(),
            "PostgreSQL required (IIOT_REQUIRE_SERVICES=1) but {url}: {e}"
        );
        eprintln!("skipping: PostgreSQL {url} unreachable: {e}");
        return None;
    }
    Some(url)
}

/// Drops the ingest tables created with table prefix `prefix`.
pub async fn drop_ingest_tables(url: &str, prefix: &str) {
    if let Ok((client, conn)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await {
        tokio::spawn(conn);
        let tables = [
            "samples",
            "messages",
            "data_loss",
            "gaps",
            "dead_letter",
            "schema_version",
        ]
        .map(|t| format!("{prefix}{t}"))
        .join(", ");
        let _ = client
            .batch_execute(&format!("DROP TABLE IF EXISTS {tables} CASCADE"))
            .await;
    }
}

/// A name unique to this test process and moment, for client ids, devices and UNS
/// levels on the shared broker.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// The sample `gateway.toml` rewritten for a test: its device id, enterprise,
/// register map, data directory, PLC port and the test broker.
pub fn gateway_toml(
    device: &str,
    enterprise: &str,
    map: &Path,
    data_dir: &Path,
    plc_port: u16,
) -> String {
    std::fs::read_to_string(sample_config("gateway.toml"))
        .unwrap()
        .replace("device_id = \"plc-01\"", &format!("device_id = {device:?}"))
        .replace(
            "enterprise = \"acme\"",
            &format!("enterprise = {enterprise:?}"),
        )
        .replace(
            "register_map = \"plant-map.toml\"",
            &format!("register_map = {:?}", map.display().to_string()),
        )
        .replace(
            "data_dir = \"iiot-gateway-data\"",
            &format!("data_dir = {:?}", data_dir.display().to_string()),
        )
        .replace("port = 5020", &format!("port = {plc_port}"))
        .replace(
            "url = \"mqtt://127.0.0.1:1883\"",
            &format!("url = {:?}", mqtt_url()),
        )
}

/// `iiot sim` on the sample plant map and a free port (its config written to
/// `dir/plc.toml`): the process and the address it listens on.
pub fn start_plc(dir: &Path) -> (ChildGuard, std::net::SocketAddr) {
    let map = sample_config("plant-map.toml").display().to_string();
    let plc = write(
        dir,
        "plc.toml",
        &format!("listen = \"127.0.0.1:0\"\nregister_map = {map:?}\n"),
    );
    let mut sim = ChildGuard::spawn(&["sim", "--config", plc.to_str().unwrap()]);
    let addr = sim
        .read_line()
        .strip_prefix("listening on ")
        .unwrap()
        .parse()
        .unwrap();
    (sim, addr)
}
