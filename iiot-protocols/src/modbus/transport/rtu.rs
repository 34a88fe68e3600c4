//! Modbus RTU over a serial port.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_serial::SerialPortBuilderExt as _;

use super::{BoxedConnect, Connector};

/// Serial parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    /// No parity bit.
    None,
    /// Odd parity.
    Odd,
    /// Even parity (the Modbus RTU default).
    #[default]
    Even,
}

/// Serial stop bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopBits {
    /// One stop bit (the default).
    #[default]
    One,
    /// Two stop bits.
    Two,
}

/// Serial data bits: 7 or 8, written as the number (`data_bits = 8`); any other
/// number is refused at load instead of being read as 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum DataBits {
    /// Seven data bits (Modbus ASCII lines, some old devices).
    Seven,
    /// Eight data bits (Modbus RTU).
    #[default]
    Eight,
}

impl DataBits {
    /// The number of bits.
    pub const fn bits(self) -> u8 {
        match self {
            Self::Seven => 7,
            Self::Eight => 8,
        }
    }
}

impl TryFrom<u8> for DataBits {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            7 => Ok(Self::Seven),
            8 => Ok(Self::Eight),
            n => Err(format!("data_bits must be 7 or 8, not {n}")),
        }
    }
}

impl From<DataBits> for u8 {
    fn from(d: DataBits) -> u8 {
        d.bits()
    }
}

/// A serial line for Modbus RTU.
///
/// ## Defaults
/// `/dev/ttyUSB0`, 9600 baud, 8 data bits, even parity, 1 stop bit, inter-frame delay
/// from the baud rate (3.5 character times, 1.75 ms above 19200 baud).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtuConfig {
    /// Serial device path.
    pub path: String,
    /// Baud rate.
    pub baud: u32,
    /// Parity.
    pub parity: Parity,
    /// Data bits, 7 or 8.
    pub data_bits: DataBits,
    /// Stop bits.
    pub stop_bits: StopBits,
    /// Idle time between frames (`inter_frame_delay = "2ms"`); `None` computes 3.5
    /// character times. Files that wrote a bare number meant microseconds.
    #[serde(
        with = "iiot_core::duration::human::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub inter_frame_delay: Option<Duration>,
}

impl Default for RtuConfig {
    fn default() -> Self {
        Self {
            path: "/dev/ttyUSB0".to_owned(),
            baud: 9600,
            parity: Parity::Even,
            data_bits: DataBits::Eight,
            stop_bits: StopBits::One,
            inter_frame_delay: None,
        }
    }
}

impl RtuConfig {
    /// A line at `path` and `baud`, other settings default.
    pub fn new(path: impl Into<String>, baud: u32) -> Self {
        Self {
            path: path.into(),
            baud,
            ..Self::default()
        }
    }

    /// Bits on the wire per character: start + data + parity + stop.
    pub fn bits_per_char(&self) -> u32 {
        1 + u32::from(self.data_bits.bits())
            + u32::from(self.parity != Parity::None)
            + match self.stop_bits {
                StopBits::One => 1,
                StopBits::Two => 2,
            }
    }

    /// Time one character takes on the wire.
    pub fn char_time(&self) -> Duration {
        let baud = u64::from(self.baud.max(1));
        Duration::from_nanos(u64::from(self.bits_per_char()) * 1_000_000_000 / baud)
    }

    /// Time the line is busy for one poll cycle of `requests` (reads): per request an
    /// 8-byte request frame, a `5 + payload` byte response frame and two 3.5-character
    /// gaps. Device turnaround time is not included.
    pub fn cycle_wire_time(&self, requests: &[crate::modbus::plan::ReadRequest]) -> Duration {
        let chars: u64 = requests
            .iter()
            .map(|r| {
                let payload = if r.area.is_bits() {
                    u64::from(r.count).div_ceil(8)
                } else {
                    2 * u64::from(r.count)
                };
                8 + 5 + payload
            })
            .sum();
        let gaps = self.effective_inter_frame_delay() * 2 * requests.len() as u32;
        Duration::from_nanos(
            chars * u64::from(self.bits_per_char()) * 1_000_000_000 / u64::from(self.baud.max(1)),
        ) + gaps
    }

