//! # iiot-ingest: the platform-side pipeline
//!
//! Decode, validate, dead-letter, dedupe, gap detection, batching with
//! back-pressure, and sinks (PostgreSQL COPY, Kafka, embedded SQLite). A message is
//! acknowledged to the broker only after its rows are committed. The parts land
//! with their issues.
//!
//! ```
//! let id = iiot_core::types::DeviceId::new("plc-01").unwrap();
//! assert_eq!(id.as_str(), "plc-01");
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]
// No unwrap or expect in library code; tests may.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
