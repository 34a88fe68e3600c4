//! What a real broker refuses reaches the caller as a typed error (issue 13):
//! a publish its ACL denies (MQTT 5 PUBACK "not authorized"; under 3.1.1
//! Mosquitto acknowledges and drops it, documented here), a subscription its
//! dynamic-security plugin refuses (SUBACK reason), and a packet larger than the
//! client's limit (MQTT 5: never sent; 3.1.1: reported, with backoff).

#[path = "common/mqtt.rs"]
mod mqtt_common;

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use iiot_core::publish::{
    ConfirmedPublish, OutboundMessage, PublishErrorKind, PublishRefusal, QoS,
};
use iiot_core::types::{DeviceId, Sequence};
use iiot_edge::forwarder::{Forwarder, ForwarderConfig};
use iiot_edge::outbox::{Outbox, OutboxConfig};
use iiot_protocols::mqtt::{
    ConnectionState, DisconnectReason, Inbound, MqttConfig, MqttVersion, Session, SessionHandle,
    SubscribeErrorKind,
};
use mqtt_common::{
    DYNSEC_USER, Mosquitto, RawSubscriber, dynsec_mosquitto, mosquitto_pub_file, prefix, unique,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(10);

/// Mosquitto whose ACL file lets anyone read everything but write only under
/// `iiot-test/#`.
fn acl_broker(dir: &std::path::Path) -> Option<Mosquitto> {
    let acl = dir.join("acl");
    std::fs::write(&acl, "topic readwrite iiot-test/#\ntopic read #\n").unwrap();
    Mosquitto::start(
        dir,
        &format!("allow_anonymous true\nacl_file {}", acl.display()),
    )
}

struct Running {
    handle: SessionHandle,
    inbound: Inbound,
    cancel: CancellationToken,
    driver: JoinHandle<()>,
}

impl Running {
    fn start(config: &MqttConfig) -> Self {
        let (handle, session, inbound) = Session::new(config).unwrap();
        let cancel = CancellationToken::new();
        let driver = tokio::spawn(session.run(cancel.clone()));
        Self {
            handle,
            inbound,
            cancel,
            driver,
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.driver.await.unwrap();
    }
}

fn device(broker: &Mosquitto, version: MqttVersion) -> MqttConfig {
    let id = unique("refusal");
    let mut c = MqttConfig::new(broker.url(false), id.clone(), prefix(&id));
    c.set_protocol(version)
        .set_ack_timeout(T)
        .set_reconnect_backoff(Duration::from_millis(100), Duration::from_secs(2));
    c
}

#[tokio::test]
async fn acl_denied_publish_fails_back_not_authorized_under_mqtt5() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = acl_broker(dir.path()) else {
        return;
    };
    let config = device(&broker, MqttVersion::V5);
    let s = Running::start(&config);
    assert!(s.handle.wait_connected(T).await);
    let err = s
        .handle
        .publish_confirmed(OutboundMessage::new("denied/here", b"secret".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind,
        PublishErrorKind::Refused {
            refusal: PublishRefusal::NotAuthorized
        }
    );
    assert!(!err.kind.is_retryable());
    assert_eq!(err.message.payload.as_ref(), b"secret");
    // The connection is fine: an allowed publish goes through.
    s.handle
        .publish_confirmed(OutboundMessage::new(
            format!("{}/telemetry", config.topic_prefix()),
            b"ok".to_vec(),
        ))
        .await
        .unwrap();
    s.stop().await;
}

/// Through the outbox and forwarder: the refused record is not counted as sent
/// and stays in the outbox; the forwarder backs off instead of retrying hot.
#[tokio::test]
async fn acl_denied_record_stays_in_the_outbox_under_mqtt5() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = acl_broker(dir.path()) else {
        return;
    };
    let config = device(&broker, MqttVersion::V5);
    let s = Running::start(&config);
    let ob = Outbox::open(
        &dir.path().join("outbox"),
        DeviceId::new(config.client_id()).unwrap(),
        OutboxConfig::default(),
    )
    .await
    .unwrap();
    let telemetry = format!("{}/telemetry", config.topic_prefix());
    for topic in [telemetry.as_str(), "denied/here", telemetry.as_str()] {
        let _ = ob
            .append(OutboundMessage::new(topic, b"r".to_vec()))
            .await
            .unwrap()
            .durable()
            .await
            .unwrap();
    }
    let mut fc = ForwarderConfig::default();
    fc.set_max_in_flight(NonZeroUsize::MIN)
        .set_backoff(Duration::from_millis(200), Duration::from_secs(5))
        .set_replay_rate(NonZeroU32::new(1000));
    let (mut status, fwd) = Forwarder::new(
        ob.clone(),
        s.handle.clone(),
        |_l: &iiot_core::types::DataLoss| OutboundMessage::new("unused", Vec::<u8>::new()),
        fc,
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn(fwd.run(cancel.clone()));
    tokio::time::timeout(T, status.wait_for(|s| s.failures >= 2))
        .await
        .expect("the refusal is retried with backoff");
    let st = status.status();
    assert_eq!(
        st.acked,
        Some(Sequence(1)),
        "only the record before it: {st:?}"
    );
    assert_eq!(st.confirmed, 1, "{st:?}");
    ob.sync().await;
    assert_eq!(
        ob.stats().backlog_records,
        2,
        "the refused record and the one after it stay"
    );
    cancel.cancel();
    task.await.unwrap();
    s.stop().await;
}

/// Documents MQTT 3.1.1: Mosquitto answers PUBACK for a publish its ACL denies
/// and drops it, so the sender cannot tell. Use MQTT 5.
#[tokio::test]
async fn acl_denied_publish_is_acknowledged_and_dropped_under_mqtt311() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = acl_broker(dir.path()) else {
        return;
    };
    let mut watcher = RawSubscriber::connect("127.0.0.1", broker.port, "#", None).await;
    let config = device(&broker, MqttVersion::V311);
    let s = Running::start(&config);
    assert!(s.handle.wait_connected(T).await);
    s.handle
        .publish_confirmed(OutboundMessage::new("denied/here", b"secret".to_vec()))
        .await
        .expect("3.1.1: the broker acknowledges what it drops");
    let marker = format!("{}/marker", config.topic_prefix());
    s.handle
        .publish_confirmed(OutboundMessage::new(marker.clone(), b"m".to_vec()))
        .await
        .unwrap();
    let mut before = Vec::new();
    loop {
        let m = watcher.next(T).await.expect("the marker arrives");
        if m.topic == marker {
            break;
        }
        before.push(m.topic);
    }
    assert!(
        !before.iter().any(|t| t == "denied/here"),
        "the denied publish was delivered: {before:?}"
    );
    s.stop().await;
}

async fn refused_subscription(version: MqttVersion, code: u8) {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = dynsec_mosquitto(dir.path()) else {
        return;
    };
    let mut config = device(&broker, version);
    config.set_credentials(DYNSEC_USER.0, DYNSEC_USER.1);
    let s = Running::start(&config);
    assert!(s.handle.wait_connected(T).await);
    let err = s
        .handle
        .subscribe("denied/#", QoS::AtLeastOnce)
        .await
        .unwrap_err();
    assert_eq!(err.filter, "denied/#");
    assert_eq!(err.kind, SubscribeErrorKind::Refused { code });
    s.handle
        .subscribe("allowed/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(s.handle.refused().borrow().len(), 1);
    s.stop().await;

    // Subscribed at connect (as ingest does): the refusal is reported too.
    let (handle, mut session, _inbound) = Session::new(&config).unwrap();
    session
        .subscribe_on_connect(
            &["allowed/x".to_owned(), "denied/y".to_owned()],
            QoS::AtLeastOnce,
        )
        .unwrap();
    let cancel = CancellationToken::new();
    let driver = tokio::spawn(session.run(cancel.clone()));
    let mut refused = handle.refused();
    let list = tokio::time::timeout(T, refused.wait_for(|r| !r.is_empty()))
        .await
        .expect("refusal reported")
        .unwrap()
        .clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].filter, "denied/y");
    assert_eq!(list[0].kind, SubscribeErrorKind::Refused { code });
    cancel.cancel();
    driver.await.unwrap();
}

