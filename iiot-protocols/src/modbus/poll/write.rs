//! Writes: encoding through the map, grouping adjacent tags, and sending FC5/6/15/16.

use iiot_core::types::Value;
use tokio::sync::oneshot;
use tokio_modbus::client::{Reader as _, Writer as _};

use super::Poller;
use crate::modbus::codec::{CodecError, encode_registers};
use crate::modbus::error::{ExceptionCode, ReadFailure};
use crate::modbus::map::{Area, DataType, RegisterMap, Tag, WriteFunction};
use crate::modbus::transport::Connector;

/// Most coils one FC15 request may write.
const MAX_WRITE_BITS: usize = 1968;
/// Most registers one FC16 request may write.
const MAX_WRITE_REGISTERS: usize = 123;

/// The device's answer to a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The device confirmed the write.
    Written,
    /// The device answered with an exception; nothing was written.
    Refused(ExceptionCode),
}

/// A write that could not be sent or whose fate is unknown.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// No tag of that name in the map.
    #[error("unknown tag {tag:?}")]
    UnknownTag {
        /// The name.
        tag: String,
    },
    /// The tag's area cannot be written (inputs).
    #[error("tag {tag:?} in {area:?} is read-only")]
    ReadOnly {
        /// The tag.
        tag: String,
        /// Its area.
        area: Area,
    },
    /// The value does not encode for the tag.
    #[error("tag {tag:?}: {source}")]
    Encode {
        /// The tag.
        tag: String,
        /// Why.
        source: CodecError,
    },
    /// The write was sent but no answer came: it may or may not have happened. Writes are
    /// never retried (at most once for physical effects).
    #[error("tag {tag:?}: write failed, outcome unknown: {failure}")]
    Failed {
        /// The tag (the first one of a merged request).
        tag: String,
        /// Timeout, connection or protocol failure.
        failure: ReadFailure,
    },
    /// The poller stopped.
    #[error("poller stopped")]
    Closed,
    /// The write queue is full (from [`PollerHandle::try_write`](super::PollerHandle::try_write)).
    #[error("write queue full")]
    Full,
}

/// One write request on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WriteOp {
    /// FC5 (one coil, not `multiple`) or FC15.
    Coils {
        tag: String,
        unit: u8,
        addr: u16,
        bits: Vec<bool>,
        multiple: bool,
    },
    /// FC6 (one register, not `multiple`) or FC16.
    Registers {
        tag: String,
        unit: u8,
        addr: u16,
        words: Vec<u16>,
        multiple: bool,
    },
    /// Read-modify-write of one bit of a holding register.
    Bit {
        tag: String,
        unit: u8,
        addr: u16,
        mask: u16,
        on: bool,
        multiple: bool,
    },
}

pub(crate) struct WriteCmd {
    op: WriteOp,
    reply: oneshot::Sender<Result<WriteOutcome, WriteError>>,
}

type Reply = oneshot::Receiver<Result<WriteOutcome, WriteError>>;

impl WriteCmd {
    pub(crate) fn new(op: WriteOp) -> (Self, Reply) {
        let (reply, rx) = oneshot::channel();
        (Self { op, reply }, rx)
    }
}

fn encode<'m>(
    map: &'m RegisterMap,
    name: &str,
    value: &Value,
) -> Result<(&'m Tag, Vec<u16>), WriteError> {
    let (_, tag) = map.find(name).ok_or_else(|| WriteError::UnknownTag {
        tag: name.to_owned(),
    })?;
    if !tag.area.is_writable() {
        return Err(WriteError::ReadOnly {
            tag: name.to_owned(),
            area: tag.area,
        });
    }
    let words = encode_registers(tag, value).map_err(|source| WriteError::Encode {
        tag: name.to_owned(),
        source,
    })?;
    Ok((tag, words))
}

