//! `iiot gateway`: Modbus poll and OPC-UA subscription → deadband → telemetry batches →
//! outbox → MQTT.
//!
//! The path of one reading: the [`Poller`](iiot_protocols::modbus::Poller) reads the
//! plan's coalesced requests and keeps what moved beyond each tag's deadband; the
//! batcher closes a [`TelemetryBatch`](iiot_core::types::TelemetryBatch) at a size or
//! age bound and appends it to the [`Outbox`](iiot_edge::outbox::Outbox) *first*,
//! stamping it with the outbox's sequence number; the
//! [`Forwarder`](iiot_edge::forwarder::Forwarder) drains the outbox over the MQTT
//! [`Session`](iiot_protocols::mqtt::Session) (QoS 1, retained birth after every
//! connect, last will `online = false`) and removes a record only after its PUBACK.
//!
//! What was produced is counted ([`GatewayCounters`], the
//! `iiot_reference_gateway_samples_total` metric) and, with `produced_log` set,
//! recorded line by line in a file that outlives the process ([`produced`]).

pub mod ota;
pub mod produced;
mod run;

pub use produced::{ProducedEntry, ProducedLog, ProducedSample};
pub use run::{GatewayCounters, GatewayExit, RunningGateway, run, start};

use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use iiot_core::topic::UnsPath;
use iiot_core::types::DeviceId;
use iiot_edge::commands::{CommandConfig, LedgerConfig};
use iiot_edge::forwarder::ForwarderConfig;
use iiot_edge::outbox::OutboxConfig;
use iiot_protocols::modbus::{PollerConfig, RegisterMap, TransportConfig};
use iiot_protocols::mqtt::{MqttConfig, WhenDisconnected};
use serde::Deserialize;

use crate::config::{self, ConfigError};

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
    pub url: String,
    /// MQTT version: `"5"` (default) or `"3.1.1"`.
    pub protocol: iiot_protocols::mqtt::MqttVersion,
    /// Username for the broker, if it wants one.
    pub username: Option<String>,
    /// Password, with `username`.
    pub password: Option<String>,
    /// Keepalive (`keepalive = "30s"`).
    #[serde(with = "iiot_core::duration::human")]
    pub keepalive: Duration,
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
    /// First wait before a reconnect attempt; doubles per failed attempt.
    #[serde(with = "iiot_core::duration::human")]
    pub reconnect_min: Duration,
    /// Longest wait between reconnect attempts.
    #[serde(with = "iiot_core::duration::human")]
    pub reconnect_max: Duration,
}

impl Default for GatewayMqtt {
    fn default() -> Self {
        Self {
            url: "mqtt://127.0.0.1:1883".into(),
            protocol: iiot_protocols::mqtt::MqttVersion::V5,
            username: None,
            password: None,
            keepalive: Duration::from_secs(30),
            ca_path: None,
            client_cert_path: None,
            client_key_path: None,
            firmware_version: None,
            gateway_id: None,
            reconnect_min: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(5),
        }
    }
}

impl GatewayMqtt {
    /// The MQTT session of the device at `path`: client id and CN rule from its
    /// device id, birth and last will on its status topic.
    pub fn session_config(&self, path: &UnsPath) -> MqttConfig {
        let m = self;
        let device = path.device_id().as_str();
        let mut cfg = MqttConfig::new(&m.url, device, path.to_string());
        cfg.set_protocol(m.protocol)
            .set_keepalive(m.keepalive)
            // The outbox keeps what cannot be sent; the session must not queue it too.
            .set_when_disconnected(WhenDisconnected::Refuse)
            .set_reconnect_backoff(m.reconnect_min, m.reconnect_max);
        if let Some(ca) = &m.ca_path {
            cfg.set_ca_path(ca);
        }
        if let (Some(c), Some(k)) = (&m.client_cert_path, &m.client_key_path) {
            cfg.set_client_identity(c, k);
        }
        if let Some(user) = &m.username {
            cfg.set_credentials(user, m.password.clone().unwrap_or_default());
        }
        if let Some(v) = &m.firmware_version {
            cfg.set_firmware_version(v);
        }
        if let Some(g) = &m.gateway_id {
            cfg.set_gateway_id(g);
        }
        // Commands are PUBACKed only once the ledger recorded them.
        cfg.set_inbound_acks(iiot_protocols::mqtt::InboundAcks::Manual);
        cfg
    }
}

/// `[batch]`: how readings become telemetry batches.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchSection {
    /// Close a batch at this many samples.
    pub max_samples: NonZeroUsize,
    /// Close a batch at the latest this long after its first sample.
    #[serde(with = "iiot_core::duration::human")]
    pub max_delay: Duration,
}

