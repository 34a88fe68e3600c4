//! The platform's record of a command (one row of `{prefix}commands`) and the
//! rules that merge a command and its acks into it, in any order.
//!
//! This is the reference model: the memory sink keeps a [`CommandTable`], and the
//! SQL sinks' upserts implement the same rules in SQL (their tests check them
//! against this model).

use std::collections::BTreeMap;
use std::time::Duration;

use iiot_core::types::{
    AckReason, Command, CommandAck, CommandState, DeviceId, MessageId, Operation, TagPath,
    Timestamp, Value,
};

/// What a command does, as stored in the `op` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OpKind {
    /// [`Operation::Set`].
    Set,
    /// [`Operation::Add`].
    Add,
    /// [`Operation::Invoke`].
    Invoke,
}

impl OpKind {
    /// The kind of `op`.
    pub fn of(op: &Operation) -> Self {
        match op {
            Operation::Set(_) => Self::Set,
            Operation::Add(_) => Self::Add,
            Operation::Invoke => Self::Invoke,
        }
    }

    /// The `op` column: `set`, `add` or `invoke`.
    ///
    /// **Stability:** stored; never change a name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Set => "set",
            Self::Add => "add",
            Self::Invoke => "invoke",
        }
    }

    /// The inverse of [`OpKind::as_str`].
    pub fn from_label(s: &str) -> Option<Self> {
        [Self::Set, Self::Add, Self::Invoke]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// Where a tracked command stands (the `state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TrackedState {
    /// The last state a device reported, or [`CommandState::Queued`] for a
    /// command seen on its way to the device and not acknowledged yet.
    State(CommandState),
    /// The platform's own mark: no final ack arrived within `expires_at` plus
    /// the grace period. A final ack from the device still replaces it.
    ExpiredUnconfirmed,
}

/// The `state` label of the platform's expired-unconfirmed mark.
pub const EXPIRED_UNCONFIRMED: &str = "expired_unconfirmed";

/// Every state label with its rank. A state replaces the stored one only when
/// its rank is higher: the lifecycle moves forward, a device's final state
/// (rank 6) replaces the platform's [`EXPIRED_UNCONFIRMED`] (rank 5) and nothing
/// replaces a device's final state. Labels of rank below 5 are open: the
/// expiry sweep may mark them.
pub(crate) const STATE_RANKS: &[(&str, u8)] = &[
    ("pending", 0),
    ("queued", 1),
    ("delivered", 2),
    ("validating", 3),
    ("executing", 4),
    (EXPIRED_UNCONFIRMED, 5),
    ("completed", 6),
    ("rejected", 6),
    ("failed", 6),
    ("expired", 6),
    ("interrupted", 6),
];

/// Rank of the expired-unconfirmed mark: states below it are open.
pub(crate) const OPEN_BELOW: u8 = 5;

/// The rank of a state label; a label this build does not know (a state added
/// to core later, stored as `unknown`) ranks lowest and is never swept.
pub(crate) fn rank_of(label: &str) -> Option<u8> {
    STATE_RANKS
        .iter()
        .find(|(l, _)| *l == label)
        .map(|(_, r)| *r)
}

impl TrackedState {
    /// The `state` column: a [`CommandState`]'s snake_case name
    /// ([`CommandState::as_str`]) or [`EXPIRED_UNCONFIRMED`].
    ///
    /// **Stability:** stored; never change a label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::State(s) => s.as_str(),
            Self::ExpiredUnconfirmed => EXPIRED_UNCONFIRMED,
        }
    }

    /// The inverse of [`TrackedState::as_str`] (for readers of the table).
    pub fn from_label(s: &str) -> Option<Self> {
        if s == EXPIRED_UNCONFIRMED {
            return Some(Self::ExpiredUnconfirmed);
        }
        CommandState::from_name(s).map(Self::State)
    }

    /// Whether the state is final: a device's terminal state or the platform's
    /// expired-unconfirmed mark.
    pub fn is_final(self) -> bool {
        match self {
            Self::State(s) => s.is_terminal(),
            Self::ExpiredUnconfirmed => true,
        }
    }

    fn rank(self) -> u8 {
        rank_of(self.as_str()).unwrap_or(0)
    }

    fn is_open(self) -> bool {
        rank_of(self.as_str()).is_some_and(|r| r < OPEN_BELOW)
    }
}

