//! Commands down to devices, from the platform's side: issuing them and
//! tracking them to their final state.
//!
//! * [`CommandIssuer`] builds a [`Command`](iiot_core::types::Command) (a
//!   fresh ULID, `issued_at` now, `expires_at` after its TTL, constraints),
//!   publishes it with QoS 1, not retained, with an MQTT 5 message expiry of
//!   its TTL, and returns it once the broker confirmed it.
//! * The pipeline records what it sees on `.../commands/{id}` (the command, as
//!   the issuer published it) and `.../commands/{id}/ack` (the device's acks)
//!   in the sinks, in the same transaction as the rest of its batch and before
//!   the broker ack, like telemetry. A command or ack whose device id differs
//!   from its topic's, or whose command id differs from the topic's `{id}`, is a
//!   dead letter. The MQTT source subscribes to both by default.
//! * The database sinks keep one row per `(device_id, command_id)` in
//!   `{prefix}commands` ([`CommandRecord`]), upserted from either side in any
//!   order by the rules of [`CommandRecord::apply_command`] and
//!   [`CommandRecord::apply_ack`]: missing columns are filled and a filled one
//!   is never emptied; the first final ack wins and a later ack never moves
//!   the state back; duplicate acks change nothing; a device's final ack
//!   replaces the platform's `expired_unconfirmed` mark.
//! * A command without a final ack when its `expires_at` plus a grace period
//!   has passed is marked `expired_unconfirmed` by
//!   [`Sink::expire_unconfirmed_commands`](crate::sink::Sink::expire_unconfirmed_commands),
//!   which the pipeline calls every
//!   [`command_sweep_interval`](crate::PipelineConfig::command_sweep_interval)
//!   with its [`command_grace`](crate::PipelineConfig::command_grace).
//!
//! ## The table
//!
//! **Stability:** a stored format; columns are only ever added.
//!
//! | column | PostgreSQL | SQLite | what |
//! |---|---|---|---|
//! | `device_id`, `command_id` | `text`, `bytea` (16-byte ULID) | `TEXT`, `BLOB` | primary key |
//! | `target`, `action` | `text` | `TEXT` | the tag acted on; `write` or the action's name |
//! | `op` | `text` | `TEXT` | `set`, `add` or `invoke` ([`OpKind`]) |
//! | `value_type`, `v_double` … `v_bytes` | as the samples table | as the samples table | the value set or the delta added |
//! | `issuer`, `reason` | `text` | `TEXT` | who issued it and why |
//! | `issued_at`, `expires_at` | `timestamptz` | `INTEGER` ns | from the command |
//! | `state` | `text` | `TEXT` | the last state ([`TrackedState::as_str`]): a command state in snake_case, or `expired_unconfirmed` |
//! | `ack_reason` | `text` | `TEXT` | [`AckReason::as_str`](iiot_core::types::AckReason::as_str) of the ack that set the state, or NULL |
//! | `detail` | `text` | `TEXT` | the ack's free text |
//! | `result_type`, `r_double` … `r_bytes` | as the samples table | as the samples table | the value the device read back |
//! | `received_at` | `timestamptz` | `INTEGER` ns | when the device received it (device clock) |
//! | `delivered_at` | `timestamptz` | `INTEGER` ns | the earliest ack's time (device clock) |
//! | `final_at` | `timestamptz` | `INTEGER` ns | the final ack's time, or the sweep's for `expired_unconfirmed` |
//! | `updated_at` | `timestamptz` | `INTEGER` ns | when ingest last changed the row |
//!
//! Columns of the command are NULL while only acks were seen; ack columns are
//! NULL until an ack arrived. A partial index on `expires_at` over the open
//! states keeps the sweep cheap.

mod issuer;
mod table;

pub use issuer::{CommandIssuer, CommandRequest, IssueError, expiry_of};
pub use table::{CommandRecord, CommandTable, EXPIRED_UNCONFIRMED, OpKind, TrackedState};
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) use table::{OPEN_BELOW, STATE_RANKS};
