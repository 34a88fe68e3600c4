//! Manual acks on the MQTT core (issue 13), against a Mosquitto process the test
//! owns and restarts: a PUBACK goes out only when the application acks, in
//! delivery order (an ack of a later message waits for the earlier one), and
//! never on a connection other than the one that delivered the message (a token
//! from before a reconnect acknowledges nothing; the broker redelivers). Under
//! both protocol versions.

#[path = "common/mqtt.rs"]
mod mqtt_common;

use std::time::Duration;

use iiot_core::publish::QoS;
use iiot_protocols::mqtt::{
    AckToken, Inbound, InboundAcks, InboundMessage, MqttConfig, MqttVersion, Session, SessionHandle,
};
use mqtt_common::{Mosquitto, mosquitto_pub_file, prefix, unique};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(10);

async fn next(inbound: &mut Inbound) -> InboundMessage {
    tokio::time::timeout(T, inbound.recv())
        .await
        .expect("a delivery in time")
        .expect("session running")
}

/// The next `n` deliveries: payloads and tokens.
async fn take(inbound: &mut Inbound, n: usize) -> Vec<(String, AckToken)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let m = next(inbound).await;
        let payload = String::from_utf8(m.payload.to_vec()).unwrap();
        out.push((payload, m.token.expect("QoS 1 in manual mode has a token")));
    }
    out
}

async fn restart(broker: &mut Mosquitto, handle: &SessionHandle) {
    tokio::task::block_in_place(|| {
        broker.stop();
        broker.restart();
    });
    let mut state = handle.state();
    // Wait for the drop, then for the new CONNACK.
    let _ = tokio::time::timeout(T, state.wait_for(|s| !s.is_connected())).await;
    assert!(handle.wait_connected(T).await, "reconnected");
}

async fn manual_acks(version: MqttVersion) {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "allow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 0\n",
        dir.path().display()
    );
    let Some(mut broker) = Mosquitto::start(dir.path(), &extra) else {
        return;
    };
    let device = unique("acks");
    let mut config = MqttConfig::new(broker.url(false), device.clone(), prefix(&device));
    config
        .set_protocol(version)
        .set_inbound_acks(InboundAcks::Manual)
        .set_reconnect_backoff(Duration::from_millis(50), Duration::from_millis(200));
    let (handle, session, mut inbound) = Session::new(&config).unwrap();
    let cancel = CancellationToken::new();
    let driver = tokio::spawn(session.run(cancel.clone()));
    assert!(handle.wait_connected(T).await);
    let topic = format!("{}/commands/c", prefix(&device));
    handle.subscribe(&topic, QoS::AtLeastOnce).await.unwrap();
    let pub_dir = tempfile::tempdir().unwrap();
    for m in ["m1", "m2", "m3"] {
        mosquitto_pub_file(broker.port, &topic, m.as_bytes(), pub_dir.path());
    }

    // Connection 1: ack m1 and m3; m3's PUBACK waits for m2's, which never comes.
    let got = take(&mut inbound, 3).await;
    let names: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(names, ["m1", "m2", "m3"]);
    let generation = got[0].1.generation();
    handle.ack(got[0].1.clone()).await.unwrap();
    handle.ack(got[2].1.clone()).await.unwrap();
    restart(&mut broker, &handle).await;

    // Connection 2: m2 and m3 again (m1 was acknowledged), with new tokens.
    let again = take(&mut inbound, 2).await;
    let names: Vec<&str> = again.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(names, ["m2", "m3"], "only the acknowledged m1 is gone");
    assert!(again.iter().all(|(_, t)| t.generation() > generation));
    // Tokens of connection 1 acknowledge nothing on connection 2.
    handle.ack(got[1].1.clone()).await.unwrap();
    handle.ack(got[2].1.clone()).await.unwrap();
    restart(&mut broker, &handle).await;

    // Connection 3: still both; now acknowledge them on the connection that delivered them.
    let third = take(&mut inbound, 2).await;
    let names: Vec<&str> = third.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        names,
        ["m2", "m3"],
        "stale tokens acknowledged a redelivery"
    );
    for (_, t) in &third {
        handle.ack(t.clone()).await.unwrap();
    }
    // The acks reach the broker before the clean shutdown (they go out first).
    cancel.cancel();
    driver.await.unwrap();
    tokio::task::block_in_place(|| {
        broker.stop();
        broker.restart();
    });

    // Nothing left: a new session of the same client gets the marker first.
    let (handle, session, mut inbound) = Session::new(&config).unwrap();
    let cancel = CancellationToken::new();
    let driver = tokio::spawn(session.run(cancel.clone()));
    assert!(handle.wait_connected(T).await);
    mosquitto_pub_file(broker.port, &topic, b"marker", pub_dir.path());
    let m = next(&mut inbound).await;
    assert_eq!(
        m.payload.as_ref(),
        b"marker",
        "a message was left unacknowledged"
    );
    handle.ack(m.token.unwrap()).await.unwrap();
    cancel.cancel();
    driver.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_in_order_and_never_on_another_connection_mqtt5() {
    manual_acks(MqttVersion::V5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_in_order_and_never_on_another_connection_mqtt311() {
    manual_acks(MqttVersion::V311).await;
}
