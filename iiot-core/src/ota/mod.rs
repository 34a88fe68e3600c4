//! Firmware updates: the contracts the device's OTA agent and the platform share
//! beyond the wire types in [`crate::types`].
//!
//! - [`ImageFetch`]: "bytes of this URL from this offset", the one thing the OTA
//!   agent of `iiot-edge` needs from a transport. `iiot-protocols` implements it
//!   over HTTP(S) (feature `http`); `iiot-edge` for local files.
//! - [`rollout`]: pure platform rules: which devices are in a wave, and when a
//!   rollout must stop.

mod fetch;
pub mod rollout;

pub use fetch::{FetchError, FetchErrorKind, ImageBody, ImageFetch, Opened};
