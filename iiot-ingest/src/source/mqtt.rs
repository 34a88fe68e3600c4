//! The MQTT source: a persistent session with manual acknowledgements, so the
//! broker keeps every message until the pipeline committed it.
//!
//! * Clean session off: messages published while ingest is down, and messages
//!   received but not acknowledged when it died, are delivered (again) when it
//!   reconnects.
//! * Manual acks: a QoS 1 message is acknowledged (PUBACK) only through
//!   [`Source::ack`], i.e. after commit, and in the order the messages arrived.
//! * Shared subscriptions (`$share/{group}/{filter}`) spread the load over
//!   several ingest workers; each message goes to one of them.
//! * Bounded, whatever the broker does: at most `channel_capacity` deliveries
//!   wait for the pipeline (plus one held by the session task and the few
//!   rumqttc decoded from one read). Past that the session task stops reading
//!   from the socket, so TCP flow control holds the broker back, and it does
//!   not rely on the broker's in-flight window: Mosquitto 2.0 streams a
//!   reconnecting MQTT 3.1.1 client its whole backlog regardless of
//!   `max_inflight_messages`. Raising that window does not change memory use
//!   here; mind `max_queued_messages`, past which Mosquitto drops QoS 1
//!   messages for an offline persistent client.
//! * Acks never wait for the socket to be read: the session task writes them
//!   to the connection itself (a bounded queue of acks, drained before anything
//!   else), also while the delivery channel is full and it is not reading. An
//!   earlier version sent them through rumqttc's request queue, which only a
//!   polling event loop drains; behind a backlog larger than the channel that
//!   deadlocked (the task waited for the pipeline, the pipeline for its acks).
//! * Acks never cross connections: a token from a connection that has since
//!   dropped is not acknowledged (its packet id may already name another
//!   message on the new connection); the broker redelivers that message instead,
//!   and dedupe absorbs the copy. The session task, which owns the connection,
//!   makes that check as it writes.
//! * Dropping the source writes the acks already handed to it and a DISCONNECT
//!   before the connection closes.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use iiot_core::types::Timestamp;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, PubAck, PubRec, QoS, TlsConfiguration,
    Transport,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{Delivery, Source, SourceError};

/// MQTT source configuration.
///
/// ## Defaults
///
/// | field | default |
/// |---|---|
/// | `url` | `mqtt://127.0.0.1:1883` (`mqtts://` for TLS) |
/// | `client_id` | `iiot-ingest` (must be stable across restarts: it names the persistent session) |
/// | `filters` | `$share/iiot-ingest/+/+/+/+/+/+/telemetry/#` and `$share/iiot-ingest/+/+/+/+/+/+/status` |
/// | `keepalive_ms` | 30 000 |
/// | `channel_capacity` | 1 000 deliveries waiting for the pipeline (also sizes the ack queue, at least 64) |
/// | `reconnect_delay_ms` | 1 000 |
/// | `ca_path`, `client_cert_path`, `client_key_path` | none (PEM files for `mqtts://`) |
/// | `username`, `password` | none |
/// | `max_packet_bytes` | 2 MiB |
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttSourceConfig {
    /// `mqtt://host:port` or `mqtts://host:port`.
    pub url: String,
    /// Client id; names the persistent session, so keep it stable.
    pub client_id: String,
    /// Subscription filters (QoS 1).
    pub filters: Vec<String>,
    /// Keep-alive interval in ms.
    pub keepalive_ms: u64,
    /// Deliveries waiting for the pipeline at most; past that the source stops
    /// reading from the broker.
    pub channel_capacity: NonZeroUsize,
    /// Wait between reconnect attempts in ms.
    pub reconnect_delay_ms: u64,
    /// CA certificate (PEM) for `mqtts://`.
    pub ca_path: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub client_cert_path: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    pub client_key_path: Option<PathBuf>,
    /// Username, if the broker wants one.
    pub username: Option<String>,
    /// Password, if the broker wants one.
    pub password: Option<String>,
    /// Largest packet accepted, bytes.
    pub max_packet_bytes: usize,
}

