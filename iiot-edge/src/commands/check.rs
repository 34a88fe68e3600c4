//! The checks a command passes right before it executes, in this order: expiry on
//! the device clock, issue time not in the future, not superseded on its target,
//! target known, action or value type, a relative command resolved against the
//! target's latest Good value, min/max of the absolute value, rate of change,
//! interlocks. Pure: everything they read comes in as arguments.

use std::time::{Duration, Instant};

use iiot_core::command::{ActionKind, Target};
use iiot_core::types::{
    AckReason, Command, CommandState, Expect, Operation, TagPath, Timestamp, Value,
};

use super::CommandConfig;
use super::ledger::Executed;
use crate::runtime::{Latest, LatestValues};

/// Why a command does not run: the state it ends in, the reason and a detail.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Refusal {
    pub state: CommandState,
    pub reason: AckReason,
    pub detail: String,
}

pub(crate) fn reject(reason: AckReason, detail: impl Into<String>) -> Refusal {
    Refusal {
        state: CommandState::Rejected,
        reason,
        detail: detail.into(),
    }
}

/// What the checks read.
pub(crate) struct Context<'a> {
    pub now: Timestamp,
    pub mono: Instant,
    pub config: &'a CommandConfig,
    pub target: Option<Target>,
    pub latest: &'a LatestValues,
    pub last: Option<Executed>,
}

/// The latest value of `tag` if it is Good and fresh enough.
fn usable(ctx: &Context<'_>, tag: &TagPath, why: &str) -> Result<(Latest, Value), Refusal> {
    let Some(l) = ctx.latest.get(tag) else {
        return Err(reject(
            AckReason::StaleValue,
            format!("{why}: no reading of {tag} yet"),
        ));
    };
    if !l.quality.is_good() {
        return Err(reject(
            AckReason::StaleValue,
            format!("{why}: {tag} has quality {}", l.quality),
        ));
    }
    let age = ctx.mono.saturating_duration_since(l.received);
    if age > ctx.config.max_value_age {
        return Err(reject(
            AckReason::StaleValue,
            format!(
                "{why}: the reading of {tag} is {} old (limit {})",
                humantime::format_duration(round(age)),
                humantime::format_duration(ctx.config.max_value_age)
            ),
        ));
    }
    let Some(v) = l.value.clone() else {
        return Err(reject(
            AckReason::StaleValue,
            format!("{why}: {tag} has no value"),
        ));
    };
    Ok((l, v))
}

fn round(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().min(u128::from(u64::MAX)) as u64)
}

fn add(current: &Value, delta: &Value) -> Option<Value> {
    match (current, delta) {
        (Value::Int(a), Value::Int(b)) => a.checked_add(*b).map(Value::Int),
        (Value::UInt(a), Value::Int(b)) => a.checked_add_signed(*b).map(Value::UInt),
        (Value::UInt(a), Value::UInt(b)) => a.checked_add(*b).map(Value::UInt),
        (Value::Int(a), Value::UInt(b)) => i64::try_from(*b)
            .ok()
            .and_then(|b| a.checked_add(b))
            .map(Value::Int),
        (Value::Bool(_), _) | (_, Value::Bool(_)) => None,
        (a, b) => {
            let x = a.as_f64()? + b.as_f64()?;
            x.is_finite().then_some(match a {
                Value::Float(_) => Value::Float(x as f32),
                _ => Value::Double(x),
            })
        }
    }
}

