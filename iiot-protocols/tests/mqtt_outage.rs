//! Broker outages against a Mosquitto process owned by the test (issue 5).
//!
//! - 10 000 confirmed publishes while the broker is stopped and restarted twice:
//!   the subscriber receives every message id at least once; duplicates are
//!   counted and reported.
//! - A broker that lost the session (`session_present = false`): the session
//!   restores its subscriptions by itself.

#[path = "common/mqtt.rs"]
mod mqtt_common;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use iiot_core::publish::{ConfirmedPublish, OutboundMessage, PublishErrorKind, QoS};
use iiot_protocols::mqtt::{ConnectionState, MqttConfig, MqttVersion, Session};
use mqtt_common::{Mosquitto, prefix, unique};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(10);
const TOTAL: u32 = 10_000;
const WORKERS: usize = 32;

fn config(broker: &Mosquitto, device: &str, version: MqttVersion) -> MqttConfig {
    let mut c = MqttConfig::new(broker.url(false), device, prefix(device));
    c.set_protocol(version)
        .set_reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .set_keepalive(Duration::from_secs(5))
        .set_inbound_queue(NonZeroUsize::new(1024).unwrap());
    c
}

/// Polls `cond` every 5 ms until true, at most `timeout`.
async fn until(timeout: Duration, cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cond()
}

