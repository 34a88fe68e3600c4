//! The MQTT session against an in-process rumqttd broker (issue 5): confirmed
//! publish, birth, subscriptions, shutdown.

#[path = "common/mqtt.rs"]
mod mqtt_common;

use std::num::NonZeroUsize;
use std::time::Duration;

use iiot_core::publish::{ConfirmedPublish, OutboundMessage, PublishErrorKind, QoS};
use iiot_protocols::mqtt::{ConnectionState, MqttConfig, Session, WhenDisconnected};
use mqtt_common::{RawSubscriber, prefix, rumqttd, status_json, unique};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(10);

fn config(port: u16, device: &str) -> MqttConfig {
    let mut c = MqttConfig::new(format!("mqtt://127.0.0.1:{port}"), device, prefix(device));
    c.set_firmware_version("1.2.3").set_gateway_id("gw-1");
    c
}

/// Every confirmed publish resolves, and a subscriber sees each payload once.
#[tokio::test]
async fn confirmed_publishes_arrive_in_order() {
    let port = rumqttd();
    let device = unique("conf");
    let topic = format!("{}/telemetry", prefix(&device));
    let mut sub = RawSubscriber::connect("127.0.0.1", port, &topic, None).await;

    let mut c = config(port, &device);
    c.set_inflight(NonZeroUsize::new(16).unwrap());
    let (handle, session, _inbound) = Session::new(&c).unwrap();
    let cancel = CancellationToken::new();
    let driver = tokio::spawn(session.run(cancel.clone()));
    assert!(handle.wait_connected(T).await);

    // Pipelined: keep up to 16 confirmations open.
    let mut open = std::collections::VecDeque::new();
    for i in 0..500u32 {
        let msg = OutboundMessage::new(topic.clone(), i.to_be_bytes().to_vec());
        open.push_back(handle.publish(msg).await.unwrap());
        if open.len() == 16 {
            open.pop_front().unwrap().await.unwrap();
        }
    }
    for c in open {
        c.await.unwrap();
    }
    // And through the core trait.
    handle
        .publish_confirmed(OutboundMessage::new(
            topic.clone(),
            500u32.to_be_bytes().to_vec(),
        ))
        .await
        .unwrap();

    for i in 0..=500u32 {
        let m = sub.next(T).await.expect("message");
        assert_eq!(m.payload.as_ref(), i.to_be_bytes());
    }
    cancel.cancel();
    driver.await.unwrap();
}

