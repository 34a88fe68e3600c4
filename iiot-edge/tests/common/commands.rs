//! A gateway with commands for tests: a channel inbox, a counting handler, a
//! transport that hands every ack it forwards to the test.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iiot_core::codec::{Limits, protobuf};
use iiot_core::command::{Action, ActionKind, CommandHandler, HandlerError, Target, ValueKind};
use iiot_core::publish::{ConfirmedPublish, OutboundMessage, PublishError};
use iiot_core::types::{
    Command, CommandAck, Constraints, DeviceId, MessageId, Operation, TagPath, Timestamp, Value,
};
use iiot_edge::commands::{ChannelInbox, CommandConfig, CommandSender, Ledger, LedgerConfig};
use iiot_edge::outbox::{Outbox, OutboxConfig, WhenFull};
use iiot_edge::runtime::{Gateway, GatewayBuilder};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::gateway::path;

/// Writable targets of the test handler: `t0` … `t3` (numbers), `flag` (bool) with
/// the action `reset`.
pub fn target(name: &str) -> TagPath {
    TagPath::new(name).unwrap()
}

/// What the handler does.
#[derive(Clone, Default)]
pub struct Handler {
    /// Every call, in order.
    pub calls: Arc<Mutex<Vec<Action>>>,
    /// When set, each call waits for a permit.
    pub gate: Option<Arc<Semaphore>>,
    /// Values whose write fails.
    pub fail_on: Option<f64>,
}

impl CommandHandler for Handler {
    fn target(&self, tag: &TagPath) -> Option<Target> {
        match tag.as_str() {
            "t0" | "t1" | "t2" | "t3" => Some(Target::writable(ValueKind::Number)),
            "flag" => Some(Target::writable(ValueKind::Bool).with_action("reset")),
            _ => None,
        }
    }

    async fn execute(&self, action: Action) -> Result<Option<Value>, HandlerError> {
        self.calls.lock().unwrap().push(action.clone());
        if let Some(g) = &self.gate {
            g.acquire().await.unwrap().forget();
        }
        match action.kind {
            ActionKind::Write(v) => {
                if self.fail_on.is_some() && v.as_f64() == self.fail_on {
                    return Err(HandlerError::failed("no answer from the PLC"));
                }
                Ok(Some(v))
            }
            ActionKind::Invoke(_) => Ok(None),
        }
    }
}

/// A transport that confirms everything and hands each command ack to the test.
#[derive(Clone)]
pub struct AckTap(pub mpsc::UnboundedSender<CommandAck>);

impl ConfirmedPublish for AckTap {
    async fn publish_confirmed(&self, m: OutboundMessage) -> Result<(), PublishError> {
        if m.topic.ends_with("/ack") {
            let a = protobuf::decode_command_ack(&m.payload, &Limits::default()).unwrap();
            let _ = self.0.send(a);
        }
        Ok(())
    }
}

/// A running gateway with commands.
pub struct Rig {
    pub gateway: Gateway,
    pub cancel: CancellationToken,
    pub sender: CommandSender,
    pub acks: mpsc::UnboundedReceiver<CommandAck>,
    pub ledger: Ledger,
}

/// Opens the stores under `dir` and starts a gateway with the test handler.
pub async fn rig(dir: &Path, handler: Handler, config: CommandConfig, ledger: LedgerConfig) -> Rig {
    rig_with(dir, handler, config, ledger).await
}

/// As [`rig`], with any handler.
pub async fn rig_with<H: CommandHandler>(
    dir: &Path,
    handler: H,
    config: CommandConfig,
    ledger: LedgerConfig,
) -> Rig {
    let device = DeviceId::new("dev-1").unwrap();
    let telemetry = Outbox::open(dir.join("outbox"), device.clone(), OutboxConfig::default())
        .await
        .unwrap();
    let mut cc = OutboxConfig::default();
    cc.set_when_full(WhenFull::Block);
    let control = Outbox::open(dir.join("control"), device, cc).await.unwrap();
    let ledger = Ledger::open(dir.join("ledger"), ledger).unwrap();
    let (tx, acks) = mpsc::unbounded_channel();
    let (sender, inbox) = ChannelInbox::new(64);
    let cancel = CancellationToken::new();
    let gateway = GatewayBuilder::new(path(), telemetry, AckTap(tx))
        .control_lane(control, iiot_edge::forwarder::ForwarderConfig::default())
        .commands(inbox, ledger.clone(), handler, config)
        .unwrap()
        .start(&cancel);
    Rig {
        gateway,
        cancel,
        sender,
        acks,
        ledger,
    }
}

impl Rig {
    /// The next ack (at most 10 s).
    pub async fn ack(&mut self) -> CommandAck {
        tokio::time::timeout(Duration::from_secs(10), self.acks.recv())
            .await
            .expect("no ack within 10 s")
            .expect("transport gone")
    }

    /// Delivers `c` on its topic and waits for the executor's acknowledgement.
    pub async fn send(&self, c: &Command) {
        self.send_raw(
            &path().command(c.id).to_string(),
            protobuf::encode_command(c),
            false,
        )
        .await;
    }

    /// Delivers raw bytes.
    pub async fn send_raw(&self, topic: &str, payload: Vec<u8>, retain: bool) {
        self.sender
            .deliver(topic.to_owned(), payload, retain)
            .await
            .expect("executor stopped");
    }

    /// Stops the gateway; returns the acks it forwarded that the test did not take.
    pub async fn stop(mut self) -> Vec<CommandAck> {
        self.gateway
            .shutdown(&self.cancel, Duration::from_secs(5))
            .await;
        let mut left = Vec::new();
        while let Ok(a) = self.acks.try_recv() {
            left.push(a);
        }
        left
    }
}

/// A command for the test device: set `target` to `v`, issued `age` ago, valid for
/// `ttl` from issue.
pub fn command(n: u128, target_name: &str, v: f64, age: Duration, ttl: Duration) -> Command {
    let issued = Timestamp::now().saturating_sub(age);
    Command {
        id: MessageId::from_parts(issued.unix_millis() as u64, n),
        device_id: DeviceId::new("dev-1").unwrap(),
        action: "write".into(),
        target: target(target_name),
        op: Operation::Set(Value::Double(v)),
        issued_at: issued,
        expires_at: issued.saturating_add(ttl),
        issuer: "test".into(),
        reason: "test".into(),
        constraints: Constraints::default(),
    }
}
