//! `iiot command send` against `iiot gateway` and `iiot sim`, through the machine's
//! Mosquitto (issue 16): completed, refused by a constraint, unknown target, a
//! device that does not exist (no answer), and a command sent while the gateway is
//! down that runs once it is back (the broker's persistent session queued it).

mod common;

use std::path::Path;
use std::process::Output;

use common::{ChildGuard, mqtt_available, mqtt_url, run, sample_config, unique, write};

struct Plant {
    enterprise: String,
    device: String,
    gw_args: Vec<String>,
}

impl Plant {
    fn send(&self, extra: &[&str]) -> Output {
        let uns = format!("{}/plant1/packaging/line3/plc", self.enterprise);
        let url = mqtt_url();
        let mut args = vec![
            "command",
            "send",
            "--device",
            &self.device,
            "--uns",
            &uns,
            "--broker",
            &url,
        ];
        args.extend_from_slice(extra);
        run(&args)
    }

    fn gateway(&self) -> ChildGuard {
        let args: Vec<&str> = self.gw_args.iter().map(String::as_str).collect();
        let mut gw = ChildGuard::spawn_logging(&args, "warn,iiot_edge::commands=info");
        assert!(gw.read_line().contains("running"));
        gw
    }
}

fn ack(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no ack printed: {}", String::from_utf8_lossy(&out.stderr)));
    serde_json::from_str(last).unwrap()
}

fn sent_id(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines()
        .find_map(|l| l.split("iiot: command ").nth(1)?.split(' ').next())
        .unwrap_or_else(|| panic!("no id in {err}"))
        .to_owned()
}

fn setup(dir: &Path) -> (Plant, ChildGuard) {
    let map = sample_config("plant-map.toml").display().to_string();
    let (sim, plc_addr) = common::start_plc(dir);
    let enterprise = unique("cmd");
    let device = unique("plc");
    let text = common::gateway_toml(
        &device,
        &enterprise,
        Path::new(&map),
        &dir.join("gw"),
        plc_addr.port(),
    );
    let cfg = write(dir, "gateway.toml", &text);
    let plant = Plant {
        enterprise,
        device,
        gw_args: vec![
            "gateway".into(),
            "--config".into(),
            cfg.display().to_string(),
        ],
    };
    (plant, sim)
}

#[test]
fn commands_through_the_broker_to_the_plc() {
    if !mqtt_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (plant, _sim) = setup(dir.path());
    let gw = plant.gateway();
    // Until the gateway's subscription is in place a command finds no session:
    // retry a harmless write until one is answered (each try is a new command).
    let mut tries = 0;
    let first = loop {
        tries += 1;
        let out = plant.send(&["--tag", "pump1/running", "--value", "true", "--wait", "2s"]);
        if out.status.code() == Some(0) {
            break out;
        }
        assert_eq!(
            out.status.code(),
            Some(5),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(tries < 10, "the gateway never answered");
    };
    let a = ack(&first);
    assert_eq!(a["state"], "completed");
    assert_eq!(a["result"], "Bool(true)");

    let out = plant.send(&["--tag", "pump1/flow", "--value", "1000", "--max", "500"]);
    assert_eq!(out.status.code(), Some(4));
    let a = ack(&out);
    assert_eq!(
        (a["state"].as_str(), a["reason"].as_str()),
        (Some("rejected"), Some("above_max"))
    );
    let out = plant.send(&["--tag", "tank1/temperature", "--value", "20"]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(
        ack(&out)["reason"],
        "unknown_target",
        "input registers are not writable"
    );
    let out = plant.send(&["--tag", "pump1/flow", "--value", "abc"]);
    assert_eq!(ack(&out)["reason"], "wrong_type");
    // Bad arguments: exit 2, nothing sent.
    let out = plant.send(&["--tag", "pump1/flow"]);
    assert_eq!(out.status.code(), Some(2));

    // The gateway goes down; a command sent meanwhile waits in its broker session
    // and runs when it is back, once.
    let log = gw.kill_and_stderr();
    assert!(!log.contains("panicked"), "{log}");
    let out = plant.send(&[
        "--tag",
        "pump1/running",
        "--value",
        "false",
        "--ttl",
        "60s",
        "--wait",
        "1s",
    ]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "no answer while the gateway is down"
    );
    let queued = sent_id(&out);
    let gw = plant.gateway();
    // A later command is answered only after the queued one ran (one at a time).
    let out = plant.send(&["--tag", "pump1/running", "--value", "true"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = gw.kill_and_stderr();
    let ran: Vec<_> = log
        .lines()
        .filter(|l| l.contains("commands: executed") && l.contains(&queued))
        .collect();
    assert_eq!(ran.len(), 1, "the queued command ran once: {log}");
    assert!(ran[0].contains("Completed"), "{}", ran[0]);
}