/// Runs every check; `Ok` is what the handler is asked to do.
pub(crate) fn check(cmd: &Command, ctx: &Context<'_>) -> Result<ActionKind, Refusal> {
    if cmd.is_expired(ctx.now) {
        return Err(Refusal {
            state: CommandState::Expired,
            reason: AckReason::Expired,
            detail: format!(
                "expired at {} (device clock {})",
                cmd.expires_at.to_rfc3339(),
                ctx.now.to_rfc3339()
            ),
        });
    }
    if cmd.issued_at > ctx.now.saturating_add(ctx.config.clock_skew) {
        return Err(reject(
            AckReason::IssuedInFuture,
            format!(
                "issued at {}, more than {} after the device clock {}",
                cmd.issued_at.to_rfc3339(),
                humantime::format_duration(ctx.config.clock_skew),
                ctx.now.to_rfc3339()
            ),
        ));
    }
    if let Some(last) = ctx.last
        && (cmd.issued_at.unix_nanos(), cmd.id) < (last.issued_at, last.id)
    {
        return Err(reject(
            AckReason::Superseded,
            format!(
                "command {} for {} was issued later and ran",
                last.id, cmd.target
            ),
        ));
    }
    let Some(target) = &ctx.target else {
        return Err(reject(
            AckReason::UnknownTarget,
            format!("no target {}", cmd.target),
        ));
    };
    let value = match &cmd.op {
        Operation::Invoke => {
            if !target.actions.contains(&cmd.action) {
                return Err(reject(
                    AckReason::Unsupported,
                    format!("{} has no action {:?}", cmd.target, cmd.action),
                ));
            }
            return interlocks(cmd, ctx).map(|()| ActionKind::Invoke(cmd.action.clone()));
        }
        Operation::Set(v) => v.clone(),
        Operation::Add(d) => {
            let (_, current) = usable(ctx, &cmd.target, "relative command")?;
            add(&current, d).ok_or_else(|| {
                reject(
                    AckReason::WrongType,
                    format!("cannot add a {} to {current:?}", d.type_name()),
                )
            })?
        }
    };
    if target.writes.is_none() {
        return Err(reject(
            AckReason::UnknownTarget,
            format!("{} is not writable", cmd.target),
        ));
    }
    if !target.accepts(&value) {
        let kind = target.writes.map_or("nothing", |k| k.as_str());
        return Err(reject(
            AckReason::WrongType,
            format!("{} takes a {kind}, not a {}", cmd.target, value.type_name()),
        ));
    }
    let k = &cmd.constraints;
    if k.min.is_some() || k.max.is_some() || k.max_rate_per_s.is_some() {
        let Some(x) = value.as_f64().filter(|_| !matches!(value, Value::Bool(_))) else {
            return Err(reject(
                AckReason::WrongType,
                format!("bounds need a number, the value is a {}", value.type_name()),
            ));
        };
        if let Some(lo) = k.min
            && x < lo
        {
            return Err(reject(
                AckReason::BelowMin,
                format!("{x} is below the minimum {lo}"),
            ));
        }
        if let Some(hi) = k.max
            && x > hi
        {
            return Err(reject(
                AckReason::AboveMax,
                format!("{x} is above the maximum {hi}"),
            ));
        }
        if let Some(rate) = k.max_rate_per_s {
            let (_, current) = usable(ctx, &cmd.target, "rate of change")?;
            let from = current.as_f64().unwrap_or(f64::NAN);
            // The step allowed is the rate times the time since this target was last
            // commanded (at least one second).
            let since = ctx.last.map_or(1.0, |l| {
                (ctx.now.unix_nanos().saturating_sub(l.started_at) as f64 / 1e9).max(1.0)
            });
            let step = (x - from).abs();
            // NaN (a current value that is not a number) is outside.
            let within = step <= rate * since;
            if !within {
                return Err(reject(
                    AckReason::RateOfChange,
                    format!(
                        "a step of {step} from {from} in {since:.1} s exceeds {rate} per second"
                    ),
                ));
            }
        }
    }
    interlocks(cmd, ctx)?;
    Ok(ActionKind::Write(value))
}

