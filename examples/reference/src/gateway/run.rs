//! Wiring the gateway's parts together: configuration in, the SDK's runtime
//! (`iiot_edge::runtime`) does the rest.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use iiot_core::types::BatchMetadata;
use iiot_edge::forwarder::ForwarderHandle;
use iiot_edge::outbox::Outbox;
use iiot_edge::runtime::{BatchConfig, Gateway, GatewayBuilder, RuntimeCounters};
use iiot_protocols::modbus::Poller;
use iiot_protocols::mqtt::{Session, SessionHandle};
use tokio_util::sync::CancellationToken;

use super::GatewaySetup;
use super::produced::{Produced, ProducedEntry, ProducedLog};
use crate::error::AppError;

/// What the gateway produced so far: the runtime's counters (a batch counts once
/// its append is durable and, with a produced log, its line is written).
pub type GatewayCounters = RuntimeCounters;

/// A running gateway: the runtime and the MQTT session, for observing and stopping.
pub struct RunningGateway {
    /// The outbox (backlog, loss counters).
    pub outbox: Outbox,
    /// The forwarder's status.
    pub forwarder: ForwarderHandle,
    /// The MQTT session (connection state).
    pub session: SessionHandle,
    /// What was produced.
    pub counters: Arc<GatewayCounters>,
    gateway: Gateway,
}

impl std::fmt::Debug for RunningGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningGateway")
            .field("gateway", &self.gateway)
            .finish_non_exhaustive()
    }
}

impl RunningGateway {
    /// Stops polling and waits until the last batch is in the outbox.
    pub async fn stop_producing(&mut self) {
        self.gateway.stop_producing().await;
    }

    /// Waits at most `timeout` for the outbox to be empty (everything confirmed).
    /// Returns whether it emptied.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.gateway.drain(timeout).await
    }

    /// Waits for the tasks (after the caller cancelled their token) and closes the
    /// outbox.
    pub async fn join(self) {
        self.gateway.join().await;
    }
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
    let (session_handle, session, _inbound) =
        Session::new(&setup.mqtt.session_config(&setup.path))?;
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
    let (_writes, poller, readings) = Poller::new(
        setup.modbus.poller.clone(),
        setup.map,
        setup.modbus.transport.connector(),
    );
    let mut batch = BatchConfig::default();
    batch
        .set_max_samples(setup.batch.max_samples)
        .set_max_delay(setup.batch.max_delay);
    let gateway = GatewayBuilder::new(setup.path.clone(), outbox.clone(), session_handle.clone())
        .source(poller.into_source(readings, "modbus"))
        .batch(batch)
        .metadata(BatchMetadata {
            firmware_version: setup.mqtt.firmware_version.clone(),
            gateway_id: setup.mqtt.gateway_id.clone(),
        })
        .forwarder(setup.forwarder.clone())
        // The retained status with the outbox backlog and the poller's last good read.
        .heartbeat(Duration::from_secs(60))
        .task(move |c| session.run(c))
        .observer(Produced(produced_log))
        .start(cancel);
    Ok(RunningGateway {
        outbox,
        forwarder: gateway.forwarder().clone(),
        session: session_handle,
        counters: gateway.counters().clone(),
        gateway,
    })
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
    let gw = start(setup, &cancel).await?;
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "gateway {device} running");
        let _ = out.flush();
    }
    crate::shutdown_signal().await;
    let counters = gw.counters.clone();
    gw.gateway.shutdown(&cancel, Duration::from_secs(5)).await;
    let produced = counters.samples.load(Ordering::Relaxed);
    tracing::info!(produced, "gateway stopped");
    Ok(())
}
