//! Manifest verification, in the order the device must check.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use bytes::Bytes;
use iiot_core::codec::{DecodeError, Limits, protobuf};
use iiot_core::types::{ManifestBody, OtaReason, Timestamp};
use sha2::{Digest as _, Sha256};

use super::trust::TrustStore;

/// Why a manifest or image was refused: a typed reason and a sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Rejection {
    /// The machine-readable reason (it goes into the OTA status).
    pub reason: OtaReason,
    /// What exactly, for people.
    pub detail: String,
}

impl Rejection {
    /// A rejection for `reason`.
    pub fn new(reason: OtaReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// What the device knows about itself when it judges a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFacts {
    /// Its device type (an image for another type is refused; it also picks the
    /// signature threshold).
    pub device_type: String,
    /// Its hardware revision.
    pub hw_revision: u32,
    /// The version it runs.
    pub running: semver::Version,
    /// The persisted anti-rollback minimum: an image must be newer.
    pub min_version: Option<semver::Version>,
    /// Bytes the inactive slot can hold.
    pub free_space: u64,
}

/// Most bytes of a signed manifest a device reads (default 16 KiB: a manifest is
/// a few hundred bytes; the limit is checked before anything is parsed).
pub const DEFAULT_MAX_MANIFEST_BYTES: usize = 16 * 1024;

/// A manifest that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedManifest {
    /// The signed manifest as received, byte for byte (what the agent records).
    pub raw: Bytes,
    /// Its decoded body.
    pub body: ManifestBody,
    /// The distinct keys whose signatures verified.
    pub signed_by: BTreeSet<String>,
    /// SHA-256 of `raw`: tells a re-delivery of the same manifest.
    pub digest: [u8; 32],
}

/// Checks a signed manifest for this device at `now`, in this order: size,
/// envelope, signatures (the threshold of the device's own type, over the exact
/// body bytes, before the body is decoded), body, device type, hardware revision,
/// version strictly newer than the running one and than the persisted minimum,
/// expiry, free space. The first failed check is the rejection.
///
/// # Errors
/// [`Rejection`] with the reason of the first check that failed.
pub fn verify_manifest(
    raw: &[u8],
    store: &TrustStore,
    device: &DeviceFacts,
    max_manifest_bytes: usize,
    now: Timestamp,
) -> Result<VerifiedManifest, Rejection> {
    if raw.len() > max_manifest_bytes {
        return Err(Rejection::new(
            OtaReason::ManifestTooLarge,
            format!("{} bytes, the limit is {max_manifest_bytes}", raw.len()),
        ));
    }
    let limits = Limits {
        max_payload_bytes: max_manifest_bytes,
        ..Limits::default()
    };
    let signed =
        protobuf::decode_signed_manifest(raw, &limits).map_err(|e| decode_rejection(&e))?;
    let k = store.threshold(&device.device_type);
    let verified = store.check(&signed.body, &signed.signatures, k, now)?;
    let body =
        protobuf::decode_manifest_body(&signed.body, &limits).map_err(|e| decode_rejection(&e))?;
    if body.device_type != device.device_type {
        return Err(Rejection::new(
            OtaReason::WrongDeviceType,
            format!(
                "image for device type {:?}, this is {:?}",
                body.device_type, device.device_type
            ),
        ));
    }
    if device.hw_revision < body.min_hw_revision {
        return Err(Rejection::new(
            OtaReason::HardwareTooOld,
            format!(
                "image needs hardware revision {}, this is {}",
                body.min_hw_revision, device.hw_revision
            ),
        ));
    }
    match body.version.cmp_precedence(&device.running) {
        Ordering::Less => {
            return Err(Rejection::new(
                OtaReason::Downgrade,
                format!(
                    "{} is older than the running {}",
                    body.version, device.running
                ),
            ));
        }
        Ordering::Equal => {
            return Err(Rejection::new(
                OtaReason::SameVersion,
                format!("{} is the running version", body.version),
            ));
        }
        Ordering::Greater => {}
    }
    if let Some(min) = &device.min_version
        && body.version.cmp_precedence(min) != Ordering::Greater
    {
        return Err(Rejection::new(
            OtaReason::BelowMinimum,
            format!(
                "{} is not above the anti-rollback minimum {min}",
                body.version
            ),
        ));
    }
    if now >= body.expires_at {
        return Err(Rejection::new(
            OtaReason::ManifestExpired,
            format!("expired at {}", body.expires_at),
        ));
    }
    if body.size > device.free_space {
        return Err(Rejection::new(
            OtaReason::InsufficientSpace,
            format!(
                "image of {} bytes, the slot holds {}",
                body.size, device.free_space
            ),
        ));
    }
    Ok(VerifiedManifest {
        digest: Sha256::digest(raw).into(),
        raw: Bytes::copy_from_slice(raw),
        body,
        signed_by: verified.keys,
    })
}

fn decode_rejection(e: &DecodeError) -> Rejection {
    match e {
        DecodeError::Limit(_) => Rejection::new(OtaReason::ManifestTooLarge, e.to_string()),
        DecodeError::UnsupportedVersion { .. } => {
            Rejection::new(OtaReason::UnsupportedSchema, e.to_string())
        }
        _ => Rejection::new(OtaReason::ManifestMalformed, e.to_string()),
    }
}
