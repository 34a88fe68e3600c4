//! The MQTT source on the MQTT core of iiot-protocols (issue 13), against
//! Mosquitto processes the tests own:
//! - a 10 MiB QoS 1 publish followed by 100 good batches: under MQTT 5 the 100
//!   are stored and the source never reconnects (the broker honours the Maximum
//!   Packet Size in CONNECT); under 3.1.1 the source reports the typed
//!   "packet larger than the limit" error within seconds;
//! - a filter the broker's dynamic-security plugin refuses is a typed error;
//! - the source and a platform publisher over mutual TLS.
#![cfg(feature = "mqtt")]

#[path = "../../iiot-protocols/tests/common/mqtt.rs"]
mod mqtt_common;

use std::time::Duration;

use iiot_core::codec::protobuf;
use iiot_core::publish::{ConfirmedPublish, OutboundMessage};
use iiot_core::types::{DeviceId, MessageId, Sample, Sequence, TagPath, TelemetryBatch, Timestamp};
use iiot_ingest::sink::memory::MemorySink;
use iiot_ingest::source::mqtt::{MqttSource, MqttSourceConfig};
use iiot_ingest::source::{Source, SourceError};
use iiot_ingest::{Pipeline, PipelineConfig};
use iiot_protocols::mqtt::{MqttConfig, MqttVersion, Session, SessionHandle};
use mqtt_common::{DYNSEC_USER, Mosquitto, Pki, dynsec_mosquitto, mosquitto_pub_file, unique};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(20);
const TOPIC: &str = "core/plant1/area1/line1/plc/dev0/telemetry";

const PROBE: &str = "core/plant1/area1/line1/plc/probe/telemetry";

fn batch(device: &str, seq: u64) -> Vec<u8> {
    let t = Timestamp::from_unix_nanos(1_767_225_600_000_000_000 + seq as i64 * 1_000_000).unwrap();
    let sample = Sample::good(TagPath::new("t").unwrap(), seq as f64, t);
    let mut b = TelemetryBatch::new(DeviceId::new(device).unwrap(), Sequence(seq), vec![sample]);
    b.message_id = MessageId::generate();
    protobuf::encode_telemetry(&b)
}

fn source_config(url: String, client_id: &str, protocol: MqttVersion) -> MqttSourceConfig {
    MqttSourceConfig {
        url,
        protocol,
        client_id: client_id.to_owned(),
        filters: vec!["core/+/+/+/+/+/telemetry/#".to_owned()],
        reconnect_min: Duration::from_millis(100),
        ..MqttSourceConfig::default()
    }
}

/// A platform publisher (the MQTT core's platform client) and its driver.
async fn publisher(config: &MqttConfig) -> (SessionHandle, CancellationToken) {
    let (handle, session, _inbound) = Session::new(config).unwrap();
    let cancel = CancellationToken::new();
    tokio::spawn(session.run(cancel.clone()));
    assert!(handle.wait_connected(T).await, "publisher connects");
    (handle, cancel)
}

async fn publish_batches(handle: &SessionHandle, n: u64) {
    for seq in 1..=n {
        handle
            .publish_confirmed(OutboundMessage::new(TOPIC, batch("dev0", seq)))
            .await
            .unwrap();
    }
}

fn connects(broker: &Mosquitto, client_id: &str) -> usize {
    let log = std::fs::read_to_string(broker.dir.join("mosquitto.log")).unwrap_or_default();
    let id = format!(" as {client_id} ");
    log.lines()
        .filter(|l| l.contains("New client connected") && l.contains(&id))
        .count()
}

/// Starts the source and waits until its subscription took effect (a probe
/// batch of device `probe` is delivered and acked).
async fn subscribed(cfg: &MqttSourceConfig, handle: &SessionHandle) -> MqttSource {
    let mut source = MqttSource::start(cfg).unwrap();
    for seq in 1..=50 {
        handle
            .publish_confirmed(OutboundMessage::new(PROBE, batch("probe", seq)))
            .await
            .unwrap();
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(300), source.recv()).await {
            let d = r.unwrap().unwrap();
            source.ack(d.token).await.unwrap();
            return source;
        }
    }
    panic!("the source never subscribed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_publish_never_reaches_an_mqtt5_source() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Mosquitto::start(dir.path(), "allow_anonymous true") else {
        return;
    };
    let id = unique("core-v5");
    let cfg = source_config(broker.url(false), &id, MqttVersion::V5);
    let (publisher, stop) =
        publisher(&MqttConfig::platform(broker.url(false), unique("pub"))).await;
    let source = subscribed(&cfg, &publisher).await;

    mosquitto_pub_file(broker.port, TOPIC, &vec![b'x'; 10 << 20], dir.path());
    publish_batches(&publisher, 100).await;

    let sink = MemorySink::new();
    let (mut handle, pipeline) = Pipeline::new(source, sink.clone(), PipelineConfig::default());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(pipeline.run(cancel.clone()));
    let dev0 = || {
        sink.store()
            .rows
            .iter()
            .filter(|r| r.device_id.as_str() == "dev0")
            .count()
    };
    tokio::time::timeout(T, handle.wait_for(|_| dev0() >= 100))
        .await
        .expect("the 100 batches behind the 10 MiB publish are stored");
    assert_eq!(dev0(), 100);
    assert_eq!(connects(&broker, &id), 1, "the source never reconnected");
    cancel.cancel();
    task.await.unwrap().unwrap();
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_publish_is_a_typed_error_for_an_mqtt311_source() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Mosquitto::start(dir.path(), "allow_anonymous true") else {
        return;
    };
    let id = unique("core-v311");
    let cfg = source_config(broker.url(false), &id, MqttVersion::V311);
    let (publisher, stop) =
        publisher(&MqttConfig::platform(broker.url(false), unique("pub"))).await;
    let mut source = subscribed(&cfg, &publisher).await;

    mosquitto_pub_file(broker.port, TOPIC, &vec![b'x'; 10 << 20], dir.path());
    publish_batches(&publisher, 100).await;
    let err = tokio::time::timeout(T, async {
        loop {
            match source.recv().await {
                Err(e) => break e,
                Ok(Some(d)) => source.ack(d.token).await.unwrap(),
                Ok(None) => panic!("source ended"),
            }
        }
    })
    .await
    .expect("the loop is reported within seconds");
    match err {
        SourceError::PacketTooLarge { size, limit } => {
            assert!(size > 10 << 20, "{size}");
            assert_eq!(limit, cfg.max_packet_bytes);
        }
        other => panic!("{other:?}"),
    }
    // Reported with backoff: only a handful of reconnects, not a hot loop.
    let n = connects(&broker, &id);
    assert!((2..=10).contains(&n), "{n} connects");
    drop(source);
    stop.cancel();
}

