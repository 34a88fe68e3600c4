//! An OPC-UA server inside the process (async-opcua's server with an in-memory
//! namespace), for demos and tests: variables added and changed from code, written by
//! clients, on a free loopback port, optionally with secure endpoints.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use iiot_core::types::Value;
//! use iiot_protocols::opcua::sim::SimServer;
//! use iiot_protocols::opcua::{OpcUaClient, OpcUaConfig};
//!
//! let server = SimServer::start(Default::default()).await?;
//! let node = server.add("Line1.Temp", &Value::Double(21.5), false)?;
//! let client = OpcUaClient::connect(&OpcUaConfig::new(server.endpoint())).await?;
//! assert_eq!(client.read(&node).await?.value, Some(Value::Double(21.5)));
//! client.disconnect().await;
//! server.stop().await;
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use iiot_core::quality::Quality;
use iiot_core::types::{Timestamp, Value};
use opcua::crypto::SecurityPolicy as UaPolicy;
use opcua::server::address_space::Variable;
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::{SimpleNodeManager, simple_node_manager};
use opcua::server::{ServerBuilder, ServerEndpoint, ServerHandle};
use opcua::types::{
    ByteString, DataValue, MessageSecurityMode, NodeId, StatusCode, UAString, Variant,
};
use tokio::task::JoinHandle;

use super::convert;

/// The namespace of the simulator's variables.
pub const NAMESPACE: &str = "urn:iiot-rs:sim";

/// How to start a [`SimServer`].
#[derive(Debug, Clone, Default)]
pub struct SimConfig {
    /// The port on 127.0.0.1; 0 (the default) takes a free one.
    pub port: u16,
    /// Offer secure endpoints too (Basic256Sha256 and Aes128Sha256RsaOaep, Sign and
    /// SignAndEncrypt) with a certificate made in `pki_dir`; client certificates are
    /// trusted on first use.
    pub secure: bool,
    /// The server's certificate store (needed with `secure`).
    pub pki_dir: Option<PathBuf>,
    /// Users (name, password) accepted besides anonymous, on every endpoint.
    pub users: Vec<(String, String)>,
}

/// A simulator call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpcUaSimError {
    /// The server could not be built or bound.
    #[error("cannot start the OPC-UA simulator: {0}")]
    Start(String),
    /// A variable that does not exist, or a value the server refused.
    #[error("OPC-UA simulator: {0}")]
    Node(String),
}

