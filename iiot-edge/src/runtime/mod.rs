//! The gateway runtime: sources → report by exception → batches → outbox →
//! forwarder, as a library.
//!
//! A gateway is a few lines: build its sources (a Modbus poller, an OPC-UA
//! subscription, your own [`Source`]), an [`Outbox`] and a transport (anything
//! that implements [`ConfirmedPublish`], e.g. the MQTT session of
//! `iiot-protocols`), and hand them to a [`GatewayBuilder`]. The runtime owns:
//!
//! - **report by exception**, the one deadband of the gateway: each source's
//!   [`SourceInfo`] gives the [`ReportPolicy`](iiot_core::source::ReportPolicy) of its tags, and a driver never
//!   filters itself (so a maximum report interval is never broken by a second
//!   filter);
//! - **batching** (`max_samples`, `max_delay`, [`BatchConfig`]), each batch
//!   stamped with the outbox's per-device sequence, a ULID message id and the
//!   gateway time, appended one at a time and counted once durable;
//! - **forwarding** through the [`Forwarder`], data-loss records first
//!   (Protobuf, on the device's `telemetry/data-loss` topic);
//! - a **control lane** ([`GatewayBuilder::control_lane`], [`ControlLane`]) for
//!   command acks and OTA statuses: its own outbox, sequence and forwarder, so
//!   acks never look like telemetry gaps, are never dropped for telemetry's room
//!   and never wait behind a telemetry backlog;
//! - **shutdown**: [`Gateway::shutdown`] stops the sources, appends what they
//!   produced, lets the forwarder drain for a while, cancels the tasks it owns and
//!   closes the outbox.
//!
//! iiot-edge knows no driver and no transport: sources and publisher come in
//! through core's traits.
//!
//! ```
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use iiot_core::publish::{ConfirmedPublish, OutboundMessage, PublishError};
//! use iiot_core::source::{ReadingSink, ReportPolicy, Source, SourceInfo};
//! use iiot_core::topic::UnsPath;
//! use iiot_core::types::{DeviceId, Sample, TagPath, Timestamp};
//! use iiot_edge::outbox::{Outbox, OutboxConfig};
//! use iiot_edge::runtime::GatewayBuilder;
//! use tokio_util::sync::CancellationToken;
//!
//! /// A transport that confirms everything (a real gateway uses the MQTT session).
//! #[derive(Clone)]
//! struct Null;
//! impl ConfirmedPublish for Null {
//!     async fn publish_confirmed(&self, _m: OutboundMessage) -> Result<(), PublishError> {
//!         Ok(())
//!     }
//! }
//!
//! /// A source that reads one tag three times.
//! struct Three;
//! impl Source for Three {
//!     fn info(&self) -> SourceInfo {
//!         SourceInfo::new("three")
//!     }
//!     async fn run<K: ReadingSink>(self, mut sink: K, _stop: impl std::future::Future<Output = ()> + Send) {
//!         for v in [1.0, 2.0, 3.0] {
//!             let s = Sample::good(TagPath::new("tank/level").unwrap(), v, Timestamp::now());
//!             if sink.send(s).await.is_err() {
//!                 return;
//!             }
//!         }
//!     }
//! }
//!
//! let dir = tempfile::tempdir()?;
//! let device = DeviceId::new("plc-01")?;
//! let path = UnsPath::new("acme", "plant1", "area1", "line1", "plc", device.clone())?;
//! let outbox = Outbox::open(dir.path().join("outbox"), device, OutboxConfig::default()).await?;
//! let cancel = CancellationToken::new();
//! let mut gateway = GatewayBuilder::new(path, outbox, Null).source(Three).start(&cancel);
//! gateway.stop_producing().await;
//! assert_eq!(gateway.counters().samples.load(std::sync::atomic::Ordering::Relaxed), 3);
//! assert!(gateway.shutdown(&cancel, std::time::Duration::from_secs(5)).await);
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
//! ```

mod batcher;
mod control;
mod latest;
mod route;