#[tokio::test]
async fn refused_filter_is_a_typed_source_error() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = dynsec_mosquitto(dir.path()) else {
        return;
    };
    for protocol in [MqttVersion::V5, MqttVersion::V311] {
        let mut cfg = source_config(broker.url(false), &unique("core-dyn"), protocol);
        cfg.filters = vec!["allowed/#".to_owned(), "denied/#".to_owned()];
        cfg.username = Some(DYNSEC_USER.0.to_owned());
        cfg.password = Some(DYNSEC_USER.1.to_owned());
        let mut source = MqttSource::start(&cfg).unwrap();
        let err = tokio::time::timeout(T, source.recv())
            .await
            .expect("reported")
            .unwrap_err();
        match err {
            SourceError::SubscriptionRefused { filter, .. } => assert_eq!(filter, "denied/#"),
            other => panic!("{protocol:?}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_and_platform_publisher_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "platform");
    let Some(broker) = pki.mtls_mosquitto(dir.path()) else {
        return;
    };
    for protocol in [MqttVersion::V5, MqttVersion::V311] {
        // The platform publisher's certificate names the service, not its client id.
        let (pub_cert, pub_key) = pki.client("command-issuer", false);
        let mut pc = MqttConfig::platform(broker.url(true), unique("issuer"));
        pc.set_protocol(protocol)
            .set_ca_path(&pki.ca)
            .set_client_identity(&pub_cert, &pub_key);
        let (publisher, stop) = publisher(&pc).await;

        let id = unique("core-tls");
        let (cert, key) = pki.client(&id, false);
        let mut cfg = source_config(broker.url(true), &id, protocol);
        cfg.ca_path = Some(pki.ca.clone());
        cfg.client_cert_path = Some(cert);
        cfg.client_key_path = Some(key);
        let mut source = subscribed(&cfg, &publisher).await;
        publish_batches(&publisher, 10).await;
        for _ in 0..10 {
            let d = tokio::time::timeout(T, source.recv())
                .await
                .expect("delivered over TLS")
                .unwrap()
                .unwrap();
            assert!(d.topic == TOPIC || d.topic == PROBE, "{}", d.topic);
            source.ack(d.token).await.unwrap();
        }
        drop(source);
        stop.cancel();
    }
}

/// The Mosquitto config shipped for the reference deployment keeps a 2.2 MB
/// publish away from an MQTT 3.1.1 source (which could not skip it): its
/// `message_size_limit` matches the source's default `max_packet_bytes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_mosquitto_conf_protects_an_mqtt311_source() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/reference/config/mosquitto.conf"),
    )
    .unwrap();
    assert!(shipped.contains("message_size_limit"));
    // The test's own port and directory instead of 1883 and /var/lib.
    let mut extra: Vec<&str> = shipped
        .lines()
        .filter(|l| !l.starts_with("listener") && !l.starts_with("persistence_location"))
        .collect();
    let location = format!("persistence_location {}/", dir.path().display());
    extra.push(&location);
    let extra = extra.join("\n");
    let Some(broker) = Mosquitto::start(dir.path(), &extra) else {
        return;
    };
    let id = unique("core-conf");
    let cfg = source_config(broker.url(false), &id, MqttVersion::V311);
    let (publisher, stop) =
        publisher(&MqttConfig::platform(broker.url(false), unique("pub"))).await;
    let mut source = subscribed(&cfg, &publisher).await;
    mosquitto_pub_file(broker.port, TOPIC, &vec![b'x'; 2_200_000], dir.path());
    publish_batches(&publisher, 10).await;
    let mut got = 0;
    while got < 10 {
        let d = tokio::time::timeout(T, source.recv())
            .await
            .expect("the batches behind the big publish arrive")
            .unwrap()
            .unwrap();
        assert!(d.payload.len() < 1000, "the big publish was delivered");
        if d.topic == TOPIC {
            got += 1;
        }
        source.ack(d.token).await.unwrap();
    }
    assert_eq!(connects(&broker, &id), 1, "the source never reconnected");
    drop(source);
    stop.cancel();
}
