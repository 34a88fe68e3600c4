//! The command line of `iiot ota`: subcommands, their flags, and the parsers of
//! flag values.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use iiot_core::types::{SignatureAlgorithm, Timestamp};

/// `iiot ota ...`.
#[derive(Debug, Subcommand)]
pub enum OtaCli {
    /// Generates a signing key pair: DIR/<id>.key.pem (PKCS#8, mode 0600) and
    /// DIR/<id>.pub.pem (SubjectPublicKeyInfo); never overwrites.
    Keygen(KeygenArgs),
    /// Builds the manifest of an image and signs it with every --key; without
    /// --key writes only --body-out, for openssl to sign and `iiot ota attach`.
    Sign(SignArgs),
    /// Assembles a signed manifest from a body (`sign --body-out`) and signatures
    /// made over it elsewhere (openssl), each verified with its public key first.
    Attach(AttachArgs),
    /// Verifies a signed manifest as a device of --device-type would, and with
    /// --image the image's size and SHA-256. Exit 0 valid, 3 rejected.
    Verify(VerifyArgs),
}

/// A signature algorithm on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Algorithm {
    /// ECDSA P-256 over SHA-256 (`openssl genpkey -algorithm EC -pkeyopt
    /// ec_paramgen_curve:P-256`).
    EcdsaP256,
    /// Ed25519 (`openssl genpkey -algorithm ed25519`).
    Ed25519,
}

impl From<Algorithm> for SignatureAlgorithm {
    fn from(a: Algorithm) -> Self {
        match a {
            Algorithm::EcdsaP256 => Self::EcdsaP256Sha256,
            Algorithm::Ed25519 => Self::Ed25519,
        }
    }
}

/// Arguments of `iiot ota keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// The key's algorithm.
    #[arg(long, value_enum)]
    pub algorithm: Algorithm,
    /// The directory the two files go to (created when missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The key id, also the files' name (default: the public key's fingerprint,
    /// the id `sign` and `verify` give a key without --key-id / --trust-id).
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
}

/// Private keys to sign with (`sign`, `attach`).
#[derive(Debug, Args)]
pub struct SigningKeys {
    /// A private key PEM to sign with: PKCS#8 (`openssl genpkey`, `iiot ota
    /// keygen`) or SEC1 for P-256. Repeat for k-of-n.
    #[arg(long = "key", value_name = "KEY.pem")]
    pub keys: Vec<PathBuf>,
    /// The key id of each --key, in the same order (default: the fingerprint of
    /// its public key). Give one per --key or none.
    #[arg(long = "key-id", value_name = "ID")]
    pub key_ids: Vec<String>,
}

/// Arguments of `iiot ota sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The keys to sign with (none: write only --body-out).
    #[command(flatten)]
    pub keys: SigningKeys,
    /// The firmware image (streamed, never read into memory whole).
    #[arg(long, value_name = "FILE")]
    pub image: PathBuf,
    /// The image's semantic version, e.g. 2.4.1.
    #[arg(long, value_parser = semver::Version::parse)]
    pub version: semver::Version,
    /// The image's identifier.
    #[arg(long, value_name = "ID")]
    pub firmware_id: String,
    /// The device type it is built for (devices of another type refuse it).
    #[arg(long, value_name = "TYPE")]
    pub device_type: String,
    /// The lowest hardware revision it supports.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub min_hw: u32,
    /// Where devices fetch it (default: file:// and the image's absolute path).
    #[arg(long)]
    pub url: Option<String>,
    /// When the manifest expires: a duration from now (30d, 12h) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN", default_value = "30d", value_parser = parse_expiry)]
    pub expires: Expiry,
    /// The signed manifest to write (needs at least one --key).
    #[arg(long, value_name = "MANIFEST")]
    pub out: Option<PathBuf>,
    /// Also write the exact body bytes the signatures cover (for openssl).
    #[arg(long, value_name = "BODY.bin")]
    pub body_out: Option<PathBuf>,
}

/// Arguments of `iiot ota attach`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The body, byte for byte as signed (from `iiot ota sign --body-out`).
    #[arg(long, value_name = "BODY.bin")]
    pub body: PathBuf,
    /// A signature made over the body: `pub=PUB.pem,sig=SIG[,id=ID]`. The public
    /// key gives the algorithm and the default id (its fingerprint); the signature
    /// is DER for P-256 (`openssl dgst -sha256 -sign`), 64 bytes for Ed25519
    /// (`openssl pkeyutl -sign -rawin`). Repeat for k-of-n.
    #[arg(
        long = "signature",
        value_name = "pub=PUB.pem,sig=SIG[,id=ID]",
        value_parser = parse_signature_spec
    )]
    pub signatures: Vec<SignatureSpec>,
    /// Keys to sign with here as well (beside the --signature ones).
    #[command(flatten)]
    pub keys: SigningKeys,
    /// The signed manifest to write.
    #[arg(long, value_name = "MANIFEST")]
    pub out: PathBuf,
}

