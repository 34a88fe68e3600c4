//! The subscription as a source of the gateway runtime, and its command handle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use iiot_core::backoff::Backoff;
use iiot_core::quality::Quality;
use iiot_core::source::{Link, ReadingSink, ReportPolicy, Source, SourceInfo};
use iiot_core::types::{Sample, TagPath, Timestamp};
use opcua::client::{
    MonitoredItem, OnSubscriptionNotification, Session, SessionPollResult, SubscriptionActivity,
};
use opcua::types::{
    AttributeId, DataChangeFilter, DataChangeTrigger, DataValue, ExtensionObject,
    MonitoredItemCreateRequest, MonitoringMode, MonitoringParameters, NodeId, ReadValueId,
    StatusCode, TimestampsToReturn, Variant,
};
use tokio::task::JoinHandle;

use super::client::{self, Connection};
use super::config::{OpcUaConfig, ServerDeadband};
use super::convert::{self, NodeRef, WriteType};
use super::error::{OpcUaConfigError, OpcUaError};

/// One tag, resolved.
#[derive(Debug)]
struct Tag {
    name: TagPath,
    node: NodeId,
    /// Warned once about a value that does not convert.
    warned: bool,
    last_update: metrics::Gauge,
}

/// What the source and its handle share: the live session, if connected, and the
/// data types learned for writes.
#[derive(Default)]
struct Shared {
    session: Mutex<Option<Arc<Session>>>,
    connected: AtomicBool,
    write_types: Mutex<HashMap<TagPath, WriteType>>,
}

impl Shared {
    fn set(&self, session: Option<Arc<Session>>) {
        self.connected.store(session.is_some(), Ordering::SeqCst);
        if let Ok(mut s) = self.session.lock() {
            *s = session;
        }
    }
    fn session(&self) -> Option<Arc<Session>> {
        if !self.connected.load(Ordering::SeqCst) {
            return None;
        }
        self.session.lock().ok().and_then(|s| s.clone())
    }
}

/// An OPC-UA subscription as a [`Source`] of the gateway runtime: every tag of the
/// configuration is a monitored item of one subscription, each data change a reading
/// (value converted as [`super::convert`] says, the full status code as quality, the
/// source timestamp).
///
/// Report by exception stays the runtime's: a tag's `deadband` and
/// `max_report_interval` travel in [`Source::info`]. A tag with a `server_deadband`
/// is filtered by the server (a DataChangeFilter) and declared
/// [`ReportPolicy::ALL`], so the runtime passes it through; never both.
///
/// Connection: a server that cannot be reached at start is retried with backoff
/// (`reconnect_min` to `reconnect_max`); a lost connection is noticed by the keep-alive
/// (three misses) or the transport, and every tag is then reported once without a
/// value and with quality `Bad_CommunicationError`, with [`Link::Down`]; after the
/// reconnect async-opcua reactivates the session or transfers or recreates the
/// subscription, and the server sends every tag's current value again.
///
/// Back-pressure: notifications are handed to the runtime before the session's event
/// loop is polled again, so a full outbox slows the subscription (the server keeps its
/// queue) instead of growing memory here.
///
/// Metrics (label `source`): `iiot_opcua_connected` (1 or 0),
/// `iiot_opcua_notifications_total`, and `iiot_opcua_tag_last_update_seconds` (label
/// `tag`, Unix seconds of the tag's last notification).
pub struct OpcUaSource {
    name: String,
    cfg: Arc<OpcUaConfig>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for OpcUaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpcUaSource")
            .field("name", &self.name)
            .field("endpoint", &self.cfg.endpoint)
            .field("tags", &self.cfg.tags.len())
            .finish_non_exhaustive()
    }
}

impl OpcUaSource {
    /// A source named `name` reading `cfg`'s tags, and the handle that writes its
    /// writable tags. Nothing connects until the runtime runs the source.
    ///
    /// # Errors
    /// What [`OpcUaConfig::validate`] finds.
    pub fn new(
        name: impl Into<String>,
        cfg: OpcUaConfig,
    ) -> Result<(Self, OpcUaHandle), OpcUaConfigError> {
        cfg.validate()?;
        let cfg = Arc::new(cfg);
        let shared = Arc::new(Shared::default());
        let mut targets = HashMap::new();
        for t in cfg.tags.iter().filter(|t| t.writable) {
            // Validated above.
            if let Ok(n) = NodeRef::parse(&t.node) {
                targets.insert(t.name.clone(), n.0);
            }
        }
        let handle = OpcUaHandle {
            shared: shared.clone(),
            cfg: cfg.clone(),
            targets: Arc::new(targets),
        };
        Ok((
            Self {
                name: name.into(),
                cfg,
                shared,
            },
            handle,
        ))
    }
}