impl Default for MqttSourceConfig {
    fn default() -> Self {
        Self {
            url: "mqtt://127.0.0.1:1883".into(),
            client_id: "iiot-ingest".into(),
            filters: vec![
                "$share/iiot-ingest/+/+/+/+/+/+/telemetry/#".into(),
                "$share/iiot-ingest/+/+/+/+/+/+/status".into(),
            ],
            keepalive_ms: 30_000,
            channel_capacity: NonZeroUsize::new(1000).unwrap_or(NonZeroUsize::MIN),
            reconnect_delay_ms: 1000,
            ca_path: None,
            client_cert_path: None,
            client_key_path: None,
            username: None,
            password: None,
            max_packet_bytes: 2 * 1024 * 1024,
        }
    }
}

/// Why the MQTT source could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MqttSourceError {
    /// The URL is not `mqtt://host:port` or `mqtts://host:port`.
    #[error("bad broker URL {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A TLS file could not be read.
    #[error("cannot read {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `mqtts://` without a CA file, or a client certificate without its key.
    #[error("TLS configuration incomplete: {reason}")]
    Tls {
        /// What is missing.
        reason: &'static str,
    },
    /// No filters to subscribe to.
    #[error("no subscription filters")]
    NoFilters,
}

/// Identifies one received message for acknowledgement.
#[derive(Debug)]
pub struct MqttToken {
    generation: u64,
    /// Packet id and QoS of a QoS 1 or 2 message; `None` for QoS 0.
    ack: Option<(u16, QoS)>,
}

/// The MQTT source. Dropping it stops its session task (after it wrote the
/// acks already handed over).
pub struct MqttSource {
    rx: mpsc::Receiver<Delivery<MqttToken>>,
    acks: mpsc::Sender<MqttToken>,
    generation: Arc<AtomicU64>,
    _stop: DropGuard,
}

impl std::fmt::Debug for MqttSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSource")
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Acks written per flush at most.
const ACK_BATCH: usize = 256;

/// Smallest ack queue.
const MIN_ACK_QUEUE: usize = 64;

/// `(tls, host, port)` of a broker URL (core's parser).
fn parse_url(url: &str) -> Result<(bool, String, u16), MqttSourceError> {
    let b = iiot_core::publish::BrokerUrl::parse(url).map_err(|e| MqttSourceError::Url {
        url: e.url,
        reason: e.reason,
    })?;
    Ok((b.tls, b.host, b.port))
}

fn read(path: &PathBuf) -> Result<Vec<u8>, MqttSourceError> {
    std::fs::read(path).map_err(|source| MqttSourceError::File {
        path: path.clone(),
        source,
    })
}

