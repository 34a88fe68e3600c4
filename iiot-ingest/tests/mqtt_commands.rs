//! A command's round trip against the real Mosquitto at `IIOT_MQTT_URL`
//! (issue 16, platform side): the issuer publishes through the MQTT core's
//! platform session; a device (an MQTT 5 client nobody here wrote: rumqttc)
//! receives it with QoS 1, not retained, with the message expiry of its TTL,
//! and acks it; ingest, subscribed with the default filter shapes
//! (`commands/+`, `commands/+/ack`), records both in the SQLite commands table.
#![cfg(all(feature = "mqtt", feature = "sqlite"))]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::commands::sqlite_commands;
use common::services::missing;
use iiot_core::codec::{Limits, protobuf};
use iiot_core::publish::{ConfirmedPublish, OutboundMessage};
use iiot_core::topic::UnsPath;
use iiot_core::types::{
    CommandAck, CommandState, DeviceId, Operation, Status, TagPath, Timestamp, Value,
};
use iiot_ingest::commands::{CommandIssuer, CommandRequest, TrackedState};
use iiot_ingest::sink::sqlite::{SqliteConfig, SqliteSink};
use iiot_ingest::source::mqtt::{MqttSource, MqttSourceConfig};
use iiot_ingest::{Pipeline, PipelineConfig, PipelineHandle};
use iiot_protocols::mqtt::{ConnectionState, MqttConfig, Session, SessionHandle};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio_util::sync::CancellationToken;

fn mqtt_url() -> String {
    std::env::var("IIOT_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".to_owned())
}

fn host_port() -> (String, u16) {
    let url = mqtt_url();
    let rest = url.trim_start_matches("mqtt://");
    let (h, p) = rest.rsplit_once(':').unwrap_or((rest, "1883"));
    (h.to_owned(), p.parse().unwrap_or(1883))
}

static N: AtomicU32 = AtomicU32::new(0);

