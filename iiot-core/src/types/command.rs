//! Commands (cloud to device) and their acknowledgements.

use super::{DeviceId, MessageId, TagPath, Timestamp, ValidationError, Value};

/// Preconditions a device re-checks itself before acting on a command.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Constraints {
    /// Lowest value accepted (of the absolute value a set or an add ends at).
    pub min: Option<f64>,
    /// Highest value accepted.
    pub max: Option<f64>,
    /// Largest change per second from the current value.
    pub max_rate_per_s: Option<f64>,
    /// Tags that must hold for the command to run; all of them.
    pub interlocks: Vec<Interlock>,
}

/// An interlock: the latest value of `tag` must have Good quality, be fresh, and meet
/// `expect`.
#[derive(Debug, Clone, PartialEq)]
pub struct Interlock {
    /// The interlock tag.
    pub tag: TagPath,
    /// What its value must be.
    pub expect: Expect,
}

/// What an interlock's tag must hold.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// Exactly this value (a boolean permissive, a mode word).
    Equals(Value),
    /// A number inside `[min, max]` (either bound may be open).
    Range {
        /// Lowest value allowed.
        min: Option<f64>,
        /// Highest value allowed.
        max: Option<f64>,
    },
}

impl Expect {
    /// Whether `v` meets the expectation. Numbers compare by value across types (an
    /// `Int(1)` equals a `Double(1.0)`); a range needs a number.
    pub fn holds(&self, v: &Value) -> bool {
        match self {
            Self::Equals(want) => match (want.as_f64(), v.as_f64()) {
                // Exact equality on purpose: an interlock names a state, not a tolerance
                // (a range interlock is the tolerant form).
                #[allow(clippy::float_cmp)]
                (Some(a), Some(b)) if !matches!(want, Value::Bool(_)) => a == b,
                _ => want == v,
            },
            Self::Range { min, max } => v.as_f64().is_some_and(|x| {
                !matches!(v, Value::Bool(_))
                    && min.is_none_or(|lo| x >= lo)
                    && max.is_none_or(|hi| x <= hi)
            }),
        }
    }
}

fn finite(field: &'static str, v: Option<f64>) -> Result<(), ValidationError> {
    if v.is_some_and(|v| !v.is_finite()) {
        return Err(ValidationError::Field {
            field,
            reason: "must be finite".into(),
        });
    }
    Ok(())
}

fn ordered(field: &'static str, lo: Option<f64>, hi: Option<f64>) -> Result<(), ValidationError> {
    if let (Some(lo), Some(hi)) = (lo, hi)
        && lo > hi
    {
        return Err(ValidationError::Field {
            field,
            reason: format!("min {lo} > max {hi}"),
        });
    }
    Ok(())
}

impl Constraints {
    /// Checks that the bounds themselves make sense (finite, `min <= max`, positive
    /// rate, every range interlock with a bound).
    ///
    /// # Errors
    /// [`ValidationError::Field`] naming the bound.
    pub fn validate(&self) -> Result<(), ValidationError> {
        finite("constraints.min", self.min)?;
        finite("constraints.max", self.max)?;
        ordered("constraints", self.min, self.max)?;
        if self
            .max_rate_per_s
            .is_some_and(|r| !(r.is_finite() && r > 0.0))
        {
            return Err(ValidationError::Field {
                field: "constraints.max_rate_per_s",
                reason: "must be finite and positive".into(),
            });
        }
        for i in &self.interlocks {
            if let Expect::Range { min, max } = i.expect {
                finite("constraints.interlocks.min", min)?;
                finite("constraints.interlocks.max", max)?;
                ordered("constraints.interlocks", min, max)?;
                if min.is_none() && max.is_none() {
                    return Err(ValidationError::Field {
                        field: "constraints.interlocks",
                        reason: format!("interlock on {} has neither a value nor a range", i.tag),
                    });
                }
            }
        }
        Ok(())
    }
}

/// What a command does. Absolute commands ("set to 80") are preferred: a relative one
/// ("add 5") depends on the value the device holds when it runs, so it is its own,
/// explicit kind, resolved by the device against its latest Good value and checked
/// against the constraints as the absolute value it ends at.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// Set the target to this value.
    Set(Value),
    /// Add this number (an integer or a float, never a boolean) to the target's
    /// current value.
    Add(Value),
    /// Run the named action (`Command::action`) without a value, e.g. `reset_alarm`.
    Invoke,
}