use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use iiot_core::codec::{json, protobuf};
use iiot_core::publish::{ConfirmedPublish, OutboundMessage};
use iiot_core::source::{Link, ReadingSink, ReportFilter, SinkClosed, Source, SourceInfo};
use iiot_core::topic::UnsPath;
use iiot_core::types::{
    Backlog, BatchMetadata, DataLoss, DeviceId, Sample, SourceHealth, Status, TagPath, Timestamp,
};
use iiot_core::version::data_loss_topic;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use batcher::{BatchConfig, BatchObserver, RuntimeCounters};
pub use control::{ControlError, ControlLane};
pub use latest::{Latest, LatestValues};
pub use route::{InboxRouter, RoutedInbox};

use crate::commands::{CommandConfig, Executor, ExecutorHandle, Ledger};
use crate::forwarder::{Forwarder, ForwarderConfig, ForwarderHandle};
use crate::ota::{OtaAgent, OtaHandle, OtaSetup};
use crate::outbox::Outbox;
use batcher::{BatchTarget, batch_loop};

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;
type SourceStart = Box<dyn FnOnce(RbeSink, CancellationToken) -> Task + Send>;
type OwnedTask = Box<dyn FnOnce(CancellationToken) -> Task + Send>;
type ControlStart = Box<dyn FnOnce(Outbox, CancellationToken) -> Task + Send>;
type HeartbeatStart = Box<dyn FnOnce(Heartbeat, CancellationToken) -> Task + Send>;
type CommandsStart =
    Box<dyn FnOnce(ControlLane, LatestValues, CancellationToken) -> (ExecutorHandle, Task) + Send>;
type OtaStart = Box<dyn FnOnce(ControlLane, CancellationToken) -> (OtaHandle, Task) + Send>;

/// What the runtime knows of one source, shared by its sink and the heartbeat.
#[derive(Debug, Default)]
struct SourceState {
    /// Source time of the newest Good reading, Unix ns (0: none yet).
    last_good: AtomicI64,
    /// 0: not said, 1: up, 2: down.
    link: std::sync::atomic::AtomicU8,
}

impl SourceState {
    fn health(&self, name: &str) -> SourceHealth {
        let ns = self.last_good.load(Ordering::Relaxed);
        SourceHealth {
            name: name.to_owned(),
            last_good: (ns != 0)
                .then(|| Timestamp::from_unix_nanos(ns).ok())
                .flatten(),
            connected: match self.link.load(Ordering::Relaxed) {
                1 => Some(true),
                2 => Some(false),
                _ => None,
            },
        }
    }
}

/// The [`ReadingSink`] the runtime gives a source: report by exception per tag,
/// then the bounded queue to the batcher.
pub struct RbeSink {
    tx: mpsc::Sender<Sample>,
    filters: HashMap<TagPath, ReportFilter>,
    source: Arc<str>,
    state: Arc<SourceState>,
    /// Every reading, before report by exception (when commands need them).
    latest: Option<LatestValues>,
    // Metric handles, registered once (not a label string per reading).
    readings: metrics::Counter,
    bad: metrics::Counter,
    freshness: metrics::Gauge,
    connected: metrics::Gauge,
}

impl RbeSink {
    fn new(
        tx: mpsc::Sender<Sample>,
        info: &SourceInfo,
        state: Arc<SourceState>,
        latest: Option<LatestValues>,
    ) -> Self {
        let name = info.name.clone();
        Self {
            tx,
            state,
            latest,
            filters: info
                .tags
                .iter()
                .map(|(t, p)| (t.clone(), ReportFilter::new(*p)))
                .collect(),
            source: info.name.as_str().into(),
            readings: metrics::counter!("iiot_gateway_readings_total", "source" => name.clone()),
            bad: metrics::counter!("iiot_gateway_bad_readings_total", "source" => name.clone()),
            freshness: metrics::gauge!(
                "iiot_gateway_source_last_good_timestamp_seconds", "source" => name.clone()
            ),
            connected: metrics::gauge!("iiot_gateway_source_connected", "source" => name),
        }
    }
}

impl std::fmt::Debug for RbeSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RbeSink")
            .field("source", &self.source)
            .field("tags", &self.filters.len())
            .finish_non_exhaustive()
    }
}

