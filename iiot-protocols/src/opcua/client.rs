//! Connecting to a server, and the connected client for browse, read and write.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use iiot_core::quality::Quality;
use iiot_core::types::{Timestamp, Value};
use opcua::client::{Client, ClientBuilder, IdentityToken, Session, SessionPollResult};
use opcua::crypto::SecurityPolicy as UaPolicy;
use opcua::types::{
    AttributeId, DataValue, EndpointDescription, MessageSecurityMode, NodeId, NumericRange,
    ReadValueId, StatusCode, TimestampsToReturn, UAString, Variant, WriteValue,
};
use tokio::task::JoinHandle;

use super::config::{Identity, OpcUaConfig, SecurityMode, SecurityPolicy};
use super::convert::{self, NodeRef, WriteType};
use super::error::{OpcUaConfigError, OpcUaError};

/// The application URI the client presents (and its certificate must carry).
pub(crate) const APPLICATION_URI: &str = "urn:iiot-rs:gateway";
/// The application name the client presents.
pub(crate) const APPLICATION_NAME: &str = "iiot-rs gateway";

/// What drives a session: its event loop as a stream (callbacks run while it is polled).
pub(crate) type Events = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<SessionPollResult, StatusCode>> + Send>,
>;

/// The pieces of one connection: a session and the event loop that drives it.
pub(crate) struct Connection {
    pub(crate) session: Arc<Session>,
    pub(crate) events: Events,
}

/// The client of a configuration (its certificate store, timeouts). With `retry` its
/// sessions reconnect forever (with the configured backoff, reactivating the session
/// or transferring its subscriptions); without, the first failed connect ends them.
pub(crate) fn build_client(cfg: &OpcUaConfig, retry: bool) -> Result<Client, OpcUaConfigError> {
    cfg.validate()?;
    let secure = cfg.security.policy != SecurityPolicy::None;
    // Without security no certificate is used: keep the store out of the user's
    // working directory.
    let pki_dir = if secure {
        cfg.security.pki_dir.clone()
    } else {
        std::env::temp_dir().join("iiot-opcua-pki")
    };
    let mut b = ClientBuilder::new()
        .application_name(APPLICATION_NAME)
        .application_uri(APPLICATION_URI)
        .product_uri("urn:iiot-rs")
        .pki_dir(pki_dir)
        .create_sample_keypair(false)
        .trust_server_certs(cfg.security.trust_unknown_server)
        .verify_server_certs(true)
        .session_retry_limit(if retry { -1 } else { 0 })
        .session_retry_initial(cfg.reconnect_min)
        .session_retry_max(cfg.reconnect_max)
        .keep_alive_interval(cfg.keep_alive_interval)
        .max_failed_keep_alive_count(3)
        .request_timeout(cfg.request_timeout)
        .publish_timeout(cfg.request_timeout.max(cfg.publishing_interval * 3))
        .session_timeout(u32::try_from(cfg.session_timeout.as_millis()).unwrap_or(u32::MAX))
        .recreate_subscriptions(true);
    if let Some(c) = &cfg.security.certificate {
        b = b.certificate_path(c);
    }
    if let Some(k) = &cfg.security.private_key {
        b = b.private_key_path(k);
    }
    b.client().map_err(|problems| OpcUaConfigError::Client {
        problem: problems.join("; "),
    })
}

fn ua_policy(p: SecurityPolicy) -> UaPolicy {
    match p {
        SecurityPolicy::None => UaPolicy::None,
        SecurityPolicy::Basic256Sha256 => UaPolicy::Basic256Sha256,
        SecurityPolicy::Aes128Sha256RsaOaep => UaPolicy::Aes128Sha256RsaOaep,
    }
}

fn ua_mode(m: SecurityMode) -> MessageSecurityMode {
    match m {
        SecurityMode::None => MessageSecurityMode::None,
        SecurityMode::Sign => MessageSecurityMode::Sign,
        SecurityMode::SignAndEncrypt => MessageSecurityMode::SignAndEncrypt,
    }
}

fn identity(cfg: &OpcUaConfig) -> IdentityToken {
    match &cfg.identity {
        Identity::Anonymous => IdentityToken::Anonymous,
        Identity::UserName { user, password } => {
            IdentityToken::new_user_name(user.clone(), password.clone())
        }
    }
}

