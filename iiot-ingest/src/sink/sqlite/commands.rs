//! The commands table of the SQLite sink: the upserts of one commit and the
//! expiry sweep. Runs inside `spawn_blocking`.

use std::time::Duration;

use iiot_core::types::{AckReason, CommandState, Timestamp};
use rusqlite::{Connection, params};

use super::store::{Statements, value_columns};
use crate::commands::{OpKind, TrackedState};
use crate::record::CommitBatch;

/// Upserts the commands and (non-duplicate) acks of `batch`, in order, inside
/// the commit's transaction `tx`.
pub(super) fn write(tx: &Connection, st: &Statements, batch: &CommitBatch) -> rusqlite::Result<()> {
    if !batch.commands.is_empty() {
        let mut stmt = tx.prepare_cached(&st.upsert_command)?;
        let queued = TrackedState::State(CommandState::Queued).as_str();
        for a in &batch.commands {
            let c = &a.command;
            let (vt, vd, vi, vu, vb, vs, vbytes) = value_columns(c.op.value());
            stmt.execute(params![
                c.device_id.as_str(),
                &c.id.to_bytes()[..],
                c.target.as_str(),
                c.action,
                OpKind::of(&c.op).as_str(),
                vt,
                vd,
                vi,
                vu,
                vb,
                vs,
                vbytes,
                c.issuer,
                c.reason,
                c.issued_at.unix_nanos(),
                c.expires_at.unix_nanos(),
                queued,
                a.received_at.unix_nanos(),
            ])?;
        }
    }
    if batch.command_acks.iter().any(|a| !a.ack.duplicate) {
        let mut stmt = tx.prepare_cached(&st.upsert_ack)?;
        for a in batch.command_acks.iter().filter(|a| !a.ack.duplicate) {
            let k = &a.ack;
            let (rt, rd, ri, ru, rb, rs, rbytes) = value_columns(k.result.as_ref());
            stmt.execute(params![
                k.device_id.as_str(),
                &k.command_id.to_bytes()[..],
                k.state.as_str(),
                k.reason.map(AckReason::as_str),
                k.detail,
                rt,
                rd,
                ri,
                ru,
                rb,
                rs,
                rbytes,
                k.received_at.map(Timestamp::unix_nanos),
                k.time.unix_nanos(),
                k.state.is_terminal().then_some(k.time.unix_nanos()),
                a.received_at.unix_nanos(),
            ])?;
        }
    }
    Ok(())
}

/// Marks overdue open commands `expired_unconfirmed`; how many.
pub(super) fn expire(
    conn: &Connection,
    st: &Statements,
    now: Timestamp,
    grace: Duration,
) -> rusqlite::Result<u64> {
    let cutoff = now.saturating_sub(grace);
    let mut stmt = conn.prepare_cached(&st.expire_commands)?;
    let n = stmt.execute(params![now.unix_nanos(), cutoff.unix_nanos()])?;
    Ok(n as u64)
}