/// One row of the commands table: what the platform knows about one command.
///
/// The command's own columns (`target` … `expires_at`) are `None` until the
/// command itself was seen (an ack may come first); the ack columns are `None`
/// until an ack filled them.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRecord {
    /// The device.
    pub device_id: DeviceId,
    /// The command's id.
    pub command_id: MessageId,
    /// The tag acted on.
    pub target: Option<TagPath>,
    /// The action (`write` for a set or an add).
    pub action: Option<String>,
    /// Set, add or invoke.
    pub op: Option<OpKind>,
    /// The value set or the delta added (`None` for an invoke).
    pub value: Option<Value>,
    /// Who issued it.
    pub issuer: Option<String>,
    /// Why it was issued.
    pub reason: Option<String>,
    /// When it was issued.
    pub issued_at: Option<Timestamp>,
    /// When it expires.
    pub expires_at: Option<Timestamp>,
    /// The last state.
    pub state: TrackedState,
    /// Why it ended where it did, from the ack that set the state.
    pub ack_reason: Option<AckReason>,
    /// The ack's free text.
    pub detail: Option<String>,
    /// The value the device read back.
    pub result: Option<Value>,
    /// When the device first received the command (device clock).
    pub received_at: Option<Timestamp>,
    /// The time of the earliest ack (device clock).
    pub delivered_at: Option<Timestamp>,
    /// When the state became final: the final ack's time, or the sweep's time
    /// for [`TrackedState::ExpiredUnconfirmed`].
    pub final_at: Option<Timestamp>,
    /// When ingest last changed the row (the receive time of the message that
    /// changed it, or the sweep's time).
    pub updated_at: Timestamp,
}

impl CommandRecord {
    /// The row a command creates.
    pub fn from_command(c: &Command, at: Timestamp) -> Self {
        let mut r = Self::empty(
            c.device_id.clone(),
            c.id,
            TrackedState::State(CommandState::Queued),
            at,
        );
        r.fill_command(c);
        r
    }

    /// The row an ack creates; `None` for an ack marked
    /// [`duplicate`](CommandAck::duplicate), which changes nothing.
    pub fn from_ack(a: &CommandAck, at: Timestamp) -> Option<Self> {
        if a.duplicate {
            return None;
        }
        let state = TrackedState::State(a.state);
        let mut r = Self::empty(a.device_id.clone(), a.command_id, state, at);
        r.ack_reason = a.reason;
        r.detail.clone_from(&a.detail);
        r.result.clone_from(&a.result);
        r.received_at = a.received_at;
        r.delivered_at = Some(a.time);
        r.final_at = state.is_final().then_some(a.time);
        Some(r)
    }

    fn empty(
        device_id: DeviceId,
        command_id: MessageId,
        state: TrackedState,
        at: Timestamp,
    ) -> Self {
        Self {
            device_id,
            command_id,
            target: None,
            action: None,
            op: None,
            value: None,
            issuer: None,
            reason: None,
            issued_at: None,
            expires_at: None,
            state,
            ack_reason: None,
            detail: None,
            result: None,
            received_at: None,
            delivered_at: None,
            final_at: None,
            updated_at: at,
        }
    }

    fn fill_command(&mut self, c: &Command) {
        self.target = Some(c.target.clone());
        self.action = Some(c.action.clone());
        self.op = Some(OpKind::of(&c.op));
        self.value = c.op.value().cloned();
        self.issuer = Some(c.issuer.clone());
        self.reason = Some(c.reason.clone());
        self.issued_at = Some(c.issued_at);
        self.expires_at = Some(c.expires_at);
    }

    /// Merges the command into the row: its columns are filled when the row
    /// has none yet (it was created by an ack); a command seen again changes
    /// nothing. Returns whether the row changed.
    pub fn apply_command(&mut self, c: &Command, at: Timestamp) -> bool {
        if self.issued_at.is_some() {
            return false;
        }
        self.fill_command(c);
        self.updated_at = at;
        true
    }

