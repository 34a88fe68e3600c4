//! Firmware-update helpers: manifests, keys, the `openssl` CLI, an OTA rig.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use iiot_core::codec::{Limits, protobuf};
use iiot_core::publish::{ConfirmedPublish, OutboundMessage, PublishError};
use iiot_core::types::{
    ManifestBody, ManifestSignature, OtaStatus, SignatureAlgorithm, SignedManifest, Timestamp,
};
use iiot_edge::commands::{ChannelInbox, CommandSender};
use iiot_edge::ota::{
    FileSlots, FileSlotsConfig, HealthCheck, ImageInfo, OtaConfig, OtaHandle, OtaSetup, SigningKey,
    TrustStore, TrustedKey,
};
use iiot_edge::outbox::{Outbox, OutboxConfig, WhenFull};
use iiot_edge::runtime::{Gateway, GatewayBuilder};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::gateway::path;

/// The device type the tests' device has.
pub const DEVICE_TYPE: &str = "plc";

/// The `openssl` CLI, or `None` (printed) when it is missing and services are not
/// required.
pub fn openssl() -> Option<PathBuf> {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(PathBuf::from("openssl"));
    }
    assert!(
        std::env::var("IIOT_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "the openssl CLI is required (IIOT_REQUIRE_SERVICES=1)"
    );
    eprintln!("skipping: the openssl CLI is not installed");
    None
}

/// Runs `openssl args…` in `dir`; panics with its stderr when it fails.
pub fn run_openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A manifest body for `image` at `version`, served from `url`, valid for a day.
pub fn body_for(image: &[u8], version: &str, url: &str) -> ManifestBody {
    let now = Timestamp::now();
    ManifestBody {
        firmware_id: "pump-ctrl".into(),
        version: semver::Version::parse(version).unwrap(),
        device_type: DEVICE_TYPE.into(),
        min_hw_revision: 1,
        size: image.len() as u64,
        sha256: Sha256::digest(image).into(),
        published_at: now,
        expires_at: now.saturating_add(Duration::from_secs(86_400)),
        url: url.into(),
    }
}

/// The signed manifest of `body` with `signers`' signatures (key id, key).
pub fn sign(body: &ManifestBody, signers: &[(&str, &SigningKey)]) -> Vec<u8> {
    let b = protobuf::encode_manifest_body(body);
    let sigs = signers.iter().map(|(id, k)| k.signature(*id, &b)).collect();
    signed(b, sigs)
}

/// A signed manifest of raw body bytes and signatures.
pub fn signed(body: Vec<u8>, signatures: Vec<ManifestSignature>) -> Vec<u8> {
    protobuf::encode_signed_manifest(&SignedManifest {
        body: body.into(),
        signatures,
    })
}

/// Two release keys (`k1` P-256, `k2` Ed25519) and a trust store holding both.
pub fn keys() -> (SigningKey, SigningKey, TrustStore) {
    let k1 = SigningKey::generate(SignatureAlgorithm::EcdsaP256Sha256);
    let k2 = SigningKey::generate(SignatureAlgorithm::Ed25519);
    let trust = TrustStore::new()
        .with_key("k1", TrustedKey::new(k1.public()))
        .with_key("k2", TrustedKey::new(k2.public()));
    (k1, k2, trust)
}

/// The factory image of the test device: version 1.0.0.
pub fn factory() -> ImageInfo {
    ImageInfo {
        firmware_id: "pump-ctrl".into(),
        version: semver::Version::new(1, 0, 0),
        size: 0,
        sha256: [0; 32],
    }
}

/// File slots under `dir` holding up to `capacity` bytes.
pub fn slots(dir: &Path, capacity: u64) -> FileSlots {
    FileSlots::open(
        dir.join("slots"),
        FileSlotsConfig {
            capacity,
            factory: factory(),
        },
    )
    .unwrap()
}