/// Arguments of `iiot ota verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The signed manifest.
    #[arg(long, value_name = "MANIFEST")]
    pub manifest: PathBuf,
    /// A trusted public key (SubjectPublicKeyInfo PEM, `openssl pkey -pubout`).
    /// Repeat for k-of-n.
    #[arg(long = "trust", value_name = "PUB.pem", required = true)]
    pub trust: Vec<PathBuf>,
    /// The key id of each --trust, in the same order (default: the fingerprint
    /// of the key). Give one per --trust or none.
    #[arg(long = "trust-id", value_name = "ID")]
    pub trust_ids: Vec<String>,
    /// Distinct trusted keys that must have signed.
    #[arg(long, value_name = "K", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub threshold: u32,
    /// The device type to verify for. Required: it is never taken from the
    /// manifest, since checking a manifest against its own claim would accept an
    /// image signed for another device type.
    #[arg(long, value_name = "TYPE")]
    pub device_type: String,
    /// The device's hardware revision (default: not checked).
    #[arg(long, value_name = "N")]
    pub hw_revision: Option<u32>,
    /// The version the device runs; the manifest must be newer (default: not checked).
    #[arg(long, value_name = "V", value_parser = semver::Version::parse)]
    pub running: Option<semver::Version>,
    /// The device's anti-rollback minimum; the manifest must be newer.
    #[arg(long, value_name = "V", value_parser = semver::Version::parse)]
    pub min_version: Option<semver::Version>,
    /// The image: streamed through SHA-256, its size and hash checked.
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// Write the body bytes the signatures cover (for openssl), valid or not.
    #[arg(long, value_name = "BODY.bin")]
    pub body_out: Option<PathBuf>,
    /// Write each signature to DIR/<n>-<key id>.sig (for openssl), valid or not.
    #[arg(long, value_name = "DIR")]
    pub signatures_out: Option<PathBuf>,
}

/// When a manifest expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// This long after publication.
    After(Duration),
    /// At this time.
    At(Timestamp),
}

/// One `--signature pub=PUB.pem,sig=SIG[,id=ID]` of `attach`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureSpec {
    /// The public key that made it.
    pub public_key: PathBuf,
    /// The signature file.
    pub signature: PathBuf,
    /// The key id (default: the key's fingerprint).
    pub id: Option<String>,
}

pub(super) fn parse_expiry(s: &str) -> Result<Expiry, String> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(Expiry::After(d));
    }
    Timestamp::parse_rfc3339(s)
        .map(Expiry::At)
        .map_err(|_| format!("{s:?} is neither a duration (30d, 12h) nor an RFC 3339 time"))
}

pub(super) fn parse_signature_spec(s: &str) -> Result<SignatureSpec, String> {
    let (mut public_key, mut signature, mut id) = (None, None, None);
    for part in s.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected pub=PUB.pem,sig=SIG[,id=ID]"))?;
        let slot = match k {
            "pub" => &mut public_key,
            "sig" => &mut signature,
            "id" => &mut id,
            _ => return Err(format!("unknown part {k:?}: expected pub=, sig= and id=")),
        };
        if v.is_empty() || slot.replace(v.to_owned()).is_some() {
            return Err(format!("{k}= is empty or given twice"));
        }
    }
    match (public_key, signature) {
        (Some(p), Some(sig)) => Ok(SignatureSpec {
            public_key: p.into(),
            signature: sig.into(),
            id,
        }),
        _ => Err("both pub=PUB.pem and sig=SIG are required".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_specs_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_signature_spec("pub=a.pem,sig=a.sig,id=release-1"),
            Ok(SignatureSpec {
                public_key: "a.pem".into(),
                signature: "a.sig".into(),
                id: Some("release-1".into()),
            })
        );
        assert_eq!(
            parse_signature_spec("sig=b.sig,pub=b.pem").map(|s| s.id),
            Ok(None)
        );
        for bad in [
            "pub=a.pem",
            "a.pem,a.sig",
            "pub=a.pem,sig=a.sig,alg=x",
            "pub=,sig=a",
            "pub=a,pub=b,sig=c",
        ] {
            assert!(parse_signature_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn expiry_is_a_duration_or_a_time() {
        assert_eq!(
            parse_expiry("30d"),
            Ok(Expiry::After(Duration::from_secs(30 * 86_400)))
        );
        assert!(matches!(
            parse_expiry("2030-01-01T00:00:00Z"),
            Ok(Expiry::At(_))
        ));
        assert!(parse_expiry("soon").is_err());
    }
}
