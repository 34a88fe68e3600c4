//! A corrupt store is moved aside, a fresh one starts and a StoreCorrupt data-loss event
//! says so; no crash loop (issue 4).

mod common;

use std::io::{Seek, SeekFrom, Write};

use common::*;
use iiot_core::types::{DataLossReason, Sequence};
use iiot_edge::outbox::{OpenError, Outbox};

async fn corrupt_then_open(damage: impl FnOnce(&std::path::Path)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ob");
    let ob = open(&path, every_write()).await;
    for i in 0..50 {
        let _ = ob.append(msg(i)).await.unwrap();
    }
    ob.close().await;
    damage(&path);

    let ob = open(&path, every_write()).await;
    // The damaged store was moved aside, not deleted.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names.iter().any(|n| n.starts_with("ob.corrupt-")),
        "{names:?}"
    );
    // A data-loss event says so; sequence numbers stay above anything the old store used.
    let losses = ob.losses(nz(10)).await.unwrap();
    assert_eq!(losses.len(), 1);
    let l = &losses[0].loss;
    assert_eq!(l.reason, DataLossReason::StoreCorrupt);
    assert_eq!(l.device_id, device());
    assert!(l.detail.as_deref().unwrap().contains("ob.corrupt-"));
    let seq = ob.append(msg(99)).await.unwrap().seq();
    assert!(seq > Sequence(50));
    assert_eq!(seq.0, l.last_seq().0 + 1);
    ob.close().await;
    // Reopening the fresh store is clean: no second move, the event is still pending.
    let ob = open(&path, every_write()).await;
    assert_eq!(ob.losses(nz(10)).await.unwrap().len(), 1);
    assert_eq!(read_all(&ob).await.len(), 1);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[tokio::test]
async fn garbage_in_the_log_moves_the_store_aside() {
    corrupt_then_open(|p| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(p.join("db"))
            .unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(&[0xA5; 4096]).unwrap();
    })
    .await;
}

#[tokio::test]
async fn garbage_config_file_moves_the_store_aside() {
    corrupt_then_open(|p| std::fs::write(p.join("conf"), b"\xff\xfe garbage").unwrap()).await;
}

#[tokio::test]
async fn permission_error_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the store directory should be.
    let path = dir.path().join("not-a-dir");
    std::fs::write(&path, b"x").unwrap();
    let err = Outbox::open(path.join("ob"), device(), every_write())
        .await
        .err()
        .unwrap();
    match &err {
        OpenError::Io { path: p, .. } | OpenError::PermissionDenied { path: p, .. } => {
            assert_eq!(p, &path.join("ob"));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}
