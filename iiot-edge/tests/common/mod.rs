//! Helpers shared by the outbox and forwarder tests.
#![allow(dead_code, unreachable_pub)]

use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Duration;

use iiot_core::publish::OutboundMessage;
use iiot_core::types::{DeviceId, Sequence};
use iiot_edge::outbox::{Durability, Outbox, OutboxConfig, Record};

pub fn device() -> DeviceId {
    DeviceId::new("plc-01").unwrap()
}

pub fn nz(v: usize) -> NonZeroUsize {
    NonZeroUsize::new(v).unwrap()
}

/// A message whose payload names its index, so tests can check identity.
pub fn msg(i: u64) -> OutboundMessage {
    OutboundMessage::new(
        "acme/site/area/line/plc/plc-01/telemetry",
        format!("rec-{i:08}").into_bytes(),
    )
}

pub fn every_write() -> OutboxConfig {
    OutboxConfig::default()
}

pub fn group_commit(ms: u64) -> OutboxConfig {
    let mut c = OutboxConfig::default();
    c.set_durability(Durability::GroupCommit {
        window: Duration::from_millis(ms),
    });
    c
}

pub async fn open(path: &Path, cfg: OutboxConfig) -> Outbox {
    Outbox::open(path, device(), cfg).await.unwrap()
}

/// Every readable record from the head, in order.
pub async fn read_all(ob: &Outbox) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    let mut from = Sequence(0);
    loop {
        let batch = ob.read(from, nz(1000), nz(1 << 30)).await.unwrap();
        let Some(last) = batch.last() else { break };
        from = Sequence(last.seq.0 + 1);
        out.extend(batch);
    }
    out
}

pub fn payload_str(r: &Record) -> String {
    String::from_utf8(r.message.payload.to_vec()).unwrap()
}
