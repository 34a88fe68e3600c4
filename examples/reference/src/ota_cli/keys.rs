//! Keys from PEM files, with errors that say what the file holds instead.

use std::path::Path;

use iiot_edge::ota::{PublicKey, SigningKey};

use super::files::read_limited;
use super::{OtaCliError, SigningKeys};

/// Largest PEM file read as a key.
const MAX_PEM_BYTES: u64 = 64 * 1024;

/// Refuses a key id or a key given twice: k of n counts distinct keys.
pub(super) fn distinct(
    seen: &mut Vec<(String, PublicKey)>,
    id: &str,
    key: &PublicKey,
    flag: &str,
) -> Result<(), OtaCliError> {
    if let Some((other, k)) = seen.iter().find(|(i, k)| i == id || k == key) {
        let what = if k == key {
            format!("the same key is given twice (as {other:?} and {id:?})")
        } else {
            format!("key id {id:?} is given to two different keys")
        };
        return Err(OtaCliError::Usage(format!(
            "{flag}: {what}; a threshold counts distinct keys"
        )));
    }
    seen.push((id.to_owned(), key.clone()));
    Ok(())
}

pub(super) fn load_signing_keys(k: &SigningKeys) -> Result<Vec<(String, SigningKey)>, OtaCliError> {
    if !k.key_ids.is_empty() && k.key_ids.len() != k.keys.len() {
        return Err(OtaCliError::Usage(format!(
            "{} --key-id for {} --key: give one per --key, in the same order, or none",
            k.key_ids.len(),
            k.keys.len()
        )));
    }
    let mut out: Vec<(String, SigningKey)> = Vec::with_capacity(k.keys.len());
    let mut seen = Vec::new();
    for (i, path) in k.keys.iter().enumerate() {
        let key = load_signing_key(path)?;
        let public = key.public();
        let id = k
            .key_ids
            .get(i)
            .cloned()
            .unwrap_or_else(|| public.fingerprint());
        if id.is_empty() {
            return Err(OtaCliError::Usage("--key-id must not be empty".into()));
        }
        distinct(&mut seen, &id, &public, "--key")?;
        out.push((id, key));
    }
    Ok(out)
}

pub(super) fn load_signing_key(path: &Path) -> Result<SigningKey, OtaCliError> {
    let text = read_pem(path, "private key")?;
    let wanted = "--key needs a private key (PKCS#8 or SEC1 PEM)";
    match pem_label(&text) {
        Some("PUBLIC KEY") => Err(wrong(path, "a public key", wanted)),
        Some("ENCRYPTED PRIVATE KEY") => Err(wrong(
            path,
            "an encrypted private key",
            "decrypt it first (openssl pkey -in KEY -out PLAIN)",
        )),
        Some("CERTIFICATE") => Err(wrong(path, "a certificate", wanted)),
        _ => SigningKey::from_pem(&text).map_err(|source| OtaCliError::Key {
            path: path.to_owned(),
            source,
        }),
    }
}

pub(super) fn load_public_key(path: &Path) -> Result<PublicKey, OtaCliError> {
    let text = read_pem(path, "public key")?;
    match pem_label(&text) {
        Some("PRIVATE KEY" | "EC PRIVATE KEY" | "ENCRYPTED PRIVATE KEY") => Err(wrong(
            path,
            "a private key",
            "give its public key (openssl pkey -in KEY -pubout), never the private one",
        )),
        Some("CERTIFICATE") => Err(wrong(
            path,
            "a certificate",
            "give its public key (openssl x509 -in CERT -pubkey -noout)",
        )),
        _ => PublicKey::from_pem(&text).map_err(|source| OtaCliError::Key {
            path: path.to_owned(),
            source,
        }),
    }
}

fn wrong(path: &Path, found: &'static str, wanted: &'static str) -> OtaCliError {
    OtaCliError::WrongPem {
        path: path.to_owned(),
        found,
        wanted,
    }
}

/// The label of the first `-----BEGIN X-----` line.
fn pem_label(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
}

fn read_pem(path: &Path, what: &'static str) -> Result<String, OtaCliError> {
    let bytes = read_limited(path, what, MAX_PEM_BYTES)?;
    String::from_utf8(bytes).map_err(|_| wrong(path, "binary data", "a key must be PEM text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_labels() {
        assert_eq!(
            pem_label("junk\n-----BEGIN PUBLIC KEY-----\nAAA\n"),
            Some("PUBLIC KEY")
        );
        assert_eq!(pem_label("nothing"), None);
    }
}
