//! # iiot-core: the contracts of iiot-rs
//!
//! Everything that crosses a wire between an iiot-rs gateway and an iiot-rs
//! platform is defined here, once: the versioned Protobuf schemas
//! (`proto/iiot/v1`), the validated domain types built from them, the quality
//! mapping between OPC-UA status codes and OPC DA quality bytes, the ISA-95 /
//! UNS topic grammar, the Protobuf and JSON codecs, and the schema-version
//! router that ingest uses to decode or dead-letter a payload. This crate does
//! no I/O: no sockets, no files, no runtime.
//!
//! ```
//! use iiot_core::types::{DeviceId, Sample, Sequence, TagPath, TelemetryBatch, Timestamp};
//!
//! let device = DeviceId::new("plc-01").unwrap();
//! let sample = Sample::good(TagPath::new("tank1/level").unwrap(), 42.5, Timestamp::now());
//! let batch = TelemetryBatch::new(device, Sequence(1), vec![sample]);
//! assert_eq!(batch.samples.len(), 1);
//! ```
//!
//! ## Modules
//!
//! | module | what |
//! |---|---|
//! | [`proto`] | prost types generated from `proto/iiot/v1` |
//! | [`types`] | domain types, validated at construction |
//! | [`quality`] | OPC-UA status code ⇄ OPC DA quality byte |
//! | [`topic`] | UNS topic builder, parser and subscription filters |
//! | [`codec`] | Protobuf and JSON codecs with limits for untrusted input |
//! | [`version`] | schema-version router: decode or reject with the original bytes |
//! | [`publish`] | the confirmed-publish trait between outbox and transport |

#![cfg_attr(docsrs, feature(doc_cfg))]
// No unwrap or expect in library code; tests may.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod codec;
pub mod proto;
pub mod publish;
pub mod quality;
pub mod topic;
pub mod types;
pub mod version;
