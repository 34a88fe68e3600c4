//! Firmware updates on the device: signed manifests verified against a trust
//! store, images streamed into the inactive of two slots, a trial boot, the
//! application's health check, confirm or roll back. Every step is persisted and
//! reported upstream as an `OtaStatus` on `ota/status`.
//!
//! | part | what |
//! |---|---|
//! | [`TrustStore`] | trusted keys (ECDSA P-256, Ed25519) with validity windows and revocation, a k-of-n threshold per device type, rotation signed by the current keys |
//! | [`verify_manifest`] | the checks, in order: size, signatures over the exact body bytes, device type, hardware revision, version (strictly newer than running and than the anti-rollback minimum), expiry, free space |
//! | [`SlotBackend`], [`FileSlots`] | the boot loader's side: write the inactive slot, mark for trial, boot count, confirm, roll back; files with an atomically replaced state file |
//! | [`OtaAgent`] | manifests in (manual ack once recorded), resumable download through SHA-256 with a throughput floor and deadline, trial, health check, statuses on the control lane |
//! | [`FileFetch`] | images from local files ([`iiot_core::ota::ImageFetch`]); HTTP(S) is in `iiot-protocols` (feature `http`) |
//! | [`SigningKey`] | signs manifests the way `openssl` does, for release tooling and tests |
//!
//! Signatures are what `openssl` makes: `openssl dgst -sha256 -sign key.pem -out
//! sig body.bin` (ECDSA P-256, DER) and `openssl pkeyutl -sign -rawin -inkey
//! key.pem -in body.bin -out sig` (Ed25519), over the bytes of
//! `SignedManifest.body`; public keys as `openssl pkey -pubout` writes them.
//!
//! ```
//! use iiot_core::codec::protobuf;
//! use iiot_core::types::{ManifestBody, SignatureAlgorithm, SignedManifest, Timestamp};
//! use iiot_edge::ota::{DeviceFacts, SigningKey, TrustStore, TrustedKey, verify_manifest};
//! use std::time::Duration;
//!
//! // Release side: a key, a manifest body, its signature.
//! let key = SigningKey::generate(SignatureAlgorithm::EcdsaP256Sha256);
//! let now = Timestamp::now();
//! let body = protobuf::encode_manifest_body(&ManifestBody {
//!     firmware_id: "pump-ctrl".into(),
//!     version: semver::Version::new(2, 4, 1),
//!     device_type: "plc".into(),
//!     min_hw_revision: 1,
//!     size: 1024,
//!     sha256: [0; 32],
//!     published_at: now,
//!     expires_at: now.saturating_add(Duration::from_secs(86_400)),
//!     url: "https://images.example/pump-ctrl-2.4.1.bin".into(),
//! });
//! let manifest = protobuf::encode_signed_manifest(&SignedManifest {
//!     signatures: vec![key.signature("release-1", &body)],
//!     body: body.into(),
//! });
//!
//! // Device side: trust the public key, check the manifest.
//! let trust = TrustStore::new().with_key("release-1", TrustedKey::new(key.public()));
//! let device = DeviceFacts {
//!     device_type: "plc".into(),
//!     hw_revision: 2,
//!     running: semver::Version::new(2, 4, 0),
//!     min_version: None,
//!     free_space: 1 << 20,
//! };
//! let ok = verify_manifest(&manifest, &trust, &device, 16 * 1024, now).unwrap();
//! assert_eq!(ok.body.version, semver::Version::new(2, 4, 1));
//!
//! // One flipped byte and it is refused, with a reason.
//! let mut forged = manifest.clone();
//! let at = forged.len() - 90;
//! forged[at] ^= 1;
//! assert!(verify_manifest(&forged, &trust, &device, 16 * 1024, now).is_err());
//! ```

mod agent;
mod download;
mod fetch;
mod slots;
mod trust;
mod verify;

use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use agent::{AgentError, AgentState, OtaAgent, OtaHandle, OtaSetup};
pub use fetch::{Chain, ChainBody, FileBody, FileFetch};
pub use slots::{
    BootEvent, BootState, FileSlots, FileSlotsConfig, ImageInfo, Slot, SlotBackend, SlotError,
    Trial,
};
pub use trust::{KeyError, PublicKey, SigningKey, TrustStore, TrustUpdate, TrustedKey, Verified};
pub use verify::{
    DEFAULT_MAX_MANIFEST_BYTES, DeviceFacts, Rejection, VerifiedManifest, verify_manifest,
};