fn unique(name: &str) -> String {
    format!(
        "{name}{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// The issuer's platform session, connected; `None` (after reporting) when
/// Mosquitto is unreachable.
async fn platform_session(cancel: &CancellationToken) -> Option<SessionHandle> {
    let (handle, session, _inbound) =
        Session::new(&MqttConfig::platform(mqtt_url(), unique("issuer"))).unwrap();
    tokio::spawn(session.run(cancel.clone()));
    let mut state = handle.state();
    match tokio::time::timeout(
        Duration::from_secs(5),
        state.wait_for(ConnectionState::is_connected),
    )
    .await
    {
        Ok(Ok(_)) => Some(handle),
        other => {
            missing("Mosquitto", &format!("{}: {other:?}", mqtt_url()));
            None
        }
    }
}

/// What the device saw of the command.
#[derive(Debug)]
struct Seen {
    topic: String,
    retain: bool,
    qos: QoS,
    expiry: Option<u32>,
    payload: bytes::Bytes,
}

/// A device subscribed to its command topics; reports what it receives and
/// acks each command `Completed` with its value read back. Returns once the
/// subscription is acknowledged.
async fn device(path: &UnsPath) -> tokio::sync::mpsc::Receiver<Seen> {
    let (h, p) = host_port();
    let mut o = MqttOptions::new(unique("device"), h, p);
    o.set_keep_alive(Duration::from_secs(10));
    let (client, mut ev) = AsyncClient::new(o, 100);
    let (seen_tx, seen) = tokio::sync::mpsc::channel(16);
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let filter = format!("{path}/commands/+");
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    tokio::spawn(async move {
        let mut subscribed_tx = Some(subscribed_tx);
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let topic = String::from_utf8(p.topic.to_vec()).unwrap();
                    let command = protobuf::decode_command(&p.payload, &Limits::default()).unwrap();
                    let ack = CommandAck {
                        command_id: command.id,
                        device_id: command.device_id.clone(),
                        state: CommandState::Completed,
                        time: Timestamp::now(),
                        detail: Some("written".into()),
                        result: command.op.value().cloned(),
                        duplicate: false,
                        reason: None,
                        received_at: Some(Timestamp::now()),
                    };
                    let _ = seen_tx
                        .send(Seen {
                            topic: topic.clone(),
                            retain: p.retain,
                            qos: p.qos,
                            expiry: p.properties.and_then(|x| x.message_expiry_interval),
                            payload: p.payload,
                        })
                        .await;
                    client
                        .publish(
                            format!("{topic}/ack"),
                            QoS::AtLeastOnce,
                            false,
                            protobuf::encode_command_ack(&ack),
                        )
                        .await
                        .unwrap();
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("device connection: {e}");
                    return;
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed)
        .await
        .expect("device: no SUBACK within 10 s")
        .unwrap();
    seen
}

/// Publishes status probes until the pipeline has committed one: its
/// subscriptions are live.
async fn until_subscribed(issuer: &SessionHandle, handle: &mut PipelineHandle, ent: &str) {
    let probe = DeviceId::new("probe").unwrap();
    let status = UnsPath::new(ent, "s", "a", "l", "plc", probe.clone())
        .unwrap()
        .status()
        .to_string();
    let payload = iiot_core::codec::json::encode_status(&Status::birth(probe));
    for _ in 0..100 {
        let before = handle.stats().acked;
        issuer
            .publish_confirmed(OutboundMessage::new(status.clone(), payload.clone()))
            .await
            .unwrap();
        if tokio::time::timeout(
            Duration::from_millis(300),
            handle.wait_for(|s| s.acked > before),
        )
        .await
        .is_ok()
        {
            return;
        }
    }
    panic!("the MQTT source never received a probe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issued_command_and_its_ack_reach_the_commands_table() {
    let cancel = CancellationToken::new();
    let Some(session) = platform_session(&cancel).await else {
        return;
    };
    let ent = unique("cmd");
    let path = UnsPath::new(
        &ent,
        "plant1",
        "area1",
        "line1",
        "plc",
        DeviceId::new("plc-01").unwrap(),
    )
    .unwrap();

    // Ingest: the default filters' shapes, narrowed to this test's enterprise.
    let client_id = unique("ingest");
    let mut mqtt = MqttSourceConfig {
        url: mqtt_url(),
        client_id: client_id.clone(),
        ..MqttSourceConfig::default()
    };
    mqtt.filters = vec![
        format!("$share/{client_id}/{ent}/+/+/+/+/+/commands/+"),
        format!("$share/{client_id}/{ent}/+/+/+/+/+/commands/+/ack"),
        format!("{ent}/+/+/+/+/+/status"),
    ];
    let dir = tempfile::TempDir::new().unwrap();
    let db = dir.path().join("ingest.sqlite3");
    let sink = SqliteSink::open(SqliteConfig::new(&db)).await.unwrap();
    let (mut handle, pipeline) = Pipeline::new(
        MqttSource::start(&mqtt).unwrap(),
        sink,
        PipelineConfig::default(),
    );
    let task = tokio::spawn(pipeline.run(cancel.clone()));
    until_subscribed(&session, &mut handle, &ent).await;
    let mut seen = device(&path).await;

    let issuer = CommandIssuer::new(session, "e2e-test");
    let mut request = CommandRequest::new(
        path.clone(),
        TagPath::new("tank1/setpoint").unwrap(),
        Operation::Set(Value::Double(80.0)),
        Duration::from_secs(30),
    );
    request.set_reason("end to end");
    let command = issuer.issue(&request).await.unwrap();

    let s = tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .expect("the device never got the command")
        .unwrap();
    assert_eq!(s.topic, path.command(command.id).to_string());
    assert_eq!((s.qos, s.retain), (QoS::AtLeastOnce, false));
    assert!(
        matches!(s.expiry, Some(29 | 30)),
        "the broker forwards the remaining expiry: {:?}",
        s.expiry
    );
    assert_eq!(
        protobuf::decode_command(&s.payload, &Limits::default()).unwrap(),
        command
    );

    let stats = tokio::time::timeout(
        Duration::from_secs(30),
        handle.wait_for(|s| s.commands >= 1 && s.command_acks >= 1),
    )
    .await
    .unwrap_or_else(|e| panic!("not recorded ({e}): {:?}", handle.stats()));
    assert_eq!(stats.dead_letter_total(), 0, "{stats:?}");
    let rows = sqlite_commands(&rusqlite::Connection::open(&db).unwrap(), "iiot_");
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let r = &rows[0];
    assert_eq!(
        (&r.device_id, r.command_id),
        (&command.device_id, command.id)
    );
    assert_eq!(r.state, TrackedState::State(CommandState::Completed));
    assert_eq!(r.issuer.as_deref(), Some("e2e-test"));
    assert_eq!(r.reason.as_deref(), Some("end to end"));
    assert_eq!(r.expires_at, Some(command.expires_at));
    assert_eq!(r.result, Some(Value::Double(80.0)));
    assert_eq!(r.detail.as_deref(), Some("written"));
    assert!(r.final_at.is_some() && r.delivered_at.is_some());
    cancel.cancel();
    task.await.unwrap().unwrap();
}
