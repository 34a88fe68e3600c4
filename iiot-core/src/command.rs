//! The traits between a command executor and the two things it sits between: the
//! transport that delivers commands ([`Inbox`], e.g. the MQTT session of
//! `iiot-protocols` in manual-ack mode) and what acts on the plant
//! ([`CommandHandler`], e.g. a Modbus poller's write path or a user's own code).
//!
//! The executor in `iiot-edge` owns what must be right for physical effects: the
//! durable ledger (each id acts at most once), expiry, constraints, interlocks and
//! order. A handler only acts; a transport only delivers and acknowledges.
//!
//! ```
//! use iiot_core::command::{Action, ActionKind, CommandHandler, HandlerError, Target, ValueKind};
//! use iiot_core::types::{TagPath, Value};
//!
//! /// A handler with one writable number.
//! struct Valve;
//!
//! impl CommandHandler for Valve {
//!     fn target(&self, tag: &TagPath) -> Option<Target> {
//!         (tag.as_str() == "valve1/position").then(|| Target::writable(ValueKind::Number))
//!     }
//!     async fn execute(&self, action: Action) -> Result<Option<Value>, HandlerError> {
//!         match action.kind {
//!             ActionKind::Write(v) => Ok(Some(v)), // a real handler writes, then reads back
//!             ActionKind::Invoke(name) => Err(HandlerError::unsupported(format!("no action {name}"))),
//!         }
//!     }
//! }
//! let t = Valve.target(&TagPath::new("valve1/position").unwrap()).unwrap();
//! assert!(t.accepts(&Value::Double(42.0)) && !t.accepts(&Value::Bool(true)));
//! ```

use std::future::Future;

use bytes::Bytes;

use crate::types::{AckReason, MessageId, TagPath, Value};

/// The kind of value a target takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ValueKind {
    /// A boolean only (a coil, a bit).
    Bool,
    /// A whole number: an integer, or a double without a fraction.
    Integer,
    /// Any number (integer or float), never a boolean.
    Number,
    /// Text.
    Text,
    /// Bytes.
    Bytes,
}

impl ValueKind {
    /// Whether `v` is of this kind.
    pub fn accepts(self, v: &Value) -> bool {
        match (self, v) {
            (Self::Bool, Value::Bool(_))
            | (Self::Integer | Self::Number, Value::Int(_) | Value::UInt(_))
            | (Self::Text, Value::String(_))
            | (Self::Bytes, Value::Bytes(_)) => true,
            (Self::Integer, Value::Double(_) | Value::Float(_)) => v
                .as_f64()
                .is_some_and(|x| x.is_finite() && x.fract() == 0.0),
            (Self::Number, Value::Double(_) | Value::Float(_)) => {
                v.as_f64().is_some_and(f64::is_finite)
            }
            _ => false,
        }
    }

    /// A short name: `bool`, `integer`, `number`, `text`, `bytes`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bool => "bool",
            Self::Integer => "integer",
            Self::Number => "number",
            Self::Text => "text",
            Self::Bytes => "bytes",
        }
    }
}

/// What a handler can do with one tag.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Target {
    /// The kind of value a write takes; `None`: not writable.
    pub writes: Option<ValueKind>,
    /// The named actions without a value it supports (e.g. `reset_alarm`).
    pub actions: Vec<String>,
}

impl Target {
    /// A writable target taking values of `kind`, with no named actions.
    pub fn writable(kind: ValueKind) -> Self {
        Self {
            writes: Some(kind),
            actions: Vec::new(),
        }
    }

    /// Adds a named action.
    #[must_use]
    pub fn with_action(mut self, name: impl Into<String>) -> Self {
        self.actions.push(name.into());
        self
    }

    /// Whether a write of `v` is of the kind this target takes.
    pub fn accepts(&self, v: &Value) -> bool {
        self.writes.is_some_and(|k| k.accepts(v))
    }
}

/// What the executor asks a handler to do, after every check passed. A relative
/// command arrives here already resolved to the absolute value it ends at.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    /// The command's id (for the handler's own logs).
    pub command: MessageId,
    /// The tag acted on.
    pub target: TagPath,
    /// Write or invoke.
    pub kind: ActionKind,
}

/// A write or a named action.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionKind {
    /// Write this absolute value.
    Write(Value),
    /// Run the named action.
    Invoke(String),
}

/// Whether a handler did anything before it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandlerErrorKind {
    /// Refused before acting (nothing was done): the command is Rejected with this
    /// reason (a value the device cannot encode is [`AckReason::WrongType`], an
    /// unknown action [`AckReason::Unsupported`]).
    Refused(AckReason),
    /// Acting failed; it may or may not have had an effect (a write that got no
    /// answer). The command is Failed and is never retried.
    Failed,
}

/// A handler's failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    /// Refused or failed.
    pub kind: HandlerErrorKind,
    /// What happened, for the ack's detail.
    pub message: String,
}

impl HandlerError {
    /// Refused before acting, for `reason`.
    pub fn refused(reason: AckReason, message: impl Into<String>) -> Self {
        Self {
            kind: HandlerErrorKind::Refused(reason),
            message: message.into(),
        }
    }

    /// Refused: the action is not supported.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::refused(AckReason::Unsupported, message)
    }

    /// Failed while acting; the outcome is unknown.
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            kind: HandlerErrorKind::Failed,
            message: message.into(),
        }
    }
}

