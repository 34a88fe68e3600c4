//! # iiot-ingest: the platform-side pipeline
//!
//! Decode, validate, dead-letter, dedupe, gap detection, batching with
//! back-pressure, and sinks (PostgreSQL COPY, Kafka, embedded SQLite). A message is
//! acknowledged to the broker only after its rows are committed, and a redelivered
//! message never becomes a duplicate row.
//!
//! ```
//! use iiot_ingest::record::CommitBatch;
//!
//! let batch = CommitBatch::default();
//! assert!(batch.is_empty());
//! ```

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