/// After the CONNACK the session publishes the retained birth on `…/status`.
#[tokio::test]
async fn birth_after_connack() {
    let port = rumqttd();
    let device = unique("birth");
    let status_topic = format!("{}/status", prefix(&device));
    let mut sub = RawSubscriber::connect("127.0.0.1", port, &status_topic, None).await;

    let (handle, session, _inbound) = Session::new(&config(port, &device)).unwrap();
    let cancel = CancellationToken::new();
    let driver = tokio::spawn(session.run(cancel.clone()));
    let birth = sub.next(T).await.expect("birth");
    let v = status_json(&birth.payload);
    assert_eq!(v["online"], true);
    assert_eq!(v["device_id"], device.as_str());
    assert_eq!(v["firmware_version"], "1.2.3");
    assert_eq!(v["gateway_id"], "gw-1");
    assert!(v["start_time"].is_string());
    assert!(matches!(
        *handle.state().borrow(),
        ConnectionState::Connected { .. }
    ));

    // Clean shutdown: retained offline status, then Closed.
    cancel.cancel();
    driver.await.unwrap();
    let off = sub.next(T).await.expect("offline status");
    let v = status_json(&off.payload);
    assert_eq!(v["online"], false);
    assert_eq!(v["reason"], "shutdown");
    assert_eq!(*handle.state().borrow(), ConnectionState::Closed);
    let err = handle
        .publish_confirmed(OutboundMessage::new(status_topic, b"x".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(err.kind, PublishErrorKind::Closed);
    assert_eq!(err.message.payload.as_ref(), b"x");
}

/// Subscriptions deliver through the bounded inbound channel.
#[tokio::test]
async fn subscription_delivers_messages() {
    let port = rumqttd();
    let device = unique("subs");
    let (handle, session, mut inbound) = Session::new(&config(port, &device)).unwrap();
    let cancel = CancellationToken::new();
    let driver = tokio::spawn(session.run(cancel.clone()));
    assert!(handle.wait_connected(T).await);
    let filter = format!("{}/commands/+", prefix(&device));
    handle.subscribe(filter, QoS::AtLeastOnce).await.unwrap();

    // Another client publishes a command.
    let (other, other_session, _) = Session::new(&config(port, &unique("ops"))).unwrap();
    let other_driver = tokio::spawn(other_session.run(cancel.clone()));
    let topic = format!("{}/commands/c1", prefix(&device));
    other
        .publish_confirmed(OutboundMessage::new(topic.clone(), b"set 80".to_vec()))
        .await
        .unwrap();
    let got = tokio::time::timeout(T, inbound.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.topic, topic);
    assert_eq!(got.payload.as_ref(), b"set 80");

    assert!(handle.subscribe("a/#/b", QoS::AtLeastOnce).await.is_err());
    cancel.cancel();
    driver.await.unwrap();
    other_driver.await.unwrap();
}

/// Invalid topics and oversized messages are refused with the message given back
/// (for good: resending cannot help); with policy `Refuse`,
/// publishing before the connection exists fails with `NotConnected`.
#[tokio::test]
async fn refusals_return_the_message() {
    let port = mqtt_common::free_port(); // nothing listens
    let device = unique("refuse");
    let mut c = config(port, &device);
    c.set_when_disconnected(WhenDisconnected::Refuse);
    let (handle, session, _inbound) = Session::new(&c).unwrap();
    let cancel = CancellationToken::new();
    let driver = tokio::spawn(session.run(cancel.clone()));

    let e = handle
        .try_publish(OutboundMessage::new("a/+/b", b"p".to_vec()))
        .unwrap_err();
    assert!(matches!(e.kind, PublishErrorKind::Rejected { .. }));
    let e = handle
        .try_publish(OutboundMessage::new("a/b", vec![0u8; 2 << 20]))
        .unwrap_err();
    assert!(matches!(e.kind, PublishErrorKind::Rejected { .. }), "{e}");
    assert_eq!(e.message.payload.len(), 2 << 20);
    let e = handle
        .try_publish(OutboundMessage::new("a/b", b"p".to_vec()))
        .unwrap_err();
    assert_eq!(e.kind, PublishErrorKind::NotConnected);
    assert_eq!(e.message.topic, "a/b");

    // The state reports the failing attempts.
    let mut state = handle.state();
    tokio::time::timeout(
        T,
        state.wait_for(|s| matches!(s, ConnectionState::Disconnected { .. })),
    )
    .await
    .unwrap()
    .unwrap();
    cancel.cancel();
    driver.await.unwrap();
}

/// With the default `Queue` policy a publish made before the broker exists waits
/// in the bounded queue and is confirmed once the broker comes up; when the queue
/// is full, `try_publish` returns `QueueFull` with the message.
#[tokio::test]
async fn queued_while_down_then_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut broker) = mqtt_common::Mosquitto::start(dir.path(), "allow_anonymous true") else {
        return;
    };
    broker.kill();
    let device = unique("queue");
    let mut c = config(broker.port, &device);
    c.set_request_queue(NonZeroUsize::new(2).unwrap())
        .set_reconnect_backoff(Duration::from_millis(20), Duration::from_millis(100));
    let (handle, session, _inbound) = Session::new(&c).unwrap();
    let cancel = CancellationToken::new();
    let driver = tokio::spawn(session.run(cancel.clone()));
    let topic = format!("{}/telemetry", prefix(&device));
    let a = handle
        .try_publish(OutboundMessage::new(topic.clone(), b"a".to_vec()))
        .unwrap();
    let b = handle
        .try_publish(OutboundMessage::new(topic.clone(), b"b".to_vec()))
        .unwrap();
    let e = handle
        .try_publish(OutboundMessage::new(topic.clone(), b"c".to_vec()))
        .unwrap_err();
    assert_eq!(e.kind, PublishErrorKind::QueueFull);
    assert_eq!(e.message.payload.as_ref(), b"c");
    broker.restart();
    tokio::time::timeout(T, a).await.unwrap().unwrap();
    tokio::time::timeout(T, b).await.unwrap().unwrap();
    cancel.cancel();
    driver.await.unwrap();
}
