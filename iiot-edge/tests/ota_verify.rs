//! Manifest signatures against the `openssl` CLI both ways, the trust store's
//! thresholds and rotation, and every manifest check with its own reason.

mod common;

use std::time::Duration;

use common::ota::{DEVICE_TYPE, body_for, keys, openssl, run_openssl, sign, signed};
use iiot_core::codec::protobuf;
use iiot_core::types::{ManifestSignature, OtaReason, SignatureAlgorithm, Timestamp};
use iiot_edge::ota::{
    DeviceFacts, PublicKey, Rejection, SigningKey, TrustStore, TrustUpdate, TrustedKey,
    verify_manifest,
};

fn device() -> DeviceFacts {
    DeviceFacts {
        device_type: DEVICE_TYPE.into(),
        hw_revision: 2,
        running: semver::Version::new(1, 0, 0),
        min_version: None,
        free_space: 1 << 20,
    }
}

fn check(raw: &[u8], trust: &TrustStore) -> Result<(), Rejection> {
    verify_manifest(raw, trust, &device(), 16 * 1024, Timestamp::now()).map(|_| ())
}

fn reason(raw: &[u8], trust: &TrustStore) -> OtaReason {
    check(raw, trust).expect_err("must be refused").reason
}

#[test]
fn openssl_signatures_verify_in_rust() {
    let Some(_) = openssl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "ec.pem",
        ],
    );
    run_openssl(d, &["pkey", "-in", "ec.pem", "-pubout", "-out", "ec.pub"]);
    run_openssl(d, &["genpkey", "-algorithm", "ed25519", "-out", "ed.pem"]);
    run_openssl(d, &["pkey", "-in", "ed.pem", "-pubout", "-out", "ed.pub"]);
    let ec = PublicKey::from_pem(&std::fs::read_to_string(d.join("ec.pub")).unwrap()).unwrap();
    let ed = PublicKey::from_pem(&std::fs::read_to_string(d.join("ed.pub")).unwrap()).unwrap();
    assert_eq!(ec.algorithm(), SignatureAlgorithm::EcdsaP256Sha256);
    assert_eq!(ed.algorithm(), SignatureAlgorithm::Ed25519);
    let trust = TrustStore::new()
        .with_key("ec", TrustedKey::new(ec))
        .with_key("ed", TrustedKey::new(ed))
        .with_threshold(2);
    // Many bodies: openssl's ECDSA signatures come with high and low s alike.
    for i in 0..16 {
        let body = protobuf::encode_manifest_body(&body_for(
            format!("image {i}").as_bytes(),
            &format!("1.{i}.1"),
            "https://images.example/fw.bin",
        ));
        std::fs::write(d.join("body.bin"), &body).unwrap();
        run_openssl(
            d,
            &[
                "dgst", "-sha256", "-sign", "ec.pem", "-out", "ec.sig", "body.bin",
            ],
        );
        run_openssl(
            d,
            &[
                "pkeyutl", "-sign", "-rawin", "-inkey", "ed.pem", "-in", "body.bin", "-out",
                "ed.sig",
            ],
        );
        let sig = |id: &str, alg, file: &str| ManifestSignature {
            key_id: id.into(),
            algorithm: alg,
            signature: std::fs::read(d.join(file)).unwrap().into(),
        };
        let raw = signed(
            body,
            vec![
                sig("ec", SignatureAlgorithm::EcdsaP256Sha256, "ec.sig"),
                sig("ed", SignatureAlgorithm::Ed25519, "ed.sig"),
            ],
        );
        let v = verify_manifest(&raw, &trust, &device(), 16 * 1024, Timestamp::now())
            .unwrap_or_else(|e| panic!("openssl-signed manifest {i} refused: {e}"));
        assert_eq!(v.signed_by.len(), 2);
    }
    // A SEC1 key (`openssl ecparam -genkey`) and PKCS#8 keys sign in Rust too.
    run_openssl(
        d,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "sec1.pem",
        ],
    );
    for f in ["sec1.pem", "ec.pem", "ed.pem"] {
        let k = SigningKey::from_pem(&std::fs::read_to_string(d.join(f)).unwrap())
            .unwrap_or_else(|e| panic!("{f}: {e}"));
        let b = b"some body";
        k.public().verify(b, &k.sign(b)).unwrap();
    }
}

