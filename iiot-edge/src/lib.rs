//! # iiot-edge: gateway-side reliability
//!
//! Store-and-forward outbox and forwarder, command ledger and executor, OTA
//! verification. Generic over `iiot-core`'s traits; knows no concrete transport.
//! The parts land with their issues.
//!
//! ```
//! // The forwarder drains through any iiot_core::publish::ConfirmedPublish.
//! let msg = iiot_core::publish::OutboundMessage::new("a/b", vec![1u8, 2, 3]);
//! assert_eq!(msg.payload.len(), 3);
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]
// No unwrap or expect in library code; tests may.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod forwarder;
pub mod outbox;
