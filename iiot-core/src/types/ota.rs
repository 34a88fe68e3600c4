//! Firmware-update contracts: signed manifests and update status.

use bytes::Bytes;

use super::{DeviceId, Timestamp};

/// A signature algorithm a device may trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SignatureAlgorithm {
    /// ECDSA P-256 over SHA-256, DER encoded (as `openssl dgst -sha256 -sign` makes it).
    EcdsaP256Sha256,
    /// Ed25519, 64 bytes.
    Ed25519,
}

/// One signature over [`SignedManifest::body`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestSignature {
    /// Which trusted key made it.
    pub key_id: String,
    /// The algorithm.
    pub algorithm: SignatureAlgorithm,
    /// The signature bytes.
    pub signature: Bytes,
}

/// A manifest as received: the exact body bytes the signatures cover, and the
/// signatures. Verify a signature over `body` **before** decoding it with
/// [`crate::codec::protobuf::decode_manifest_body`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedManifest {
    /// An encoded `ManifestBody`, byte for byte as signed.
    pub body: Bytes,
    /// One or more signatures (signatures with an unknown algorithm are dropped on decode).
    pub signatures: Vec<ManifestSignature>,
}

/// What a manifest says about a firmware image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestBody {
    /// Identifier of the image.
    pub firmware_id: String,
    /// Its semantic version; must be newer than the running one (anti-rollback).
    pub version: semver::Version,
    /// The device type it is built for.
    pub device_type: String,
    /// Lowest hardware revision it supports.
    pub min_hw_revision: u32,
    /// Exact size in bytes; the device refuses any byte past it.
    pub size: u64,
    /// SHA-256 of the image.
    pub sha256: [u8; 32],
    /// When published.
    pub published_at: Timestamp,
    /// After this the manifest must not be installed.
    pub expires_at: Timestamp,
    /// Where to fetch the image.
    pub url: String,
}

/// Where a device is in an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OtaState {
    /// A state this version does not know (newer sender).
    Unknown,
    /// Nothing in progress.
    Idle,
    /// Fetching the image.
    Downloading,
    /// Checking hash and size.
    Verifying,
    /// Written to the inactive slot.
    Installed,
    /// Running the new slot on trial.
    TrialBoot,
    /// The new slot passed its health checks.
    Confirmed,
    /// The trial failed; the previous slot runs.
    RolledBack,
    /// The manifest or image was refused.
    Rejected,
    /// Something else went wrong.
    Failed,
}

/// An update status report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtaStatus {
    /// The reporting device.
    pub device_id: DeviceId,
    /// The firmware concerned.
    pub firmware_id: String,
    /// Its version text.
    pub version: String,
    /// The state reached.
    pub state: OtaState,
    /// When.
    pub time: Timestamp,
    /// Why rejected, failed or rolled back, for people.
    pub detail: Option<String>,
    /// Bytes downloaded so far.
    pub bytes_done: Option<u64>,
    /// Why rejected, failed or rolled back, machine-readable.
    pub reason: Option<OtaReason>,
    /// The version the device runs at this status, when known.
    pub running_version: Option<String>,
}

