//! The issuer: builds a command, publishes it with QoS 1 and the message expiry
//! of its TTL, and returns it once the broker confirmed it.

use std::time::Duration;

use iiot_core::codec::protobuf;
use iiot_core::publish::{ConfirmedPublish, OutboundMessage, PublishError, QoS};
use iiot_core::topic::UnsPath;
use iiot_core::types::{
    Command, Constraints, MessageId, Operation, TagPath, Timestamp, ValidationError, WRITE,
};

/// What to command: a device, a target, an operation and a time to live.
///
/// ## Defaults
/// | field | default |
/// |---|---|
/// | `action` | [`WRITE`] (`write`); an [`Operation::Invoke`] needs the action's name |
/// | `constraints` | none |
/// | `issuer` | the [`CommandIssuer`]'s name |
/// | `reason` | empty |
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRequest {
    /// The device's UNS path: the command topic and the command's device id.
    pub path: UnsPath,
    /// The tag acted on.
    pub target: TagPath,
    /// Set, add or invoke.
    pub op: Operation,
    /// How long the command stays valid: `expires_at = issued_at + ttl`, and the
    /// MQTT message expiry (whole seconds, rounded up). Never zero.
    pub ttl: Duration,
    /// What to do: `write` for a set or an add, or the name of an action.
    pub action: String,
    /// Preconditions the device re-checks.
    pub constraints: Constraints,
    /// Who issues it; `None`: the issuer's name.
    pub issuer: Option<String>,
    /// Why.
    pub reason: String,
}

impl CommandRequest {
    /// A request with the defaults (see the table above).
    pub fn new(path: UnsPath, target: TagPath, op: Operation, ttl: Duration) -> Self {
        Self {
            path,
            target,
            op,
            ttl,
            action: WRITE.to_owned(),
            constraints: Constraints::default(),
            issuer: None,
            reason: String::new(),
        }
    }

    /// Sets the action (needed for an [`Operation::Invoke`]).
    pub fn set_action(&mut self, action: impl Into<String>) -> &mut Self {
        self.action = action.into();
        self
    }

    /// Sets the constraints.
    pub fn set_constraints(&mut self, constraints: Constraints) -> &mut Self {
        self.constraints = constraints;
        self
    }

    /// Sets who issues it (instead of the issuer's name).
    pub fn set_issuer(&mut self, issuer: impl Into<String>) -> &mut Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Sets why.
    pub fn set_reason(&mut self, reason: impl Into<String>) -> &mut Self {
        self.reason = reason.into();
        self
    }
}

/// Why a command was not issued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// The request's TTL is zero: the command would be expired when issued.
    #[error("command TTL is zero")]
    ZeroTtl,
    /// The command breaks a rule of the contract ([`Command::validate`]): no
    /// action, an invoke named `write`, a delta that is not a finite number,
    /// constraints that make no sense. Nothing was published.
    #[error("invalid command: {0}")]
    Invalid(#[source] ValidationError),
    /// The broker did not confirm the publish. The command is given back: it may
    /// or may not have reached the broker, and publishing the same command again
    /// (same id) is safe, since a device executes an id at most once.
    #[error("command {id} not confirmed by the broker: {source}", id = command.id)]
    Publish {
        /// The command that was built.
        command: Box<Command>,
        /// What went wrong, with the message given back.
        #[source]
        source: PublishError,
    },
}

/// Issues commands through a [`ConfirmedPublish`] transport (the MQTT core's
/// platform session, `iiot_protocols::mqtt::SessionHandle`, implements it).
///
/// Each command gets a fresh ULID, `issued_at` = now and `expires_at` = now +
/// TTL; it is validated, encoded as v1 Protobuf and published on
/// `{path}/commands/{id}` with QoS 1, `retain = false` (a retained command is
/// never executed) and an MQTT 5 message expiry of the TTL rounded up to whole
/// seconds (at least 1 s), so the broker drops it once it is stale.
/// [`issue`](Self::issue) returns once the broker confirmed it (PUBACK); the
/// device's ack then arrives on `{path}/commands/{id}/ack`, which the ingest
/// pipeline records in the commands table.
///
/// ```
/// use std::sync::Mutex;
/// use std::time::Duration;
///
/// use iiot_core::codec::{protobuf, Limits};
/// use iiot_core::publish::{ConfirmedPublish, OutboundMessage, PublishError, QoS};
/// use iiot_core::topic::UnsPath;
/// use iiot_core::types::{DeviceId, Operation, TagPath, Value};
/// use iiot_ingest::commands::{CommandIssuer, CommandRequest};
///
/// /// Confirms every message at once and keeps it.
/// #[derive(Default)]
/// struct Recorder(Mutex<Vec<OutboundMessage>>);
///
/// impl ConfirmedPublish for Recorder {
///     async fn publish_confirmed(&self, m: OutboundMessage) -> Result<(), PublishError> {
///         self.0.lock().unwrap().push(m);
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let issuer = CommandIssuer::new(Recorder::default(), "ops-console");
/// let path = UnsPath::new("acme", "plant1", "packaging", "line3", "plc", DeviceId::new("plc-01")?)?;
/// let mut request = CommandRequest::new(
///     path.clone(),
///     TagPath::new("tank1/setpoint")?,
///     Operation::Set(Value::Double(80.0)),
///     Duration::from_millis(1500),
/// );
/// request.set_reason("batch 42 recipe");
/// let command = issuer.issue(&request).await?;
///
/// let sent = issuer.publisher().0.lock().unwrap();
/// assert_eq!(sent[0].topic, path.command(command.id).to_string());
/// assert_eq!((sent[0].qos, sent[0].retain), (QoS::AtLeastOnce, false));
/// assert_eq!(sent[0].expiry, Some(Duration::from_secs(2)), "1.5 s rounds up");
/// assert_eq!(protobuf::decode_command(&sent[0].payload, &Limits::default())?, command);
/// assert_eq!(command.issuer, "ops-console");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct CommandIssuer<P: ConfirmedPublish> {
    publisher: P,
    issuer: String,
}

