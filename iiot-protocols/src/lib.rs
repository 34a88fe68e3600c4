//! # iiot-protocols: drivers that talk to other machines
//!
//! Modbus (tokio-modbus) and the MQTT core (rumqttc + rustls; the OPC-UA client is not built yet),
//! each behind a cargo feature. The drivers produce and consume `iiot-core`
//! types. They land with their issues.
//!
//! | feature | default | what it brings |
//! |---|---|---|
//! | `modbus-tcp` | yes | [`modbus`]: register maps, codec, planner, poller over Modbus TCP, the map-driven TCP simulator |
//! | `modbus-rtu` | yes | [`modbus`] over RTU: serial connector (`RtuConnector`), shared-bus scheduling |
//! | `mqtt` | yes | [`mqtt`]: the MQTT core over rumqttc + rustls (MQTT 5 by default, 3.1.1 selectable): device session (identity check, LWT and birth), platform clients, confirmed publish with broker refusals as typed errors, manual or auto acks |
//!
//! ```
//! // Drivers emit iiot-core samples.
//! let quality = iiot_core::quality::Quality::GOOD;
//! assert!(quality.is_good());
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]
// No unwrap or expect in library code; tests may.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

#[cfg(any(feature = "modbus-tcp", feature = "modbus-rtu"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "modbus-tcp", feature = "modbus-rtu"))))]
pub mod modbus;

#[cfg(feature = "mqtt")]
#[cfg_attr(docsrs, doc(cfg(feature = "mqtt")))]
pub mod mqtt;
