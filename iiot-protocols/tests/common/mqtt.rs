//! Helpers for the MQTT tests: brokers (in-process rumqttd, the shared Mosquitto,
//! a Mosquitto process owned by the test), certificates, a raw subscriber.
#![allow(dead_code, unreachable_pub, clippy::missing_panics_doc)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

/// A name unique in this machine and run, usable as a topic segment and client id.
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{tag}-{}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A UNS prefix ending in `device`.
pub fn prefix(device: &str) -> String {
    format!("iiot-test/site/area/line/gw/{device}")
}

/// A free TCP port on 127.0.0.1 (bound to port 0, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls until something accepts TCP connections on `port`, at most `timeout`.
pub fn wait_listening(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Host and port of the shared Mosquitto from `IIOT_MQTT_URL`
/// (default `mqtt://127.0.0.1:1883`), or `None` (after printing why) when it is
/// unreachable. With `IIOT_REQUIRE_SERVICES=1` an unreachable broker fails the test.
pub fn shared_mosquitto() -> Option<(String, u16)> {
    let url = std::env::var("IIOT_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into());
    let rest = url
        .strip_prefix("mqtt://")
        .expect("IIOT_MQTT_URL must be mqtt://host:port");
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':').unwrap_or((rest, "1883"));
    let port: u16 = port.parse().expect("port");
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    if reachable {
        return Some((host.to_owned(), port));
    }
    require_or_skip(&format!("Mosquitto at {url} is unreachable"))
}

fn require_or_skip<T>(why: &str) -> Option<T> {
    assert!(
        std::env::var("IIOT_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "{why} and IIOT_REQUIRE_SERVICES=1"
    );
    eprintln!("skipping: {why}");
    None
}

/// The `mosquitto` binary, or `None` (after printing why).
pub fn mosquitto_binary() -> Option<PathBuf> {
    for p in ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"] {
        if Path::new(p).exists() {
            return Some(PathBuf::from(p));
        }
    }
    if Command::new("mosquitto")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
    {
        return Some(PathBuf::from("mosquitto"));
    }
    require_or_skip("the mosquitto binary is not installed")
}

/// A Mosquitto process owned by one test, on 127.0.0.1 and a free port. Dropping
/// it kills the process by its pid, even when the test panics.
pub struct Mosquitto {
    binary: PathBuf,
    conf: PathBuf,
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    /// Writes `mosquitto.conf` into `dir` (a listener on the free port followed by
    /// `extra`) and starts the broker; `None` when mosquitto is not installed.
    pub fn start(dir: &Path, extra: &str) -> Option<Self> {
        let binary = mosquitto_binary()?;
        // Started as root, mosquitto drops to its own user: let it write its log
        // and persistence file here.
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        let text = format!(
            "listener {port} 127.0.0.1\nlog_dest file {log}\nlog_type error\nlog_type warning\nlog_type notice\n{extra}\n",
            log = dir.join("mosquitto.log").display()
        );
        std::fs::write(&conf, text).unwrap();
        let mut m = Self {
            binary,
            conf,
            port,
            dir: dir.to_owned(),
            child: None,
        };
        m.restart();
        Some(m)
    }

    /// Starts the process again (same port and config) and waits until it listens.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        self.child = Some(child);
        if !wait_listening(self.port, Duration::from_secs(10)) {
            let mut err = String::new();
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
                if let Some(mut s) = c.stderr.take() {
                    let _ = s.read_to_string(&mut err);
                }
            }
            let log = std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default();
            panic!("mosquitto did not listen on {}: {err}\n{log}", self.port);
        }
    }

    /// Stops the process: SIGTERM (Mosquitto saves its persistence file), waiting
    /// for the exit; SIGKILL if it takes longer than 10 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills the process at once (SIGKILL): no persistence saved.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self, tls: bool) -> String {
        format!(
            "{}://127.0.0.1:{}",
            if tls { "mqtts" } else { "mqtt" },
            self.port
        )
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An in-process MQTT 5 broker (the SDK's embedded rumqttd) on a free port; its
/// threads live until the test process exits.
pub fn rumqttd() -> u16 {
    iiot_protocols::mqtt::embedded::EmbeddedBroker::start(1024 * 1024)
        .expect("embedded broker")
        .addr()
        .port()
}

/// One message seen by a [`RawSubscriber`].
#[derive(Debug, Clone)]
pub struct Seen {
    pub topic: String,
    pub payload: Bytes,
    pub retain: bool,
}

/// A plain rumqttc subscriber (not the code under test), as an operator's
/// `mosquitto_sub` would be.
pub struct RawSubscriber {
    pub rx: mpsc::UnboundedReceiver<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl RawSubscriber {
    /// Connects (clean session unless `persistent`), subscribes to `filter` at QoS 1
    /// and waits for the SUBACK.
    pub async fn connect(host: &str, port: u16, filter: &str, persistent: Option<&str>) -> Self {
        // MQTT 5: it works against rumqttd's v5 listener and Mosquitto alike.
        use rumqttc::v5::mqttbytes::{QoS, v5::Packet};
        use rumqttc::v5::{AsyncClient, Event, MqttOptions};
        let id = persistent.map_or_else(|| unique("sub"), str::to_owned);
        let mut opts = MqttOptions::new(id, host, port);
        opts.set_clean_start(persistent.is_none())
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(Some(1 << 20));
        if persistent.is_some() {
            opts.set_session_expiry_interval(Some(3600));
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let filter = filter.to_owned();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(c))) => {
                        if !c.session_present {
                            client
                                .subscribe(filter.clone(), QoS::AtLeastOnce)
                                .await
                                .unwrap();
                        } else if let Some(t) = ready_tx.take() {
                            let _ = t.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(t) = ready_tx.take() {
                            let _ = t.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(Seen {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: p.payload,
                            retain: p.retain,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("SUBACK in time")
            .unwrap();
        Self { rx, task }
    }

    /// The next message, at most `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Seen> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Waits for a message matching `pred`, at most `timeout`.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Seen) -> bool,
    ) -> Option<Seen> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let m = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .ok()
                .flatten()?;
            if pred(&m) {
                return Some(m);
            }
        }
    }
}

impl Drop for RawSubscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Parses a JSON status payload.
pub fn status_json(payload: &[u8]) -> serde_json::Value {
    serde_json::from_slice(payload).unwrap()
}

/// Test certificates: a CA, a server certificate for 127.0.0.1, client certificates.
pub struct Pki {
    pub dir: PathBuf,
    ca_params: rcgen::CertificateParams,
    ca_key: rcgen::KeyPair,
    pub ca: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca, cert.pem()).unwrap();
        Self {
            dir: dir.to_owned(),
            ca_params: params,
            ca_key: key,
            ca,
        }
    }

    fn issue(&self, file: &str, mut params: rcgen::CertificateParams) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&self.ca_params, &self.ca_key);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &issuer).unwrap();
        let cert_path = self.dir.join(format!("{file}.pem"));
        let key_path = self.dir.join(format!("{file}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    /// A Mosquitto in `dir` that requires a client certificate of this CA and
    /// takes the certificate's CN as the username (`None` without mosquitto).
    pub fn mtls_mosquitto(&self, dir: &Path) -> Option<Mosquitto> {
        let (cert, key) = self.server();
        let extra = format!(
            "allow_anonymous false\nrequire_certificate true\nuse_identity_as_username true\ncafile {}\ncertfile {}\nkeyfile {}\n",
            self.ca.display(),
            cert.display(),
            key.display()
        );
        Mosquitto::start(dir, &extra)
    }

    /// Server certificate for 127.0.0.1 and localhost.
    pub fn server(&self) -> (PathBuf, PathBuf) {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        self.issue("server", params)
    }

    /// Client certificate with the given CN; `expired` makes it end in 2001.
    pub fn client(&self, cn: &str, expired: bool) -> (PathBuf, PathBuf) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        self.issue(
            &format!("client-{cn}{}", if expired { "-expired" } else { "" }),
            params,
        )
    }
}