/// Asks the server for its endpoints and makes a session on the one with the configured
/// policy and mode. The session is not open yet: it opens when the event loop is polled.
pub(crate) async fn open(client: &mut Client, cfg: &OpcUaConfig) -> Result<Connection, OpcUaError> {
    let connect_err = |status: StatusCode| OpcUaError::Connect {
        endpoint: cfg.endpoint.clone(),
        status: status.to_string(),
    };
    // GetEndpoints on a client that does not retry: a refused connection is reported
    // as such at once, not as a timeout after retries.
    let probe = build_client(cfg, false).map_err(|e| OpcUaError::Connect {
        endpoint: cfg.endpoint.clone(),
        status: e.to_string(),
    })?;
    let endpoints = tokio::time::timeout(
        cfg.request_timeout,
        probe.get_server_endpoints_from_url(cfg.endpoint.as_str()),
    )
    .await
    .map_err(|_| OpcUaError::Connect {
        endpoint: cfg.endpoint.clone(),
        status: format!(
            "no answer within {:?} (is it an OPC-UA server?)",
            cfg.request_timeout
        ),
    })?
    .map_err(|e| connect_err(e.status()))?;
    let policy = ua_policy(cfg.security.policy);
    let mode = ua_mode(cfg.security.mode);
    let mut endpoint: EndpointDescription = endpoints
        .into_iter()
        .find(|e| {
            e.security_mode == mode && UaPolicy::from_uri(e.security_policy_uri.as_ref()) == policy
        })
        .ok_or_else(|| OpcUaError::NoMatchingEndpoint {
            endpoint: cfg.endpoint.clone(),
            policy: cfg.security.policy.as_str(),
            mode: format!("{:?}", cfg.security.mode),
        })?;
    // A server often advertises a host name the client cannot reach (its own name, a
    // container's address): connect where the configuration says.
    endpoint.endpoint_url = UAString::from(cfg.endpoint.as_str());
    let (session, event_loop) = client
        .connect_to_endpoint_directly(endpoint, identity(cfg))
        .map_err(|e| connect_err(e.status()))?;
    Ok(Connection {
        session,
        events: Box::pin(event_loop.enter()),
    })
}

/// The typed error of a failed session open.
pub(crate) fn open_failed(cfg: &OpcUaConfig, status: StatusCode) -> OpcUaError {
    let untrusted = matches!(
        status,
        StatusCode::BadCertificateUntrusted
            | StatusCode::BadSecurityChecksFailed
            | StatusCode::BadCertificateInvalid
            | StatusCode::BadCertificateHostNameInvalid
            | StatusCode::BadCertificateUriInvalid
            | StatusCode::BadCertificateTimeInvalid
    );
    if untrusted && cfg.security.policy != SecurityPolicy::None {
        let pki = &cfg.security.pki_dir;
        OpcUaError::UntrustedServer {
            endpoint: cfg.endpoint.clone(),
            status: status.to_string(),
            rejected: pki.join("rejected").display().to_string(),
            trusted: pki.join("trusted").display().to_string(),
        }
    } else {
        OpcUaError::Connect {
            endpoint: cfg.endpoint.clone(),
            status: status.to_string(),
        }
    }
}

/// One variable found by [`OpcUaClient::browse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowsedVariable {
    /// Its node id, in string form.
    pub node: String,
    /// The browse path from the start node, names joined by `/`.
    pub path: String,
    /// Its data type's name (`Double`, `Int32`, ...), or the data type's node id when
    /// it is not a built-in type; `[]` follows it when the variable may hold an array
    /// (its ValueRank is not -1, scalar).
    pub data_type: String,
    /// Whether the current user may write it.
    pub writable: bool,
}

/// One value read by [`OpcUaClient::read`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReadValue {
    /// The value; `None` when the node has none or its type has no core form
    /// (`quality` then says why).
    pub value: Option<Value>,
    /// The status code as quality.
    pub quality: Quality,
    /// The source timestamp (else the server's, else now).
    pub time: Timestamp,
}

/// A connected OPC-UA client: read, write and browse, for tools and for code that is
/// not a source (`iiot browse`). It does not reconnect: once the connection is lost,
/// calls fail with [`OpcUaError::NotConnected`]; connect again. (The
/// [`OpcUaSource`](super::OpcUaSource) is the one that rides out outages.)
pub struct OpcUaClient {
    session: Arc<Session>,
    driver: JoinHandle<()>,
    connected: Arc<std::sync::atomic::AtomicBool>,
    cfg: Arc<OpcUaConfig>,
}

impl std::fmt::Debug for OpcUaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpcUaClient")
            .field("endpoint", &self.cfg.endpoint)
            .finish_non_exhaustive()
    }
}

