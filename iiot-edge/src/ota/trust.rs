//! The trust store: which keys may sign firmware, when, and how many must agree.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use iiot_core::types::{ManifestSignature, OtaReason, SignatureAlgorithm, Timestamp};
use sha2::{Digest as _, Sha256};

use super::Rejection;

/// A public key a device trusts, parsed.
#[derive(Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// ECDSA P-256 (signatures: DER over SHA-256, `openssl dgst -sha256 -sign`).
    EcdsaP256(p256::ecdsa::VerifyingKey),
    /// Ed25519 (signatures: 64 bytes, `openssl pkeyutl -sign -rawin`).
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}({})", self.algorithm(), self.fingerprint())
    }
}

/// A key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

impl PublicKey {
    /// Reads a `-----BEGIN PUBLIC KEY-----` PEM (SubjectPublicKeyInfo, as
    /// `openssl pkey -pubout` writes it) of either algorithm.
    ///
    /// # Errors
    /// [`KeyError`] when it is neither a P-256 nor an Ed25519 public key.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        use ed25519_dalek::pkcs8::DecodePublicKey as _;
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
            return Ok(Self::EcdsaP256(k));
        }
        ed25519_dalek::VerifyingKey::from_public_key_pem(pem)
            .map(Self::Ed25519)
            .map_err(|_| {
                KeyError("not a P-256 or Ed25519 public key in SubjectPublicKeyInfo PEM".into())
            })
    }

    /// The key as SubjectPublicKeyInfo PEM.
    pub fn to_pem(&self) -> String {
        use ed25519_dalek::pkcs8::EncodePublicKey as _;
        use p256::pkcs8::LineEnding;
        match self {
            Self::EcdsaP256(k) => k.to_public_key_pem(LineEnding::LF),
            Self::Ed25519(k) => k.to_public_key_pem(LineEnding::LF),
        }
        .unwrap_or_default()
    }

    /// The algorithm its signatures use.
    pub fn algorithm(&self) -> SignatureAlgorithm {
        match self {
            Self::EcdsaP256(_) => SignatureAlgorithm::EcdsaP256Sha256,
            Self::Ed25519(_) => SignatureAlgorithm::Ed25519,
        }
    }

    /// The first 8 bytes of the SHA-256 of the key's SubjectPublicKeyInfo DER, in
    /// hex: a default key id.
    pub fn fingerprint(&self) -> String {
        use ed25519_dalek::pkcs8::EncodePublicKey as _;
        let der = match self {
            Self::EcdsaP256(k) => k
                .to_public_key_der()
                .map(ed25519_dalek::pkcs8::Document::into_vec),
            Self::Ed25519(k) => k
                .to_public_key_der()
                .map(ed25519_dalek::pkcs8::Document::into_vec),
        }
        .unwrap_or_default();
        super::hex_string(&Sha256::digest(der)[..8])
    }

    /// Checks `signature` over `message`: the exact bytes, no re-encoding.
    ///
    /// # Errors
    /// [`OtaReason::SignatureMalformed`] when the bytes are not a signature of
    /// this algorithm, [`OtaReason::SignatureInvalid`] when it does not verify.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), OtaReason> {
        match self {
            Self::EcdsaP256(k) => {
                use p256::ecdsa::signature::Verifier as _;
                let sig = p256::ecdsa::Signature::from_der(signature)
                    .map_err(|_| OtaReason::SignatureMalformed)?;
                // openssl does not normalize s; a high-s signature is as valid.
                k.verify(message, &sig)
                    .map_err(|_| OtaReason::SignatureInvalid)
            }
            Self::Ed25519(k) => {
                let sig = ed25519_dalek::Signature::from_slice(signature)
                    .map_err(|_| OtaReason::SignatureMalformed)?;
                k.verify_strict(message, &sig)
                    .map_err(|_| OtaReason::SignatureInvalid)
            }
        }
    }
}

/// A private key that signs manifests: for release tooling and tests (`iiot ota
/// sign`). Devices never hold one.
pub enum SigningKey {
    /// ECDSA P-256.
    EcdsaP256(p256::ecdsa::SigningKey),
    /// Ed25519.
    Ed25519(ed25519_dalek::SigningKey),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({:?}, secret)", self.public())
    }
}

