//! The crate's one error type.
//!
//! Each operation returns its own error ([`SinkError`], [`SourceError`],
//! [`PipelineError`], …) because callers react to each differently. [`Error`]
//! holds any of them, so code that only reports can `?` all of them into one
//! type.

use crate::pipeline::PipelineError;
use crate::sink::SinkError;
use crate::source::SourceError;

/// Any error of this crate. Display and [`source`](std::error::Error::source)
/// are those of the operation error it holds.
///
/// ```
/// use iiot_ingest::sink::sqlite::{SqliteConfig, SqliteSink};
///
/// fn open() -> Result<SqliteSink, iiot_ingest::Error> {
///     let mut config = SqliteConfig::new(":memory:");
///     config.set_table_prefix("Not Valid");
///     Ok(SqliteSink::new(config)?) // SinkError → Error
/// }
///
/// let err = open().unwrap_err();
/// assert!(matches!(err, iiot_ingest::Error::Sink(ref e) if !e.is_transient()));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A sink failed ([`Sink`](crate::sink::Sink) calls and sink constructors).
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// A source could not deliver or acknowledge.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The pipeline stopped on an error.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// A command was not issued.
    #[error(transparent)]
    Issue(#[from] crate::commands::IssueError),
    /// The MQTT source could not start.
    #[cfg(feature = "mqtt")]
    #[error(transparent)]
    MqttSource(#[from] crate::source::mqtt::MqttSourceError),
    /// A PostgreSQL sink config names an invalid identifier.
    #[cfg(feature = "postgres")]
    #[error(transparent)]
    PostgresIdentifier(#[from] crate::sink::postgres::IdentifierError),
    /// A Kafka sink config field cannot work.
    #[cfg(feature = "kafka")]
    #[error(transparent)]
    KafkaConfig(#[from] crate::sink::kafka::KafkaConfigError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink() -> Result<(), SinkError> {
        Err(SinkError::rejected("refused"))
    }

    fn source() -> Result<(), SourceError> {
        Err(SourceError::Closed)
    }

    fn pipeline() -> Result<(), PipelineError> {
        Err(PipelineError::Sink(SinkError::setup("no table")))
    }

    fn all(which: u8) -> Result<(), Error> {
        match which {
            0 => sink()?,
            1 => source()?,
            _ => pipeline()?,
        }
        Ok(())
    }

    #[test]
    fn operation_errors_convert_and_keep_their_text() {
        let e = all(0).unwrap_err();
        assert!(matches!(&e, Error::Sink(s) if s.detail() == "refused"));
        assert_eq!(e.to_string(), "sink rejected the batch: refused");
        assert!(matches!(all(1), Err(Error::Source(SourceError::Closed))));
        let e = all(2).unwrap_err();
        assert!(matches!(&e, Error::Pipeline(PipelineError::Sink(_))));
        let source = std::error::Error::source(&e).unwrap();
        assert!(source.is::<SinkError>(), "{source:?}");
    }

    #[cfg(feature = "kafka")]
    #[test]
    fn config_errors_convert() {
        let mut c = crate::sink::kafka::KafkaConfig::default();
        c.set_topics("ok", "bad topic", "ok2");
        let e: Error = c.validate().unwrap_err().into();
        assert!(matches!(e, Error::KafkaConfig(ref k) if k.field == "dead_letter_topic"));
    }
}
