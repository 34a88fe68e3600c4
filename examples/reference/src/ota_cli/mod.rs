//! `iiot ota keygen | sign | attach | verify`: release tooling for firmware
//! manifests (issue 17), interchangeable with `openssl` at every step.
//!
//! | command | what |
//! |---|---|
//! | `keygen` | a P-256 or Ed25519 key pair as PKCS#8 / SubjectPublicKeyInfo PEM, the files `openssl` writes and reads |
//! | `sign` | streams the image through SHA-256, builds and encodes the `ManifestBody`, signs it with every `--key`; `--body-out` writes the exact body bytes |
//! | `attach` | a signed manifest from a body and signatures made elsewhere (`openssl`, an HSM), each checked against its public key first |
//! | `verify` | [`verify_manifest`] with the trust keys and device facts given, then the image's size and SHA-256 |
//!
//! Signatures are what `openssl` makes over the body bytes: `openssl dgst -sha256
//! -sign key.pem -out sig body.bin` (ECDSA P-256, DER) and `openssl pkeyutl -sign
//! -rawin -inkey key.pem -in body.bin -out sig` (Ed25519), checked with `openssl dgst
//! -sha256 -verify pub.pem -signature sig body.bin` and `openssl pkeyutl -verify
//! -rawin -pubin -inkey pub.pem -in body.bin -sigfile sig`.
//!
//! ## Signing without giving the private key to iiot
//!
//! ```text
//! iiot ota sign --image fw.bin --version 2.4.1 --firmware-id pump-ctrl \
//!     --device-type plc --body-out body.bin             # no --key: the body only
//! openssl dgst -sha256 -sign p256.key.pem -out p256.sig body.bin
//! openssl pkeyutl -sign -rawin -inkey ed.key.pem -in body.bin -out ed.sig
//! iiot ota attach --body body.bin \
//!     --signature pub=p256.pub.pem,sig=p256.sig,id=release-1 \
//!     --signature pub=ed.pub.pem,sig=ed.sig --out manifest.bin
//! iiot ota verify --manifest manifest.bin --trust p256.pub.pem --trust-id release-1 \
//!     --trust ed.pub.pem --threshold 2 --device-type plc --image fw.bin
//! ```
//!
//! `attach` is its own subcommand rather than a mode of `sign`: `sign` makes a
//! body (image, version, device type, a publication time), `attach` must not
//! make one. It takes the body file byte for byte, because any rebuilt body (a
//! new `published_at` alone) would invalidate the signatures made over the old
//! one. Two modes of one command would have half the flags required in one mode
//! and meaningless in the other. Each `--signature` names its public key rather
//! than an algorithm label: the algorithm and the default key id (the key's
//! fingerprint, as `keygen` names it) come from the key, and every signature is
//! verified over the body before the manifest is written, so a signature file
//! swapped with another, or one made over another body, stops the pipeline
//! there instead of on the devices.
//!
//! ## Exit codes
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done; `verify`: the manifest (and `--image`) is valid |
//! | 2 | bad arguments or a file problem: missing, unreadable, not the PEM expected, an existing key file |
//! | 3 | rejected: the [`OtaReason`] name and detail are printed (`verify`; `attach` for a signature that does not verify) |

mod args;
mod files;
mod keys;

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use iiot_core::codec::{Limits, protobuf};
use iiot_core::types::{
    ManifestBody, ManifestSignature, OtaReason, SignatureAlgorithm, SignedManifest, Timestamp,
};
use iiot_edge::ota::{
    DEFAULT_MAX_MANIFEST_BYTES, DeviceFacts, KeyError, PublicKey, Rejection, SigningKey,
    TrustStore, TrustedKey, verify_manifest,
};

pub use args::{
    Algorithm, AttachArgs, Expiry, KeygenArgs, OtaCli, SignArgs, SignatureSpec, SigningKeys,
    VerifyArgs,
};
use files::{create_new, hash_file, is_file_name, read_limited, write_atomic, write_signatures};
use keys::{distinct, load_public_key, load_signing_keys};

/// Largest signature file read (DER P-256 is at most 72 bytes, Ed25519 64).
const MAX_SIGNATURE_FILE_BYTES: u64 = 4096;