impl Source for OpcUaSource {
    fn info(&self) -> SourceInfo {
        let mut info = SourceInfo::new(self.name.clone());
        for t in &self.cfg.tags {
            let policy = match (t.server_deadband, t.deadband) {
                (None, Some(db)) => ReportPolicy::deadband(db, t.max_report_interval),
                _ => ReportPolicy::ALL,
            };
            info = info.with_tag(t.name.clone(), policy);
        }
        info
    }

    async fn run<K: ReadingSink + 'static>(
        self,
        mut sink: K,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let mut run = Run::new(&self);
        tokio::pin!(stop);
        let mut client = match client::build_client(&self.cfg, true) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(source = %self.name, "{e}; its tags read Bad");
                let _ = run.down(&mut sink, &e.to_string()).await;
                stop.await;
                return;
            }
        };
        let backoff = Backoff::new(self.cfg.reconnect_min, self.cfg.reconnect_max);
        let mut attempt = 0u32;
        loop {
            let opened = tokio::select! {
                biased;
                () = &mut stop => return,
                o = client::open(&mut client, &self.cfg) => o,
            };
            match opened {
                Ok(conn) => {
                    attempt = 0;
                    match run.session(conn, &mut sink, &mut stop).await {
                        Ended::Stopped | Ended::SinkClosed => break,
                        Ended::Failed => {}
                    }
                }
                Err(e) => {
                    if run.down(&mut sink, &e.to_string()).await.is_err() {
                        break;
                    }
                }
            }
            let delay = backoff.delay(attempt, rand_unit());
            attempt = attempt.saturating_add(1);
            tokio::select! {
                biased;
                () = &mut stop => break,
                () = tokio::time::sleep(delay) => {}
            }
        }
        self.shared.set(None);
        run.connected.set(0.0);
    }
}

fn rand_unit() -> f64 {
    // Jitter only; the low bits of the clock are enough.
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(n % 1000) / 1000.0
}

enum Ended {
    Stopped,
    SinkClosed,
    Failed,
}

/// Notifications waiting to be handed to the runtime (filled by the callback while
/// the event loop is polled, emptied right after).
type Inbox = Arc<Mutex<Vec<(u32, DataValue)>>>;

struct Collect {
    inbox: Inbox,
    /// Set when the server says the subscription ended (its lifetime ran out).
    lost: Arc<AtomicBool>,
}

impl OnSubscriptionNotification for Collect {
    fn on_data_value(&mut self, notification: DataValue, item: &MonitoredItem) {
        if let Ok(mut q) = self.inbox.lock() {
            q.push((item.client_handle(), notification));
        }
    }

    fn on_subscription_status_change(
        &mut self,
        notification: opcua::types::StatusChangeNotification,
    ) {
        if notification.status.is_bad() {
            self.lost.store(true, Ordering::SeqCst);
        }
    }
}

/// The state of one run of the source.
struct Run<'a> {
    src: &'a OpcUaSource,
    tags: Vec<Tag>,
    inbox: Inbox,
    /// The server ended the subscription (see [`Collect::lost`]).
    lost: Arc<AtomicBool>,
    /// The last refusal reported per tag (index) whose monitored item could not be
    /// created, so a retry that fails the same way is not reported again.
    refused: HashMap<usize, StatusCode>,
    /// Tags are Bad since the last outage (reported once).
    down: bool,
    /// An outage was already logged.
    logged: bool,
    connected: metrics::Gauge,
    notifications: metrics::Counter,
}

/// What one reconcile did: the status of each monitored item it tried to create (by
/// client handle), or why the subscription could not be made.
type Reconciled = Result<Vec<(u32, StatusCode)>, StatusCode>;

