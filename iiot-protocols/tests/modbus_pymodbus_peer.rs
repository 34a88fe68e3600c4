//! Interop against a Modbus server nobody here wrote: pymodbus serving the same values
//! in all four 32-bit orders and the 64-bit orders; our poller reads each correctly
//! (issue 6).
//!
//! Needs `IIOT_PYTHON` pointing at a python with `pymodbus>=3.6,<4` (`.ci/run` sets it
//! up). Without it the test says why and passes, unless `IIOT_REQUIRE_SERVICES=1`.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use iiot_core::types::Value;
use iiot_protocols::modbus::{Poller, PollerConfig, RegisterMap, TcpConnector};
use tokio_util::sync::CancellationToken;

fn python() -> Option<String> {
    common::python_with("pymodbus", "pymodbus")
}

fn peer_map() -> RegisterMap {
    let orders32 = ["ABCD", "CDAB", "BADC", "DCBA"];
    let orders64 = ["ABCDEFGH", "GHEFCDAB", "BADCFEHG", "HGFEDCBA"];
    let mut toml = String::from("[poll_groups.default]\ninterval = \"100ms\"\n");
    let mut tag = |name: String, addr: u16, ty: &str, order: &str, extra: &str| {
        write!(
            toml,
            "[[tags]]\nname = \"{name}\"\narea = \"holding_register\"\naddress = {addr}\ntype = \"{ty}\"\norder = \"{order}\"\n{extra}"
        )
        .unwrap();
    };
    for (i, o) in orders32.iter().enumerate() {
        let i16 = i as u16;
        tag(format!("f32/{o}"), 2 * i16, "f32", o, "");
        tag(format!("i32/{o}"), 10 + 2 * i16, "i32", o, "");
        tag(format!("u32/{o}"), 20 + 2 * i16, "u32", o, "");
    }
    for (i, o) in orders64.iter().enumerate() {
        let i16 = i as u16;
        tag(format!("f64/{o}"), 30 + 4 * i16, "f64", o, "");
        tag(format!("i64/{o}"), 50 + 4 * i16, "i64", o, "");
        tag(format!("u64/{o}"), 70 + 4 * i16, "u64", o, "");
    }
    tag("str/AB".into(), 90, "string", "ABCD", "length = 8\n");
    tag("str/BA".into(), 94, "string", "BADC", "length = 8\n");
    toml.push_str(
        r#"
[[tags]]
name = "ir/u16"
address = "30001"
type = "u16"
[[tags]]
name = "ir/i16"
address = "30002"
type = "i16"
[[tags]]
name = "coil/0"
address = "00001"
type = "bool"
[[tags]]
name = "coil/1"
address = "00002"
type = "bool"
[[tags]]
name = "coil/2"
address = "00003"
type = "bool"
[[tags]]
name = "di/0"
address = "10001"
type = "bool"
"#,
    );
    RegisterMap::from_toml_str(&toml).unwrap()
}

fn expected(tag: &str) -> Value {
    let kind = tag.split('/').next().unwrap();
    match kind {
        "f32" => Value::Float(123.456),
        "i32" => Value::Int(-123_456_789),
        "u32" => Value::UInt(3_000_000_000),
        "f64" => Value::Double(-98_765.432_1),
        "i64" => Value::Int(-1_234_567_890_123),
        "u64" => Value::UInt(0x0123_4567_89AB_CDEF),
        "str" => Value::String("pymodbus".into()),
        "ir" if tag.ends_with("u16") => Value::UInt(4242),
        "ir" => Value::Int(-42),
        "coil" => Value::Bool(!tag.ends_with('1')),
        "di" => Value::Bool(true),
        other => panic!("{other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_every_order_from_a_pymodbus_server() {
    let Some(py) = python() else { return };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/modbus_server.py");
    let port = common::free_port();
    let child = Command::new(py)
        .arg(script)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pymodbus peer");
    let mut peer = common::PeerGuard(child);

    let map = peer_map();
    let n = map.tags().len();
    let mut cfg = PollerConfig::default();
    cfg.set_timeout(Duration::from_millis(500)).set_retries(1);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    // The poller reconnects until the peer listens: no sleep needed.
    let (_h, poller, mut rx) = Poller::new(cfg, map, TcpConnector::new(addr));
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    tokio::spawn(poller.run(cancel));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut got = BTreeMap::new();
    while got.len() < n {
        if let Some(status) = peer.0.try_wait().unwrap() {
            panic!("pymodbus peer exited early: {status}");
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(r)) if r.sample.quality().is_good() => {
                got.insert(
                    r.sample.tag().to_string(),
                    r.sample.value().cloned().unwrap(),
                );
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("poller stopped"),
            Err(elapsed) => panic!(
                "only {} of {n} tags read from pymodbus ({elapsed}): {got:?}",
                got.len()
            ),
        }
    }
    for (tag, value) in &got {
        assert_eq!(value, &expected(tag), "{tag}");
    }
}
