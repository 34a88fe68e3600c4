//! Disk full on append (issue 4): a typed error that gives the payload back, everything
//! already stored stays readable, and once there is room again the store carries on.
//!
//! The full disk is real, not mocked, in two ways: the child (this test binary
//! re-executed) runs under `prlimit --fsize`, so the kernel refuses writes past a file size
//! (`EFBIG`, with SIGXFSZ ignored by the shell that starts it: ignored signals stay ignored
//! across `exec`); or it runs in a private mount namespace on a 4 MiB tmpfs that another
//! file fills (`ENOSPC`; skipped, with the reason printed, where no namespace can be made).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use iiot_core::publish::OutboundMessage;
use iiot_edge::outbox::AppendError;

const CHILD_ENV: &str = "IIOT_DISK_FULL_CHILD";
/// Largest file the child may write.
const FILE_LIMIT: u64 = 256 * 1024;

fn record(i: u64) -> OutboundMessage {
    let mut payload = format!("rec-{i:08}-").into_bytes();
    payload.resize(1000, b'x');
    OutboundMessage::new("acme/site/area/line/plc/plc-01/telemetry", payload)
}

/// The child: appends until the disk is full, checks what it gets back, prints a summary.
#[test]
fn disk_full_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let ob = open(Path::new(&dir), every_write()).await;
        let first = ob.stats().next_seq.0;
        let mut stored = 0u64;
        let mut i = first;
        let err = loop {
            match ob.append(record(i)).await {
                Ok(_) => stored += 1,
                Err(e) => break e,
            }
            i += 1;
            assert!(stored < 10_000, "the file size limit never took effect");
        };
        let AppendError::Io {
            source, message, ..
        } = err
        else {
            panic!("expected AppendError::Io, got {err:?}");
        };
        assert_eq!(message, record(i), "the payload must come back intact");
        // Further appends fail the same way, each giving its message back.
        for _ in 0..3 {
            let e = ob.append(record(i)).await.unwrap_err();
            assert!(matches!(e, AppendError::Io { .. }), "{e:?}");
            assert_eq!(e.into_message(), record(i));
        }
        // What is stored stays readable while the disk is full.
        let readable = read_all(&ob).await.len();
        println!(
            "STORED {stored} READABLE {readable} KIND {:?}",
            source.kind()
        );
        ob.close().await;
    });
}

#[tokio::test]
async fn disk_full_returns_the_payload_and_keeps_every_stored_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("ob");
    let ob = open(&store, every_write()).await;
    for i in 1..=10 {
        let _ = ob.append(record(i)).await.unwrap();
    }
    ob.close().await;

    let exe = std::env::current_exe().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"trap '' XFSZ; exec prlimit --fsize="$1" "$2" disk_full_child --exact --nocapture --test-threads=1"#)
        .arg("sh")
        .arg(FILE_LIMIT.to_string())
        .arg(&exe)
        .env(CHILD_ENV, &store)
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            eprintln!("skipping: cannot run sh/prlimit: {e}");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("STORED ").map(|(_, r)| r.to_owned()))
        .unwrap_or_else(|| panic!("no summary from the child: {stdout}"));
    eprintln!("child: STORED {line}");
    let words: Vec<&str> = line.split_whitespace().collect();
    let stored: u64 = words[0].parse().unwrap();
    let readable: usize = words[2].parse().unwrap();
    assert!(
        stored > 10,
        "the limit left too little room to prove anything: {line}"
    );
    assert_eq!(readable as u64, 10 + stored, "{line}");

    // With room again: everything acknowledged is there, in order, and appends work.
    let ob = open(&store, every_write()).await;
    let records = read_all(&ob).await;
    assert_eq!(records.len() as u64, 10 + stored);
    for (n, r) in records.iter().enumerate() {
        assert_eq!(r.message, record(r.seq.0), "record {n}");
    }
    let seq = ob.append(record(99_999)).await.unwrap().seq();
    assert!(seq.0 > records.last().unwrap().seq.0);
    assert_eq!(ob.stats().pending_losses, 0);
    ob.close().await;
}

const ENOSPC_CHILD_ENV: &str = "IIOT_ENOSPC_CHILD";

/// The child of the full-file-system test, inside its own mount namespace with a 4 MiB
/// tmpfs at `dir`: fills the file system with another file, then checks what the outbox
/// does on a really full disk (`ENOSPC`) and after space is freed.
#[test]
fn enospc_child() {
    let Ok(dir) = std::env::var(ENOSPC_CHILD_ENV) else {
        return;
    };
    println!("CHILD STARTED");
    let dir = std::path::PathBuf::from(dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = dir.join("ob");
        let ob = open(&store, every_write()).await;
        // Something else fills the disk (logs, say).
        let hog = dir.join("hog");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&hog).unwrap();
            let chunk = vec![1u8; 64 * 1024];
            while f.write_all(&chunk).is_ok() {}
            let _ = f.sync_all();
        }
        // The outbox writes into space it preallocated: appends go on for a while.
        let mut stored = 0u64;
        let mut i = 1u64;
        let err = loop {
            match ob.append(record(i)).await {
                Ok(_) => stored += 1,
                Err(e) => break e,
            }
            i += 1;
            assert!(stored < 100_000, "the disk never filled");
        };
        let AppendError::Io {
            source, message, ..
        } = err
        else {
            panic!("expected AppendError::Io, got {err:?}");
        };
        assert_eq!(source.kind(), std::io::ErrorKind::StorageFull, "{source}");
        assert_eq!(message, record(i), "the payload must come back intact");
        assert!(
            stored >= 200,
            "only {stored} records fit in the preallocated space"
        );
        // Stored records stay readable and can be drained (in memory at least).
        let records = read_all(&ob).await;
        assert_eq!(records.len() as u64, stored);
        ob.ack(records[records.len() / 2].seq);
        ob.sync().await;
        // Space comes back: appends and acknowledgements work again.
        std::fs::remove_file(&hog).unwrap();
        let seq = ob.append(record(500_000)).await.unwrap().seq();
        ob.ack(records.last().unwrap().seq);
        ob.sync().await;
        ob.close().await;
        let ob = open(&store, every_write()).await;
        let left = read_all(&ob).await;
        assert_eq!(
            left.len(),
            1,
            "only the record appended after the disk had room"
        );
        assert_eq!(left[0].seq, seq);
        assert_eq!(left[0].message, record(500_000));
        assert_eq!(ob.stats().pending_losses, 0);
        println!("ENOSPC STORED {stored}");
        ob.close().await;
    });
}

#[tokio::test]
async fn a_full_file_system_returns_payloads_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // A private mount namespace: the tmpfs exists only for the child and goes with it.
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o size=4m iiot-test "$1" && exec "$2" enospc_child --exact --nocapture --test-threads=1"#)
        .arg("sh")
        .arg(dir.path())
        .arg(&exe)
        .env(ENOSPC_CHILD_ENV, dir.path())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            eprintln!("skipping: cannot run unshare: {e}");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stdout.contains("CHILD STARTED") {
        // No mount namespace or tmpfs here (not root, or a container without them).
        eprintln!("skipping: cannot mount a private tmpfs: {stderr}");
        return;
    }
    assert!(
        out.status.success() && stdout.contains("ENOSPC STORED"),
        "child failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    eprintln!(
        "{}",
        stdout.lines().find(|l| l.contains("ENOSPC")).unwrap_or("")
    );
}