/// Test settings: short windows so the tests run fast.
pub fn config() -> OtaConfig {
    let mut c = OtaConfig::new(DEVICE_TYPE, 2);
    c.stall_window = Duration::from_millis(500);
    c.min_bytes_per_s = 1024;
    c.download_deadline = Duration::from_secs(20);
    c.retry_initial = Duration::from_millis(20);
    c.retry_max = Duration::from_millis(200);
    c.health_interval = Duration::from_millis(20);
    c.confirm_within = Duration::from_secs(30);
    c.progress_every = 1 << 20;
    c.sync_every = 256 << 10;
    c
}

/// A transport that confirms everything and hands every OTA status to the test.
#[derive(Clone)]
pub struct StatusTap(pub mpsc::UnboundedSender<OtaStatus>);

impl ConfirmedPublish for StatusTap {
    async fn publish_confirmed(&self, m: OutboundMessage) -> Result<(), PublishError> {
        if m.topic.ends_with("/ota/status") {
            let s = protobuf::decode_ota_status(&m.payload, &Limits::default()).unwrap();
            let _ = self.0.send(s);
        }
        Ok(())
    }
}

/// A running gateway with an OTA agent.
pub struct OtaRig {
    /// The gateway.
    pub gateway: Gateway,
    /// Its token.
    pub cancel: CancellationToken,
    /// Delivers manifests.
    pub sender: CommandSender,
    /// The statuses it published.
    pub statuses: mpsc::UnboundedReceiver<OtaStatus>,
}

impl OtaRig {
    /// Starts a gateway whose agent keeps its state under `dir`.
    pub async fn start<F, H>(
        dir: &Path,
        backend: FileSlots,
        fetch: F,
        health: H,
        trust: TrustStore,
        config: OtaConfig,
    ) -> Self
    where
        F: iiot_core::ota::ImageFetch,
        H: HealthCheck,
    {
        let device = path().device_id().clone();
        let telemetry = Outbox::open(dir.join("outbox"), device.clone(), OutboxConfig::default())
            .await
            .unwrap();
        let mut cc = OutboxConfig::default();
        cc.set_when_full(WhenFull::Block);
        let control = Outbox::open(dir.join("control"), device, cc).await.unwrap();
        let setup = OtaSetup::open(dir.join("ota"), backend, fetch, health, trust, config).unwrap();
        let (tx, statuses) = mpsc::unbounded_channel();
        let (sender, inbox) = ChannelInbox::new(16);
        let cancel = CancellationToken::new();
        let gateway = GatewayBuilder::new(path(), telemetry, StatusTap(tx))
            .control_lane(control, iiot_edge::forwarder::ForwarderConfig::default())
            .ota(inbox, setup)
            .unwrap()
            .start(&cancel);
        Self {
            gateway,
            cancel,
            sender,
            statuses,
        }
    }

    /// The agent's handle.
    pub fn ota(&self) -> &OtaHandle {
        self.gateway.ota().unwrap()
    }

    /// Delivers a manifest on the device's notification topic and waits until the
    /// agent acknowledged it.
    pub async fn deliver(&self, manifest: Vec<u8>) {
        tokio::time::timeout(
            Duration::from_secs(20),
            self.sender
                .deliver(path().ota_notification().to_string(), manifest, false),
        )
        .await
        .expect("the agent did not acknowledge the manifest within 20 s")
        .expect("agent stopped");
    }

    /// The next status (at most 20 s).
    pub async fn status(&mut self) -> OtaStatus {
        tokio::time::timeout(Duration::from_secs(20), self.statuses.recv())
            .await
            .expect("no status within 20 s")
            .expect("transport gone")
    }

    /// Statuses until one with `state` (returned last), at most 20 s.
    pub async fn until(&mut self, state: iiot_core::types::OtaState) -> Vec<OtaStatus> {
        let mut seen = Vec::new();
        loop {
            let s = self.status().await;
            let done = s.state == state;
            seen.push(s);
            if done {
                return seen;
            }
        }
    }

    /// Stops the gateway (a "reboot" when the rig is started again on the same
    /// directory); returns the statuses it published that the test did not take.
    pub async fn stop(mut self) -> Vec<OtaStatus> {
        self.gateway
            .shutdown(&self.cancel, Duration::from_secs(5))
            .await;
        let mut left = Vec::new();
        while let Ok(s) = self.statuses.try_recv() {
            left.push(s);
        }
        left
    }
}
