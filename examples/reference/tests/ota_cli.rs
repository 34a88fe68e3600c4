//! `iiot ota keygen | sign | attach | verify` against the real `openssl` CLI
//! (issue 17): "produce and check manifests whose signatures the `openssl`
//! commands accept, and accept theirs". Keys and signatures go both ways, k of n
//! mixes the algorithms, and every rejection names its reason. Skipped with a
//! printed reason when `openssl` is missing, unless `IIOT_REQUIRE_SERVICES=1`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{bin, services_required};

/// Whether `openssl` runs; prints why not (or panics under `IIOT_REQUIRE_SERVICES=1`).
fn openssl_available() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !services_required(),
            "openssl required (IIOT_REQUIRE_SERVICES=1) but it does not run"
        );
        eprintln!("skipping: the openssl command is not available");
    }
    ok
}

fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}

/// Runs `openssl` and requires success.
fn openssl(args: &[&str]) -> Output {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An `iiot` run: exit code and everything printed.
struct Run {
    code: Option<i32>,
    text: String,
}

impl Run {
    fn expect(self, code: i32) -> Self {
        assert_eq!(self.code, Some(code), "{}", self.text);
        assert!(!self.text.contains("panicked"), "{}", self.text);
        self
    }

    fn expect_rejected(self, reason: &str) -> Self {
        let r = self.expect(3);
        assert!(
            r.text.contains(&format!("rejected: {reason}: ")),
            "expected {reason}: {}",
            r.text
        );
        r
    }
}

fn iiot(args: &[&str]) -> Run {
    let out = bin().args(["ota"]).args(args).output().expect("run iiot");
    Run {
        code: out.status.code(),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// An image bigger than one read buffer, with a given byte pattern.
fn image(dir: &Path) -> PathBuf {
    let p = dir.join("fw.bin");
    let data: Vec<u8> = (0..300_007u32).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(&p, data).unwrap();
    p
}

fn sign_args<'a>(img: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "sign",
        "--image",
        s(img),
        "--version",
        "2.4.1",
        "--firmware-id",
        "pump-ctrl",
        "--device-type",
        "plc",
        "--min-hw",
        "2",
    ];
    v.extend_from_slice(extra);
    v
}

fn verify_args<'a>(manifest: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["verify", "--manifest", s(manifest), "--device-type", "plc"];
    v.extend_from_slice(extra);
    v
}

/// The `openssl` check of a signature over a body, per algorithm.
fn openssl_verifies(algorithm: &str, public: &Path, body: &Path, sig: &Path) {
    let out = if algorithm == "ed25519" {
        openssl(&[
            "pkeyutl",
            "-verify",
            "-rawin",
            "-pubin",
            "-inkey",
            s(public),
            "-in",
            s(body),
            "-sigfile",
            s(sig),
        ])
    } else {
        openssl(&[
            "dgst",
            "-sha256",
            "-verify",
            s(public),
            "-signature",
            s(sig),
            s(body),
        ])
    };
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Verified"),
        "{out:?}"
    );
}

/// Private key and public key by `openssl genpkey` / `openssl pkey -pubout`.
fn openssl_key(dir: &Path, name: &str, algorithm: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.key.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    if algorithm == "ed25519" {
        openssl(&["genpkey", "-algorithm", "ed25519", "-out", s(&key)]);
    } else {
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            s(&key),
        ]);
    }
    openssl(&["pkey", "-in", s(&key), "-pubout", "-out", s(&public)]);
    (key, public)
}

fn openssl_sign(algorithm: &str, key: &Path, body: &Path, sig: &Path) {
    if algorithm == "ed25519" {
        openssl(&[
            "pkeyutl",
            "-sign",
            "-rawin",
            "-inkey",
            s(key),
            "-in",
            s(body),
            "-out",
            s(sig),
        ]);
    } else {
        openssl(&["dgst", "-sha256", "-sign", s(key), "-out", s(sig), s(body)]);
    }
}

