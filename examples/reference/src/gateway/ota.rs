//! `[ota]`: firmware updates of the gateway (see `iiot_edge::ota`).
//!
//! The reference gateway's "firmware" is an image file in one of two slots
//! (`{data_dir}/slots/slot-a.img`, `slot-b.img`) with the boot state in
//! `slots.json`: what a device with a real boot loader maps onto its partitions
//! (the table in `iiot_edge::ota`'s slots module). A manifest on the device's
//! `ota/notification` is checked against the trusted keys, the image fetched over
//! HTTP(S) (or from a local path) into the inactive slot and marked for trial;
//! then the gateway stops with [`REBOOT_EXIT_CODE`] so that its supervisor starts
//! it again (systemd `Restart=always`): that start is the trial boot. Its health
//! check passes once MQTT is connected and the image's self-test marker does not
//! say `selftest=fail` (the demo's stand-in for an application's own checks);
//! then the update is confirmed, otherwise rolled back with another restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use iiot_edge::ota::{
    FileFetch, FileSlots, FileSlotsConfig, Health, ImageInfo, OtaConfig, PublicKey, TrustStore,
    TrustedKey,
};
use iiot_protocols::http::{HttpFetch, HttpFetchConfig};
use iiot_protocols::mqtt::SessionHandle;
use serde::Deserialize;

use crate::config::{ConfigError, relative_to};

/// The exit code of `iiot gateway` when an update needs a restart (into a trial,
/// or back from one).
pub const REBOOT_EXIT_CODE: u8 = 10;

/// The marker a demo image carries when its self-test is to fail.
pub const SELFTEST_FAIL: &[u8] = b"selftest=fail";

/// One trusted release key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKeyFile {
    /// Its key id (what manifests name).
    pub id: String,
    /// Its public key PEM (`openssl pkey -pubout`, `iiot ota keygen`), relative to
    /// the config file.
    pub path: PathBuf,
}

/// `[ota]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtaSection {
    /// Take firmware updates at all (off by default: it needs trusted keys).
    pub enabled: bool,
    /// This gateway's hardware revision (an image needing a newer one is refused).
    pub hw_revision: u32,
    /// Bytes one slot holds.
    pub slot_capacity: u64,
    /// Signatures needed on a manifest.
    pub threshold: u32,
    /// The keys whose signatures count.
    pub trusted_keys: Vec<TrustedKeyFile>,
    /// Trial boots before falling back.
    pub max_boots: u32,
    /// Time from marking a trial to its confirmation.
    #[serde(with = "iiot_core::duration::human")]
    pub confirm_within: Duration,
    /// Throughput floor of a download, bytes/s.
    pub min_bytes_per_s: u64,
    /// Window the floor is measured over.
    #[serde(with = "iiot_core::duration::human")]
    pub stall_window: Duration,
    /// Longest time for a whole download.
    #[serde(with = "iiot_core::duration::human")]
    pub download_deadline: Duration,
    /// `[ota.http]`: the image server's CA, bearer token, client certificate.
    pub http: HttpFetchConfig,
}

impl Default for OtaSection {
    fn default() -> Self {
        let c = OtaConfig::new("", 1);
        Self {
            enabled: false,
            hw_revision: 1,
            slot_capacity: 64 << 20,
            threshold: 1,
            trusted_keys: Vec::new(),
            max_boots: c.max_boots,
            confirm_within: c.confirm_within,
            min_bytes_per_s: c.min_bytes_per_s,
            stall_window: c.stall_window,
            download_deadline: c.download_deadline,
            http: HttpFetchConfig::default(),
        }
    }
}

/// A checked `[ota]`.
#[derive(Debug, Clone)]
pub struct OtaSetupConfig {
    /// The agent's settings.
    pub config: OtaConfig,
    /// Who may sign.
    pub trust: TrustStore,
    /// Bytes one slot holds.
    pub slot_capacity: u64,
    /// The image server's client settings.
    pub http: HttpFetchConfig,
}

