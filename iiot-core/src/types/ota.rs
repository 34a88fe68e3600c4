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
    /// Why rejected, failed or rolled back.
    pub detail: Option<String>,
    /// Bytes downloaded so far.
    pub bytes_done: Option<u64>,
}
