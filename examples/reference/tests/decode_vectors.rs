//! `iiot decode` on iiot-core's golden vectors prints the expected JSON, from a file
//! and from stdin, in both wire forms; a broken payload prints every reason.

mod common;

use common::{run, run_with_stdin, vectors_dir};
use serde_json::Value;

fn vector(name: &str) -> (Vec<u8>, Value) {
    let dir = vectors_dir();
    let bin = std::fs::read(dir.join(format!("{name}.bin"))).unwrap();
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
            .unwrap();
    (bin, meta)
}

fn decoded(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn protobuf_vectors_print_core_json_form() {
    for name in [
        "telemetry_basic",
        "telemetry_all_types",
        "status_birth",
        "status_last_will",
    ] {
        let (_, meta) = vector(name);
        let path = vectors_dir().join(format!("{name}.bin"));
        let out = run(&["decode", path.to_str().unwrap()]);
        assert_eq!(decoded(&out), meta["json_form"], "{name}");
    }
}

#[test]
fn stdin_and_explicit_kind() {
    let (bin, meta) = vector("status_birth");
    let out = run_with_stdin(&["decode", "--kind", "status", "-"], &bin);
    assert_eq!(decoded(&out), meta["json_form"]);
    // The JSON form decodes to the same JSON.
    let text = serde_json::to_vec(&meta["json_form"]).unwrap();
    let out = run_with_stdin(&["decode"], &text);
    assert_eq!(decoded(&out), meta["json_form"]);
}

#[test]
fn data_loss_vector_prints_its_fields() {
    let path = vectors_dir().join("data_loss_overflow.bin");
    let out = run(&["decode", "--pretty", path.to_str().unwrap()]);
    let v = decoded(&out);
    assert_eq!(v["kind"], "data_loss");
    assert_eq!(v["device_id"], "plc-01");
    assert_eq!(v["first_seq"], 100);
    assert_eq!(v["last_seq"], 149);
    assert_eq!(v["count"], 50);
    assert_eq!(v["reason"], "overflow");
    assert_eq!(v["message_id"], "01KAYW2HY004HMASW9NF6YY093");
}

#[test]
fn rejected_payload_prints_the_reasons() {
    let out = run_with_stdin(&["decode"], br#"{"schema_version": 9, "device_id": "x"}"#);
    assert_eq!(out.status.code(), Some(3));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("as telemetry: [unsupported_version]"), "{e}");
    assert!(e.contains("as status: [unsupported_version]"), "{e}");
    assert!(e.contains("as data_loss: [no_json_form]"), "{e}");
    let out = run_with_stdin(&["decode", "--kind", "telemetry"], b"");
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("[empty]"));
}
