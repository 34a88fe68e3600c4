//! Interop against an OPC-UA server nobody here wrote: Python asyncua
//! (`tests/peers/opcua_server.py`) on a free port (issue 18). Values of every scalar
//! type arrive with the right core types, statuses as qualities, the changing counter
//! at the subscription rate; writes and browse work; a server killed and restarted
//! mid-stream reads Bad, then recovers; a server that stops answering (SIGSTOP) reads
//! Bad instead of stale Good.
//!
//! Needs `IIOT_PYTHON` pointing at a python with `asyncua` (`.ci/run` sets it up).
//! Without it the test says why and passes, unless `IIOT_REQUIRE_SERVICES=1`.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::free_port;
use common::opcua::{Running, python, start_peer};
use iiot_core::quality::Quality;
use iiot_core::source::Link;
use iiot_core::types::{TagPath, Value};
use iiot_protocols::opcua::{OpcUaClient, OpcUaConfig, OpcUaSource};

const T: Duration = Duration::from_secs(30);

fn fast(endpoint: &str) -> OpcUaConfig {
    let mut c = OpcUaConfig::new(endpoint);
    c.publishing_interval = Duration::from_millis(100);
    c.request_timeout = Duration::from_secs(3);
    c.keep_alive_interval = Duration::from_millis(500);
    c.reconnect_min = Duration::from_millis(200);
    c.reconnect_max = Duration::from_secs(1);
    c
}

const TYPES: &[&str] = &[
    "Bool",
    "SByte",
    "Byte",
    "Int16",
    "UInt16",
    "Int32",
    "UInt32",
    "Int64",
    "UInt64",
    "Float",
    "Double",
    "String",
    "ByteString",
    "DateTime",
];

