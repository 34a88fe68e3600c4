//! # iiot-reference: the iiot-rs reference deployment
//!
//! The library behind the `iiot` binary: each module is one command, wired from the
//! SDK crates. Read it as the worked example of how the crates fit together.
//!
//! | module | command |
//! |---|---|
//! | [`demo`] | `iiot` / `iiot demo`: everything in one process, with an outage |
//! | [`sim`] (+ [`plant`]) | `iiot sim`: the simulated PLC |
//! | [`decode`] | `iiot decode`: payloads as JSON |
//! | [`ingest`] | `iiot ingest`: MQTT to SQLite/PostgreSQL |
//! | [`gateway`] | `iiot gateway`: Modbus and OPC-UA to MQTT through the outbox; commands and firmware updates down |
//! | [`browse`] | `iiot browse --endpoint URL`: an OPC-UA server's variables as a tag map |
//! | [`ota_cli`] | `iiot ota keygen \| sign \| attach \| verify`: firmware signing keys and manifests, `openssl`-compatible |
//! | [`command`] | `iiot command send`: one command through the broker |
//! | [`config`] | TOML loading with errors naming file and key |
//! | [`observe`] | tracing and the Prometheus endpoint |
//!
//! ## Features
//!
//! | feature | default | what it enables |
//! |---|---|---|
//! | `sled` | no | the outbox's sled engine (`iiot-edge/sled`), for a gateway whose outbox store sled created; without it such a store is refused with an error naming the feature |
//!
//! The simulated PLC needs iiot-protocols' `modbus-sim` and the demo's OPC-UA server its
//! `opcua-sim`, which this crate always enables.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod browse;
pub mod command;
pub mod config;
pub mod decode;
pub mod demo;
pub mod error;
pub mod gateway;
pub mod ingest;
pub mod observe;
pub mod ota_cli;
pub mod plant;
pub mod sim;

/// Resolves when the process gets Ctrl-C (or SIGTERM on Unix).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
