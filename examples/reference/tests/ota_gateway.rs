//! `iiot gateway` with `[ota]` on, as a user runs it: the machine's Mosquitto, the
//! simulated PLC, a manifest published retained on the device's
//! `ota/notification`. The gateway downloads the image into its inactive slot,
//! exits with code 10 for the reboot, and the next start tries the image and
//! confirms it; statuses arrive on `ota/status` (issue 17).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{ChildGuard, mqtt_available, mqtt_url, unique, write};
use iiot_core::codec::{Limits, protobuf};
use iiot_core::publish::{OutboundMessage, QoS};
use iiot_core::topic::UnsPath;
use iiot_core::types::{
    DeviceId, ManifestBody, OtaState, OtaStatus, SignatureAlgorithm, SignedManifest, Timestamp,
};
use iiot_edge::ota::SigningKey;
use iiot_protocols::mqtt::{Inbound, MqttConfig, Session, SessionHandle};
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

async fn next_status(inbound: &mut Inbound, want: OtaState) -> Vec<OtaStatus> {
    let mut seen = Vec::new();
    let collect = async {
        while let Some(m) = inbound.recv().await {
            if let Ok(s) = protobuf::decode_ota_status(&m.payload, &Limits::default()) {
                let done = s.state == want;
                seen.push(s);
                if done {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), collect)
        .await
        .unwrap_or_else(|_| panic!("no {want:?} within 30 s; saw {seen:?}"));
    seen
}

fn gateway(cfg: &Path) -> ChildGuard {
    let mut gw = ChildGuard::spawn_logging(
        &["gateway", "--config", cfg.to_str().unwrap()],
        "warn,iiot_edge::ota=info",
    );
    assert!(gw.read_line().contains("running"));
    gw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_installs_reboots_and_confirms_an_update() {
    if !mqtt_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_plc, plc_addr) = common::start_plc(dir.path());
    let enterprise = unique("ota");
    let device = unique("plc");
    let key = SigningKey::generate(SignatureAlgorithm::EcdsaP256Sha256);
    write(dir.path(), "release-1.pub.pem", &key.public().to_pem());
    let map = common::sample_config("plant-map.toml");
    let text = common::gateway_toml(
        &device,
        &enterprise,
        &map,
        &dir.path().join("gw"),
        plc_addr.port(),
    )
    .replace("[ota]\nenabled = false", "[ota]\nenabled = true")
    .replace("# [[ota.trusted_keys]]", "[[ota.trusted_keys]]")
    .replace("# id = \"release-1\"", "id = \"release-1\"")
    .replace(
        "# path = \"keys/release-1.pub.pem\"",
        &format!(
            "path = {:?}",
            dir.path().join("release-1.pub.pem").display().to_string()
        ),
    );
    let cfg = write(dir.path(), "gateway.toml", &text);

    // The platform: watches the statuses, publishes the manifest.
    let path = UnsPath::new(
        &enterprise,
        "plant1",
        "packaging",
        "line3",
        "plc",
        DeviceId::new(&device).unwrap(),
    )
    .unwrap();
    let mut pc = MqttConfig::platform(mqtt_url(), unique("releases"));
    pc.set_clean_session(true);
    let (handle, session, mut inbound): (SessionHandle, _, _) = Session::new(&pc).unwrap();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    tokio::spawn(session.run(stop.clone()));
    handle
        .subscribe(path.ota_status().to_string(), QoS::AtLeastOnce)
        .await
        .unwrap();

    let mut gw = gateway(&cfg);
    let image: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let image_path = write(dir.path(), "fw-1.1.0.bin", "");
    std::fs::write(&image_path, &image).unwrap();
    let now = Timestamp::now();
    let body = protobuf::encode_manifest_body(&ManifestBody {
        firmware_id: "iiot-gateway".into(),
        version: semver::Version::new(1, 1, 0),
        device_type: "plc".into(),
        min_hw_revision: 1,
        size: image.len() as u64,
        sha256: Sha256::digest(&image).into(),
        published_at: now,
        expires_at: now.saturating_add(Duration::from_secs(600)),
        url: image_path.display().to_string(),
    });
    let manifest = protobuf::encode_signed_manifest(&SignedManifest {
        signatures: vec![key.signature("release-1", &body)],
        body: body.into(),
    });
    let topic = path.ota_notification().to_string();
    handle
        .publish(OutboundMessage::new(topic.clone(), manifest).with_retain(true))
        .await
        .unwrap()
        .await
        .unwrap();
    let seen = next_status(&mut inbound, OtaState::Installed).await;
    assert!(
        seen.iter()
            .all(|s| s.running_version.as_deref() == Some("0.1.0")),
        "{seen:?}"
    );
    // The reboot: the gateway exits with 10 for its supervisor.
    assert_eq!(gw.exit_code(Duration::from_secs(20)), Some(10));
    let mut gw = gateway(&cfg);
    let seen = next_status(&mut inbound, OtaState::Confirmed).await;
    assert_eq!(
        seen.first().map(|s| s.state),
        Some(OtaState::TrialBoot),
        "{seen:?}"
    );
    assert_eq!(
        seen.last().unwrap().running_version.as_deref(),
        Some("1.1.0")
    );
    assert!(!gw.exited(), "a confirmed update needs no more restarts");
    drop(gw);
    // Clear the retained manifest.
    handle
        .publish(OutboundMessage::new(topic, Vec::new()).with_retain(true))
        .await
        .unwrap()
        .await
        .unwrap();
    let slots = std::fs::read_to_string(dir.path().join("gw/slots/slots.json")).unwrap();
    assert!(slots.contains("\"min_version\": \"1.1.0\""), "{slots}");
}