impl Operation {
    /// The value carried, if any.
    pub fn value(&self) -> Option<&Value> {
        match self {
            Self::Set(v) | Self::Add(v) => Some(v),
            Self::Invoke => None,
        }
    }
}

/// The action of a set or an add.
pub const WRITE: &str = "write";

/// A command to one device. The id is the idempotency key: a device that sees an id
/// again re-sends its stored ack and never executes twice.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// ULID; the idempotency key.
    pub id: MessageId,
    /// Target device.
    pub device_id: DeviceId,
    /// What to do: `write` for a set or an add, or the name of an action without a value.
    pub action: String,
    /// The tag acted on.
    pub target: TagPath,
    /// Set, add or invoke.
    pub op: Operation,
    /// When issued.
    pub issued_at: Timestamp,
    /// After this instant the device must not execute it.
    pub expires_at: Timestamp,
    /// Who issued it.
    pub issuer: String,
    /// Why.
    pub reason: String,
    /// Preconditions.
    pub constraints: Constraints,
}

impl Command {
    /// Whether the command has expired at `now` (the device re-checks this itself).
    pub fn is_expired(&self, now: Timestamp) -> bool {
        now >= self.expires_at
    }

    /// Checks the cross-field rules: non-empty action, `expires_at > issued_at`, a
    /// value or a delta for a [`WRITE`], a numeric delta, sane constraints.
    ///
    /// # Errors
    /// The first rule broken.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.action.is_empty() {
            return Err(ValidationError::Missing { field: "action" });
        }
        if self.expires_at <= self.issued_at {
            return Err(ValidationError::Field {
                field: "expires_at",
                reason: "not after issued_at".into(),
            });
        }
        if self.op == Operation::Invoke && self.action == WRITE {
            return Err(ValidationError::Missing { field: "value" });
        }
        if let Operation::Add(d) = &self.op
            && (matches!(d, Value::Bool(_)) || !d.as_f64().is_some_and(f64::is_finite))
        {
            return Err(ValidationError::Field {
                field: "delta",
                reason: format!(
                    "a relative command adds a finite number, not a {}",
                    d.type_name()
                ),
            });
        }
        self.constraints.validate()
    }
}

/// Where a command is in its lifecycle.
///
/// ```text
/// Pending → Queued → Delivered → Validating → Executing → Completed
///                       │            │            ├─→ Failed
///                       │            └─→ Rejected └─→ Interrupted (found Executing after a crash)
///  (any state before Executing) ─→ Expired
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CommandState {
    /// Accepted by the platform, not yet sent.
    Pending,
    /// Queued for delivery.
    Queued,
    /// Received by the device.
    Delivered,
    /// The device checks expiry and constraints.
    Validating,
    /// The device is acting on it.
    Executing,
    /// Done.
    Completed,
    /// A precondition failed; nothing was done.
    Rejected,
    /// Execution failed.
    Failed,
    /// The TTL passed before execution.
    Expired,
    /// Found executing after a crash; not run again (at most once).
    Interrupted,
}

impl CommandState {
    /// Every state, in lifecycle order.
    pub const ALL: [Self; 10] = [
        Self::Pending,
        Self::Queued,
        Self::Delivered,
        Self::Validating,
        Self::Executing,
        Self::Completed,
        Self::Rejected,
        Self::Failed,
        Self::Expired,
        Self::Interrupted,
    ];

    /// The snake_case name (its serde form), e.g. `completed`: for tables, metric
    /// labels and logs. Stable: stored by sinks, never change one.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::Delivered => "delivered",
            Self::Validating => "validating",
            Self::Executing => "executing",
            Self::Completed => "completed",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Interrupted => "interrupted",
        }
    }

    /// The state named `name` ([`CommandState::as_str`]), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether no transition leaves this state.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Rejected | Self::Failed | Self::Expired | Self::Interrupted
        )
    }

    /// Whether the lifecycle allows `self → next`.
    pub fn can_transition_to(self, next: Self) -> bool {
        use CommandState as S;
        matches!(
            (self, next),
            (S::Pending, S::Queued)
                | (S::Queued, S::Delivered)
                | (S::Delivered, S::Validating)
                | (S::Validating | S::Delivered, S::Rejected)
                | (S::Validating, S::Executing)
                | (S::Executing, S::Completed | S::Failed | S::Interrupted)
                | (
                    S::Pending | S::Queued | S::Delivered | S::Validating,
                    S::Expired
                )
        )
    }
}

