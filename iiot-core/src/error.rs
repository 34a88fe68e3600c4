//! The crate's one error type, [`Error`], which every operation error converts into.

use crate::codec::{DecodeError, EncodeError, LimitError};
use crate::duration::DurationError;
use crate::publish::{BrokerUrlError, PublishError};
use crate::source::SinkClosed;
use crate::topic::TopicError;
use crate::types::{SegmentProblem, ValidationError};
use crate::version::Rejected;

/// Any error of iiot-core, for callers that do not need to tell the operations apart.
///
/// The functions of this crate return their own error types (a decoder a
/// [`DecodeError`], a topic parser a [`TopicError`], ...), which stay the types to match on
/// when the caller reacts differently to each; every one of them converts into this
/// enum with `?`. Each variant is the operation error unchanged (`Display` and `source`
/// are the inner error's), so nothing is lost in the conversion; the large ones are boxed
/// to keep `Result<_, Error>` small.
///
/// ```
/// use iiot_core::topic::Topic;
/// use iiot_core::types::DeviceId;
///
/// fn parse(id: &str, topic: &str) -> Result<(DeviceId, Topic), iiot_core::Error> {
///     Ok((DeviceId::new(id)?, Topic::parse(topic)?))
/// }
/// assert!(matches!(parse("dev 1", "a/b"), Err(iiot_core::Error::Validation(_))));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A payload could not become a typed message.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A message could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// A limit for untrusted input was exceeded.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// A topic, path or filter breaks the UNS or MQTT grammar.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// A domain value (device id, tag path, ...) was rejected.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// A topic segment or identifier breaks the segment rules.
    #[error(transparent)]
    Segment(#[from] SegmentProblem),
    /// The version router rejected a payload (the original bytes are inside).
    #[error(transparent)]
    Rejected(Box<Rejected>),
    /// A confirmed publish failed (the message is inside).
    #[error(transparent)]
    Publish(Box<PublishError>),
    /// A broker URL was refused.
    #[error(transparent)]
    BrokerUrl(#[from] BrokerUrlError),
    /// The runtime stopped taking readings.
    #[error(transparent)]
    SinkClosed(#[from] SinkClosed),
    /// A config value that is not a duration.
    #[error(transparent)]
    Duration(#[from] DurationError),
}

impl From<Rejected> for Error {
    fn from(e: Rejected) -> Self {
        Self::Rejected(Box::new(e))
    }
}

impl From<PublishError> for Error {
    fn from(e: PublishError) -> Self {
        Self::Publish(Box::new(e))
    }
}

/// Implements `From<E>` for `$target`, through its variant `$variant(iiot_core::Error)`,
/// for every operation error of iiot-core: the one list the root errors of the crates
/// built on core share (a new core error is added here once).
///
/// ```
/// #[derive(Debug)]
/// enum MyError {
///     Core(iiot_core::Error),
/// }
/// iiot_core::from_core_errors!(MyError, Core);
///
/// let e: MyError = iiot_core::types::DeviceId::new("a b").unwrap_err().into();
/// assert!(matches!(e, MyError::Core(iiot_core::Error::Validation(_))));
/// ```
#[macro_export]
macro_rules! from_core_errors {
    ($target:ty, $variant:ident) => {
        $crate::from_core_errors!(@each $target, $variant,
            $crate::codec::DecodeError,
            $crate::codec::EncodeError,
            $crate::codec::LimitError,
            $crate::topic::TopicError,
            $crate::types::ValidationError,
            $crate::types::SegmentProblem,
            $crate::version::Rejected,
            $crate::publish::PublishError,
            $crate::publish::BrokerUrlError,
            $crate::source::SinkClosed,
            $crate::duration::DurationError,
        );
    };
    (@each $target:ty, $variant:ident, $($t:ty),* $(,)?) => {$(
        impl From<$t> for $target {
            fn from(e: $t) -> Self {
                Self::$variant(e.into())
            }
        }
    )*};
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::{OutboundMessage, PublishErrorKind};

    #[test]
    fn every_operation_error_converts_and_keeps_its_message() {
        let e: Error = LimitError::PayloadTooLarge { len: 9, limit: 8 }.into();
        assert_eq!(e.to_string(), "payload is 9 bytes, limit 8");
        let e: Error = DecodeError::Empty.into();
        assert!(matches!(e, Error::Decode(DecodeError::Empty)));
        let e: Error = crate::topic::Topic::parse("").unwrap_err().into();
        assert!(matches!(e, Error::Topic(_)));
        let e: Error = crate::types::DeviceId::new("a b").unwrap_err().into();
        assert!(matches!(e, Error::Validation(_)));
        let e: Error = crate::publish::BrokerUrl::parse("http://x")
            .unwrap_err()
            .into();
        assert!(matches!(e, Error::BrokerUrl(_)));
        let e: Error = PublishError {
            message: OutboundMessage::new("a/b", "x"),
            kind: PublishErrorKind::Timeout,
        }
        .into();
        assert_eq!(
            e.to_string(),
            "publish to a/b failed: timed out waiting for confirmation"
        );
        let e: Error = SinkClosed.into();
        assert!(matches!(e, Error::SinkClosed(_)));
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
