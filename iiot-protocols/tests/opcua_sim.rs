//! The OPC-UA client against async-opcua's own server in this process (issue 18): a
//! subscription as a source, read, write, browse, commands, secure channels with
//! certificates made in a temp dir, an untrusted server refused, and bad input
//! (invalid node ids, unknown nodes, a wrong endpoint, a server that stops answering)
//! as typed errors without a hang.

mod common;

use std::time::Duration;

use common::opcua::Running;
use iiot_core::command::{Action, ActionKind, CommandHandler, HandlerErrorKind, ValueKind};
use iiot_core::quality::Quality;
use iiot_core::source::{Link, ReportPolicy, Source};
use iiot_core::types::{AckReason, MessageId, TagPath, Value};
use iiot_protocols::opcua::sim::{SimConfig, SimServer};
use iiot_protocols::opcua::{
    Identity, OpcUaClient, OpcUaConfig, OpcUaError, OpcUaSource, SecurityMode, SecurityPolicy,
    ServerDeadband, tag_map_toml,
};

const T: Duration = Duration::from_secs(20);

fn tag(s: &str) -> TagPath {
    TagPath::new(s).unwrap()
}

fn fast(endpoint: &str) -> OpcUaConfig {
    let mut c = OpcUaConfig::new(endpoint);
    c.publishing_interval = Duration::from_millis(50);
    c.request_timeout = Duration::from_secs(3);
    c.keep_alive_interval = Duration::from_millis(500);
    c.reconnect_min = Duration::from_millis(100);
    c.reconnect_max = Duration::from_millis(500);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_values_statuses_and_commands() {
    let sim = SimServer::start(SimConfig::default()).await.unwrap();
    let temp = sim.add("Line1.Temp", &Value::Double(21.5), false).unwrap();
    let on = sim.add("Line1.On", &Value::Bool(true), false).unwrap();
    let name = sim
        .add("Line1.Name", &Value::String("mixer".into()), false)
        .unwrap();
    let set = sim
        .add("Line1.Setpoint", &Value::Double(10.0), true)
        .unwrap();
    let mut cfg = fast(sim.endpoint())
        .with_tag("line1/temp", &temp)
        .unwrap()
        .with_tag("line1/on", &on)
        .unwrap()
        .with_tag("line1/name", &name)
        .unwrap()
        .with_tag("line1/setpoint", &set)
        .unwrap()
        .with_tag("line1/missing", format!("ns={};s=Nope", sim.namespace()))
        .unwrap();
    cfg.tags[3].writable = true;
    cfg.tags[0].deadband = Some(iiot_core::source::Deadband::Absolute(0.5));
    let (source, handle) = OpcUaSource::new("opcua-line1", cfg).unwrap();

    // Report policy travels to the runtime.
    let info = source.info();
    assert_eq!(info.name, "opcua-line1");
    assert_eq!(
        info.tags[0].1.deadband,
        Some(iiot_core::source::Deadband::Absolute(0.5))
    );
    assert_eq!(info.tags[1].1, ReportPolicy::ALL);

    let mut run = Running::start(source);
    assert_eq!(run.link(T).await, Link::Up);
    let mut first = std::collections::BTreeMap::new();
    while first.len() < 5 {
        let s = run.reading(T, "initial", |_| true).await;
        first.entry(s.tag().to_string()).or_insert(s);
    }
    assert_eq!(first["line1/temp"].value(), Some(&Value::Double(21.5)));
    assert!(first["line1/temp"].quality().is_good());
    assert_eq!(first["line1/on"].value(), Some(&Value::Bool(true)));
    assert_eq!(
        first["line1/name"].value(),
        Some(&Value::String("mixer".into()))
    );
    // An unknown node is that tag's Bad status, not a failed subscription.
    assert_eq!(first["line1/missing"].value(), None);
    assert_eq!(
        first["line1/missing"].quality(),
        Quality::BAD_NODE_ID_UNKNOWN
    );

    // A change and a status reach the source with the server's time.
    sim.set("Line1.Temp", Some(&Value::Double(30.0)), Quality::GOOD)
        .unwrap();
    let r = run
        .reading(T, "of temp 30", |s| s.value() == Some(&Value::Double(30.0)))
        .await;
    assert!(r.source_time().unix_nanos() > 0);
    sim.set(
        "Line1.Temp",
        Some(&Value::Double(31.0)),
        Quality::from_status_code(0x808C_0000),
    )
    .unwrap();
    let r = run
        .reading(T, "of temp Bad", |s| {
            s.tag() == &tag("line1/temp") && !s.quality().is_good()
        })
        .await;
    assert_eq!(
        r.quality().status_code(),
        0x808C_0000,
        "the full status code"
    );

    // Commands: the setpoint is a Number target once its type was read.
    let deadline = tokio::time::Instant::now() + T;
    while handle.target(&tag("line1/setpoint")).is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the data type is learned"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let target = handle.target(&tag("line1/setpoint")).unwrap();
    assert_eq!(target.writes, Some(ValueKind::Number));
    assert!(handle.target(&tag("line1/temp")).is_none(), "not writable");
    let act = |v: Value| Action {
        command: MessageId::generate(),
        target: tag("line1/setpoint"),
        kind: ActionKind::Write(v),
    };
    assert_eq!(
        handle.execute(act(Value::Double(42.5))).await.unwrap(),
        Some(Value::Double(42.5))
    );
    assert_eq!(sim.get("Line1.Setpoint"), Some(Value::Double(42.5)));
    let r = run
        .reading(T, "of the written setpoint", |s| {
            s.tag() == &tag("line1/setpoint") && s.value() == Some(&Value::Double(42.5))
        })
        .await;
    assert!(r.quality().is_good());
    let e = handle
        .execute(act(Value::String("x".into())))
        .await
        .unwrap_err();
    assert_eq!(
        e.kind,
        HandlerErrorKind::Refused(AckReason::WrongType),
        "{e}"
    );
    let e = handle
        .execute(Action {
            kind: ActionKind::Invoke("reset".into()),
            ..act(Value::Bool(true))
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind, HandlerErrorKind::Refused(AckReason::Unsupported));

    run.stop().await;
    // Stopped: the session is gone, a command is refused without being sent.
    let e = handle.execute(act(Value::Double(1.0))).await.unwrap_err();
    assert_eq!(
        e.kind,
        HandlerErrorKind::Refused(AckReason::HandlerFailed),
        "{e}"
    );
    assert_eq!(sim.get("Line1.Setpoint"), Some(Value::Double(42.5)));
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stopped_and_restarted_reads_bad_then_recovers() {
    let sim = SimServer::start(SimConfig::default()).await.unwrap();
    let port = sim.port();
    let node = sim.add("Counter", &Value::Int(1), false).unwrap();
    let cfg = fast(sim.endpoint()).with_tag("counter", &node).unwrap();
    let (source, _handle) = OpcUaSource::new("opcua", cfg).unwrap();
    let mut run = Running::start(source);
    assert_eq!(run.link(T).await, Link::Up);
    run.reading(T, "first", |s| s.value() == Some(&Value::Int(1)))
        .await;

    sim.stop().await;
    assert!(matches!(run.link(T).await, Link::Down { .. }));
    let r = run
        .reading(T, "Bad after the stop", |s| !s.quality().is_good())
        .await;
    assert_eq!(r.value(), None);
    assert_eq!(r.quality(), Quality::BAD_COMMUNICATION_ERROR);

    // A new server process on the same port: new session, subscription recreated.
    let sim = SimServer::start(SimConfig {
        port,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    sim.add("Counter", &Value::Int(7), false).unwrap();
    assert_eq!(run.link(T).await, Link::Up);
    let r = run
        .reading(T, "Good after the restart", |s| s.quality().is_good())
        .await;
    assert_eq!(r.value(), Some(&Value::Int(7)));
    sim.set("Counter", Some(&Value::Int(8)), Quality::GOOD)
        .unwrap();
    run.reading(T, "flowing again", |s| s.value() == Some(&Value::Int(8)))
        .await;
    run.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reads_writes_and_browses_to_a_tag_map() {
    let sim = SimServer::start(SimConfig::default()).await.unwrap();
    let a = sim.add("Plant.A", &Value::Double(1.5), true).unwrap();
    let b = sim.add("Plant.B", &Value::UInt(7), false).unwrap();
    let client = OpcUaClient::connect(&fast(sim.endpoint())).await.unwrap();
    assert_eq!(
        client.read(&a).await.unwrap().value,
        Some(Value::Double(1.5))
    );
    assert_eq!(client.read(&b).await.unwrap().value, Some(Value::UInt(7)));
    client.write(&a, &Value::Int(3)).await.unwrap();
    assert_eq!(sim.get("Plant.A"), Some(Value::Double(3.0)));
    // Not writable: the server's refusal, typed; nothing changed.
    let e = client.write(&b, &Value::UInt(8)).await.unwrap_err();
    assert!(
        matches!(&e, OpcUaError::Node { status, .. }
            if status.contains("NotWritable") || status.contains("UserAccessDenied")),
        "{e}"
    );
    assert_eq!(sim.get("Plant.B"), Some(Value::UInt(7)));
    // A value that does not fit the type: refused here, nothing sent.
    let e = client.write(&b, &Value::Int(-1)).await.unwrap_err();
    assert!(matches!(e, OpcUaError::Convert(_)), "{e}");

    let vars = client.browse(None, 4).await.unwrap();
    let found: Vec<_> = vars
        .iter()
        .map(|v| (v.node.as_str(), v.data_type.as_str(), v.writable))
        .collect();
    assert!(found.contains(&(a.as_str(), "Double", true)), "{found:?}");
    assert!(found.contains(&(b.as_str(), "UInt64", false)), "{found:?}");
    assert!(
        vars.iter().all(|v| !v.node.starts_with("i=")),
        "the server's own namespace-0 objects are not listed: {found:?}"
    );
    let toml = tag_map_toml(sim.endpoint(), &vars);
    let cfg = OpcUaConfig::from_toml_str(&toml).unwrap();
    assert_eq!(cfg.tags.len(), 2, "{toml}");
    assert!(cfg.tags.iter().any(|t| t.node == a && t.writable));
    client.disconnect().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_typed_and_never_hangs() {
    let sim = SimServer::start(SimConfig::default()).await.unwrap();
    let client = OpcUaClient::connect(&fast(sim.endpoint())).await.unwrap();
    // An invalid node id never reaches the server.
    for bad in ["ns=2;x=1", "", "ns=abc;i=1", "ns=2;i=notanumber"] {
        let e = client.read(bad).await.unwrap_err();
        assert!(matches!(e, OpcUaError::Convert(_)), "{bad}: {e}");
    }
    // An unknown node is the server's status.
    let e = client
        .read(&format!("ns={};s=Nope", sim.namespace()))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, OpcUaError::Node { quality, .. } if *quality == Quality::BAD_NODE_ID_UNKNOWN),
        "{e}"
    );
    client.disconnect().await;

    // Nothing listens: a typed error, quickly.
    let dead = format!("opc.tcp://127.0.0.1:{}/", common::free_port());
    let started = std::time::Instant::now();
    let e = OpcUaClient::connect(&fast(&dead)).await.unwrap_err();
    assert!(
        matches!(e, OpcUaError::Connect { .. } | OpcUaError::Timeout { .. }),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // An endpoint with a policy the server does not offer.
    let mut cfg = fast(sim.endpoint());
    cfg.security.policy = SecurityPolicy::Basic256Sha256;
    cfg.security.mode = SecurityMode::SignAndEncrypt;
    cfg.security.certificate = Some("own/cert.der".into());
    cfg.security.private_key = Some("private/private.pem".into());
    let e = OpcUaClient::connect(&cfg).await.unwrap_err();
    assert!(matches!(e, OpcUaError::NoMatchingEndpoint { .. }), "{e}");

    // A server that accepts TCP and never answers: a timeout, not a hang.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("opc.tcp://{}/", silent.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let started = std::time::Instant::now();
    let e = OpcUaClient::connect(&fast(&url)).await.unwrap_err();
    assert!(
        matches!(e, OpcUaError::Timeout { .. } | OpcUaError::Connect { .. }),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // A source on that silent server reports its tags Bad and stops when asked.
    let cfg = fast(&url).with_tag("t", "ns=2;i=1").unwrap();
    let (source, _) = OpcUaSource::new("silent", cfg).unwrap();
    let mut run = Running::start(source);
    let r = run.reading(T, "Bad", |_| true).await;
    assert_eq!(r.quality(), Quality::BAD_COMMUNICATION_ERROR);
    run.stop().await;
    hold.abort();
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_and_encrypt_with_a_trusted_server_and_an_untrusted_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server_pki = dir.path().join("server-pki");
    let sim = SimServer::start(SimConfig {
        secure: true,
        pki_dir: Some(server_pki.clone()),
        users: vec![("operator".into(), "s3cret".into())],
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let node = sim.add("Secret", &Value::Double(6.5), false).unwrap();
    let client_pki = dir.path().join("client-pki");
    let cert = client_pki.join("own/cert.der");
    let key = client_pki.join("private/private.pem");
    iiot_protocols::opcua::create_certificate(&cert, &key).unwrap();
    let secure = |policy| {
        let mut c = fast(sim.endpoint());
        c.security.policy = policy;
        c.security.mode = SecurityMode::SignAndEncrypt;
        c.security.certificate = Some(cert.clone());
        c.security.private_key = Some(key.clone());
        c.security.pki_dir = client_pki.clone();
        // RSA in a debug build is slow: room for the handshake.
        c.request_timeout = Duration::from_secs(20);
        c
    };

    // Not trusted yet: refused, and the certificate lands in rejected/.
    let e = OpcUaClient::connect(&secure(SecurityPolicy::Basic256Sha256))
        .await
        .unwrap_err();
    assert!(matches!(e, OpcUaError::UntrustedServer { .. }), "{e}");
    assert!(e.to_string().contains("trusted"), "{e}");
    let rejected: Vec<_> = std::fs::read_dir(client_pki.join("rejected"))
        .unwrap()
        .collect();
    assert_eq!(
        rejected.len(),
        1,
        "the server's certificate is kept for review"
    );

    // The operator moves it to trusted/: both encrypted policies work.
    let from = rejected[0].as_ref().unwrap().path();
    std::fs::rename(
        &from,
        client_pki.join("trusted").join(from.file_name().unwrap()),
    )
    .unwrap();
    for policy in [
        SecurityPolicy::Basic256Sha256,
        SecurityPolicy::Aes128Sha256RsaOaep,
    ] {
        let client = OpcUaClient::connect(&secure(policy)).await.unwrap();
        assert_eq!(
            client.read(&node).await.unwrap().value,
            Some(Value::Double(6.5))
        );
        client.disconnect().await;
    }

    // A user name and password over the encrypted channel; a wrong password is refused.
    let user = |password: &str| {
        let mut c = secure(SecurityPolicy::Basic256Sha256);
        c.identity = Identity::UserName {
            user: "operator".into(),
            password: password.into(),
        };
        c
    };
    let client = OpcUaClient::connect(&user("s3cret")).await.unwrap();
    assert_eq!(
        client.read(&node).await.unwrap().value,
        Some(Value::Double(6.5))
    );
    client.disconnect().await;
    let e = OpcUaClient::connect(&user("wrong")).await.unwrap_err();
    assert!(
        matches!(&e, OpcUaError::Connect { status, .. }
            if status.contains("Identity") || status.contains("UserAccessDenied")),
        "{e}"
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_deadband_filters_on_the_server_and_the_runtime_passes_it_through() {
    let sim = SimServer::start(SimConfig::default()).await.unwrap();
    let node = sim.add("Flow", &Value::Double(10.0), false).unwrap();
    let raw_node = sim.add("FlowRaw", &Value::Double(10.0), false).unwrap();
    let mut cfg = fast(sim.endpoint())
        .with_tag("flow", &node)
        .unwrap()
        .with_tag("raw", &raw_node)
        .unwrap();
    cfg.tags[0].server_deadband = Some(ServerDeadband::Absolute(1.0));
    let (source, _) = OpcUaSource::new("opcua", cfg).unwrap();
    assert_eq!(
        source.info().tags[0].1,
        ReportPolicy::ALL,
        "never both deadbands"
    );
    let mut run = Running::start(source);
    let (flow, raw) = (tag("flow"), tag("raw"));
    let mut initial = 0;
    while initial < 2 {
        let s = run.reading(T, "initial", |_| true).await;
        assert_eq!(s.value(), Some(&Value::Double(10.0)));
        initial += 1;
    }
    // The same values on both; the unfiltered twin shows when the server has seen each
    // one, and meanwhile the filtered tag reports only the move beyond 1.0.
    let mut flow_seen = Vec::new();
    for v in [10.3, 10.6, 10.9, 12.0] {
        sim.set("Flow", Some(&Value::Double(v)), Quality::GOOD)
            .unwrap();
        sim.set("FlowRaw", Some(&Value::Double(v)), Quality::GOOD)
            .unwrap();
        loop {
            let s = run.reading(T, "of flow or raw", |_| true).await;
            if s.tag() == &flow {
                flow_seen.push(s.value().cloned());
            } else if s.tag() == &raw && s.value() == Some(&Value::Double(v)) {
                break;
            }
        }
    }
    if flow_seen.is_empty() {
        let s = run.reading(T, "of flow", |s| s.tag() == &flow).await;
        flow_seen.push(s.value().cloned());
    }
    assert_eq!(
        flow_seen,
        [Some(Value::Double(12.0))],
        "10.3..10.9 were filtered"
    );
    run.stop().await;
    sim.stop().await;
}

/// A recorder keeping every counter and gauge by `name{label=value,...}`.
#[derive(Default)]
struct Recorded(std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<Cell>>>);

#[derive(Default)]
struct Cell(std::sync::atomic::AtomicU64);

impl metrics::CounterFn for Cell {
    fn increment(&self, v: u64) {
        self.0.fetch_add(v, std::sync::atomic::Ordering::Relaxed);
    }
    fn absolute(&self, v: u64) {
        self.0.store(v, std::sync::atomic::Ordering::Relaxed);
    }
}

impl metrics::GaugeFn for Cell {
    fn increment(&self, _: f64) {}
    fn decrement(&self, _: f64) {}
    fn set(&self, v: f64) {
        self.0
            .store(v.to_bits(), std::sync::atomic::Ordering::Relaxed);
    }
}

impl Recorded {
    fn cell(&self, key: &metrics::Key) -> std::sync::Arc<Cell> {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        self.0.lock().unwrap().entry(name).or_default().clone()
    }
    fn get(&self, name: &str) -> Option<u64> {
        self.0
            .lock()
            .unwrap()
            .get(name)
            .map(|c| c.0.load(std::sync::atomic::Ordering::Relaxed))
    }
}

struct Shared(std::sync::Arc<Recorded>);

impl metrics::Recorder for Shared {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::from_arc(self.0.cell(key))
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::from_arc(self.0.cell(key))
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_connection_notifications_and_last_update() {
    let rec = std::sync::Arc::new(Recorded::default());
    metrics::set_global_recorder(Shared(rec.clone())).expect("the only recorder of this binary");
    let sim = SimServer::start(SimConfig::default()).await.unwrap();
    let node = sim.add("Level", &Value::Double(1.0), false).unwrap();
    let cfg = fast(sim.endpoint()).with_tag("tank/level", &node).unwrap();
    let (source, _) = OpcUaSource::new("metered", cfg).unwrap();
    let mut run = Running::start(source);
    assert_eq!(run.link(T).await, Link::Up);
    run.reading(T, "first", |s| s.quality().is_good()).await;
    let gauge = |name: &str| rec.get(name).map(f64::from_bits);
    assert_eq!(gauge("iiot_opcua_connected{source=metered}"), Some(1.0));
    assert!(
        rec.get("iiot_opcua_notifications_total{source=metered}")
            .unwrap()
            >= 1
    );
    let last = gauge("iiot_opcua_tag_last_update_seconds{source=metered,tag=tank/level}").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - last).abs() < 60.0, "last update {last} vs now {now}");
    sim.stop().await;
    assert!(matches!(run.link(T).await, Link::Down { .. }));
    assert_eq!(gauge("iiot_opcua_connected{source=metered}"), Some(0.0));
    run.stop().await;
}
