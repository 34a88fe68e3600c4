//! The MQTT source: a persistent session with manual acknowledgements, so the
//! broker keeps every message until the pipeline committed it.
//!
//! * Clean session off: messages published while ingest is down, and messages
//!   received but not acknowledged when it died, are delivered (again) when it
//!   reconnects.
//! * Manual acks: a QoS 1 message is acknowledged (PUBACK) only through
//!   [`Source::ack`], i.e. after commit.
//! * Shared subscriptions (`$share/{group}/{filter}`) spread the load over
//!   several ingest workers; each message goes to one of them.
//! * Bounded: at most `channel_capacity` deliveries wait for the pipeline; past
//!   that the session stops reading from the socket. The broker bounds the
//!   un-acknowledged messages in flight per client (Mosquitto:
//!   `max_inflight_messages`, default 20); raise it for throughput, and mind
//!   `max_queued_messages`, past which Mosquitto drops QoS 1 messages for an
//!   offline persistent client.
//! * Acks never cross connections: a token from a connection that has since
//!   dropped is not acknowledged (its packet id may already name another
//!   message on the new connection); the broker redelivers that message instead,
//!   and dedupe absorbs the copy.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use iiot_core::types::Timestamp;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS, TlsConfiguration, Transport,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
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
/// | `channel_capacity` | 1 000 deliveries waiting for the pipeline |
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
    /// Deliveries waiting for the pipeline at most.
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
    publish: Option<Publish>,
}

/// The MQTT source. Dropping it stops its session task.
pub struct MqttSource {
    rx: mpsc::Receiver<Delivery<MqttToken>>,
    client: AsyncClient,
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

fn parse_url(url: &str) -> Result<(bool, String, u16), MqttSourceError> {
    let bad = |reason| MqttSourceError::Url {
        url: url.to_owned(),
        reason,
    };
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else {
        return Err(bad("scheme must be mqtt:// or mqtts://"));
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>().map_err(|_| bad("port is not a number"))?,
        ),
        None => (rest, if tls { 8883 } else { 1883 }),
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok((
        tls,
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
    ))
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
        let (client, eventloop) = AsyncClient::new(opts, 64);
        let (tx, rx) = mpsc::channel(config.channel_capacity.get());
        let generation = Arc::new(AtomicU64::new(0));
        let cancel = CancellationToken::new();
        tokio::spawn(drive(
            eventloop,
            client.clone(),
            tx,
            Arc::clone(&generation),
            config.filters.clone(),
            Duration::from_millis(config.reconnect_delay_ms),
            cancel.clone(),
        ));
        Ok(Self {
            rx,
            client,
            generation,
            _stop: cancel.drop_guard(),
        })
    }
}

async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    tx: mpsc::Sender<Delivery<MqttToken>>,
    generation: Arc<AtomicU64>,
    filters: Vec<String>,
    reconnect_delay: Duration,
    cancel: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            () = cancel.cancelled() => break,
            e = eventloop.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                let g = generation.fetch_add(1, Ordering::SeqCst) + 1;
                metrics::counter!("iiot_ingest_mqtt_connects_total").increment(1);
                metrics::gauge!("iiot_ingest_mqtt_connected").set(1.0);
                tracing::info!(
                    generation = g,
                    session_present = ack.session_present,
                    "MQTT source connected"
                );
                if !ack.session_present {
                    for f in &filters {
                        if let Err(e) = client.try_subscribe(f.clone(), QoS::AtLeastOnce) {
                            tracing::error!(filter = %f, error = %e, "subscribe failed");
                        }
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(mut p))) => {
                let payload = std::mem::take(&mut p.payload);
                let topic = std::mem::take(&mut p.topic);
                let token = MqttToken {
                    generation: generation.load(Ordering::SeqCst),
                    publish: (p.qos != QoS::AtMostOnce).then_some(p),
                };
                let d = Delivery {
                    topic,
                    payload,
                    received_at: Timestamp::now(),
                    token,
                };
                tokio::select! {
                    () = cancel.cancelled() => break,
                    r = tx.send(d) => if r.is_err() { break },
                }
            }
            Ok(_) => {}
            Err(e) => {
                metrics::gauge!("iiot_ingest_mqtt_connected").set(0.0);
                tracing::warn!(error = %e, "MQTT source connection failed; reconnecting");
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(reconnect_delay) => {}
                }
            }
        }
    }
    let _ = client.try_disconnect();
}

impl Source for MqttSource {
    type Token = MqttToken;

    async fn recv(&mut self) -> Result<Option<Delivery<MqttToken>>, SourceError> {
        Ok(self.rx.recv().await)
    }

    async fn ack(&mut self, token: MqttToken) -> Result<(), SourceError> {
        let Some(publish) = token.publish else {
            return Ok(());
        };
        if token.generation != self.generation.load(Ordering::SeqCst) {
            // Received on a connection that has since dropped: the broker will
            // redeliver it on this one, and that copy is acknowledged instead.
            tracing::debug!(
                pkid = publish.pkid,
                "skipping ack from an earlier connection"
            );
            return Ok(());
        }
        self.client
            .ack(&publish)
            .await
            .map_err(|e| SourceError::Disconnected {
                detail: e.to_string(),
            })
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