/// Why an `iiot ota` command stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtaCliError {
    /// Bad arguments (naming the flag).
    #[error("{0}")]
    Usage(String),
    /// A file could not be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        /// What the file is (key, image, manifest, ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file is larger than anything of its kind.
    #[error("{} is too large for a {what} (more than {limit} bytes)", path.display())]
    TooLarge {
        /// What the file should be.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The largest accepted.
        limit: u64,
    },
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `keygen` found a file where it would write a key.
    #[error("{} already exists; keygen never overwrites a key (pick another --id or --out)", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A PEM of the wrong kind (a public key where a private one is needed, ...).
    #[error("{} holds {found}; {wanted}", path.display())]
    WrongPem {
        /// The file.
        path: PathBuf,
        /// What it holds.
        found: &'static str,
        /// What the flag needs.
        wanted: &'static str,
    },
    /// A key that could not be parsed.
    #[error("{}: {source}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: KeyError,
    },
    /// The manifest, a signature or the image was refused.
    #[error("rejected: {}: {}", .0.reason.as_str(), .0.detail)]
    Rejected(Rejection),
}

impl OtaCliError {
    /// The process exit code: 3 for a rejection, 2 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Rejected(_) => 3,
            _ => 2,
        }
    }

    fn rejected(reason: OtaReason, detail: impl Into<String>) -> Self {
        Self::Rejected(Rejection::new(reason, detail))
    }
}

/// Runs an `iiot ota` command and returns its exit code. A rejection is printed
/// on stdout (it is the command's answer), other errors on stderr.
pub fn run(cli: &OtaCli) -> u8 {
    let result = match cli {
        OtaCli::Keygen(a) => keygen(a),
        OtaCli::Sign(a) => sign(a),
        OtaCli::Attach(a) => attach(a),
        OtaCli::Verify(a) => verify(a),
    };
    match result {
        Ok(()) => 0,
        Err(e @ OtaCliError::Rejected(_)) => {
            println!("{e}");
            e.exit_code()
        }
        Err(e) => {
            // Every message already ends with its cause.
            eprintln!("iiot: {e}");
            e.exit_code()
        }
    }
}

/// `iiot ota keygen`: writes `DIR/<id>.key.pem` (mode 0600) and `DIR/<id>.pub.pem`.
///
/// # Errors
/// [`OtaCliError::Exists`] when either file exists, [`OtaCliError::Usage`] for an
/// id that is not a plain file name, [`OtaCliError::Write`].
pub fn keygen(args: &KeygenArgs) -> Result<(), OtaCliError> {
    let key = SigningKey::generate(args.algorithm.into());
    let public = key.public();
    let id = args.id.clone().unwrap_or_else(|| public.fingerprint());
    if !is_file_name(&id) {
        return Err(OtaCliError::Usage(format!(
            "--id {id:?}: a key id here is also a file name: letters, digits, '.', '_', '-', not starting with '.'"
        )));
    }
    fs::create_dir_all(&args.out).map_err(|source| OtaCliError::Write {
        path: args.out.clone(),
        source,
    })?;
    let key_path = args.out.join(format!("{id}.key.pem"));
    let pub_path = args.out.join(format!("{id}.pub.pem"));
    for p in [&key_path, &pub_path] {
        if p.symlink_metadata().is_ok() {
            return Err(OtaCliError::Exists { path: p.clone() });
        }
    }
    create_new(&key_path, key.to_pem().as_bytes(), true)?;
    if let Err(e) = create_new(&pub_path, public.to_pem().as_bytes(), false) {
        // Ours, just made: leave no private key without its public half.
        let _ = fs::remove_file(&key_path);
        return Err(e);
    }
    println!("id: {id}");
    println!("algorithm: {}", algorithm_name(public.algorithm()));
    println!("private key: {}", key_path.display());
    println!("public key: {}", pub_path.display());
    Ok(())
}