fn interlocks(cmd: &Command, ctx: &Context<'_>) -> Result<(), Refusal> {
    for i in &cmd.constraints.interlocks {
        let (_, v) = usable(ctx, &i.tag, "interlock")?;
        if !i.expect.holds(&v) {
            let want = match &i.expect {
                Expect::Equals(w) => format!("{w:?}"),
                Expect::Range { min, max } => format!(
                    "within [{}, {}]",
                    min.map_or("-inf".into(), |m| m.to_string()),
                    max.map_or("inf".into(), |m| m.to_string())
                ),
            };
            return Err(reject(
                AckReason::Interlock,
                format!("interlock {} is {v:?}, needs {want}", i.tag),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use iiot_core::command::ValueKind;
    use iiot_core::quality::Quality;
    use iiot_core::types::{Constraints, DeviceId, Interlock, MessageId, Sample};

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_unix_nanos(s * 1_000_000_000).unwrap()
    }

    fn tag(s: &str) -> TagPath {
        TagPath::new(s).unwrap()
    }

    fn cmd(op: Operation) -> Command {
        Command {
            id: MessageId::from_parts(1_000, 5),
            device_id: DeviceId::new("plc-01").unwrap(),
            action: "write".into(),
            target: tag("pump/speed"),
            op,
            issued_at: ts(100),
            expires_at: ts(130),
            issuer: "t".into(),
            reason: "t".into(),
            constraints: Constraints::default(),
        }
    }

    fn run(
        c: &Command,
        latest: &LatestValues,
        last: Option<Executed>,
        now: i64,
    ) -> Result<ActionKind, Refusal> {
        let config = CommandConfig::default();
        let ctx = Context {
            now: ts(now),
            mono: Instant::now(),
            config: &config,
            target: (c.target == tag("pump/speed"))
                .then(|| Target::writable(ValueKind::Number).with_action("reset")),
            latest,
            last,
        };
        check(c, &ctx)
    }

    fn reason(r: Result<ActionKind, Refusal>) -> AckReason {
        r.unwrap_err().reason
    }

    #[test]
    fn each_check_refuses_with_its_reason() {
        let latest = LatestValues::new();
        let set = cmd(Operation::Set(Value::Double(50.0)));
        assert_eq!(
            run(&set, &latest, None, 110).unwrap(),
            ActionKind::Write(Value::Double(50.0))
        );
        let r = run(&set, &latest, None, 130).unwrap_err();
        assert_eq!(
            (r.state, r.reason),
            (CommandState::Expired, AckReason::Expired)
        );
        // Five seconds of skew allowed, not more.
        assert!(run(&set, &latest, None, 96).is_ok());
        assert_eq!(
            reason(run(&set, &latest, None, 94)),
            AckReason::IssuedInFuture
        );
        let later = Executed {
            issued_at: ts(101).unix_nanos(),
            id: MessageId::from_parts(1, 1),
            started_at: ts(105).unix_nanos(),
        };
        assert_eq!(
            reason(run(&set, &latest, Some(later), 110)),
            AckReason::Superseded
        );
        let mut other = set.clone();
        other.target = tag("pump/other");
        assert_eq!(
            reason(run(&other, &latest, None, 110)),
            AckReason::UnknownTarget
        );
        let wrong = cmd(Operation::Set(Value::Bool(true)));
        assert_eq!(
            reason(run(&wrong, &latest, None, 110)),
            AckReason::WrongType
        );
        let mut bounded = set.clone();
        bounded.constraints.max = Some(40.0);
        assert_eq!(
            reason(run(&bounded, &latest, None, 110)),
            AckReason::AboveMax
        );
        bounded.constraints.max = None;
        bounded.constraints.min = Some(60.0);
        assert_eq!(
            reason(run(&bounded, &latest, None, 110)),
            AckReason::BelowMin
        );
        let mut invoke = cmd(Operation::Invoke);
        invoke.action = "reset".into();
        assert_eq!(
            run(&invoke, &latest, None, 110).unwrap(),
            ActionKind::Invoke("reset".into())
        );
        invoke.action = "explode".into();
        assert_eq!(
            reason(run(&invoke, &latest, None, 110)),
            AckReason::Unsupported
        );
    }

    #[test]
    fn relative_rate_and_interlocks_read_good_fresh_values() {
        let latest = LatestValues::new();
        let add = cmd(Operation::Add(Value::Double(5.0)));
        assert_eq!(reason(run(&add, &latest, None, 110)), AckReason::StaleValue);
        latest.record(&Sample::good(tag("pump/speed"), 40.0, ts(109)));
        assert_eq!(
            run(&add, &latest, None, 110).unwrap(),
            ActionKind::Write(Value::Double(45.0))
        );
        let mut ramp = cmd(Operation::Set(Value::Double(60.0)));
        ramp.constraints.max_rate_per_s = Some(10.0);
        assert_eq!(
            reason(run(&ramp, &latest, None, 110)),
            AckReason::RateOfChange
        );
        let long_ago = Executed {
            issued_at: 0,
            id: MessageId::from_parts(1, 1),
            started_at: ts(105).unix_nanos(),
        };
        assert!(
            run(&ramp, &latest, Some(long_ago), 110).is_ok(),
            "20 in 5 s at 10/s"
        );
        let mut locked = cmd(Operation::Set(Value::Double(45.0)));
        locked.constraints.interlocks = vec![
            Interlock {
                tag: tag("pump/remote"),
                expect: Expect::Equals(Value::Bool(true)),
            },
            Interlock {
                tag: tag("pump/pressure"),
                expect: Expect::Range {
                    min: None,
                    max: Some(6.0),
                },
            },
        ];
        assert_eq!(
            reason(run(&locked, &latest, None, 110)),
            AckReason::StaleValue
        );
        latest.record(&Sample::good(
            tag("pump/remote"),
            Value::Bool(true),
            ts(109),
        ));
        latest.record(&Sample::good(tag("pump/pressure"), 7.0, ts(109)));
        assert_eq!(
            reason(run(&locked, &latest, None, 110)),
            AckReason::Interlock
        );
        latest.record(&Sample::good(tag("pump/pressure"), 5.0, ts(109)));
        assert!(run(&locked, &latest, None, 110).is_ok());
        latest.record(&Sample::without_value(
            tag("pump/remote"),
            Quality::BAD_TIMEOUT,
            ts(109),
        ));
        assert_eq!(
            reason(run(&locked, &latest, None, 110)),
            AckReason::StaleValue
        );
    }

    #[test]
    fn integer_adds_stay_integers_and_overflow_refuses() {
        assert_eq!(add(&Value::Int(5), &Value::Int(-7)), Some(Value::Int(-2)));
        assert_eq!(add(&Value::UInt(5), &Value::Int(-7)), None);
        assert_eq!(add(&Value::Int(i64::MAX), &Value::Int(1)), None);
        assert_eq!(
            add(&Value::Double(1.5), &Value::Int(1)),
            Some(Value::Double(2.5))
        );
        assert_eq!(add(&Value::Bool(true), &Value::Int(1)), None);
    }
}
