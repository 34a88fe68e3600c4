//! Config files: the samples load; an unknown key or a bad value stops the command
//! at start with exit code 2 and a message naming the file and the key (issue 8).

mod common;

use std::path::Path;

use common::{run, sample_config, write};
use iiot_reference::gateway::GatewaySetup;
use iiot_reference::ingest::IngestSetup;
use iiot_reference::sim::PlcSetup;

#[test]
fn sample_configs_load() {
    PlcSetup::load(&sample_config("plc.toml")).unwrap();
    IngestSetup::load(&sample_config("ingest.toml")).unwrap();
    let g = GatewaySetup::load(&sample_config("gateway.toml")).unwrap();
    assert_eq!(g.path.device_id().as_str(), "plc-01");
    assert_eq!(g.map.tags().len(), 6);
    assert_eq!(g.produced_log, None, "the produced log is off by default");
}

/// The commented `produced_log` key of the sample, switched on, is read as written.
/// A file in the old forms (numbers whose unit was in the key name or only in a
/// comment, `broker_url`) loads to the same settings as the sample, and each old
/// key is named with its file, line and replacement in a warning.
#[test]
fn old_numeric_forms_load_with_a_deprecation_warning() {
    let dir = tempfile::tempdir().unwrap();
    let map = std::fs::read_to_string(sample_config("plant-map.toml")).unwrap();
    let old_map = map
        .replace("interval = \"250ms\"", "interval_ms = 250")
        .replace(
            "max_report_interval = \"5s\"",
            "max_report_interval_ms = 5000",
        );
    assert_ne!(old_map, map);
    write(dir.path(), "plant-map.toml", &old_map);
    let text = std::fs::read_to_string(sample_config("gateway.toml")).unwrap();
    let old = text
        .replace("url = \"mqtt://", "broker_url = \"mqtt://")
        .replace("keepalive = \"30s\"", "keepalive_s = 30")
        .replace("reconnect_max = \"5s\"", "reconnect_max_ms = 5000")
        .replace("timeout = \"1s\"", "timeout = 1000")
        .replace("max_delay = \"1s\"", "max_delay_ms = 1000")
        .replace("max_age = \"7days\"", "max_age = 604800000")
        .replace("backoff_initial = \"500ms\"", "backoff_initial = 500");
    let file = write(dir.path(), "gateway.toml", &old);
    let new = GatewaySetup::load(&sample_config("gateway.toml")).unwrap();
    let got = GatewaySetup::load(&file).unwrap();
    assert_eq!(format!("{:?}", got.mqtt), format!("{:?}", new.mqtt));
    assert_eq!(got.batch.max_delay, new.batch.max_delay);
    assert_eq!(got.modbus.poller, new.modbus.poller);
    assert_eq!(got.outbox, new.outbox);
    assert_eq!(got.forwarder, new.forwarder);
    assert_eq!(format!("{:?}", got.map), format!("{:?}", new.map));

    // The warnings, as a user sees them: `iiot sim` on an old plc.toml.
    let plc = std::fs::read_to_string(sample_config("plc.toml"))
        .unwrap()
        .replace("tick = \"100ms\"", "tick_ms = 100")
        .replace("listen = \"127.0.0.1:5020\"", "listen = \"127.0.0.1:0\"")
        .replace(
            "plant-map.toml",
            &sample_config("plant-map.toml").display().to_string(),
        );
    let plc_file = write(dir.path(), "plc.toml", &plc);
    let line = plc
        .lines()
        .position(|l| l.starts_with("tick_ms"))
        .expect("tick_ms line")
        + 1;
    let mut child =
        common::ChildGuard::spawn_with_stderr(&["sim", "--config", plc_file.to_str().unwrap()]);
    assert!(child.read_line().starts_with("listening on "));
    let stderr = child.kill_and_stderr();
    let expected = format!(
        "{}: key \"plant.tick_ms\" (line {line}): `tick_ms = 100` is deprecated, write `tick = \"100ms\"`",
        plc_file.display()
    );
    assert!(stderr.contains(&expected), "{expected}\nnot in:\n{stderr}");
}

