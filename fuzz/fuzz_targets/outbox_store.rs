//! The outbox's on-disk store (log engine) under arbitrary damage: a valid store of
//! 300 records (appends and acknowledgements), then the input flips bytes anywhere in its
//! files and may cut the newest file short. Opening must never panic or hang: it either opens (and
//! then every record it returns is one that was written, in order, once) or moves the store
//! aside as corrupt, or returns a typed error.
#![no_main]

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use iiot_core::publish::OutboundMessage;
use iiot_core::types::{DeviceId, Sequence};
use iiot_edge::outbox::{Durability, Outbox, OutboxConfig};
use libfuzzer_sys::fuzz_target;

struct Base {
    rt: tokio::runtime::Runtime,
    /// (file name, bytes) of a valid store.
    files: Vec<(String, Vec<u8>)>,
}

fn payload(seq: u64) -> Vec<u8> {
    format!("record-{seq:06}-{}", "x".repeat((seq % 97) as usize)).into_bytes()
}

fn config() -> OutboxConfig {
    let mut c = OutboxConfig::default();
    c.set_durability(Durability::EveryWrite);
    c
}

fn device() -> DeviceId {
    DeviceId::new("fuzz-dev").unwrap()
}

fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ob");
        rt.block_on(async {
            let ob = Outbox::open(&path, device(), config()).await.unwrap();
            for i in 0..300u64 {
                let _ = ob
                    .append_with(|seq| OutboundMessage::new("t/fuzz", payload(seq.0)))
                    .await
                    .unwrap();
                if i % 50 == 49 {
                    ob.ack(Sequence(i / 2));
                    ob.sync().await;
                }
            }
            ob.close().await;
        });
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                (name, std::fs::read(e.path()).unwrap())
            })
            .filter(|(n, _)| n != "LOCK")
            .collect();
        files.sort();
        Base { rt, files }
    })
}

fn write_store(dir: &Path, files: &[(String, Vec<u8>)]) -> PathBuf {
    let path = dir.join("ob");
    std::fs::create_dir_all(&path).unwrap();
    for (name, bytes) in files {
        std::fs::write(path.join(name), bytes).unwrap();
    }
    path
}

fuzz_target!(|data: &[u8]| {
    let base = base();
    let mut files = base.files.clone();
    let logs: Vec<usize> = (0..files.len())
        .filter(|&i| files[i].0.ends_with(".log"))
        .collect();
    if logs.is_empty() {
        return;
    }
    // First byte: how much of the newest file survives (255: all of it).
    let (cut, rest) = data.split_first().map_or((255, data), |(c, r)| (*c, r));
    if cut != 255 {
        let newest = &mut files[*logs.last().unwrap()].1;
        let keep = newest.len() * usize::from(cut) / 255;
        newest.truncate(keep);
    }
    // Then 4-byte damages: file, offset (u16, scaled), xor mask.
    for d in rest.chunks_exact(4) {
        let f = &mut files[logs[usize::from(d[0]) % logs.len()]].1;
        if f.is_empty() {
            continue;
        }
        let at = usize::from(u16::from_be_bytes([d[1], d[2]])) * f.len() / 65_536;
        f[at] ^= d[3].max(1);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = write_store(dir.path(), &files);
    base.rt.block_on(async {
        let Ok(ob) = Outbox::open(&path, device(), config()).await else {
            return;
        };
        let mut from = Sequence(0);
        let mut last = 0u64;
        loop {
            let Ok(batch) = ob
                .read(
                    from,
                    NonZeroUsize::new(64).unwrap(),
                    NonZeroUsize::new(1 << 20).unwrap(),
                )
                .await
            else {
                break;
            };
            let Some(l) = batch.last() else { break };
            for r in &batch {
                assert!(r.seq.0 > last, "out of order or repeated: {}", r.seq.0);
                last = r.seq.0;
                // A record that reads back is one that was written (checksums hold).
                assert_eq!(r.message.payload.as_ref(), payload(r.seq.0).as_slice());
            }
            from = Sequence(l.seq.0 + 1);
        }
        let _ = ob.losses(NonZeroUsize::new(16).unwrap()).await;
        // The store still takes appends after whatever recovery did.
        let _ = ob
            .append(OutboundMessage::new("t/fuzz", b"after".to_vec()))
            .await;
        ob.close().await;
    });
});
