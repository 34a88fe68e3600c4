//! `iiot gateway`: Modbus poll → deadband → telemetry batches → outbox → MQTT.
//!
//! The config is complete and checked at start; the run loop waits for the
//! iiot-edge outbox and forwarder.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use iiot_core::topic::UnsPath;
use iiot_core::types::DeviceId;
use iiot_protocols::modbus::{PollerConfig, RegisterMap, TransportConfig};
use serde::Deserialize;

use crate::config::{self, ConfigError};
use crate::error::AppError;

/// The device's place in the UNS: `{enterprise}/{site}/{area}/{line}/{device_type}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnsConfig {
    /// Level 1.
    pub enterprise: String,
    /// Level 2.
    pub site: String,
    /// Level 3.
    pub area: String,
    /// Level 4.
    pub line: String,
    /// Level 5.
    pub device_type: String,
}

/// `[modbus]`: where the PLC is and how to poll it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModbusSection {
    /// TCP host/port or an RTU serial line.
    pub transport: TransportConfig,
    /// Timeouts, retries, coalescing, circuit breaker.
    pub poller: PollerConfig,
}

/// `[mqtt]`: the uplink.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayMqtt {
    /// `mqtt://host[:port]` or `mqtts://host[:port]`.
    pub broker_url: String,
    /// Keepalive, seconds.
    pub keepalive_s: u64,
    /// CA certificate (mqtts).
    pub ca_path: Option<PathBuf>,
    /// Client certificate whose CN is the device id (mqtts).
    pub client_cert_path: Option<PathBuf>,
    /// Its key.
    pub client_key_path: Option<PathBuf>,
    /// Firmware version announced in the birth and batch metadata.
    pub firmware_version: Option<String>,
    /// Gateway id announced in the birth and batch metadata.
    pub gateway_id: Option<String>,
}

impl Default for GatewayMqtt {
    fn default() -> Self {
        Self {
            broker_url: "mqtt://127.0.0.1:1883".into(),
            keepalive_s: 30,
            ca_path: None,
            client_cert_path: None,
            client_key_path: None,
            firmware_version: None,
            gateway_id: None,
        }
    }
}

/// `[batch]`: how readings become telemetry batches.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchSection {
    /// Close a batch at this many samples.
    pub max_samples: NonZeroUsize,
    /// Close a batch at the latest this long after its first sample, ms.
    pub max_delay_ms: u64,
}

impl Default for BatchSection {
    fn default() -> Self {
        Self {
            max_samples: NonZeroUsize::new(100).unwrap_or(NonZeroUsize::MIN),
            max_delay_ms: 1000,
        }
    }
}

/// `[outbox]`: the store-and-forward buffer.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxSection {
    /// The sled directory, relative to the working directory.
    pub path: PathBuf,
    /// Bound on stored bytes.
    pub max_bytes: u64,
    /// Bound on record age, seconds.
    pub max_age_s: u64,
    /// Records per second replayed after an outage, on top of live data.
    pub replay_per_s: u32,
}

impl Default for OutboxSection {
    fn default() -> Self {
        Self {
            path: PathBuf::from("iiot-gateway-outbox"),
            max_bytes: 256 * 1024 * 1024,
            max_age_s: 7 * 24 * 3600,
            replay_per_s: 200,
        }
    }
}

/// gateway.toml as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewayFile {
    device_id: String,
    uns: UnsConfig,
    register_map: PathBuf,
    #[serde(default)]
    modbus: ModbusSection,
    #[serde(default)]
    mqtt: GatewayMqtt,
    #[serde(default)]
    batch: BatchSection,
    #[serde(default)]
    outbox: OutboxSection,
}

/// A checked gateway.toml with its register map loaded.
#[derive(Debug)]
pub struct GatewaySetup {
    /// The device's UNS path (its last level is the device id and MQTT client id).
    pub path: UnsPath,
    /// The register map.
    pub map: RegisterMap,
    /// Modbus settings.
    pub modbus: ModbusSection,
    /// MQTT settings.
    pub mqtt: GatewayMqtt,
    /// Batching.
    pub batch: BatchSection,
    /// Outbox.
    pub outbox: OutboxSection,
}

impl GatewaySetup {
    /// Reads and checks `file`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and the key.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let f: GatewayFile = config::load(file)?;
        let device = DeviceId::new(f.device_id.clone())
            .map_err(|e| ConfigError::invalid(file, "device_id", e.to_string()))?;
        let u = &f.uns;
        let path = UnsPath::new(
            &u.enterprise,
            &u.site,
            &u.area,
            &u.line,
            &u.device_type,
            device,
        )
        .map_err(|e| ConfigError::invalid(file, "uns", e.to_string()))?;
        if !(f.mqtt.broker_url.starts_with("mqtt://") || f.mqtt.broker_url.starts_with("mqtts://"))
        {
            return Err(ConfigError::invalid(
                file,
                "mqtt.broker_url",
                format!(
                    "{:?} must start with mqtt:// or mqtts://",
                    f.mqtt.broker_url
                ),
            ));
        }
        if f.batch.max_delay_ms == 0 {
            return Err(ConfigError::invalid(
                file,
                "batch.max_delay_ms",
                "must be at least 1",
            ));
        }
        let map = config::load_register_map(file, "register_map", &f.register_map)?;
        Ok(Self {
            path,
            map,
            modbus: f.modbus,
            mqtt: f.mqtt,
            batch: f.batch,
            outbox: f.outbox,
        })
    }
}

/// Runs the gateway.
///
/// # Errors
/// [`AppError::NotYet`] until the iiot-edge outbox lands.
#[allow(clippy::unused_async)] // awaits the forwarder once the outbox lands
pub async fn run(setup: GatewaySetup) -> Result<(), AppError> {
    tracing::info!(device = %setup.path.device_id(), tags = setup.map.tags().len(), "gateway config checked");
    Err(AppError::NotYet {
        command: "gateway",
        missing: "the iiot-edge store-and-forward outbox",
    })
}