#[test]
fn rust_signatures_verify_with_openssl() {
    let Some(_) = openssl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let body = protobuf::encode_manifest_body(&body_for(b"image", "2.0.0", "https://x/fw.bin"));
    std::fs::write(d.join("body.bin"), &body).unwrap();
    for i in 0..8 {
        let ec = SigningKey::generate(SignatureAlgorithm::EcdsaP256Sha256);
        std::fs::write(d.join("ec.pub"), ec.public().to_pem()).unwrap();
        std::fs::write(d.join("ec.sig"), ec.sign(&body)).unwrap();
        let out = run_openssl(
            d,
            &[
                "dgst",
                "-sha256",
                "-verify",
                "ec.pub",
                "-signature",
                "ec.sig",
                "body.bin",
            ],
        );
        assert!(out.contains("Verified OK"), "{i}: {out}");
        // The private key PEM is one openssl reads and signs with.
        std::fs::write(d.join("ec.pem"), ec.to_pem().as_bytes()).unwrap();
        run_openssl(
            d,
            &[
                "dgst", "-sha256", "-sign", "ec.pem", "-out", "ec2.sig", "body.bin",
            ],
        );
        ec.public()
            .verify(&body, &std::fs::read(d.join("ec2.sig")).unwrap())
            .unwrap();
    }
    let ed = SigningKey::generate(SignatureAlgorithm::Ed25519);
    std::fs::write(d.join("ed.pub"), ed.public().to_pem()).unwrap();
    std::fs::write(d.join("ed.sig"), ed.sign(&body)).unwrap();
    let out = run_openssl(
        d,
        &[
            "pkeyutl", "-verify", "-rawin", "-pubin", "-inkey", "ed.pub", "-in", "body.bin",
            "-sigfile", "ed.sig",
        ],
    );
    assert!(out.contains("Signature Verified Successfully"), "{out}");
    std::fs::write(d.join("ed.pem"), ed.to_pem().as_bytes()).unwrap();
    run_openssl(
        d,
        &[
            "pkeyutl", "-sign", "-rawin", "-inkey", "ed.pem", "-in", "body.bin", "-out", "ed2.sig",
        ],
    );
    ed.public()
        .verify(&body, &std::fs::read(d.join("ed2.sig")).unwrap())
        .unwrap();
    // A tampered body fails openssl's check as it fails ours.
    let mut bad = body.clone();
    bad[3] ^= 1;
    std::fs::write(d.join("bad.bin"), &bad).unwrap();
    let st = std::process::Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-verify",
            "ec.pub",
            "-signature",
            "ec.sig",
            "bad.bin",
        ])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(!st.status.success());
}

