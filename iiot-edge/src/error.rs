//! The crate's one error type, [`Error`], which every operation error converts into.

use crate::commands::{LedgerError, NotAcknowledged};
use crate::outbox::{AppendError, DurableError, OpenError, OutboxError};
use crate::runtime::{ControlError, NoControlLane};

/// Any error of iiot-edge, for callers that do not need to tell the operations apart.
///
/// The operations return their own error types ([`Outbox::open`](crate::outbox::Outbox::open)
/// an [`OpenError`], `append` an [`AppendError`] that gives the message back, ...), which
/// stay the types to match on when the caller reacts differently to each; every one of them
/// converts into this enum with `?`, and so does every iiot-core error (through
/// [`Error::Core`]). Each variant is the operation error unchanged (`Display` and `source`
/// are the inner error's; a message given back is still inside); the large ones are boxed
/// to keep `Result<_, Error>` small.
///
/// ```
/// use iiot_edge::outbox::{Outbox, OutboxConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), iiot_edge::Error> {
/// let dir = tempfile::tempdir().unwrap();
/// let device = iiot_core::types::DeviceId::new("plc-01")?; // an iiot-core error
/// let outbox = Outbox::open(dir.path().join("ob"), device, OutboxConfig::default()).await?;
/// let msg = iiot_core::publish::OutboundMessage::new("a/b", "x");
/// outbox.append(msg).await?; // an AppendError
/// outbox.close().await;
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error of iiot-core (a domain value, a topic, a codec, a publish).
    #[error(transparent)]
    Core(#[from] iiot_core::Error),
    /// The outbox could not be opened.
    #[error(transparent)]
    Open(Box<OpenError>),
    /// An append was refused or failed (the message is inside).
    #[error(transparent)]
    Append(Box<AppendError>),
    /// A record accepted under group commit did not become durable (the message is inside).
    #[error(transparent)]
    Durable(Box<DurableError>),
    /// A read, acknowledge or other outbox operation failed.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// A control-lane message (ack, status) was not recorded.
    #[error(transparent)]
    Control(Box<ControlError>),
    /// The command ledger could not be opened or written.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Commands were configured before the control lane their acks travel on.
    #[error(transparent)]
    NoControlLane(#[from] NoControlLane),
    /// The command executor stopped before it acknowledged a delivery.
    #[error(transparent)]
    NotAcknowledged(#[from] NotAcknowledged),
}

/// The boxed variants convert from the unboxed operation error.
macro_rules! boxed {
    ($($t:ty => $v:ident),* $(,)?) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Self::$v(Box::new(e))
            }
        }
    )*};
}

boxed!(
    OpenError => Open,
    AppendError => Append,
    DurableError => Durable,
    ControlError => Control,
);

// Every iiot-core error converts too, through `Error::Core`.
iiot_core::from_core_errors!(Error, Core);

#[cfg(test)]
mod tests {
    use super::*;
    use iiot_core::publish::OutboundMessage;

    #[test]
    fn operation_errors_convert_and_keep_the_message() {
        let e: Error = AppendError::Closed {
            message: OutboundMessage::new("a/b", "x"),
        }
        .into();
        assert_eq!(e.to_string(), "outbox closed");
        match e {
            Error::Append(a) => assert_eq!(a.into_message().topic, "a/b"),
            other => panic!("{other:?}"),
        }
        let e: Error = OpenError::Cancelled.into();
        assert!(matches!(e, Error::Open(_)));
        let e: Error = OutboxError::Closed.into();
        assert!(matches!(e, Error::Outbox(OutboxError::Closed)));
        let e: Error = iiot_core::types::DeviceId::new("a b").unwrap_err().into();
        assert!(matches!(e, Error::Core(iiot_core::Error::Validation(_))));
    }

    #[test]
    fn stays_small() {
        assert!(
            std::mem::size_of::<Error>() <= 128,
            "{}",
            std::mem::size_of::<Error>()
        );
    }
}