impl<P: ConfirmedPublish> CommandIssuer<P> {
    /// An issuer publishing through `publisher`, naming itself `issuer` in the
    /// commands it builds (unless a request names another).
    pub fn new(publisher: P, issuer: impl Into<String>) -> Self {
        Self {
            publisher,
            issuer: issuer.into(),
        }
    }

    /// The transport.
    pub fn publisher(&self) -> &P {
        &self.publisher
    }

    /// The issuer's name.
    pub fn name(&self) -> &str {
        &self.issuer
    }

    /// Builds the command for `request` as if issued at `now`, with a fresh id.
    /// Publishes nothing.
    ///
    /// # Errors
    /// [`IssueError::ZeroTtl`], [`IssueError::Invalid`].
    pub fn build(&self, request: &CommandRequest, now: Timestamp) -> Result<Command, IssueError> {
        if request.ttl.is_zero() {
            return Err(IssueError::ZeroTtl);
        }
        let command = Command {
            id: MessageId::generate(),
            device_id: request.path.device_id().clone(),
            action: request.action.clone(),
            target: request.target.clone(),
            op: request.op.clone(),
            issued_at: now,
            expires_at: now.saturating_add(request.ttl),
            issuer: request
                .issuer
                .clone()
                .unwrap_or_else(|| self.issuer.clone()),
            reason: request.reason.clone(),
            constraints: request.constraints.clone(),
        };
        command.validate().map_err(IssueError::Invalid)?;
        Ok(command)
    }

    /// Builds the command for `request` ([`build`](Self::build) at
    /// [`Timestamp::now`]), publishes it and returns it once the broker
    /// confirmed it.
    ///
    /// # Errors
    /// [`IssueError::ZeroTtl`] and [`IssueError::Invalid`] before anything is
    /// published; [`IssueError::Publish`] (with the command) when the broker
    /// did not confirm it.
    ///
    /// # Cancel safety
    /// Dropping the future may leave the command published or not; the caller
    /// does not know its id then. Use [`build`](Self::build) and
    /// [`publish`](Self::publish) to keep the id across a retry.
    pub async fn issue(&self, request: &CommandRequest) -> Result<Command, IssueError> {
        let command = self.build(request, Timestamp::now())?;
        self.publish(&request.path, command, request.ttl).await
    }

    /// Publishes `command` on `path`'s command topic with the message expiry of
    /// `ttl` (see [`message`](Self::message)) and returns it once the broker
    /// confirmed it. Publishing the same command twice is safe: a device
    /// executes an id at most once.
    ///
    /// # Errors
    /// [`IssueError::Publish`] with the command.
    pub async fn publish(
        &self,
        path: &UnsPath,
        command: Command,
        ttl: Duration,
    ) -> Result<Command, IssueError> {
        let message = Self::message(path, &command, ttl);
        match self.publisher.publish_confirmed(message).await {
            Ok(()) => {
                metrics::counter!("iiot_ingest_commands_issued_total").increment(1);
                tracing::debug!(id = %command.id, device = %command.device_id, target = %command.target, "command issued");
                Ok(command)
            }
            Err(source) => {
                metrics::counter!("iiot_ingest_command_issue_errors_total").increment(1);
                Err(IssueError::Publish {
                    command: Box::new(command),
                    source,
                })
            }
        }
    }

    /// The MQTT message of `command`: v1 Protobuf on `{path}/commands/{id}`,
    /// QoS 1, not retained, expiring after `ttl` rounded up to whole seconds
    /// (at least 1 s).
    pub fn message(path: &UnsPath, command: &Command, ttl: Duration) -> OutboundMessage {
        OutboundMessage::new(
            path.command(command.id).to_string(),
            protobuf::encode_command(command),
        )
        .with_qos(QoS::AtLeastOnce)
        .with_retain(false)
        .with_expiry(expiry_of(ttl))
    }
}

/// `ttl` rounded up to whole seconds, at least 1 s (MQTT 5 message expiry is in
/// whole seconds; rounding down would drop a command before its deadline).
pub fn expiry_of(ttl: Duration) -> Duration {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    Duration::from_secs(secs.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_rounds_up_to_whole_seconds() {
        for (ttl, want) in [
            (Duration::from_nanos(1), 1),
            (Duration::from_millis(999), 1),
            (Duration::from_secs(1), 1),
            (Duration::from_millis(1001), 2),
            (Duration::from_secs(30), 30),
            (Duration::new(30, 1), 31),
        ] {
            assert_eq!(expiry_of(ttl), Duration::from_secs(want), "{ttl:?}");
        }
    }
}