fn plant_config(endpoint: &str) -> OpcUaConfig {
    let mut cfg = fast(endpoint);
    for name in TYPES
        .iter()
        .chain(&["Array", "Counter", "Broken", "Uncertain", "Setpoint"])
    {
        cfg = cfg
            .with_tag(
                &format!("plant/{}", name.to_lowercase()),
                format!("ns=2;s=Plant.{name}"),
            )
            .unwrap();
    }
    cfg = cfg.with_tag("plant/numeric", "ns=2;i=5001").unwrap();
    for t in &mut cfg.tags {
        if t.name.as_str() == "plant/setpoint" {
            t.writable = true;
        }
    }
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_qualities_rate_writes_and_browse_against_asyncua() {
    let Some(py) = python() else { return };
    let port = free_port();
    let _peer = start_peer(&py, port, &[]);
    let endpoint = format!("opc.tcp://127.0.0.1:{port}/");
    let (source, handle) = OpcUaSource::new("asyncua", plant_config(&endpoint)).unwrap();
    let mut run = Running::start(source);
    assert_eq!(run.link(T).await, Link::Up);

    // The first value of every tag.
    let mut first = std::collections::BTreeMap::new();
    while first.len() < TYPES.len() + 6 {
        let s = run.reading(T, "initial", |_| true).await;
        first.entry(s.tag().to_string()).or_insert(s);
    }
    let v = |n: &str| first[&format!("plant/{n}")].value().cloned();
    assert_eq!(v("bool"), Some(Value::Bool(true)));
    assert_eq!(v("sbyte"), Some(Value::Int(-5)));
    assert_eq!(v("byte"), Some(Value::UInt(200)));
    assert_eq!(v("int16"), Some(Value::Int(-1234)));
    assert_eq!(v("uint16"), Some(Value::UInt(54321)));
    assert_eq!(v("int32"), Some(Value::Int(-123_456)));
    assert_eq!(v("uint32"), Some(Value::UInt(4_000_000_000)));
    assert_eq!(v("int64"), Some(Value::Int(-9_000_000_000_000)));
    assert_eq!(v("uint64"), Some(Value::UInt(18_000_000_000_000_000_000)));
    assert_eq!(v("float"), Some(Value::Float(1.5)));
    assert_eq!(v("double"), Some(Value::Double(2.25)));
    assert_eq!(v("string"), Some(Value::String("hello".into())));
    assert_eq!(
        v("bytestring"),
        Some(Value::Bytes(Bytes::from_static(&[1, 2, 3])))
    );
    // 2026-01-02T03:04:05.123456Z as Unix nanoseconds.
    assert_eq!(v("datetime"), Some(Value::Int(1_767_323_045_123_456_000)));
    assert_eq!(v("numeric"), Some(Value::Int(42)));
    for n in TYPES {
        assert!(
            first[&format!("plant/{}", n.to_lowercase())]
                .quality()
                .is_good(),
            "{n}"
        );
    }
    // An array has no core value: that tag reads Bad_NotSupported, the others flow.
    let array = &first["plant/array"];
    assert_eq!(array.value(), None);
    assert_eq!(array.quality(), Quality::BAD_NOT_SUPPORTED);
    // The server's statuses, whole.
    assert_eq!(first["plant/broken"].quality().status_code(), 0x808C_0000);
    assert!(first["plant/broken"].quality().is_bad());
    assert_eq!(
        first["plant/uncertain"].quality().status_code(),
        0x4090_0000
    );
    assert_eq!(first["plant/uncertain"].value(), Some(&Value::Double(7.0)));

    // The counter changes every 100 ms: about ten readings a second, in order, each
    // with its own source time.
    let counter = TagPath::new("plant/counter").unwrap();
    let start = run
        .reading(T, "of the counter", |s| s.tag() == &counter)
        .await;
    let started = tokio::time::Instant::now();
    let mut last = start.clone();
    let mut count = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let s = run
            .reading(T, "of the counter", |s| s.tag() == &counter)
            .await;
        let (Some(Value::UInt(a)), Some(Value::UInt(b))) = (last.value(), s.value()) else {
            panic!("counter values: {last:?} {s:?}");
        };
        assert!(b > a, "in order: {a} then {b}");
        assert!(s.source_time() > last.source_time());
        last = s;
        count += 1;
    }
    assert!(
        (20..=40).contains(&count),
        "{count} counter readings in 3 s at 100 ms"
    );

    // A command to the writable Double.
    let deadline = tokio::time::Instant::now() + T;
    let setpoint = TagPath::new("plant/setpoint").unwrap();
    while iiot_core::command::CommandHandler::target(&handle, &setpoint).is_none() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.write(&setpoint, &Value::Int(55)).await.unwrap();
    run.reading(T, "of the written setpoint", |s| {
        s.tag() == &setpoint && s.value() == Some(&Value::Double(55.0))
    })
    .await;
    run.stop().await;

    // Read, write of other types, browse.
    let client = OpcUaClient::connect(&fast(&endpoint)).await.unwrap();
    client
        .write("ns=2;s=Plant.Switch", &Value::Bool(true))
        .await
        .unwrap();
    assert_eq!(
        client.read("ns=2;s=Plant.Switch").await.unwrap().value,
        Some(Value::Bool(true))
    );
    let e = client
        .write("ns=2;s=Plant.Int32", &Value::Int(1))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("Bad"), "read-only: {e}");
    let vars = client.browse(Some("ns=2;s=Plant"), 3).await.unwrap();
    let by_node = |n: &str| {
        vars.iter()
            .find(|v| v.node == n)
            .unwrap_or_else(|| panic!("{n} in {vars:?}"))
    };
    assert_eq!(by_node("ns=2;s=Plant.SByte").data_type, "SByte");
    assert_eq!(by_node("ns=2;s=Plant.DateTime").data_type, "DateTime");
    assert!(by_node("ns=2;s=Plant.Setpoint").writable);
    assert!(!by_node("ns=2;s=Plant.Int32").writable);
    assert_eq!(by_node("ns=2;i=5001").data_type, "Int32");
    // The array is listed with its rank, and left out of the tag map with the reason.
    assert_eq!(by_node("ns=2;s=Plant.Array").data_type, "Int32[]");
    let map = iiot_protocols::opcua::tag_map_toml(&endpoint, &vars);
    assert!(
        map.contains("# left out: data type Int32[] has no core value"),
        "{map}"
    );
    client.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_restarted_and_frozen_servers_read_bad_then_recover() {
    let Some(py) = python() else { return };
    let port = free_port();
    let mut peer = start_peer(&py, port, &[]);
    let endpoint = format!("opc.tcp://127.0.0.1:{port}/");
    let cfg = fast(&endpoint)
        .with_tag("counter", "ns=2;s=Plant.Counter")
        .unwrap();
    let (source, _) = OpcUaSource::new("asyncua", cfg).unwrap();
    let mut run = Running::start(source);
    assert_eq!(run.link(T).await, Link::Up);
    run.reading(T, "Good", |s| s.quality().is_good()).await;

    // SIGKILL mid-stream.
    peer.0.kill().unwrap();
    peer.0.wait().unwrap();
    assert!(matches!(run.link(T).await, Link::Down { .. }));
    let r = run
        .reading(T, "Bad after the kill", |s| !s.quality().is_good())
        .await;
    assert_eq!(r.quality(), Quality::BAD_COMMUNICATION_ERROR);
    // A new process (its counter restarts at 0): values flow again.
    let peer = start_peer(&py, port, &[]);
    assert_eq!(run.link(T).await, Link::Up);
    let a = run
        .reading(T, "Good after the restart", |s| s.quality().is_good())
        .await;
    let b = run
        .reading(T, "a change after the restart", |s| s.value() != a.value())
        .await;
    assert!(b.quality().is_good());

    // Frozen (SIGSTOP): the keep-alive notices; Bad, not stale Good.
    let pid = peer.0.id().to_string();
    let signal = |sig: &str| {
        assert!(
            std::process::Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    signal("-STOP");
    assert!(matches!(run.link(T).await, Link::Down { .. }));
    let r = run
        .reading(T, "Bad while frozen", |s| !s.quality().is_good())
        .await;
    assert_eq!(r.quality(), Quality::BAD_COMMUNICATION_ERROR);
    signal("-CONT");
    assert_eq!(run.link(T).await, Link::Up);
    run.reading(T, "Good after the thaw", |s| s.quality().is_good())
        .await;
    run.stop().await;
    drop(peer);
}