/// What acts on the plant. The executor calls [`CommandHandler::execute`] at most
/// once per command id, one call at a time per device, under a timeout (a call that
/// times out is reported Failed, outcome unknown; the future is dropped).
pub trait CommandHandler: Send + Sync + 'static {
    /// What `tag` accepts; `None`: not a target of this handler (the command is
    /// Rejected as an unknown target).
    fn target(&self, tag: &TagPath) -> Option<Target>;

    /// Acts. Returns the value read back, when there is one (it goes into the
    /// Completed ack's `result`).
    ///
    /// # Errors
    /// [`HandlerError`]: refused (nothing done) or failed (outcome unknown).
    fn execute(
        &self,
        action: Action,
    ) -> impl Future<Output = Result<Option<Value>, HandlerError>> + Send;
}

/// Two handlers as one, for a gateway with two sources of targets (a Modbus PLC and an
/// OPC-UA server): a tag is the first handler's when the first knows it, else the
/// second's. Give each tag to one handler only; a tag both know goes to the first.
impl<A: CommandHandler, B: CommandHandler> CommandHandler for (A, B) {
    fn target(&self, tag: &TagPath) -> Option<Target> {
        self.0.target(tag).or_else(|| self.1.target(tag))
    }

    async fn execute(&self, action: Action) -> Result<Option<Value>, HandlerError> {
        if self.0.target(&action.target).is_some() {
            self.0.execute(action).await
        } else {
            self.1.execute(action).await
        }
    }
}

/// An optional handler: `None` has no targets (every command to it is Rejected as an
/// unknown target by the executor, which asks [`CommandHandler::target`] first).
impl<H: CommandHandler> CommandHandler for Option<H> {
    fn target(&self, tag: &TagPath) -> Option<Target> {
        self.as_ref()?.target(tag)
    }

    async fn execute(&self, action: Action) -> Result<Option<Value>, HandlerError> {
        match self {
            Some(h) => h.execute(action).await,
            None => Err(HandlerError::refused(
                AckReason::UnknownTarget,
                format!("no handler for {}", action.target),
            )),
        }
    }
}

/// One message a transport delivered.
#[derive(Debug)]
pub struct Delivery<A> {
    /// The topic it came on.
    pub topic: String,
    /// The payload, byte for byte.
    pub payload: Bytes,
    /// Whether it came from the broker's retained store.
    pub retain: bool,
    /// Acknowledges it to the transport (for MQTT, its PUBACK): the transport may
    /// deliver it again until then. `None`: nothing to acknowledge (QoS 0, or a
    /// transport that acknowledged on receipt).
    pub ack: Option<A>,
}

/// Acknowledges one delivery.
pub trait Acknowledge: Send + 'static {
    /// Hands the acknowledgement to the transport. A transport that lost the
    /// connection the delivery came on ignores it (the broker delivers again).
    fn ack(self) -> impl Future<Output = ()> + Send;
}

/// A stream of deliveries with explicit acknowledgement.
pub trait Inbox: Send + 'static {
    /// The acknowledgement of one delivery.
    type Ack: Acknowledge;

    /// The next delivery; `None` once the transport stopped for good.
    ///
    /// Implementations must be cancel safe: dropping the future loses nothing.
    fn recv(&mut self) -> impl Future<Output = Option<Delivery<Self::Ack>>> + Send;
}

/// No acknowledgement needed (for transports that have none, and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NoAck;

impl Acknowledge for NoAck {
    async fn ack(self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Knows one tag; records that it acted.
    struct One(&'static str, std::sync::Mutex<u32>);

    impl CommandHandler for One {
        fn target(&self, tag: &TagPath) -> Option<Target> {
            (tag.as_str() == self.0).then(|| Target::writable(ValueKind::Number))
        }
        async fn execute(&self, action: Action) -> Result<Option<Value>, HandlerError> {
            *self.1.lock().unwrap() += 1;
            match action.kind {
                ActionKind::Write(v) => Ok(Some(v)),
                ActionKind::Invoke(_) => Err(HandlerError::unsupported("no")),
            }
        }
    }

    fn write(tag: &str) -> Action {
        Action {
            command: MessageId::generate(),
            target: TagPath::new(tag).unwrap(),
            kind: ActionKind::Write(Value::Double(1.0)),
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        // The handlers here never wait: one poll with a no-op waker finishes them.
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("a test handler waited"),
        }
    }

    #[test]
    fn a_pair_routes_each_tag_to_the_handler_that_knows_it() {
        let pair = (One("a", 0.into()), Some(One("b", 0.into())));
        assert!(pair.target(&TagPath::new("a").unwrap()).is_some());
        assert!(pair.target(&TagPath::new("b").unwrap()).is_some());
        assert!(pair.target(&TagPath::new("c").unwrap()).is_none());
        block_on(pair.execute(write("b"))).unwrap();
        block_on(pair.execute(write("a"))).unwrap();
        block_on(pair.execute(write("a"))).unwrap();
        assert_eq!(*pair.0.1.lock().unwrap(), 2);
        assert_eq!(*pair.1.as_ref().unwrap().1.lock().unwrap(), 1);

        let none: (One, Option<One>) = (One("a", 0.into()), None);
        assert!(none.target(&TagPath::new("b").unwrap()).is_none());
        let e = block_on(none.execute(write("b"))).unwrap_err();
        assert_eq!(e.kind, HandlerErrorKind::Refused(AckReason::UnknownTarget));
        assert_eq!(
            *none.0.1.lock().unwrap(),
            0,
            "the first handler did not act"
        );
    }
}