/// `mosquitto_pub -h 127.0.0.1 -p PORT -q 1 -t TOPIC`, to add its payload option to.
fn mosquitto_pub(port: u16, topic: &str) -> Command {
    let mut c = Command::new("mosquitto_pub");
    c.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-q",
        "1",
        "-t",
        topic,
    ]);
    c
}

/// Writes `lines` to `mosquitto_pub -q 1 -l` and returns how long it took.
pub fn mosquitto_pub_lines(port: u16, topic: &str, lines: &[String]) -> Duration {
    let start = Instant::now();
    let mut child = mosquitto_pub(port, topic)
        .arg("-l")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        let mut all = String::new();
        for l in lines {
            all.push_str(l);
            all.push('\n');
        }
        stdin.write_all(all.as_bytes()).unwrap();
    }
    assert!(child.wait().unwrap().success());
    start.elapsed()
}

/// Removes a retained message (empty retained publish, QoS 1) with a plain client.
pub async fn clear_retained(host: &str, port: u16, topic: &str) {
    let opts = rumqttc::MqttOptions::new(unique("janitor"), host, port);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 10);
    client
        .publish(topic, rumqttc::QoS::AtLeastOnce, true, Vec::new())
        .await
        .unwrap();
    let acked = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) = eventloop.poll().await
            {
                break;
            }
        }
    })
    .await;
    assert!(acked.is_ok(), "retained message not cleared");
}