    /// The effective inter-frame delay.
    pub fn effective_inter_frame_delay(&self) -> Duration {
        self.inter_frame_delay.unwrap_or_else(|| {
            if self.baud > 19_200 {
                Duration::from_micros(1750)
            } else {
                self.char_time() * 7 / 2
            }
        })
    }
}

/// Opens the serial port of an [`RtuConfig`]; all slaves on the bus share it.
#[derive(Debug, Clone)]
pub struct RtuConnector {
    cfg: RtuConfig,
}

impl RtuConnector {
    /// A connector for `cfg`.
    pub fn new(cfg: RtuConfig) -> Self {
        Self { cfg }
    }
}

impl Connector for RtuConnector {
    fn peer(&self) -> String {
        format!("serial line {}", self.cfg.path)
    }

    fn connect(&mut self) -> BoxedConnect {
        let cfg = self.cfg.clone();
        Box::pin(async move {
            let port = tokio_serial::new(&cfg.path, cfg.baud)
                .parity(match cfg.parity {
                    Parity::None => tokio_serial::Parity::None,
                    Parity::Odd => tokio_serial::Parity::Odd,
                    Parity::Even => tokio_serial::Parity::Even,
                })
                .data_bits(match cfg.data_bits {
                    DataBits::Seven => tokio_serial::DataBits::Seven,
                    DataBits::Eight => tokio_serial::DataBits::Eight,
                })
                .stop_bits(match cfg.stop_bits {
                    StopBits::One => tokio_serial::StopBits::One,
                    StopBits::Two => tokio_serial::StopBits::Two,
                })
                .open_native_async()
                .map_err(std::io::Error::from)?;
            Ok(tokio_modbus::client::rtu::attach(port))
        })
    }
    fn inter_frame_delay(&self) -> std::time::Duration {
        self.cfg.effective_inter_frame_delay()
    }
    fn reconnect_after_timeout(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_never_guessed() {
        let c: RtuConfig =
            serde_json::from_str(r#"{"inter_frame_delay":"2ms","data_bits":7}"#).unwrap();
        assert_eq!(c.inter_frame_delay, Some(Duration::from_millis(2)));
        assert_eq!(c.data_bits, DataBits::Seven);
        let e = serde_json::from_str::<RtuConfig>(r#"{"inter_frame_delay":20}"#).unwrap_err();
        assert!(e.to_string().contains("needs a unit"), "{e}");
        let e = serde_json::from_str::<RtuConfig>(r#"{"data_bits":6}"#).unwrap_err();
        assert!(
            e.to_string().contains("data_bits must be 7 or 8, not 6"),
            "{e}"
        );
    }

    #[test]
    fn char_and_frame_times() {
        let c = RtuConfig::new("/dev/null", 9600);
        assert_eq!(c.bits_per_char(), 11);
        assert_eq!(c.char_time(), Duration::from_nanos(1_145_833));
        assert_eq!(
            c.effective_inter_frame_delay(),
            Duration::from_nanos(4_010_415)
        );
        assert_eq!(
            RtuConfig::new("/dev/null", 115_200).effective_inter_frame_delay(),
            Duration::from_micros(1750)
        );
    }

    #[test]
    fn wire_time_of_a_cycle() {
        use crate::modbus::map::Area;
        use crate::modbus::plan::ReadRequest;
        let c = RtuConfig::new("/dev/null", 9600);
        let r = ReadRequest {
            unit_id: 1,
            area: Area::HoldingRegister,
            group: 0,
            start: 0,
            count: 10,
            tags: vec![0],
        };
        // 8 + 5 + 20 = 33 chars × 11 bits / 9600 = 37.8125 ms, + 2 × 4.0104 ms gaps.
        let t = c.cycle_wire_time(&[r]);
        assert_eq!(t, Duration::from_nanos(37_812_500 + 2 * 4_010_415));
    }
}
