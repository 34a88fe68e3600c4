//! Modbus TCP and RTU: typed register maps, every byte/word order, request
//! coalescing, polling with quality, writes, and a map-driven simulator.
//!
//! The path of one reading: a [`RegisterMap`] (TOML or JSON, validated) says which tag
//! lives where; the [planner](plan) merges tags into as few read requests as the
//! protocol limits allow; the [`Poller`] sends them over a [`Connector`] (TCP, RTU serial
//! or any byte stream) with per-request timeout, retries and a per-unit circuit breaker,
//! decodes the registers with the [`codec`] and emits [`Reading`]s carrying core
//! [`Sample`](iiot_core::types::Sample)s — Good with a value, or Bad with a typed
//! [`ReadFailure`] — filtered by each tag's deadband. In a gateway, hand the poller to the
//! runtime of `iiot-edge` instead ([`Poller::into_source`]): it then emits every reading
//! and the runtime applies the same deadbands. Its [`PollerHandle`] is also a
//! [`CommandHandler`](iiot_core::command::CommandHandler): the map's coils and holding
//! registers are the targets of commands, written with FC5/FC6/FC15/FC16.
//!
//! The crate docs run a complete example against the map-driven simulator (`sim::Simulator`,
//! feature `modbus-sim`).

pub mod codec;
mod error;
pub mod map;
pub mod plan;
mod poll;
#[cfg(feature = "modbus-sim")]
#[cfg_attr(docsrs, doc(cfg(feature = "modbus-sim")))]
pub mod sim;
mod transport;

pub use error::{ExceptionCode, ReadFailure};
pub use map::{
    Area, ByteOrder, DataType, Deadband, MapConfig, MapError, RegisterMap, Tag, TagConfig,
};
pub use plan::PlanConfig;
pub use poll::{
    BreakerConfig, ModbusSource, PollStats, Poller, PollerConfig, PollerHandle, Reading,
    WriteError, WriteOutcome,
};
pub use transport::{BoxedConnect, Connector, FnConnector, TcpConnector, TransportConfig};
#[cfg(feature = "modbus-rtu")]
pub use transport::{DataBits, Parity, RtuConfig, RtuConnector, StopBits};

/// The old numeric keys of Modbus config and map files, for
/// [`iiot_core::duration::legacy::upgrade_toml`]: durations were milliseconds, except
/// the RTU `inter_frame_delay` (microseconds).
pub const LEGACY_KEYS: &[iiot_core::duration::legacy::LegacyKey] = {
    use iiot_core::duration::legacy::{LegacyKey, LegacyUnit};
    &[
        LegacyKey::duration("timeout", "timeout", LegacyUnit::Millis),
        LegacyKey::duration("retry_backoff", "retry_backoff", LegacyUnit::Millis),
        LegacyKey::duration("open_for", "open_for", LegacyUnit::Millis),
        LegacyKey::duration("max_open_for", "max_open_for", LegacyUnit::Millis),
        LegacyKey::duration("interval_ms", "interval", LegacyUnit::Millis),
        LegacyKey::duration(
            "max_report_interval_ms",
            "max_report_interval",
            LegacyUnit::Millis,
        ),
        LegacyKey::duration("inter_frame_delay", "inter_frame_delay", LegacyUnit::Micros),
    ]
};

/// OPC-UA status codes used for Bad samples, in one place so they can be swapped for
/// core's named constants.
pub(crate) mod quality_codes {
    /// Bad_Timeout.
    pub(crate) const BAD_TIMEOUT: u32 = 0x800A_0000;
    /// Bad_CommunicationError.
    pub(crate) const BAD_COMMUNICATION_ERROR: u32 = 0x8005_0000;
    /// Bad_NoCommunication.
    pub(crate) const BAD_NO_COMMUNICATION: u32 = 0x8031_0000;
    /// Bad_DeviceFailure.
    pub(crate) const BAD_DEVICE_FAILURE: u32 = 0x808B_0000;
    /// Bad_TypeMismatch.
    pub(crate) const BAD_TYPE_MISMATCH: u32 = 0x8074_0000;
    /// Bad_OutOfRange.
    #[allow(dead_code)]
    pub(crate) const BAD_OUT_OF_RANGE: u32 = 0x803C_0000;
}