impl ReadingSink for RbeSink {
    async fn send(&mut self, reading: Sample) -> Result<(), SinkClosed> {
        self.readings.increment(1);
        if let Some(l) = &self.latest {
            l.record(&reading);
        }
        if reading.quality().is_good() {
            let t = reading.source_time().unix_nanos();
            if t > self.state.last_good.fetch_max(t, Ordering::Relaxed) {
                self.freshness.set(t as f64 / 1e9);
            }
        } else {
            self.bad.increment(1);
        }
        let now = tokio::time::Instant::now().into_std();
        let report = match self.filters.get_mut(reading.tag()) {
            Some(f) => f.admit(reading.value(), reading.quality(), now),
            // Not declared: no deadband.
            None => true,
        };
        if !report {
            return Ok(());
        }
        self.tx.send(reading).await.map_err(|_| SinkClosed)
    }

    fn link(&mut self, link: Link) {
        let up = link.is_up();
        self.state
            .link
            .store(if up { 1 } else { 2 }, Ordering::Relaxed);
        self.connected.set(if up { 1.0 } else { 0.0 });
    }
}

/// Builds a [`Gateway`]; see the module docs.
///
/// ## Defaults
///
/// | setting | default |
/// |---|---|
/// | batches | [`BatchConfig::default`] (100 samples or 1 s) |
/// | metadata | none (firmware version, gateway id) |
/// | forwarder | [`ForwarderConfig::default`] |
/// | reading queue | 1024 readings between the sources and the batcher |
/// | observer | `()` |
pub struct GatewayBuilder<P, O = ()> {
    path: UnsPath,
    outbox: Outbox,
    publisher: P,
    observer: O,
    batch: BatchConfig,
    metadata: BatchMetadata,
    forwarder: ForwarderConfig,
    queue: NonZeroUsize,
    sources: Vec<(SourceInfo, SourceStart)>,
    tasks: Vec<OwnedTask>,
    control: Option<(Outbox, ControlStart)>,
    heartbeat: Option<HeartbeatStart>,
    commands: Option<CommandsStart>,
    ota: Option<OtaStart>,
}

impl<P, O> std::fmt::Debug for GatewayBuilder<P, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayBuilder")
            .field("path", &self.path.to_string())
            .field(
                "sources",
                &self.sources.iter().map(|s| &s.0.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl<P: ConfirmedPublish + 'static> GatewayBuilder<P, ()> {
    /// A gateway for the device at `path`, appending to `outbox` (the device's)
    /// and forwarding through `publisher`.
    pub fn new(path: UnsPath, outbox: Outbox, publisher: P) -> Self {
        Self {
            path,
            outbox,
            publisher,
            observer: (),
            batch: BatchConfig::default(),
            metadata: BatchMetadata::default(),
            forwarder: ForwarderConfig::default(),
            queue: NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN),
            sources: Vec::new(),
            tasks: Vec::new(),
            control: None,
            heartbeat: None,
            commands: None,
            ota: None,
        }
    }
}

impl<P: ConfirmedPublish + Clone + 'static, O: BatchObserver> GatewayBuilder<P, O> {
    /// A control lane beside telemetry: command acks, OTA statuses and other
    /// messages that must survive a crash go through `outbox` (the caller opens
    /// it, in its own directory, with `WhenFull::Block` so nothing is dropped for
    /// room) and a forwarder of their own. They take no numbers from the
    /// telemetry sequence (ingest would count each one as a telemetry gap), and
    /// they never queue behind a telemetry backlog or its replay pacing: at most
    /// the telemetry forwarder's in-flight window shares the transport's queue
    /// with them. (Holding telemetry until the control lane is empty would let one
    /// control message the broker refuses stop telemetry for good.) Publish
    /// through [`Gateway::control`].
    #[must_use]
    pub fn control_lane(mut self, outbox: Outbox, config: ForwarderConfig) -> Self {
        let publisher = self.publisher.clone();
        let path = self.path.clone();
        let start: ControlStart = Box::new(move |ob: Outbox, cancel: CancellationToken| -> Task {
            Box::pin(control::run_forwarder(ob, publisher, path, config, cancel))
        });
        self.control = Some((outbox, start));
        self
    }

    /// Publishes the device's retained `status` every `interval` while running:
    /// online, the batches' firmware version and gateway id, the outbox backlog
    /// (records, bytes, oldest age) and each source's last good read, in the
    /// JSON form of core's `Status` (the form the MQTT session's birth uses by
    /// default). A heartbeat the transport cannot confirm is skipped, not queued.
    #[must_use]
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        let publisher = self.publisher.clone();
        let start: HeartbeatStart =
            Box::new(move |hb: Heartbeat, cancel: CancellationToken| -> Task {
                Box::pin(hb.run(publisher, interval, cancel))
            });
        self.heartbeat = Some(start);
        self
    }
}