/// `iiot ota sign`.
///
/// # Errors
/// [`OtaCliError`]: unreadable keys or image, bad arguments, a manifest a device
/// could not read (too large, a field too long), a file that cannot be written.
pub fn sign(args: &SignArgs) -> Result<(), OtaCliError> {
    let keys = load_signing_keys(&args.keys)?;
    match (keys.is_empty(), &args.out, &args.body_out) {
        (true, Some(_), _) => {
            return Err(OtaCliError::Usage(
                "--out needs at least one --key; to sign with openssl instead, write \
                 --body-out, sign that file, then `iiot ota attach`"
                    .into(),
            ));
        }
        (true, None, None) => {
            return Err(OtaCliError::Usage(
                "give --key and --out (a signed manifest), or --body-out alone (the body for openssl)"
                    .into(),
            ));
        }
        (false, None, _) => {
            return Err(OtaCliError::Usage(
                "--out MANIFEST is required with --key".into(),
            ));
        }
        _ => {}
    }
    for (flag, v) in [
        ("--firmware-id", &args.firmware_id),
        ("--device-type", &args.device_type),
    ] {
        if v.is_empty() {
            return Err(OtaCliError::Usage(format!("{flag} must not be empty")));
        }
    }
    let published_at = Timestamp::now();
    let expires_at = match args.expires {
        Expiry::After(d) => published_at.saturating_add(d),
        Expiry::At(t) => t,
    };
    if expires_at <= published_at {
        return Err(OtaCliError::Usage(format!(
            "--expires: {expires_at} is not in the future; every device would refuse the manifest"
        )));
    }
    let (size, sha256) = hash_file(&args.image)?;
    let url = match &args.url {
        Some(u) => u.clone(),
        None => {
            let abs = fs::canonicalize(&args.image).map_err(|source| OtaCliError::Read {
                what: "image",
                path: args.image.clone(),
                source,
            })?;
            format!("file://{}", abs.display())
        }
    };
    let body = ManifestBody {
        firmware_id: args.firmware_id.clone(),
        version: args.version.clone(),
        device_type: args.device_type.clone(),
        min_hw_revision: args.min_hw,
        size,
        sha256,
        published_at,
        expires_at,
        url,
    };
    let bytes = protobuf::encode_manifest_body(&body);
    // What a device will decode; refuse to write what it could not.
    protobuf::decode_manifest_body(&bytes, &manifest_limits())
        .map_err(|e| OtaCliError::Usage(format!("a device could not read this manifest: {e}")))?;
    if let Some(p) = &args.body_out {
        write_atomic(p, &bytes)?;
    }
    print_body(&body);
    if let Some(b) = &args.body_out {
        println!("body: {} ({} bytes)", b.display(), bytes.len());
    }
    if let Some(out) = &args.out {
        let signatures: Vec<_> = keys.iter().map(|(id, k)| k.signature(id, &bytes)).collect();
        let manifest = assemble(bytes, signatures)?;
        write_atomic(out, &manifest)?;
        print_signers(
            keys.iter()
                .map(|(id, k)| (id.as_str(), k.public().algorithm())),
        );
        println!("manifest: {} ({} bytes)", out.display(), manifest.len());
    }
    Ok(())
}

/// `iiot ota attach`.
///
/// # Errors
/// [`OtaCliError::Rejected`] when the body is not a manifest body or a signature
/// does not verify with its key; file and argument errors otherwise.
pub fn attach(args: &AttachArgs) -> Result<(), OtaCliError> {
    let keys = load_signing_keys(&args.keys)?;
    if args.signatures.is_empty() && keys.is_empty() {
        return Err(OtaCliError::Usage(
            "give at least one --signature pub=PUB.pem,sig=SIG (or --key)".into(),
        ));
    }
    let body = read_limited(
        &args.body,
        "manifest body",
        DEFAULT_MAX_MANIFEST_BYTES as u64,
    )?;
    let decoded = protobuf::decode_manifest_body(&body, &manifest_limits()).map_err(|e| {
        OtaCliError::rejected(
            OtaReason::ManifestMalformed,
            format!("{} is not a manifest body: {e}", args.body.display()),
        )
    })?;
    let mut signatures = Vec::new();
    let mut seen: Vec<(String, PublicKey)> = Vec::new();
    for spec in &args.signatures {
        let key = load_public_key(&spec.public_key)?;
        let id = spec.id.clone().unwrap_or_else(|| key.fingerprint());
        let sig = read_limited(&spec.signature, "signature", MAX_SIGNATURE_FILE_BYTES)?;
        key.verify(&body, &sig).map_err(|reason| {
            OtaCliError::rejected(
                reason,
                format!(
                    "signature {} (key {id:?}, {}) does not verify over {}",
                    spec.signature.display(),
                    spec.public_key.display(),
                    args.body.display()
                ),
            )
        })?;
        distinct(&mut seen, &id, &key, "--signature")?;
        signatures.push(ManifestSignature {
            key_id: id,
            algorithm: key.algorithm(),
            signature: sig.into(),
        });
    }
    for (id, k) in &keys {
        distinct(&mut seen, id, &k.public(), "--key")?;
        signatures.push(k.signature(id.as_str(), &body));
    }
    let signers: Vec<_> = signatures
        .iter()
        .map(|s| (s.key_id.clone(), s.algorithm))
        .collect();
    let manifest = assemble(body, signatures)?;
    write_atomic(&args.out, &manifest)?;
    print_body(&decoded);
    print_signers(signers.iter().map(|(id, a)| (id.as_str(), *a)));
    println!(
        "manifest: {} ({} bytes)",
        args.out.display(),
        manifest.len()
    );
    Ok(())
}