/// Why a command ended where it did: the machine-readable partner of an ack's `detail`.
/// A reason this build does not know (from a newer device) decodes as
/// [`AckReason::Unknown`] with its number, never as an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AckReason {
    /// The payload could not be decoded or broke a rule of the contract.
    Malformed,
    /// Addressed to another device.
    WrongDevice,
    /// Larger than the device's limit.
    TooLarge,
    /// The TTL passed before execution.
    Expired,
    /// `issued_at` lies in the future beyond the allowed clock skew.
    IssuedInFuture,
    /// The target tag is unknown or not writable.
    UnknownTarget,
    /// The value has the wrong type for the target.
    WrongType,
    /// Below `constraints.min`.
    BelowMin,
    /// Above `constraints.max`.
    AboveMax,
    /// The change from the current value is faster than `constraints.max_rate_per_s`.
    RateOfChange,
    /// An interlock does not hold.
    Interlock,
    /// A value the checks need is not Good, too old or unknown.
    StaleValue,
    /// A newer command for the same target already ran.
    Superseded,
    /// The device's command rate limit was exceeded.
    RateLimited,
    /// The handler reported an error.
    HandlerFailed,
    /// The handler did not finish in time; the outcome is unknown.
    HandlerTimeout,
    /// Found executing after a restart; the outcome is unknown, it is not run again.
    Interrupted,
    /// Delivered as a retained message; retained commands never run.
    Retained,
    /// Older than the ledger's window: the device cannot prove it never ran it.
    TooOld,
    /// The device could not record the command durably.
    LedgerUnavailable,
    /// The device does not support this action.
    Unsupported,
    /// The device's queue of pending commands is full.
    QueueFull,
    /// The equipment refused the action (a Modbus exception); nothing was done.
    DeviceRefused,
    /// A reason number this build does not know.
    Unknown(i32),
}

impl AckReason {
    /// Every named reason, in wire order.
    pub const ALL: [Self; 23] = [
        Self::Malformed,
        Self::WrongDevice,
        Self::TooLarge,
        Self::Expired,
        Self::IssuedInFuture,
        Self::UnknownTarget,
        Self::WrongType,
        Self::BelowMin,
        Self::AboveMax,
        Self::RateOfChange,
        Self::Interlock,
        Self::StaleValue,
        Self::Superseded,
        Self::RateLimited,
        Self::HandlerFailed,
        Self::HandlerTimeout,
        Self::Interrupted,
        Self::Retained,
        Self::TooOld,
        Self::LedgerUnavailable,
        Self::Unsupported,
        Self::QueueFull,
        Self::DeviceRefused,
    ];

    /// The wire number (`AckReason` in command.proto).
    pub fn to_wire(self) -> i32 {
        match self {
            Self::Unknown(n) => n,
            named => super::wire_enum::to_wire(&Self::ALL, named),
        }
    }

    /// From the wire number; `0` (unspecified) is `None`.
    pub fn from_wire(n: i32) -> Option<Self> {
        super::wire_enum::from_wire(&Self::ALL, n, Self::Unknown)
    }

    /// A short snake_case name for metrics labels, tables and logs, e.g. `above_max`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::WrongDevice => "wrong_device",
            Self::TooLarge => "too_large",
            Self::Expired => "expired",
            Self::IssuedInFuture => "issued_in_future",
            Self::UnknownTarget => "unknown_target",
            Self::WrongType => "wrong_type",
            Self::BelowMin => "below_min",
            Self::AboveMax => "above_max",
            Self::RateOfChange => "rate_of_change",
            Self::Interlock => "interlock",
            Self::StaleValue => "stale_value",
            Self::Superseded => "superseded",
            Self::RateLimited => "rate_limited",
            Self::HandlerFailed => "handler_failed",
            Self::HandlerTimeout => "handler_timeout",
            Self::Interrupted => "interrupted",
            Self::Retained => "retained",
            Self::TooOld => "too_old",
            Self::LedgerUnavailable => "ledger_unavailable",
            Self::Unsupported => "unsupported",
            Self::QueueFull => "queue_full",
            Self::DeviceRefused => "device_refused",
            Self::Unknown(_) => "unknown",
        }
    }
}

