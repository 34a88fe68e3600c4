//! The forwarder drains the outbox through a transport that fails, stalls and recovers:
//! nothing lost, order kept, duplicates only of unconfirmed records (issue 4).

mod common;

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::time::Duration;

use common::flaky::{Act, Flaky};
use common::*;
use iiot_core::publish::OutboundMessage;
use iiot_core::types::{DataLoss, Sequence};
use iiot_edge::forwarder::{Forwarder, ForwarderConfig, ForwarderExit, ReplayOrder};
use iiot_edge::outbox::{Outbox, OutboxConfig};
use tokio_util::sync::CancellationToken;

fn encode_loss(l: &DataLoss) -> OutboundMessage {
    OutboundMessage::new(
        "acme/site/area/line/plc/plc-01/status",
        format!("loss:{}-{}:{}", l.first_seq().0, l.last_seq().0, l.count()).into_bytes(),
    )
}

fn fconfig(window: usize, order: ReplayOrder) -> ForwarderConfig {
    let mut c = ForwarderConfig::default();
    c.set_max_in_flight(nz(window))
        .set_read_batch(nz(16))
        .set_backoff(Duration::from_millis(100), Duration::from_secs(5))
        .set_replay_rate(NonZeroU32::new(200))
        .set_order(order);
    c
}

/// Fails roughly one attempt in 7, stalls one in 23 (deterministically by attempt number),
/// and has an outage: attempts 40..80 all fail.
fn chaos(_key: &str, _n: u32, total: usize) -> Act {
    if (40..80).contains(&total) || total % 7 == 3 {
        Act::Fail
    } else if total % 23 == 5 {
        Act::Stall
    } else {
        Act::Confirm
    }
}

