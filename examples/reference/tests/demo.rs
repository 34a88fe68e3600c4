//! The demo scenario, short: embedded broker, simulated PLC, gateway with outbox,
//! ingest to SQLite, a broker outage of a few seconds; nothing may be lost (issue 8),
//! the script's commands act exactly as often as they completed (issue 16), and
//! its firmware updates end as they must: confirmed, forged rejected, failing
//! rolled back (issue 17); the oven on the in-process OPC-UA server reaches the
//! database beside the PLC (issue 18).

#![allow(clippy::float_cmp)] // the report prints whole counts; exact comparison is meant

mod common;

use common::run;

#[test]
fn short_demo_loses_nothing_across_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "demo",
        "--duration",
        "8",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| -> f64 {
        report
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {report}"))
    };
    assert_eq!(field("lost"), 0.0, "{report}");
    let produced = field("samples produced");
    assert!(produced > 0.0, "{report}");
    assert_eq!(field("rows stored"), produced, "{report}");
    assert!(field("longest outage bridged") >= 3.0, "{report}");
    assert!(field("backlog peak") >= 1.0, "{report}");
    // The SQLite file is left in the data directory given.
    let conn = rusqlite::Connection::open(dir.path().join("iiot.sqlite3")).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM iiot_samples", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows as f64, produced);
    // The oven on OPC-UA (issue 18): its readings are rows beside the PLC's.
    let opcua = field("of them from OPC-UA");
    assert!(opcua >= 1.0, "{report}");
    let oven: i64 = conn
        .query_row(
            "SELECT count(*) FROM iiot_samples WHERE tag = 'oven/temperature'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(oven >= 1, "oven/temperature rows: {oven}");
    // Commands (issue 16): the setpoint delivered twice acted once (its second ack a
    // duplicate), the stale one expired, the one above its maximum was rejected,
    // the one sent during the outage ran after the reconnect; the PLC served exactly
    // as many writes as commands completed.
    assert_eq!(field("commands sent"), 4.0, "{report}");
    assert_eq!(field("commands completed"), 2.0, "{report}");
    assert_eq!(field("duplicate acks"), 1.0, "{report}");
    assert_eq!(field("commands expired"), 1.0, "{report}");
    assert_eq!(field("commands rejected"), 1.0, "{report}");
    assert_eq!(field("commands unanswered"), 0.0, "{report}");
    assert_eq!(field("PLC writes"), 2.0, "{report}");
    assert_eq!(field("double executions"), 0.0, "{report}");
    // Ingest tracked them: one row per command, with its final state.
    let mut states: Vec<String> = conn
        .prepare(
            "SELECT state || ':' || coalesce(ack_reason, '') FROM iiot_commands ORDER BY state",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    states.sort();
    assert_eq!(
        states,
        [
            "completed:",
            "completed:",
            "expired:expired",
            "rejected:above_max"
        ],
        "{report}"
    );
    // Firmware (issue 17): 1.1.0 downloaded over HTTP, tried and confirmed; a
    // forged manifest refused by its signature; 1.2.0 whose self-test fails tried
    // and rolled back; 1.1.0 runs at the end. The slots say the same.
    let line = |name: &str| -> String {
        report
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map_or_else(
                || panic!("no {name} in {report}"),
                |rest| rest.trim().to_owned(),
            )
    };
    assert_eq!(line("ota confirmed"), "1.1.0", "{report}");
    assert_eq!(
        line("ota forged"),
        "rejected (signature_invalid)",
        "{report}"
    );
    assert_eq!(
        line("ota rolled back"),
        "1.2.0 (health_check_failed)",
        "{report}"
    );
    assert_eq!(line("ota running"), "1.1.0 after 3 reboots", "{report}");
    let slots: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("slots/slots.json")).unwrap())
            .unwrap();
    assert_eq!(slots["min_version"], "1.1.0", "{slots}");
    assert_eq!(slots["trial"], serde_json::Value::Null, "{slots}");
    let active = slots["active"].as_str().unwrap();
    assert_eq!(
        slots["images"][usize::from(active == "b")]["version"],
        "1.1.0",
        "{slots}"
    );
}
