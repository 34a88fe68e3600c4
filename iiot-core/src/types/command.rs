//! Commands (cloud to device) and their acknowledgements.

use super::{DeviceId, MessageId, TagPath, Timestamp, ValidationError, Value};

/// Preconditions a device re-checks itself before acting on a command.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Constraints {
    /// Lowest value accepted.
    pub min: Option<f64>,
    /// Highest value accepted.
    pub max: Option<f64>,
    /// Largest change per second from the current value.
    pub max_rate_per_s: Option<f64>,
    /// A tag that must hold a value for the command to run.
    pub interlock: Option<Interlock>,
}

/// An interlock: `tag` must hold `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interlock {
    /// The interlock tag.
    pub tag: TagPath,
    /// The value it must hold.
    pub value: Value,
}

impl Constraints {
    /// Checks that the bounds themselves make sense (finite, `min <= max`, positive rate).
    ///
    /// # Errors
    /// [`ValidationError::Field`] naming the bound.
    pub fn validate(&self) -> Result<(), ValidationError> {
        for (field, v) in [("constraints.min", self.min), ("constraints.max", self.max)] {
            if v.is_some_and(|v| !v.is_finite()) {
                return Err(ValidationError::Field {
                    field,
                    reason: "must be finite".into(),
                });
            }
        }
        if let (Some(lo), Some(hi)) = (self.min, self.max)
            && lo > hi
        {
            return Err(ValidationError::Field {
                field: "constraints",
                reason: format!("min {lo} > max {hi}"),
            });
        }
        if self
            .max_rate_per_s
            .is_some_and(|r| !(r.is_finite() && r > 0.0))
        {
            return Err(ValidationError::Field {
                field: "constraints.max_rate_per_s",
                reason: "must be finite and positive".into(),
            });
        }
        Ok(())
    }
}

/// A command to one device. The id is the idempotency key: a device that sees an id
/// again re-sends its stored ack and never executes twice. Commands are absolute
/// ("set to 80"), never relative.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// ULID; the idempotency key.
    pub id: MessageId,
    /// Target device.
    pub device_id: DeviceId,
    /// What to do, e.g. `write`.
    pub action: String,
    /// The tag acted on.
    pub target: TagPath,
    /// The absolute value to set.
    pub value: Value,
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

    /// Checks the cross-field rules: non-empty action, `expires_at > issued_at`,
    /// sane constraints.
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

/// A device's acknowledgement of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

#[cfg(test)]
mod tests {
    use super::CommandState as S;

    const ALL: [S; 10] = [
        S::Pending,
        S::Queued,
        S::Delivered,
        S::Validating,
        S::Executing,
        S::Completed,
        S::Rejected,
        S::Failed,
        S::Expired,
        S::Interrupted,
    ];

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