/// `iiot ota verify`.
///
/// # Errors
/// [`OtaCliError::Rejected`] when the manifest or image is refused; file and
/// argument errors otherwise.
pub fn verify(args: &VerifyArgs) -> Result<(), OtaCliError> {
    if !args.trust_ids.is_empty() && args.trust_ids.len() != args.trust.len() {
        return Err(OtaCliError::Usage(format!(
            "{} --trust-id for {} --trust: give one per --trust, in the same order, or none",
            args.trust_ids.len(),
            args.trust.len()
        )));
    }
    let mut store = TrustStore::new().with_threshold(args.threshold);
    let mut seen: Vec<(String, PublicKey)> = Vec::new();
    for (i, path) in args.trust.iter().enumerate() {
        let key = load_public_key(path)?;
        let id = args
            .trust_ids
            .get(i)
            .cloned()
            .unwrap_or_else(|| key.fingerprint());
        distinct(&mut seen, &id, &key, "--trust")?;
        store = store.with_key(id, TrustedKey::new(key));
    }
    if args.threshold as usize > seen.len() {
        return Err(OtaCliError::Usage(format!(
            "--threshold {} with {} trusted key(s) can never be met",
            args.threshold,
            seen.len()
        )));
    }
    let max = DEFAULT_MAX_MANIFEST_BYTES as u64;
    let raw = match read_limited(&args.manifest, "manifest", max) {
        Err(OtaCliError::TooLarge { path, .. }) => {
            return Err(OtaCliError::rejected(
                OtaReason::ManifestTooLarge,
                format!("{} is larger than {max} bytes", path.display()),
            ));
        }
        r => r?,
    };
    // The envelope alone, for the files and the list of signatures; the verdict
    // is verify_manifest's, which decodes it again in its own order.
    let envelope = protobuf::decode_signed_manifest(&raw, &manifest_limits()).ok();
    if let Some(env) = &envelope {
        if let Some(p) = &args.body_out {
            write_atomic(p, &env.body)?;
        }
        if let Some(dir) = &args.signatures_out {
            write_signatures(dir, &env.signatures)?;
        }
    }
    let device = DeviceFacts {
        device_type: args.device_type.clone(),
        hw_revision: args.hw_revision.unwrap_or(u32::MAX),
        running: args.running.clone().unwrap_or_else(lowest_version),
        min_version: args.min_version.clone(),
        free_space: u64::MAX,
    };
    println!(
        "device: type {:?}, hardware revision {}, running {}{}",
        device.device_type,
        args.hw_revision
            .map_or_else(|| "not checked".to_owned(), |n| n.to_string()),
        args.running
            .as_ref()
            .map_or_else(|| "not checked".to_owned(), ToString::to_string),
        args.min_version
            .as_ref()
            .map_or_else(String::new, |v| format!(", minimum {v}")),
    );
    let verified = match verify_manifest(
        &raw,
        &store,
        &device,
        DEFAULT_MAX_MANIFEST_BYTES,
        Timestamp::now(),
    ) {
        Ok(v) => v,
        Err(rejection) => {
            if let Some(env) = &envelope {
                let list: Vec<_> = env
                    .signatures
                    .iter()
                    .map(|s| format!("{} ({})", s.key_id, algorithm_name(s.algorithm)))
                    .collect();
                println!("signatures in the manifest: {}", list.join(", "));
            }
            let trusted: Vec<_> = seen
                .iter()
                .map(|(id, k)| format!("{id} ({})", algorithm_name(k.algorithm())))
                .collect();
            println!("trusted keys: {}", trusted.join(", "));
            return Err(OtaCliError::Rejected(rejection));
        }
    };
    println!("manifest: valid");
    print_body(&verified.body);
    println!(
        "signed_by: {} ({} of threshold {})",
        verified
            .signed_by
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        verified.signed_by.len(),
        args.threshold
    );
    if let Some(image) = &args.image {
        check_image(image, &verified.body)?;
    }
    Ok(())
}