impl Default for BatchSection {
    fn default() -> Self {
        Self {
            max_samples: NonZeroUsize::new(100).unwrap_or(NonZeroUsize::MIN),
            max_delay: Duration::from_secs(1),
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
    opcua_map: Option<PathBuf>,
    #[serde(default = "default_data_dir")]
    data_dir: PathBuf,
    #[serde(default)]
    produced_log: Option<PathBuf>,
    #[serde(default)]
    modbus: ModbusSection,
    #[serde(default)]
    mqtt: GatewayMqtt,
    #[serde(default)]
    batch: BatchSection,
    #[serde(default)]
    outbox: OutboxConfig,
    #[serde(default = "default_forwarder")]
    forwarder: ForwarderConfig,
    #[serde(default)]
    commands: CommandsSection,
    #[serde(default)]
    ota: ota::OtaSection,
}

/// `[commands]`: commands down to the PLC (see `iiot_edge::commands`). On by
/// default: the gateway subscribes to its `commands/+` with manual acks, records
/// every command in `{data_dir}/commands` before its PUBACK, executes it through
/// the register map's writes and sends its ack on the control lane
/// (`{data_dir}/control`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommandsSection {
    /// Take commands at all.
    pub enabled: bool,
    /// How long finished commands are remembered (and older ones refused).
    #[serde(with = "iiot_core::duration::human")]
    pub retention: Duration,
    /// How many finished commands are remembered at most.
    pub max_entries: usize,
    /// `[commands.executor]`: skew, value age, handler timeout, queue, rate limit.
    pub executor: CommandConfig,
}

impl Default for CommandsSection {
    fn default() -> Self {
        let l = LedgerConfig::default();
        Self {
            enabled: true,
            retention: l.retention,
            max_entries: l.max_entries,
            executor: CommandConfig::default(),
        }
    }
}

impl CommandsSection {
    /// The ledger's bounds.
    pub fn ledger(&self) -> LedgerConfig {
        LedgerConfig {
            retention: self.retention,
            max_entries: self.max_entries,
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("iiot-gateway-data")
}

/// The forwarder defaults of the reference deployment: retries after 0.5 s up to
/// 5 s (the SDK's 30 s..1 h suits a fleet talking to a cloud broker, not a demo),
/// backlog replayed at 500 records/s.
pub fn default_forwarder() -> ForwarderConfig {
    let mut f = ForwarderConfig::default();
    f.set_backoff(Duration::from_millis(500), Duration::from_secs(5))
        .set_replay_rate(NonZeroU32::new(500));
    f
}

/// A checked gateway.toml with its register map loaded.
#[derive(Debug)]
pub struct GatewaySetup {
    /// The device's UNS path (its last level is the device id and MQTT client id).
    pub path: UnsPath,
    /// The register map.
    pub map: RegisterMap,
    /// The OPC-UA server and its tags, read beside the PLC (`None`: no OPC-UA).
    pub opcua: Option<iiot_protocols::opcua::OpcUaConfig>,
    /// Modbus settings.
    pub modbus: ModbusSection,
    /// MQTT settings.
    pub mqtt: GatewayMqtt,
    /// Batching.
    pub batch: BatchSection,
    /// Where the outbox lives (`{data_dir}/outbox`).
    pub data_dir: PathBuf,
    /// Where to append the [produced log](produced) (`None`: no log).
    pub produced_log: Option<PathBuf>,
    /// Outbox bounds and durability.
    pub outbox: OutboxConfig,
    /// Forwarder pacing and back-off.
    pub forwarder: ForwarderConfig,
    /// Commands.
    pub commands: CommandsSection,
    /// Firmware updates (`None`: off).
    pub ota: Option<ota::OtaSetupConfig>,
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
        if !(f.mqtt.url.starts_with("mqtt://") || f.mqtt.url.starts_with("mqtts://")) {
            return Err(ConfigError::invalid(
                file,
                "mqtt.url",
                format!("{:?} must start with mqtt:// or mqtts://", f.mqtt.url),
            ));
        }
        if f.mqtt.keepalive < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                file,
                "mqtt.keepalive",
                "must be at least 1s",
            ));
        }
        if f.mqtt.reconnect_min.is_zero() || f.mqtt.reconnect_max < f.mqtt.reconnect_min {
            return Err(ConfigError::invalid(
                file,
                "mqtt.reconnect_max",
                "need 0s < reconnect_min <= reconnect_max",
            ));
        }
        if f.batch.max_delay.is_zero() {
            return Err(ConfigError::invalid(
                file,
                "batch.max_delay",
                "must be more than 0s",
            ));
        }
        // The MQTT session as it will be built (TLS files read and checked), so that a
        // TLS mistake stops the gateway here, naming the key, before any state exists.
        config::check_mqtt_session(file, &f.mqtt.session_config(&path))?;
        let map = config::load_register_map(file, "register_map", &f.register_map)?;
        let opcua = match &f.opcua_map {
            Some(p) => Some(config::load_opcua_map(file, "opcua_map", p)?),
            None => None,
        };
        if let Some(o) = &opcua
            && let Some(t) = o.tags.iter().find(|t| map.find(t.name.as_str()).is_some())
        {
            return Err(ConfigError::invalid(
                file,
                "opcua_map",
                format!(
                    "tag {} is in the register map too: give each tag one source",
                    t.name
                ),
            ));
        }
        let ota = f.ota.check(file, &u.device_type)?;
        if ota.is_some()
            && let Some(v) = &f.mqtt.firmware_version
            && semver::Version::parse(v).is_err()
        {
            return Err(ConfigError::invalid(
                file,
                "mqtt.firmware_version",
                format!("{v:?} must be a semantic version (x.y.z) when [ota] is enabled"),
            ));
        }
        Ok(Self {
            path,
            map,
            opcua,
            modbus: f.modbus,
            mqtt: f.mqtt,
            batch: f.batch,
            data_dir: f.data_dir,
            produced_log: f.produced_log,
            outbox: f.outbox,
            forwarder: f.forwarder,
            commands: f.commands,
            ota,
        })
    }
}
