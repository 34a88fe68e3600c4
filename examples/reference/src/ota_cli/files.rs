//! Files: small ones read with a limit, images streamed through SHA-256, outputs
//! written atomically, keys created only where nothing exists.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write as _};
use std::path::Path;

use iiot_core::types::ManifestSignature;
use sha2::{Digest as _, Sha256};

use super::{OtaCliError, algorithm_name};

/// Reads a small file whole, refusing one over `limit` bytes without reading it all.
pub(super) fn read_limited(
    path: &Path,
    what: &'static str,
    limit: u64,
) -> Result<Vec<u8>, OtaCliError> {
    let read_err = |source| OtaCliError::Read {
        what,
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let mut buf = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(read_err)?;
    if buf.len() as u64 > limit {
        return Err(OtaCliError::TooLarge {
            what,
            path: path.to_owned(),
            limit,
        });
    }
    Ok(buf)
}

/// Size and SHA-256 of a file, streamed 64 KiB at a time.
pub(super) fn hash_file(path: &Path) -> Result<(u64, [u8; 32]), OtaCliError> {
    let read_err = |source| OtaCliError::Read {
        what: "image",
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    if file.metadata().map_err(read_err)?.is_dir() {
        return Err(read_err(io::Error::other("a directory, not a file")));
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_err(e)),
        }
    }
    Ok((size, hasher.finalize().into()))
}

/// Writes through a temporary file in the same directory and a rename, so a
/// reader never sees half a manifest.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OtaCliError> {
    let write_err = |source| OtaCliError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(write_err)?;
    tmp.write_all(bytes).map_err(write_err)?;
    tmp.as_file().sync_all().map_err(write_err)?;
    tmp.persist(path).map_err(|e| write_err(e.error))?;
    Ok(())
}

/// Creates a file that must not exist yet; `secret` makes it mode 0600.
pub(super) fn create_new(path: &Path, bytes: &[u8], secret: bool) -> Result<(), OtaCliError> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = opts.open(path).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            OtaCliError::Exists {
                path: path.to_owned(),
            }
        } else {
            OtaCliError::Write {
                path: path.to_owned(),
                source,
            }
        }
    })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|source| OtaCliError::Write {
            path: path.to_owned(),
            source,
        })
}

pub(super) fn write_signatures(
    dir: &Path,
    signatures: &[ManifestSignature],
) -> Result<(), OtaCliError> {
    fs::create_dir_all(dir).map_err(|source| OtaCliError::Write {
        path: dir.to_owned(),
        source,
    })?;
    for (i, s) in signatures.iter().enumerate() {
        // The key id comes from the manifest: never let it pick the path.
        let safe: String = s
            .key_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!("{}-{safe}.sig", i + 1));
        write_atomic(&path, &s.signature)?;
        println!(
            "signature: {} ({}) -> {}",
            s.key_id,
            algorithm_name(s.algorithm),
            path.display()
        );
    }
    Ok(())
}

/// A key id used as a file name: `[A-Za-z0-9._-]+`, not starting with `.`.
pub(super) fn is_file_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::super::hex;
    use super::*;

    #[test]
    fn hashing_streams_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        // Larger than one 64 KiB read, not a multiple of it.
        let data: Vec<u8> = (0..200_003u32).map(|i| (i % 251) as u8).collect();
        fs::write(&p, &data).unwrap();
        let (size, sha) = hash_file(&p).unwrap();
        assert_eq!(size, 200_003);
        assert_eq!(sha, <[u8; 32]>::from(Sha256::digest(&data)));
        fs::write(&p, b"abc").unwrap();
        assert_eq!(
            hex(&hash_file(&p).unwrap().1),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn key_ids_that_are_file_names() {
        assert!(is_file_name("release-1.p256_a"));
        for bad in ["", ".hidden", "../x", "a/b", "a b"] {
            assert!(!is_file_name(bad), "{bad}");
        }
    }
}
