//! Shared helpers for iiot-ingest integration tests.
#![allow(dead_code, unreachable_pub)]

pub mod commands;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "mqtt")]
pub mod mosquitto;
#[cfg(feature = "postgres")]
pub mod pg;
pub mod services;
pub mod sink;
