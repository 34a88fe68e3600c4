//! End to end (issue 16): commands from a platform client through the machine's
//! Mosquitto to `iiot gateway`, which writes them to a Modbus server nobody here
//! wrote (pymodbus, counting the write requests it serves). Each command is
//! published several times, in shuffled issue order, some already expired, some with
//! a value the register cannot hold. The server's own count of write requests must
//! equal the commands that completed, exactly; no id ends in two states; no expired
//! command completes.
//!
//! Needs `IIOT_PYTHON` with `pymodbus>=3.8,<4` (`.ci/run` sets it up) and Mosquitto.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{ChildGuard, mqtt_available, mqtt_url, unique, write};
use iiot_core::codec::{Limits, protobuf};
use iiot_core::publish::QoS;
use iiot_core::topic::UnsPath;
use iiot_core::types::{
    CommandAck, CommandState, DeviceId, MessageId, Operation, TagPath, Timestamp, Value,
};
use iiot_ingest::commands::{CommandIssuer, CommandRequest};
use iiot_protocols::mqtt::{MqttConfig, Session};
use rand::Rng;
use rand::seq::SliceRandom;
use tokio_util::sync::CancellationToken;

/// Kills the peer by pid when dropped, also when the test fails.
struct PeerGuard(Child);

impl Drop for PeerGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python() -> Option<String> {
    let required = std::env::var("IIOT_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
    let skip = |why: String| {
        assert!(!required, "IIOT_REQUIRE_SERVICES=1 but {why}");
        eprintln!("skipping: {why}");
        None
    };
    let Ok(py) = std::env::var("IIOT_PYTHON") else {
        return skip("IIOT_PYTHON is not set (see .ci/run)".into());
    };
    match Command::new(&py)
        .args(["-c", "import pymodbus"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Some(py),
        Ok(s) => skip(format!("{py} cannot import pymodbus ({s})")),
        Err(e) => skip(format!("cannot run {py}: {e}")),
    }
}

/// Starts the counting peer; returns it, its port and its write counter.
fn peer(py: &str) -> (PeerGuard, u16, Arc<AtomicU64>) {
    let port = common::free_port();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/peers/counting_modbus_server.py"
    );
    let mut child = Command::new(py)
        .arg(script)
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pymodbus peer");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let guard = PeerGuard(child);
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.starts_with("serving on"), "peer said {first:?}");
    let writes = Arc::new(AtomicU64::new(0));
    let counter = writes.clone();
    std::thread::spawn(move || {
        for line in out.lines() {
            let Ok(line) = line else { break };
            if line.starts_with("WRITE ") {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (guard, port, writes)
}

const MAP: &str = r#"
[poll_groups.default]
interval = "200ms"

[[tags]]
name = "sp/0"
address = "40001"
type = "u16"
[[tags]]
name = "sp/1"
address = "40002"
type = "u16"
[[tags]]
name = "sp/2"
address = "40003"
type = "u16"
[[tags]]
name = "sp/3"
address = "40004"
type = "u16"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_accepted_command_is_exactly_one_write_on_a_foreign_server() {
    if !mqtt_available() {
        return;
    }
    let Some(py) = python() else { return };
    let (_peer, port, writes) = peer(&py);
    let dir = tempfile::tempdir().unwrap();
    let map = write(dir.path(), "map.toml", MAP);
    let enterprise = unique("e2e");
    let device = unique("plc");
    let text = common::gateway_toml(&device, &enterprise, &map, &dir.path().join("gw"), port)
        .replace(
            "rate_limit = { commands = 20, per = \"1s\" }",
            "rate_limit = { commands = 1000, per = \"1s\" }",
        );
    let cfg = write(dir.path(), "gateway.toml", &text);
    let mut gw = ChildGuard::spawn(&["gateway", "--config", cfg.to_str().unwrap()]);
    assert!(gw.read_line().contains("running"));

    // The operator: a platform client collecting the device's acks.
    let path = UnsPath::new(
        &enterprise,
        "plant1",
        "packaging",
        "line3",
        "plc",
        DeviceId::new(device.clone()).unwrap(),
    )
    .unwrap();
    let mut mc = MqttConfig::platform(mqtt_url(), unique("operator"));
    mc.set_clean_session(true);
    let (handle, session, mut inbound) = Session::new(&mc).unwrap();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    tokio::spawn(session.run(stop.clone()));
    handle
        .subscribe(format!("{path}/commands/+/ack"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let issuer = CommandIssuer::new(handle.clone(), "e2e");
    let mut acks: HashMap<MessageId, Vec<CommandAck>> = HashMap::new();
    let take = |acks: &mut HashMap<MessageId, Vec<CommandAck>>,
                m: iiot_protocols::mqtt::InboundMessage| {
        let a = protobuf::decode_command_ack(&m.payload, &Limits::default()).unwrap();
        acks.entry(a.command_id).or_default().push(a);
    };
    let request = |target: &str, v: Value, ttl: Duration| {
        CommandRequest::new(
            path.clone(),
            TagPath::new(target).unwrap(),
            Operation::Set(v),
            ttl,
        )
    };

    // Until the gateway's subscription is in place a command finds no session: send
    // probes until one is answered (each probe that completes is one write too).
    let mut probes = Vec::new();
    'ready: for _ in 0..20 {
        let c = issuer
            .issue(&request("sp/0", Value::UInt(1), Duration::from_secs(60)))
            .await
            .unwrap();
        probes.push(c.id);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while let Ok(Some(m)) = tokio::time::timeout_at(deadline, inbound.recv()).await {
            take(&mut acks, m);
            if acks.values().flatten().any(|a| a.state.is_terminal()) {
                break 'ready;
            }
        }
    }
    assert!(
        acks.values().flatten().any(|a| a.state.is_terminal()),
        "the gateway never answered"
    );

    // The commands: 24 over four targets, issue times spread over the last 20 s,
    // every fifth already expired, every seventh a value a u16 cannot hold; each
    // published 1 to 3 times, all in shuffled order.
    let mut rng = rand::rng();
    let now = Timestamp::now();
    let mut planned = Vec::new();
    for i in 0..24u64 {
        let target = format!("sp/{}", i % 4);
        let value = if i % 7 == 3 {
            Value::Int(-5)
        } else {
            Value::UInt(100 + i)
        };
        let ttl = if i % 5 == 2 {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(120)
        };
        let issued_at = now.saturating_sub(Duration::from_millis(rng.random_range(2_000..20_000)));
        let c = issuer
            .build(&request(&target, value, ttl), issued_at)
            .unwrap();
        let times = rng.random_range(1..=3);
        for _ in 0..times {
            planned.push(c.clone());
        }
    }
    planned.shuffle(&mut rng);
    let mut ids: BTreeMap<MessageId, bool> = BTreeMap::new(); // id -> expired when sent
    for c in &planned {
        ids.insert(c.id, c.is_expired(Timestamp::now()));
        issuer
            .publish(&path, c.clone(), Duration::from_secs(120))
            .await
            .unwrap();
    }
    for id in &probes {
        ids.insert(*id, false);
    }
    // Every id sent gets a final ack.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !ids
        .keys()
        .filter(|id| !probes.contains(id) || acks.contains_key(id))
        .all(|id| {
            acks.get(id)
                .is_some_and(|v| v.iter().any(|a| a.state.is_terminal()))
        })
    {
        match tokio::time::timeout_at(deadline, inbound.recv()).await {
            Ok(Some(m)) => take(&mut acks, m),
            _ => panic!(
                "not every command was answered: {} of {}",
                acks.len(),
                ids.len()
            ),
        }
    }
    let mut completed = 0u64;
    let mut states: BTreeMap<&str, u64> = BTreeMap::new();
    for (id, expired) in &ids {
        let Some(mine) = acks.get(id) else { continue }; // a probe lost before the subscription
        let finals: Vec<CommandState> = mine
            .iter()
            .filter(|a| a.state.is_terminal())
            .map(|a| a.state)
            .collect();
        assert!(
            finals.windows(2).all(|w| w[0] == w[1]),
            "{id} ended in two states: {mine:?}"
        );
        let state = finals[0];
        if *expired {
            assert_ne!(state, CommandState::Completed, "{id} expired but ran");
        }
        if state == CommandState::Completed {
            completed += 1;
        }
        *states
            .entry(match state {
                CommandState::Completed => "completed",
                CommandState::Expired => "expired",
                CommandState::Rejected => "rejected",
                _ => "other",
            })
            .or_default() += 1;
    }
    // The server's writes precede their acks; wait for its output to be read.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while writes.load(Ordering::SeqCst) < completed && tokio::time::Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        writes.load(Ordering::SeqCst),
        completed,
        "the server's write requests vs completed commands ({states:?})"
    );
    assert!(
        states.get("expired").copied().unwrap_or(0) >= 4,
        "{states:?}"
    );
    assert!(
        states.get("rejected").copied().unwrap_or(0) >= 3,
        "{states:?}"
    );
    // What is sure to complete: the probe on sp/0 (issued last, so every shuffled
    // sp/0 command is older and superseded by it) and, on each of sp/1..3, the newest
    // command that is neither expired nor unencodable. More may, in shuffled order.
    assert!(completed >= 4, "{states:?}");
    eprintln!(
        "outcomes: {states:?}, server writes {}",
        writes.load(Ordering::SeqCst)
    );
    drop(gw);
}