/// [`GatewayBuilder::commands`] was called before [`GatewayBuilder::control_lane`]:
/// command acks travel on the control lane, so it comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("commands need the control lane: call control_lane(...) before commands(...)")]
pub struct NoControlLane;

impl<P: ConfirmedPublish + 'static, O: BatchObserver> GatewayBuilder<P, O> {
    /// Takes commands from `inbox` (e.g. the MQTT session's manual-ack deliveries
    /// on the device's `commands/+`) and runs them through `handler` with the
    /// ledger, checks and order of [`crate::commands`]. The runtime keeps the latest
    /// reading of every tag for the checks, and the acks go on the control lane.
    ///
    /// # Errors
    /// [`NoControlLane`] when no control lane was configured yet.
    pub fn commands<I, H>(
        mut self,
        inbox: I,
        ledger: Ledger,
        handler: H,
        config: CommandConfig,
    ) -> Result<Self, NoControlLane>
    where
        I: iiot_core::command::Inbox,
        H: iiot_core::command::CommandHandler,
    {
        if self.control.is_none() {
            return Err(NoControlLane);
        }
        let path = self.path.clone();
        let start: CommandsStart = Box::new(move |control, latest, cancel| {
            let (handle, executor) = Executor::new(path, ledger, handler, control, latest, config);
            let task: Task = Box::pin(executor.run(inbox, cancel));
            (handle, task)
        });
        self.commands = Some(start);
        Ok(self)
    }

    /// Takes firmware manifests from `inbox` (e.g. the MQTT session's manual-ack
    /// deliveries on the device's `ota/notification`) and runs them through the
    /// OTA agent of [`crate::ota`]; its statuses go on the control lane. Observe
    /// it, and learn when it needs a reboot, through [`Gateway::ota`].
    ///
    /// # Errors
    /// [`NoControlLane`] when no control lane was configured yet.
    pub fn ota<I, B, F, H>(
        mut self,
        inbox: I,
        setup: OtaSetup<B, F, H>,
    ) -> Result<Self, NoControlLane>
    where
        I: iiot_core::command::Inbox,
        B: crate::ota::SlotBackend,
        F: iiot_core::ota::ImageFetch,
        H: crate::ota::HealthCheck,
    {
        if self.control.is_none() {
            return Err(NoControlLane);
        }
        let path = self.path.clone();
        let start: OtaStart = Box::new(move |control, cancel| {
            let (handle, agent) = OtaAgent::new(path, setup, control);
            let task: Task = Box::pin(agent.run(inbox, cancel));
            (handle, task)
        });
        self.ota = Some(start);
        Ok(self)
    }
}

/// What the heartbeat task reads.
struct Heartbeat {
    topic: String,
    device: DeviceId,
    metadata: BatchMetadata,
    outbox: Outbox,
    health: Vec<(String, Arc<SourceState>)>,
    start_time: Timestamp,
}

impl Heartbeat {
    fn status(&self) -> Status {
        let s = self.outbox.stats();
        let mut st = Status::birth(self.device.clone());
        st.firmware_version
            .clone_from(&self.metadata.firmware_version);
        st.gateway_id.clone_from(&self.metadata.gateway_id);
        st.start_time = Some(self.start_time);
        st.backlog = Some(Backlog {
            records: s.backlog_records,
            bytes: s.backlog_bytes,
            oldest_age: s.oldest_age,
        });
        st.sources = self
            .health
            .iter()
            .map(|(name, state)| state.health(name))
            .collect();
        st
    }

    async fn run<P: ConfirmedPublish>(
        self,
        publisher: P,
        interval: Duration,
        cancel: CancellationToken,
    ) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let msg = OutboundMessage::new(self.topic.clone(), json::encode_status(&self.status()))
                .with_retain(true);
            tokio::select! {
                () = cancel.cancelled() => return,
                r = publisher.publish_confirmed(msg) => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e.kind, "heartbeat not confirmed; skipped");
                    }
                }
            }
        }
    }
}

