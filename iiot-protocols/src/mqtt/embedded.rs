//! An MQTT 5 broker inside the process (rumqttd), for demos, examples and tests:
//! feature `embedded-broker`. Production gateways talk to a real broker
//! (Mosquitto, EMQX, HiveMQ); this one keeps nothing on disk and listens on
//! loopback only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedBrokerError {
    /// No free port, or the broker thread could not be started.
    #[error("embedded broker: {0}")]
    Io(#[from] std::io::Error),
    /// The broker did not accept connections in time.
    #[error("embedded broker: not listening on {0} after 5 s")]
    NotListening(SocketAddr),
}

/// A running embedded broker. Its threads live until the process exits (rumqttd
/// has no stop); each start takes a new free port.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
}

impl EmbeddedBroker {
    /// Starts an MQTT 5 broker on a free port of 127.0.0.1 that refuses payloads
    /// over `max_payload` bytes, and waits until it accepts connections.
    ///
    /// # Errors
    /// [`EmbeddedBrokerError`].
    pub fn start(max_payload: usize) -> Result<Self, EmbeddedBrokerError> {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let connections = rumqttd::ConnectionSettings {
            connection_timeout_ms: 5000,
            max_payload_size: max_payload,
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        };
        let server = rumqttd::ServerSettings {
            name: format!("v5-{}", addr.port()),
            listen: addr,
            tls: None,
            next_connection_delay_ms: 0,
            connections,
        };
        let config = rumqttd::Config {
            id: 0,
            router: rumqttd::RouterConfig {
                max_connections: 128,
                max_outgoing_packet_count: 200,
                max_segment_size: 16 * 1024 * 1024,
                max_segment_count: 10,
                custom_segment: None,
                initialized_filters: None,
                shared_subscriptions_strategy: rumqttd::Strategy::default(),
            },
            v4: None,
            v5: Some(HashMap::from([("v5".to_owned(), server)])),
            ws: None,
            cluster: None,
            console: None,
            bridge: None,
            prometheus: None,
            metrics: None,
        };
        std::thread::Builder::new()
            .name("rumqttd".into())
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                if let Err(e) = broker.start() {
                    tracing::error!(%e, "embedded broker stopped");
                }
            })?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(Self { addr });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(EmbeddedBrokerError::NotListening(addr))
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its `mqtt://127.0.0.1:port` URL.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }
}
