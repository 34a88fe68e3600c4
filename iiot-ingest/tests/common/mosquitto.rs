//! A Mosquitto process owned by one test, and a QoS 1 publisher for it.
//!
//! [`Mosquitto::start`] runs `mosquitto` (or `IIOT_MOSQUITTO`) on 127.0.0.1 and
//! a free port with a config the test chooses; dropping it, also while a panic
//! unwinds, kills that process by its pid. Without the binary it reports through
//! [`missing`] and returns `None`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{oneshot, watch};

use super::services::missing;

/// A test-owned Mosquitto; killed by pid on drop.
pub struct Mosquitto {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        // SIGKILL to this child's pid only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Mosquitto {
    /// Starts Mosquitto with `extra` appended to a minimal config (listener,
    /// anonymous, no persistence, notices logged to a file). `None` after
    /// [`missing`] when it cannot start.
    pub fn start(extra: &str) -> Option<Self> {
        match Self::try_start(extra) {
            Ok(m) => Some(m),
            Err(why) => {
                missing("Mosquitto (binary)", &why);
                None
            }
        }
    }

    /// As [`start`](Self::start), but says why it could not start instead of
    /// reporting through [`missing`] (benches print it and exit).
    pub fn try_start(extra: &str) -> Result<Self, String> {
        let binary = std::env::var("IIOT_MOSQUITTO").unwrap_or_else(|_| "mosquitto".to_owned());
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let conf = dir.path().join("mosquitto.conf");
        let text = format!(
            "listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             persistence false\n\
             sys_interval 0\n\
             log_dest stderr\n\
             log_type error\n\
             log_type warning\n\
             log_type notice\n\
             {extra}\n"
        );
        std::fs::write(&conf, text).map_err(|e| format!("{}: {e}", conf.display()))?;
        // A file we opened: Mosquitto started as root drops to its own user.
        let log = std::fs::File::create(dir.path().join("mosquitto.log"))
            .map_err(|e| format!("log file: {e}"))?;
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {binary}: {e}"))?;
        let mut m = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            if let Ok(Some(status)) = m.child.try_wait() {
                return Err(format!("{binary} exited ({status}): {}", m.log()));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(m);
            }
            if Instant::now() > deadline {
                return Err(format!("{binary} did not listen on {port} within 10 s"));
            }
            // Waiting for another process to bind; nothing to subscribe to.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `mqtt://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its private directory (config and log; removed on drop).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// How many times the log says `client_id` went away (a DISCONNECT, or
    /// its socket closed).
    pub fn departures(&self, client_id: &str) -> usize {
        let prefix = format!("Client {client_id} ");
        self.log()
            .lines()
            .filter(|l| {
                l.contains(&prefix)
                    && (l.contains(" disconnected") || l.contains("closed its connection"))
            })
            .count()
    }

    /// Waits (up to `within`) until the log says `client_id` went away `n`
    /// times; `false` if it did not. The broker is another process and its log
    /// is the only place it says it is done with a connection.
    pub async fn wait_departures(&self, client_id: &str, n: usize, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.departures(client_id) >= n {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A QoS 1 publisher whose event loop runs on its own task and counts PUBACKs.
pub struct Publisher {
    client: AsyncClient,
    acked: watch::Receiver<u64>,
}

impl Publisher {
    /// Connects to 127.0.0.1:`port` with 100 publishes in flight; panics without
    /// a CONNACK within 10 s.
    pub async fn connect(port: u16, id: &str) -> Self {
        Self::connect_with(port, id, 100).await
    }

    /// As [`connect`](Self::connect) with `inflight` unacknowledged publishes at
    /// most (benches raise it so the publisher is not what they measure).
    pub async fn connect_with(port: u16, id: &str, inflight: u16) -> Self {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30))
            .set_inflight(inflight)
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut ev) = AsyncClient::new(o, usize::from(inflight));
        let (acked_tx, acked) = watch::channel(0u64);
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => acked_tx.send_modify(|n| *n += 1),
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("publisher connection failed: {e}");
                        return;
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("publisher: no CONNACK within 10 s")
            .expect("publisher: connection failed");
        Self { client, acked }
    }

    /// Publishes each message with QoS 1; returns once all were acknowledged.
    pub async fn publish_all<P: Clone + Into<bytes::Bytes>>(&mut self, msgs: &[(String, P)]) {
        let target = *self.acked.borrow() + msgs.len() as u64;
        for (topic, payload) in msgs {
            self.client
                .publish_bytes(
                    topic.clone(),
                    QoS::AtLeastOnce,
                    false,
                    payload.clone().into(),
                )
                .await
                .expect("publisher: request channel closed");
        }
        tokio::time::timeout(
            Duration::from_secs(30),
            self.acked.wait_for(|n| *n >= target),
        )
        .await
        .expect("publisher: PUBACKs missing after 30 s")
        .expect("publisher: connection lost before every PUBACK");
    }

    /// Sends DISCONNECT.
    pub async fn disconnect(self) {
        let _ = self.client.disconnect().await;
    }
}
