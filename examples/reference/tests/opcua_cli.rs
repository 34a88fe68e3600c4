//! OPC-UA in the reference deployment (issue 18): `iiot browse` prints a server's
//! variables as a tag map that `opcua_map` of gateway.toml loads; a bad tag map stops
//! the gateway at start naming the file and the tag; a dead endpoint is a clear error.

mod common;

use common::{run, sample_config, write};
use iiot_core::types::Value;
use iiot_protocols::opcua::OpcUaConfig;
use iiot_protocols::opcua::sim::{SimConfig, SimServer};
use iiot_reference::gateway::GatewaySetup;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_prints_a_tag_map_the_gateway_loads() {
    let sim = SimServer::start(SimConfig::default()).await.unwrap();
    let temp = sim.add("Oven.Temp", &Value::Double(180.0), false).unwrap();
    let set = sim
        .add("Oven.Setpoint", &Value::Double(175.0), true)
        .unwrap();
    let endpoint = sim.endpoint().to_owned();
    let out = tokio::task::spawn_blocking(move || run(&["browse", "--endpoint", &endpoint]))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = OpcUaConfig::from_toml_str(&stdout).unwrap();
    assert_eq!(cfg.endpoint, sim.endpoint());
    // In the server's browse order, which is its own: compare sorted.
    let mut nodes: Vec<_> = cfg
        .tags
        .iter()
        .map(|t| (t.node.as_str(), t.writable))
        .collect();
    nodes.sort_unstable();
    let mut want = vec![(temp.as_str(), false), (set.as_str(), true)];
    want.sort_unstable();
    assert_eq!(nodes, want, "{stdout}");

    // That output, as `opcua_map` beside the sample register map.
    let dir = tempfile::tempdir().unwrap();
    let map = std::fs::read_to_string(sample_config("plant-map.toml")).unwrap();
    write(dir.path(), "plant-map.toml", &map);
    write(dir.path(), "oven.toml", &stdout);
    let gw = std::fs::read_to_string(sample_config("gateway.toml"))
        .unwrap()
        .replace(
            "# opcua_map = \"opcua-map.toml\"",
            "opcua_map = \"oven.toml\"",
        );
    let file = write(dir.path(), "gateway.toml", &gw);
    let setup = GatewaySetup::load(&file).unwrap();
    assert_eq!(setup.opcua.unwrap().tags.len(), 2);
    sim.stop().await;
}

#[test]
fn the_sample_tag_map_loads_and_bad_maps_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let map = std::fs::read_to_string(sample_config("plant-map.toml")).unwrap();
    write(dir.path(), "plant-map.toml", &map);
    let sample = std::fs::read_to_string(sample_config("opcua-map.toml")).unwrap();
    let gw = std::fs::read_to_string(sample_config("gateway.toml"))
        .unwrap()
        .replace(
            "# opcua_map = \"opcua-map.toml\"",
            "opcua_map = \"opcua-map.toml\"",
        );
    let file = write(dir.path(), "gateway.toml", &gw);

    write(dir.path(), "opcua-map.toml", &sample);
    let setup = GatewaySetup::load(&file).unwrap();
    let o = setup.opcua.unwrap();
    assert_eq!(o.tags.len(), 3);
    assert!(o.tags[2].writable);

    for (bad, key) in [
        (sample.replace("ns=2;i=5001", "ns=2;x=5001"), "oven/running"),
        (
            sample
                .replace("# server_deadband", "server_deadband")
                .replace(
                    "name = \"oven/setpoint\"",
                    "name = \"oven/setpoint\"\ndeadband = { absolute = 1.0 }",
                ),
            "oven/setpoint",
        ),
        (sample.replace("opc.tcp://", "http://"), "endpoint"),
        (
            sample.replace("publishing_interval", "publishing_intervall"),
            "publishing_intervall",
        ),
    ] {
        let map_file = write(dir.path(), "opcua-map.toml", &bad);
        let out = run(&["gateway", "--config", file.to_str().unwrap()]);
        let e = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{e}");
        assert!(
            e.contains(&map_file.display().to_string()),
            "names the map file: {e}"
        );
        assert!(e.contains(key), "names {key}: {e}");
    }

    // A tag in both maps has two sources: refused.
    let clash = sample.replace("name = \"oven/running\"", "name = \"tank1/level\"");
    write(dir.path(), "opcua-map.toml", &clash);
    let e = GatewaySetup::load(&file).unwrap_err().to_string();
    assert!(e.contains("tank1/level") && e.contains("opcua_map"), "{e}");
}

#[test]
fn browse_without_an_endpoint_or_with_a_dead_one_says_why() {
    let out = run(&["browse"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--endpoint"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("opc.tcp://127.0.0.1:{port}/");
    let out = run(&["browse", "--endpoint", &url, "--timeout", "3s"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.contains(&url), "{e}");
    assert_eq!(
        e.matches(&url).count(),
        1,
        "said once, not again as a cause: {e}"
    );
    assert!(out.stdout.is_empty(), "no half tag map on stdout");
}