/// A running simulated server. Dropping it without [`SimServer::stop`] stops it too.
pub struct SimServer {
    handle: ServerHandle,
    manager: Arc<SimpleNodeManager>,
    ns: u16,
    endpoint: String,
    port: u16,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SimServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimServer")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl SimServer {
    /// Builds and starts the server; it listens when this returns.
    ///
    /// # Errors
    /// [`OpcUaSimError::Start`] when the port cannot be bound or the server not built.
    pub async fn start(cfg: SimConfig) -> Result<Self, OpcUaSimError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", cfg.port))
            .await
            .map_err(|e| OpcUaSimError::Start(e.to_string()))?;
        let port = listener
            .local_addr()
            .map_err(|e| OpcUaSimError::Start(e.to_string()))?
            .port();
        let mut tokens: Vec<String> = vec![opcua::server::ANONYMOUS_USER_TOKEN_ID.to_owned()];
        tokens.extend((0..cfg.users.len()).map(|i| format!("user-{i}")));
        let anon: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let anon: &[&str] = &anon;
        let mut b = ServerBuilder::new()
            .application_name("iiot-rs OPC-UA simulator")
            .application_uri("urn:iiot-rs:sim-server")
            .product_uri("urn:iiot-rs")
            .host("127.0.0.1")
            .port(port)
            .add_endpoint(
                "none",
                ("/", UaPolicy::None, MessageSecurityMode::None, anon),
            )
            .discovery_urls(vec!["/".to_owned()])
            .with_node_manager(simple_node_manager(
                NamespaceMetadata {
                    namespace_uri: NAMESPACE.to_owned(),
                    ..Default::default()
                },
                "iiot-sim",
            ));
        for (i, (user, pass)) in cfg.users.iter().enumerate() {
            b = b.add_user_token(
                format!("user-{i}"),
                opcua::server::ServerUserToken::user_pass(user.as_str(), pass.as_str()),
            );
        }
        if cfg.secure {
            let pki = cfg
                .pki_dir
                .clone()
                .ok_or_else(|| OpcUaSimError::Start("`secure` needs a `pki_dir`".into()))?;
            b = b
                .pki_dir(pki)
                .create_sample_keypair(true)
                .certificate_path("own/cert.der")
                .private_key_path("private/private.pem")
                .trust_client_certs(true);
            for (id, policy, mode) in [
                (
                    "b256-sign",
                    UaPolicy::Basic256Sha256,
                    MessageSecurityMode::Sign,
                ),
                (
                    "b256-encrypt",
                    UaPolicy::Basic256Sha256,
                    MessageSecurityMode::SignAndEncrypt,
                ),
                (
                    "aes128-sign",
                    UaPolicy::Aes128Sha256RsaOaep,
                    MessageSecurityMode::Sign,
                ),
                (
                    "aes128-encrypt",
                    UaPolicy::Aes128Sha256RsaOaep,
                    MessageSecurityMode::SignAndEncrypt,
                ),
            ] {
                b = b.add_endpoint(id, ServerEndpoint::from(("/", policy, mode, anon)));
            }
        } else {
            b = b.pki_dir(std::env::temp_dir().join("iiot-opcua-sim-pki"));
        }
        let (server, handle) = b.build().map_err(OpcUaSimError::Start)?;
        let manager = handle
            .node_managers()
            .get_of_type::<SimpleNodeManager>()
            .ok_or_else(|| OpcUaSimError::Start("no in-memory node manager".into()))?;
        let ns = handle
            .get_namespace_index(NAMESPACE)
            .ok_or_else(|| OpcUaSimError::Start("the namespace is missing".into()))?;
        let task = tokio::spawn(async move {
            if let Err(e) = server.run_with(listener).await {
                tracing::warn!("OPC-UA simulator stopped: {e}");
            }
        });
        Ok(Self {
            handle,
            manager,
            ns,
            endpoint: format!("opc.tcp://127.0.0.1:{port}/"),
            port,
            task: Some(task),
        })
    }

    /// The endpoint URL (`opc.tcp://127.0.0.1:PORT/`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The namespace index of the simulator's variables.
    pub fn namespace(&self) -> u16 {
        self.ns
    }

    fn id(&self, name: &str) -> NodeId {
        NodeId::new(self.ns, UAString::from(name))
    }

    /// Adds a variable `name` (node id `ns=<ns>;s=<name>`, returned) under the Objects
    /// folder, holding `value`, with the data type of the value's variant (`Int` is an
    /// Int64, `UInt` a UInt64, `Bytes` a ByteString); `writable` lets clients write it.
    ///
    /// # Errors
    /// [`OpcUaSimError::Node`] when a node with that id exists.
    pub fn add(&self, name: &str, value: &Value, writable: bool) -> Result<String, OpcUaSimError> {
        let id = self.id(name);
        let mut v = Variable::new(&id, name, name, variant(value));
        v.set_writable(writable);
        v.set_user_access_level(v.access_level());
        let mut space = self.manager.address_space().write();
        if space.node_exists(&id) {
            return Err(OpcUaSimError::Node(format!("{id} exists")));
        }
        space.add_variables(vec![v], &NodeId::objects_folder_id());
        Ok(id.to_string())
    }

    /// Sets a variable's value and status (the value is left out when `value` is
    /// `None`), stamped now; subscribers are notified.
    ///
    /// # Errors
    /// [`OpcUaSimError::Node`] for an unknown variable.
    pub fn set(
        &self,
        name: &str,
        value: Option<&Value>,
        quality: Quality,
    ) -> Result<(), OpcUaSimError> {
        let id = self.id(name);
        let now = convert::date_time(Timestamp::now().unix_nanos());
        let dv = DataValue {
            value: value.map(variant),
            status: Some(StatusCode::from(quality.status_code())),
            source_timestamp: Some(now),
            server_timestamp: Some(now),
            ..DataValue::null()
        };
        self.manager
            .set_value(self.handle.subscriptions(), &id, None, dv)
            .map_err(|s| OpcUaSimError::Node(format!("{id}: {s}")))
    }

    /// Sets many values at once (Good, stamped now): cheaper than [`SimServer::set`]
    /// for a large namespace.
    ///
    /// # Errors
    /// [`OpcUaSimError::Node`] when one is unknown.
    pub fn set_many<'a>(
        &self,
        values: impl IntoIterator<Item = (&'a str, Value)>,
    ) -> Result<(), OpcUaSimError> {
        let now = convert::date_time(Timestamp::now().unix_nanos());
        let items: Vec<(NodeId, DataValue)> = values
            .into_iter()
            .map(|(n, v)| {
                let dv = DataValue {
                    value: Some(variant(&v)),
                    status: Some(StatusCode::Good),
                    source_timestamp: Some(now),
                    server_timestamp: Some(now),
                    ..DataValue::null()
                };
                (self.id(n), dv)
            })
            .collect();
        self.manager
            .set_values(
                self.handle.subscriptions(),
                items.iter().map(|(id, dv)| (id, None, dv.clone())),
            )
            .map_err(|s| OpcUaSimError::Node(s.to_string()))
    }

    /// The current value of a variable (what clients wrote, say).
    pub fn get(&self, name: &str) -> Option<Value> {
        let id = self.id(name);
        let space = self.manager.address_space().read();
        let Some(opcua::nodes::NodeType::Variable(node)) = space.find(&id) else {
            return None;
        };
        let dv = node.value(
            opcua::types::TimestampsToReturn::Neither,
            &opcua::types::NumericRange::None,
            &opcua::types::DataEncoding::Binary,
            0.0,
        );
        convert::to_value(dv.value.as_ref()?).ok().flatten()
    }

    /// Stops the server (closing its connections) and waits until it has.
    pub async fn stop(mut self) {
        self.handle.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.handle.cancel();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

fn variant(v: &Value) -> Variant {
    match v {
        Value::Double(x) => Variant::Double(*x),
        Value::Float(x) => Variant::Float(*x),
        Value::Int(x) => Variant::Int64(*x),
        Value::UInt(x) => Variant::UInt64(*x),
        Value::Bool(x) => Variant::Boolean(*x),
        Value::String(s) => Variant::String(UAString::from(s.as_str())),
        Value::Bytes(b) => Variant::ByteString(ByteString::from(b.to_vec())),
        // Value is non-exhaustive; a future variant has no OPC-UA form here yet.
        #[allow(unreachable_patterns)]
        _ => Variant::Empty,
    }
}
