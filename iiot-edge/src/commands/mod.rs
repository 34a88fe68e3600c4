//! Commands down to the device: a durable ledger and an executor that acts **at
//! most once, in order, never after expiry**.
//!
//! A command moves something physical. Delivered twice it must act once, delivered
//! late it must not act at all, and a crash in the middle must not make it act
//! again. The [`Executor`] sits between a transport ([`Inbox`], e.g. the MQTT
//! session in manual-ack mode) and what acts ([`CommandHandler`], e.g. a Modbus
//! poller's writes), with a [`Ledger`] on disk:
//!
//! 1. **Receipt.** A delivery whose topic carries no command id is a dead letter
//!    (counted, logged, acknowledged). Otherwise the id is looked up: an id seen
//!    before never runs again; a finished one is answered with its stored ack
//!    marked `duplicate`, one still waiting or running gets its duplicate ack when
//!    it ends. A new id is decoded and judged at once for what does not depend on
//!    order (payload too large or malformed, retained, another device's, issued
//!    before the ledger's window, queue full): each is a Rejected ack with its
//!    [`AckReason`]. Otherwise it is recorded `Delivered`. Only **after the ledger
//!    wrote it durably** is the delivery acknowledged to the transport (for MQTT
//!    its PUBACK): a gateway that crashes before that gets the command again.
//! 2. **Order.** One command runs at a time per device. MQTT orders messages per
//!    topic only and every command has its own topic, so arrival order is not
//!    issue order: the commands waiting for one target run in issue order
//!    (`issued_at`, then id), and a command older than the last one started on its
//!    target is rejected as `superseded`, never run after its successor. Commands
//!    for different targets run in arrival order.
//! 3. **Checks**, right before it runs, on the device clock: expiry (strict: the
//!    clock-skew allowance never lengthens a TTL), `issued_at` not later than now
//!    plus the allowed skew, target known, value type (or named action supported),
//!    a relative command ([`Operation::Add`](iiot_core::types::Operation::Add))
//!    resolved against the target's latest Good value, min/max of the absolute
//!    value, rate of change, every interlock, and the per-device rate limit. A
//!    value the checks read must have Good quality and be younger than
//!    `max_value_age` ([`LatestValues`], filled by the runtime from every reading).
//! 4. **Execution.** `Executing` is on disk before the handler is called. The call
//!    runs in its own task under `handler_timeout`: an error, a panic or a timeout
//!    is `Failed` (outcome unknown, never retried).
//! 5. **Outcome.** The final state and its ack are written durably, then the ack
//!    goes to the runtime's control lane ([`ControlLane`]): durable like telemetry,
//!    its own sequence, never behind a telemetry backlog.
//!
//! **After a crash** a command found `Executing` is acknowledged `Interrupted`
//! (outcome unknown) and is never run again: at most once for physical effects. A
//! command found `Delivered` is queued again (its checks run then, so an expired
//! one expires). A final ack that had not reached the control lane is sent.
//!
//! **Pruning.** Finished entries are kept for `retention` (default 7 days) and up
//! to `max_entries` (default 10 000). The newest `issued_at` ever pruned is kept as
//! a watermark: a command issued at or before it, or before `now - retention`, is
//! rejected `too_old`, so pruning never lets an id run twice.
//!
//! ## Metrics
//!
//! `iiot_gateway_commands_received_total`, `_duplicates_total`, `_executed_total`,
//! `_completed_total`, `_expired_total`, `_failed_total`, `_interrupted_total`,
//! `_rejected_total{reason}`, `iiot_gateway_command_dead_letters_total`,
//! `iiot_gateway_command_ack_failures_total`, and the histogram
//! `iiot_gateway_command_latency_seconds` (receipt to outcome).
//!
//! ```
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use iiot_core::codec::protobuf;
//! use iiot_core::command::{Action, CommandHandler, HandlerError, Target, ValueKind};
//! use iiot_core::topic::UnsPath;
//! use iiot_core::types::{Command, CommandState, Constraints, DeviceId, MessageId, Operation, TagPath, Timestamp, Value};
//! use iiot_edge::commands::{ChannelInbox, CommandConfig, Ledger, LedgerConfig};
//! use iiot_edge::outbox::{Outbox, OutboxConfig};
//! use iiot_edge::runtime::GatewayBuilder;
//! # use iiot_core::publish::{ConfirmedPublish, OutboundMessage, PublishError};
//! # #[derive(Clone)] struct Null;
//! # impl ConfirmedPublish for Null {
//! #     async fn publish_confirmed(&self, _m: OutboundMessage) -> Result<(), PublishError> { Ok(()) }
//! # }
//! use tokio_util::sync::CancellationToken;
//!
//! /// Acts on one setpoint.
//! struct Setpoint;
//! impl CommandHandler for Setpoint {
//!     fn target(&self, tag: &TagPath) -> Option<Target> {
//!         (tag.as_str() == "pump1/speed").then(|| Target::writable(ValueKind::Number))
//!     }
//!     async fn execute(&self, _a: Action) -> Result<Option<Value>, HandlerError> {
//!         Ok(None)
//!     }
//! }
//!
//! let dir = tempfile::tempdir()?;
//! let device = DeviceId::new("plc-01")?;
//! let path = UnsPath::new("acme", "plant1", "area1", "line1", "plc", device.clone())?;
//! let telemetry = Outbox::open(dir.path().join("outbox"), device.clone(), OutboxConfig::default()).await?;
//! let control = Outbox::open(dir.path().join("control"), device.clone(), OutboxConfig::default()).await?;
//! let ledger = Ledger::open(dir.path().join("ledger"), LedgerConfig::default())?;
//! let (commands, inbox) = ChannelInbox::new(16);
//! let cancel = CancellationToken::new();
//! let gateway = GatewayBuilder::new(path.clone(), telemetry, Null)
//!     .control_lane(control, Default::default())
//!     .commands(inbox, ledger.clone(), Setpoint, CommandConfig::default())?
//!     .start(&cancel);
//!
//! let now = Timestamp::now();
//! let c = Command {
//!     id: MessageId::generate(),
//!     device_id: device,
//!     action: "write".into(),
//!     target: TagPath::new("pump1/speed")?,
//!     op: Operation::Set(Value::Double(42.0)),
//!     issued_at: now,
//!     expires_at: now.saturating_add(std::time::Duration::from_secs(30)),
//!     issuer: "doc".into(),
//!     reason: "example".into(),
//!     constraints: Constraints::default(),
//! };
//! // Acknowledged (to the transport) once the ledger holds it.
//! commands.deliver(path.command(c.id).to_string(), protobuf::encode_command(&c), false).await?;
//! # let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
//! while ledger.state_of(c.id)? != Some(CommandState::Completed) {
//! #   assert!(std::time::Instant::now() < deadline, "the command never completed");
//!     tokio::task::yield_now().await;
//! }
//! gateway.shutdown(&cancel, std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
//! ```
//!
//! [`CommandHandler`]: iiot_core::command::CommandHandler
//! [`AckReason`]: iiot_core::types::AckReason
//! [`ControlLane`]: crate::runtime::ControlLane
//! [`LatestValues`]: crate::runtime::LatestValues

