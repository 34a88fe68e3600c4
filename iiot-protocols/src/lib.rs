//! # iiot-protocols: drivers that talk to other machines
//!
//! Modbus (tokio-modbus), OPC-UA (async-opcua), the MQTT core (rumqttc + rustls) and the
//! HTTP(S) fetch of firmware images (reqwest + rustls), each behind a cargo feature.
//! The drivers produce and consume `iiot-core` types. They land with their issues.
//!
//! ## Features
//!
//! | feature | default | what it enables |
//! |---|---|---|
//! | `modbus-tcp` | yes | [`modbus`]: register maps, codec, planner, poller and writes over Modbus TCP (`TcpConnector`) or any byte stream (`FnConnector`) |
//! | `modbus-rtu` | yes | [`modbus`] (all of the above) plus RTU: the serial connector (`RtuConnector`, tokio-serial) and shared-bus scheduling |
//! | `modbus-sim` | no | `modbus::sim`: the map-driven Modbus TCP simulator (tokio-modbus server, value generators, fault injection) for tests and demos; implies `modbus-tcp` |
//! | `opcua` | yes | [`opcua`]: the OPC-UA client over async-opcua (MPL-2.0; see the module docs for the license and the `rsa` advisory): subscriptions as a gateway source with the status code as quality, secure channels, recovery after restarts, browse to a tag map, read and write (commands) |
//! | `opcua-sim` | no | `opcua::sim`: an OPC-UA server inside the process (async-opcua's), optionally with secure endpoints, for demos and tests; implies `opcua` |
//! | `mqtt` | yes | [`mqtt`]: the MQTT core over rumqttc + rustls (MQTT 5 by default, 3.1.1 selectable): device session (identity check, LWT and birth), platform clients, confirmed publish with broker refusals as typed errors, manual or auto acks |
//! | `embedded-broker` | no | `mqtt::embedded`: an MQTT 5 broker inside the process (rumqttd) on a free loopback port, for demos, examples and tests; implies `mqtt` |
//! | `http` | no | `http`: `HttpFetch`, the HTTP(S) `ImageFetch` of OTA (reqwest + rustls): Range resume, private CA, bearer token, mTLS |
//!
//! With `default-features = false` and no feature the crate holds only [`Error`]. Every
//! operation error of the enabled drivers (and of iiot-core) converts into [`Error`] with `?`.
//!
//! A Modbus PLC (the crate's map-driven simulator, on a free port; features `modbus-sim` and
//! `modbus-tcp`) read by the poller:
//!
#![cfg_attr(feature = "modbus-sim", doc = "```")]
#![cfg_attr(not(feature = "modbus-sim"), doc = "```ignore")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use iiot_core::types::Value;
//! use iiot_protocols::modbus::sim::Simulator;
//! use iiot_protocols::modbus::{Poller, PollerConfig, RegisterMap, TcpConnector};
//! use tokio_util::sync::CancellationToken;
//!
//! let toml = r#"
//!     [[tags]]
//!     name = "tank1/level"
//!     address = "40001"        # holding register 0
//!     type = "f32"
//!     order = "CDAB"           # low word first, as many PLCs store it
//! "#;
//! let cancel = CancellationToken::new();
//!
//! // The PLC: a simulator serving the same map on 127.0.0.1, port 0.
//! let plc = Simulator::new(RegisterMap::from_toml_str(toml)?);
//! plc.set_value("tank1/level", &Value::Float(42.5))?;
//! let server = plc.bind("127.0.0.1:0".parse()?).await?;
//! let addr = server.local_addr()?;
//! tokio::spawn(server.run(cancel.clone()));
//!
//! // The poller reads it.
//! let map = RegisterMap::from_toml_str(toml)?;
//! let (_writes, poller, mut readings) =
//!     Poller::new(PollerConfig::default(), map, TcpConnector::new(addr));
//! tokio::spawn(poller.run(cancel.clone()));
//! let r = readings.recv().await.expect("a reading");
//! assert_eq!(r.sample.value(), Some(&Value::Float(42.5)));
//! assert!(r.failure.is_none());
//! cancel.cancel();
//! # Ok(()) }
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

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;

#[cfg(feature = "opcua")]
#[cfg_attr(docsrs, doc(cfg(feature = "opcua")))]
pub mod opcua;

mod error;
pub use error::Error;
