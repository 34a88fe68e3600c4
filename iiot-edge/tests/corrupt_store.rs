//! A corrupt store is moved aside, a fresh one starts and a StoreCorrupt data-loss event
//! says so; no crash loop (issue 4).

mod common;

use std::io::{Seek, SeekFrom, Write};

use common::*;
use iiot_core::types::{DataLossReason, Sequence};
use iiot_edge::outbox::{Engine, OpenError, Outbox, OutboxConfig};

fn sled() -> OutboxConfig {
    let mut c = every_write();
    c.set_engine(Engine::Sled);
    c
}

async fn corrupt_then_open(cfg: OutboxConfig, damage: impl FnOnce(&std::path::Path)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ob");
    let ob = open(&path, cfg.clone()).await;
    for i in 0..50 {
        let _ = ob.append(msg(i)).await.unwrap();
    }
    ob.close().await;
    damage(&path);

    let ob = open(&path, cfg.clone()).await;
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
    let ob = open(&path, cfg).await;
    assert_eq!(ob.losses(nz(10)).await.unwrap().len(), 1);
    assert_eq!(read_all(&ob).await.len(), 1);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

/// Overwrites `len` bytes of `file` at `at` with garbage.
fn scribble(file: &std::path::Path, at: u64, len: usize) {
    let mut f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&vec![0xA5; len]).unwrap();
}

#[tokio::test]
async fn log_engine_garbage_over_the_file_header_moves_the_store_aside() {
    corrupt_then_open(every_write(), |p| {
        scribble(&p.join("00000001.log"), 0, 4096);
    })
    .await;
}

#[tokio::test]
async fn log_engine_damage_inside_the_log_moves_the_store_aside() {
    // A byte inside the first frames: later frames are intact, so this is not a torn tail.
    corrupt_then_open(every_write(), |p| scribble(&p.join("00000001.log"), 100, 1)).await;
}

#[tokio::test]
async fn log_engine_a_missing_log_file_reads_as_damage_not_as_an_empty_store() {
    corrupt_then_open(every_write(), |p| {
        std::fs::remove_file(p.join("00000001.log")).unwrap();
    })
    .await;
}

/// A store is opened with the engine that wrote it, whatever the configuration says: a
/// gateway whose configuration or default changed keeps its backlog.
#[tokio::test]
async fn a_store_is_opened_with_the_engine_that_wrote_it() {
    let dir = tempfile::tempdir().unwrap();
    for (written_by, opened_with) in [(sled(), every_write()), (every_write(), sled())] {
        let engine = written_by.engine;
        let path = dir.path().join(format!("{engine:?}"));
        let ob = open(&path, written_by).await;
        let _ = ob.append(msg(1)).await.unwrap();
        ob.close().await;
        let ob = open(&path, opened_with).await;
        assert_eq!(ob.config().engine, engine);
        let _ = ob.append(msg(2)).await.unwrap();
        let got: Vec<String> = read_all(&ob).await.iter().map(payload_str).collect();
        assert_eq!(got, vec!["rec-00000001", "rec-00000002"]);
        ob.close().await;
    }
    // Files of both engines: refused and left alone, not guessed between.
    let both = dir.path().join("Log");
    std::fs::write(both.join("conf"), b"sled").unwrap();
    let err = Outbox::open(&both, device(), every_write())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, OpenError::Unsupported { reason, .. } if reason.contains("both")),
        "{err}"
    );
    assert!(both.join("conf").exists() && both.join("00000001.log").exists());
}

#[tokio::test]
async fn sled_engine_garbage_in_the_log_moves_the_store_aside() {
    corrupt_then_open(sled(), |p| {
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
async fn sled_engine_garbage_config_file_moves_the_store_aside() {
    corrupt_then_open(sled(), |p| {
        std::fs::write(p.join("conf"), b"\xff\xfe garbage").unwrap();
    })
    .await;
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
