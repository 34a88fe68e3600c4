//! Wiring the gateway's parts together: configuration in, the SDK's runtime
//! (`iiot_edge::runtime`) does the rest.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use iiot_core::types::BatchMetadata;
use iiot_edge::commands::{ExecutorHandle, Ledger};
use iiot_edge::forwarder::ForwarderHandle;
use iiot_edge::ota::{OtaHandle, OtaSetup, SlotBackend as _};
use iiot_edge::outbox::{Outbox, OutboxConfig, WhenFull};
use iiot_edge::runtime::{BatchConfig, Gateway, GatewayBuilder, InboxRouter, RuntimeCounters};
use iiot_protocols::modbus::Poller;
use iiot_protocols::mqtt::{InboundDeliveries, Session, SessionHandle};
use iiot_protocols::opcua::OpcUaSource;
use tokio_util::sync::CancellationToken;

use super::produced::{Produced, ProducedEntry, ProducedLog};
use super::{GatewaySetup, ota};
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

    /// The command executor (its counters), when commands are enabled.
    pub fn commands(&self) -> Option<&ExecutorHandle> {
        self.gateway.commands()
    }

    /// The OTA agent, when updates are enabled.
    pub fn ota(&self) -> Option<&OtaHandle> {
        self.gateway.ota()
    }

    /// Stops everything: stops polling, drains for at most `drain`, cancels
    /// `cancel` and joins.
    pub async fn shutdown(self, cancel: &CancellationToken, drain: Duration) {
        self.gateway.shutdown(cancel, drain).await;
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
    // The firmware slots first: the version this boot runs goes into the birth,
    // the heartbeat and every batch.
    let mut slots = None;
    let mut mqtt = setup.mqtt.clone();
    if let Some(o) = &setup.ota {
        let slots_dir = setup.data_dir.join("slots");
        let factory = setup.mqtt.firmware_version.as_deref().unwrap_or("0.0.0");
        let s = ota::open_slots(&slots_dir, o.slot_capacity, factory).map_err(AppError::Ota)?;
        let running = slots_running(&s);
        tracing::info!(path = %slots_dir.display(), running = %running, "firmware slots open");
        mqtt.firmware_version = Some(running);
        slots = Some((s, slots_dir));
    }
    let (session_handle, mut session, inbound) = Session::new(&mqtt.session_config(&setup.path))?;
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
    let (writes, poller, readings) = Poller::new(
        setup.modbus.poller.clone(),
        setup.map,
        setup.modbus.transport.connector(),
    );
    let mut batch = BatchConfig::default();
    batch
        .set_max_samples(setup.batch.max_samples)
        .set_max_delay(setup.batch.max_delay);
    let metadata = BatchMetadata {
        firmware_version: mqtt.firmware_version.clone(),
        gateway_id: setup.mqtt.gateway_id.clone(),
    };
    let mut builder =
        GatewayBuilder::new(setup.path.clone(), outbox.clone(), session_handle.clone())
            .source(poller.into_source(readings, "modbus"));
    // The OPC-UA server beside the PLC: a second source of the same runtime, and its
    // writable tags a second command handler.
    let mut opcua_writes = None;
    if let Some(cfg) = setup.opcua.clone() {
        tracing::info!(endpoint = %cfg.endpoint, tags = cfg.tags.len(), "OPC-UA source");
        let (source, handle) = OpcUaSource::new("opcua", cfg)?;
        builder = builder.source(source);
        opcua_writes = Some(handle);
    }
    let ota_enabled = setup.ota.is_some();
    let mut filters = Vec::new();
    if setup.commands.enabled {
        filters.push(format!("{}/commands/+", setup.path));
    }
    if ota_enabled {
        filters.push(setup.path.ota_notification().to_string());
    }
    if !filters.is_empty() {
        session.subscribe_on_connect(&filters, iiot_core::publish::QoS::AtLeastOnce)?;
        // Acks and OTA statuses travel on a control lane of their own: durable,
        // never dropped for telemetry's room, never behind a telemetry backlog.
        let mut control_cfg = OutboxConfig::default();
        control_cfg.set_when_full(WhenFull::Block);
        let control =
            Outbox::open(setup.data_dir.join("control"), device.clone(), control_cfg).await?;
        builder = builder.control_lane(control, setup.forwarder.clone());
    }
    // One session delivers both classes: split them by topic.
    let deliveries = InboundDeliveries::new(session_handle.clone(), inbound);
    let (router, commands_inbox, ota_inbox) = InboxRouter::new(deliveries, &setup.path, 64);
    builder = builder.task(move |c| router.run(c));
    if setup.commands.enabled {
        let ledger_dir = setup.data_dir.join("commands");
        let ledger = Ledger::open(&ledger_dir, setup.commands.ledger())?;
        tracing::info!(path = %ledger_dir.display(), stats = ?ledger.stats(), "command ledger open");
        builder = builder.commands(
            commands_inbox,
            ledger,
            (writes, opcua_writes),
            setup.commands.executor.clone(),
        )?;
    }
    if let (Some(o), Some((slots, slots_dir))) = (&setup.ota, slots) {
        let fetch = ota::fetcher(&o.http).map_err(AppError::Ota)?;
        let health = ota::health_check(session_handle.clone(), slots_dir);
        let ota_setup = OtaSetup::open(
            setup.data_dir.join("ota"),
            slots,
            fetch,
            health,
            o.trust.clone(),
            o.config.clone(),
        )
        .map_err(|e| AppError::Ota(e.to_string()))?;
        builder = builder.ota(ota_inbox, ota_setup)?;
    }
    let gateway = builder
        .batch(batch)
        .metadata(metadata)
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

/// The version this boot will run once the agent counted it: the trial image
/// while the trial has boots left, the active one otherwise.
fn slots_running(slots: &iiot_edge::ota::FileSlots) -> String {
    let s = slots.state();
    let slot = match &s.trial {
        Some(t) if t.boots < t.max_boots => t.slot,
        _ => s.active,
    };
    s.image(slot)
        .map_or_else(|| "0.0.0".into(), |i| i.version.to_string())
}

/// Why `iiot gateway` stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayExit {
    /// Ctrl-C or SIGTERM.
    Signal,
    /// A firmware update needs a restart (exit code [`ota::REBOOT_EXIT_CODE`]).
    Reboot,
}

