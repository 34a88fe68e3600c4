//! The poller: one connection or bus, its plan, retries, quality and writes.

mod breaker;
mod command;
mod io;
mod link;
mod source;
mod write;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use iiot_core::source::{ReportFilter, ReportPolicy};
use iiot_core::types::{Sample, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub use breaker::BreakerConfig;
pub use source::ModbusSource;
use write::WriteCmd;
pub use write::{WriteError, WriteOutcome};

use super::error::ReadFailure;
use super::map::RegisterMap;
use super::plan::{Plan, PlanConfig};
use super::transport::Connector;

/// Poller settings.
///
/// ## Defaults
/// Timeout 1000 ms per request, 3 retries with 50 ms backoff, the default
/// [`PlanConfig`] and [`BreakerConfig`], a reading channel of 1024 and a write queue of 16.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PollerConfig {
    /// Time one request may take (`timeout = "1s"`).
    #[serde(with = "iiot_core::duration::human")]
    pub timeout: Duration,
    /// Retries after a timeout or a connection error (not after an exception).
    pub retries: u32,
    /// Wait before each retry (`retry_backoff = "50ms"`).
    #[serde(with = "iiot_core::duration::human")]
    pub retry_backoff: Duration,
    /// Request coalescing.
    pub plan: PlanConfig,
    /// Per-unit circuit breaker.
    pub breaker: BreakerConfig,
    /// Capacity of the reading channel.
    pub channel_capacity: NonZeroUsize,
    /// Capacity of the write queue.
    pub write_queue: NonZeroUsize,
}

impl Default for PollerConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(1),
            retries: 3,
            retry_backoff: Duration::from_millis(50),
            plan: PlanConfig::default(),
            breaker: BreakerConfig::default(),
            channel_capacity: NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN),
            write_queue: NonZeroUsize::new(16).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

impl PollerConfig {
    /// Sets the request timeout.
    pub fn set_timeout(&mut self, t: Duration) -> &mut Self {
        self.timeout = t;
        self
    }
    /// Sets the retry count.
    pub fn set_retries(&mut self, n: u32) -> &mut Self {
        self.retries = n;
        self
    }
    /// Sets the retry backoff.
    pub fn set_retry_backoff(&mut self, d: Duration) -> &mut Self {
        self.retry_backoff = d;
        self
    }
    /// Sets the planner config.
    pub fn set_plan(&mut self, p: PlanConfig) -> &mut Self {
        self.plan = p;
        self
    }
    /// Sets the breaker config.
    pub fn set_breaker(&mut self, b: BreakerConfig) -> &mut Self {
        self.breaker = b;
        self
    }
}

/// One reading: a core sample, and why it is Bad when it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Tag, value (absent when Bad), quality and source time.
    pub sample: Sample,
    /// The typed reason of a Bad quality; `None` when Good.
    pub failure: Option<ReadFailure>,
}

impl From<Reading> for Sample {
    fn from(r: Reading) -> Self {
        r.sample
    }
}

/// Counters of a poller.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    requests: AtomicU64,
    cycles: AtomicU64,
}

/// Poll statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PollStats {
    /// Read requests sent (every attempt counts).
    pub requests: u64,
    /// Poll cycles completed.
    pub cycles: u64,
}

/// A cloneable handle to a running [`Poller`]: writes and statistics.
#[derive(Debug, Clone)]
pub struct PollerHandle {
    map: Arc<RegisterMap>,
    tx: mpsc::Sender<WriteCmd>,
    counters: Arc<Counters>,
}

impl PollerHandle {
    /// Writes `value` to the tag `name` through the map's type and order rules: FC5 for a
    /// coil, FC6 for a one-register value, FC16 for wider values, or FC15/FC16 when the
    /// tag says `write_function = "multiple"`. A `bit` tag is read, modified and written
    /// back (not atomic against other masters). Never retried.
    ///
    /// # Errors
    /// [`WriteError`] when the tag is unknown or read-only, the value does not encode, the
    /// outcome is unknown (timeout, connection) or the poller stopped.
    ///
    /// # Cancel safety
    /// Dropping the future after the command was queued does not stop the write.
    pub async fn write(&self, name: &str, value: &Value) -> Result<WriteOutcome, WriteError> {
        let (cmd, rx) = WriteCmd::new(write::op_for(&self.map, name, value)?);
        self.tx.send(cmd).await.map_err(|_| WriteError::Closed)?;
        rx.await.map_err(|_| WriteError::Closed)?
    }

