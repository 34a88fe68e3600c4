//! `iiot sim` serves the plant on a free port: a Modbus client reads plausible
//! values, including the word-swapped (CDAB) block, and the SDK poller decodes them.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{ChildGuard, sample_config, write};
use iiot_protocols::modbus::{Poller, PollerConfig, RegisterMap, TcpConnector};
use tokio_modbus::prelude::*;
use tokio_util::sync::CancellationToken;

/// A plant that fills in well under a second, so the pump runs during the test.
fn fast_plant_config(dir: &std::path::Path) -> std::path::PathBuf {
    let map = sample_config("plant-map.toml");
    write(
        dir,
        "plc.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\nregister_map = {map:?}\n[plant]\ntick = \"20ms\"\n\
             inflow_m3h = 40000.0\npump_capacity_m3h = 80000.0\nnoise_percent = 1.0\n",
            map = map.display().to_string()
        ),
    )
}

fn start(dir: &std::path::Path) -> (ChildGuard, SocketAddr) {
    let cfg = fast_plant_config(dir);
    let mut child = ChildGuard::spawn(&["sim", "--config", cfg.to_str().unwrap()]);
    let line = child.read_line();
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    (child, addr)
}

fn f32_abcd(w: &[u16]) -> f32 {
    f32::from_bits((u32::from(w[0]) << 16) | u32::from(w[1]))
}

#[tokio::test]
async fn raw_registers_hold_the_plant_in_its_word_orders() {
    let dir = tempfile::tempdir().unwrap();
    let (_child, addr) = start(dir.path());
    let mut ctx = tcp::connect_slave(addr, Slave(1)).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let hr = ctx.read_holding_registers(0, 14).await.unwrap().unwrap();
        let pump = ctx.read_coils(0, 1).await.unwrap().unwrap()[0];
        let temp_raw = ctx.read_input_registers(0, 1).await.unwrap().unwrap()[0] as i16;
        let level = f32_abcd(&hr[0..2]);
        assert!((0.0..=5.2).contains(&level), "level {level}");
        let temperature = f64::from(temp_raw) * 0.1;
        assert!(
            (15.0..=25.0).contains(&temperature),
            "temperature {temperature}"
        );
        // pump1/flow: holding 10-11, low word first.
        let flow_cdab = f32_abcd(&[hr[11], hr[10]]);
        let flow_abcd = f32_abcd(&hr[10..12]);
        if pump && flow_cdab > 0.0 {
            assert!(
                (70_000.0..=90_000.0).contains(&flow_cdab),
                "flow {flow_cdab}"
            );
            assert!(
                !(70_000.0..=90_000.0).contains(&flow_abcd),
                "the flow block must be word-swapped"
            );
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the pump never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_sdk_poller_reads_every_tag_good() {
    let dir = tempfile::tempdir().unwrap();
    let (_child, addr) = start(dir.path());
    let map = RegisterMap::from_toml_str(
        &std::fs::read_to_string(sample_config("plant-map.toml")).unwrap(),
    )
    .unwrap();
    let (_handle, poller, mut readings) =
        Poller::new(PollerConfig::default(), map, TcpConnector::new(addr));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(poller.run(cancel.clone()));
    let mut seen = std::collections::BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < 6 {
        let r = tokio::time::timeout_at(deadline, readings.recv())
            .await
            .expect("all six tags within 10 s")
            .expect("poller running");
        assert!(r.sample.quality().is_good(), "{r:?}");
        seen.insert(r.sample.tag().to_string(), r.sample.value().cloned());
    }
    cancel.cancel();
    task.await.unwrap();
    let level = seen["tank1/level"].as_ref().unwrap().as_f64().unwrap();
    assert!((0.0..=5.2).contains(&level), "{seen:?}");
    let t = seen["tank1/temperature"]
        .as_ref()
        .unwrap()
        .as_f64()
        .unwrap();
    assert!((15.0..=25.0).contains(&t), "{seen:?}");
}