#[test]
fn every_manifest_attack_is_refused_with_its_own_reason() {
    let (k1, k2, trust) = keys();
    let now = Timestamp::now();
    let good = body_for(b"image bytes", "1.1.0", "https://x/fw.bin");
    assert!(check(&sign(&good, &[("k1", &k1)]), &trust).is_ok());

    let stranger = SigningKey::generate(SignatureAlgorithm::EcdsaP256Sha256);
    let b = protobuf::encode_manifest_body(&good);
    let mut cases: Vec<(&str, Vec<u8>, TrustStore, OtaReason)> = vec![
        (
            "wrong key",
            sign(&good, &[("k1", &stranger)]),
            trust.clone(),
            OtaReason::SignatureInvalid,
        ),
        (
            "unknown key id",
            sign(&good, &[("k9", &k1)]),
            trust.clone(),
            OtaReason::UnknownKey,
        ),
        (
            "revoked key",
            sign(&good, &[("k1", &k1)]),
            {
                let mut t = trust.clone();
                t.revoke("k1");
                t
            },
            OtaReason::KeyRevoked,
        ),
        (
            "expired key",
            sign(&good, &[("k1", &k1)]),
            trust.clone().with_key(
                "k1",
                TrustedKey {
                    not_after: Some(now.saturating_sub(Duration::from_secs(1))),
                    ..TrustedKey::new(k1.public())
                },
            ),
            OtaReason::KeyExpired,
        ),
        (
            "key not yet valid",
            sign(&good, &[("k1", &k1)]),
            trust.clone().with_key(
                "k1",
                TrustedKey {
                    not_before: Some(now.saturating_add(Duration::from_secs(3600))),
                    ..TrustedKey::new(k1.public())
                },
            ),
            OtaReason::KeyExpired,
        ),
        (
            "2 of 2 with one key",
            sign(&good, &[("k1", &k1)]),
            trust.clone().with_threshold(2),
            OtaReason::ThresholdNotMet,
        ),
        (
            "2 of 2, the same key twice",
            sign(&good, &[("k1", &k1), ("k1", &k1)]),
            trust.clone().with_threshold(2),
            OtaReason::ThresholdNotMet,
        ),
        (
            "2 for this device type",
            sign(&good, &[("k2", &k2)]),
            trust.clone().with_device_threshold(DEVICE_TYPE, 2),
            OtaReason::ThresholdNotMet,
        ),
        (
            "wrong algorithm label",
            signed(
                b.clone(),
                vec![ManifestSignature {
                    algorithm: SignatureAlgorithm::Ed25519,
                    ..k1.signature("k1", &b)
                }],
            ),
            trust.clone(),
            OtaReason::AlgorithmMismatch,
        ),
        (
            "truncated signature",
            signed(
                b.clone(),
                vec![{
                    let mut s = k1.signature("k1", &b);
                    s.signature = s.signature.slice(..s.signature.len() - 5);
                    s
                }],
            ),
            trust.clone(),
            OtaReason::SignatureMalformed,
        ),
        (
            "malformed ed25519 signature",
            signed(
                b.clone(),
                vec![{
                    let mut s = k2.signature("k2", &b);
                    s.signature = s.signature.slice(..63);
                    s
                }],
            ),
            trust.clone(),
            OtaReason::SignatureMalformed,
        ),
        (
            "garbage",
            b"\x0a\xff\xff\xff\xff\x0f".to_vec(),
            trust.clone(),
            OtaReason::ManifestMalformed,
        ),
        (
            "empty",
            Vec::new(),
            trust.clone(),
            OtaReason::ManifestMalformed,
        ),
        (
            "oversize",
            vec![0u8; 17 * 1024],
            trust.clone(),
            OtaReason::ManifestTooLarge,
        ),
        (
            "signed garbage body",
            {
                let junk = b"\xff\xff not a manifest body".to_vec();
                let s = k1.signature("k1", &junk);
                signed(junk, vec![s])
            },
            trust.clone(),
            OtaReason::ManifestMalformed,
        ),
    ];
    // A tampered byte anywhere in the signed body.
    for at in [0, b.len() / 2, b.len() - 1] {
        let mut raw = sign(&good, &[("k1", &k1)]);
        let pos = find(&raw, &b).unwrap() + at;
        raw[pos] ^= 0x01;
        cases.push((
            "tampered manifest byte",
            raw,
            trust.clone(),
            OtaReason::SignatureInvalid,
        ));
    }
    let with = |f: &dyn Fn(&mut iiot_core::types::ManifestBody)| {
        let mut m = good.clone();
        f(&mut m);
        sign(&m, &[("k1", &k1)])
    };
    cases.extend([
        (
            "wrong device type",
            with(&|m| m.device_type = "rtu".into()),
            trust.clone(),
            OtaReason::WrongDeviceType,
        ),
        (
            "hardware too old",
            with(&|m| m.min_hw_revision = 3),
            trust.clone(),
            OtaReason::HardwareTooOld,
        ),
        (
            "downgrade",
            with(&|m| m.version = semver::Version::new(0, 9, 0)),
            trust.clone(),
            OtaReason::Downgrade,
        ),
        (
            "same version",
            with(&|m| m.version = semver::Version::new(1, 0, 0)),
            trust.clone(),
            OtaReason::SameVersion,
        ),
        (
            "same version, other build metadata",
            with(&|m| m.version = semver::Version::parse("1.0.0+b7").unwrap()),
            trust.clone(),
            OtaReason::SameVersion,
        ),
        (
            "expired manifest",
            with(&|m| m.expires_at = now.saturating_sub(Duration::from_secs(1))),
            trust.clone(),
            OtaReason::ManifestExpired,
        ),
        (
            "not enough space",
            with(&|m| m.size = 2 << 20),
            trust.clone(),
            OtaReason::InsufficientSpace,
        ),
    ]);
    for (name, raw, t, want) in &cases {
        assert_eq!(reason(raw, t), *want, "{name}");
    }
    // Below the persisted minimum (newer than running, not newer than the minimum).
    let mut d = device();
    d.min_version = Some(semver::Version::new(1, 1, 0));
    let r = verify_manifest(&sign(&good, &[("k1", &k1)]), &trust, &d, 16 * 1024, now).unwrap_err();
    assert_eq!(r.reason, OtaReason::BelowMinimum);
    // A bad extra signature does not spoil a threshold the good ones meet.
    let raw = sign(&good, &[("k1", &k1), ("k9", &stranger), ("k2", &k2)]);
    assert!(check(&raw, &trust.clone().with_threshold(2)).is_ok());
    // Every manifest check has a reason of its own.
    let mut seen: Vec<_> = cases.iter().map(|c| c.3.as_str()).collect();
    seen.push(OtaReason::BelowMinimum.as_str());
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(
        seen,
        [
            "algorithm_mismatch",
            "below_minimum",
            "downgrade",
            "hardware_too_old",
            "insufficient_space",
            "key_expired",
            "key_revoked",
            "manifest_expired",
            "manifest_malformed",
            "manifest_too_large",
            "same_version",
            "signature_invalid",
            "signature_malformed",
            "threshold_not_met",
            "unknown_key",
            "wrong_device_type",
        ]
    );
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn trust_store_rotates_only_with_a_threshold_of_current_keys_and_a_higher_serial() {
    let (k1, k2, trust) = keys();
    let trust = trust.with_rotation_threshold(2);
    let now = Timestamp::now();
    let k3 = SigningKey::generate(SignatureAlgorithm::Ed25519);
    let mut next = TrustStore::new()
        .with_key("k2", TrustedKey::new(k2.public()))
        .with_key("k3", TrustedKey::new(k3.public()));
    next.serial = 1;
    let body = next.to_json();
    let update = |signers: &[(&str, &SigningKey)]| TrustUpdate {
        body: body.clone().into(),
        signatures: signers
            .iter()
            .map(|(id, k)| k.signature(*id, &body))
            .collect(),
    };
    // One current key is not enough; a new key cannot vouch for itself.
    assert_eq!(
        trust
            .rotate(&update(&[("k1", &k1)]), now)
            .unwrap_err()
            .reason,
        OtaReason::ThresholdNotMet
    );
    assert_eq!(
        trust
            .rotate(&update(&[("k1", &k1), ("k3", &k3)]), now)
            .unwrap_err()
            .reason,
        OtaReason::ThresholdNotMet
    );
    let rotated = trust
        .rotate(&update(&[("k1", &k1), ("k2", &k2)]), now)
        .unwrap();
    assert_eq!(rotated, next);
    assert!(rotated.key("k1").is_none());
    // Replaying the same (or an older) store is refused.
    let replay = rotated.clone().with_rotation_threshold(1);
    let again = TrustUpdate {
        body: body.clone().into(),
        signatures: vec![k2.signature("k2", &body)],
    };
    assert_eq!(
        replay.rotate(&again, now).unwrap_err().reason,
        OtaReason::Downgrade
    );
    // A tampered document is refused.
    let mut t = update(&[("k1", &k1), ("k2", &k2)]);
    let mut b = t.body.to_vec();
    let i = b.len() - 3;
    b[i] ^= 1;
    t.body = b.into();
    assert_eq!(
        trust.rotate(&t, now).unwrap_err().reason,
        OtaReason::SignatureInvalid
    );
    // The JSON form round-trips.
    assert_eq!(TrustStore::from_json(&trust.to_json()).unwrap(), trust);
}
