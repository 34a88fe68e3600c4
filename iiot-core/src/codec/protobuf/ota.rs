//! Firmware manifests and OTA status in the Protobuf form.

use bytes::Bytes;
use prost::Message as _;

use super::precheck;
use super::util::{device_id, opt_text, prost_error, timestamp};
use crate::codec::{DecodeError, LimitError, Limits, SCHEMA_VERSION};
use crate::proto::v1 as pb;
use crate::types::{
    ManifestBody, ManifestSignature, OtaReason, OtaState, OtaStatus, SignatureAlgorithm,
    SignedManifest, ValidationError,
};

/// Most signatures accepted on one manifest.
const MAX_SIGNATURES: usize = 8;
/// Longest signature accepted (DER ECDSA P-256 is at most 72 bytes).
const MAX_SIGNATURE_LEN: usize = 512;
/// Field number of `SignedManifest.signatures`.
const SIGNATURES_FIELD: u32 = 3;

fn text(limits: &Limits, field: &'static str, s: String) -> Result<String, DecodeError> {
    limits.check_text(field, &s)?;
    Ok(s)
}

/// Encodes a `ManifestBody` (the bytes to sign).
pub fn encode_manifest_body(b: &ManifestBody) -> Vec<u8> {
    pb::ManifestBody {
        schema_version: SCHEMA_VERSION,
        firmware_id: b.firmware_id.clone(),
        version: b.version.to_string(),
        device_type: b.device_type.clone(),
        min_hw_revision: b.min_hw_revision,
        size: b.size,
        sha256: Bytes::copy_from_slice(&b.sha256),
        published_at_unix_ns: b.published_at.unix_nanos(),
        expires_at_unix_ns: b.expires_at.unix_nanos(),
        url: b.url.clone(),
    }
    .encode_to_vec()
}

/// Decodes a `ManifestBody`. Call only on bytes whose signature was verified.
///
/// # Errors
/// [`DecodeError`]; a version that is not semver or a hash that is not 32 bytes
/// is [`DecodeError::Invalid`].
pub fn decode_manifest_body(buf: &[u8], limits: &Limits) -> Result<ManifestBody, DecodeError> {
    precheck(buf, limits, 0, 0)?;
    let m = pb::ManifestBody::decode(buf).map_err(|e| prost_error(&e))?;
    let version = semver::Version::parse(&m.version).map_err(|e| {
        DecodeError::invalid(
            "version",
            ValidationError::Field {
                field: "version",
                reason: e.to_string(),
            },
        )
    })?;
    let sha256: [u8; 32] = m.sha256.as_ref().try_into().map_err(|_| {
        DecodeError::invalid(
            "sha256",
            ValidationError::Field {
                field: "sha256",
                reason: format!("{} bytes, expected 32", m.sha256.len()),
            },
        )
    })?;
    let body = ManifestBody {
        firmware_id: text(limits, "firmware_id", m.firmware_id)?,
        version,
        device_type: text(limits, "device_type", m.device_type)?,
        min_hw_revision: m.min_hw_revision,
        size: m.size,
        sha256,
        published_at: timestamp("published_at_unix_ns", m.published_at_unix_ns)?,
        expires_at: timestamp("expires_at_unix_ns", m.expires_at_unix_ns)?,
        url: text(limits, "url", m.url)?,
    };
    if body.firmware_id.is_empty() {
        return Err(DecodeError::invalid(
            "firmware_id",
            ValidationError::Missing {
                field: "firmware_id",
            },
        ));
    }
    Ok(body)
}

/// Encodes a `SignedManifest`.
pub fn encode_signed_manifest(m: &SignedManifest) -> Vec<u8> {
    pb::SignedManifest {
        schema_version: SCHEMA_VERSION,
        body: m.body.clone(),
        signatures: m
            .signatures
            .iter()
            .map(|s| pb::Signature {
                key_id: s.key_id.clone(),
                algorithm: match s.algorithm {
                    SignatureAlgorithm::EcdsaP256Sha256 => pb::SignatureAlgorithm::EcdsaP256Sha256,
                    SignatureAlgorithm::Ed25519 => pb::SignatureAlgorithm::Ed25519,
                } as i32,
                signature: s.signature.clone(),
            })
            .collect(),
    }
    .encode_to_vec()
}

