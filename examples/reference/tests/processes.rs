//! The halves as separate processes against Mosquitto: `iiot sim`, `iiot gateway`
//! and `iiot ingest`. The gateway reaches the broker through a relay the test cuts;
//! in the middle of that outage the gateway is killed with SIGKILL and restarted on
//! the same outbox, and later the ingest worker is killed and restarted too.
//! Afterwards the stored sequence numbers are contiguous, each once, and ingest
//! recorded no gap (issue 8).

mod common;

use std::time::Duration;

use common::{ChildGuard, free_port, mqtt_available, mqtt_url, sample_config, scrape, write};
use iiot_protocols::mqtt::{MqttConfig, Session};
use iiot_reference::demo::Relay;
use tokio_util::sync::CancellationToken;

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Where ingest writes.
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

    /// (sequence numbers in order, distinct message ids, gap rows) of `device`.
    async fn stored(&self, device: &str) -> (Vec<i64>, i64, i64) {
        match self {
            Self::Sqlite(db) => stored_sqlite(db, device),
            Self::Postgres { url, prefix } => {
                let Ok((c, conn)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await
                else {
                    return (Vec::new(), 0, 0);
                };
                tokio::spawn(conn);
                let seqs = c
                    .query(
                        &format!("SELECT seq::bigint FROM {prefix}messages WHERE device_id = $1 ORDER BY seq"),
                        &[&device],
                    )
                    .await
                    .map(|rows| rows.iter().map(|r| r.get::<_, i64>(0)).collect())
                    .unwrap_or_default();
                let one = |sql: String| {
                    let c = &c;
                    async move {
                        c.query_one(&sql, &[&device])
                            .await
                            .map_or(-1, |r| r.get::<_, i64>(0))
                    }
                };
                let ids = one(format!(
                    "SELECT count(DISTINCT message_id) FROM {prefix}samples WHERE device_id = $1"
                ))
                .await;
                let gaps = one(format!(
                    "SELECT count(*) FROM {prefix}gaps WHERE device_id = $1"
                ))
                .await;
                (seqs, ids, gaps)
            }
        }
    }
}