impl<'a> Run<'a> {
    fn new(src: &'a OpcUaSource) -> Self {
        let tags = src
            .cfg
            .tags
            .iter()
            .map(|t| Tag {
                name: t.name.clone(),
                node: NodeRef::parse(&t.node).map(|n| n.0).unwrap_or_default(),
                warned: false,
                last_update: metrics::gauge!("iiot_opcua_tag_last_update_seconds",
                    "source" => src.name.clone(), "tag" => t.name.to_string()),
            })
            .collect();
        Self {
            src,
            tags,
            inbox: Arc::default(),
            lost: Arc::default(),
            refused: HashMap::new(),
            down: false,
            logged: false,
            connected: metrics::gauge!("iiot_opcua_connected", "source" => src.name.clone()),
            notifications: metrics::counter!("iiot_opcua_notifications_total",
                "source" => src.name.clone()),
        }
    }

    /// The connection is down (or never came up): one warning, every tag once Bad.
    async fn down<K: ReadingSink>(&mut self, sink: &mut K, cause: &str) -> Result<(), ()> {
        self.src.shared.set(None);
        self.connected.set(0.0);
        if self.logged {
            tracing::debug!(source = %self.src.name, %cause, "still unreachable");
        } else {
            tracing::warn!(source = %self.src.name, endpoint = %self.src.cfg.endpoint,
                "OPC-UA {}: {cause}; its tags read Bad until it is back (retrying)",
                self.src.cfg.endpoint);
            self.logged = true;
        }
        if self.down {
            return Ok(());
        }
        self.down = true;
        sink.link(Link::Down {
            cause: cause.to_owned(),
        });
        let now = Timestamp::now();
        for t in &self.tags {
            let s = Sample::without_value(t.name.clone(), Quality::BAD_COMMUNICATION_ERROR, now);
            sink.send(s).await.map_err(|_| ())?;
        }
        Ok(())
    }

    fn up<K: ReadingSink>(&mut self, sink: &mut K, session: &Arc<Session>) {
        self.src.shared.set(Some(session.clone()));
        self.connected.set(1.0);
        if self.logged {
            tracing::warn!(source = %self.src.name, "OPC-UA {} is back", self.src.cfg.endpoint);
        } else {
            tracing::info!(source = %self.src.name, "connected to OPC-UA {}", self.src.cfg.endpoint);
        }
        self.logged = false;
        self.down = false;
        sink.link(Link::Up);
    }

