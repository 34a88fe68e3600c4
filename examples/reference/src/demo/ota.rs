//! The demo's firmware updates: a release key the demo generates, images on the
//! platform's HTTP server, manifests published (retained) on the device's
//! `ota/notification`, statuses read from its `ota/status`, and the gateway
//! "rebooted" (stopped and started again on its data directory) whenever its OTA
//! agent asks for it.
//!
//! Three updates: 1.1.0, signed by the trusted key, downloaded, tried and
//! confirmed; a forged 1.2.0, signed by a key the gateway does not trust,
//! rejected; 1.2.0 whose self-test fails, tried and rolled back to 1.1.0.

use std::path::Path;
use std::time::Duration;

use iiot_core::codec::{Limits, protobuf};
use iiot_core::publish::{OutboundMessage, QoS};
use iiot_core::topic::UnsPath;
use iiot_core::types::{
    ManifestBody, OtaReason, OtaState, OtaStatus, SignatureAlgorithm, SignedManifest, Timestamp,
};
use iiot_edge::ota::{OtaConfig, SigningKey, TrustStore, TrustedKey};
use iiot_protocols::http::HttpFetchConfig;
use iiot_protocols::mqtt::{MqttConfig, Session, SessionHandle};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::AppError;
use crate::gateway::ota::{OtaSetupConfig, SELFTEST_FAIL};
use crate::gateway::{self, GatewaySetup};

/// What became of the demo's updates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtaOutcomes {
    /// The version confirmed after its trial (expected 1.1.0).
    pub confirmed: Option<String>,
    /// Why the forged manifest was rejected.
    pub forged: Option<OtaReason>,
    /// The version rolled back, and why (expected 1.2.0, health check failed).
    pub rolled_back: Option<(String, OtaReason)>,
    /// The version running at the end (expected 1.1.0).
    pub running: Option<String>,
    /// Restarts the updates needed.
    pub reboots: u32,
}

impl OtaOutcomes {
    /// Whether every update ended as it must.
    pub fn ok(&self) -> bool {
        self.confirmed.as_deref() == Some("1.1.0")
            && self.forged.is_some()
            && self
                .rolled_back
                .as_ref()
                .is_some_and(|(v, r)| v == "1.2.0" && *r == OtaReason::HealthCheckFailed)
            && self.running.as_deref() == Some("1.1.0")
    }
}

/// The OTA settings the demo's gateway gets: trust in `key` (id `release-1`).
pub(super) fn setup_config(key: &SigningKey) -> OtaSetupConfig {
    let mut config = OtaConfig::new("plc", 1);
    config.confirm_within = Duration::from_secs(30);
    config.health_interval = Duration::from_millis(200);
    config.stall_window = Duration::from_secs(10);
    OtaSetupConfig {
        config,
        trust: TrustStore::new().with_key("release-1", TrustedKey::new(key.public())),
        slot_capacity: 16 << 20,
        http: HttpFetchConfig::default(),
    }
}

/// An image of about 1 MiB for `version`; `selftest` says whether its self-test passes.
fn image(version: &str, selftest: bool) -> Vec<u8> {
    let mut v = format!("IIOT-DEMO-FIRMWARE {version}\n").into_bytes();
    if !selftest {
        v.extend_from_slice(SELFTEST_FAIL);
        v.push(b'\n');
    }
    let mut x = 0x9e37_79b9_u32;
    v.extend((0..(1 << 20)).map(|_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as u8
    }));
    v
}

fn manifest(image: &[u8], version: &str, url: &str, key: &SigningKey, key_id: &str) -> Vec<u8> {
    let now = Timestamp::now();
    let body = protobuf::encode_manifest_body(&ManifestBody {
        firmware_id: "iiot-gateway".into(),
        version: semver::Version::parse(version).unwrap_or_else(|_| semver::Version::new(0, 0, 0)),
        device_type: "plc".into(),
        min_hw_revision: 1,
        size: image.len() as u64,
        sha256: Sha256::digest(image).into(),
        published_at: now,
        expires_at: now.saturating_add(Duration::from_secs(3600)),
        url: url.into(),
    });
    protobuf::encode_signed_manifest(&SignedManifest {
        signatures: vec![key.signature(key_id, &body)],
        body: body.into(),
    })
}

/// The platform side: publishes manifests, collects statuses.
struct Platform {
    handle: SessionHandle,
    path: UnsPath,
    statuses: mpsc::UnboundedReceiver<OtaStatus>,
    stop: CancellationToken,
}