impl SigningKey {
    /// A new random key from the operating system's generator.
    pub fn generate(algorithm: SignatureAlgorithm) -> Self {
        let mut rng = rand_core::OsRng;
        match algorithm {
            SignatureAlgorithm::Ed25519 => {
                Self::Ed25519(ed25519_dalek::SigningKey::generate(&mut rng))
            }
            _ => Self::EcdsaP256(p256::ecdsa::SigningKey::random(&mut rng)),
        }
    }

    /// Reads a private key PEM: PKCS#8 (`-----BEGIN PRIVATE KEY-----`, as `openssl
    /// genpkey` writes it) of either algorithm, or SEC1 (`-----BEGIN EC PRIVATE
    /// KEY-----`, `openssl ecparam -genkey`) for P-256.
    ///
    /// # Errors
    /// [`KeyError`].
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        use ed25519_dalek::pkcs8::DecodePrivateKey as _;
        if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
            return Ok(Self::EcdsaP256(k));
        }
        if let Ok(k) = p256::SecretKey::from_sec1_pem(pem) {
            return Ok(Self::EcdsaP256(k.into()));
        }
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map(Self::Ed25519)
            .map_err(|_| {
                KeyError("not a P-256 or Ed25519 private key in PKCS#8 or SEC1 PEM".into())
            })
    }

    /// The key as PKCS#8 PEM (what `openssl pkey` reads). Ed25519 keys are
    /// written in the PKCS#8 v1 form (RFC 8410) that OpenSSL 3.0 reads; the v2
    /// form with the public key inside it does not load there.
    pub fn to_pem(&self) -> zeroize::Zeroizing<String> {
        use ed25519_dalek::pkcs8::EncodePrivateKey as _;
        use p256::pkcs8::LineEnding;
        match self {
            Self::EcdsaP256(k) => k.to_pkcs8_pem(LineEnding::LF).unwrap_or_default(),
            Self::Ed25519(k) => {
                use base64::Engine as _;
                // SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING seed } }
                let mut der = zeroize::Zeroizing::new(vec![
                    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04,
                    0x22, 0x04, 0x20,
                ]);
                der.extend_from_slice(k.as_bytes());
                let b64 = zeroize::Zeroizing::new(
                    base64::engine::general_purpose::STANDARD.encode(der.as_slice()),
                );
                zeroize::Zeroizing::new(format!(
                    "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                    b64.as_str()
                ))
            }
        }
    }

    /// Its public key.
    pub fn public(&self) -> PublicKey {
        match self {
            Self::EcdsaP256(k) => PublicKey::EcdsaP256(*k.verifying_key()),
            Self::Ed25519(k) => PublicKey::Ed25519(k.verifying_key()),
        }
    }

    /// Signs `message` (the exact bytes): DER for P-256, 64 bytes for Ed25519.
    pub fn sign(&self, message: &[u8]) -> Bytes {
        match self {
            Self::EcdsaP256(k) => {
                use p256::ecdsa::signature::Signer as _;
                let s: p256::ecdsa::Signature = k.sign(message);
                Bytes::copy_from_slice(s.to_der().as_bytes())
            }
            Self::Ed25519(k) => {
                use ed25519_dalek::Signer as _;
                Bytes::copy_from_slice(&k.sign(message).to_bytes())
            }
        }
    }

    /// A signature of `message` under `key_id`, for a manifest's list.
    pub fn signature(&self, key_id: impl Into<String>, message: &[u8]) -> ManifestSignature {
        ManifestSignature {
            key_id: key_id.into(),
            algorithm: self.public().algorithm(),
            signature: self.sign(message),
        }
    }
}

/// A key in the trust store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// The key.
    pub key: PublicKey,
    /// Signatures count only from this time on (`None`: always).
    pub not_before: Option<Timestamp>,
    /// ... and until this time (`None`: no end).
    pub not_after: Option<Timestamp>,
    /// A revoked key never counts again.
    pub revoked: bool,
}

impl TrustedKey {
    /// A key valid from now on with no end.
    pub fn new(key: PublicKey) -> Self {
        Self {
            key,
            not_before: None,
            not_after: None,
            revoked: false,
        }
    }
}