// One scenario told start to end; splitting it would hide the sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_confirmed_publishes_survive_two_restarts_mqtt5() {
    ten_thousand_confirmed_publishes_survive_two_restarts(MqttVersion::V5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_confirmed_publishes_survive_two_restarts_mqtt311() {
    ten_thousand_confirmed_publishes_survive_two_restarts(MqttVersion::V311).await;
}

#[allow(clippy::too_many_lines)]
async fn ten_thousand_confirmed_publishes_survive_two_restarts(version: MqttVersion) {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "allow_anonymous true\npersistence true\npersistence_location {}/\nmax_queued_messages 0\nautosave_interval 0\n",
        dir.path().display()
    );
    let Some(mut broker) = Mosquitto::start(dir.path(), &extra) else {
        return;
    };
    let device = unique("outage");
    let topic = format!("{}/telemetry", prefix(&device));

    // The subscriber is a persistent session too, so the broker queues for it
    // while it reconnects.
    let sub_id = unique("outage-sub");
    let (sub, sub_session, mut inbound) = Session::new(&config(&broker, &sub_id, version)).unwrap();
    let cancel = CancellationToken::new();
    let sub_driver = tokio::spawn(sub_session.run(cancel.clone()));
    assert!(sub.wait_connected(T).await);
    sub.subscribe(topic.clone(), QoS::AtLeastOnce)
        .await
        .unwrap();
    let seen: Arc<std::sync::Mutex<HashMap<u32, u32>>> = Arc::default();
    {
        let mut st = sub.state();
        tokio::spawn(async move {
            while st.changed().await.is_ok() {
                let s = st.borrow().clone();
                eprintln!("subscriber state: {s:?}");
            }
        });
    }
    let collector = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(m) = inbound.recv().await {
                if let Ok(b) = <[u8; 4]>::try_from(m.payload.as_ref()) {
                    *seen
                        .lock()
                        .unwrap()
                        .entry(u32::from_be_bytes(b))
                        .or_default() += 1;
                }
            }
        })
    };

    let (publisher, pub_session, _inbound) =
        Session::new(&config(&broker, &device, version)).unwrap();
    let pub_driver = tokio::spawn(pub_session.run(cancel.clone()));
    {
        let mut st = publisher.state();
        tokio::spawn(async move {
            while st.changed().await.is_ok() {
                let s = st.borrow().clone();
                eprintln!("publisher state: {s:?}");
            }
        });
    }
    assert!(publisher.wait_connected(T).await);

    // A forwarder: workers take the next id and publish it until confirmed,
    // resending whatever was failed back (at least once).
    let next = Arc::new(AtomicUsize::new(0));
    let confirmed = Arc::new(AtomicUsize::new(0));
    let resent = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (publisher, topic) = (publisher.clone(), topic.clone());
        let (next, confirmed, resent) = (next.clone(), confirmed.clone(), resent.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let id = next.fetch_add(1, Ordering::Relaxed) as u32;
                if id >= TOTAL {
                    return;
                }
                let mut msg = OutboundMessage::new(topic.clone(), id.to_be_bytes().to_vec());
                loop {
                    match publisher.publish_confirmed(msg).await {
                        Ok(()) => break,
                        Err(e) => {
                            assert!(
                                matches!(
                                    e.kind,
                                    PublishErrorKind::ConnectionLost
                                        | PublishErrorKind::Timeout
                                        | PublishErrorKind::NotConnected
                                ),
                                "{e}"
                            );
                            assert_eq!(e.message.payload.as_ref(), id.to_be_bytes());
                            resent.fetch_add(1, Ordering::Relaxed);
                            msg = e.message;
                            publisher.wait_connected(Duration::from_secs(30)).await;
                        }
                    }
                }
                confirmed.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    for threshold in [3_000, 6_500] {
        assert!(
            until(Duration::from_secs(60), || confirmed
                .load(Ordering::Relaxed)
                >= threshold)
            .await,
            "stuck at {}",
            confirmed.load(Ordering::Relaxed)
        );
        tokio::task::block_in_place(|| broker.stop());
        let mut state = publisher.state();
        tokio::time::timeout(T, state.wait_for(|s| !s.is_connected()))
            .await
            .unwrap()
            .unwrap();
        tokio::task::block_in_place(|| broker.restart());
    }
    for w in workers {
        tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(confirmed.load(Ordering::Relaxed), TOTAL as usize);

    let complete = until(Duration::from_secs(30), || {
        seen.lock().unwrap().len() == TOTAL as usize
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    let missing: Vec<u32> = (0..TOTAL).filter(|i| !seen.contains_key(i)).collect();
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "outage: {TOTAL} confirmed, {} resent after fail-back, {} distinct received, {duplicates} duplicates, {} missing",
        resent.load(Ordering::Relaxed),
        seen.len(),
        missing.len()
    );
    assert!(
        complete,
        "missing ids: {:?}",
        &missing[..missing.len().min(20)]
    );

    cancel.cancel();
    pub_driver.await.unwrap();
    sub_driver.await.unwrap();
    collector.await.unwrap();
}

#[tokio::test]
async fn subscriptions_restored_when_session_lost_mqtt5() {
    subscriptions_restored_when_session_lost(MqttVersion::V5).await;
}

#[tokio::test]
async fn subscriptions_restored_when_session_lost_mqtt311() {
    subscriptions_restored_when_session_lost(MqttVersion::V311).await;
}

async fn subscriptions_restored_when_session_lost(version: MqttVersion) {
    let dir = tempfile::tempdir().unwrap();
    // No persistence: a restarted broker has forgotten every session.
    let Some(mut broker) = Mosquitto::start(dir.path(), "allow_anonymous true\npersistence false")
    else {
        return;
    };
    let device = unique("restore");
    let (handle, session, mut inbound) = Session::new(&config(&broker, &device, version)).unwrap();
    let cancel = CancellationToken::new();
    let driver = tokio::spawn(session.run(cancel.clone()));
    assert!(handle.wait_connected(T).await);
    let filter = format!("{}/config/desired", prefix(&device));
    handle
        .subscribe(filter.clone(), QoS::AtLeastOnce)
        .await
        .unwrap();

    broker.kill();
    let mut state = handle.state();
    tokio::time::timeout(T, state.wait_for(|s| !s.is_connected()))
        .await
        .unwrap()
        .unwrap();
    broker.restart();
    tokio::time::timeout(
        T,
        state.wait_for(|s| {
            *s == ConnectionState::Connected {
                session_present: false,
            }
        }),
    )
    .await
    .unwrap()
    .unwrap();

    // Another client publishes until the restored subscription delivers.
    let (ops, ops_session, _) = Session::new(&config(&broker, &unique("ops"), version)).unwrap();
    let ops_driver = tokio::spawn(ops_session.run(cancel.clone()));
    let deadline = Instant::now() + T;
    let got = loop {
        assert!(Instant::now() < deadline, "subscription was not restored");
        ops.publish_confirmed(OutboundMessage::new(
            filter.clone(),
            b"{\"sp\":80}".to_vec(),
        ))
        .await
        .unwrap();
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), inbound.recv()).await
        {
            break m;
        }
    };
    assert_eq!(got.topic, filter);
    cancel.cancel();
    driver.await.unwrap();
    ops_driver.await.unwrap();
}
