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
//! let (pipeline, mut handle) = Pipeline::new(source, sink.clone(), PipelineConfig::default());
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
//! | feature | default | what |
//! |---|---|---|
//! | `sqlite` | yes | [`sink::sqlite`]: embedded SQLite sink (rusqlite, bundled), the zero-setup default |
//! | `postgres` | yes | [`sink::postgres`]: PostgreSQL / TimescaleDB sink with binary COPY |
//! | `mqtt` | yes | [`source::mqtt`]: MQTT source, persistent session, manual acks, shared subscriptions |
//!
//! ## Modules
//!
//! | module | what |
//! |---|---|
//! | [`pipeline`] | the run loop, its config and counters |
//! | [`source`] | the `Source` trait (deliveries with manual ack), MQTT and in-memory sources |
//! | [`sink`] | the `Sink` trait (atomic, idempotent commit), PostgreSQL, SQLite and in-memory sinks |
//! | [`record`] | what a commit holds: accepted batches, data loss, gap changes, dead letters |
//! | [`dedupe`] | the in-memory dedupe window |
//! | [`gaps`] | per-device sequence gap tracking |

#![cfg_attr(docsrs, feature(doc_cfg))]
// No unwrap or expect in library code; tests may.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod dedupe;
pub mod gaps;
pub mod pipeline;
pub mod record;
pub mod sink;
pub mod source;

pub use pipeline::{Pipeline, PipelineConfig, PipelineError, PipelineHandle, PipelineStats};
