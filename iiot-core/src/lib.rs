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
//! use iiot_core::codec::{json, protobuf, Limits};
//! use iiot_core::quality::Quality;
//! use iiot_core::topic::{Topic, UnsPath};
//! use iiot_core::types::{DeviceId, Sample, Sequence, TagPath, TelemetryBatch, Timestamp};
//! use iiot_core::version::{Message, MessageKind, Router};
//!
//! // A gateway builds a batch and the topic it goes to.
//! let device = DeviceId::new("plc-01")?;
//! let path = UnsPath::new("acme", "plant1", "packaging", "line3", "plc", device.clone())?;
//! let now = Timestamp::now();
//! let batch = TelemetryBatch::new(device, Sequence(1), vec![
//!     Sample::good(TagPath::new("tank1/level")?, 42.5, now),
//!     Sample::without_value(TagPath::new("pump1/flow")?, Quality::BAD_TIMEOUT, now),
//! ]);
//! let topic = path.telemetry().to_string();
//! let payload = protobuf::encode_telemetry(&batch);
//!
//! // The platform routes by topic and schema version; failures keep the bytes.
//! let kind = MessageKind::of_topic(&Topic::parse(&topic)?);
//! let decoded = Router::new(Limits::default()).decode(kind, payload.into())?;
//! assert_eq!(decoded.message, Message::Telemetry(batch.clone()));
//!
//! // Brownfield devices may send the JSON form instead; it maps to the same types.
//! let text = json::encode_telemetry(&batch);
//! assert_eq!(json::decode_telemetry(&text, &Limits::default())?, batch);
//! # Ok::<(), Box<dyn std::error::Error>>(())
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
//! | [`command`] | the command traits between transport, executor and what acts on the plant |
//! | [`ota`] | the image-fetch trait of firmware updates, rollout waves and abort rules |
//! | [`source`] | the source-of-readings traits between drivers and the gateway runtime, report by exception |
//! | [`backoff`] | the exponential backoff rule (doubling, cap, jitter) every retry loop uses |
//! | [`Error`] | the crate's one error: every operation error above converts into it with `?` |
//!
//! ## Features
//!
//! | feature | default | what it enables |
//! |---|---|---|
//! | *(none)* | | iiot-core has no cargo features: everything above is always built |

#![cfg_attr(docsrs, feature(doc_cfg))]
// No unwrap or expect in library code; tests may.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod backoff;
pub mod codec;
pub mod command;
pub mod duration;
pub mod ota;
pub mod proto;
pub mod publish;
pub mod quality;
pub mod source;
pub mod topic;
pub mod types;
pub mod version;

mod error;
pub use error::Error;
