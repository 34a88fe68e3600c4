//! Mapping rskafka errors onto the pipeline's three reactions.

use rskafka::client::error::{Error, ProtocolError};

use crate::sink::{ErrorCode, SinkError, SinkErrorKind};

/// The reaction to a broker's error code.
///
/// - The record or request is too large, malformed or has a bad timestamp:
///   [`SinkErrorKind::Rejected`] (the same records will fail again).
/// - Authorization, an invalid topic, partition count, replication factor or
///   topic config, an unsupported version or compression: [`SinkErrorKind::Setup`].
/// - Everything else (leader moves, not enough replicas, timeouts, a broker
///   shutting down, unknown codes): [`SinkErrorKind::Unavailable`], so that good
///   data is never diverted to the dead-letter topic by a broker problem.
pub(crate) fn kind_of_protocol(e: ProtocolError) -> SinkErrorKind {
    use ProtocolError as P;
    match e {
        P::MessageTooLarge
        | P::RecordListTooLarge
        | P::InvalidRecord
        | P::CorruptMessage
        | P::InvalidTimestamp
        | P::UnsupportedForMessageFormat => SinkErrorKind::Rejected,
        P::TopicAuthorizationFailed
        | P::ClusterAuthorizationFailed
        | P::SaslAuthenticationFailed
        | P::InvalidTopicException
        | P::InvalidPartitions
        | P::InvalidReplicationFactor
        | P::InvalidReplicaAssignment
        | P::InvalidConfig
        | P::PolicyViolation
        | P::InvalidRequiredAcks
        | P::UnsupportedVersion
        | P::UnsupportedCompressionType => SinkErrorKind::Setup,
        _ => SinkErrorKind::Unavailable,
    }
}

/// The Kafka protocol's number for `e` (10 for `MESSAGE_TOO_LARGE`).
///
/// rskafka keeps its number-from-variant table private; the inverse,
/// [`ProtocolError::new`], is public, and the codes it knows are all in
/// `-1..=1000`, so the number is found by searching that range.
pub(crate) fn protocol_code(e: ProtocolError) -> i16 {
    if let ProtocolError::Unknown(code) = e {
        return code;
    }
    (-1..=1000)
        .find(|&c| ProtocolError::new(c) == Some(e))
        .unwrap_or(-1)
}

/// The broker's error in `e`, also inside an exhausted retry.
fn protocol_error(e: &Error) -> Option<ProtocolError> {
    match e {
        Error::ServerError { protocol_error, .. } => Some(*protocol_error),
        Error::RetryFailed(rskafka::BackoffError::DeadlineExceded { source, .. }) => {
            source.downcast_ref::<Error>().and_then(protocol_error)
        }
        _ => None,
    }
}

/// The reaction to `e`. Connection and I/O errors, timeouts and exhausted
/// retries of transient errors are [`SinkErrorKind::Unavailable`]; an exhausted
/// retry is classified by the error that was retried.
pub(crate) fn kind_of(e: &Error) -> SinkErrorKind {
    protocol_error(e).map_or(SinkErrorKind::Unavailable, kind_of_protocol)
}

/// `during: error: source: …`.
fn describe(e: &(dyn std::error::Error + 'static), during: &str) -> String {
    let mut detail = format!("{during}: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    detail
}

/// `e`, which happened while doing `during`, as a [`SinkError`] of
/// [`kind_of`]`(e)` with the broker's error code ([`ErrorCode::Kafka`]) and `e`
/// as its source.
pub(crate) fn classify(e: Error, during: &str) -> SinkError {
    let err = SinkError::new(kind_of(&e), describe(&e, during));
    let err = match protocol_error(&e) {
        Some(p) => err.with_code(ErrorCode::Kafka(protocol_code(p))),
        None => err,
    };
    err.with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_kinds() {
        use SinkErrorKind::{Rejected, Setup, Unavailable};
        assert_eq!(kind_of_protocol(ProtocolError::MessageTooLarge), Rejected);
        assert_eq!(
            kind_of_protocol(ProtocolError::RecordListTooLarge),
            Rejected
        );
        assert_eq!(kind_of_protocol(ProtocolError::InvalidRecord), Rejected);
        assert_eq!(
            kind_of_protocol(ProtocolError::TopicAuthorizationFailed),
            Setup
        );
        assert_eq!(
            kind_of_protocol(ProtocolError::InvalidTopicException),
            Setup
        );
        assert_eq!(
            kind_of_protocol(ProtocolError::NotEnoughReplicas),
            Unavailable
        );
        assert_eq!(
            kind_of_protocol(ProtocolError::LeaderNotAvailable),
            Unavailable
        );
        assert_eq!(
            kind_of_protocol(ProtocolError::RequestTimedOut),
            Unavailable
        );
        assert_eq!(kind_of_protocol(ProtocolError::Unknown(-42)), Unavailable);
        assert_eq!(kind_of(&Error::Timeout), Unavailable);
        let retried = Error::RetryFailed(rskafka::BackoffError::DeadlineExceded {
            deadline: std::time::Duration::from_secs(1),
            source: Box::new(Error::ServerError {
                protocol_error: ProtocolError::MessageTooLarge,
                error_message: None,
                request: rskafka::client::error::RequestContext::Topic("t".into()),
                response: None,
                is_virtual: false,
            }),
        });
        assert_eq!(kind_of(&retried), Rejected);
        let err = classify(retried, "produce");
        assert_eq!(err.kind(), Rejected);
        assert_eq!(err.code(), Some(ErrorCode::Kafka(10)));
        assert!(err.detail().starts_with("produce: "), "{err}");
        let source = std::error::Error::source(&err).unwrap();
        assert!(source.is::<Error>(), "{source:?}");
        let err = classify(Error::Timeout, "produce");
        assert_eq!((err.kind(), err.code()), (Unavailable, None));
    }

    /// The numbers of the Kafka protocol's error table.
    #[test]
    fn protocol_codes_are_kafkas() {
        assert_eq!(protocol_code(ProtocolError::UnknownServerError), -1);
        assert_eq!(protocol_code(ProtocolError::CorruptMessage), 2);
        assert_eq!(protocol_code(ProtocolError::MessageTooLarge), 10);
        assert_eq!(protocol_code(ProtocolError::NotEnoughReplicas), 19);
        assert_eq!(protocol_code(ProtocolError::TopicAuthorizationFailed), 29);
        assert_eq!(protocol_code(ProtocolError::TopicAlreadyExists), 36);
        assert_eq!(protocol_code(ProtocolError::InvalidRecord), 87);
        assert_eq!(protocol_code(ProtocolError::Unknown(-42)), -42);
        assert_eq!(protocol_code(ProtocolError::Unknown(4242)), 4242);
    }
}