impl std::fmt::Display for AckReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unknown(n) => write!(f, "unknown reason {n}"),
            r => f.write_str(r.as_str()),
        }
    }
}

/// A device's acknowledgement of a command.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandAck {
    /// The command acknowledged.
    pub command_id: MessageId,
    /// The acknowledging device.
    pub device_id: DeviceId,
    /// The state reached.
    pub state: CommandState,
    /// When.
    pub time: Timestamp,
    /// Why rejected or failed.
    pub detail: Option<String>,
    /// The value read back after execution.
    pub result: Option<Value>,
    /// True when re-sent for a duplicate command id.
    pub duplicate: bool,
    /// Why it ended here; `None` for Completed and for older devices.
    pub reason: Option<AckReason>,
    /// When the device first received the command, when known.
    pub received_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::CommandState as S;
    use super::{AckReason, Expect, Value};

    #[test]
    fn reasons_round_trip_their_wire_numbers() {
        for (i, r) in AckReason::ALL.iter().enumerate() {
            assert_eq!(r.to_wire(), i as i32 + 1);
            assert_eq!(AckReason::from_wire(r.to_wire()), Some(*r));
        }
        assert_eq!(AckReason::from_wire(0), None);
        assert_eq!(AckReason::from_wire(99), Some(AckReason::Unknown(99)));
        assert_eq!(AckReason::Unknown(99).to_wire(), 99);
        assert_eq!(AckReason::from_wire(-3), Some(AckReason::Unknown(-3)));
    }

    #[test]
    fn expectations() {
        let on = Expect::Equals(Value::Bool(true));
        assert!(on.holds(&Value::Bool(true)));
        assert!(!on.holds(&Value::Bool(false)));
        assert!(!on.holds(&Value::Int(1)), "a boolean is not a number");
        let mode = Expect::Equals(Value::Int(3));
        assert!(mode.holds(&Value::UInt(3)) && mode.holds(&Value::Double(3.0)));
        assert!(!mode.holds(&Value::Int(4)));
        let range = Expect::Range {
            min: Some(1.0),
            max: None,
        };
        assert!(range.holds(&Value::Double(1.0)) && !range.holds(&Value::Double(0.5)));
        assert!(!range.holds(&Value::Bool(true)) && !range.holds(&Value::String("2".into())));
    }

    const ALL: [S; 10] = S::ALL;

    #[test]
    fn names_are_the_serde_names() {
        for st in ALL {
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(json, format!("\"{}\"", st.as_str()));
            assert_eq!(S::from_name(st.as_str()), Some(st));
        }
        assert_eq!(S::from_name("nope"), None);
    }

    #[test]
    fn lifecycle_table() {
        let allowed = [
            (S::Pending, S::Queued),
            (S::Queued, S::Delivered),
            (S::Delivered, S::Validating),
            (S::Validating, S::Executing),
            (S::Executing, S::Completed),
            (S::Delivered, S::Rejected),
            (S::Validating, S::Rejected),
            (S::Executing, S::Failed),
            (S::Executing, S::Interrupted),
            (S::Pending, S::Expired),
            (S::Queued, S::Expired),
            (S::Delivered, S::Expired),
            (S::Validating, S::Expired),
        ];
        for a in ALL {
            for b in ALL {
                assert_eq!(
                    a.can_transition_to(b),
                    allowed.contains(&(a, b)),
                    "{a:?} -> {b:?}"
                );
            }
            if a.is_terminal() {
                assert!(
                    ALL.iter().all(|&b| !a.can_transition_to(b)),
                    "{a:?} is terminal"
                );
            }
        }
        // Executing never expires: once acting, the physical effect may have happened.
        assert!(!S::Executing.can_transition_to(S::Expired));
    }
}