fn check_image(path: &Path, body: &ManifestBody) -> Result<(), OtaCliError> {
    let (size, sha256) = hash_file(path)?;
    let shown = path.display();
    if size > body.size {
        return Err(OtaCliError::rejected(
            OtaReason::ImageTooLong,
            format!("{shown} has {size} bytes, the manifest says {}", body.size),
        ));
    }
    if size < body.size {
        return Err(OtaCliError::rejected(
            OtaReason::ImageTooShort,
            format!("{shown} has {size} bytes, the manifest says {}", body.size),
        ));
    }
    if sha256 != body.sha256 {
        return Err(OtaCliError::rejected(
            OtaReason::HashMismatch,
            format!(
                "{shown} has SHA-256 {}, the manifest says {}",
                hex(&sha256),
                hex(&body.sha256)
            ),
        ));
    }
    println!("image: valid ({size} bytes, sha256 matches)");
    Ok(())
}

/// The lowest semantic version there is (`0.0.0-0`): "running not checked".
fn lowest_version() -> semver::Version {
    semver::Version {
        pre: semver::Prerelease::new("0").unwrap_or(semver::Prerelease::EMPTY),
        ..semver::Version::new(0, 0, 0)
    }
}

fn manifest_limits() -> Limits {
    Limits {
        max_payload_bytes: DEFAULT_MAX_MANIFEST_BYTES,
        ..Limits::default()
    }
}

/// Encodes the signed manifest and decodes it back as a device would: never
/// writes one a device could not read.
fn assemble(body: Vec<u8>, signatures: Vec<ManifestSignature>) -> Result<Vec<u8>, OtaCliError> {
    let manifest = protobuf::encode_signed_manifest(&SignedManifest {
        body: body.into(),
        signatures,
    });
    if manifest.len() > DEFAULT_MAX_MANIFEST_BYTES {
        return Err(OtaCliError::Usage(format!(
            "the signed manifest has {} bytes; devices read at most {DEFAULT_MAX_MANIFEST_BYTES}",
            manifest.len()
        )));
    }
    protobuf::decode_signed_manifest(&manifest, &manifest_limits())
        .map_err(|e| OtaCliError::Usage(format!("a device could not read this manifest: {e}")))?;
    Ok(manifest)
}

fn print_body(b: &ManifestBody) {
    println!("firmware_id: {}", b.firmware_id);
    println!("version: {}", b.version);
    println!("device_type: {}", b.device_type);
    println!("min_hw_revision: {}", b.min_hw_revision);
    println!("size: {}", b.size);
    println!("sha256: {}", hex(&b.sha256));
    println!("url: {}", b.url);
    println!("published_at: {}", b.published_at);
    println!("expires_at: {}", b.expires_at);
}

fn print_signers<'a>(signers: impl Iterator<Item = (&'a str, SignatureAlgorithm)>) {
    let list: Vec<_> = signers
        .map(|(id, a)| format!("{id} ({})", algorithm_name(a)))
        .collect();
    println!("signed_by: {}", list.join(", "));
}

fn algorithm_name(a: SignatureAlgorithm) -> &'static str {
    match a {
        SignatureAlgorithm::Ed25519 => "ed25519",
        _ => "ecdsa-p256",
    }
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_version_is_below_every_other() {
        let low = lowest_version();
        for v in ["0.0.0-alpha", "0.0.0-0.1", "0.0.0", "0.0.1"] {
            let v = semver::Version::parse(v).unwrap();
            assert_eq!(low.cmp_precedence(&v), std::cmp::Ordering::Less, "{v}");
        }
    }
}