    /// Drives one session until stop, a closed sink, or a failure that ends its event
    /// loop.
    async fn session<K: ReadingSink>(
        &mut self,
        conn: Connection,
        sink: &mut K,
        stop: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> Ended {
        let Connection {
            session,
            mut events,
        } = conn;
        let mut subscribing: Option<JoinHandle<Reconciled>> = None;
        // A lost subscription is warned about once, not at every retry.
        let mut resubscribing = false;
        let mut learning: Option<JoinHandle<()>> = None;
        let mut retry: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        // The watchdog: while connected, the server answers a publish at least every
        // keep-alive period (with changes or an empty keep-alive; the larger of the
        // configured interval and the server's revised publishing interval times its
        // revised keep-alive count). A subscription silent for three of them is dead,
        // whatever async-opcua believes: subscribe again, so the tags never go quietly
        // stale.
        let silence = self.src.cfg.keep_alive_interval * 3;
        let mut last_publish = tokio::time::Instant::now();
        let mut watchdog = tokio::time::interval(self.src.cfg.keep_alive_interval);
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ended = loop {
            tokio::select! {
                biased;
                () = stop.as_mut() => break Ended::Stopped,
                r = pending_or(&mut subscribing), if subscribing.is_some() => {
                    subscribing = None;
                    let complete = match r {
                        Ok(Ok(items)) => {
                            resubscribing = false;
                            last_publish = tokio::time::Instant::now();
                            let Ok(complete) = self.item_failures(sink, &items).await else {
                                break Ended::SinkClosed;
                            };
                            complete
                        }
                        Ok(Err(status)) => {
                            if resubscribing {
                                tracing::debug!(source = %self.src.name, %status, "subscribing failed");
                            } else {
                                tracing::warn!(source = %self.src.name,
                                    "cannot subscribe on OPC-UA {}: {status}; retrying",
                                    self.src.cfg.endpoint);
                            }
                            false
                        }
                        Err(_) => break Ended::Failed,
                    };
                    if !complete {
                        retry = Some(Box::pin(tokio::time::sleep(self.src.cfg.reconnect_max)));
                    }
                }
                () = pending_or(&mut retry), if retry.is_some() => {
                    retry = None;
                    if self.src.shared.connected.load(Ordering::SeqCst) && subscribing.is_none() {
                        subscribing = Some(self.reconcile(&session, false));
                    }
                }
                _ = watchdog.tick() => {
                    // The server's own keep-alive period, as it revised it, may be
                    // longer than the configured one.
                    let revised = {
                        let state = session.subscription_state().lock();
                        state
                            .subscription_ids()
                            .and_then(|ids| ids.first().and_then(|id| state.get(*id)))
                            .map(|s| {
                                s.publishing_interval()
                                    .saturating_mul(s.max_keep_alive_count().max(1))
                                    .saturating_mul(3)
                            })
                    };
                    let silence = revised.map_or(silence, |r| r.max(silence));
                    if self.src.shared.connected.load(Ordering::SeqCst)
                        && !self.tags.is_empty()
                        && subscribing.is_none()
                        && last_publish.elapsed() > silence
                    {
                        tracing::debug!(source = %self.src.name, silent = ?last_publish.elapsed(),
                            "no publish answered while connected");
                        self.lost.store(true, Ordering::SeqCst);
                        last_publish = tokio::time::Instant::now();
                    }
                }
                ev = events.next() => {
                    match ev {
                        None => break Ended::Failed,
                        Some(Err(status)) => {
                            let e = client::open_failed(&self.src.cfg, status);
                            if self.down(sink, &e.to_string()).await.is_err() {
                                break Ended::SinkClosed;
                            }
                            break Ended::Failed;
                        }
                        Some(Ok(SessionPollResult::Reconnected(_))) => {
                            last_publish = tokio::time::Instant::now();
                            self.up(sink, &session);
                            // After a new session async-opcua has transferred or
                            // recreated the subscription; items it could not recreate
                            // (and a first subscription) are made here.
                            if subscribing.is_none() {
                                subscribing = Some(self.reconcile(&session, false));
                            }
                            // The subscription async-opcua recreated during the
                            // reconnect is not published until something triggers it.
                            session.trigger_publish_now();
                            // Again after every reconnect: a server may have been
                            // redeployed with other types (and a failed read retried).
                            if learning.as_ref().is_none_or(JoinHandle::is_finished) {
                                learning = Some(self.learn_write_types(&session));
                            }
                        }
                        Some(Ok(SessionPollResult::ConnectionLost(status))) => {
                            let cause = format!("lost the connection ({status})");
                            if self.down(sink, &cause).await.is_err() {
                                break Ended::SinkClosed;
                            }
                        }
                        Some(Ok(SessionPollResult::ReconnectFailed(status))) => {
                            let e = client::open_failed(&self.src.cfg, status);
                            if self.down(sink, &e.to_string()).await.is_err() {
                                break Ended::SinkClosed;
                            }
                        }
                        Some(Ok(SessionPollResult::Subscription(SubscriptionActivity::Publish))) => {
                            last_publish = tokio::time::Instant::now();
                        }
                        Some(Ok(SessionPollResult::Subscription(
                            SubscriptionActivity::PublishFailed(StatusCode::BadNoSubscription),
                        ))) => {
                            // The server lost the subscription (its lifetime ran out
                            // during an outage, say): make a new one.
                            self.lost.store(true, Ordering::SeqCst);
                        }
                        Some(Ok(_)) => {}
                    }
                    if self.deliver(sink).await.is_err() {
                        break Ended::SinkClosed;
                    }
                    if self.lost.load(Ordering::SeqCst)
                        && subscribing.is_none()
                        && self.src.shared.connected.load(Ordering::SeqCst)
                    {
                        if resubscribing {
                            tracing::debug!(source = %self.src.name, "subscribing again");
                        } else {
                            tracing::warn!(source = %self.src.name,
                                "the OPC-UA subscription on {} ended or fell silent; subscribing again",
                                self.src.cfg.endpoint);
                            resubscribing = true;
                        }
                        subscribing = Some(self.reconcile(&session, true));
                    }
                }
            }
        };
        if let Some(t) = subscribing.take() {
            t.abort();
        }
        if let Some(t) = learning.take() {
            t.abort();
        }
        // What arrived before the end is still handed over.
        let _ = self.deliver(sink).await;
        self.src.shared.set(None);
        if matches!(ended, Ended::Stopped | Ended::SinkClosed) {
            // Close the session politely (deleting its subscription); the event loop
            // must run for the request to go out.
            let close = async {
                let _ = session.disconnect().await;
            };
            let drive = async { while events.next().await.is_some() {} };
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                tokio::select! {
                    () = close => {},
                    () = drive => {},
                }
            })
            .await;
        }
        ended
    }

    /// Makes the session's subscription complete: creates it when the session has none
    /// and creates the monitored items it lacks (the first time, and any the server
    /// refused or async-opcua could not recreate after a reconnect).
    ///
    /// With `fresh`, the session's subscriptions are deleted first: the server no
    /// longer has them (it answered a publish with `BadNoSubscription`, or said the
    /// subscription timed out), and async-opcua would keep them forever.
    fn reconcile(&self, session: &Arc<Session>, fresh: bool) -> JoinHandle<Reconciled> {
        let cfg = self.src.cfg.clone();
        let inbox = self.inbox.clone();
        let lost = self.lost.clone();
        let session = session.clone();
        let tags: Vec<NodeId> = self.tags.iter().map(|t| t.node.clone()).collect();
        tokio::spawn(async move {
            if fresh {
                let ids = session.subscription_state().lock().subscription_ids();
                if let Some(ids) = ids.filter(|i| !i.is_empty()) {
                    // The server answers each with BadSubscriptionIdInvalid; what counts is
                    // that async-opcua forgets them (it does once the call is answered).
                    session.delete_subscriptions(&ids).await?;
                }
                lost.store(false, Ordering::SeqCst);
            }
            let existing = {
                let state = session.subscription_state().lock();
                state
                    .subscription_ids()
                    .and_then(|ids| ids.first().copied())
                    .map(|id| {
                        let present: std::collections::HashSet<u32> = state
                            .get(id)
                            .map(|s| {
                                s.monitored_items()
                                    .map(MonitoredItem::client_handle)
                                    .collect()
                            })
                            .unwrap_or_default();
                        (id, present)
                    })
            };
            let (sub, present) = match existing {
                Some(e) => e,
                None => {
                    let publishing = cfg.publishing_interval;
                    let keep_alive = u32::try_from(
                        cfg.keep_alive_interval.as_millis() / publishing.as_millis().max(1),
                    )
                    .unwrap_or(u32::MAX)
                    .max(1);
                    // The subscription outlives an outage as long as the session does
                    // (at least three keep-alives, as the specification requires).
                    let lifetime = u32::try_from(
                        cfg.session_timeout.as_millis() / publishing.as_millis().max(1),
                    )
                    .unwrap_or(u32::MAX)
                    .max(keep_alive.saturating_mul(3));
                    let id = session
                        .create_subscription(
                            publishing,
                            lifetime,
                            keep_alive,
                            cfg.max_notifications_per_publish,
                            0,
                            true,
                            Collect { inbox, lost },
                        )
                        .await?;
                    (id, std::collections::HashSet::new())
                }
            };
            let requests: Vec<MonitoredItemCreateRequest> = cfg
                .tags
                .iter()
                .zip(&tags)
                .enumerate()
                .filter(|(i, _)| !present.contains(&handle_of(*i)))
                .map(|(i, (t, node))| item_request(&cfg, t, node, handle_of(i)))
                .collect();
            if requests.is_empty() {
                return Ok(Vec::new());
            }
            let handles: Vec<u32> = requests
                .iter()
                .map(|r| r.requested_parameters.client_handle)
                .collect();
            let created = session
                .create_monitored_items(sub, TimestampsToReturn::Both, requests)
                .await?;
            Ok(handles
                .into_iter()
                .zip(created.iter().map(|c| c.result.status_code))
                .collect())
        })
    }

    /// Tags the server refused to monitor read Bad with the server's status (once per
    /// distinct refusal; they are retried every `reconnect_max`). Returns whether every
    /// item now exists.
    async fn item_failures<K: ReadingSink>(
        &mut self,
        sink: &mut K,
        items: &[(u32, StatusCode)],
    ) -> Result<bool, ()> {
        let now = Timestamp::now();
        let mut complete = true;
        for (handle, status) in items {
            let Some(i) = index_of(*handle).filter(|i| *i < self.tags.len()) else {
                continue;
            };
            if status.is_good() {
                self.refused.remove(&i);
                continue;
            }
            complete = false;
            if self.refused.insert(i, *status) == Some(*status) {
                continue;
            }
            let t = &self.tags[i];
            tracing::warn!(source = %self.src.name, tag = %t.name, node = %t.node,
                "the OPC-UA server refused to monitor {} ({}): {status}; retrying every {:?}",
                t.name, t.node, self.src.cfg.reconnect_max);
            let s = Sample::without_value(t.name.clone(), convert::quality(*status), now);
            sink.send(s).await.map_err(|_| ())?;
        }
        Ok(complete)
    }

    /// Reads the data type of every writable tag, for the handle.
    fn learn_write_types(&self, session: &Arc<Session>) -> JoinHandle<()> {
        let session = session.clone();
        let shared = self.src.shared.clone();
        let name = self.src.name.clone();
        let writable: Vec<(TagPath, NodeId)> = self
            .src
            .cfg
            .tags
            .iter()
            .zip(&self.tags)
            .filter(|(c, _)| c.writable)
            .map(|(c, t)| (c.name.clone(), t.node.clone()))
            .collect();
        tokio::spawn(async move {
            if writable.is_empty() {
                return;
            }
            let reads: Vec<ReadValueId> = writable
                .iter()
                .map(|(_, n)| ReadValueId {
                    node_id: n.clone(),
                    attribute_id: AttributeId::DataType as u32,
                    ..ReadValueId::default()
                })
                .collect();
            let Ok(values) = session.read(&reads, TimestampsToReturn::Neither, 0.0).await else {
                return;
            };
            let Ok(mut types) = shared.write_types.lock() else {
                return;
            };
            for ((tag, node), dv) in writable.iter().zip(values) {
                match dv.value.as_ref() {
                    Some(Variant::NodeId(t)) => match WriteType::of(t) {
                        Ok(w) => {
                            types.insert(tag.clone(), w);
                        }
                        Err(e) => {
                            tracing::warn!(source = %name, %tag, "{node}: {e}; commands to it are refused");
                        }
                    },
                    _ => tracing::warn!(source = %name, %tag,
                        "cannot read the data type of {node} ({:?}); commands to it are refused",
                        dv.status),
                }
            }
        })
    }

    /// Hands what the subscription delivered to the runtime.
    async fn deliver<K: ReadingSink>(&mut self, sink: &mut K) -> Result<(), ()> {
        let batch = match self.inbox.lock() {
            Ok(mut q) if !q.is_empty() => std::mem::take(&mut *q),
            _ => return Ok(()),
        };
        let now = Timestamp::now();
        #[allow(clippy::cast_precision_loss)]
        let now_s = now.unix_nanos() as f64 / 1e9;
        self.notifications.increment(batch.len() as u64);
        for (handle, dv) in batch {
            let Some(t) = index_of(handle).and_then(|i| self.tags.get_mut(i)) else {
                continue;
            };
            t.last_update.set(now_s);
            let (value, quality, time) = convert::to_parts(&dv, now);
            let sample = match value {
                Ok(Some(v)) => Sample::new(t.name.clone(), Some(v), quality, time)
                    .unwrap_or_else(|_| Sample::without_value(t.name.clone(), quality, time)),
                // No value (Empty): a Good status is not kept without one.
                Ok(None) => Sample::without_value(t.name.clone(), quality, time),
                Err(e) => {
                    if !t.warned {
                        t.warned = true;
                        tracing::warn!(source = %self.src.name, tag = %t.name,
                            "{} ({}): {e}; it reads Bad_NotSupported", t.name, t.node);
                    }
                    Sample::without_value(t.name.clone(), e.quality(), time)
                }
            };
            sink.send(sample).await.map_err(|_| ())?;
        }
        Ok(())
    }
}

