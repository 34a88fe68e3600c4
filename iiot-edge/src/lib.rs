//! # iiot-edge: the gateway half
//!
//! The gateway runtime ([`runtime`]: sources → report by exception → batches →
//! outbox → forwarder, a control lane for acks and statuses, shutdown), the
//! store-and-forward outbox and its forwarder. Generic over `iiot-core`'s traits
//! (a [`iiot_core::source::Source`] of readings, a
//! [`iiot_core::publish::ConfirmedPublish`] transport); knows no concrete driver or
//! transport. Commands come down through [`commands`]: a durable ledger and an
//! executor that acts at most once, in order, never after expiry, with acks on the
//! control lane. The OTA agent is not built yet.
//!
//! A complete gateway: a PLC (the Modbus simulator of `iiot-protocols`, on a free
//! port), the poller as the runtime's source, an outbox, and the MQTT session to a
//! broker (the embedded one here; Mosquitto or any MQTT 5 / 3.1.1 broker in the
//! field). Every reading goes to the outbox first and leaves on the broker's PUBACK:
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use iiot_core::topic::UnsPath;
//! use iiot_core::types::DeviceId;
//! use iiot_edge::outbox::{Outbox, OutboxConfig};
//! use iiot_edge::runtime::GatewayBuilder;
//! use iiot_protocols::modbus::{Poller, PollerConfig, RegisterMap, TcpConnector, sim::Simulator};
//! use iiot_protocols::mqtt::{MqttConfig, Session, embedded::EmbeddedBroker};
//! use tokio_util::sync::CancellationToken;
//!
//! let map = r#"[[tags]]
//!     name = "tank1/level"
//!     address = "40001"
//!     type = "f32""#;
//! let cancel = CancellationToken::new();
//! let plc = Simulator::new(RegisterMap::from_toml_str(map)?).bind("127.0.0.1:0".parse()?).await?;
//! let plc_addr = plc.local_addr()?;
//! tokio::spawn(plc.run(cancel.clone()));
//! let broker = EmbeddedBroker::start(1 << 20)?;
//!
//! let device = DeviceId::new("plc-01")?;
//! let path = UnsPath::new("acme", "plant1", "packaging", "line3", "plc", device.clone())?;
//! let (session, driver, _inbound) = Session::new(&MqttConfig::new(broker.url(), "plc-01", path.to_string()))?;
//! let (_writes, poller, readings) =
//!     Poller::new(PollerConfig::default(), RegisterMap::from_toml_str(map)?, TcpConnector::new(plc_addr));
//! let dir = tempfile::tempdir()?;
//! let outbox = Outbox::open(dir.path().join("outbox"), device, OutboxConfig::default()).await?;
//!
//! let mut gateway = GatewayBuilder::new(path, outbox, session)
//!     .source(poller.into_source(readings, "modbus"))
//!     .task(move |c| driver.run(c))
//!     .start(&cancel);
//! let mut forwarder = gateway.forwarder().clone();
//! forwarder.wait_for(|s| s.acked.is_some()).await; // a batch reached the broker
//! assert!(gateway.shutdown(&cancel, std::time::Duration::from_secs(5)).await);
//! # Ok(()) }
//! ```
//!
//! The [`outbox::Outbox`] is the source of truth, not the connection: every reading is
//! appended there first (durably, under a stated [`outbox::Durability`] policy) and leaves
//! only when the transport confirmed it. The [`forwarder::Forwarder`] drains it through any
//! [`iiot_core::publish::ConfirmedPublish`] (for MQTT QoS 1: resolves on PUBACK), in order,
//! at least once, with backoff and paced replay. Whatever the outbox's bounds discard becomes
//! a [`iiot_core::types::DataLoss`] event that is published ahead of records: loss is never
//! silent.
//!
//! ```
//! use iiot_core::publish::{ConfirmedPublish, OutboundMessage, PublishError};
//! use iiot_core::types::{DataLoss, DeviceId};
//! use iiot_edge::forwarder::{Forwarder, ForwarderConfig};
//! use iiot_edge::outbox::{Outbox, OutboxConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! /// A transport that confirms everything (a real one waits for the broker's PUBACK).
//! struct Confirming;
//! impl ConfirmedPublish for Confirming {
//!     async fn publish_confirmed(&self, m: OutboundMessage) -> Result<(), PublishError> {
//!         assert!(!m.payload.is_empty());
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let dir = tempfile::tempdir().unwrap();
//! let device = DeviceId::new("plc-01").unwrap();
//! let outbox = Outbox::open(dir.path().join("outbox"), device, OutboxConfig::default())
//!     .await
//!     .unwrap();
//!
//! // EveryWrite (the default): `append` returns once the record is on disk.
//! let topic = "acme/plant1/area1/line1/plc/plc-01/telemetry";
//! let seq = outbox
//!     .append_with(|seq| OutboundMessage::new(topic, seq.0.to_be_bytes().to_vec()))
//!     .await
//!     .unwrap()
//!     .seq();
//!
//! // The caller encodes data-loss events (core's Protobuf codec in production).
//! let encode_loss = |l: &DataLoss| {
//!     let text = format!("lost {}..={}", l.first_seq().0, l.last_seq().0);
//!     OutboundMessage::new("acme/plant1/area1/line1/plc/plc-01/status", text)
//! };
//! let (mut handle, forwarder) =
//!     Forwarder::new(outbox.clone(), Confirming, encode_loss, ForwarderConfig::default());
//! let cancel = CancellationToken::new();
//! let task = tokio::spawn(forwarder.run(cancel.clone()));
//! handle.wait_for(|s| s.acked == Some(seq)).await;
//! cancel.cancel();
//! task.await.unwrap();
//! outbox.close().await;
//! # }
//! ```
//!
//! ## Modules
//!
//! | module | what |
//! |---|---|
//! | [`outbox`] | durable, ordered, bounded store-and-forward queue (own log engine, or sled with the `sled` feature) |
//! | [`forwarder`] | drains an outbox through a confirmed-publish transport |
//! | [`runtime`] | the gateway as a library: sources, report by exception, batches, outbox, forwarder, shutdown |
//! | [`commands`] | the command ledger and executor: at most once, in order, expiring, checked against the latest values |
//! | [`ota`] | firmware updates: trust store and manifest verification, A/B slots with trial boot and roll back, the OTA agent |
//! | [`Error`] | the crate's one error: every operation error converts into it with `?` |
//!
//! ## Features
//!
//! | feature | default | what it enables |
//! |---|---|---|
//! | `sled` | no | the sled 0.34 storage engine for the outbox ([`outbox::Engine::Sled`]), kept for stores created with it |
//!
//! The outbox's storage engine is a run-time setting ([`outbox::Engine`], `engine = "log"`
//! or `"sled"` in [`outbox::OutboxConfig`]) that applies to new stores; an existing store
//! always opens with the engine that wrote it. The default log engine is always built.
//! Without the `sled` feature, opening a store that sled wrote, or configuring
//! `engine = "sled"` for a new one, fails with [`outbox::OpenError::EngineNotEnabled`]
//! naming the feature; the store on disk is left untouched.
//!
//! ## FAQ
//!
//! **What survives a power cut?** Under `EveryWrite`, every record whose `append` returned.
//! Under `GroupCommit { window }`, every record whose `Appended::durable()` resolved; the
//! last window's records may be lost, and their sequence numbers are reused. Both rest on
//! `fdatasync` (the log engine syncs its file, and its directory when it starts a file;
//! over sled, the outbox adds `fdatasync` of sled's log, because sled's own flush does not
//! reach the disk's cache). Process crashes (SIGKILL) are tested; power cuts are simulated
//! in the log engine's tests by cutting its newest file after the last flush.
//!
//! **How much memory does a backlog cost?** On the log engine about 24 bytes per commit
//! group (not per byte stored): a 1 GiB backlog of 200-byte records costs a few MiB under
//! group commit. See `docs/BENCHMARKS.md`.
//!
//! **Can a record arrive twice?** Yes, after a crash or a lost confirmation (at least once).
//! Consumers dedupe by message id. A record the transport confirmed is never re-sent by the
//! same forwarder run.
//!
//! **What if the disk fills?** `append` fails with `AppendError::Io` and gives the message
//! back; stored records stay and the forwarder keeps draining.

#![cfg_attr(docsrs, feature(doc_cfg))]
// No unwrap or expect in library code; tests may.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod commands;
pub mod forwarder;
pub mod ota;
pub mod outbox;
pub mod runtime;

mod error;
pub use error::Error;