#[tokio::test]
async fn refused_subscription_is_a_typed_error_mqtt5() {
    refused_subscription(MqttVersion::V5, 0x87).await;
}

#[tokio::test]
async fn refused_subscription_is_a_typed_error_mqtt311() {
    refused_subscription(MqttVersion::V311, 0x80).await;
}

const LIMIT: usize = 64 * 1024;

/// A persistent session subscribed to its commands with a 64 KiB limit; then
/// a 200 KiB QoS 1 publish and five small ones arrive for it.
async fn poison(version: MqttVersion) -> Option<(Mosquitto, Running, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path(), "allow_anonymous true\nmax_queued_messages 1000")?;
    let mut config = device(&broker, version);
    config.set_max_packet_size(NonZeroUsize::new(LIMIT).unwrap());
    let s = Running::start(&config);
    assert!(s.handle.wait_connected(T).await);
    let topic = format!("{}/commands/x", config.topic_prefix());
    s.handle.subscribe(&topic, QoS::AtLeastOnce).await.unwrap();
    mosquitto_pub_file(broker.port, &topic, &vec![b'x'; 200 * 1024], dir.path());
    for i in 0..5u8 {
        mosquitto_pub_file(broker.port, &topic, &[b'0' + i], dir.path());
    }
    Some((broker, s, dir))
}

