//! The demo's network: an embedded MQTT broker (rumqttd) and a TCP relay in front
//! of it that the scenario cuts to simulate a broker outage.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::error::AppError;

/// Starts rumqttd on a free port of 127.0.0.1 in its own thread (it lives until
/// the process exits) and waits until it accepts connections.
///
/// # Errors
/// [`AppError::Io`] when no port is free or the broker does not come up.
pub async fn start_broker() -> Result<SocketAddr, AppError> {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| AppError::io("cannot find a free port for the broker", e))?;
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 5000,
        // The same limit as ingest's `max_packet_bytes` default: a larger publish
        // is refused at the broker instead of reaching a consumer that cannot read it.
        max_payload_size: 2 * 1024 * 1024,
        max_inflight_count: 500,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "demo-v5".to_owned(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 0,
        connections,
    };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 64,
            max_outgoing_packet_count: 200,
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 10,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: rumqttd::Strategy::default(),
        },
        // MQTT 5, the default of the gateway's session and of ingest's source.
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
        })
        .map_err(|e| AppError::io("cannot start the broker thread", e))?;
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(addr);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(AppError::io(
        format!("the embedded broker did not listen on {addr}"),
        std::io::ErrorKind::TimedOut.into(),
    ))
}

struct RelayState {
    up: bool,
    epoch: CancellationToken,
}

/// A TCP relay to the broker that can be cut: [`Relay::cut`] closes every relayed
/// connection and refuses new ones until [`Relay::restore`]. To a client this looks
/// like the broker went away.
#[derive(Clone)]
pub struct Relay {
    addr: SocketAddr,
    state: Arc<Mutex<RelayState>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("addr", &self.addr)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// Listens on a free port of 127.0.0.1 and relays to `target` until `cancel`.
    ///
    /// # Errors
    /// [`AppError::Io`] when it cannot listen.
    pub async fn start(target: SocketAddr, cancel: &CancellationToken) -> Result<Self, AppError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| AppError::io("cannot listen for the relay", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| AppError::io("cannot read the relay address", e))?;
        let relay = Self {
            addr,
            state: Arc::new(Mutex::new(RelayState {
                up: true,
                epoch: cancel.child_token(),
            })),
        };
        let r = relay.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = cancel.cancelled() => break,
                    a = listener.accept() => a,
                };
                let Ok((mut inbound, _)) = accepted else {
                    continue;
                };
                let epoch = {
                    let s = r.lock();
                    s.up.then(|| s.epoch.clone())
                };
                // While cut, the connection is dropped at once: connection refused.
                let Some(epoch) = epoch else { continue };
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        () = epoch.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Ok(relay)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RelayState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the relay passes traffic.
    pub fn is_up(&self) -> bool {
        self.lock().up
    }

    /// Drops every relayed connection and refuses new ones.
    pub fn cut(&self) {
        let mut s = self.lock();
        s.up = false;
        s.epoch.cancel();
        s.epoch = CancellationToken::new();
    }

    /// Passes traffic again.
    pub fn restore(&self) {
        self.lock().up = true;
    }
}