/// Decodes a `SignedManifest` without verifying anything. Signatures with an
/// algorithm this build does not know are skipped (another trusted signature may
/// still verify); a manifest left with none is [`DecodeError::Invalid`].
///
/// # Errors
/// [`DecodeError`].
pub fn decode_signed_manifest(buf: &[u8], limits: &Limits) -> Result<SignedManifest, DecodeError> {
    let count = precheck(buf, limits, SIGNATURES_FIELD, MAX_SIGNATURES)?;
    if count > MAX_SIGNATURES {
        return Err(LimitError::TooManyEntries {
            field: "signatures",
            count,
            limit: MAX_SIGNATURES,
        }
        .into());
    }
    let m = pb::SignedManifest::decode(buf).map_err(|e| prost_error(&e))?;
    let mut signatures = Vec::with_capacity(m.signatures.len());
    for s in m.signatures {
        let algorithm = match pb::SignatureAlgorithm::try_from(s.algorithm) {
            Ok(pb::SignatureAlgorithm::EcdsaP256Sha256) => SignatureAlgorithm::EcdsaP256Sha256,
            Ok(pb::SignatureAlgorithm::Ed25519) => SignatureAlgorithm::Ed25519,
            _ => continue,
        };
        if s.signature.len() > MAX_SIGNATURE_LEN {
            return Err(LimitError::BytesValueTooLong {
                index: 0,
                len: s.signature.len(),
                limit: MAX_SIGNATURE_LEN,
            }
            .into());
        }
        signatures.push(ManifestSignature {
            key_id: text(limits, "key_id", s.key_id)?,
            algorithm,
            signature: s.signature,
        });
    }
    if signatures.is_empty() {
        return Err(DecodeError::invalid(
            "signatures",
            ValidationError::Missing {
                field: "signatures",
            },
        ));
    }
    Ok(SignedManifest {
        body: m.body,
        signatures,
    })
}

fn state_to_wire(s: OtaState) -> pb::OtaState {
    use pb::OtaState as P;
    match s {
        OtaState::Unknown => P::Unspecified,
        OtaState::Idle => P::Idle,
        OtaState::Downloading => P::Downloading,
        OtaState::Verifying => P::Verifying,
        OtaState::Installed => P::Installed,
        OtaState::TrialBoot => P::TrialBoot,
        OtaState::Confirmed => P::Confirmed,
        OtaState::RolledBack => P::RolledBack,
        OtaState::Rejected => P::Rejected,
        OtaState::Failed => P::Failed,
    }
}

fn state_from_wire(s: i32) -> OtaState {
    use pb::OtaState as P;
    match P::try_from(s) {
        Ok(P::Idle) => OtaState::Idle,
        Ok(P::Downloading) => OtaState::Downloading,
        Ok(P::Verifying) => OtaState::Verifying,
        Ok(P::Installed) => OtaState::Installed,
        Ok(P::TrialBoot) => OtaState::TrialBoot,
        Ok(P::Confirmed) => OtaState::Confirmed,
        Ok(P::RolledBack) => OtaState::RolledBack,
        Ok(P::Rejected) => OtaState::Rejected,
        Ok(P::Failed) => OtaState::Failed,
        Ok(P::Unspecified) | Err(_) => OtaState::Unknown,
    }
}

/// Encodes a v1 `OtaStatus`.
pub fn encode_ota_status(s: &OtaStatus) -> Vec<u8> {
    pb::OtaStatus {
        schema_version: SCHEMA_VERSION,
        device_id: s.device_id.to_string(),
        firmware_id: s.firmware_id.clone(),
        version: s.version.clone(),
        state: state_to_wire(s.state) as i32,
        time_unix_ns: s.time.unix_nanos(),
        detail: s.detail.clone(),
        bytes_done: s.bytes_done,
        reason: s.reason.map(OtaReason::to_wire),
        running_version: s.running_version.clone(),
    }
    .encode_to_vec()
}

/// Decodes a v1 `OtaStatus`; an unknown state becomes [`OtaState::Unknown`].
///
/// # Errors
/// [`DecodeError`].
pub fn decode_ota_status(buf: &[u8], limits: &Limits) -> Result<OtaStatus, DecodeError> {
    precheck(buf, limits, 0, 0)?;
    let m = pb::OtaStatus::decode(buf).map_err(|e| prost_error(&e))?;
    Ok(OtaStatus {
        device_id: device_id(limits, m.device_id)?,
        firmware_id: text(limits, "firmware_id", m.firmware_id)?,
        version: text(limits, "version", m.version)?,
        state: state_from_wire(m.state),
        time: timestamp("time_unix_ns", m.time_unix_ns)?,
        detail: opt_text(limits, "detail", m.detail)?,
        bytes_done: m.bytes_done,
        reason: m.reason.and_then(OtaReason::from_wire),
        running_version: opt_text(limits, "running_version", m.running_version)?,
    })
}
