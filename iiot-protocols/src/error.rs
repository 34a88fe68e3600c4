//! The crate's one error type, [`Error`], which every operation error converts into.

#[cfg(feature = "http")]
use crate::http::HttpConfigError;
#[cfg(feature = "modbus-sim")]
use crate::modbus::sim::SimError;
#[cfg(any(feature = "modbus-tcp", feature = "modbus-rtu"))]
use crate::modbus::{
    WriteError,
    codec::CodecError,
    map::{MapError, TagProblem},
};
#[cfg(feature = "mqtt")]
use crate::mqtt::{AckError, ConfigError, IdentityError, SubscribeError};
#[cfg(feature = "opcua-sim")]
use crate::opcua::sim::OpcUaSimError;
#[cfg(feature = "opcua")]
use crate::opcua::{ConvertError, OpcUaConfigError, OpcUaError};

/// Any error of iiot-protocols, for callers that do not need to tell the operations apart.
///
/// The drivers return their own error types (building a session a
/// [`mqtt::ConfigError`](crate::mqtt::ConfigError), loading a register map a
/// [`modbus::MapError`](crate::modbus::MapError), ...), which stay the types to match on
/// when the caller reacts differently to each; every one of them converts into this enum
/// with `?`, and so does every iiot-core error (through [`Error::Core`], including the
/// [`PublishError`](iiot_core::publish::PublishError) of a confirmed publish). Each variant
/// is the operation error unchanged (`Display` and `source` are the inner error's).
///
/// A variant exists only with the feature of its driver: `Codec`, `Map`, `Tag`, `Write`
/// and `Io` with `modbus-tcp` or `modbus-rtu`, `Sim` with `modbus-sim`, `Config`,
/// `Identity`, `Subscribe` and `Ack` with `mqtt`, `Http` with `http`, `OpcUa`,
/// `OpcUaConfig` and `OpcUaConvert` with `opcua`, `OpcUaSim` with `opcua-sim`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error of iiot-core (a domain value, a topic, a codec, a publish).
    #[error(transparent)]
    Core(#[from] iiot_core::Error),
    /// Modbus registers could not be decoded, or a value encoded for a write.
    #[cfg(any(feature = "modbus-tcp", feature = "modbus-rtu"))]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "modbus-tcp", feature = "modbus-rtu"))))]
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A Modbus register map failed to load.
    #[cfg(any(feature = "modbus-tcp", feature = "modbus-rtu"))]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "modbus-tcp", feature = "modbus-rtu"))))]
    #[error(transparent)]
    Map(#[from] MapError),
    /// A Modbus address or tag definition broke a rule.
    #[cfg(any(feature = "modbus-tcp", feature = "modbus-rtu"))]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "modbus-tcp", feature = "modbus-rtu"))))]
    #[error(transparent)]
    Tag(#[from] TagProblem),
    /// A Modbus write could not be sent, or its outcome is unknown.
    #[cfg(any(feature = "modbus-tcp", feature = "modbus-rtu"))]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "modbus-tcp", feature = "modbus-rtu"))))]
    #[error(transparent)]
    Write(#[from] WriteError),
    /// A socket or serial port failed (binding the simulator, opening a transport).
    #[cfg(any(feature = "modbus-tcp", feature = "modbus-rtu"))]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "modbus-tcp", feature = "modbus-rtu"))))]
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A Modbus simulator call failed.
    #[cfg(feature = "modbus-sim")]
    #[cfg_attr(docsrs, doc(cfg(feature = "modbus-sim")))]
    #[error(transparent)]
    Sim(#[from] SimError),
    /// An MQTT configuration cannot make a session.
    #[cfg(feature = "mqtt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "mqtt")))]
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A CA, certificate or key file failed the identity check.
    #[cfg(feature = "mqtt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "mqtt")))]
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// An MQTT subscription failed.
    #[cfg(feature = "mqtt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "mqtt")))]
    #[error(transparent)]
    Subscribe(#[from] SubscribeError),
    /// A manual MQTT ack could not be queued (the token is inside).
    #[cfg(feature = "mqtt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "mqtt")))]
    #[error(transparent)]
    Ack(#[from] AckError),
    /// An HTTP(S) image fetcher configuration is unusable (a CA, certificate or
    /// key that cannot be read, a bad token).
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    #[error(transparent)]
    Http(#[from] HttpConfigError),
    /// An OPC-UA operation failed (connect, read, write, browse).
    #[cfg(feature = "opcua")]
    #[cfg_attr(docsrs, doc(cfg(feature = "opcua")))]
    #[error(transparent)]
    OpcUa(#[from] OpcUaError),
    /// An OPC-UA configuration is unusable.
    #[cfg(feature = "opcua")]
    #[cfg_attr(docsrs, doc(cfg(feature = "opcua")))]
    #[error(transparent)]
    OpcUaConfig(#[from] OpcUaConfigError),
    /// A node id string or an OPC-UA value could not be converted.
    #[cfg(feature = "opcua")]
    #[cfg_attr(docsrs, doc(cfg(feature = "opcua")))]
    #[error(transparent)]
    OpcUaConvert(#[from] ConvertError),
    /// The OPC-UA simulator failed.
    #[cfg(feature = "opcua-sim")]
    #[cfg_attr(docsrs, doc(cfg(feature = "opcua-sim")))]
    #[error(transparent)]
    OpcUaSim(#[from] OpcUaSimError),
}

// Every iiot-core error converts too, through `Error::Core`.
iiot_core::from_core_errors!(Error, Core);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_errors_convert_through_core() {
        let e: Error = iiot_core::types::DeviceId::new("a b").unwrap_err().into();
        assert!(matches!(e, Error::Core(iiot_core::Error::Validation(_))));
    }

    #[cfg(any(feature = "modbus-tcp", feature = "modbus-rtu"))]
    #[test]
    fn modbus_errors_convert() {
        fn load() -> Result<crate::modbus::RegisterMap, Error> {
            Ok(crate::modbus::RegisterMap::from_toml_str("not toml [")?)
        }
        let e = load().unwrap_err();
        assert!(matches!(e, Error::Map(MapError::Parse { .. })), "{e}");
        assert!(
            e.to_string().starts_with("cannot parse toml register map"),
            "{e}"
        );
    }

    #[cfg(feature = "mqtt")]
    #[test]
    fn mqtt_errors_convert() {
        let e: Error = SubscribeError {
            filter: "a/#/b".into(),
            kind: crate::mqtt::SubscribeErrorKind::Timeout,
        }
        .into();
        assert!(matches!(e, Error::Subscribe(_)));
    }

    #[test]
    fn stays_small() {
        assert!(
            std::mem::size_of::<Error>() <= 128,
            "{}",
            std::mem::size_of::<Error>()
        );
    }
}