/// The monitored item of one tag.
fn item_request(
    cfg: &OpcUaConfig,
    t: &super::config::TagConfig,
    node: &NodeId,
    client_handle: u32,
) -> MonitoredItemCreateRequest {
    let filter = t.server_deadband.map_or_else(ExtensionObject::null, |db| {
        ExtensionObject::from_message(DataChangeFilter {
            trigger: DataChangeTrigger::StatusValue,
            deadband_type: match db {
                ServerDeadband::Absolute(_) => 1,
                ServerDeadband::Percent(_) => 2,
            },
            deadband_value: db.value(),
        })
    });
    MonitoredItemCreateRequest {
        item_to_monitor: ReadValueId {
            node_id: node.clone(),
            attribute_id: AttributeId::Value as u32,
            ..ReadValueId::default()
        },
        monitoring_mode: MonitoringMode::Reporting,
        requested_parameters: MonitoringParameters {
            client_handle,
            sampling_interval: t
                .sampling_interval
                .unwrap_or(cfg.publishing_interval)
                .as_secs_f64()
                * 1000.0,
            filter,
            queue_size: t.queue_size,
            discard_oldest: true,
        },
    }
}

/// The output of `f`, or never when there is none (a `select!` branch guarded by
/// `f.is_some()`).
async fn pending_or<F: std::future::Future + Unpin>(f: &mut Option<F>) -> F::Output {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// The client handle of the tag at `index` (0 is reserved by async-opcua).
fn handle_of(index: usize) -> u32 {
    u32::try_from(index).map_or(u32::MAX, |i| i.saturating_add(1))
}

fn index_of(handle: u32) -> Option<usize> {
    usize::try_from(handle.checked_sub(1)?).ok()
}

/// Writes to the writable tags of an [`OpcUaSource`], over the source's session: the
/// [`CommandHandler`](iiot_core::command::CommandHandler) of OPC-UA. Each tag marked
/// `writable` is a target taking the kind of value of its node's data type (read from
/// the server when the source connects; until then the tag is not a target). A write
/// the server refuses is Rejected (nothing was written); one sent without an answer is
/// Failed (it may have happened; never retried); while disconnected, Rejected.
#[derive(Clone)]
pub struct OpcUaHandle {
    shared: Arc<Shared>,
    cfg: Arc<OpcUaConfig>,
    targets: Arc<HashMap<TagPath, NodeId>>,
}

impl std::fmt::Debug for OpcUaHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpcUaHandle")
            .field("endpoint", &self.cfg.endpoint)
            .field("targets", &self.targets.len())
            .finish_non_exhaustive()
    }
}

