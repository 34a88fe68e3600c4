//! The control lane survives SIGKILL (issue 14): a child gateway, its transport
//! down, produces telemetry batches without pause while it appends control
//! messages (command acks) between them, printing each control message once
//! `ControlLane::publish` returned. The parent SIGKILLs it at a random moment,
//! restarts the gateway on the same stores with a transport that works, and
//! checks that every acknowledged control message is delivered, in order, and
//! that the telemetry sequence has no hole (ingest would record zero gaps).
//!
//! The child is this test binary re-executed with `IIOT_CONTROL_CHILD` set.

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::num::NonZeroUsize;
use std::time::Duration;

use common::gateway::{Recorder, path};
use iiot_core::codec::{Limits, protobuf};
use iiot_core::publish::{ConfirmedPublish, OutboundMessage, PublishError, PublishErrorKind};
use iiot_core::source::{ReadingSink, Source, SourceInfo};
use iiot_core::types::{DeviceId, Sample, TagPath, Timestamp};
use iiot_edge::forwarder::ForwarderConfig;
use iiot_edge::outbox::{Outbox, OutboxConfig, WhenFull};
use iiot_edge::runtime::{BatchConfig, GatewayBuilder};
use rand::Rng;
use tokio_util::sync::CancellationToken;

const CHILD_ENV: &str = "IIOT_CONTROL_CHILD";

fn ack_topic() -> String {
    format!("{}/commands/01J0000000000000000000000A/ack", path())
}

async fn open(dir: &std::path::Path, name: &str, block: bool) -> Outbox {
    let mut cfg = OutboxConfig::default();
    if block {
        cfg.set_when_full(WhenFull::Block);
    }
    Outbox::open(dir.join(name), DeviceId::new("dev-1").unwrap(), cfg)
        .await
        .unwrap()
}

/// A broker that is never reachable.
#[derive(Clone)]
struct Down;

impl ConfirmedPublish for Down {
    async fn publish_confirmed(&self, m: OutboundMessage) -> Result<(), PublishError> {
        Err(PublishError {
            message: m,
            kind: PublishErrorKind::ConnectionLost,
        })
    }
}

/// Reads one tag without pause until stopped.
struct Endless;

impl Source for Endless {
    fn info(&self) -> SourceInfo {
        SourceInfo::new("endless")
    }

    async fn run<K: ReadingSink + 'static>(
        self,
        mut sink: K,
        stop: impl Future<Output = ()> + Send + 'static,
    ) {
        tokio::pin!(stop);
        let tag = TagPath::new("t").unwrap();
        for i in 0u64.. {
            let s = Sample::good(tag.clone(), i as f64, Timestamp::now());
            tokio::select! {
                () = &mut stop => return,
                r = sink.send(s) => if r.is_err() { return },
            }
        }
    }
}

fn fast_forwarder() -> ForwarderConfig {
    let mut fc = ForwarderConfig::default();
    fc.set_backoff(Duration::from_millis(5), Duration::from_millis(20))
        .set_replay_rate(None);
    fc
}

fn one_sample_batches() -> BatchConfig {
    let mut b = BatchConfig::default();
    b.set_max_samples(NonZeroUsize::MIN);
    b
}

/// The child: telemetry flowing, a control message every few ms, `CONTROL <n>`
/// printed once each is durable. Does nothing as a normal test.
#[test]
fn control_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = std::path::PathBuf::from(dir);
        let telemetry = open(&dir, "telemetry", false).await;
        let control = open(&dir, "control", true).await;
        let start: u64 = std::env::var("IIOT_CONTROL_FROM").unwrap().parse().unwrap();
        let cancel = CancellationToken::new();
        let gw = GatewayBuilder::new(path(), telemetry, Down)
            .batch(one_sample_batches())
            .forwarder(fast_forwarder())
            .control_lane(control, fast_forwarder())
            .source(Endless)
            .start(&cancel);
        println!("OPEN");
        let lane = gw.control().unwrap().clone();
        for n in start.. {
            lane.publish(OutboundMessage::new(ack_topic(), n.to_be_bytes().to_vec()))
                .await
                .unwrap();
            println!("CONTROL {n}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
}

/// Runs the child until `kill_after` past its open, SIGKILLs it, and returns the
/// control messages it acknowledged.
fn run_child(dir: &std::path::Path, from: u64, kill_after: Duration) -> Vec<u64> {
    let lines = common::child::run_until_killed(
        "control_child",
        &[
            (CHILD_ENV, dir.display().to_string()),
            ("IIOT_CONTROL_FROM", from.to_string()),
        ],
        kill_after,
    );
    lines
        .iter()
        .filter_map(|l| l.split("CONTROL ").nth(1)?.trim().parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_messages_survive_sigkill_and_leave_telemetry_contiguous() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    let mut acked: Vec<u64> = Vec::new();
    for _ in 0..3 {
        let from = acked.last().map_or(0, |n| n + 1);
        let got = run_child(
            dir.path(),
            from,
            Duration::from_millis(rng.random_range(50..300)),
        );
        acked.extend(got);
    }
    assert!(
        acked.len() >= 3,
        "too few control messages to prove anything: {acked:?}"
    );

    // The restart: the same stores, a broker that answers, no source.
    let telemetry = open(dir.path(), "telemetry", false).await;
    let control = open(dir.path(), "control", true).await;
    let recorder = Recorder::default();
    let cancel = CancellationToken::new();
    let mut gw = GatewayBuilder::new(path(), telemetry, recorder.clone())
        .forwarder(fast_forwarder())
        .control_lane(control, fast_forwarder())
        .start(&cancel);
    gw.stop_producing().await;
    assert!(
        gw.shutdown(&cancel, Duration::from_secs(60)).await,
        "drained"
    );

    let seen = recorder.0.lock().unwrap().clone();
    let control: Vec<u64> = seen
        .iter()
        .filter(|m| m.topic == ack_topic())
        .map(|m| u64::from_be_bytes(m.payload[..8].try_into().unwrap()))
        .collect();
    // Every acknowledged one, in order; one written but killed before it printed
    // may come too (never one that was not written).
    let delivered: BTreeSet<u64> = control.iter().copied().collect();
    for n in &acked {
        assert!(
            delivered.contains(n),
            "control message {n} lost: {control:?}"
        );
    }
    let mut sorted = control.clone();
    sorted.sort_unstable();
    assert_eq!(control, sorted, "control messages in order");

    let topic = path().telemetry().to_string();
    let seqs: BTreeSet<u64> = seen
        .iter()
        .filter(|m| m.topic == topic)
        .map(|m| {
            protobuf::decode_telemetry(&m.payload, &Limits::default())
                .unwrap()
                .seq
                .0
        })
        .collect();
    assert!(!seqs.is_empty(), "telemetry was produced");
    let max = *seqs.last().unwrap();
    let expected: BTreeSet<u64> = (1..=max).collect();
    assert_eq!(seqs, expected, "no telemetry sequence taken or skipped");
}
