//! Exception codes and the reasons a read or write failed.

use std::fmt;
use std::io;

use iiot_core::quality::Quality;

use super::quality_codes;

/// A Modbus exception code: the device understood the request and said "no".
///
/// This is a value, not an error: a read that gets an exception yields Bad samples
/// carrying it, a write that gets one returns [`WriteOutcome::Refused`](super::WriteOutcome::Refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExceptionCode {
    /// 0x01: the function code is not supported.
    IllegalFunction,
    /// 0x02: the address range is not available on the device.
    IllegalDataAddress,
    /// 0x03: a value in the request is not allowed.
    IllegalDataValue,
    /// 0x04: unrecoverable error in the device.
    ServerDeviceFailure,
    /// 0x05: accepted, processing takes long.
    Acknowledge,
    /// 0x06: the device is busy.
    ServerDeviceBusy,
    /// 0x08: memory parity error.
    MemoryParityError,
    /// 0x0A: a gateway has no path to the target.
    GatewayPathUnavailable,
    /// 0x0B: the target behind a gateway did not respond.
    GatewayTargetDevice,
    /// Any other code.
    Other(u8),
}

impl ExceptionCode {
    /// From the code byte.
    pub const fn from_code(code: u8) -> Self {
        match code {
            0x01 => Self::IllegalFunction,
            0x02 => Self::IllegalDataAddress,
            0x03 => Self::IllegalDataValue,
            0x04 => Self::ServerDeviceFailure,
            0x05 => Self::Acknowledge,
            0x06 => Self::ServerDeviceBusy,
            0x08 => Self::MemoryParityError,
            0x0A => Self::GatewayPathUnavailable,
            0x0B => Self::GatewayTargetDevice,
            other => Self::Other(other),
        }
    }

    /// The code byte.
    pub const fn code(self) -> u8 {
        match self {
            Self::IllegalFunction => 0x01,
            Self::IllegalDataAddress => 0x02,
            Self::IllegalDataValue => 0x03,
            Self::ServerDeviceFailure => 0x04,
            Self::Acknowledge => 0x05,
            Self::ServerDeviceBusy => 0x06,
            Self::MemoryParityError => 0x08,
            Self::GatewayPathUnavailable => 0x0A,
            Self::GatewayTargetDevice => 0x0B,
            Self::Other(c) => c,
        }
    }
}

impl fmt::Display for ExceptionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::IllegalFunction => "illegal function",
            Self::IllegalDataAddress => "illegal data address",
            Self::IllegalDataValue => "illegal data value",
            Self::ServerDeviceFailure => "server device failure",
            Self::Acknowledge => "acknowledge",
            Self::ServerDeviceBusy => "server device busy",
            Self::MemoryParityError => "memory parity error",
            Self::GatewayPathUnavailable => "gateway path unavailable",
            Self::GatewayTargetDevice => "gateway target device failed to respond",
            Self::Other(_) => "exception",
        };
        write!(f, "{name} (0x{:02X})", self.code())
    }
}

impl From<tokio_modbus::ExceptionCode> for ExceptionCode {
    fn from(e: tokio_modbus::ExceptionCode) -> Self {
        Self::from_code(u8::from(e))
    }
}

impl From<ExceptionCode> for tokio_modbus::ExceptionCode {
    fn from(e: ExceptionCode) -> Self {
        tokio_modbus::ExceptionCode::new(e.code())
    }
}

/// Why a tag has no value in a poll: the typed reason behind its Bad quality.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadFailure {
    /// No answer within the request timeout, after every retry.
    #[error("timeout after {attempts} attempts")]
    Timeout {
        /// Attempts made (1 + retries).
        attempts: u32,
    },
    /// The device answered with an exception.
    #[error("device exception: {0}")]
    Exception(ExceptionCode),
    /// The connection failed or broke (after every retry).
    #[error("connection: {kind}")]
    Connection {
        /// The I/O error kind.
        kind: io::ErrorKind,
    },
    /// The device answered with a malformed or mismatching frame (bad CRC, wrong unit or function).
    #[error("protocol error")]
    Protocol,
    /// The unit's circuit breaker is open: it kept timing out, so it is not polled for now.
    #[error("circuit open: unit not polled until it recovers")]
    CircuitOpen,
    /// The registers did not decode to the tag's type (a string with too few bytes, a value
    /// that does not fit after scaling).
    #[error("cannot decode value")]
    Decode,
}

impl ReadFailure {
    /// The OPC-UA quality this failure is reported with.
    pub fn quality(&self) -> Quality {
        let code = match self {
            Self::Timeout { .. } => quality_codes::BAD_TIMEOUT,
            Self::Exception(_) => quality_codes::BAD_DEVICE_FAILURE,
            Self::Connection { .. } | Self::Protocol => quality_codes::BAD_COMMUNICATION_ERROR,
            Self::CircuitOpen => quality_codes::BAD_NO_COMMUNICATION,
            Self::Decode => quality_codes::BAD_TYPE_MISMATCH,
        };
        Quality::from_status_code(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exception_codes_round_trip() {
        for c in 0u8..=255 {
            assert_eq!(ExceptionCode::from_code(c).code(), c);
        }
        assert_eq!(
            ExceptionCode::from(tokio_modbus::ExceptionCode::IllegalDataAddress),
            ExceptionCode::IllegalDataAddress
        );
    }

    #[test]
    fn failures_are_bad() {
        for f in [
            ReadFailure::Timeout { attempts: 4 },
            ReadFailure::Exception(ExceptionCode::ServerDeviceBusy),
            ReadFailure::Connection {
                kind: io::ErrorKind::ConnectionRefused,
            },
            ReadFailure::Protocol,
            ReadFailure::CircuitOpen,
            ReadFailure::Decode,
        ] {
            assert_eq!(f.quality().status_code() >> 30, 0b10, "{f}");
        }
        assert_eq!(
            ReadFailure::Timeout { attempts: 1 }.quality().status_code(),
            0x800A_0000
        );
    }
}