mod check;
mod executor;
mod ledger;

use std::time::Duration;

use bytes::Bytes;
use iiot_core::command::{Acknowledge, Delivery, Inbox};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

pub use executor::{CommandCounters, Executor, ExecutorHandle};
pub use ledger::{Ledger, LedgerConfig, LedgerError, LedgerStats};

/// At most `commands` handler calls per `per` (a sliding window).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Calls allowed in the window.
    pub commands: u32,
    /// The window.
    #[serde(with = "iiot_core::duration::human")]
    pub per: Duration,
}

/// How the executor checks and runs commands.
///
/// ## Defaults
/// | field | default |
/// |---|---|
/// | `clock_skew` | 5 s: `issued_at` may lie this far in the future of the device clock |
/// | `max_value_age` | 10 s: older readings do not satisfy an interlock, rate or relative check |
/// | `handler_timeout` | 10 s per handler call |
/// | `max_pending` | 64 commands waiting; more are rejected `queue_full` |
/// | `rate_limit` | 20 commands per second |
/// | `max_payload_bytes` | 64 KiB per command |
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommandConfig {
    /// How far `issued_at` may lie in the future of the device clock.
    #[serde(with = "iiot_core::duration::human")]
    pub clock_skew: Duration,
    /// The oldest reading an interlock, rate or relative check accepts.
    #[serde(with = "iiot_core::duration::human")]
    pub max_value_age: Duration,
    /// How long one handler call may take.
    #[serde(with = "iiot_core::duration::human")]
    pub handler_timeout: Duration,
    /// Commands waiting to run at most.
    pub max_pending: usize,
    /// Handler calls per window; `None`: unlimited.
    pub rate_limit: Option<RateLimit>,
    /// Largest command payload.
    pub max_payload_bytes: usize,
}

impl Default for CommandConfig {
    fn default() -> Self {
        Self {
            clock_skew: Duration::from_secs(5),
            max_value_age: Duration::from_secs(10),
            handler_timeout: Duration::from_secs(10),
            max_pending: 64,
            rate_limit: Some(RateLimit {
                commands: 20,
                per: Duration::from_secs(1),
            }),
            max_payload_bytes: 64 * 1024,
        }
    }
}

/// An [`Inbox`] fed from code: commands that arrive some other way (a local HMI, a
/// test). Each delivery's acknowledgement is reported back to
/// [`CommandSender::deliver`].
#[derive(Debug)]
pub struct ChannelInbox {
    rx: mpsc::Receiver<Delivery<ChannelAck>>,
}

/// Feeds a [`ChannelInbox`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CommandSender {
    tx: mpsc::Sender<Delivery<ChannelAck>>,
}

/// The acknowledgement of one [`ChannelInbox`] delivery.
#[derive(Debug)]
pub struct ChannelAck(oneshot::Sender<()>);

impl Acknowledge for ChannelAck {
    async fn ack(self) {
        let _ = self.0.send(());
    }
}

/// The executor stopped before it acknowledged a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the command executor stopped before it acknowledged the delivery")]
pub struct NotAcknowledged;

impl ChannelInbox {
    /// An inbox holding up to `capacity` deliveries, and its sender.
    pub fn new(capacity: usize) -> (CommandSender, Self) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (CommandSender { tx }, Self { rx })
    }
}

impl Inbox for ChannelInbox {
    type Ack = ChannelAck;

    async fn recv(&mut self) -> Option<Delivery<ChannelAck>> {
        self.rx.recv().await
    }
}

impl CommandSender {
    /// Delivers `payload` on `topic` and waits until the executor acknowledged it
    /// (for a new command: recorded durably).
    ///
    /// # Errors
    /// [`NotAcknowledged`] when the executor stopped first.
    pub async fn deliver(
        &self,
        topic: impl Into<String>,
        payload: impl Into<Bytes>,
        retain: bool,
    ) -> Result<(), NotAcknowledged> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Delivery {
                topic: topic.into(),
                payload: payload.into(),
                retain,
                ack: Some(ChannelAck(tx)),
            })
            .await
            .map_err(|_| NotAcknowledged)?;
        rx.await.map_err(|_| NotAcknowledged)
    }
}
