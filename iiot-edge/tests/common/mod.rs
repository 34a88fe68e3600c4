//! Helpers shared by the outbox and forwarder tests.
#![allow(dead_code, unreachable_pub)]

use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Duration;

use iiot_core::publish::OutboundMessage;
use iiot_core::types::{DeviceId, Sequence};
use iiot_edge::outbox::{Durability, Outbox, OutboxConfig, Record};

pub mod child;
pub mod commands;
pub mod gateway;
pub mod ota;

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

/// A transport whose behaviour tests script: per attempt it may fail, stall (then time out)
/// or confirm. It logs every attempt and every confirmation by the record index in the
/// payload (`rec-NNNNNNNN`), or `loss:<first>-<last>` for data-loss events.
pub mod flaky {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use iiot_core::publish::{ConfirmedPublish, OutboundMessage, PublishError, PublishErrorKind};

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Act {
        Confirm,
        Fail,
        Stall,
    }

    #[derive(Default)]
    pub struct Log {
        pub attempts: Vec<String>,
        pub confirmed: Vec<String>,
        pub failed: Vec<String>,
        pub per_key: HashMap<String, u32>,
    }

    pub type Script = Box<dyn Fn(&str, u32, usize) -> Act + Send + Sync>;

    #[derive(Clone)]
    pub struct Flaky {
        pub log: Arc<Mutex<Log>>,
        script: Arc<Script>,
    }

    impl Flaky {
        /// `script(key, attempt_of_this_key, total_attempts)` decides each attempt.
        pub fn new(script: impl Fn(&str, u32, usize) -> Act + Send + Sync + 'static) -> Self {
            Self {
                log: Arc::default(),
                script: Arc::new(Box::new(script)),
            }
        }
    }

    pub fn key(m: &OutboundMessage) -> String {
        String::from_utf8_lossy(&m.payload).into_owned()
    }

    impl ConfirmedPublish for Flaky {
        fn publish_confirmed(
            &self,
            message: OutboundMessage,
        ) -> impl Future<Output = Result<(), PublishError>> + Send {
            let log = Arc::clone(&self.log);
            let script = Arc::clone(&self.script);
            async move {
                let k = key(&message);
                let act = {
                    let mut l = log.lock().unwrap();
                    l.attempts.push(k.clone());
                    let n = l.per_key.entry(k.clone()).or_insert(0);
                    *n += 1;
                    let n = *n;
                    let total = l.attempts.len();
                    drop(l);
                    script(&k, n, total)
                };
                // Confirmation takes a little while, so several are in flight.
                tokio::time::sleep(Duration::from_millis(5)).await;
                let kind = match act {
                    Act::Confirm => {
                        log.lock().unwrap().confirmed.push(k);
                        return Ok(());
                    }
                    Act::Fail => PublishErrorKind::ConnectionLost,
                    Act::Stall => {
                        tokio::time::sleep(Duration::from_secs(120)).await;
                        PublishErrorKind::Timeout
                    }
                };
                log.lock().unwrap().failed.push(k);
                Err(PublishError { message, kind })
            }
        }
    }
}