/// Runs the gateway until Ctrl-C / SIGTERM (or until a firmware update needs a
/// restart), then stops polling, gives the forwarder a few seconds to empty the
/// outbox (what remains is sent by the next run) and shuts down.
///
/// # Errors
/// As [`start`].
pub async fn run(setup: GatewaySetup) -> Result<GatewayExit, AppError> {
    let cancel = CancellationToken::new();
    let device = setup.path.device_id().to_string();
    let gw = start(setup, &cancel).await?;
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "gateway {device} running");
        let _ = out.flush();
    }
    let ota = gw.ota().cloned();
    let reboot = async move {
        match ota {
            Some(h) => h.reboot_required().await,
            None => std::future::pending().await,
        }
    };
    let exit = tokio::select! {
        () = crate::shutdown_signal() => GatewayExit::Signal,
        () = reboot => GatewayExit::Reboot,
    };
    if exit == GatewayExit::Reboot {
        tracing::warn!(
            code = ota::REBOOT_EXIT_CODE,
            "firmware update: restarting into the new state (start `iiot gateway` again; systemd Restart=always does)"
        );
    }
    let counters = gw.counters.clone();
    gw.gateway.shutdown(&cancel, Duration::from_secs(5)).await;
    let produced = counters.samples.load(Ordering::Relaxed);
    tracing::info!(produced, "gateway stopped");
    Ok(exit)
}
