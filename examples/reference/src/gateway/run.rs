//! Wiring the gateway's parts together and running them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use iiot_core::codec::protobuf;
use iiot_core::publish::OutboundMessage;
use iiot_core::topic::UnsPath;
use iiot_core::types::{
    BatchMetadata, DataLoss, MessageId, Sample, Sequence, TelemetryBatch, Timestamp,
};
use iiot_core::version::data_loss_topic;
use iiot_edge::forwarder::{Forwarder, ForwarderHandle};
use iiot_edge::outbox::Outbox;
use iiot_protocols::modbus::{Poller, Reading};
use iiot_protocols::mqtt::{MqttConfig, Session, SessionHandle, WhenDisconnected};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::produced::{ProducedEntry, ProducedLog, ProducedSample};
use super::{BatchSection, GatewayMqtt, GatewaySetup};
use crate::error::AppError;

/// What the gateway produced so far: batches count once their append to the outbox
/// is durable (and, with a produced log, once their line is written).
#[derive(Debug, Default)]
pub struct GatewayCounters {
    /// Samples durably appended to the outbox.
    pub samples: AtomicU64,
    /// Telemetry batches durably appended to the outbox.
    pub batches: AtomicU64,
    /// Batches the outbox refused (each one logged with its reason).
    pub append_errors: AtomicU64,
}