    /// Merges an ack into the row. Returns whether the row changed.
    ///
    /// * An ack marked [`duplicate`](CommandAck::duplicate) changes nothing.
    /// * Its state replaces the stored one only when it is further along
    ///   (pending < queued < delivered < validating < executing <
    ///   expired_unconfirmed < the device's final states): the first final ack
    ///   wins, a later ack never moves a state back, and a device's final ack
    ///   replaces the platform's expired-unconfirmed mark. The ack that sets the
    ///   state also sets `ack_reason`, `detail` and `result` (where it has them;
    ///   never a filled one with nothing) and, when final, `final_at`.
    /// * Any ack fills `received_at` when it is empty, and `delivered_at`
    ///   becomes the earliest ack time seen.
    pub fn apply_ack(&mut self, a: &CommandAck, at: Timestamp) -> bool {
        if a.duplicate {
            return false;
        }
        let new = TrackedState::State(a.state);
        let mut changed = false;
        if new.rank() > self.state.rank() {
            self.state = new;
            self.ack_reason = a.reason.or(self.ack_reason);
            if a.detail.is_some() {
                self.detail.clone_from(&a.detail);
            }
            if a.result.is_some() {
                self.result.clone_from(&a.result);
            }
            if new.is_final() {
                self.final_at = Some(a.time);
            }
            changed = true;
        }
        if self.received_at.is_none() && a.received_at.is_some() {
            self.received_at = a.received_at;
            changed = true;
        }
        if self.delivered_at.is_none_or(|d| a.time < d) {
            self.delivered_at = Some(a.time);
            changed = true;
        }
        if changed {
            self.updated_at = at;
        }
        changed
    }

    /// Whether the row is open (no final state) and its deadline plus `grace`
    /// lies before `now`.
    pub fn is_overdue(&self, now: Timestamp, grace: Duration) -> bool {
        self.state.is_open()
            && self
                .expires_at
                .is_some_and(|e| e < now.saturating_sub(grace))
    }

    /// Marks an overdue row (see [`is_overdue`](Self::is_overdue))
    /// [`TrackedState::ExpiredUnconfirmed`] with `final_at = updated_at = now`.
    /// Returns whether it did.
    pub fn expire(&mut self, now: Timestamp, grace: Duration) -> bool {
        if !self.is_overdue(now, grace) {
            return false;
        }
        self.state = TrackedState::ExpiredUnconfirmed;
        self.final_at = Some(now);
        self.updated_at = now;
        true
    }
}

/// Command records by `(device_id, command_id)`: the memory sink's commands
/// table, and the model the SQL sinks implement.
///
/// ```
/// use std::time::Duration;
/// use iiot_core::types::{CommandAck, CommandState, DeviceId, MessageId, Timestamp};
/// use iiot_ingest::commands::{CommandTable, TrackedState};
///
/// let mut table = CommandTable::new();
/// let t = Timestamp::from_unix_millis(1_767_225_600_000).unwrap();
/// let ack = CommandAck {
///     command_id: MessageId::from_u128(1),
///     device_id: DeviceId::new("plc-01").unwrap(),
///     state: CommandState::Completed,
///     time: t,
///     detail: None,
///     result: None,
///     duplicate: false,
///     reason: None,
///     received_at: None,
/// };
/// // An ack before its command creates the row; the same ack again changes nothing.
/// assert!(table.apply_ack(&ack, t));
/// assert!(!table.apply_ack(&ack, t));
/// let row = table.get(&ack.device_id, ack.command_id).unwrap();
/// assert_eq!(row.state, TrackedState::State(CommandState::Completed));
/// assert_eq!(table.expire_unconfirmed(t.saturating_add(Duration::from_secs(3600)), Duration::ZERO), 0);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommandTable {
    rows: BTreeMap<(DeviceId, MessageId), CommandRecord>,
}

