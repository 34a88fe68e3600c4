//! The binary's error: one variant per thing that can stop a command.

use crate::config::ConfigError;

/// Why a command stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// A config file is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An I/O operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The Prometheus endpoint could not be started.
    #[error("cannot serve metrics on {addr}: {detail}")]
    Metrics {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// What the exporter said.
        detail: String,
    },
    /// The payload given to `iiot decode` is not a message of the kinds tried.
    #[error("payload rejected:\n{reasons}")]
    Rejected {
        /// One line per kind tried, with the dead-letter label and reason.
        reasons: String,
    },
    /// The ingest MQTT source could not start.
    #[error("MQTT source: {0}")]
    Source(#[from] iiot_ingest::source::mqtt::MqttSourceError),
    /// The gateway's outbox could not be opened.
    #[error("outbox: {0}")]
    Outbox(#[from] iiot_edge::outbox::OpenError),
    /// Bad command-line arguments (what is wrong, naming the flag).
    #[error("{0}")]
    Usage(String),
    /// A command could not be issued.
    #[error("command: {0}")]
    Issue(#[from] iiot_ingest::commands::IssueError),
    /// The command ledger could not be opened.
    #[error("commands: {0}")]
    Ledger(#[from] iiot_edge::commands::LedgerError),
    /// The gateway could not be assembled (a runtime wiring rule broken).
    #[error("gateway: {0}")]
    Wiring(#[from] iiot_edge::runtime::NoControlLane),
    /// The MQTT session could not be built.
    #[error("MQTT: {0}")]
    Mqtt(#[from] iiot_protocols::mqtt::ConfigError),
    /// A subscription failed.
    #[error("MQTT: {0}")]
    Subscribe(#[from] iiot_protocols::mqtt::SubscribeError),
    /// The sink could not be opened.
    #[error("sink: {0}")]
    Sink(#[from] iiot_ingest::sink::SinkError),
    /// The ingest pipeline stopped on an error.
    #[error("ingest: {0}")]
    Pipeline(#[from] iiot_ingest::PipelineError),
    /// Firmware updates could not be set up (slots, agent record, image client).
    #[error("ota: {0}")]
    Ota(String),
    /// An OPC-UA server could not be reached or refused an operation.
    #[error("OPC-UA: {0}")]
    OpcUa(#[from] iiot_protocols::opcua::OpcUaError),
    /// An OPC-UA configuration is unusable.
    #[error("OPC-UA: {0}")]
    OpcUaConfig(#[from] iiot_protocols::opcua::OpcUaConfigError),
    /// A background task panicked or was aborted.
    #[error("task {task} failed: {detail}")]
    Task {
        /// Which task.
        task: &'static str,
        /// The join error.
        detail: String,
    },
}

impl AppError {
    /// An I/O error with context.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    /// The process exit code for this error: 2 for configuration problems and bad
    /// arguments, 3 for a rejected payload, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) | Self::Usage(_) | Self::OpcUaConfig(_) => 2,
            Self::Rejected { .. } => 3,
            _ => 1,
        }
    }
}