impl OtaSection {
    /// Checks the section of `file` for a device of `device_type`; `None` when
    /// updates are off.
    ///
    /// # Errors
    /// [`ConfigError`] naming the key: no trusted keys, an unreadable key, a
    /// threshold above the number of keys, bad bounds.
    pub fn check(
        &self,
        file: &Path,
        device_type: &str,
    ) -> Result<Option<OtaSetupConfig>, ConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        if self.trusted_keys.is_empty() {
            return Err(ConfigError::invalid(
                file,
                "ota.trusted_keys",
                "updates are enabled but no key is trusted",
            ));
        }
        let mut trust = TrustStore::new();
        for (i, k) in self.trusted_keys.iter().enumerate() {
            let key = format!("ota.trusted_keys[{i}].path");
            let p = relative_to(file, &k.path);
            let pem = std::fs::read_to_string(&p)
                .map_err(|e| ConfigError::invalid(file, &key, format!("{}: {e}", p.display())))?;
            let public = PublicKey::from_pem(&pem)
                .map_err(|e| ConfigError::invalid(file, &key, format!("{}: {e}", p.display())))?;
            trust = trust.with_key(&k.id, TrustedKey::new(public));
        }
        if self.threshold == 0 || self.threshold as usize > self.trusted_keys.len() {
            return Err(ConfigError::invalid(
                file,
                "ota.threshold",
                format!(
                    "{} signatures can never come from {} trusted key(s)",
                    self.threshold,
                    self.trusted_keys.len()
                ),
            ));
        }
        if self.max_boots == 0 || self.confirm_within.is_zero() || self.stall_window.is_zero() {
            return Err(ConfigError::invalid(
                file,
                "ota",
                "max_boots, confirm_within and stall_window must be more than 0",
            ));
        }
        let mut config = OtaConfig::new(device_type, self.hw_revision);
        config.max_boots = self.max_boots;
        config.confirm_within = self.confirm_within;
        config.min_bytes_per_s = self.min_bytes_per_s;
        config.stall_window = self.stall_window;
        config.download_deadline = self.download_deadline;
        Ok(Some(OtaSetupConfig {
            config,
            trust: trust.with_threshold(self.threshold),
            slot_capacity: self.slot_capacity,
            http: self.http.clone(),
        }))
    }
}

/// The slots under `dir`: a new device starts with `factory_version` in slot A.
///
/// # Errors
/// The slots' error, as text for [`crate::error::AppError`].
pub fn open_slots(dir: &Path, capacity: u64, factory_version: &str) -> Result<FileSlots, String> {
    let version = semver::Version::parse(factory_version)
        .map_err(|e| format!("mqtt.firmware_version {factory_version:?} is not semver: {e}"))?;
    FileSlots::open(
        dir,
        FileSlotsConfig {
            capacity,
            factory: ImageInfo {
                firmware_id: "iiot-gateway".into(),
                version,
                size: 0,
                sha256: [0; 32],
            },
        },
    )
    .map_err(|e| e.to_string())
}

/// Images from local paths or HTTP(S).
pub type Fetch = iiot_edge::ota::Chain<FileFetch, HttpFetch>;

/// The fetcher for `http`.
///
/// # Errors
/// The HTTP client's configuration error, as text.
pub fn fetcher(http: &HttpFetchConfig) -> Result<Fetch, String> {
    Ok(iiot_edge::ota::Chain(
        FileFetch::new(),
        HttpFetch::new(http).map_err(|e| e.to_string())?,
    ))
}

/// The reference gateway's health check of a trial boot: MQTT must be connected
/// (not yet: asked again), and the running image must not carry
/// [`SELFTEST_FAIL`] in its first 4 KiB (failed: rolled back).
pub fn health_check(
    session: SessionHandle,
    slots_dir: PathBuf,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Health> + Send>>
+ Send
+ Sync
+ 'static {
    move || {
        let session = session.clone();
        let dir = slots_dir.clone();
        Box::pin(async move {
            if !session.state().borrow().is_connected() {
                return Health::NotYet("MQTT is not connected yet".into());
            }
            let head = tokio::task::spawn_blocking(move || running_head(&dir))
                .await
                .unwrap_or_default();
            if head
                .windows(SELFTEST_FAIL.len())
                .any(|w| w == SELFTEST_FAIL)
            {
                Health::Failed("the image's self-test failed".into())
            } else {
                Health::Healthy
            }
        })
    }
}

fn running_head(dir: &Path) -> Vec<u8> {
    use std::io::Read as _;
    let Ok(state) = FileSlots::read_state(dir) else {
        return Vec::new();
    };
    let mut head = Vec::new();
    if let Ok(f) = std::fs::File::open(FileSlots::slot_file(dir, state.running())) {
        let _ = f.take(4096).read_to_end(&mut head);
    }
    head
}