impl<P: ConfirmedPublish + 'static, O: BatchObserver> GatewayBuilder<P, O> {
    /// Adds a source. Its tags are reported by exception with the policies of
    /// its [`SourceInfo`].
    #[must_use]
    pub fn source<S: Source>(mut self, source: S) -> Self {
        let info = source.info();
        let start: SourceStart = Box::new(move |sink, stop: CancellationToken| {
            Box::pin(source.run(sink, stop.cancelled_owned()))
        });
        self.sources.push((info, start));
        self
    }

    /// How batches close.
    #[must_use]
    pub fn batch(mut self, config: BatchConfig) -> Self {
        self.batch = config;
        self
    }

    /// Firmware version and gateway id carried by every batch.
    #[must_use]
    pub fn metadata(mut self, metadata: BatchMetadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// The forwarder's settings.
    #[must_use]
    pub fn forwarder(mut self, config: ForwarderConfig) -> Self {
        self.forwarder = config;
        self
    }

    /// Readings waiting between the sources and the batcher at most; past that a
    /// source waits (back-pressure).
    #[must_use]
    pub fn reading_queue(mut self, capacity: NonZeroUsize) -> Self {
        self.queue = capacity;
        self
    }

    /// A task the gateway owns (the transport's driver, say): spawned at start,
    /// given the gateway's cancellation token, awaited by [`Gateway::join`].
    #[must_use]
    pub fn task<F>(mut self, task: impl FnOnce(CancellationToken) -> F + Send + 'static) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.push(Box::new(move |c| Box::pin(task(c))));
        self
    }

    /// Sees every durable batch before it is counted (see [`BatchObserver`]).
    #[must_use]
    pub fn observer<O2: BatchObserver>(self, observer: O2) -> GatewayBuilder<P, O2> {
        GatewayBuilder {
            path: self.path,
            outbox: self.outbox,
            publisher: self.publisher,
            observer,
            batch: self.batch,
            metadata: self.metadata,
            forwarder: self.forwarder,
            queue: self.queue,
            sources: self.sources,
            tasks: self.tasks,
            control: self.control,
            heartbeat: self.heartbeat,
            commands: self.commands,
            ota: self.ota,
        }
    }

    /// Spawns the forwarder, the owned tasks, the batcher and the sources; the
    /// sources stop with [`Gateway::stop_producing`] (or when `cancel` fires),
    /// everything else with `cancel`. Must be called within a tokio runtime.
    pub fn start(self, cancel: &CancellationToken) -> Gateway {
        let loss_topic = data_loss_topic(&self.path).to_string();
        let encode_loss = move |l: &DataLoss| {
            OutboundMessage::new(loss_topic.clone(), protobuf::encode_data_loss(l))
        };
        let (status, forwarder) = Forwarder::new(
            self.outbox.clone(),
            self.publisher,
            encode_loss,
            self.forwarder,
        );
        let mut tasks = Vec::new();
        let control = self.control.map(|(outbox, start)| {
            tasks.push(tokio::spawn(start(outbox.clone(), cancel.clone())));
            ControlLane::new(outbox)
        });
        let latest = self.commands.as_ref().map(|_| LatestValues::new());
        let commands = match (self.commands, &control, &latest) {
            (Some(start), Some(lane), Some(latest)) => {
                let (handle, task) = start(lane.clone(), latest.clone(), cancel.clone());
                tasks.push(tokio::spawn(task));
                Some(handle)
            }
            _ => None,
        };
        let ota = match (self.ota, &control) {
            (Some(start), Some(lane)) => {
                let (handle, task) = start(lane.clone(), cancel.clone());
                tasks.push(tokio::spawn(task));
                Some(handle)
            }
            _ => None,
        };
        let c = cancel.clone();
        tasks.push(tokio::spawn(async move {
            let exit = forwarder.run(c).await;
            tracing::info!(?exit, "forwarder stopped");
        }));
        for task in self.tasks {
            tasks.push(tokio::spawn(task(cancel.clone())));
        }
        let counters = Arc::new(RuntimeCounters::default());
        let metadata = self.metadata;
        let (tx, rx) = mpsc::channel(self.queue.get());
        let target = BatchTarget {
            outbox: self.outbox.clone(),
            topic: self.path.telemetry().to_string(),
            device: self.path.device_id().clone(),
            metadata: metadata.clone(),
            counters: counters.clone(),
            observer: self.observer,
        };
        let batcher = tokio::spawn(batch_loop(rx, target, self.batch));
        let stop_sources = cancel.child_token();
        let mut sources = Vec::new();
        let mut health = Vec::new();
        for (info, start) in self.sources {
            let state = Arc::new(SourceState::default());
            health.push((info.name.clone(), state.clone()));
            let sink = RbeSink::new(tx.clone(), &info, state, latest.clone());
            sources.push(tokio::spawn(start(sink, stop_sources.clone())));
        }
        drop(tx);
        if let Some(start) = self.heartbeat {
            let hb = Heartbeat {
                topic: self.path.status().to_string(),
                device: self.path.device_id().clone(),
                metadata: metadata.clone(),
                outbox: self.outbox.clone(),
                health,
                start_time: Timestamp::now(),
            };
            tasks.push(tokio::spawn(start(hb, cancel.clone())));
        }
        Gateway {
            outbox: self.outbox,
            control,
            commands,
            ota,
            latest,
            forwarder: status,
            counters,
            stop_sources,
            sources,
            batcher: Some(batcher),
            tasks,
        }
    }
}