impl OpcUaClient {
    /// Connects, failing on the first failure (no retry): a server that does not answer
    /// within the request timeout is [`OpcUaError::Timeout`], an untrusted server
    /// certificate [`OpcUaError::UntrustedServer`].
    ///
    /// # Errors
    /// [`OpcUaError`] as above, or `Connect` with the server's status.
    pub async fn connect(cfg: &OpcUaConfig) -> Result<Self, OpcUaError> {
        let mut client = build_client(cfg, false).map_err(|e| OpcUaError::Connect {
            endpoint: cfg.endpoint.clone(),
            status: e.to_string(),
        })?;
        let Connection {
            session,
            mut events,
        } = open(&mut client, cfg).await?;
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let connected = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = connected.clone();
        let driver = tokio::spawn(async move {
            let mut first = Some(first_tx);
            while let Some(ev) = events.next().await {
                use std::sync::atomic::Ordering::Relaxed;
                match ev {
                    Ok(SessionPollResult::Reconnected(_)) => {
                        flag.store(true, Relaxed);
                        if let Some(tx) = first.take() {
                            let _ = tx.send(Ok(()));
                        }
                    }
                    Ok(SessionPollResult::ReconnectFailed(s)) => {
                        if let Some(tx) = first.take() {
                            let _ = tx.send(Err(s));
                            return;
                        }
                    }
                    Ok(SessionPollResult::ConnectionLost(_)) => flag.store(false, Relaxed),
                    Ok(_) => {}
                    Err(s) => {
                        flag.store(false, Relaxed);
                        if let Some(tx) = first.take() {
                            let _ = tx.send(Err(s));
                        }
                        return;
                    }
                }
            }
        });
        let first = tokio::time::timeout(cfg.request_timeout, first_rx).await;
        let fail = |e| {
            driver.abort();
            Err(e)
        };
        match first {
            Ok(Ok(Ok(()))) => Ok(Self {
                session,
                driver,
                connected,
                cfg: Arc::new(cfg.clone()),
            }),
            Ok(Ok(Err(status))) => fail(open_failed(cfg, status)),
            Ok(Err(_)) => fail(open_failed(cfg, StatusCode::BadConnectionClosed)),
            Err(_) => fail(OpcUaError::Timeout {
                op: "connect",
                timeout: cfg.request_timeout,
            }),
        }
    }

    fn check_connected(&self) -> Result<(), OpcUaError> {
        if self.connected.load(std::sync::atomic::Ordering::Relaxed) {
            Ok(())
        } else {
            Err(OpcUaError::NotConnected {
                endpoint: self.cfg.endpoint.clone(),
            })
        }
    }

    /// Reads the value of `node` (string form).
    ///
    /// # Errors
    /// [`OpcUaError::Convert`] for a bad node id string (nothing is sent), `Node` for a
    /// node the server refuses (`BadNodeIdUnknown`, ...), `Service`, `Timeout` or
    /// `NotConnected` when the call failed as a whole.
    pub async fn read(&self, node: &str) -> Result<ReadValue, OpcUaError> {
        let id = NodeRef::parse(node)?.0;
        let dv = self.read_attribute(&id, AttributeId::Value).await?;
        let (value, quality, time) = convert::to_parts(&dv, Timestamp::now());
        if quality.is_bad() && dv.value.is_none() {
            return Err(node_error(&id, dv.status.unwrap_or(StatusCode::Bad)));
        }
        Ok(match value {
            Ok(value) => ReadValue {
                value,
                quality,
                time,
            },
            Err(e) => ReadValue {
                value: None,
                quality: e.quality(),
                time,
            },
        })
    }

    async fn read_attribute(
        &self,
        id: &NodeId,
        attribute: AttributeId,
    ) -> Result<DataValue, OpcUaError> {
        let req = ReadValueId {
            node_id: id.clone(),
            attribute_id: attribute as u32,
            ..ReadValueId::default()
        };
        let mut values = self
            .call(
                "read",
                self.session.read(&[req], TimestampsToReturn::Both, 0.0),
            )
            .await?;
        values.pop().ok_or_else(|| OpcUaError::Service {
            op: "read",
            status: "the server sent no result".into(),
            quality: Quality::BAD_UNEXPECTED_ERROR,
        })
    }