impl MqttSource {
    /// Starts the session task and returns the source. Must be called within a
    /// tokio runtime.
    ///
    /// # Errors
    /// [`MqttSourceError`] for a bad URL, unreadable TLS files or no filters.
    pub fn start(config: &MqttSourceConfig) -> Result<Self, MqttSourceError> {
        if config.filters.is_empty() {
            return Err(MqttSourceError::NoFilters);
        }
        let (tls, host, port) = parse_url(&config.url)?;
        let mut opts = MqttOptions::new(config.client_id.clone(), host, port);
        opts.set_clean_session(false)
            .set_manual_acks(true)
            .set_keep_alive(Duration::from_millis(config.keepalive_ms.max(1000)))
            .set_max_packet_size(config.max_packet_bytes, config.max_packet_bytes);
        if let Some(user) = &config.username {
            opts.set_credentials(user.clone(), config.password.clone().unwrap_or_default());
        }
        if tls {
            let ca = read(config.ca_path.as_ref().ok_or(MqttSourceError::Tls {
                reason: "mqtts:// needs ca_path",
            })?)?;
            let client_auth = match (&config.client_cert_path, &config.client_key_path) {
                (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
                (None, None) => None,
                _ => {
                    return Err(MqttSourceError::Tls {
                        reason: "client_cert_path and client_key_path come together",
                    });
                }
            };
            opts.set_transport(Transport::Tls(TlsConfiguration::Simple {
                ca,
                alpn: None,
                client_auth,
            }));
        }
        // Only subscriptions and the final DISCONNECT go through rumqttc's
        // request queue; acks are written by the session task itself.
        let (client, eventloop) = AsyncClient::new(opts, 16);
        let (tx, rx) = mpsc::channel(config.channel_capacity.get());
        let (acks_tx, acks) = mpsc::channel(config.channel_capacity.get().max(MIN_ACK_QUEUE));
        let generation = Arc::new(AtomicU64::new(0));
        let cancel = CancellationToken::new();
        let session = Session {
            network_timeout: Duration::from_secs(
                eventloop.network_options().connection_timeout().max(1),
            ),
            eventloop,
            client,
            tx,
            acks,
            generation: Arc::clone(&generation),
            live: None,
            filters: config.filters.clone(),
            reconnect_delay: Duration::from_millis(config.reconnect_delay_ms),
        };
        tokio::spawn(session.run(cancel.clone()));
        Ok(Self {
            rx,
            acks: acks_tx,
            generation,
            _stop: cancel.drop_guard(),
        })
    }
}

/// The session task: owns the event loop and the connection.
struct Session {
    eventloop: EventLoop,
    client: AsyncClient,
    tx: mpsc::Sender<Delivery<MqttToken>>,
    acks: mpsc::Receiver<MqttToken>,
    generation: Arc<AtomicU64>,
    /// The generation of the live connection, if there is one.
    live: Option<u64>,
    filters: Vec<String>,
    reconnect_delay: Duration,
    network_timeout: Duration,
}

/// The connection failed while the session task wrote to it.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("{0}")]
    State(#[from] rumqttc::StateError),
    #[error("flush timed out")]
    Timeout,
}

impl Session {
    /// Runs until `cancel` fires or the source is dropped.
    ///
    /// Never waits for the pipeline while an ack is waiting for it: acks come
    /// first, then handing a held delivery over, then reading the socket, which
    /// is only polled while no delivery is held (the channel had room).
    async fn run(mut self, cancel: CancellationToken) {
        let mut held: Option<Delivery<MqttToken>> = None;
        let mut retry_at: Option<Instant> = None;
        // A handle of our own: a permit borrows it across the select.
        let tx = self.tx.clone();
        loop {
            let can_poll = held.is_none() && retry_at.is_none();
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                a = self.acks.recv() => match a {
                    Some(token) => self.write_acks(token).await,
                    None => break,
                },
                p = tx.reserve(), if held.is_some() => match (p, held.take()) {
                    (Ok(permit), Some(d)) => permit.send(d),
                    (Ok(_), None) => {}
                    (Err(_), _) => break,
                },
                () = sleep_until_opt(retry_at), if retry_at.is_some() => retry_at = None,
                e = self.eventloop.poll(), if can_poll => match e {
                    Ok(event) => match self.on_event(event) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(d)) => held = Some(d),
                        Err(mpsc::error::TrySendError::Closed(_)) => break,
                    },
                    Err(e) => {
                        self.lost(&e.to_string());
                        retry_at = Some(Instant::now() + self.reconnect_delay);
                    }
                },
            }
        }
        self.shutdown().await;
    }

    /// Handles one event; a delivery that does not fit is handed back.
    fn on_event(
        &mut self,
        event: Event,
    ) -> Result<(), mpsc::error::TrySendError<Delivery<MqttToken>>> {
        match event {
            Event::Incoming(Packet::ConnAck(ack)) => {
                let g = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
                self.live = Some(g);
                metrics::counter!("iiot_ingest_mqtt_connects_total").increment(1);
                metrics::gauge!("iiot_ingest_mqtt_connected").set(1.0);
                tracing::info!(
                    generation = g,
                    session_present = ack.session_present,
                    "MQTT source connected"
                );
                if !ack.session_present {
                    for f in &self.filters {
                        if let Err(e) = self.client.try_subscribe(f.clone(), QoS::AtLeastOnce) {
                            tracing::error!(filter = %f, error = %e, "subscribe failed");
                        }
                    }
                }
                Ok(())
            }
            Event::Incoming(Packet::Publish(p)) => {
                let token = MqttToken {
                    generation: self.live.unwrap_or_default(),
                    ack: (p.qos != QoS::AtMostOnce).then_some((p.pkid, p.qos)),
                };
                self.tx.try_send(Delivery {
                    topic: p.topic,
                    payload: p.payload,
                    received_at: Timestamp::now(),
                    token,
                })
            }
            _ => Ok(()),
        }
    }

    /// Writes `first` and whatever else is queued (up to [`ACK_BATCH`]) to the
    /// live connection and flushes, without reading from it. Tokens of earlier
    /// connections are skipped.
    async fn write_acks(&mut self, first: MqttToken) {
        let mut next = Some(first);
        let mut written = 0usize;
        let mut skipped = 0usize;
        let result = async {
            while let Some(token) = next.take() {
                if let Some((pkid, qos)) = token.ack {
                    match (self.live, self.eventloop.network.as_mut()) {
                        (Some(live), Some(network)) if live == token.generation => {
                            let packet = if qos == QoS::ExactlyOnce {
                                Packet::PubRec(PubRec::new(pkid))
                            } else {
                                Packet::PubAck(PubAck::new(pkid))
                            };
                            network.write(packet).await?;
                            written += 1;
                        }
                        _ => skipped += 1,
                    }
                }
                if written + skipped < ACK_BATCH {
                    next = self.acks.try_recv().ok();
                }
            }
            if written > 0 {
                self.flush().await?;
            }
            Ok::<(), WriteError>(())
        }
        .await;
        if skipped > 0 {
            // Received on a connection that has since dropped: the broker
            // redelivers them on this one, and those copies are acknowledged.
            tracing::debug!(skipped, "skipping acks from an earlier connection");
        }
        if let Err(e) = result {
            self.lost(&e.to_string());
        }
    }

    async fn flush(&mut self) -> Result<(), WriteError> {
        let Some(network) = self.eventloop.network.as_mut() else {
            return Ok(());
        };
        tokio::time::timeout(self.network_timeout, network.flush())
            .await
            .map_err(|_| WriteError::Timeout)??;
        Ok(())
    }

    /// The connection is gone: tokens handed out on it become stale, and
    /// publishes rumqttc decoded from it but not yet returned are dropped (the
    /// broker redelivers them, on the next connection, under new packet ids).
    fn lost(&mut self, error: &str) {
        if self.eventloop.network.is_some() {
            self.eventloop.clean();
        }
        self.eventloop.state.events.clear();
        self.live = None;
        self.generation.fetch_add(1, Ordering::SeqCst);
        metrics::gauge!("iiot_ingest_mqtt_connected").set(0.0);
        tracing::warn!(%error, "MQTT source connection failed; reconnecting");
    }

    /// Writes the acks already queued, then DISCONNECT.
    async fn shutdown(mut self) {
        self.acks.close();
        if let Ok(token) = self.acks.try_recv() {
            self.write_acks(token).await;
            while let Ok(token) = self.acks.try_recv() {
                self.write_acks(token).await;
            }
        }
        if let Some(network) = self.eventloop.network.as_mut()
            && network.write(Packet::Disconnect).await.is_ok()
        {
            let _ = self.flush().await;
        }
        metrics::gauge!("iiot_ingest_mqtt_connected").set(0.0);
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Source for MqttSource {
    type Token = MqttToken;

    async fn recv(&mut self) -> Result<Option<Delivery<MqttToken>>, SourceError> {
        Ok(self.rx.recv().await)
    }

    /// Queues the ack for the session task, which writes it to the connection
    /// in order; waits only while that bounded queue is full (the session task
    /// drains it before anything else, so that wait never depends on the
    /// pipeline).
    async fn ack(&mut self, token: MqttToken) -> Result<(), SourceError> {
        if token.ack.is_none() {
            return Ok(());
        }
        if token.generation != self.generation.load(Ordering::SeqCst) {
            // Received on a connection that has since dropped: the broker will
            // redeliver it on this one, and that copy is acknowledged instead.
            tracing::debug!("skipping ack from an earlier connection");
            return Ok(());
        }
        self.acks.send(token).await.map_err(|_| SourceError::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("mqtt://127.0.0.1:1884").unwrap(),
            (false, "127.0.0.1".into(), 1884)
        );
        assert_eq!(
            parse_url("mqtts://broker").unwrap(),
            (true, "broker".into(), 8883)
        );
        assert_eq!(
            parse_url("mqtt://[::1]:1883").unwrap(),
            (false, "::1".into(), 1883)
        );
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("mqtt://:1883").is_err());
        assert!(parse_url("mqtt://h:port").is_err());
    }

    #[test]
    fn config_rejects_unknown_keys() {
        let c: MqttSourceConfig = serde_json::from_str(r#"{"url":"mqtt://h:1"}"#).unwrap();
        assert_eq!(c.client_id, "iiot-ingest");
        assert!(serde_json::from_str::<MqttSourceConfig>(r#"{"uri":"x"}"#).is_err());
    }
}