/// The keys a device trusts and how many must sign: `k` of the `n` keys, by
/// device type. The same key signing twice counts once. The store itself changes
/// only by [`TrustStore::rotate`], signed by a threshold of its current keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustStore {
    /// Rises with every rotation; an older store is never taken back.
    pub serial: u64,
    keys: BTreeMap<String, TrustedKey>,
    default_threshold: u32,
    thresholds: BTreeMap<String, u32>,
    rotation_threshold: u32,
}

/// How many verified signatures came from which keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The distinct keys whose signatures verified.
    pub keys: BTreeSet<String>,
}

impl TrustStore {
    /// An empty store at serial 0 with threshold 1 for every device type (and for
    /// rotation). An empty store trusts nothing.
    pub fn new() -> Self {
        Self {
            serial: 0,
            keys: BTreeMap::new(),
            default_threshold: 1,
            thresholds: BTreeMap::new(),
            rotation_threshold: 1,
        }
    }

    /// Adds (or replaces) the key `id`.
    #[must_use]
    pub fn with_key(mut self, id: impl Into<String>, key: TrustedKey) -> Self {
        self.keys.insert(id.into(), key);
        self
    }

    /// Signatures needed for every device type without its own threshold (at least 1).
    #[must_use]
    pub fn with_threshold(mut self, k: u32) -> Self {
        self.default_threshold = k.max(1);
        self
    }

    /// Signatures needed for images of `device_type` (at least 1).
    #[must_use]
    pub fn with_device_threshold(mut self, device_type: impl Into<String>, k: u32) -> Self {
        self.thresholds.insert(device_type.into(), k.max(1));
        self
    }

    /// Signatures of current keys needed to replace the store (at least 1).
    #[must_use]
    pub fn with_rotation_threshold(mut self, k: u32) -> Self {
        self.rotation_threshold = k.max(1);
        self
    }

    /// Revokes `id` (kept, so that its signatures say "revoked", not "unknown").
    /// Returns whether the key was there.
    pub fn revoke(&mut self, id: &str) -> bool {
        self.keys.get_mut(id).map(|k| k.revoked = true).is_some()
    }

    /// The key `id`.
    pub fn key(&self, id: &str) -> Option<&TrustedKey> {
        self.keys.get(id)
    }

