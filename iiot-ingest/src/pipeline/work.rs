//! What the pipeline holds between receipt and commit, and how a refused
//! commit is split until its poison record is isolated.

use bytes::Bytes;
use iiot_core::topic::TopicClass;
use iiot_core::types::MessageId;

use crate::record::{CommitBatch, DeadLetter, DeadLetterReason};

/// The payloads of a commit batch's telemetry, commands and acks (index for
/// index), kept beside it so a poison record can be dead-lettered with its
/// original bytes.
#[derive(Default)]
pub(super) struct Work {
    pub(super) batch: CommitBatch,
    pub(super) payloads: Vec<Bytes>,
    pub(super) command_payloads: Vec<Bytes>,
    pub(super) ack_payloads: Vec<Bytes>,
}

impl Work {
    /// Records a refusal can be pinned on: telemetry batches, commands, acks.
    pub(super) fn isolatable(&self) -> usize {
        self.batch.telemetry.len() + self.batch.commands.len() + self.batch.command_acks.len()
    }

    /// Takes out the only isolatable record as a poison dead letter.
    pub(super) fn pop_poison(&mut self, detail: String) -> Option<DeadLetter> {
        let b = &mut self.batch;
        let (topic, payload, received_at) = if let Some(t) = b.telemetry.pop() {
            (t.topic, self.payloads.pop(), t.received_at)
        } else if let Some(c) = b.commands.pop() {
            (c.topic, self.command_payloads.pop(), c.received_at)
        } else {
            let a = b.command_acks.pop()?;
            (a.topic, self.ack_payloads.pop(), a.received_at)
        };
        Some(DeadLetter {
            topic,
            payload: payload.unwrap_or_default(),
            reason: DeadLetterReason::Poison,
            detail,
            received_at,
        })
    }
}

/// Splits work with more than one isolatable record in two non-empty parts:
/// halves of its telemetry while it has several batches, then the commands and
/// acks apart from the one batch, then halves of the commands, then the acks
/// apart from the one command, then halves of the acks. The first part carries
/// everything else (data loss, gaps, dead letters).
pub(super) fn split(mut w: Work) -> (Work, Work) {
    fn halve<T>(items: &mut Vec<T>, payloads: &mut Vec<Bytes>) -> (Vec<T>, Vec<Bytes>) {
        let mid = items.len() / 2;
        let tail = items.split_off(mid);
        let tail_payloads = payloads.split_off(mid.min(payloads.len()));
        (tail, tail_payloads)
    }
    let mut b = Work::default();
    let batch = &mut w.batch;
    if batch.telemetry.len() > 1 {
        (b.batch.telemetry, b.payloads) = halve(&mut batch.telemetry, &mut w.payloads);
    } else if !batch.telemetry.is_empty() {
        b.batch.commands = std::mem::take(&mut batch.commands);
        b.command_payloads = std::mem::take(&mut w.command_payloads);
        b.batch.command_acks = std::mem::take(&mut batch.command_acks);
        b.ack_payloads = std::mem::take(&mut w.ack_payloads);
    } else if batch.commands.len() > 1 {
        (b.batch.commands, b.command_payloads) =
            halve(&mut batch.commands, &mut w.command_payloads);
    } else if !batch.commands.is_empty() {
        b.batch.command_acks = std::mem::take(&mut batch.command_acks);
        b.ack_payloads = std::mem::take(&mut w.ack_payloads);
    } else {
        (b.batch.command_acks, b.ack_payloads) =
            halve(&mut batch.command_acks, &mut w.ack_payloads);
    }
    (w, b)
}

/// Why a command or ack with `id` does not belong on a topic of `class`, if it
/// does not.
pub(super) fn id_mismatch(class: &TopicClass, id: MessageId) -> Option<String> {
    match class {
        TopicClass::Command(t) | TopicClass::CommandAck(t) if *t != id => {
            Some(format!("payload command id {id} on topic of command {t}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use iiot_core::types::{
        CommandAck, CommandState, Constraints, DeviceId, Operation, Sequence, TagPath,
        TelemetryBatch, Timestamp, WRITE,
    };

    use super::*;
    use crate::record::{AcceptedAck, AcceptedBatch, AcceptedCommand};

    fn work(batches: usize, commands: usize, acks: usize) -> Work {
        let dev = DeviceId::new("d").unwrap();
        let at = Timestamp::UNIX_EPOCH;
        let mut w = Work::default();
        for i in 0..batches {
            w.batch.telemetry.push(AcceptedBatch {
                batch: TelemetryBatch::new(dev.clone(), Sequence(i as u64), vec![]),
                topic: format!("t{i}"),
                received_at: at,
            });
            w.payloads.push(Bytes::from(format!("t{i}")));
        }
        for i in 0..commands {
            w.batch.commands.push(AcceptedCommand {
                command: iiot_core::types::Command {
                    id: MessageId::from_u128(i as u128),
                    device_id: dev.clone(),
                    action: WRITE.into(),
                    target: TagPath::new("x").unwrap(),
                    op: Operation::Invoke,
                    issued_at: at,
                    expires_at: at,
                    issuer: String::new(),
                    reason: String::new(),
                    constraints: Constraints::default(),
                },
                topic: format!("c{i}"),
                received_at: at,
            });
            w.command_payloads.push(Bytes::from(format!("c{i}")));
        }
        for i in 0..acks {
            w.batch.command_acks.push(AcceptedAck {
                ack: CommandAck {
                    command_id: MessageId::from_u128(i as u128),
                    device_id: dev.clone(),
                    state: CommandState::Completed,
                    time: at,
                    detail: None,
                    result: None,
                    duplicate: false,
                    reason: None,
                    received_at: None,
                },
                topic: format!("a{i}"),
                received_at: at,
            });
            w.ack_payloads.push(Bytes::from(format!("a{i}")));
        }
        w
    }

    /// Splitting ends with one record per part, none lost, each with its own
    /// payload, whatever the mix.
    #[test]
    fn split_isolates_every_record_with_its_payload() {
        for (t, c, a) in [
            (3, 3, 3),
            (0, 5, 0),
            (0, 0, 4),
            (1, 0, 2),
            (0, 1, 1),
            (4, 0, 0),
        ] {
            let mut stack = vec![work(t, c, a)];
            let mut singles = Vec::new();
            while let Some(w) = stack.pop() {
                if w.isolatable() > 1 {
                    let (x, y) = split(w);
                    assert!(x.isolatable() >= 1 && y.isolatable() >= 1);
                    stack.push(x);
                    stack.push(y);
                } else {
                    singles.push(w);
                }
            }
            assert_eq!(singles.len(), t + c + a, "{t} {c} {a}");
            let mut seen: Vec<String> = singles
                .into_iter()
                .map(|mut w| {
                    let p = w.pop_poison(String::new()).unwrap();
                    assert_eq!(
                        p.payload,
                        Bytes::from(p.topic.clone()),
                        "payload of its record"
                    );
                    p.topic
                })
                .collect();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), t + c + a);
        }
    }
}
