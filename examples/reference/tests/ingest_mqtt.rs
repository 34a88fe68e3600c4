//! `iiot ingest` against a real broker (Mosquitto, IIOT_MQTT_URL): telemetry
//! published at QoS 1 lands in the SQLite file once, a duplicate is suppressed, a
//! broken payload is dead-lettered, and `--metrics` shows the per-device signals.

mod common;

use std::time::Duration;

use common::{ChildGuard, free_port, mqtt_available, mqtt_url, scrape, unique, write};
use iiot_core::codec::protobuf;
use iiot_core::publish::{ConfirmedPublish, OutboundMessage};
use iiot_core::types::{DeviceId, Sample, Sequence, TagPath, TelemetryBatch, Timestamp};
use iiot_protocols::mqtt::{MqttConfig, Session};
use tokio_util::sync::CancellationToken;

/// Where the rows are counted.
enum Store {
    Sqlite(std::path::PathBuf),
    Postgres { url: String, prefix: String },
}

impl Store {
    fn toml(&self) -> String {
        match self {
            Self::Sqlite(db) => format!("[sink.sqlite]\npath = {:?}\n", db.display().to_string()),
            Self::Postgres { url, prefix } => format!(
                "[sink.postgres]\nurl = {url:?}\ntable_prefix = {prefix:?}\ntimescale = \"off\"\n"
            ),
        }
    }

    async fn count(&self, device: &str) -> i64 {
        match self {
            Self::Sqlite(db) => count_rows(db, device),
            Self::Postgres { url, prefix } => {
                let Ok((client, conn)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await
                else {
                    return 0;
                };
                tokio::spawn(conn);
                client
                    .query_one(
                        &format!("SELECT count(*) FROM {prefix}samples WHERE device_id = $1"),
                        &[&device],
                    )
                    .await
                    .map_or(0, |r| r.get::<_, i64>(0))
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn telemetry_reaches_sqlite_once_with_metrics() {
    if !mqtt_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::Sqlite(dir.path().join("ingest.sqlite3"));
    scenario(dir.path(), &store).await;
}

/// The same against PostgreSQL (IIOT_PG_URL).
#[tokio::test(flavor = "multi_thread")]
async fn telemetry_reaches_postgres_once_with_metrics() {
    if !mqtt_available() {
        return;
    }
    let Some(url) = common::postgres_url().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("ref{}_", std::process::id());
    let store = Store::Postgres {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    scenario(dir.path(), &store).await;
    common::drop_ingest_tables(&url, &prefix).await;
}

async fn scenario(dir: &std::path::Path, store: &Store) {
    let device = unique("dev");
    let enterprise = unique("test");
    let cfg = write(
        dir,
        "ingest.toml",
        &format!(
            "[mqtt]\nurl = {url:?}\nclient_id = {cid:?}\n\
             filters = [\"{enterprise}/+/+/+/+/+/telemetry/#\", \"{enterprise}/+/+/+/+/+/status\"]\n\
             [pipeline]\nbatch_max_delay = \"20ms\"\n{sink}",
            url = mqtt_url(),
            cid = unique("ingest"),
            sink = store.toml(),
        ),
    );
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let mut ingest = ChildGuard::spawn(&[
        "ingest",
        "--config",
        cfg.to_str().unwrap(),
        "--metrics",
        &metrics,
    ]);
    let ready = ingest.read_line();
    assert!(ready.starts_with("ingest started"), "{ready}");

    // A device publishing three batches, the second one twice, and one broken payload.
    let prefix = format!("{enterprise}/site/area/line/plc/{device}");
    let (handle, session, _inbound) =
        Session::new(&MqttConfig::new(mqtt_url(), &device, &prefix)).unwrap();
    let cancel = CancellationToken::new();
    let driver = tokio::spawn(session.run(cancel.clone()));
    assert!(handle.wait_connected(Duration::from_secs(10)).await);
    let id = DeviceId::new(device.clone()).unwrap();
    let tag = TagPath::new("tank1/level").unwrap();
    let batches: Vec<TelemetryBatch> = (1..=3)
        .map(|seq| {
            TelemetryBatch::new(
                id.clone(),
                Sequence(seq),
                vec![
                    Sample::good(tag.clone(), seq as f64, Timestamp::now()),
                    Sample::good(
                        TagPath::new("pump1/running").unwrap(),
                        true,
                        Timestamp::now(),
                    ),
                ],
            )
        })
        .collect();
    let topic = format!("{prefix}/telemetry");
    let publish = |b: &TelemetryBatch| {
        handle.publish_confirmed(OutboundMessage::new(
            topic.clone(),
            protobuf::encode_telemetry(b),
        ))
    };
    // The source subscribes once it is connected and says nothing when it has:
    // publish the first batch until its rows appear (the repeats are duplicates).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while store.count(&device).await < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ingest never stored batch 1"
        );
        publish(&batches[0]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for b in [&batches[1], &batches[1], &batches[2]] {
        publish(b).await.unwrap();
    }
    handle
        .publish_confirmed(OutboundMessage::new(
            topic.clone(),
            b"\x08\x09garbage".to_vec(),
        ))
        .await
        .unwrap();

    // Six rows (three batches of two samples), the duplicate suppressed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let rows = loop {
        let rows = store.count(&device).await;
        if rows >= 6 || tokio::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(rows, 6);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.count(&device).await, 6, "no duplicate rows");

    let text = scrape(port);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name) && l.contains(&device))
            .map(str::to_owned)
    };
    assert!(
        line("iiot_reference_device_samples_committed_total").is_some_and(|l| l.ends_with(" 6")),
        "{text}"
    );
    assert!(
        line("iiot_ingest_device_last_seen_seconds").is_some(),
        "{text}"
    );
    assert!(line("iiot_ingest_device_online").is_some(), "{text}");
    assert!(
        line("iiot_reference_device_dead_letters_total").is_some(),
        "{text}"
    );
    cancel.cancel();
    let _ = driver.await;
    drop(ingest);
}

fn count_rows(db: &std::path::Path, device: &str) -> i64 {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return 0;
    };
    conn.query_row(
        "SELECT count(*) FROM iiot_samples WHERE device_id = ?1",
        [device],
        |r| r.get(0),
    )
    .unwrap_or(0)
}
