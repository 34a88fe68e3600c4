//! # iiot-ingest: the platform-side pipeline
//!
//! QoS 1 only means the broker has a message, not the database. Ingest closes
//! that gap: source → decode (schema-version router) → validate → dedupe → gap
//! check → batch → sink → acknowledge. A message is acknowledged to the broker
//! only after its rows are committed, and a redelivered message never becomes a
//! duplicate row (the sinks are idempotent on `(device_id, message_id)`). Bad
//! payloads go to a dead-letter destination with their original bytes and a
//! reason; nothing is dropped silently. When the sink is slow the pipeline stops
//! pulling instead of growing memory.
//!
//! Commands travel the other way, and ingest tracks them: the
//! [`CommandIssuer`](commands::CommandIssuer) publishes a command (QoS 1, message
//! expiry from its TTL), and the pipeline records the command as published
//! (`.../commands/{id}`) and the device's acks (`.../commands/{id}/ack`) in the
//! `{prefix}commands` table of the database sinks, one row per command with its
//! final state, reason and times; a command with no final ack past its deadline
//! plus a grace period is marked `expired_unconfirmed`. The MQTT source
//! subscribes to both topics by default
//! ([`DEFAULT_FILTERS`](source::mqtt::DEFAULT_FILTERS)). See [`commands`].
//!
//! ```
//! use iiot_core::codec::protobuf;
//! use iiot_core::topic::UnsPath;
//! use iiot_core::types::{DeviceId, Sample, Sequence, TagPath, TelemetryBatch, Timestamp};
//! use iiot_ingest::sink::memory::MemorySink;
//! use iiot_ingest::source::memory::MemorySource;
//! use iiot_ingest::{Pipeline, PipelineConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (source, feed) = MemorySource::new(16);
//! let sink = MemorySink::new();
//! let (mut handle, pipeline) = Pipeline::new(source, sink.clone(), PipelineConfig::default());
//! let cancel = CancellationToken::new();
//! let task = tokio::spawn(pipeline.run(cancel.clone()));
//!
//! let device = DeviceId::new("plc-01").unwrap();
//! let path = UnsPath::new("acme", "plant1", "packaging", "line3", "plc", device.clone()).unwrap();
//! let batch = TelemetryBatch::new(device, Sequence(1), vec![
//!     Sample::good(TagPath::new("tank1/level").unwrap(), 42.5, Timestamp::now()),
//! ]);
//! let payload = protobuf::encode_telemetry(&batch);
//! feed.send(path.telemetry().to_string(), payload.clone()).await.unwrap();
//! feed.send(path.telemetry().to_string(), payload).await.unwrap(); // a redelivery
//!
//! let stats = handle.wait_for(|s| s.acked == 2).await;
//! assert_eq!(stats.rows_written, 1);
//! assert_eq!(sink.store().rows.len(), 1);
//! cancel.cancel();
//! task.await.unwrap().unwrap();
//! # }
//! ```
//!
//! ## Features
//!
//! | feature | default | what it enables |
//! |---|---|---|
//! | `sqlite` | yes | [`sink::sqlite`]: embedded SQLite sink (rusqlite, bundled), the zero-setup default |
//! | `postgres` | yes | [`sink::postgres`]: PostgreSQL / TimescaleDB sink with binary COPY |
//! | `mqtt` | yes | [`source::mqtt`]: MQTT source, persistent session, manual acks, shared subscriptions |
//! | `kafka` | yes | [`sink::kafka`]: Kafka sink (rskafka): telemetry keyed by device id, dead letters, events, commands and acks |
//!
//! ## Modules
//!
//! | module | what |
//! |---|---|
//! | [`pipeline`] | the run loop, its config and counters |
//! | [`source`] | the `Source` trait (deliveries with manual ack), MQTT and in-memory sources |
//! | [`sink`] | the `Sink` trait (atomic, idempotent commit; the command expiry sweep), PostgreSQL, SQLite and in-memory sinks |
//! | [`record`] | what a commit holds: accepted batches, data loss, gap changes, commands, acks, dead letters |
//! | [`commands`] | the command issuer, and the commands table: its rows, the rules that merge commands and acks, the expiry sweep |
//! | [`dedupe`] | the in-memory dedupe window |
//! | [`recent`] | the bounded set of recent keys behind the dedupe window and the Kafka sink |
//! | [`gaps`] | per-device sequence gap tracking |
//!
//! ## Errors
//!
//! Each operation has its own error: [`sink::SinkError`] (typed: which of the
//! three reactions, the backend's code such as a SQLSTATE, the driver's error as
//! its source), [`source::SourceError`], [`PipelineError`],
//! [`commands::IssueError`], and the MQTT source's and sink configs' errors. [`Error`] converts from each of them, so `?` gathers
//! them into one type where only reporting matters.

#![cfg_attr(docsrs, feature(doc_cfg))]
// No unwrap or expect in library code; tests may.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod commands;
pub mod dedupe;
mod error;
pub mod gaps;
pub mod pipeline;
pub mod recent;
pub mod record;
pub mod sink;
pub mod source;

pub use error::Error;
pub use pipeline::{Pipeline, PipelineConfig, PipelineError, PipelineHandle, PipelineStats};

/// The old numeric and renamed keys of ingest config files, for
/// [`iiot_core::duration::legacy::upgrade_toml`]: durations were milliseconds, under
/// `*_ms` keys for the sinks and the MQTT source.
pub const LEGACY_KEYS: &[iiot_core::duration::legacy::LegacyKey] = {
    use iiot_core::duration::legacy::{LegacyKey, LegacyUnit};
    &[
        LegacyKey::duration("batch_max_delay", "batch_max_delay", LegacyUnit::Millis),
        LegacyKey::duration("idle_flush", "idle_flush", LegacyUnit::Millis),
        LegacyKey::duration("dedupe_window", "dedupe_window", LegacyUnit::Millis),
        LegacyKey::duration("retry_initial", "retry_initial", LegacyUnit::Millis),
        LegacyKey::duration("retry_max", "retry_max", LegacyUnit::Millis),
        LegacyKey::duration("connect_timeout_ms", "connect_timeout", LegacyUnit::Millis),
        LegacyKey::duration(
            "statement_timeout_ms",
            "statement_timeout",
            LegacyUnit::Millis,
        ),
        LegacyKey::duration("busy_timeout_ms", "busy_timeout", LegacyUnit::Millis),
        LegacyKey::duration("request_timeout_ms", "request_timeout", LegacyUnit::Millis),
        LegacyKey::duration("keepalive_ms", "keepalive", LegacyUnit::Millis),
        LegacyKey::duration("reconnect_delay_ms", "reconnect_min", LegacyUnit::Millis),
    ]
};