/// What the application's health check says about the trial boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Everything the application needs works: confirm the trial.
    Healthy,
    /// Not yet (the PLC is not reachable yet, the first poll is still due): ask
    /// again after [`OtaConfig::health_interval`], until the confirm deadline.
    NotYet(String),
    /// Broken for sure: roll back now.
    Failed(String),
}

/// The application's verdict on a trial boot. Called repeatedly until it says
/// [`Health::Healthy`] or [`Health::Failed`], or the confirm deadline passes.
pub trait HealthCheck: Send + Sync + 'static {
    /// Checks the running firmware.
    fn check(&self) -> impl std::future::Future<Output = Health> + Send;
}

/// A health check from a closure returning a future.
impl<F, Fut> HealthCheck for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Health> + Send,
{
    fn check(&self) -> impl std::future::Future<Output = Health> + Send {
        self()
    }
}

/// OTA agent settings.
///
/// | setting | default |
/// |---|---|
/// | `max_manifest_bytes` | 16 KiB |
/// | `max_boots` | 3 trial boots before the boot loader falls back |
/// | `confirm_within` | 10 min from marking to confirm, or roll back |
/// | `health_interval` | 5 s between health checks that said "not yet" |
/// | `min_bytes_per_s`, `stall_window` | 1 KiB/s over every 60 s window (slow-retrieval floor) |
/// | `download_deadline` | 1 h for the whole image |
/// | `retry_initial`, `retry_max` | 1 s to 60 s between attempts after a broken connection |
/// | `progress_every` | a `Downloading` status every 8 MiB |
/// | `sync_every` | fsync the slot every 4 MiB (what a restart resumes from) |
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OtaConfig {
    /// This device's type (manifests for another are refused).
    pub device_type: String,
    /// This device's hardware revision.
    pub hw_revision: u32,
    /// Largest signed manifest read.
    pub max_manifest_bytes: usize,
    /// Trial boots before the boot loader falls back.
    pub max_boots: u32,
    /// Time from marking a trial to its confirmation.
    pub confirm_within: Duration,
    /// Pause between health checks that said "not yet".
    pub health_interval: Duration,
    /// Throughput floor of a download.
    pub min_bytes_per_s: u64,
    /// Window over which the floor is measured (also the longest wait for a response).
    pub stall_window: Duration,
    /// Longest time for a whole download.
    pub download_deadline: Duration,
    /// First pause after a broken connection.
    pub retry_initial: Duration,
    /// Longest pause between attempts.
    pub retry_max: Duration,
    /// Bytes between progress statuses.
    pub progress_every: u64,
    /// Bytes between fsyncs of the slot.
    pub sync_every: u64,
}

impl OtaConfig {
    /// Defaults for a device of `device_type` at hardware revision `hw_revision`.
    pub fn new(device_type: impl Into<String>, hw_revision: u32) -> Self {
        Self {
            device_type: device_type.into(),
            hw_revision,
            max_manifest_bytes: DEFAULT_MAX_MANIFEST_BYTES,
            max_boots: 3,
            confirm_within: Duration::from_secs(600),
            health_interval: Duration::from_secs(5),
            min_bytes_per_s: 1024,
            stall_window: Duration::from_secs(60),
            download_deadline: Duration::from_secs(3600),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            progress_every: 8 << 20,
            sync_every: 4 << 20,
        }
    }
}

/// Runs `f` on the backend off the async runtime.
pub(crate) async fn blocking<B, R>(
    backend: &Arc<Mutex<B>>,
    f: impl FnOnce(&mut B) -> Result<R, SlotError> + Send + 'static,
) -> Result<R, SlotError>
where
    B: Send + 'static,
    R: Send + 'static,
{
    let b = backend.clone();
    tokio::task::spawn_blocking(move || f(&mut agent::lock(&b)))
        .await
        .unwrap_or(Err(SlotError::State("a slot operation panicked")))
}

pub(crate) fn hex(b: &[u8; 32]) -> String {
    hex_string(b)
}

pub(crate) fn hex_string(b: &[u8]) -> String {
    use std::fmt::Write as _;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

pub(crate) fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

mod hex32_serde {
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::hex(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        super::unhex32(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}
