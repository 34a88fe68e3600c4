//! The demo's network: an embedded MQTT broker (rumqttd) and a TCP relay in front
//! of it that the scenario cuts to simulate a broker outage.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::error::AppError;

/// Starts the SDK's embedded MQTT 5 broker on a free port of 127.0.0.1 (it lives
/// until the process exits), refusing payloads over 2 MiB: the same limit as
/// ingest's `max_packet_bytes` default, so a larger publish is refused at the
/// broker instead of reaching a consumer that cannot read it.
///
/// # Errors
/// [`AppError::Io`] when no port is free or the broker does not come up.
pub async fn start_broker() -> Result<SocketAddr, AppError> {
    let broker = tokio::task::spawn_blocking(|| {
        iiot_protocols::mqtt::embedded::EmbeddedBroker::start(2 * 1024 * 1024)
    })
    .await
    .map_err(|e| AppError::io("the broker start task failed", std::io::Error::other(e)))?
    .map_err(|e| AppError::io("cannot start the embedded broker", std::io::Error::other(e)))?;
    Ok(broker.addr())
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
