//! Append, read, acknowledge and reopen: at least once, in order, across restarts (issue 4).

mod common;

use common::*;
use iiot_core::publish::OutboundMessage;
use iiot_core::types::Sequence;
use iiot_edge::outbox::{AppendError, Outbox, OutboxConfig, WhenFull};

#[tokio::test]
async fn append_read_ack_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let ob = open(&dir.path().join("ob"), every_write()).await;
    for i in 0..10 {
        let a = ob.append(msg(i)).await.unwrap();
        assert_eq!(a.seq(), Sequence(i + 1));
    }
    let all = read_all(&ob).await;
    assert_eq!(all.len(), 10);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.seq, Sequence(i as u64 + 1));
        assert_eq!(r.message, msg(i as u64));
    }
    ob.ack(Sequence(4));
    let rest = read_all(&ob).await;
    assert_eq!(rest.first().unwrap().seq, Sequence(5));
    assert_eq!(rest.len(), 6);
    // Batches honour max records and max bytes (but always return one record).
    let two = ob.read(Sequence(0), nz(2), nz(1 << 20)).await.unwrap();
    assert_eq!(two.iter().map(|r| r.seq.0).collect::<Vec<_>>(), vec![5, 6]);
    let one = ob.read(Sequence(7), nz(100), nz(1)).await.unwrap();
    assert_eq!(one.iter().map(|r| r.seq.0).collect::<Vec<_>>(), vec![7]);
}

#[tokio::test]
async fn sequence_and_backlog_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ob");
    let ob = open(&path, every_write()).await;
    for i in 0..5 {
        ob.append(msg(i)).await.unwrap();
    }
    ob.ack(Sequence(2));
    ob.close().await;
    let ob = open(&path, every_write()).await;
    let all = read_all(&ob).await;
    assert_eq!(
        all.iter().map(|r| r.seq.0).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert_eq!(ob.append(msg(9)).await.unwrap().seq(), Sequence(6));
    // Acknowledge everything: the sequence still continues after reopen.
    ob.ack(Sequence(6));
    ob.close().await;
    let ob = open(&path, every_write()).await;
    assert!(read_all(&ob).await.is_empty());
    assert_eq!(ob.append(msg(10)).await.unwrap().seq(), Sequence(7));
    let s = ob.stats();
    assert_eq!(s.appended, 7);
    assert_eq!(s.backlog_records, 1);
}

#[tokio::test]
async fn append_with_puts_the_sequence_in_the_payload() {
    let dir = tempfile::tempdir().unwrap();
    let ob = open(&dir.path().join("ob"), every_write()).await;
    for _ in 0..3 {
        ob.append_with(|seq| OutboundMessage::new("t", seq.0.to_be_bytes().to_vec()))
            .await
            .unwrap();
    }
    for r in read_all(&ob).await {
        assert_eq!(r.message.payload.as_ref(), r.seq.0.to_be_bytes());
    }
}

#[tokio::test]
async fn group_commit_durable_resolves_and_records_become_readable() {
    let dir = tempfile::tempdir().unwrap();
    let ob = open(&dir.path().join("ob"), group_commit(5)).await;
    let mut pending = Vec::new();
    for i in 0..100 {
        pending.push(ob.append(msg(i)).await.unwrap());
    }
    for (i, a) in pending.into_iter().enumerate() {
        assert_eq!(a.durable().await.unwrap(), Sequence(i as u64 + 1));
    }
    assert_eq!(read_all(&ob).await.len(), 100);
}

#[tokio::test]
async fn too_large_record_is_refused_with_its_payload() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = OutboxConfig::default();
    cfg.set_max_record_bytes(nz(100));
    let ob = open(&dir.path().join("ob"), cfg).await;
    let big = OutboundMessage::new("t", vec![7u8; 200]);
    match ob.append(big.clone()).await {
        Err(AppendError::RecordTooLarge {
            len,
            limit,
            message,
        }) => {
            assert_eq!(limit, 100);
            assert_eq!(len, 200 + 1 + 15);
            assert_eq!(message, big);
        }
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    // The refused record consumed no sequence number.
    assert_eq!(ob.append(msg(0)).await.unwrap().seq(), Sequence(1));
}

#[tokio::test]
async fn block_policy_refuses_with_payload_and_waits_for_space() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = OutboxConfig::default();
    let rec = common::msg(0);
    let len = 15 + rec.topic.len() + rec.payload.len();
    cfg.set_when_full(WhenFull::Block)
        .set_max_bytes(nz(3 * len));
    let ob = open(&dir.path().join("ob"), cfg).await;
    for i in 0..3 {
        ob.append(msg(i)).await.unwrap();
    }
    match ob.try_append(msg(3)) {
        Err(AppendError::Full { message, .. }) => assert_eq!(message, msg(3)),
        other => panic!("expected Full, got {other:?}"),
    }
    let ob2 = ob.clone();
    let waiter = tokio::spawn(async move { ob2.append(msg(3)).await.map(|a| a.seq()) });
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    ob.ack(Sequence(1));
    assert_eq!(waiter.await.unwrap().unwrap(), Sequence(4));
    let s = ob.stats();
    assert_eq!(s.dropped_records, 0);
}

#[tokio::test]
async fn a_second_open_of_the_same_store_is_refused_not_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ob");
    let ob = open(&path, every_write()).await;
    ob.append(msg(1)).await.unwrap();
    let err = Outbox::open(&path, device(), every_write())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, iiot_edge::outbox::OpenError::Locked { .. }),
        "{err:?}"
    );
    assert_eq!(read_all(&ob).await.len(), 1);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// sled 0.34 never syncs blob files (nodes over ~128 KiB): the segment layout must keep
/// ordinary records out of them, or `flush` would not be a durability point.
#[cfg(feature = "sled")]
#[tokio::test]
async fn group_commit_of_many_records_writes_no_sled_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ob");
    let mut cfg = group_commit(50);
    cfg.set_engine(iiot_edge::outbox::Engine::Sled);
    let ob = open(&path, cfg).await;
    let payload = vec![0u8; 200];
    let mut last = None;
    for _ in 0..20_000 {
        last = Some(
            ob.append(OutboundMessage::new("t", payload.clone()))
                .await
                .unwrap(),
        );
    }
    last.unwrap().durable().await.unwrap();
    assert_eq!(read_all(&ob).await.len(), 20_000);
    ob.close().await;
    let blobs = std::fs::read_dir(path.join("blobs")).map_or(0, Iterator::count);
    assert_eq!(blobs, 0);
}

/// `Debug` shows the device, engine and cursors, never record contents.
#[tokio::test]
async fn debug_shows_cursors_not_contents() {
    let dir = tempfile::tempdir().unwrap();
    let ob = open(&dir.path().join("ob"), every_write()).await;
    let _ = ob.append(msg(1)).await.unwrap();
    let text = format!("{ob:?}");
    assert!(
        text.contains("next_seq: Sequence(2)") && text.contains("Log"),
        "{text}"
    );
    assert!(!text.contains("rec-00000001"), "{text}");
    ob.close().await;
}
