//! The SQL of the commands table, shared by the PostgreSQL and SQLite sinks: the
//! rules of [`CommandRecord`](crate::commands::CommandRecord) as upserts, so a
//! command and its acks merge in any order and concurrent ingest workers cannot
//! lose an update (`ON CONFLICT … DO UPDATE` locks the row).
//!
//! Both dialects accept the same text; only the placeholders differ (`$n` for
//! PostgreSQL, `?n` for SQLite).

use crate::commands::{EXPIRED_UNCONFIRMED, OPEN_BELOW, STATE_RANKS};

/// Columns a command writes, in parameter order (18).
pub(crate) const COMMAND_COLUMNS: &[&str] = &[
    "device_id",
    "command_id",
    "target",
    "action",
    "op",
    "value_type",
    "v_double",
    "v_int",
    "v_uint",
    "v_bool",
    "v_text",
    "v_bytes",
    "issuer",
    "reason",
    "issued_at",
    "expires_at",
    "state",
    "updated_at",
];

/// Columns an ack writes, in parameter order (16).
pub(crate) const ACK_COLUMNS: &[&str] = &[
    "device_id",
    "command_id",
    "state",
    "ack_reason",
    "detail",
    "result_type",
    "r_double",
    "r_int",
    "r_uint",
    "r_bool",
    "r_text",
    "r_bytes",
    "received_at",
    "delivered_at",
    "final_at",
    "updated_at",
];

/// The command's own columns, filled together when the row has none.
const FILLED_BY_COMMAND: &[&str] = &[
    "target",
    "action",
    "op",
    "value_type",
    "v_double",
    "v_int",
    "v_uint",
    "v_bool",
    "v_text",
    "v_bytes",
    "issuer",
    "reason",
    "issued_at",
    "expires_at",
];

/// The result columns, replaced together.
const RESULT_COLUMNS: &[&str] = &[
    "result_type",
    "r_double",
    "r_int",
    "r_uint",
    "r_bool",
    "r_text",
    "r_bytes",
];

/// `expr`'s rank (see `STATE_RANKS`); unknown labels rank 0.
fn rank(expr: &str) -> String {
    use std::fmt::Write as _;
    let mut s = format!("(CASE {expr}");
    for (label, r) in STATE_RANKS {
        // Writing to a String cannot fail.
        let _ = write!(s, " WHEN '{label}' THEN {r}");
    }
    s.push_str(" ELSE 0 END)");
    s
}

/// `'pending', 'queued', …`: the open states, which the sweep may mark.
pub(crate) fn open_states() -> String {
    STATE_RANKS
        .iter()
        .filter(|(_, r)| *r < OPEN_BELOW)
        .map(|(l, _)| format!("'{l}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn placeholders(n: usize, ph: &dyn Fn(usize) -> String) -> String {
    (1..=n).map(ph).collect::<Vec<_>>().join(", ")
}

/// The upsert of one command: a new row (state `queued`), or the command's
/// columns filled into a row that only acks created. A command seen again
/// matches no row to update, so it changes nothing (not even `updated_at`).
pub(crate) fn upsert_command(table: &str, ph: &dyn Fn(usize) -> String) -> String {
    let set: Vec<String> = FILLED_BY_COMMAND
        .iter()
        .chain(&["updated_at"])
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO {table} AS c ({}) VALUES ({}) \
         ON CONFLICT (device_id, command_id) DO UPDATE SET {} \
         WHERE c.issued_at IS NULL",
        COMMAND_COLUMNS.join(", "),
        placeholders(COMMAND_COLUMNS.len(), ph),
        set.join(", "),
    )
}

/// The upsert of one (non-duplicate) ack. The ack's state wins when its rank is
/// higher than the stored one's; the winning ack sets `ack_reason`, `detail`
/// and the result where it has them, and `final_at` when final; any ack fills
/// an empty `received_at` and lowers `delivered_at` to the earliest ack time.
/// An ack that changes none of that updates nothing (not even `updated_at`).
pub(crate) fn upsert_ack(table: &str, ph: &dyn Fn(usize) -> String) -> String {
    let win = format!("({} > {})", rank("excluded.state"), rank("c.state"));
    let result_win = format!("({win} AND excluded.result_type IS NOT NULL)");
    let mut set = vec![
        format!("state = CASE WHEN {win} THEN excluded.state ELSE c.state END"),
        format!(
            "ack_reason = CASE WHEN {win} THEN coalesce(excluded.ack_reason, c.ack_reason) \
             ELSE c.ack_reason END"
        ),
        format!(
            "detail = CASE WHEN {win} THEN coalesce(excluded.detail, c.detail) ELSE c.detail END"
        ),
    ];
    for c in RESULT_COLUMNS {
        set.push(format!(
            "{c} = CASE WHEN {result_win} THEN excluded.{c} ELSE c.{c} END"
        ));
    }
    set.push(format!(
        "final_at = CASE WHEN {win} AND excluded.final_at IS NOT NULL THEN excluded.final_at \
         ELSE c.final_at END"
    ));
    set.push("received_at = coalesce(c.received_at, excluded.received_at)".into());
    let earlier = "(c.delivered_at IS NULL OR excluded.delivered_at < c.delivered_at)";
    set.push(format!(
        "delivered_at = CASE WHEN {earlier} THEN excluded.delivered_at ELSE c.delivered_at END"
    ));
    set.push("updated_at = excluded.updated_at".into());
    format!(
        "INSERT INTO {table} AS c ({}) VALUES ({}) \
         ON CONFLICT (device_id, command_id) DO UPDATE SET {} \
         WHERE {win} OR (c.received_at IS NULL AND excluded.received_at IS NOT NULL) OR {earlier}",
        ACK_COLUMNS.join(", "),
        placeholders(ACK_COLUMNS.len(), ph),
        set.join(", "),
    )
}

/// The sweep: parameter 1 is now (`final_at`, `updated_at`), parameter 2 the
/// cutoff (`now - grace`); rows in an open state whose `expires_at` lies before
/// the cutoff become `expired_unconfirmed`.
pub(crate) fn expire_unconfirmed(table: &str, ph: &dyn Fn(usize) -> String) -> String {
    format!(
        "UPDATE {table} SET state = '{EXPIRED_UNCONFIRMED}', final_at = {now}, updated_at = {now} \
         WHERE state IN ({}) AND expires_at < {cutoff}",
        open_states(),
        now = ph(1),
        cutoff = ph(2),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_have_one_placeholder_per_column() {
        let pg = |i: usize| format!("${i}");
        let up = upsert_command("t", &pg);
        assert!(up.contains("$18)") && !up.contains("$19"), "{up}");
        let ack = upsert_ack("t", &pg);
        assert!(ack.contains("$16)") && !ack.contains("$17"), "{ack}");
        assert_eq!(
            open_states(),
            "'pending', 'queued', 'delivered', 'validating', 'executing'"
        );
        let sweep = expire_unconfirmed("t", &|i| format!("?{i}"));
        assert!(sweep.contains("final_at = ?1") && sweep.contains("expires_at < ?2"));
    }

    /// The partial index of both migrations covers exactly the open states, so
    /// the sweep can use it.
    #[test]
    fn migrations_index_the_open_states() {
        let want = format!("WHERE state IN ({})", open_states());
        #[cfg(feature = "postgres")]
        assert!(
            include_str!("postgres/migrations/0002_commands.sql").contains(&want),
            "postgres"
        );
        #[cfg(feature = "sqlite")]
        assert!(
            include_str!("sqlite/migrations/0002_commands.sql").contains(&want),
            "sqlite"
        );
    }
}