    /// Like [`PollerHandle::write`] but fails with [`WriteError::Full`] instead of waiting
    /// for room in the queue; still waits for the device's answer.
    ///
    /// # Errors
    /// As [`PollerHandle::write`], plus [`WriteError::Full`].
    pub async fn try_write(&self, name: &str, value: &Value) -> Result<WriteOutcome, WriteError> {
        let (cmd, rx) = WriteCmd::new(write::op_for(&self.map, name, value)?);
        self.tx.try_send(cmd).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => WriteError::Full,
            mpsc::error::TrySendError::Closed(_) => WriteError::Closed,
        })?;
        rx.await.map_err(|_| WriteError::Closed)?
    }

    /// Writes several tags, merging tags of one unit that sit at adjacent addresses into
    /// one FC15 (coils, up to 1968) or FC16 (registers, up to 123) request. Every value is
    /// encoded before anything is sent. Returns one result per input, in input order;
    /// tags written by the same request share its result.
    ///
    /// # Errors
    /// The first [`WriteError`] of encoding (unknown tag, read-only, bad value), before any
    /// I/O. Per-request failures are in the returned results.
    ///
    /// # Cancel safety
    /// As [`PollerHandle::write`].
    pub async fn write_many(
        &self,
        writes: &[(&str, Value)],
    ) -> Result<Vec<Result<WriteOutcome, WriteError>>, WriteError> {
        let groups = write::group(&self.map, writes)?;
        let mut results: Vec<Result<WriteOutcome, WriteError>> =
            vec![Err(WriteError::Closed); writes.len()];
        for (op, members) in groups {
            let (cmd, rx) = WriteCmd::new(op);
            let r = match self.tx.send(cmd).await {
                Ok(()) => rx.await.unwrap_or(Err(WriteError::Closed)),
                Err(_) => Err(WriteError::Closed),
            };
            for m in members {
                if let Some(slot) = results.get_mut(m) {
                    slot.clone_from(&r);
                }
            }
        }
        Ok(results)
    }

    /// Requests sent and cycles completed so far.
    pub fn stats(&self) -> PollStats {
        PollStats {
            requests: self.counters.requests.load(Ordering::Relaxed),
            cycles: self.counters.cycles.load(Ordering::Relaxed),
        }
    }

    /// The map this poller polls.
    pub fn map(&self) -> &RegisterMap {
        &self.map
    }
}

/// Polls one connection (TCP) or bus (RTU) per its plan. Create with [`Poller::new`],
/// drive with [`Poller::run`].
pub struct Poller<C> {
    cfg: PollerConfig,
    map: Arc<RegisterMap>,
    plan: Plan,
    connector: C,
    ctx: Option<tokio_modbus::client::Context>,
    out: mpsc::Sender<Reading>,
    cmds: mpsc::Receiver<WriteCmd>,
    filters: Vec<ReportFilter>,
    breakers: std::collections::BTreeMap<u8, breaker::Breaker>,
    counters: Arc<Counters>,
    cycle: u64,
    link: link::LinkState,
    link_rx: tokio::sync::watch::Receiver<Option<iiot_core::source::Link>>,
}

impl<C> std::fmt::Debug for Poller<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("cfg", &self.cfg)
            .field("requests", &self.plan.requests().len())
            .finish_non_exhaustive()
    }
}

impl<C: Connector> Poller<C> {
    /// A poller for `map` over `connector`: its handle, the poller to
    /// [`run`](Poller::run), and the bounded channel of its readings (handle,
    /// driver, then what the driver produces, like every driver of iiot-rs).
    pub fn new(
        cfg: PollerConfig,
        map: RegisterMap,
        connector: C,
    ) -> (PollerHandle, Self, mpsc::Receiver<Reading>) {
        let map = Arc::new(map);
        let (out, readings) = mpsc::channel(cfg.channel_capacity.get());
        let (tx, cmds) = mpsc::channel(cfg.write_queue.get());
        let counters = Arc::new(Counters::default());
        let filters = map
            .tags()
            .iter()
            .map(|t| {
                ReportFilter::new(ReportPolicy {
                    deadband: t.deadband,
                    max_interval: t.max_report_interval,
                })
            })
            .collect();
        let plan = Plan::new(&map, cfg.plan);
        let (link, link_rx) = link::LinkState::new(connector.peer());
        let handle = PollerHandle {
            map: map.clone(),
            tx,
            counters: counters.clone(),
        };
        let poller = Self {
            cfg,
            map,
            plan,
            connector,
            ctx: None,
            out,
            cmds,
            filters,
            breakers: std::collections::BTreeMap::new(),
            counters,
            cycle: 0,
            link,
            link_rx,
        };
        (handle, poller, readings)
    }

    /// The connection to the peer as it changes: `None` before the first attempt,
    /// then [`Link::Up`](iiot_core::source::Link::Up) or `Down` with the cause.
    pub fn link(&self) -> tokio::sync::watch::Receiver<Option<iiot_core::source::Link>> {
        self.link_rx.clone()
    }

    /// The current plan (it changes when a device refuses a coalesced read).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }
}
