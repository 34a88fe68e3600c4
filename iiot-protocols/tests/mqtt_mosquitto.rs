//! The MQTT session against the real Mosquitto (`IIOT_MQTT_URL`, default
//! `mqtt://127.0.0.1:1883`) (issue 5): confirmed publish, the last will when the
//! connection is cut without DISCONNECT, and the birth after it comes back.

#[path = "common/mqtt.rs"]
mod mqtt_common;

use std::time::Duration;

use iiot_core::publish::{ConfirmedPublish, OutboundMessage, QoS};
use iiot_protocols::mqtt::{MqttConfig, MqttVersion, Session};
use mqtt_common::{RawSubscriber, prefix, shared_mosquitto, status_json, unique};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(10);

fn config(host: &str, port: u16, device: &str, version: MqttVersion) -> MqttConfig {
    let mut c = MqttConfig::new(format!("mqtt://{host}:{port}"), device, prefix(device));
    c.set_protocol(version)
        .set_firmware_version("2.0.0")
        .set_keepalive(Duration::from_secs(5));
    c
}

#[tokio::test]
async fn confirmed_publish_and_subscribe_plain_mqtt5() {
    confirmed_publish_and_subscribe_plain(MqttVersion::V5).await;
}

#[tokio::test]
async fn confirmed_publish_and_subscribe_plain_mqtt311() {
    confirmed_publish_and_subscribe_plain(MqttVersion::V311).await;
}

async fn confirmed_publish_and_subscribe_plain(version: MqttVersion) {
    let Some((host, port)) = shared_mosquitto() else {
        return;
    };
    let device = unique("plain");
    let topic = format!("{}/telemetry", prefix(&device));
    let mut sub = RawSubscriber::connect(&host, port, &topic, None).await;

    let (handle, session, mut inbound) =
        Session::new(&config(&host, port, &device, version)).unwrap();
    let cancel = CancellationToken::new();
    let driver = tokio::spawn(session.run(cancel.clone()));
    assert!(handle.wait_connected(T).await);

    let mut open = Vec::new();
    for i in 0..1000u32 {
        open.push(
            handle
                .publish(OutboundMessage::new(
                    topic.clone(),
                    i.to_be_bytes().to_vec(),
                ))
                .await
                .unwrap(),
        );
    }
    for c in open {
        tokio::time::timeout(T, c).await.unwrap().unwrap();
    }
    for i in 0..1000u32 {
        assert_eq!(sub.next(T).await.unwrap().payload.as_ref(), i.to_be_bytes());
    }

    // Our own subscription, fed by our own publish.
    let cmd = format!("{}/commands/+", prefix(&device));
    handle.subscribe(cmd, QoS::AtLeastOnce).await.unwrap();
    let cmd_topic = format!("{}/commands/42", prefix(&device));
    handle
        .publish_confirmed(OutboundMessage::new(cmd_topic.clone(), b"open".to_vec()))
        .await
        .unwrap();
    let got = tokio::time::timeout(T, inbound.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.topic.as_str(), got.payload.as_ref()),
        (cmd_topic.as_str(), &b"open"[..])
    );

    cancel.cancel();
    driver.await.unwrap();
    mqtt_common::clear_retained(&host, port, &format!("{}/status", prefix(&device))).await;
}

/// The retained will (`online = false`) after a cut without DISCONNECT, then the
/// retained birth (`online = true`) after the device comes back.
#[tokio::test]
async fn last_will_then_birth_mqtt5() {
    last_will_then_birth(MqttVersion::V5).await;
}

#[tokio::test]
async fn last_will_then_birth_mqtt311() {
    last_will_then_birth(MqttVersion::V311).await;
}

async fn last_will_then_birth(version: MqttVersion) {
    let Some((host, port)) = shared_mosquitto() else {
        return;
    };
    let device = unique("lwt");
    let status = format!("{}/status", prefix(&device));
    let mut sub = RawSubscriber::connect(&host, port, &status, None).await;

    let (handle, session, _inbound) = Session::new(&config(&host, port, &device, version)).unwrap();
    let driver = tokio::spawn(session.run(CancellationToken::new()));
    let birth = sub.next(T).await.expect("birth");
    assert_eq!(status_json(&birth.payload)["online"], true);
    assert!(handle.wait_connected(T).await);

    // Cut: the driver dies with its socket, no DISCONNECT is sent.
    driver.abort();
    let _ = driver.await;
    let will = sub
        .wait_for(T, |m| status_json(&m.payload)["online"] == false)
        .await
        .expect("last will");
    let v = status_json(&will.payload);
    assert_eq!(v["device_id"], device.as_str());
    assert_eq!(v["reason"], "connection lost");

    // The will is retained: an operator subscribing now sees it.
    let mut late = RawSubscriber::connect(&host, port, &status, None).await;
    let seen = late.next(T).await.expect("retained will");
    assert!(seen.retain);
    assert_eq!(status_json(&seen.payload)["online"], false);

    // Back again: retained birth.
    let (handle, session, _inbound) = Session::new(&config(&host, port, &device, version)).unwrap();
    let cancel = CancellationToken::new();
    let driver = tokio::spawn(session.run(cancel.clone()));
    assert!(handle.wait_connected(T).await);
    let back = sub
        .wait_for(T, |m| status_json(&m.payload)["online"] == true)
        .await
        .expect("birth after return");
    assert_eq!(status_json(&back.payload)["firmware_version"], "2.0.0");
    let mut late = RawSubscriber::connect(&host, port, &status, None).await;
    let seen = late.next(T).await.expect("retained birth");
    assert!(seen.retain);
    assert_eq!(status_json(&seen.payload)["online"], true);

    // Clean shutdown: the retained offline status, then DISCONNECT, so the broker
    // does not publish the will on top of it.
    cancel.cancel();
    driver.await.unwrap();
    let off = sub.next(T).await.expect("offline at shutdown");
    assert_eq!(status_json(&off.payload)["reason"], "shutdown");
    assert!(
        sub.next(Duration::from_millis(500)).await.is_none(),
        "the will fired after a clean shutdown"
    );
    mqtt_common::clear_retained(&host, port, &format!("{}/status", prefix(&device))).await;
}