impl Platform {
    async fn start(broker_url: &str, path: &UnsPath) -> Result<Self, AppError> {
        let mut cfg = MqttConfig::platform(broker_url, "iiot-demo-releases");
        cfg.set_clean_session(true);
        let (handle, session, mut inbound) = Session::new(&cfg)?;
        let stop = CancellationToken::new();
        tokio::spawn(session.run(stop.clone()));
        handle
            .subscribe(path.ota_status().to_string(), QoS::AtLeastOnce)
            .await?;
        let (tx, statuses) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(m) = inbound.recv().await {
                if let Ok(s) = protobuf::decode_ota_status(&m.payload, &Limits::default()) {
                    let _ = tx.send(s);
                }
            }
        });
        Ok(Self {
            handle,
            path: path.clone(),
            statuses,
            stop,
        })
    }

    /// Publishes `manifest` retained: a gateway that connects later still gets it.
    async fn publish(&self, manifest: Vec<u8>) -> Result<(), AppError> {
        let m = OutboundMessage::new(self.path.ota_notification().to_string(), manifest)
            .with_retain(true);
        let c = self.handle.publish(m).await.map_err(|e| AppError::Task {
            task: "ota publish",
            detail: e.to_string(),
        })?;
        c.await.map_err(|e| AppError::Task {
            task: "ota publish",
            detail: e.to_string(),
        })
    }

    /// Statuses until one for `version` in one of `states` (returned), at most 60 s.
    async fn until(&mut self, version: &str, states: &[OtaState]) -> Option<OtaStatus> {
        let wait = async {
            while let Some(s) = self.statuses.recv().await {
                eprintln!(
                    "iiot demo: ota {} {:?}{}",
                    s.version,
                    s.state,
                    s.reason.map(|r| format!(" ({r})")).unwrap_or_default()
                );
                if s.version == version && states.contains(&s.state) {
                    return Some(s);
                }
            }
            None
        };
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .ok()
            .flatten()
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Runs the three updates against gateways made by `setup` (called once per
/// boot), with images served from `dir`.
///
/// # Errors
/// [`AppError`] when the broker, the image server or a gateway cannot start.
pub(super) async fn run(
    broker_url: &str,
    path: &UnsPath,
    dir: &Path,
    key: &SigningKey,
    setup: impl Fn() -> Result<GatewaySetup, AppError>,
) -> Result<OtaOutcomes, AppError> {
    let images = dir.join("images");
    std::fs::create_dir_all(&images)
        .map_err(|e| AppError::io(format!("cannot create {}", images.display()), e))?;
    let good = image("1.1.0", true);
    let bad = image("1.2.0", false);
    for (name, bytes) in [("fw-1.1.0.bin", &good), ("fw-1.2.0.bin", &bad)] {
        std::fs::write(images.join(name), bytes)
            .map_err(|e| AppError::io(format!("cannot write image {name}"), e))?;
    }
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let addr = super::images::serve(images, stop.clone()).await?;
    let url = |name: &str| format!("http://{addr}/{name}");
    let mut platform = Platform::start(broker_url, path).await?;
    let attacker = SigningKey::generate(SignatureAlgorithm::EcdsaP256Sha256);
    let mut out = OtaOutcomes::default();
    let mut gw = Boot::start(&setup).await?;

    // 1. A good update: download, trial boot, confirmed.
    eprintln!("iiot demo: ota: publishing 1.1.0 (signed by release-1)");
    platform
        .publish(manifest(
            &good,
            "1.1.0",
            &url("fw-1.1.0.bin"),
            key,
            "release-1",
        ))
        .await?;
    if platform
        .until("1.1.0", &[OtaState::Installed])
        .await
        .is_some()
    {
        gw = gw.reboot(&setup, &mut out).await?;
        if let Some(s) = platform
            .until("1.1.0", &[OtaState::Confirmed, OtaState::RolledBack])
            .await
            && s.state == OtaState::Confirmed
        {
            out.confirmed = Some(s.version);
        }
    }

    // 2. A forged update: signed by a key the gateway does not trust.
    eprintln!("iiot demo: ota: publishing a forged 1.2.0 (signed by an unknown key)");
    platform
        .publish(manifest(
            &bad,
            "1.2.0",
            &url("fw-1.2.0.bin"),
            &attacker,
            "release-1",
        ))
        .await?;
    if let Some(s) = platform.until("1.2.0", &[OtaState::Rejected]).await {
        out.forged = s.reason;
    }

    // 3. An update whose self-test fails: tried, rolled back.
    eprintln!("iiot demo: ota: publishing 1.2.0 (its self-test fails)");
    platform
        .publish(manifest(
            &bad,
            "1.2.0",
            &url("fw-1.2.0.bin"),
            key,
            "release-1",
        ))
        .await?;
    if platform
        .until("1.2.0", &[OtaState::Installed])
        .await
        .is_some()
    {
        gw = gw.reboot(&setup, &mut out).await?;
        if let Some(s) = platform.until("1.2.0", &[OtaState::RolledBack]).await {
            out.rolled_back = s.reason.map(|r| (s.version.clone(), r));
            gw = gw.reboot(&setup, &mut out).await?;
        }
    }
    out.running = gw
        .running
        .ota()
        .and_then(|h| h.state().running)
        .map(|v| v.to_string());
    gw.stop().await;
    Ok(out)
}

/// One boot of the demo's gateway.
struct Boot {
    running: gateway::RunningGateway,
    cancel: CancellationToken,
}

impl Boot {
    async fn start(setup: &impl Fn() -> Result<GatewaySetup, AppError>) -> Result<Self, AppError> {
        let cancel = CancellationToken::new();
        let running = gateway::start(setup()?, &cancel).await?;
        Ok(Self { running, cancel })
    }

    /// Waits (at most 30 s) until the agent asks for the reboot, stops and starts again.
    async fn reboot(
        self,
        setup: &impl Fn() -> Result<GatewaySetup, AppError>,
        out: &mut OtaOutcomes,
    ) -> Result<Self, AppError> {
        if let Some(h) = self.running.ota() {
            let _ = tokio::time::timeout(Duration::from_secs(30), h.reboot_required()).await;
        }
        eprintln!("iiot demo: ota: rebooting the gateway");
        self.stop().await;
        out.reboots += 1;
        Self::start(setup).await
    }

    async fn stop(self) {
        self.running
            .shutdown(&self.cancel, Duration::from_secs(2))
            .await;
    }
}
