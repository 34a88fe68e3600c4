//! The commands table of the PostgreSQL sink: the upserts of one commit and the
//! expiry sweep.
//!
//! One statement per command or ack, in order, inside the commit's transaction:
//! commands are few (people and programs issue them, not sensors), and several
//! acks of one command in one batch must each see the row the previous one left
//! (a single multi-row `ON CONFLICT DO UPDATE` may not touch a row twice).

use iiot_core::types::{AckReason, CommandState, Value};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Statement, Transaction};

use super::StepError;
use super::commit::storable_text;
use super::types::{PgTime, PgU64};
use crate::commands::{OpKind, TrackedState};
use crate::record::CommitBatch;

/// `value_type` and the six value columns, typed for statement parameters
/// (the same layout as the samples table; `f32` widened into `v_double`).
struct ValueParams<'a> {
    value_type: Option<&'static str>,
    double: Option<f64>,
    int: Option<i64>,
    uint: Option<PgU64>,
    boolean: Option<bool>,
    text: Option<&'a str>,
    bytes: Option<&'a [u8]>,
}

fn value_params(v: Option<&Value>) -> ValueParams<'_> {
    let mut p = ValueParams {
        value_type: v.map(Value::type_name),
        double: None,
        int: None,
        uint: None,
        boolean: None,
        text: None,
        bytes: None,
    };
    match v {
        Some(Value::Double(x)) => p.double = Some(*x),
        Some(Value::Float(x)) => p.double = Some(f64::from(*x)),
        Some(Value::Int(x)) => p.int = Some(*x),
        Some(Value::UInt(x)) => p.uint = Some(PgU64(*x)),
        Some(Value::Bool(x)) => p.boolean = Some(*x),
        Some(Value::String(x)) => p.text = Some(x),
        Some(Value::Bytes(x)) => p.bytes = Some(x),
        // None, or a variant added to core later: its type name, no value.
        _ => {}
    }
    p
}

/// Upserts the commands and (non-duplicate) acks of `batch` inside `tx`.
pub(super) async fn write(
    tx: &Transaction<'_>,
    upsert_command: &Statement,
    upsert_ack: &Statement,
    batch: &CommitBatch,
) -> Result<(), StepError> {
    let queued = TrackedState::State(CommandState::Queued).as_str();
    for a in &batch.commands {
        let c = &a.command;
        let id = c.id.to_bytes();
        let v = value_params(c.op.value());
        let action = storable_text(&c.action);
        let issuer = storable_text(&c.issuer);
        let reason = storable_text(&c.reason);
        let params: [&(dyn ToSql + Sync); 18] = [
            &c.device_id.as_str(),
            &&id[..],
            &c.target.as_str(),
            &action,
            &OpKind::of(&c.op).as_str(),
            &v.value_type,
            &v.double,
            &v.int,
            &v.uint,
            &v.boolean,
            &v.text,
            &v.bytes,
            &issuer,
            &reason,
            &PgTime(c.issued_at),
            &PgTime(c.expires_at),
            &queued,
            &PgTime(a.received_at),
        ];
        tx.execute(upsert_command, &params)
            .await
            .map_err(|e| ("upsert command", e))?;
    }
    for a in batch.command_acks.iter().filter(|a| !a.ack.duplicate) {
        let k = &a.ack;
        let id = k.command_id.to_bytes();
        let r = value_params(k.result.as_ref());
        let detail = k.detail.as_deref().map(storable_text);
        let params: [&(dyn ToSql + Sync); 16] = [
            &k.device_id.as_str(),
            &&id[..],
            &k.state.as_str(),
            &k.reason.map(AckReason::as_str),
            &detail,
            &r.value_type,
            &r.double,
            &r.int,
            &r.uint,
            &r.boolean,
            &r.text,
            &r.bytes,
            &k.received_at.map(PgTime),
            &PgTime(k.time),
            &k.state.is_terminal().then_some(PgTime(k.time)),
            &PgTime(a.received_at),
        ];
        tx.execute(upsert_ack, &params)
            .await
            .map_err(|e| ("upsert command ack", e))?;
    }
    Ok(())
}