impl CommandTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Upserts a command ([`CommandRecord::apply_command`]); whether a row changed.
    pub fn apply_command(&mut self, c: &Command, at: Timestamp) -> bool {
        match self.rows.get_mut(&(c.device_id.clone(), c.id)) {
            Some(r) => r.apply_command(c, at),
            None => {
                let r = CommandRecord::from_command(c, at);
                self.rows.insert((c.device_id.clone(), c.id), r);
                true
            }
        }
    }

    /// Upserts an ack ([`CommandRecord::apply_ack`]); whether a row changed.
    pub fn apply_ack(&mut self, a: &CommandAck, at: Timestamp) -> bool {
        match self.rows.get_mut(&(a.device_id.clone(), a.command_id)) {
            Some(r) => r.apply_ack(a, at),
            None => match CommandRecord::from_ack(a, at) {
                Some(r) => {
                    self.rows.insert((a.device_id.clone(), a.command_id), r);
                    true
                }
                None => false,
            },
        }
    }

    /// Marks every overdue row expired-unconfirmed ([`CommandRecord::expire`]);
    /// returns how many.
    pub fn expire_unconfirmed(&mut self, now: Timestamp, grace: Duration) -> u64 {
        let mut n = 0;
        for r in self.rows.values_mut() {
            if r.expire(now, grace) {
                n += 1;
            }
        }
        n
    }

    /// The row of `(device, command_id)`.
    pub fn get(&self, device: &DeviceId, command_id: MessageId) -> Option<&CommandRecord> {
        self.rows.get(&(device.clone(), command_id))
    }

    /// Every row, ordered by `(device_id, command_id)`.
    pub fn iter(&self) -> impl Iterator<Item = &CommandRecord> {
        self.rows.values()
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use iiot_core::types::{Constraints, WRITE};

    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_unix_millis(1_767_225_600_000 + s * 1000).unwrap()
    }

    fn command() -> Command {
        Command {
            id: MessageId::from_u128(7),
            device_id: DeviceId::new("d").unwrap(),
            action: WRITE.into(),
            target: TagPath::new("sp").unwrap(),
            op: Operation::Set(Value::Double(80.0)),
            issued_at: t(0),
            expires_at: t(30),
            issuer: "ops".into(),
            reason: "test".into(),
            constraints: Constraints::default(),
        }
    }

    fn ack(state: CommandState, at: i64) -> CommandAck {
        CommandAck {
            command_id: MessageId::from_u128(7),
            device_id: DeviceId::new("d").unwrap(),
            state,
            time: t(at),
            detail: None,
            result: None,
            duplicate: false,
            reason: None,
            received_at: Some(t(1)),
        }
    }

    #[test]
    fn labels_are_stable_and_parse_back() {
        assert_eq!(STATE_RANKS.len(), 11);
        for (label, _) in STATE_RANKS {
            assert_eq!(TrackedState::from_label(label).unwrap().as_str(), *label);
        }
        assert_eq!(TrackedState::from_label("unknown"), None);
        for k in [OpKind::Set, OpKind::Add, OpKind::Invoke] {
            assert_eq!(OpKind::from_label(k.as_str()), Some(k));
        }
        // The ranks agree with core's notion of terminal.
        for (label, rank) in STATE_RANKS {
            let s = TrackedState::from_label(label).unwrap();
            assert_eq!(s.is_final(), *rank >= OPEN_BELOW, "{label}");
        }
    }

    #[test]
    fn order_of_arrival_does_not_matter() {
        let c = command();
        let acks = [
            ack(CommandState::Delivered, 2),
            ack(CommandState::Executing, 3),
            ack(CommandState::Completed, 4),
        ];
        let mut a = CommandTable::new();
        a.apply_command(&c, t(0));
        for x in &acks {
            a.apply_ack(x, t(5));
        }
        let mut b = CommandTable::new();
        for x in acks.iter().rev() {
            b.apply_ack(x, t(5));
        }
        b.apply_command(&c, t(5));
        let (ra, rb) = (a.iter().next().unwrap(), b.iter().next().unwrap());
        assert_eq!(
            (ra.state, ra.delivered_at, ra.final_at),
            (rb.state, rb.delivered_at, rb.final_at)
        );
        assert_eq!(ra.state, TrackedState::State(CommandState::Completed));
        assert_eq!(ra.delivered_at, Some(t(2)));
        assert_eq!(rb.target, ra.target);
    }
}