    /// The keys by id.
    pub fn keys(&self) -> impl Iterator<Item = (&str, &TrustedKey)> {
        self.keys.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Signatures needed for `device_type`.
    pub fn threshold(&self, device_type: &str) -> u32 {
        self.thresholds
            .get(device_type)
            .copied()
            .unwrap_or(self.default_threshold)
    }

    /// Checks `signatures` over `message` at `now` and requires `k` distinct
    /// trusted keys. A signature that fails does not spoil others that verify;
    /// when too few verify, the reason is [`OtaReason::ThresholdNotMet`] if at
    /// least one did, otherwise the first failure's own reason (unknown key,
    /// revoked, expired, algorithm mismatch, malformed, invalid).
    ///
    /// # Errors
    /// [`Rejection`].
    pub fn check(
        &self,
        message: &[u8],
        signatures: &[ManifestSignature],
        k: u32,
        now: Timestamp,
    ) -> Result<Verified, Rejection> {
        let mut good = BTreeSet::new();
        let mut first: Option<Rejection> = None;
        for s in signatures {
            match self.check_one(message, s, now) {
                Ok(()) => {
                    good.insert(s.key_id.clone());
                }
                Err(r) => {
                    first.get_or_insert(r);
                }
            }
        }
        if good.len() >= k as usize {
            return Ok(Verified { keys: good });
        }
        Err(match first {
            Some(r) if good.is_empty() => r,
            _ => Rejection::new(
                OtaReason::ThresholdNotMet,
                format!(
                    "{} distinct trusted key(s) signed, {k} required",
                    good.len()
                ),
            ),
        })
    }

    fn check_one(
        &self,
        message: &[u8],
        s: &ManifestSignature,
        now: Timestamp,
    ) -> Result<(), Rejection> {
        let id = &s.key_id;
        let Some(t) = self.keys.get(id) else {
            return Err(Rejection::new(
                OtaReason::UnknownKey,
                format!("key {id:?} is not in the trust store"),
            ));
        };
        if t.revoked {
            return Err(Rejection::new(
                OtaReason::KeyRevoked,
                format!("key {id:?} is revoked"),
            ));
        }
        if t.not_before.is_some_and(|b| now < b) || t.not_after.is_some_and(|a| now > a) {
            return Err(Rejection::new(
                OtaReason::KeyExpired,
                format!("key {id:?} is outside its validity window"),
            ));
        }
        if s.algorithm != t.key.algorithm() {
            return Err(Rejection::new(
                OtaReason::AlgorithmMismatch,
                format!(
                    "signature of key {id:?} is labelled {:?}, the key is {:?}",
                    s.algorithm,
                    t.key.algorithm()
                ),
            ));
        }
        t.key.verify(message, &s.signature).map_err(|reason| {
            Rejection::new(
                reason,
                format!("signature of key {id:?}: {}", reason.as_str()),
            )
        })
    }

    /// Replaces the store with the one in `update`, which must be signed by
    /// [`TrustStore::with_rotation_threshold`] distinct keys of *this* store and
    /// carry a higher serial. Returns the new store; `self` is unchanged either way.
    ///
    /// # Errors
    /// [`Rejection`]: not enough current keys signed, malformed, or not newer
    /// ([`OtaReason::Downgrade`]).
    pub fn rotate(&self, update: &TrustUpdate, now: Timestamp) -> Result<Self, Rejection> {
        self.check(
            &update.body,
            &update.signatures,
            self.rotation_threshold,
            now,
        )?;
        let next = Self::from_json(&update.body)
            .map_err(|e| Rejection::new(OtaReason::ManifestMalformed, e.to_string()))?;
        if next.serial <= self.serial {
            return Err(Rejection::new(
                OtaReason::Downgrade,
                format!(
                    "trust store serial {} is not above {}",
                    next.serial, self.serial
                ),
            ));
        }
        Ok(next)
    }

    /// The store as JSON: the document a rotation signs and a device keeps.
    pub fn to_json(&self) -> Vec<u8> {
        let doc = StoreDoc {
            serial: self.serial,
            default_threshold: self.default_threshold,
            rotation_threshold: self.rotation_threshold,
            thresholds: self.thresholds.clone(),
            keys: self
                .keys
                .iter()
                .map(|(id, k)| {
                    (
                        id.clone(),
                        KeyDoc {
                            public_key: k.key.to_pem(),
                            not_before: k.not_before,
                            not_after: k.not_after,
                            revoked: k.revoked,
                        },
                    )
                })
                .collect(),
        };
        serde_json::to_vec_pretty(&doc).unwrap_or_default()
    }

    /// Reads a store from [`TrustStore::to_json`]'s form.
    ///
    /// # Errors
    /// [`KeyError`] for a document or key that cannot be read.
    pub fn from_json(bytes: &[u8]) -> Result<Self, KeyError> {
        let doc: StoreDoc =
            serde_json::from_slice(bytes).map_err(|e| KeyError(format!("trust store: {e}")))?;
        let mut keys = BTreeMap::new();
        for (id, k) in doc.keys {
            let key = PublicKey::from_pem(&k.public_key)
                .map_err(|e| KeyError(format!("trust store key {id:?}: {e}")))?;
            keys.insert(
                id,
                TrustedKey {
                    key,
                    not_before: k.not_before,
                    not_after: k.not_after,
                    revoked: k.revoked,
                },
            );
        }
        Ok(Self {
            serial: doc.serial,
            keys,
            default_threshold: doc.default_threshold.max(1),
            thresholds: doc
                .thresholds
                .into_iter()
                .map(|(t, k)| (t, k.max(1)))
                .collect(),
            rotation_threshold: doc.rotation_threshold.max(1),
        })
    }
}

impl Default for TrustStore {
    fn default() -> Self {
        Self::new()
    }
}

/// A new trust store document (the exact bytes of [`TrustStore::to_json`]) and
/// the signatures of current keys over those bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustUpdate {
    /// The new store's JSON, byte for byte as signed.
    pub body: Bytes,
    /// Signatures over `body`.
    pub signatures: Vec<ManifestSignature>,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreDoc {
    serial: u64,
    #[serde(default = "one")]
    default_threshold: u32,
    #[serde(default = "one")]
    rotation_threshold: u32,
    #[serde(default)]
    thresholds: BTreeMap<String, u32>,
    keys: BTreeMap<String, KeyDoc>,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyDoc {
    public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not_before: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not_after: Option<Timestamp>,
    #[serde(default)]
    revoked: bool,
}

fn one() -> u32 {
    1
}