    /// The data type a write to `node` must have (read from the node).
    pub(crate) async fn write_type(&self, id: &NodeId) -> Result<WriteType, OpcUaError> {
        let dv = self.read_attribute(id, AttributeId::DataType).await?;
        match dv.value {
            Some(Variant::NodeId(t)) => Ok(WriteType::of(&t)?),
            _ => Err(node_error(
                id,
                dv.status.unwrap_or(StatusCode::BadNodeIdUnknown),
            )),
        }
    }

    /// Writes `value` to `node`, encoded as the node's data type (read from the server
    /// first; integers must be whole and in range).
    ///
    /// # Errors
    /// [`OpcUaError::Convert`] for a bad node id or a value that does not fit (nothing
    /// is written), `Node` when the server refused the write (`BadNotWritable`,
    /// `BadTypeMismatch`, `BadUserAccessDenied`: nothing was written), `Timeout` or
    /// `Service` when the outcome is unknown.
    pub async fn write(&self, node: &str, value: &Value) -> Result<(), OpcUaError> {
        let id = NodeRef::parse(node)?.0;
        let ty = self.write_type(&id).await?;
        self.write_as(&id, ty, value).await
    }

    pub(crate) async fn write_as(
        &self,
        id: &NodeId,
        ty: WriteType,
        value: &Value,
    ) -> Result<(), OpcUaError> {
        self.check_connected()?;
        write_node(&self.session, self.cfg.request_timeout, id, ty, value).await
    }

    /// Walks the address space from `from` (default: the Objects folder, `i=85`) down to
    /// `max_depth` levels, following hierarchical references, and lists the variables
    /// found with their data types.
    ///
    /// # Errors
    /// As [`OpcUaClient::read`].
    pub async fn browse(
        &self,
        from: Option<&str>,
        max_depth: usize,
    ) -> Result<Vec<BrowsedVariable>, OpcUaError> {
        let start = match from {
            Some(n) => NodeRef::parse(n)?.0,
            None => NodeId::new(0, 85u32),
        };
        super::browse::walk(self, start, max_depth).await
    }

    pub(crate) fn session(&self) -> &Session {
        &self.session
    }

    /// A service call on the session: refused when not connected, under the request
    /// timeout, a status error typed.
    pub(crate) async fn call<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = Result<T, StatusCode>>,
    ) -> Result<T, OpcUaError> {
        self.check_connected()?;
        timed(op, self.cfg.request_timeout, f).await
    }

    /// Closes the session (deleting its subscriptions on the server) and stops the
    /// background task.
    pub async fn disconnect(self) {
        let _ = tokio::time::timeout(self.cfg.request_timeout, self.session.disconnect()).await;
        self.driver.abort();
    }
}

impl Drop for OpcUaClient {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Writes `value` to the Value attribute of `id`, encoded as `ty`.
pub(crate) async fn write_node(
    session: &Session,
    timeout: Duration,
    id: &NodeId,
    ty: WriteType,
    value: &Value,
) -> Result<(), OpcUaError> {
    let req = WriteValue {
        node_id: id.clone(),
        attribute_id: AttributeId::Value as u32,
        index_range: NumericRange::None,
        value: DataValue::value_only(ty.encode(value)?),
    };
    let mut results = timed("write", timeout, session.write(&[req])).await?;
    match results.pop() {
        Some(s) if s.is_good() => Ok(()),
        Some(s) => Err(node_error(id, s)),
        None => Err(OpcUaError::Service {
            op: "write",
            status: "the server sent no result".into(),
            quality: Quality::BAD_UNEXPECTED_ERROR,
        }),
    }
}

pub(crate) fn node_error(id: &NodeId, status: StatusCode) -> OpcUaError {
    OpcUaError::Node {
        node: id.to_string(),
        status: status.to_string(),
        quality: convert::quality(status),
    }
}

/// `f` under `timeout`; a status error is a failed service call.
pub(crate) async fn timed<T>(
    op: &'static str,
    timeout: Duration,
    f: impl std::future::Future<Output = Result<T, StatusCode>>,
) -> Result<T, OpcUaError> {
    match tokio::time::timeout(timeout, f).await {
        Err(_) => Err(OpcUaError::Timeout { op, timeout }),
        Ok(Err(StatusCode::BadTimeout | StatusCode::BadRequestTimeout)) => {
            Err(OpcUaError::Timeout { op, timeout })
        }
        Ok(Err(s)) => Err(OpcUaError::Service {
            op,
            status: s.to_string(),
            quality: convert::quality(s),
        }),
        Ok(Ok(v)) => Ok(v),
    }
}
