//! Command-tracking test helpers: commands and acks with fixed ids and times,
//! commit batches holding them, and readers that load either SQL sink's
//! commands table into the model's [`CommandRecord`]s.

use std::time::Duration;

use iiot_core::types::{
    AckReason, Command, CommandAck, CommandState, Constraints, DeviceId, MessageId, Operation,
    TagPath, Timestamp, Value, WRITE,
};
use iiot_ingest::commands::{CommandRecord, OpKind, TrackedState};
use iiot_ingest::record::{AcceptedAck, AcceptedCommand, CommitBatch};

use super::sink::{ValueColumns, sqlite_u64};

/// 2026-01-01T00:00:00Z: whole microseconds, so PostgreSQL keeps times exactly.
pub const C0: i64 = 1_767_225_600_000_000_000;

/// `C0` plus `s` seconds.
pub fn at(s: i64) -> Timestamp {
    Timestamp::from_unix_nanos(C0 + s * 1_000_000_000).unwrap()
}

/// A command id.
pub fn cid(n: u128) -> MessageId {
    MessageId::from_parts(1_767_225_600_000, n)
}

/// A `write` command to `device`: set `target` to `value`, issued at `at(0)`,
/// expiring at `at(ttl_s)`.
pub fn set_command(device: &str, id: u128, target: &str, value: Value, ttl_s: i64) -> Command {
    Command {
        id: cid(id),
        device_id: DeviceId::new(device).unwrap(),
        action: WRITE.into(),
        target: TagPath::new(target).unwrap(),
        op: Operation::Set(value),
        issued_at: at(0),
        expires_at: at(ttl_s),
        issuer: "ops-console".into(),
        reason: "recipe change".into(),
        constraints: Constraints {
            min: Some(0.0),
            max: Some(100.0),
            ..Constraints::default()
        },
    }
}

/// An ack of command `id` of `device` in `state` at `at(t_s)`, received by the
/// device at `at(1)`.
pub fn ack(device: &str, id: u128, state: CommandState, t_s: i64) -> CommandAck {
    CommandAck {
        command_id: cid(id),
        device_id: DeviceId::new(device).unwrap(),
        state,
        time: at(t_s),
        detail: None,
        result: None,
        duplicate: false,
        reason: None,
        received_at: Some(at(1)),
    }
}

/// The UNS topic prefix of `device` used by these tests.
pub fn prefix(device: &str) -> String {
    format!("acme/s1/a1/l1/plc/{device}")
}

/// A commit of `commands` then `acks`, received at `at(recv_s)`.
pub fn commit(commands: &[Command], acks: &[CommandAck], recv_s: i64) -> CommitBatch {
    CommitBatch {
        commands: commands
            .iter()
            .map(|c| AcceptedCommand {
                topic: format!("{}/commands/{}", prefix(c.device_id.as_str()), c.id),
                command: c.clone(),
                received_at: at(recv_s),
            })
            .collect(),
        command_acks: acks
            .iter()
            .map(|a| AcceptedAck {
                topic: format!(
                    "{}/commands/{}/ack",
                    prefix(a.device_id.as_str()),
                    a.command_id
                ),
                ack: a.clone(),
                received_at: at(recv_s),
            })
            .collect(),
        ..CommitBatch::default()
    }
}

/// The grace period of these tests.
pub const GRACE: Duration = Duration::from_secs(30);

/// The columns every reader selects, in this order.
pub const COLUMNS: &str = "device_id, command_id, target, action, op, value_type, v_double, \
     v_int, v_uint, v_bool, v_text, v_bytes, issuer, reason, issued_at, expires_at, state, \
     ack_reason, detail, result_type, r_double, r_int, r_uint, r_bool, r_text, r_bytes, \
     received_at, delivered_at, final_at, updated_at";

fn ack_reason(s: Option<String>) -> Option<AckReason> {
    let s = s?;
    Some(
        AckReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .unwrap_or_else(|| panic!("unknown ack_reason {s}")),
    )
}

fn state(s: &str) -> TrackedState {
    TrackedState::from_label(s).unwrap_or_else(|| panic!("unknown state {s}"))
}