fn single(tag: &Tag, words: Vec<u16>) -> WriteOp {
    let (unit, addr, name) = (tag.unit_id, tag.address, tag.name.to_string());
    let multiple = tag.write_function == WriteFunction::Multiple;
    match (tag.area, tag.data_type) {
        (Area::Coil, _) => WriteOp::Coils {
            tag: name,
            unit,
            addr,
            bits: vec![words.first().is_some_and(|w| *w != 0)],
            multiple,
        },
        (_, DataType::Bit) => {
            let mask = 1u16 << (tag.bit & 15);
            WriteOp::Bit {
                tag: name,
                unit,
                addr,
                mask,
                on: words.first().is_some_and(|w| *w & mask != 0),
                multiple,
            }
        }
        _ => WriteOp::Registers {
            tag: name,
            unit,
            addr,
            words,
            multiple,
        },
    }
}

/// The op writing one tag.
pub(crate) fn op_for(map: &RegisterMap, name: &str, value: &Value) -> Result<WriteOp, WriteError> {
    let (tag, words) = encode(map, name, value)?;
    Ok(single(tag, words))
}

/// Encodes every write, then merges tags of one unit and area at adjacent addresses
/// (bit tags always alone) into as few ops as the FC15/FC16 limits allow. Returns each op
/// with the input positions it covers.
pub(crate) fn group(
    map: &RegisterMap,
    writes: &[(&str, Value)],
) -> Result<Vec<(WriteOp, Vec<usize>)>, WriteError> {
    let mut items = Vec::with_capacity(writes.len());
    for (pos, (name, value)) in writes.iter().enumerate() {
        let (tag, words) = encode(map, name, value)?;
        items.push((pos, tag, words));
    }
    items.sort_by_key(|(pos, t, _)| (t.unit_id, t.area, t.address, *pos));
    let mut out: Vec<(WriteOp, Vec<usize>)> = Vec::new();
    for (pos, tag, words) in items {
        let op = single(tag, words);
        if let Some((last, members)) = out.last_mut()
            && merge(last, &op)
        {
            members.push(pos);
            continue;
        }
        out.push((op, vec![pos]));
    }
    Ok(out)
}

/// Appends `next` to `last` when they are contiguous on the same unit and within limits.
fn merge(last: &mut WriteOp, next: &WriteOp) -> bool {
    match (last, next) {
        (
            WriteOp::Coils {
                unit,
                addr,
                bits,
                multiple,
                ..
            },
            WriteOp::Coils {
                unit: u2,
                addr: a2,
                bits: b2,
                ..
            },
        ) if unit == u2
            && usize::from(*addr) + bits.len() == usize::from(*a2)
            && bits.len() + b2.len() <= MAX_WRITE_BITS =>
        {
            bits.extend_from_slice(b2);
            *multiple = true;
            true
        }
        (
            WriteOp::Registers {
                unit,
                addr,
                words,
                multiple,
                ..
            },
            WriteOp::Registers {
                unit: u2,
                addr: a2,
                words: w2,
                ..
            },
        ) if unit == u2
            && usize::from(*addr) + words.len() == usize::from(*a2)
            && words.len() + w2.len() <= MAX_WRITE_REGISTERS =>
        {
            words.extend_from_slice(w2);
            *multiple = true;
            true
        }
        _ => false,
    }
}