fn stored_sqlite(db: &std::path::Path, device: &str) -> (Vec<i64>, i64, i64) {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return (Vec::new(), 0, 0);
    };
    let seqs = conn
        .prepare("SELECT seq FROM iiot_messages WHERE device_id = ?1 ORDER BY seq")
        .and_then(|mut s| {
            s.query_map([device], |r| r.get::<_, i64>(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap_or_default();
    let one = |sql: &str| {
        conn.query_row(sql, [device], |r| r.get::<_, i64>(0))
            .unwrap_or(-1)
    };
    let ids = one("SELECT count(DISTINCT message_id) FROM iiot_samples WHERE device_id = ?1");
    let gaps = one("SELECT count(*) FROM iiot_gaps WHERE device_id = ?1");
    (seqs, ids, gaps)
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_killed_in_an_outage_and_ingest_killed_lose_nothing() {
    if !mqtt_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::Sqlite(dir.path().join("ingest.sqlite3"));
    scenario(dir.path(), &store).await;
}

/// The same into PostgreSQL (IIOT_PG_URL).
#[tokio::test(flavor = "multi_thread")]
async fn into_postgres_too() {
    if !mqtt_available() {
        return;
    }
    let Some(url) = common::postgres_url().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("refp{}_", std::process::id());
    let store = Store::Postgres {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    scenario(dir.path(), &store).await;
    common::drop_ingest_tables(&url, &prefix).await;
}

async fn scenario(dir: &std::path::Path, store: &Store) {
    let enterprise = unique("proc");
    let device = unique("plc");

    // The PLC.
    let map = sample_config("plant-map.toml").display().to_string();
    let plc = write(
        dir,
        "plc.toml",
        &format!("listen = \"127.0.0.1:0\"\nregister_map = {map:?}\n"),
    );
    let mut sim = ChildGuard::spawn(&["sim", "--config", plc.to_str().unwrap()]);
    let plc_addr: std::net::SocketAddr = sim
        .read_line()
        .strip_prefix("listening on ")
        .unwrap()
        .parse()
        .unwrap();

    // Ingest into SQLite.
    let ingest_cfg = write(
        dir,
        "ingest.toml",
        &format!(
            "[mqtt]\nurl = {url:?}\nclient_id = {cid:?}\n\
             filters = [\"{enterprise}/+/+/+/+/+/telemetry/#\", \"{enterprise}/+/+/+/+/+/status\"]\n\
             [pipeline]\nbatch_max_delay = 50\n{sink}",
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
        ingest_cfg.to_str().unwrap(),
        "--metrics",
        &metrics,
    ]);
    let cancel = CancellationToken::new();
    let broker: std::net::SocketAddr = mqtt_url()
        .trim_start_matches("mqtt://")
        .parse()
        .expect("IIOT_MQTT_URL as mqtt://IP:PORT");
    let relay = Relay::start(broker, &cancel).await.unwrap();
    assert!(ingest.read_line().starts_with("ingest started"));

    // Wait until ingest's subscriptions are in place: a probe's retained birth arrives.
    let probe = unique("probe");
    let (_h, session, _in) = Session::new(&MqttConfig::new(
        mqtt_url(),
        &probe,
        format!("{enterprise}/s/a/l/probe/{probe}"),
    ))
    .unwrap();
    let stop = CancellationToken::new();
    let probe_task = tokio::spawn(session.run(stop.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !scrape(port).contains(&format!("device=\"{probe}\"")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ingest never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    let _ = probe_task.await;

    // The gateway, killed once.
    let text = std::fs::read_to_string(sample_config("gateway.toml"))
        .unwrap()
        .replace("device_id = \"plc-01\"", &format!("device_id = {device:?}"))
        .replace(
            "enterprise = \"acme\"",
            &format!("enterprise = {enterprise:?}"),
        )
        .replace(
            "register_map = \"plant-map.toml\"",
            &format!("register_map = {map:?}"),
        )
        .replace(
            "data_dir = \"iiot-gateway-data\"",
            &format!("data_dir = {:?}", dir.join("gw").display().to_string()),
        )
        .replace("port = 5020", &format!("port = {}", plc_addr.port()))
        .replace(
            "broker_url = \"mqtt://127.0.0.1:1883\"",
            &format!("broker_url = {:?}", mqtt_url()),
        )
        .replace("max_delay_ms = 1000", "max_delay_ms = 100");
    let gw_cfg = write(dir, "gateway.toml", &text);
    let args = ["gateway", "--config", gw_cfg.to_str().unwrap()];
    let mut gw = ChildGuard::spawn(&args);
    assert!(gw.read_line().contains("running"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Broker outage; the gateway dies in the middle of it and comes back.
    relay.cut();
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(gw); // SIGKILL
    let mut gw = ChildGuard::spawn(&args);
    assert!(gw.read_line().contains("running"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    relay.restore();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The ingest worker dies once too; its persistent session keeps the rest.
    drop(ingest); // SIGKILL
    let ingest_again = ChildGuard::spawn(&["ingest", "--config", ingest_cfg.to_str().unwrap()]);
    let mut ingest = ingest_again;
    assert!(ingest.read_line().starts_with("ingest started"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A clean stop (SIGTERM): stop polling, drain the outbox, exit.
    let status = std::process::Command::new("kill")
        .arg(gw.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !gw.exited() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gateway did not stop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Everything the two runs appended is stored once, without holes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut last = store.stored(&device).await;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = store.stored(&device).await;
        let settled = now == last && now.0.len() >= 4;
        last = now;
        if settled || tokio::time::Instant::now() > deadline {
            break;
        }
    }
    let (seqs, ids, gaps) = last;
    assert!(seqs.len() >= 4, "too few batches: {seqs:?}");
    let first = seqs[0];
    let expected: Vec<i64> = (first..first + seqs.len() as i64).collect();
    assert_eq!(
        seqs, expected,
        "sequence numbers must be contiguous and unique"
    );
    assert_eq!(ids, seqs.len() as i64, "one message id per sequence number");
    assert_eq!(gaps, 0, "ingest recorded a gap");
    cancel.cancel();
    drop(ingest);
    drop(sim);
}