macro_rules! ota_reasons {
    ($( $(#[$doc:meta])* $name:ident = $label:literal ),+ $(,)?) => {
        /// Why an update was rejected, failed or rolled back: the machine-readable
        /// partner of [`OtaStatus::detail`]. A number this build does not know (from a
        /// newer device) decodes as [`OtaReason::Unknown`], never as an error.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum OtaReason {
            $( $(#[$doc])* $name, )+
            /// A reason number this build does not know.
            Unknown(i32),
        }

        impl OtaReason {
            /// Every named reason, in wire order (wire number = index + 1).
            pub const ALL: &'static [Self] = &[$( Self::$name, )+];

            /// A short snake_case name for metrics labels, tables and logs.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( Self::$name => $label, )+
                    Self::Unknown(_) => "unknown",
                }
            }
        }
    };
}

ota_reasons! {
    /// The manifest is larger than the device accepts.
    ManifestTooLarge = "manifest_too_large",
    /// The manifest (envelope or signed body) could not be decoded.
    ManifestMalformed = "manifest_malformed",
    /// A signature is truncated or not a valid encoding for its algorithm.
    SignatureMalformed = "signature_malformed",
    /// A signature names a key the trust store does not hold.
    UnknownKey = "unknown_key",
    /// A signature was made by a revoked key.
    KeyRevoked = "key_revoked",
    /// A signature was made by a key outside its validity window.
    KeyExpired = "key_expired",
    /// A signature's algorithm label differs from its key's algorithm.
    AlgorithmMismatch = "algorithm_mismatch",
    /// A signature does not verify over the body (wrong key, tampered bytes).
    SignatureInvalid = "signature_invalid",
    /// Fewer distinct trusted keys signed than the threshold requires.
    ThresholdNotMet = "threshold_not_met",
    /// Built for another device type.
    WrongDeviceType = "wrong_device_type",
    /// The device's hardware revision is below the image's minimum.
    HardwareTooOld = "hardware_too_old",
    /// Older than the running version.
    Downgrade = "downgrade",
    /// The running version itself.
    SameVersion = "same_version",
    /// Not newer than the persisted anti-rollback minimum.
    BelowMinimum = "below_minimum",
    /// The manifest's expiry time has passed.
    ManifestExpired = "manifest_expired",
    /// The inactive slot cannot hold the image.
    InsufficientSpace = "insufficient_space",
    /// The server sent more bytes than the manifest declares.
    ImageTooLong = "image_too_long",
    /// The image ended before its declared size.
    ImageTooShort = "image_too_short",
    /// The image's SHA-256 differs from the manifest's.
    HashMismatch = "hash_mismatch",
    /// The download fell below the throughput floor (slow retrieval).
    DownloadStalled = "download_stalled",
    /// The download did not finish within its deadline.
    DownloadDeadline = "download_deadline",
    /// The image server could not be reached or refused the request.
    DownloadFailed = "download_failed",
    /// Writing the slot or the update state failed.
    StorageFailed = "storage_failed",
    /// The trial slot did not come up within its boot count.
    BootLimit = "boot_limit",
    /// The application's health check failed on the trial slot.
    HealthCheckFailed = "health_check_failed",
    /// The trial was not confirmed within its deadline.
    ConfirmDeadline = "confirm_deadline",
    /// A newer manifest replaced this update before it was installed.
    Superseded = "superseded",
    /// A trial is running; a new update waits until it is confirmed or rolled back.
    Busy = "busy",
    /// The manifest's schema version is one this device does not know.
    UnsupportedSchema = "unsupported_schema",
    /// The image URL is one the device cannot fetch.
    UnsupportedUrl = "unsupported_url",
    /// Delivered on another device's topic.
    NotForThisDevice = "not_for_this_device",
}

impl OtaReason {
    /// The wire number (`OtaReason` in ota.proto).
    pub fn to_wire(self) -> i32 {
        match self {
            Self::Unknown(n) => n,
            named => super::wire_enum::to_wire(Self::ALL, named),
        }
    }

    /// From the wire number; `0` (unspecified) is `None`.
    pub fn from_wire(n: i32) -> Option<Self> {
        super::wire_enum::from_wire(Self::ALL, n, Self::Unknown)
    }

    /// Whether the update ended because of what was sent (manifest, signature,
    /// image), as opposed to the device, the network or the trial.
    pub fn is_rejection(self) -> bool {
        self.to_wire() >= 1 && self.to_wire() <= Self::HashMismatch.to_wire()
            || matches!(
                self,
                Self::UnsupportedSchema | Self::UnsupportedUrl | Self::NotForThisDevice
            )
    }
}

impl std::fmt::Display for OtaReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unknown(n) => write!(f, "unknown reason {n}"),
            r => f.write_str(r.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OtaReason;

    #[test]
    fn reason_numbers_round_trip_and_unknown_numbers_are_kept() {
        for (i, r) in OtaReason::ALL.iter().enumerate() {
            assert_eq!(r.to_wire(), i as i32 + 1);
            assert_eq!(OtaReason::from_wire(r.to_wire()), Some(*r));
        }
        assert_eq!(OtaReason::from_wire(0), None);
        assert_eq!(OtaReason::from_wire(999), Some(OtaReason::Unknown(999)));
        assert_eq!(OtaReason::Unknown(999).to_wire(), 999);
    }
}