/// The dynamic-security plugin shipped with the mosquitto package, if installed.
fn dynsec_plugin() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
        "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
        "/usr/lib/mosquitto_dynamic_security.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// The user that [`dynsec_mosquitto`] creates: it may subscribe only under
/// `allowed/#` and publish anywhere.
pub const DYNSEC_USER: (&str, &str) = ("device", "device-pw");

/// A Mosquitto with its dynamic-security plugin, the one Mosquitto setup whose
/// SUBACK really refuses a filter (the plain ACL file accepts every SUBSCRIBE
/// and filters at delivery). `None` when the plugin or `mosquitto_ctrl` is
/// missing (a failure under `IIOT_REQUIRE_SERVICES=1`).
pub fn dynsec_mosquitto(dir: &Path) -> Option<Mosquitto> {
    let Some(plugin) = dynsec_plugin() else {
        return require_or_skip("mosquitto_dynamic_security.so is not installed");
    };
    let file = dir.join("dynsec.json");
    let ctrl = |args: &[&str]| {
        Command::new("mosquitto_ctrl")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
    };
    let init = ctrl(&[
        "dynsec",
        "init",
        file.to_str().unwrap(),
        "admin",
        "admin-pw",
    ]);
    if !init.is_ok_and(|s| s.success()) {
        return require_or_skip(
            "mosquitto_ctrl dynsec init failed (it comes with the mosquitto package)",
        );
    }
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    let broker = Mosquitto::start(
        dir,
        &format!(
            "allow_anonymous false\nplugin {}\nplugin_opt_config_file {}",
            plugin.display(),
            file.display()
        ),
    )?;
    let port = broker.port.to_string();
    let (user, password) = DYNSEC_USER;
    for cmd in [
        &["createClient", user, "-p", password][..],
        &["createRole", "device"],
        &[
            "addRoleACL",
            "device",
            "subscribePattern",
            "allowed/#",
            "allow",
        ],
        &["addRoleACL", "device", "publishClientSend", "#", "allow"],
        &["addRoleACL", "device", "publishClientReceive", "#", "allow"],
        &["addClientRole", user, "device"],
    ] {
        let mut args = vec![
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-u",
            "admin",
            "-P",
            "admin-pw",
            "dynsec",
        ];
        args.extend_from_slice(cmd);
        assert!(
            ctrl(&args).is_ok_and(|s| s.success()),
            "mosquitto_ctrl {cmd:?} failed"
        );
    }
    Some(broker)
}

/// Publishes `payload` once with `mosquitto_pub` (QoS 1) from a file.
pub fn mosquitto_pub_file(port: u16, topic: &str, payload: &[u8], dir: &Path) {
    let file = dir.join("payload.bin");
    std::fs::write(&file, payload).unwrap();
    let status = mosquitto_pub(port, topic)
        .arg("-f")
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "mosquitto_pub failed");
}
