//! The demo's operator: commands to the gateway's PLC through the broker, and their
//! acks counted.
//!
//! The script sends four: a setpoint delivered twice (it must act once, the second
//! ack a duplicate of the first), one already expired when it arrives, one above its
//! maximum, and one published during the broker outage that runs after the
//! reconnect while still valid. The PLC's own count of write requests must equal
//! the commands that completed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use iiot_core::codec::{Limits, protobuf};
use iiot_core::publish::QoS;
use iiot_core::topic::UnsPath;
use iiot_core::types::{
    CommandAck, CommandState, Constraints, MessageId, Operation, TagPath, Timestamp, Value,
};
use iiot_ingest::commands::{CommandIssuer, CommandRequest};
use iiot_protocols::mqtt::{MqttConfig, Session, SessionHandle};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::error::AppError;

/// The tag the demo's commands write.
pub const SETPOINT: &str = "pump1/speed_setpoint";

/// What became of the demo's commands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommandOutcomes {
    /// Commands sent (each id once, however often it was delivered).
    pub sent: u64,
    /// Completed.
    pub completed: u64,
    /// Acks marked duplicate (a re-delivered id answered, not run again).
    pub duplicate_acks: u64,
    /// Expired on arrival.
    pub expired: u64,
    /// Rejected by a constraint.
    pub rejected: u64,
    /// Sent but no final ack came.
    pub unanswered: u64,
    /// Write requests the PLC served.
    pub plc_writes: u64,
    /// PLC writes beyond the completed commands (a command that acted twice).
    pub double_executions: u64,
}

type Acks = Arc<(Mutex<HashMap<MessageId, Vec<CommandAck>>>, Notify)>;

/// A platform client that issues commands and collects their acks.
pub struct Operator {
    path: UnsPath,
    issuer: CommandIssuer<SessionHandle>,
    acks: Acks,
    /// Ids sent and how many acks each must get.
    expected: Vec<(MessageId, usize)>,
    stop: CancellationToken,
}

impl Operator {
    /// Connects to `broker_url` and subscribes to the acks of `path`'s device.
    ///
    /// # Errors
    /// [`AppError::Mqtt`] or [`AppError::Subscribe`].
    pub async fn start(broker_url: &str, path: &UnsPath) -> Result<Self, AppError> {
        let mut cfg = MqttConfig::platform(broker_url, "iiot-demo-operator");
        cfg.set_clean_session(true);
        let (handle, session, mut inbound) = Session::new(&cfg)?;
        let stop = CancellationToken::new();
        tokio::spawn(session.run(stop.clone()));
        handle
            .subscribe(format!("{path}/commands/+/ack"), QoS::AtLeastOnce)
            .await?;
        let acks: Acks = Arc::default();
        let sink = acks.clone();
        tokio::spawn(async move {
            while let Some(m) = inbound.recv().await {
                if let Ok(a) = protobuf::decode_command_ack(&m.payload, &Limits::default()) {
                    sink.0
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .entry(a.command_id)
                        .or_default()
                        .push(a);
                    sink.1.notify_waiters();
                }
            }
        });
        Ok(Self {
            path: path.clone(),
            issuer: CommandIssuer::new(handle, "demo-operator"),
            acks,
            expected: Vec::new(),
            stop,
        })
    }

    fn request(&self, value: f64, ttl: Duration) -> Result<CommandRequest, AppError> {
        let tag = TagPath::new(SETPOINT).map_err(|e| AppError::Usage(e.to_string()))?;
        let mut r = CommandRequest::new(
            self.path.clone(),
            tag,
            Operation::Set(Value::Double(value)),
            ttl,
        );
        r.set_constraints(Constraints {
            min: Some(0.0),
            max: Some(100.0),
            ..Constraints::default()
        })
        .set_reason("iiot demo");
        Ok(r)
    }

    /// Sends a setpoint of `value`, published `times` times with the same id.
    ///
    /// # Errors
    /// [`AppError::Issue`] when the broker does not take it.
    pub async fn setpoint(
        &mut self,
        value: f64,
        ttl: Duration,
        times: usize,
    ) -> Result<MessageId, AppError> {
        let command = self
            .issuer
            .build(&self.request(value, ttl)?, Timestamp::now())?;
        let id = command.id;
        for _ in 0..times {
            self.issuer
                .publish(&self.path, command.clone(), ttl)
                .await?;
        }
        self.expected.push((id, times));
        Ok(id)
    }

    /// Sends a setpoint whose validity ended before it was sent (the gateway must
    /// refuse it as expired; the broker keeps it, its message expiry is longer).
    ///
    /// # Errors
    /// [`AppError::Issue`].
    pub async fn stale_setpoint(&mut self, value: f64) -> Result<MessageId, AppError> {
        let ago = Timestamp::now().saturating_sub(Duration::from_secs(20));
        let command = self
            .issuer
            .build(&self.request(value, Duration::from_secs(10))?, ago)?;
        let command = self
            .issuer
            .publish(&self.path, command, Duration::from_secs(30))
            .await?;
        self.expected.push((command.id, 1));
        Ok(command.id)
    }

    /// Waits (at most `timeout`) until every command sent has all its acks with a
    /// final state, and counts the outcomes with the PLC's write count.
    pub async fn outcomes(
        &self,
        timeout: Duration,
        plc_writes: impl Fn() -> u64,
    ) -> CommandOutcomes {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.acks.1.notified();
            if self.all_answered() || tokio::time::Instant::now() >= deadline {
                break;
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
        let acks = self.acks.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut o = CommandOutcomes {
            sent: self.expected.len() as u64,
            plc_writes: plc_writes(),
            ..CommandOutcomes::default()
        };
        for (id, _) in &self.expected {
            let mine = acks.get(id).map(Vec::as_slice).unwrap_or_default();
            o.duplicate_acks += mine.iter().filter(|a| a.duplicate).count() as u64;
            match mine.iter().find(|a| a.state.is_terminal()).map(|a| a.state) {
                Some(CommandState::Completed) => o.completed += 1,
                Some(CommandState::Expired) => o.expired += 1,
                Some(_) => o.rejected += 1,
                None => o.unanswered += 1,
            }
        }
        o.double_executions = o.plc_writes.saturating_sub(o.completed);
        o
    }

    fn all_answered(&self) -> bool {
        let acks = self.acks.0.lock().unwrap_or_else(PoisonError::into_inner);
        self.expected.iter().all(|(id, n)| {
            acks.get(id)
                .is_some_and(|v| v.iter().filter(|a| a.state.is_terminal()).count() >= *n)
        })
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