/// A running gateway: observe it, stop it.
pub struct Gateway {
    outbox: Outbox,
    control: Option<ControlLane>,
    commands: Option<ExecutorHandle>,
    ota: Option<OtaHandle>,
    latest: Option<LatestValues>,
    forwarder: ForwarderHandle,
    counters: Arc<RuntimeCounters>,
    stop_sources: CancellationToken,
    sources: Vec<JoinHandle<()>>,
    batcher: Option<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("outbox", &self.outbox.stats())
            .field("forwarder", &self.forwarder.status())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// The outbox (backlog, loss counters).
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The control lane, when the builder set one up.
    pub fn control(&self) -> Option<&ControlLane> {
        self.control.as_ref()
    }

    /// The command executor's handle, when [`GatewayBuilder::commands`] set one up.
    pub fn commands(&self) -> Option<&ExecutorHandle> {
        self.commands.as_ref()
    }

    /// The OTA agent's handle, when [`GatewayBuilder::ota`] set one up.
    pub fn ota(&self) -> Option<&OtaHandle> {
        self.ota.as_ref()
    }

    /// The latest reading of every tag (kept when commands are set up).
    pub fn latest(&self) -> Option<&LatestValues> {
        self.latest.as_ref()
    }

    /// The forwarder's status.
    pub fn forwarder(&self) -> &ForwarderHandle {
        &self.forwarder
    }

    /// What was produced so far.
    pub fn counters(&self) -> &Arc<RuntimeCounters> {
        &self.counters
    }

    /// Stops the sources and waits until what they produced is appended (the
    /// batcher ends once every source returned).
    pub async fn stop_producing(&mut self) {
        self.stop_sources.cancel();
        for s in std::mem::take(&mut self.sources) {
            let _ = s.await;
        }
        if let Some(b) = self.batcher.take() {
            let _ = b.await;
        }
    }

    /// Waits until the forwarders delivered everything in the outbox and in the
    /// control lane's outbox (records and loss events), at most `timeout`; returns
    /// whether they did. Looks at the outboxes' counters every 50 ms.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let empty = |o: &Outbox| {
            let s = o.stats();
            s.backlog_records == 0 && s.pending_records == 0 && s.pending_losses == 0
        };
        loop {
            if empty(&self.outbox) && self.control.as_ref().is_none_or(|c| empty(c.outbox())) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the tasks the gateway owns (cancel them first), then closes the outbox.
    pub async fn join(mut self) {
        self.stop_producing().await;
        for t in self.tasks {
            let _ = t.await;
        }
        if let Some(c) = self.control {
            c.into_outbox().close().await;
        }
        self.outbox.close().await;
    }

    /// Stops the sources, drains the outbox and the control lane for at most
    /// `drain` (what remains is sent by the next run), cancels `cancel` and joins.
    /// Returns whether both were empty.
    pub async fn shutdown(mut self, cancel: &CancellationToken, drain: Duration) -> bool {
        self.stop_producing().await;
        let empty = self.drain(drain).await;
        if !empty {
            tracing::warn!(backlog = ?self.outbox.stats().backlog_records,
                control = ?self.control.as_ref().map(|c| c.outbox().stats().backlog_records),
                "outbox not empty at shutdown; the next run sends the rest");
        }
        cancel.cancel();
        self.join().await;
        empty
    }
}