/// A register map may be JSON (docs/modbus-map.json, as docs/modbus-driver.md says):
/// it loads to the same map as its TOML twin, and a bad key in it is named with
/// file, key and line like in TOML.
#[test]
fn json_register_maps_load() {
    let docs = common::crate_dir().join("../../docs");
    let cfg = docs.join("gateway.toml"); // only its directory matters
    let json = iiot_reference::config::load_register_map(
        &cfg,
        "register_map",
        Path::new("modbus-map.json"),
    )
    .unwrap();
    let toml = iiot_reference::config::load_register_map(
        &cfg,
        "register_map",
        Path::new("modbus-map.toml"),
    )
    .unwrap();
    assert_eq!(format!("{json:?}"), format!("{toml:?}"));

    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(docs.join("modbus-map.json"))
        .unwrap()
        .replacen("\"interval\"", "\"intervall\"", 1);
    write(dir.path(), "map.json", &text);
    let e = iiot_reference::config::load_register_map(
        &dir.path().join("gateway.toml"),
        "register_map",
        Path::new("map.json"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("map.json") && e.contains("intervall") && e.contains("(line "),
        "{e}"
    );
    write(dir.path(), "broken.json", "{\"tags\": [");
    let e = iiot_reference::config::load_register_map(
        &dir.path().join("gateway.toml"),
        "register_map",
        Path::new("broken.json"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("not valid JSON"), "{e}");
}

#[test]
fn produced_log_key_loads() {
    let dir = tempfile::tempdir().unwrap();
    let map = std::fs::read_to_string(sample_config("plant-map.toml")).unwrap();
    write(dir.path(), "plant-map.toml", &map);
    let text = std::fs::read_to_string(sample_config("gateway.toml")).unwrap();
    let on = text.replace("# produced_log = ", "produced_log = ");
    assert_ne!(on, text, "the sample documents produced_log");
    let g = GatewaySetup::load(&write(dir.path(), "gateway.toml", &on)).unwrap();
    assert_eq!(
        g.produced_log.as_deref(),
        Some(Path::new("iiot-gateway-data/produced.jsonl"))
    );
}

/// Copies a sample config into `dir` (with the register map beside it), applies
/// `edit`, runs `iiot <command> --config` on it and returns stderr.
fn fails_with(command: &str, sample: &str, edit: impl Fn(String) -> String) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let map = std::fs::read_to_string(sample_config("plant-map.toml")).unwrap();
    write(dir.path(), "plant-map.toml", &map);
    let text = edit(std::fs::read_to_string(sample_config(sample)).unwrap());
    let file = write(dir.path(), sample, &text);
    let out = run(&[command, "--config", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
    (stderr, file.display().to_string())
}

fn assert_names(stderr: &str, file: &str, key: &str) {
    assert!(stderr.contains(file), "file {file} not named in: {stderr}");
    assert!(
        stderr.contains(&format!("key \"{key}\"")),
        "key {key} not named in: {stderr}"
    );
}

#[test]
fn unknown_keys_are_named() {
    let (e, f) = fails_with("sim", "plc.toml", |t| t.replace("seed = 7", "sead = 7"));
    assert_names(&e, &f, "plant.sead");
    let (e, f) = fails_with("ingest", "ingest.toml", |t| {
        t.replace("table_prefix = \"iiot_\"", "tabel_prefix = \"iiot_\"")
    });
    assert_names(&e, &f, "sink.sqlite.tabel_prefix");
    let (e, f) = fails_with("gateway", "gateway.toml", |t| {
        format!("colour = \"red\"\n{t}")
    });
    assert_names(&e, &f, "colour");
    let (e, f) = fails_with("ingest", "ingest.toml", |t| {
        t.replace("[sink.sqlite]", "[sink.mysql]")
    });
    assert_names(&e, &f, "sink");
}

#[test]
fn bad_values_are_named() {
    let (e, f) = fails_with("sim", "plc.toml", |t| {
        t.replace("listen = \"127.0.0.1:5020\"", "listen = \"localhost\"")
    });
    assert_names(&e, &f, "listen");
    let (e, f) = fails_with("sim", "plc.toml", |t| {
        t.replace("pump_stop_level_m = 1.0", "pump_stop_level_m = 4.5")
    });
    assert_names(&e, &f, "plant.pump_stop_level_m");
    let (e, f) = fails_with("ingest", "ingest.toml", |t| {
        t.replace("keepalive = \"30s\"", "keepalive = \"soon\"")
    });
    assert_names(&e, &f, "mqtt.keepalive");
    assert!(e.contains("not a duration"), "{e}");
    let (e, f) = fails_with("gateway", "gateway.toml", |t| {
        t.replace("max_delay = \"1s\"", "max_delay = 1000")
    });
    // A bare number under a key that never took one is not guessed.
    assert_names(&e, &f, "batch.max_delay");
    assert!(e.contains("needs a unit"), "{e}");
    let (e, f) = fails_with("ingest", "ingest.toml", |t| {
        t.replace("\"$share/iiot-ingest/+/+/+/+/+/+/status\"", "\"a/#/b\"")
    });
    assert_names(&e, &f, "mqtt.filters");
    let (e, f) = fails_with("ingest", "ingest.toml", |t| {
        t.replace(
            "url = \"mqtt://127.0.0.1:1883\"",
            "url = \"tcp://127.0.0.1:1883\"",
        )
    });
    assert_names(&e, &f, "mqtt.url");
    let (e, f) = fails_with("gateway", "gateway.toml", |t| {
        t.replace("device_id = \"plc-01\"", "device_id = \"plc 01\"")
    });
    assert_names(&e, &f, "device_id");
    let (e, f) = fails_with("gateway", "gateway.toml", |t| {
        t.replace("port = 5020", "port = 70000")
    });
    assert_names(&e, &f, "modbus.transport.tcp.port");
}

#[test]
fn register_map_problems_name_the_map_file() {
    let dir = tempfile::tempdir().unwrap();
    let map = std::fs::read_to_string(sample_config("plant-map.toml"))
        .unwrap()
        .replace("order = \"CDAB\"", "order = \"CBAD\"");
    let map_file = write(dir.path(), "plant-map.toml", &map);
    let plc = std::fs::read_to_string(sample_config("plc.toml")).unwrap();
    let file = write(dir.path(), "plc.toml", &plc);
    let out = run(&["sim", "--config", file.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert_names(&e, &map_file.display().to_string(), "tags[3].order");

    let missing = write(
        dir.path(),
        "plc2.toml",
        &plc.replace("plant-map.toml", "nowhere.toml"),
    );
    let out = run(&["sim", "--config", missing.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert_names(&e, &missing.display().to_string(), "register_map");
}

#[test]
fn a_missing_file_is_named() {
    let out = run(&["ingest", "--config", "/nonexistent/ingest.toml"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(e.contains("/nonexistent/ingest.toml"), "{e}");
    let _ = Path::new("/");
}

/// `[ota]` of the sample, switched on with a trusted key written as `iiot ota
/// keygen` writes it, loads; switched on without keys, with a threshold no keys
/// can meet, or with a key file that is not a public key, it stops at start
/// naming the key (issue 17).
#[test]
fn ota_section_loads_when_enabled_with_keys_and_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "plant-map.toml",
        &std::fs::read_to_string(sample_config("plant-map.toml")).unwrap(),
    );
    let key = iiot_edge::ota::SigningKey::generate(iiot_core::types::SignatureAlgorithm::Ed25519);
    std::fs::create_dir_all(dir.path().join("keys")).unwrap();
    write(dir.path(), "keys/release-1.pub.pem", &key.public().to_pem());
    write(dir.path(), "keys/not-a-key.pem", "hello");
    let sample = std::fs::read_to_string(sample_config("gateway.toml")).unwrap();
    let enabled = sample
        .replace("[ota]\nenabled = false", "[ota]\nenabled = true")
        .replace("# [[ota.trusted_keys]]", "[[ota.trusted_keys]]")
        .replace("# id = \"release-1\"", "id = \"release-1\"")
        .replace("# path = \"keys/", "path = \"keys/");
    assert_ne!(enabled, sample);
    let g = GatewaySetup::load(&write(dir.path(), "gateway.toml", &enabled)).unwrap();
    let ota = g.ota.expect("[ota] is on");
    assert_eq!(ota.trust.threshold("plc"), 1);
    assert!(ota.trust.key("release-1").is_some());
    assert_eq!(ota.config.device_type, "plc");

    let cases = [
        (
            sample.replace("[ota]\nenabled = false", "[ota]\nenabled = true"),
            "ota.trusted_keys",
        ),
        (
            enabled.replace("threshold = 1 ", "threshold = 2 "),
            "ota.threshold",
        ),
        (
            enabled.replace("keys/release-1.pub.pem", "keys/not-a-key.pem"),
            "ota.trusted_keys[0].path",
        ),
        (
            enabled.replace("firmware_version = \"0.1.0\"", "firmware_version = \"v1\""),
            "mqtt.firmware_version",
        ),
    ];
    for (text, key) in cases {
        assert_ne!(text, enabled);
        let err = GatewaySetup::load(&write(dir.path(), "gateway.toml", &text)).unwrap_err();
        assert!(err.to_string().contains(key), "{key}: {err}");
    }
}

/// `iiot --help` lists the exit codes, and the reference README shows the same lines.
#[test]
fn help_lists_the_exit_codes_the_readme_shows() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let start = help.find("Exit codes:").expect("the help lists exit codes");
    let codes: Vec<&str> = help[start..]
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .collect();
    assert!(codes.len() >= 7, "{help}");
    for code in ["0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "10 "] {
        assert!(
            codes.iter().any(|l| l.trim_start().starts_with(code)),
            "exit code {code}missing: {help}"
        );
    }
    let readme = std::fs::read_to_string(common::crate_dir().join("README.md")).unwrap();
    for line in &codes {
        assert!(readme.contains(line), "README lacks {line:?}");
    }
}

/// A demo data directory that holds a previous run is refused before anything starts
/// (its rows and backlog would be counted with the new run's).
#[test]
fn a_reused_demo_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "iiot.sqlite3", "");
    let out = run(&["demo", "--data-dir", dir.path().to_str().unwrap()]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains(&dir.path().display().to_string()) && e.contains("previous demo run"),
        "{e}"
    );
}

/// A TLS mistake (mqtts:// without a CA) stops the gateway at load with exit 2, naming
/// the file and the key, before its data directory exists.
#[test]
fn a_tls_mistake_is_named_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let map = std::fs::read_to_string(sample_config("plant-map.toml")).unwrap();
    write(dir.path(), "plant-map.toml", &map);
    let data = dir.path().join("data");
    let gw = std::fs::read_to_string(sample_config("gateway.toml"))
        .unwrap()
        .replace(
            "url = \"mqtt://127.0.0.1:1883\"",
            "url = \"mqtts://127.0.0.1:8883\"",
        )
        .replace(
            "data_dir = \"iiot-gateway-data\"",
            &format!("data_dir = {:?}", data.display().to_string()),
        );
    let f = write(dir.path(), "gateway.toml", &gw);
    let out = run(&["gateway", "--config", f.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert_names(&e, &f.display().to_string(), "mqtt.ca_path");
    assert!(!data.exists(), "nothing was created: {e}");
}

/// The same for ingest: an mqtts:// CA file that cannot be read is named at load.
#[test]
fn an_unreadable_ca_for_ingest_is_named_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(sample_config("ingest.toml"))
        .unwrap()
        .replace(
            "url = \"mqtt://127.0.0.1:1883\"",
            "url = \"mqtts://127.0.0.1:8883\"\nca_path = \"/nonexistent/ca.pem\"",
        );
    let f = write(dir.path(), "ingest.toml", &text);
    let out = run(&["ingest", "--config", f.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert_names(&e, &f.display().to_string(), "mqtt.ca_path");
    assert!(e.contains("/nonexistent/ca.pem"), "{e}");
}
