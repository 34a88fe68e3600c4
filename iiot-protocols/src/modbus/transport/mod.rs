//! Transports: how the poller gets a tokio-modbus client context.
//!
//! A [`Connector`] opens a fresh [`Context`] whenever the poller needs one (at start and
//! after a broken connection). TCP dials a socket; RTU opens a serial port; tests and
//! callers with their own streams (TLS, a pty, an in-memory duplex) use [`FnConnector`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio_modbus::client::Context;

/// The future a [`Connector`] returns.
pub type BoxedConnect = Pin<Box<dyn Future<Output = io::Result<Context>> + Send>>;

/// Opens client contexts for one connection or bus.
pub trait Connector: Send + 'static {
    /// Opens a fresh context. The poller sets the unit id before every request.
    fn connect(&mut self) -> BoxedConnect;

    /// What this connects to, for logs: `Modbus TCP 10.0.0.5:502`, `serial line
    /// /dev/ttyUSB0`.
    fn peer(&self) -> String {
        "the Modbus peer".to_owned()
    }

    /// Idle time the line needs between frames (RTU's 3.5 character times); zero for TCP.
    fn inter_frame_delay(&self) -> Duration {
        Duration::ZERO
    }

    /// Whether a timed-out request leaves the connection unusable. True for TCP (a late
    /// answer would arrive under a stale transaction id, so the poller reconnects);
    /// false for a serial bus, where one silent slave says nothing about the line.
    fn reconnect_after_timeout(&self) -> bool {
        true
    }
}

/// Modbus TCP to one host and port (all unit ids behind it share the connection).
#[derive(Debug, Clone)]
pub struct TcpConnector {
    host: String,
    port: u16,
}

impl TcpConnector {
    /// Connects to `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }

    /// Connects to `host` (name or IP, resolved at every connect) and `port` (502 by
    /// convention).
    pub fn host(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }
}

impl Connector for TcpConnector {
    fn peer(&self) -> String {
        format!("Modbus TCP {}:{}", self.host, self.port)
    }

    fn connect(&mut self) -> BoxedConnect {
        let (host, port) = (self.host.clone(), self.port);
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            stream.set_nodelay(true)?;
            Ok(tokio_modbus::client::tcp::attach(stream))
        })
    }
}

/// A connector from a closure: any transport, e.g. an in-memory RTU bus in tests.
pub struct FnConnector<F> {
    f: F,
    inter_frame_delay: Duration,
    reconnect_after_timeout: bool,
}

impl<F> FnConnector<F>
where
    F: FnMut() -> BoxedConnect + Send + 'static,
{
    /// A TCP-like connector (no inter-frame delay, reconnect after a timeout).
    pub fn new(f: F) -> Self {
        Self {
            f,
            inter_frame_delay: Duration::ZERO,
            reconnect_after_timeout: true,
        }
    }

    /// A bus-like connector: keeps the line after a timeout and waits `delay` between frames.
    pub fn bus(f: F, delay: Duration) -> Self {
        Self {
            f,
            inter_frame_delay: delay,
            reconnect_after_timeout: false,
        }
    }
}

impl<F> std::fmt::Debug for FnConnector<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnConnector")
            .field("inter_frame_delay", &self.inter_frame_delay)
            .finish_non_exhaustive()
    }
}

impl<F> Connector for FnConnector<F>
where
    F: FnMut() -> BoxedConnect + Send + 'static,
{
    fn connect(&mut self) -> BoxedConnect {
        (self.f)()
    }
    fn inter_frame_delay(&self) -> Duration {
        self.inter_frame_delay
    }
    fn reconnect_after_timeout(&self) -> bool {
        self.reconnect_after_timeout
    }
}

impl Connector for Box<dyn Connector> {
    fn connect(&mut self) -> BoxedConnect {
        (**self).connect()
    }
    fn peer(&self) -> String {
        (**self).peer()
    }
    fn inter_frame_delay(&self) -> Duration {
        (**self).inter_frame_delay()
    }
    fn reconnect_after_timeout(&self) -> bool {
        (**self).reconnect_after_timeout()
    }
}

/// Where a poller connects, as written in a config file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum TransportConfig {
    /// Modbus TCP.
    Tcp {
        /// Host name or IP.
        host: String,
        /// Port, 502 by convention.
        port: u16,
    },
    /// Modbus RTU on a serial line.
    #[cfg(feature = "modbus-rtu")]
    Rtu(RtuConfig),
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self::Tcp {
            host: "127.0.0.1".to_owned(),
            port: 502,
        }
    }
}

impl TransportConfig {
    /// The connector for this transport.
    pub fn connector(&self) -> Box<dyn Connector> {
        match self {
            Self::Tcp { host, port } => Box::new(TcpConnector::host(host.clone(), *port)),
            #[cfg(feature = "modbus-rtu")]
            Self::Rtu(cfg) => Box::new(RtuConnector::new(cfg.clone())),
        }
    }
}

#[cfg(feature = "modbus-rtu")]
mod rtu;
#[cfg(feature = "modbus-rtu")]
pub use rtu::{DataBits, Parity, RtuConfig, RtuConnector, StopBits};
