//! The demo's OPC-UA server: async-opcua's server in this process, an oven beside the
//! PLC whose temperature changes every 200 ms, read by the gateway's OPC-UA source.

use std::time::Duration;

use iiot_core::quality::Quality;
use iiot_core::types::Value;
use iiot_protocols::opcua::OpcUaConfig;
use iiot_protocols::opcua::sim::{SimConfig, SimServer};
use tokio_util::sync::CancellationToken;

use crate::error::AppError;

/// The tags the demo's oven has, as `(tag, variable, first value, writable)`.
const OVEN: &[(&str, &str, Value, bool)] = &[
    (
        "oven/temperature",
        "Line3.Oven.Temperature",
        Value::Double(180.0),
        false,
    ),
    (
        "oven/running",
        "Line3.Oven.Running",
        Value::Bool(true),
        false,
    ),
    (
        "oven/setpoint",
        "Line3.Oven.Setpoint",
        Value::Double(180.0),
        true,
    ),
];

/// The tag prefix of the oven's rows.
pub(super) const PREFIX: &str = "oven/";

/// Starts the server on a free port and its value changes under `cancel`; returns
/// the tag map the gateway reads it with.
pub(super) async fn start(cancel: &CancellationToken) -> Result<OpcUaConfig, AppError> {
    let fail = |e: &dyn std::fmt::Display| AppError::Task {
        task: "opcua-sim",
        detail: e.to_string(),
    };
    let server = SimServer::start(SimConfig::default())
        .await
        .map_err(|e| fail(&e))?;
    let mut cfg = OpcUaConfig::new(server.endpoint());
    cfg.publishing_interval = Duration::from_millis(250);
    cfg.reconnect_max = Duration::from_secs(2);
    for (tag, var, value, writable) in OVEN {
        let node = server.add(var, value, *writable).map_err(|e| fail(&e))?;
        cfg = cfg.with_tag(tag, node)?;
        if let Some(t) = cfg.tags.last_mut() {
            t.writable = *writable;
        }
    }
    let cancel = cancel.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut n = 0u32;
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            n = n.wrapping_add(1);
            // A slow wave around 180 °C.
            let t = 180.0 + 5.0 * (f64::from(n % 100) / 100.0 * std::f64::consts::TAU).sin();
            let t = (t * 10.0).round() / 10.0;
            if let Err(e) = server.set(OVEN[0].1, Some(&Value::Double(t)), Quality::GOOD) {
                tracing::warn!("demo OPC-UA server: {e}");
            }
        }
        server.stop().await;
    });
    Ok(cfg)
}