/// A running gateway: its parts, for observing and stopping.
pub struct RunningGateway {
    /// The outbox (backlog, loss counters).
    pub outbox: Outbox,
    /// The forwarder's status.
    pub forwarder: ForwarderHandle,
    /// The MQTT session (connection state).
    pub session: SessionHandle,
    /// What was produced.
    pub counters: Arc<GatewayCounters>,
    /// Cancel to stop polling; the last batch is still appended.
    pub stop_polling: CancellationToken,
    batcher: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for RunningGateway {
    // `Outbox` has no `Debug`; show its counters instead.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningGateway")
            .field("outbox", &self.outbox.stats())
            .field("forwarder", &self.forwarder.status())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl RunningGateway {
    /// Stops polling and waits until the last batch is in the outbox.
    pub async fn stop_producing(&mut self) {
        self.stop_polling.cancel();
        let batcher = std::mem::replace(&mut self.batcher, tokio::spawn(async {}));
        if let Err(e) = batcher.await {
            tracing::warn!(%e, "batcher task failed");
        }
    }

    /// Waits at most `timeout` for the outbox to be empty (everything confirmed).
    /// Returns whether it emptied.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.outbox.stats();
            if s.backlog_records == 0 && s.pending_records == 0 && s.pending_losses == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the tasks (after the caller cancelled their token) and closes the
    /// outbox.
    pub async fn join(self) {
        let _ = self.batcher.await;
        for t in self.tasks {
            let _ = t.await;
        }
        self.outbox.close().await;
    }
}

fn mqtt_config(path: &UnsPath, m: &GatewayMqtt) -> MqttConfig {
    let device = path.device_id().as_str();
    let mut cfg = MqttConfig::new(&m.broker_url, device, path.to_string());
    cfg.set_protocol(m.protocol)
        .set_keepalive(Duration::from_secs(m.keepalive_s))
        // The outbox keeps what cannot be sent; the session must not queue it too.
        .set_when_disconnected(WhenDisconnected::Refuse)
        .set_reconnect_backoff(
            Duration::from_millis(250),
            Duration::from_millis(m.reconnect_max_ms.max(250)),
        );
    if let Some(ca) = &m.ca_path {
        cfg.set_ca_path(ca);
    }
    if let (Some(c), Some(k)) = (&m.client_cert_path, &m.client_key_path) {
        cfg.set_client_identity(c, k);
    }
    if let Some(user) = &m.username {
        cfg.set_credentials(user, m.password.clone().unwrap_or_default());
    }
    if let Some(v) = &m.firmware_version {
        cfg.set_firmware_version(v);
    }
    if let Some(g) = &m.gateway_id {
        cfg.set_gateway_id(g);
    }
    cfg
}

/// Opens the outbox, connects MQTT and starts polling, batching and forwarding
/// under `cancel`.
///
/// # Errors
/// [`AppError::Outbox`] when the outbox cannot be opened, [`AppError::Mqtt`] for
/// a bad session configuration.
pub async fn start(
    setup: GatewaySetup,
    cancel: &CancellationToken,
) -> Result<RunningGateway, AppError> {
    let device = setup.path.device_id().clone();
    let outbox_dir = setup.data_dir.join("outbox");
    std::fs::create_dir_all(&setup.data_dir)
        .map_err(|e| AppError::io(format!("cannot create {}", setup.data_dir.display()), e))?;
    let outbox = Outbox::open(&outbox_dir, device.clone(), setup.outbox.clone()).await?;
    let stats = outbox.stats();
    tracing::info!(path = %outbox_dir.display(), backlog = stats.backlog_records, next_seq = %stats.next_seq, "outbox open");
    let produced_log = match &setup.produced_log {
        Some(path) => {
            let mut log = ProducedLog::open(path).await?;
            log.write(&ProducedEntry::open(device.as_str(), &stats))
                .await;
            tracing::info!(path = %path.display(), "appending to the produced log");
            Some(log)
        }
        None => None,
    };

    let (session_handle, session, _inbound) = Session::new(&mqtt_config(&setup.path, &setup.mqtt))?;
    let mut tasks = vec![tokio::spawn(session.run(cancel.clone()))];

    let loss_topic = data_loss_topic(&setup.path).to_string();
    let encode_loss =
        move |l: &DataLoss| OutboundMessage::new(loss_topic.clone(), protobuf::encode_data_loss(l));
    let (forwarder, forwarder_handle) = Forwarder::new(
        outbox.clone(),
        session_handle.clone(),
        encode_loss,
        setup.forwarder.clone(),
    );
    let token = cancel.clone();
    tasks.push(tokio::spawn(async move {
        let exit = forwarder.run(token).await;
        tracing::info!(?exit, "forwarder stopped");
    }));

    let stop_polling = cancel.child_token();
    let (_poll_handle, readings, poller) = Poller::new(
        setup.modbus.poller.clone(),
        setup.map,
        setup.modbus.transport.connector(),
    );
    tasks.push(tokio::spawn(poller.run(stop_polling.clone())));

    let counters = Arc::new(GatewayCounters::default());
    let metadata = BatchMetadata {
        firmware_version: setup.mqtt.firmware_version.clone(),
        gateway_id: setup.mqtt.gateway_id.clone(),
    };
    let batcher = tokio::spawn(batch_loop(
        readings,
        BatchTarget {
            outbox: outbox.clone(),
            topic: setup.path.telemetry().to_string(),
            device,
            metadata,
            counters: counters.clone(),
            produced_log,
        },
        setup.batch.clone(),
        stop_polling.clone(),
    ));
    Ok(RunningGateway {
        outbox,
        forwarder: forwarder_handle,
        session: session_handle,
        counters,
        stop_polling,
        batcher,
        tasks,
    })
}

/// Where closed batches go.
struct BatchTarget {
    outbox: Outbox,
    topic: String,
    device: iiot_core::types::DeviceId,
    metadata: BatchMetadata,
    counters: Arc<GatewayCounters>,
    produced_log: Option<ProducedLog>,
}

impl BatchTarget {
    /// Appends one batch, stamped with the outbox's sequence number; once it is
    /// durable, writes its produced-log line and counts it.
    async fn append(&mut self, samples: Vec<Sample>) {
        let n = samples.len() as u64;
        let identities: Vec<ProducedSample> = if self.produced_log.is_some() {
            samples.iter().map(ProducedSample::from).collect()
        } else {
            Vec::new()
        };
        let mut batch = TelemetryBatch::new(self.device.clone(), Sequence::default(), samples);
        batch.metadata = self.metadata.clone();
        let topic = self.topic.clone();
        let result = self
            .outbox
            .append_with(|seq| {
                batch.seq = seq;
                batch.message_id = MessageId::generate();
                batch.gateway_time = Timestamp::now();
                OutboundMessage::new(topic.clone(), protobuf::encode_telemetry(&batch))
            })
            .await;
        let durable = match result {
            // Immediate under `EveryWrite`; waits for the group commit otherwise.
            Ok(appended) => appended.durable().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let seq = match durable {
            Ok(seq) => seq,
            Err(error) => {
                self.counters.append_errors.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("iiot_reference_gateway_append_errors_total").increment(1);
                tracing::error!(%error, samples = n, "outbox refused a batch");
                return;
            }
        };
        // The line first, then the counters: a reader of both never sees a count
        // the log does not have.
        if let Some(log) = &mut self.produced_log {
            log.write(&ProducedEntry::Batch {
                seq: seq.0,
                message_id: batch.message_id,
                samples: identities,
            })
            .await;
        }
        self.counters.samples.fetch_add(n, Ordering::Relaxed);
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("iiot_reference_gateway_samples_total").increment(n);
        metrics::counter!("iiot_reference_gateway_batches_total").increment(1);
        tracing::trace!(%seq, samples = n, "batch in outbox");
    }

    /// Writes the produced log's `stopped` line (after the last append).
    async fn stopped(&mut self) {
        let Some(log) = &mut self.produced_log else {
            return;
        };
        let s = self.outbox.stats();
        let c = &self.counters;
        log.write(&ProducedEntry::Stopped {
            batches: c.batches.load(Ordering::Relaxed),
            samples: c.samples.load(Ordering::Relaxed),
            append_errors: c.append_errors.load(Ordering::Relaxed),
            next_seq: s.next_seq.0,
            appended: s.appended,
            dropped_records: s.dropped_records,
            expired_records: s.expired_records,
            unreadable_records: s.unreadable_records,
        })
        .await;
    }
}

/// Collects readings into batches closed at `max_samples` or `max_delay_ms` after
/// their first sample; ends (after appending the last batch) when polling stops.
async fn batch_loop(
    mut readings: mpsc::Receiver<Reading>,
    mut target: BatchTarget,
    cfg: BatchSection,
    stop: CancellationToken,
) {
    let max_delay = Duration::from_millis(cfg.max_delay_ms);
    let mut samples: Vec<Sample> = Vec::new();
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let timer = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = readings.recv() => match r {
                Some(reading) => {
                    if samples.is_empty() {
                        deadline = Some(tokio::time::Instant::now() + max_delay);
                    }
                    samples.push(reading.sample);
                    if samples.len() >= cfg.max_samples.get() {
                        target.append(std::mem::take(&mut samples)).await;
                        deadline = None;
                    }
                }
                None => break,
            },
            () = timer => {
                target.append(std::mem::take(&mut samples)).await;
                deadline = None;
            }
            () = stop.cancelled() => {
                // Take what the poller already delivered, then stop.
                while let Ok(reading) = readings.try_recv() {
                    samples.push(reading.sample);
                }
                break;
            }
        }
    }
    if !samples.is_empty() {
        target.append(samples).await;
    }
    target.stopped().await;
}

/// Runs the gateway until Ctrl-C / SIGTERM, then stops polling, gives the
/// forwarder a few seconds to empty the outbox (what remains is sent by the next
/// run) and shuts down.
///
/// # Errors
/// As [`start`].
pub async fn run(setup: GatewaySetup) -> Result<(), AppError> {
    let cancel = CancellationToken::new();
    let device = setup.path.device_id().to_string();
    let mut gw = start(setup, &cancel).await?;
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "gateway {device} running");
        let _ = out.flush();
    }
    crate::shutdown_signal().await;
    gw.stop_producing().await;
    if !gw.drain(Duration::from_secs(5)).await {
        tracing::warn!(
            backlog = gw.outbox.stats().backlog_records,
            "outbox not empty at shutdown; the next run sends the rest"
        );
    }
    cancel.cancel();
    let produced = gw.counters.samples.load(Ordering::Relaxed);
    gw.join().await;
    tracing::info!(produced, "gateway stopped");
    Ok(())
}