#[test]
fn keygen_keys_are_openssl_keys_and_iiot_signatures_verify_with_openssl() {
    if !openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    for algorithm in ["ecdsa-p256", "ed25519"] {
        let keys = dir.path().join(format!("keys-{algorithm}"));
        let out = iiot(&["keygen", "--algorithm", algorithm, "--out", s(&keys)]).expect(0);
        let id = out
            .text
            .lines()
            .find_map(|l| l.strip_prefix("id: "))
            .unwrap_or_else(|| panic!("no id: {}", out.text))
            .to_owned();
        assert_eq!(id.len(), 16, "the default id is the fingerprint: {id}");
        let key = keys.join(format!("{id}.key.pem"));
        let public = keys.join(format!("{id}.pub.pem"));
        assert!(out.text.contains(s(&key)) && out.text.contains(s(&public)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the private key is the owner's alone");
        }
        openssl(&["pkey", "-in", s(&key), "-noout"]);
        openssl(&["pkey", "-pubin", "-in", s(&public), "-noout"]);
        // The public key file is what openssl derives from the private one.
        let derived = openssl(&["pkey", "-in", s(&key), "-pubout"]).stdout;
        assert_eq!(derived, std::fs::read(&public).unwrap(), "{algorithm}");

        // Never overwritten, and nothing written on refusal.
        let again = iiot(&[
            "keygen",
            "--algorithm",
            algorithm,
            "--out",
            s(&keys),
            "--id",
            &id,
        ])
        .expect(2);
        assert!(again.text.contains("already exists"), "{}", again.text);
        openssl(&["pkey", "-in", s(&key), "-noout"]);

        // Signed by iiot, checked by openssl over the exact body bytes.
        let manifest = dir.path().join(format!("{algorithm}.manifest"));
        let body = dir.path().join(format!("{algorithm}.body"));
        iiot(&sign_args(
            &img,
            &[
                "--key",
                s(&key),
                "--out",
                s(&manifest),
                "--body-out",
                s(&body),
            ],
        ))
        .expect(0);
        let sigs = dir.path().join(format!("{algorithm}-sigs"));
        let body_again = dir.path().join(format!("{algorithm}.body2"));
        let v = iiot(&verify_args(
            &manifest,
            &[
                "--trust",
                s(&public),
                "--image",
                s(&img),
                "--signatures-out",
                s(&sigs),
                "--body-out",
                s(&body_again),
            ],
        ))
        .expect(0);
        assert!(v.text.contains("manifest: valid"), "{}", v.text);
        assert!(v.text.contains(&format!("signed_by: {id} ")), "{}", v.text);
        assert!(v.text.contains("size: 300007"), "{}", v.text);
        assert!(v.text.contains("image: valid"), "{}", v.text);
        assert_eq!(
            std::fs::read(&body).unwrap(),
            std::fs::read(&body_again).unwrap()
        );
        openssl_verifies(algorithm, &public, &body, &sigs.join(format!("1-{id}.sig")));
        // And the hash in the body is openssl's hash of the image.
        let dgst = openssl(&["dgst", "-sha256", "-r", s(&img)]).stdout;
        let hex = String::from_utf8_lossy(&dgst);
        let hex = hex.split_whitespace().next().unwrap();
        assert!(v.text.contains(&format!("sha256: {hex}")), "{}", v.text);
    }
}

#[test]
fn openssl_keys_and_openssl_signatures_are_accepted_two_of_two() {
    if !openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img = image(d);
    let (p256_key, p256_pub) = openssl_key(d, "p256", "ecdsa-p256");
    let (ed_key, ed_pub) = openssl_key(d, "ed", "ed25519");
    let trust_both = [
        "--trust",
        s(&p256_pub),
        "--trust-id",
        "release-p256",
        "--trust",
        s(&ed_pub),
        "--trust-id",
        "release-ed",
        "--threshold",
        "2",
    ];

    // openssl's keys given to iiot.
    let signed = d.join("signed.manifest");
    iiot(&sign_args(
        &img,
        &[
            "--key",
            s(&p256_key),
            "--key-id",
            "release-p256",
            "--key",
            s(&ed_key),
            "--key-id",
            "release-ed",
            "--out",
            s(&signed),
        ],
    ))
    .expect(0);
    let mut args = trust_both.to_vec();
    args.extend([
        "--image",
        s(&img),
        "--running",
        "2.4.0",
        "--hw-revision",
        "3",
    ]);
    let v = iiot(&verify_args(&signed, &args)).expect(0);
    assert!(
        v.text
            .contains("signed_by: release-ed, release-p256 (2 of threshold 2)"),
        "{}",
        v.text
    );

    // The release pipeline: the body from iiot, the signatures from openssl, the
    // manifest from iiot attach; iiot never sees a private key.
    let body = d.join("body.bin");
    let only_body = iiot(&sign_args(&img, &["--body-out", s(&body)])).expect(0);
    assert!(!only_body.text.contains("manifest:"), "{}", only_body.text);
    let (p256_sig, ed_sig) = (d.join("p256.sig"), d.join("ed.sig"));
    openssl_sign("ecdsa-p256", &p256_key, &body, &p256_sig);
    openssl_sign("ed25519", &ed_key, &body, &ed_sig);
    let attached = d.join("attached.manifest");
    let p256_spec = format!("pub={},sig={},id=release-p256", s(&p256_pub), s(&p256_sig));
    let ed_spec = format!("pub={},sig={},id=release-ed", s(&ed_pub), s(&ed_sig));
    iiot(&[
        "attach",
        "--body",
        s(&body),
        "--signature",
        &p256_spec,
        "--signature",
        &ed_spec,
        "--out",
        s(&attached),
    ])
    .expect(0);
    let mut args = trust_both.to_vec();
    args.extend(["--image", s(&img)]);
    let v = iiot(&verify_args(&attached, &args)).expect(0);
    assert!(v.text.contains("(2 of threshold 2)"), "{}", v.text);
    assert!(v.text.contains("image: valid"), "{}", v.text);

    // Default ids: the fingerprints, the same on both sides.
    let by_fp = d.join("fp.manifest");
    let p256_fp = format!("pub={},sig={}", s(&p256_pub), s(&p256_sig));
    iiot(&[
        "attach",
        "--body",
        s(&body),
        "--signature",
        &p256_fp,
        "--out",
        s(&by_fp),
    ])
    .expect(0);
    iiot(&verify_args(&by_fp, &["--trust", s(&p256_pub)])).expect(0);

    // A signature attached to the wrong key, or over another body, stops attach.
    let swapped = format!("pub={},sig={}", s(&p256_pub), s(&ed_sig));
    iiot(&[
        "attach",
        "--body",
        s(&body),
        "--signature",
        &swapped,
        "--out",
        s(&d.join("x")),
    ])
    .expect_rejected("signature_malformed");
    let other_body = d.join("other.bin");
    iiot(&sign_args(&img, &["--body-out", s(&other_body)])).expect(0);
    let r = iiot(&[
        "attach",
        "--body",
        s(&other_body),
        "--signature",
        &p256_spec,
        "--out",
        s(&d.join("x")),
    ])
    .expect_rejected("signature_invalid");
    assert!(!d.join("x").exists(), "nothing written: {}", r.text);
}

#[test]
fn rejections_name_their_reason_and_file_errors_exit_2() {
    if !openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img = image(d);
    let (key, public) = openssl_key(d, "signer", "ecdsa-p256");
    let (_, other_pub) = openssl_key(d, "other", "ed25519");
    let (_, other_p256) = openssl_key(d, "other-p256", "ecdsa-p256");
    let manifest = d.join("m");
    iiot(&sign_args(
        &img,
        &[
            "--key",
            s(&key),
            "--key-id",
            "release-1",
            "--out",
            s(&manifest),
        ],
    ))
    .expect(0);
    let ok = ["--trust", s(&public), "--trust-id", "release-1"];
    iiot(&verify_args(&manifest, &ok)).expect(0);

    // Another key: unknown under its own id, invalid under the signer's id.
    let r =
        iiot(&verify_args(&manifest, &["--trust", s(&other_pub)])).expect_rejected("unknown_key");
    assert!(r.text.contains("signatures in the manifest: release-1"));
    iiot(&verify_args(
        &manifest,
        &["--trust", s(&other_p256), "--trust-id", "release-1"],
    ))
    .expect_rejected("signature_invalid");
    iiot(&verify_args(
        &manifest,
        &["--trust", s(&other_pub), "--trust-id", "release-1"],
    ))
    .expect_rejected("algorithm_mismatch");

    // Two required, one signed.
    iiot(&verify_args(
        &manifest,
        &[
            "--trust",
            s(&public),
            "--trust-id",
            "release-1",
            "--trust",
            s(&other_pub),
            "--trust-id",
            "release-2",
            "--threshold",
            "2",
        ],
    ))
    .expect_rejected("threshold_not_met");

    // The image with one byte flipped; one byte short.
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[150_000] ^= 0x01;
    let flipped = d.join("flipped.bin");
    std::fs::write(&flipped, &bytes).unwrap();
    let mut args = ok.to_vec();
    args.extend(["--image", s(&flipped)]);
    let r = iiot(&verify_args(&manifest, &args)).expect_rejected("hash_mismatch");
    assert!(r.text.contains("manifest: valid"), "{}", r.text);
    bytes.pop();
    let short = d.join("short.bin");
    std::fs::write(&short, &bytes).unwrap();
    let mut args = ok.to_vec();
    args.extend(["--image", s(&short)]);
    iiot(&verify_args(&manifest, &args)).expect_rejected("image_too_short");

    // Device facts.
    let with = |extra: &[&'static str]| {
        let mut a = ok.to_vec();
        a.extend_from_slice(extra);
        iiot(&verify_args(&manifest, &a))
    };
    with(&["--running", "2.4.1"]).expect_rejected("same_version");
    with(&["--running", "3.0.0"]).expect_rejected("downgrade");
    with(&["--min-version", "2.4.1"]).expect_rejected("below_minimum");
    with(&["--hw-revision", "1"]).expect_rejected("hardware_too_old");
    let mut a = vec!["verify", "--manifest", s(&manifest), "--device-type", "hmi"];
    a.extend_from_slice(&ok);
    iiot(&a).expect_rejected("wrong_device_type");

    // A tampered manifest.
    let mut raw = std::fs::read(&manifest).unwrap();
    let at = raw.len() / 3;
    raw[at] ^= 0x40;
    let tampered = d.join("tampered");
    std::fs::write(&tampered, &raw).unwrap();
    let r = iiot(&verify_args(&tampered, &ok)).expect(3);
    assert!(r.text.contains("rejected: "), "{}", r.text);

    // Usage and file errors: exit 2 with the file named, never a panic.
    let missing = d.join("missing.pem");
    let r = iiot(&sign_args(
        &img,
        &["--key", s(&missing), "--out", s(&d.join("n"))],
    ))
    .expect(2);
    assert!(
        r.text.contains("cannot read private key") && r.text.contains(s(&missing)),
        "{}",
        r.text
    );
    let r = iiot(&sign_args(
        &img,
        &["--key", s(&public), "--out", s(&d.join("n"))],
    ))
    .expect(2);
    assert!(r.text.contains("holds a public key"), "{}", r.text);
    let r = iiot(&verify_args(&manifest, &["--trust", s(&key)])).expect(2);
    assert!(r.text.contains("holds a private key"), "{}", r.text);
    let r = iiot(&verify_args(&manifest, &["--trust", s(&img)])).expect(2);
    assert!(r.text.contains(s(&img)), "{}", r.text);
    let r = iiot(&sign_args(
        &d.join("no-image"),
        &["--key", s(&key), "--out", s(&d.join("n"))],
    ))
    .expect(2);
    assert!(r.text.contains("cannot read image"), "{}", r.text);
    iiot(&verify_args(&d.join("no-manifest"), &ok)).expect(2);
    // --device-type is required, never taken from the manifest.
    iiot(&["verify", "--manifest", s(&manifest), "--trust", s(&public)]).expect(2);
    iiot(&verify_args(
        &manifest,
        &["--trust", s(&public), "--threshold", "2"],
    ))
    .expect(2);
    iiot(&sign_args(&img, &["--key", s(&key)])).expect(2);
    let r = iiot(&sign_args(
        &img,
        &["--key", s(&key), "--key", s(&key), "--out", s(&d.join("n"))],
    ))
    .expect(2);
    assert!(r.text.contains("same key"), "{}", r.text);
    assert!(!d.join("n").exists());
}