async fn drain_with_chaos(window: usize, order: ReplayOrder) {
    let dir = tempfile::tempdir().unwrap();
    let ob = open(&dir.path().join("ob"), every_write()).await;
    for i in 0..150 {
        let _ = ob.append(msg(i)).await.unwrap();
    }
    let publisher = Flaky::new(chaos);
    let log = publisher.log.clone();
    let (mut handle, fwd) =
        Forwarder::new(ob.clone(), publisher, encode_loss, fconfig(window, order));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(fwd.run(cancel.clone()));
    // Live data keeps flowing while the backlog drains.
    for i in 150..250 {
        let _ = ob.append(msg(i)).await.unwrap();
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    handle.wait_for(|s| s.acked == Some(Sequence(250))).await;
    cancel.cancel();
    assert_eq!(task.await.unwrap(), ForwarderExit::Cancelled);

    let log = std::mem::take(&mut *log.lock().unwrap());
    // Nothing lost: every record confirmed.
    let confirmed: HashSet<&String> = log.confirmed.iter().collect();
    for i in 0..250 {
        assert!(
            confirmed.contains(&String::from_utf8(msg(i).payload.to_vec()).unwrap()),
            "record {i} never confirmed"
        );
    }
    // Never sent again once confirmed: duplicates only of unconfirmed records.
    assert_eq!(
        confirmed.len(),
        log.confirmed.len(),
        "a confirmed record was confirmed twice"
    );
    let mut seen_failed: HashSet<&String> = HashSet::new();
    let mut attempted: HashSet<&String> = HashSet::new();
    let failed: HashSet<&String> = log.failed.iter().collect();
    for a in &log.attempts {
        if !attempted.insert(a) {
            assert!(failed.contains(a), "{a} re-sent without a failed attempt");
            seen_failed.insert(a);
        }
    }
    assert!(
        log.failed.len() > 40,
        "the script must actually fail publishes"
    );
    if order == ReplayOrder::InOrder && window == 1 {
        // One in flight: the broker sees records strictly in order.
        let order: Vec<&String> = log.confirmed.iter().collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted);
    }
    // The outbox is empty once everything is acknowledged.
    ob.sync().await;
    assert_eq!(ob.stats().backlog_records, 0);
    assert!(read_all(&ob).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn in_order_one_in_flight_survives_failures_and_stalls() {
    drain_with_chaos(1, ReplayOrder::InOrder).await;
}

#[tokio::test(start_paused = true)]
async fn in_order_window_survives_failures_and_stalls() {
    drain_with_chaos(8, ReplayOrder::InOrder).await;
}

#[tokio::test(start_paused = true)]
async fn live_first_survives_failures_and_stalls() {
    drain_with_chaos(8, ReplayOrder::LiveFirst).await;
}

/// Real time, not paused: the live append waits for a real fsync, and paused time would
/// auto-advance through the whole paced backlog meanwhile.
#[tokio::test]
async fn live_first_sends_new_records_ahead_of_a_paced_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let ob = open(&dir.path().join("ob"), every_write()).await;
    for i in 0..100 {
        let _ = ob.append(msg(i)).await.unwrap();
    }
    let publisher = Flaky::new(|_, _, _| Act::Confirm);
    let log = publisher.log.clone();
    let mut cfg = fconfig(4, ReplayOrder::LiveFirst);
    cfg.set_replay_rate(NonZeroU32::new(50)); // the backlog takes about 2 s
    let (mut handle, fwd) = Forwarder::new(ob.clone(), publisher, encode_loss, cfg);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(fwd.run(cancel.clone()));
    handle.wait_for(|s| s.confirmed >= 10).await;
    let live = ob.append(msg(1000)).await.unwrap().seq();
    handle
        .wait_for(|s| s.confirmed >= 101 || s.acked == Some(live))
        .await;
    // Wait until the live record is confirmed, then look where it landed.
    while !log
        .lock()
        .unwrap()
        .confirmed
        .iter()
        .any(|k| k == "rec-00001000")
    {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    {
        let log = log.lock().unwrap();
        let pos = log
            .confirmed
            .iter()
            .position(|k| k == "rec-00001000")
            .unwrap();
        // It overtook the backlog: backlog records were confirmed after it.
        assert!(
            pos < 90,
            "live record waited behind the backlog (position {pos})"
        );
    }
    handle.wait_for(|s| s.acked == Some(live)).await;
    cancel.cancel();
    task.await.unwrap();
    assert_eq!(log.lock().unwrap().confirmed.len(), 101);
}

#[tokio::test(start_paused = true)]
async fn data_loss_events_are_published_first_and_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = OutboxConfig::default();
    let len = 15 + msg(0).topic.len() + msg(0).payload.len();
    cfg.set_max_bytes(nz(10 * len));
    let ob = Outbox::open(dir.path().join("ob"), device(), cfg)
        .await
        .unwrap();
    for i in 0..15 {
        let _ = ob.append(msg(i)).await.unwrap();
    }
    assert_eq!(ob.stats().dropped_records, 5);
    let publisher = Flaky::new(|k, n, _| {
        if k.starts_with("loss") && n == 1 {
            Act::Fail
        } else {
            Act::Confirm
        }
    });
    let log = publisher.log.clone();
    let (mut handle, fwd) = Forwarder::new(
        ob.clone(),
        publisher,
        encode_loss,
        fconfig(4, ReplayOrder::InOrder),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn(fwd.run(cancel.clone()));
    handle
        .wait_for(|s| s.acked == Some(Sequence(15)) && s.losses_confirmed == 1)
        .await;
    cancel.cancel();
    task.await.unwrap();
    let log = std::mem::take(&mut *log.lock().unwrap());
    assert_eq!(log.confirmed[0], "loss:1-5:5");
    assert_eq!(log.confirmed.len(), 11);
    ob.sync().await;
    assert_eq!(ob.stats().pending_losses, 0);
}

#[tokio::test(start_paused = true)]
async fn a_restarted_forwarder_resends_only_what_was_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let ob = open(&dir.path().join("ob"), every_write()).await;
    for i in 0..50 {
        let _ = ob.append(msg(i)).await.unwrap();
    }
    // First run: everything after record 20 stalls; cancel mid-way.
    let p1 = Flaky::new(|k, _, _| {
        if k >= "rec-00000020" {
            Act::Stall
        } else {
            Act::Confirm
        }
    });
    let log1 = p1.log.clone();
    let (mut h, fwd) = Forwarder::new(
        ob.clone(),
        p1,
        encode_loss,
        fconfig(4, ReplayOrder::InOrder),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn(fwd.run(cancel.clone()));
    h.wait_for(|s| s.acked == Some(Sequence(20))).await;
    cancel.cancel();
    task.await.unwrap();
    assert_eq!(log1.lock().unwrap().confirmed.len(), 20);
    // Second run over the same outbox: starts exactly after the acknowledged prefix.
    let p2 = Flaky::new(|_, _, _| Act::Confirm);
    let log2 = p2.log.clone();
    let (mut h, fwd) = Forwarder::new(
        ob.clone(),
        p2,
        encode_loss,
        fconfig(4, ReplayOrder::InOrder),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn(fwd.run(cancel.clone()));
    h.wait_for(|s| s.acked == Some(Sequence(50))).await;
    cancel.cancel();
    task.await.unwrap();
    let log2 = log2.lock().unwrap();
    assert_eq!(
        log2.confirmed.first().map(String::as_str),
        Some("rec-00000020")
    );
    assert_eq!(log2.confirmed.len(), 30);
}
