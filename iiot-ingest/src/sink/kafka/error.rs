//! Mapping rskafka errors onto the pipeline's three reactions.

use rskafka::client::error::{Error, ProtocolError};

use crate::sink::SinkError;

/// How the pipeline should react to a Kafka error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Retry later on a new connection.
    Unavailable,
    /// The content was refused: bisect.
    Rejected,
    /// Configuration, permissions or topics.
    Setup,
}

/// The class of a broker's error code.
///
/// - The record or request is too large, malformed or has a bad timestamp:
///   [`Class::Rejected`] (the same records will fail again).
/// - Authorization, an invalid topic, partition count, replication factor or
///   topic config, an unsupported version or compression: [`Class::Setup`].
/// - Everything else (leader moves, not enough replicas, timeouts, a broker
///   shutting down, unknown codes): [`Class::Unavailable`], so that good data is
///   never diverted to the dead-letter topic by a broker problem.
pub(crate) fn class_of_protocol(e: ProtocolError) -> Class {
    use ProtocolError as P;
    match e {
        P::MessageTooLarge
        | P::RecordListTooLarge
        | P::InvalidRecord
        | P::CorruptMessage
        | P::InvalidTimestamp
        | P::UnsupportedForMessageFormat => Class::Rejected,
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
        | P::UnsupportedCompressionType => Class::Setup,
        _ => Class::Unavailable,
    }
}

/// The class of `e`. Connection and I/O errors, timeouts and exhausted retries of
/// transient errors are [`Class::Unavailable`]; an exhausted retry is classified
/// by the error that was retried.
pub(crate) fn class_of(e: &Error) -> Class {
    match e {
        Error::ServerError { protocol_error, .. } => class_of_protocol(*protocol_error),
        Error::RetryFailed(rskafka::BackoffError::DeadlineExceded { source, .. }) => {
            match source.downcast_ref::<Error>() {
                Some(inner) => class_of(inner),
                None => Class::Unavailable,
            }
        }
        _ => Class::Unavailable,
    }
}

/// `during: error: source: …`.
pub(crate) fn describe(e: &(dyn std::error::Error + 'static), during: &str) -> String {
    let mut detail = format!("{during}: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    detail
}

pub(crate) fn to_error(class: Class, detail: String) -> SinkError {
    match class {
        Class::Unavailable => SinkError::Unavailable { detail },
        Class::Rejected => SinkError::Rejected { detail },
        Class::Setup => SinkError::Setup { detail },
    }
}

/// Classifies `e`, which happened while doing `during`.
pub(crate) fn classify(e: &Error, during: &str) -> (Class, SinkError) {
    let class = class_of(e);
    (class, to_error(class, describe(e, during)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_classes() {
        assert_eq!(
            class_of_protocol(ProtocolError::MessageTooLarge),
            Class::Rejected
        );
        assert_eq!(
            class_of_protocol(ProtocolError::RecordListTooLarge),
            Class::Rejected
        );
        assert_eq!(
            class_of_protocol(ProtocolError::InvalidRecord),
            Class::Rejected
        );
        assert_eq!(
            class_of_protocol(ProtocolError::TopicAuthorizationFailed),
            Class::Setup
        );
        assert_eq!(
            class_of_protocol(ProtocolError::InvalidTopicException),
            Class::Setup
        );
        assert_eq!(
            class_of_protocol(ProtocolError::NotEnoughReplicas),
            Class::Unavailable
        );
        assert_eq!(
            class_of_protocol(ProtocolError::LeaderNotAvailable),
            Class::Unavailable
        );
        assert_eq!(
            class_of_protocol(ProtocolError::RequestTimedOut),
            Class::Unavailable
        );
        assert_eq!(
            class_of_protocol(ProtocolError::Unknown(-42)),
            Class::Unavailable
        );
        assert_eq!(class_of(&Error::Timeout), Class::Unavailable);
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
        assert_eq!(class_of(&retried), Class::Rejected);
        let (_, err) = classify(&retried, "produce");
        assert!(err.to_string().contains("produce"), "{err}");
    }
}