/// Every row of a SQLite commands table, ordered by key.
pub fn sqlite_commands(conn: &rusqlite::Connection, prefix: &str) -> Vec<CommandRecord> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {COLUMNS} FROM \"{prefix}commands\" ORDER BY device_id, command_id"
        ))
        .unwrap();
    let mut rows = stmt.query([]).unwrap();
    let mut out = Vec::new();
    let ts = |v: Option<i64>| v.map(|n| Timestamp::from_unix_nanos(n).unwrap());
    while let Some(r) = rows.next().unwrap() {
        let id: Vec<u8> = r.get(1).unwrap();
        let target: Option<String> = r.get(2).unwrap();
        let op: Option<String> = r.get(4).unwrap();
        let st: String = r.get(16).unwrap();
        out.push(CommandRecord {
            device_id: DeviceId::new(r.get::<_, String>(0).unwrap()).unwrap(),
            command_id: MessageId::from_slice(&id).unwrap(),
            target: target.map(|t| TagPath::new(t).unwrap()),
            action: r.get(3).unwrap(),
            op: op.map(|o| OpKind::from_label(&o).unwrap()),
            value: ValueColumns {
                value_type: r.get(5).unwrap(),
                double: r.get(6).unwrap(),
                int: r.get(7).unwrap(),
                uint: sqlite_u64(r.get_ref(8).unwrap()),
                boolean: r.get(9).unwrap(),
                text: r.get(10).unwrap(),
                bytes: r.get(11).unwrap(),
            }
            .value(),
            issuer: r.get(12).unwrap(),
            reason: r.get(13).unwrap(),
            issued_at: ts(r.get(14).unwrap()),
            expires_at: ts(r.get(15).unwrap()),
            state: state(&st),
            ack_reason: ack_reason(r.get(17).unwrap()),
            detail: r.get(18).unwrap(),
            result: ValueColumns {
                value_type: r.get(19).unwrap(),
                double: r.get(20).unwrap(),
                int: r.get(21).unwrap(),
                uint: sqlite_u64(r.get_ref(22).unwrap()),
                boolean: r.get(23).unwrap(),
                text: r.get(24).unwrap(),
                bytes: r.get(25).unwrap(),
            }
            .value(),
            received_at: ts(r.get(26).unwrap()),
            delivered_at: ts(r.get(27).unwrap()),
            final_at: ts(r.get(28).unwrap()),
            updated_at: ts(r.get(29).unwrap()).unwrap(),
        });
    }
    sorted(out)
}

/// Rows in key order (`(device_id, command_id)`, as the model keeps them).
pub fn sorted(mut rows: Vec<CommandRecord>) -> Vec<CommandRecord> {
    rows.sort_by(|a, b| (&a.device_id, a.command_id).cmp(&(&b.device_id, b.command_id)));
    rows
}

/// Every row of a PostgreSQL commands table `table` (quoted, qualified),
/// ordered by key.
#[cfg(feature = "postgres")]
pub async fn pg_commands(client: &tokio_postgres::Client, table: &str) -> Vec<CommandRecord> {
    use iiot_ingest::sink::postgres::types::{PgTime, PgU64};
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM {table} ORDER BY device_id, command_id"),
            &[],
        )
        .await
        .unwrap();
    let ts = |v: Option<PgTime>| v.map(|t| t.0);
    let out = rows
        .iter()
        .map(|r| {
            let id: &[u8] = r.get(1);
            let target: Option<&str> = r.get(2);
            let op: Option<&str> = r.get(4);
            let v_uint: Option<PgU64> = r.get(8);
            let r_uint: Option<PgU64> = r.get(22);
            CommandRecord {
                device_id: DeviceId::new(r.get::<_, &str>(0)).unwrap(),
                command_id: MessageId::from_slice(id).unwrap(),
                target: target.map(|t| TagPath::new(t).unwrap()),
                action: r.get(3),
                op: op.map(|o| OpKind::from_label(o).unwrap()),
                value: ValueColumns {
                    value_type: r.get(5),
                    double: r.get(6),
                    int: r.get(7),
                    uint: v_uint.map(|u| u.0),
                    boolean: r.get(9),
                    text: r.get(10),
                    bytes: r.get(11),
                }
                .value(),
                issuer: r.get(12),
                reason: r.get(13),
                issued_at: ts(r.get(14)),
                expires_at: ts(r.get(15)),
                state: state(r.get(16)),
                ack_reason: ack_reason(r.get(17)),
                detail: r.get(18),
                result: ValueColumns {
                    value_type: r.get(19),
                    double: r.get(20),
                    int: r.get(21),
                    uint: r_uint.map(|u| u.0),
                    boolean: r.get(23),
                    text: r.get(24),
                    bytes: r.get(25),
                }
                .value(),
                received_at: ts(r.get(26)),
                delivered_at: ts(r.get(27)),
                final_at: ts(r.get(28)),
                updated_at: r.get::<_, PgTime>(29).0,
            }
        })
        .collect();
    sorted(out)
}