#[tokio::test]
async fn poison_packet_is_never_sent_under_mqtt5() {
    let Some((broker, mut s, _dir)) = poison(MqttVersion::V5).await else {
        return;
    };
    for i in 0..5u8 {
        let m = tokio::time::timeout(T, s.inbound.recv())
            .await
            .expect("small messages arrive")
            .unwrap();
        assert_eq!(m.payload.as_ref(), [b'0' + i]);
    }
    // Mosquitto logs every connect: one, the connection never dropped.
    let log = std::fs::read_to_string(broker.dir.join("mosquitto.log")).unwrap();
    let id = format!(" as {} ", s.handle.client_id());
    let connects = log
        .lines()
        .filter(|l| l.contains("New client connected") && l.contains(&id))
        .count();
    assert_eq!(connects, 1, "{log}");
    assert!(s.handle.state().borrow().is_connected());
    s.stop().await;
}

#[tokio::test]
async fn poison_packet_is_reported_with_backoff_under_mqtt311() {
    let Some((_broker, s, _dir)) = poison(MqttVersion::V311).await else {
        return;
    };
    let mut state = s.handle.state();
    let start = tokio::time::Instant::now();
    let first = tokio::time::timeout(
        T,
        state.wait_for(
            |s| matches!(s, ConnectionState::Disconnected { attempt, .. } if *attempt >= 2),
        ),
    )
    .await
    .expect("reported within seconds")
    .unwrap()
    .clone();
    assert_eq!(
        first,
        ConnectionState::Disconnected {
            attempt: 2,
            reason: DisconnectReason::PacketTooLarge {
                size: first_size(&first),
                limit: LIMIT
            }
        }
    );
    assert!(first_size(&first) > 200 * 1024);
    // Backoff, not a hot loop: attempts 2 to 5 wait at least 0.05 + 0.1 + 0.2 s
    // (half of 100, 200 and 400 ms at the least jitter).
    let at2 = start.elapsed();
    tokio::time::timeout(
        T,
        state.wait_for(
            |s| matches!(s, ConnectionState::Disconnected { attempt, .. } if *attempt >= 5),
        ),
    )
    .await
    .expect("keeps retrying")
    .unwrap();
    let spread = start.elapsed().saturating_sub(at2);
    assert!(
        spread >= Duration::from_millis(350),
        "attempts 2..5 took only {spread:?}"
    );
    s.stop().await;
}

fn first_size(s: &ConnectionState) -> usize {
    match s {
        ConnectionState::Disconnected {
            reason: DisconnectReason::PacketTooLarge { size, .. },
            ..
        } => *size,
        _ => 0,
    }
}