impl OpcUaHandle {
    /// Whether the source is connected right now.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::SeqCst)
    }

    pub(crate) fn node(&self, tag: &TagPath) -> Option<&NodeId> {
        self.targets.get(tag)
    }

    pub(crate) fn write_type(&self, tag: &TagPath) -> Option<WriteType> {
        self.shared.write_types.lock().ok()?.get(tag).copied()
    }

    /// Writes `value` to the writable tag `tag`, encoded as the node's data type.
    ///
    /// # Errors
    /// [`OpcUaError::NotConnected`] (nothing sent), `Convert` (the value does not fit
    /// or the node's type is not known yet: nothing sent), `Node` (the server refused:
    /// nothing written), `Timeout` or `Service` (the outcome is unknown).
    pub async fn write(
        &self,
        tag: &TagPath,
        value: &iiot_core::types::Value,
    ) -> Result<(), OpcUaError> {
        let not_connected = || OpcUaError::NotConnected {
            endpoint: self.cfg.endpoint.clone(),
        };
        let node = self.node(tag).ok_or_else(|| OpcUaError::Node {
            node: tag.to_string(),
            status: "not a writable tag of this source".into(),
            quality: Quality::BAD_NOT_WRITABLE,
        })?;
        let session = self.shared.session().ok_or_else(not_connected)?;
        let ty = self.write_type(tag).ok_or_else(|| OpcUaError::Node {
            node: node.to_string(),
            status: "its data type is not known (not read from the server yet)".into(),
            quality: Quality::BAD_WAITING_FOR_INITIAL_DATA,
        })?;
        client::write_node(&session, self.cfg.request_timeout, node, ty, value).await
    }
}