impl<C: Connector> Poller<C> {
    /// Performs one write; never retried.
    pub(super) async fn write(&mut self, cmd: WriteCmd) {
        let WriteCmd { op, reply } = cmd;
        let (name, unit) = match &op {
            WriteOp::Coils { tag, unit, .. }
            | WriteOp::Registers { tag, unit, .. }
            | WriteOp::Bit { tag, unit, .. } => (tag.clone(), *unit),
        };
        let result = self
            .attempts(unit, 0, move |ctx| {
                let op = op.clone();
                Box::pin(async move {
                    match op {
                        WriteOp::Coils {
                            addr,
                            bits,
                            multiple,
                            ..
                        } => match bits.as_slice() {
                            [b] if !multiple => ctx.write_single_coil(addr, *b).await,
                            bs => ctx.write_multiple_coils(addr, bs).await,
                        },
                        WriteOp::Registers {
                            addr,
                            words,
                            multiple,
                            ..
                        } => match words.as_slice() {
                            [w] if !multiple => ctx.write_single_register(addr, *w).await,
                            ws => ctx.write_multiple_registers(addr, ws).await,
                        },
                        WriteOp::Bit {
                            addr,
                            mask,
                            on,
                            multiple,
                            ..
                        } => {
                            let current = match ctx.read_holding_registers(addr, 1).await? {
                                Ok(w) => w.first().copied().unwrap_or(0),
                                Err(e) => return Ok(Err(e)),
                            };
                            let next = if on { current | mask } else { current & !mask };
                            if multiple {
                                ctx.write_multiple_registers(addr, &[next]).await
                            } else {
                                ctx.write_single_register(addr, next).await
                            }
                        }
                    }
                })
            })
            .await;
        let answer = match result {
            Ok(Ok(())) => Ok(WriteOutcome::Written),
            Ok(Err(exc)) => Ok(WriteOutcome::Refused(exc)),
            Err(failure) => Err(WriteError::Failed { tag: name, failure }),
        };
        let _ = reply.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> RegisterMap {
        RegisterMap::from_toml_str(
            r#"
            [[tags]]
            name = "c0"
            address = "00001"
            type = "bool"
            [[tags]]
            name = "c1"
            address = "00002"
            type = "bool"
            [[tags]]
            name = "r0"
            address = "40001"
            type = "f32"
            [[tags]]
            name = "r2"
            address = "40003"
            type = "u16"
            [[tags]]
            name = "r9"
            address = "40010"
            type = "u16"
            [[tags]]
            name = "b"
            address = "40004"
            type = "bit"
            bit = 1
            [[tags]]
            name = "other_unit"
            unit_id = 2
            address = "40004"
            type = "u16"
            "#,
        )
        .unwrap()
    }

    #[test]
    fn adjacent_tags_merge_into_one_request() {
        let m = map();
        let groups = group(
            &m,
            &[
                ("r2", Value::UInt(7)),
                ("c1", Value::Bool(true)),
                ("r0", Value::Float(1.0)),
                ("c0", Value::Bool(false)),
                ("r9", Value::UInt(9)),
                ("b", Value::Bool(true)),
                ("other_unit", Value::UInt(1)),
            ],
        )
        .unwrap();
        assert_eq!(groups.len(), 5, "{groups:?}");
        let (coils, who) = &groups[0];
        assert_eq!(who, &vec![3, 1]);
        assert!(
            matches!(coils, WriteOp::Coils { addr: 0, bits, multiple: true, .. } if bits == &vec![false, true])
        );
        let (regs, who) = &groups[1];
        assert_eq!(who, &vec![2, 0]);
        assert!(
            matches!(regs, WriteOp::Registers { addr: 0, words, multiple: true, .. } if words == &vec![0x3F80, 0, 7])
        );
        assert!(matches!(
            groups[2].0,
            WriteOp::Bit {
                addr: 3,
                mask: 2,
                on: true,
                ..
            }
        ));
        assert!(matches!(
            groups[3].0,
            WriteOp::Registers {
                addr: 9,
                multiple: false,
                ..
            }
        ));
        assert!(matches!(groups[4].0, WriteOp::Registers { unit: 2, .. }));
    }

    #[test]
    fn encoding_errors_come_before_any_io() {
        let m = map();
        assert!(matches!(
            group(&m, &[("r2", Value::UInt(1)), ("nope", Value::UInt(1))]),
            Err(WriteError::UnknownTag { .. })
        ));
        assert!(matches!(
            group(&m, &[("r2", Value::Int(-1))]),
            Err(WriteError::Encode { .. })
        ));
    }
}
