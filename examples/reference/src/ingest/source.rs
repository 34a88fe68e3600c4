//! The ingest source: where payloads come from.
//!
//! [`open`] is the one place that builds it. Until `iiot-ingest` ships its MQTT
//! source (manual acknowledgement after commit), this is an interim adapter over
//! the iiot-protocols [`Session`]: it subscribes at QoS 1 and hands every inbound
//! message to the pipeline. **Its acknowledgement is a no-op** — the session
//! acknowledges on receipt — so a crash of the ingest process between receipt and
//! commit loses what was in flight; the gateway's outbox does not help there.
//! Swap in the SDK source as soon as it lands.

use std::num::NonZeroUsize;
use std::time::Duration;

use iiot_core::publish::QoS;
use iiot_core::types::Timestamp;
use iiot_ingest::source::{Delivery, Source, SourceError};
use iiot_protocols::mqtt::{Inbound, MqttConfig, Session};
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::AppError;

/// `[mqtt]` of ingest.toml.
///
/// ## Defaults
/// Broker `mqtt://127.0.0.1:1883`, client id `iiot-ingest`, the telemetry (with
/// data loss) and status topics of every UNS device, keepalive 30 s, persistent
/// session, 1000 in-flight messages.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttSourceConfig {
    /// `mqtt://host[:port]` or `mqtts://host[:port]`.
    pub broker_url: String,
    /// MQTT client id; also the last level of this worker's own status topic.
    pub client_id: String,
    /// Topic filters to subscribe to at QoS 1.
    pub subscribe: Vec<String>,
    /// Keepalive, seconds.
    pub keepalive_s: u64,
    /// Start a clean session (drops what the broker queued while away).
    pub clean_session: bool,
    /// Messages received but not yet taken by the pipeline.
    pub inbound_queue: NonZeroUsize,
    /// CA certificate for `mqtts://`.
    pub ca_path: Option<std::path::PathBuf>,
}

impl Default for MqttSourceConfig {
    fn default() -> Self {
        Self {
            broker_url: "mqtt://127.0.0.1:1883".into(),
            client_id: "iiot-ingest".into(),
            subscribe: vec![
                "+/+/+/+/+/+/telemetry/#".into(),
                "+/+/+/+/+/+/status".into(),
            ],
            keepalive_s: 30,
            clean_session: false,
            inbound_queue: NonZeroUsize::new(1000).unwrap_or(NonZeroUsize::MIN),
            ca_path: None,
        }
    }
}

impl MqttSourceConfig {
    /// Checks the values serde cannot.
    ///
    /// # Errors
    /// The first broken rule as `(key, problem)`.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(self.broker_url.starts_with("mqtt://") || self.broker_url.starts_with("mqtts://")) {
            return Err((
                "broker_url",
                format!("{:?} must start with mqtt:// or mqtts://", self.broker_url),
            ));
        }
        if let Err(p) = iiot_core::types::check_segment(&self.client_id, 128) {
            return Err(("client_id", format!("{:?} {p}", self.client_id)));
        }
        if self.subscribe.is_empty() {
            return Err(("subscribe", "needs at least one topic filter".into()));
        }
        if let Some(f) = self.subscribe.iter().find(|f| !valid_filter(f)) {
            return Err((
                "subscribe",
                format!("{f:?} is not a valid MQTT topic filter"),
            ));
        }
        if self.keepalive_s == 0 {
            return Err(("keepalive_s", "must be at least 1".into()));
        }
        Ok(())
    }

    /// The session configuration. The worker's own status goes to
    /// `iiot-platform/ingest/{client_id}/status`, outside the UNS device tree.
    fn session_config(&self) -> MqttConfig {
        let prefix = format!("iiot-platform/ingest/{}", self.client_id);
        let mut cfg = MqttConfig::new(&self.broker_url, &self.client_id, prefix);
        cfg.set_keepalive(Duration::from_secs(self.keepalive_s))
            .set_clean_session(self.clean_session)
            .set_inbound_queue(self.inbound_queue)
            .set_gateway_id("iiot-ingest");
        if let Some(ca) = &self.ca_path {
            cfg.set_ca_path(ca);
        }
        cfg
    }
}

/// MQTT filter rules: `#` only last and alone in its level, `+` alone in its level.
fn valid_filter(f: &str) -> bool {
    if f.is_empty() {
        return false;
    }
    let levels: Vec<&str> = f.split('/').collect();
    levels.iter().enumerate().all(|(i, l)| match *l {
        "#" => i + 1 == levels.len(),
        "+" => true,
        l => !l.contains(['#', '+']),
    })
}

/// The interim source over a session's inbound channel.
#[derive(Debug)]
pub struct SessionSource {
    inbound: Inbound,
}

impl Source for SessionSource {
    type Token = ();

    async fn recv(&mut self) -> Result<Option<Delivery<()>>, SourceError> {
        Ok(self.inbound.recv().await.map(|m| Delivery {
            topic: m.topic,
            payload: m.payload,
            received_at: Timestamp::now(),
            token: (),
        }))
    }

    async fn ack(&mut self, (): ()) -> Result<(), SourceError> {
        Ok(())
    }
}

/// Connects, subscribes and returns the source with the task driving its connection
/// (it ends when `cancel` fires).
///
/// # Errors
/// [`AppError::Mqtt`] for a bad session configuration, [`AppError::Subscribe`] when
/// a subscription is refused or times out.
pub async fn open(
    cfg: &MqttSourceConfig,
    cancel: &CancellationToken,
) -> Result<(SessionSource, JoinHandle<()>), AppError> {
    let (handle, session, inbound) = Session::new(&cfg.session_config())?;
    let driver = tokio::spawn(session.run(cancel.clone()));
    if !handle.wait_connected(Duration::from_secs(10)).await {
        tracing::warn!(broker = %cfg.broker_url, "not connected yet; subscriptions wait for the broker");
    }
    for filter in &cfg.subscribe {
        handle.subscribe(filter.clone(), QoS::AtLeastOnce).await?;
        tracing::info!(%filter, "subscribed");
    }
    Ok((SessionSource { inbound }, driver))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert!(valid_filter("+/+/+/+/+/+/telemetry/#"));
        assert!(valid_filter("acme/#"));
        assert!(!valid_filter("acme/#/x"));
        assert!(!valid_filter("acme/a+"));
        assert!(!valid_filter(""));
    }
}
