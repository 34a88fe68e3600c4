//! Commands, command acks and configuration in the Protobuf form.

use std::collections::BTreeMap;

use bytes::Bytes;
use prost::Message as _;

use super::util::{check_value, device_id, message_id, opt_text, prost_error, timestamp};
use super::{precheck, value_from_wire, value_to_wire};
use crate::codec::{DecodeError, LimitError, Limits, SCHEMA_VERSION};
use crate::proto::v1 as pb;
use crate::types::{
    AckReason, Command, CommandAck, CommandState, ConfigDesired, ConfigReported, Constraints,
    Expect, Interlock, Operation, TagPath, Timestamp, Value,
};

fn tag(field: &str, limits: &Limits, s: String) -> Result<TagPath, DecodeError> {
    if s.len() > limits.max_tag_len {
        return Err(LimitError::TagTooLong {
            index: 0,
            len: s.len(),
            limit: limits.max_tag_len,
        }
        .into());
    }
    TagPath::new(s).map_err(|e| DecodeError::invalid(field, e))
}

fn text(limits: &Limits, field: &'static str, s: String) -> Result<String, DecodeError> {
    limits.check_text(field, &s)?;
    Ok(s)
}

fn value(limits: &Limits, v: Option<pb::Value>) -> Result<Option<Value>, DecodeError> {
    let v = v.and_then(value_from_wire);
    if let Some(v) = &v {
        check_value(limits, 0, v)?;
    }
    Ok(v)
}

fn interlock_to_wire(i: &Interlock) -> pb::Interlock {
    let (equals, min, max) = match &i.expect {
        Expect::Equals(v) => (Some(value_to_wire(v)), None, None),
        Expect::Range { min, max } => (None, *min, *max),
    };
    pb::Interlock {
        tag: i.tag.to_string(),
        equals,
        min,
        max,
    }
}

/// Encodes a v1 `Command`. The first equality interlock is also written to the
/// single-interlock fields older devices read.
pub fn encode_command(c: &Command) -> Vec<u8> {
    let k = &c.constraints;
    let legacy = k.interlocks.iter().find_map(|i| match &i.expect {
        Expect::Equals(v) => Some((i.tag.to_string(), value_to_wire(v))),
        Expect::Range { .. } => None,
    });
    let (value, delta) = match &c.op {
        Operation::Set(v) => (Some(value_to_wire(v)), None),
        Operation::Add(d) => (None, Some(value_to_wire(d))),
        Operation::Invoke => (None, None),
    };
    pb::Command {
        schema_version: SCHEMA_VERSION,
        command_id: Bytes::copy_from_slice(&c.id.to_bytes()),
        device_id: c.device_id.to_string(),
        action: c.action.clone(),
        target: c.target.to_string(),
        value,
        issued_at_unix_ns: c.issued_at.unix_nanos(),
        expires_at_unix_ns: c.expires_at.unix_nanos(),
        issuer: c.issuer.clone(),
        reason: c.reason.clone(),
        constraints: Some(pb::Constraints {
            min: k.min,
            max: k.max,
            max_rate_per_s: k.max_rate_per_s,
            interlock_tag: legacy.as_ref().map(|(t, _)| t.clone()),
            interlock_value: legacy.map(|(_, v)| v),
            interlocks: k.interlocks.iter().map(interlock_to_wire).collect(),
        }),
        delta,
    }
    .encode_to_vec()
}

fn invalid(field: &'static str, reason: impl Into<String>) -> DecodeError {
    DecodeError::invalid(
        field,
        crate::types::ValidationError::Field {
            field,
            reason: reason.into(),
        },
    )
}

fn interlocks(limits: &Limits, k: pb::Constraints) -> Result<Vec<Interlock>, DecodeError> {
    limits.check_entries("constraints.interlocks", k.interlocks.len())?;
    if !k.interlocks.is_empty() {
        // The list supersedes the single-interlock fields (a writer mirrors one there).
        return k
            .interlocks
            .into_iter()
            .map(|i| {
                let expect = match (value(limits, i.equals)?, i.min, i.max) {
                    (Some(v), None, None) => Expect::Equals(v),
                    (None, min, max) => Expect::Range { min, max },
                    (Some(_), _, _) => {
                        return Err(invalid(
                            "constraints.interlocks",
                            "an interlock has a value or a range, not both",
                        ));
                    }
                };
                Ok(Interlock {
                    tag: tag("constraints.interlocks.tag", limits, i.tag)?,
                    expect,
                })
            })
            .collect();
    }
    match (k.interlock_tag, value(limits, k.interlock_value)?) {
        (Some(t), Some(v)) => Ok(vec![Interlock {
            tag: tag("constraints.interlock_tag", limits, t)?,
            expect: Expect::Equals(v),
        }]),
        (None, None) => Ok(Vec::new()),
        _ => Err(invalid(
            "constraints",
            "interlock_tag and interlock_value come together",
        )),
    }
}

/// Decodes and validates a v1 `Command` (a value, a delta or a named action; expiry
/// after issue; sane constraints).
///
/// # Errors
/// [`DecodeError`].
pub fn decode_command(buf: &[u8], limits: &Limits) -> Result<Command, DecodeError> {
    precheck(buf, limits, 0, 0)?;
    let m = pb::Command::decode(buf).map_err(|e| prost_error(&e))?;
    let op = match (value(limits, m.value)?, value(limits, m.delta)?) {
        (Some(v), None) => Operation::Set(v),
        (None, Some(d)) => Operation::Add(d),
        (None, None) => Operation::Invoke,
        (Some(_), Some(_)) => {
            return Err(invalid(
                "delta",
                "a command sets a value or adds a delta, not both",
            ));
        }
    };
    let k = m.constraints.unwrap_or_default();
    let (min, max, max_rate_per_s) = (k.min, k.max, k.max_rate_per_s);
    let c = Command {
        id: message_id("command_id", &m.command_id)?,
        device_id: device_id(limits, m.device_id)?,
        action: text(limits, "action", m.action)?,
        target: tag("target", limits, m.target)?,
        op,
        issued_at: timestamp("issued_at_unix_ns", m.issued_at_unix_ns)?,
        expires_at: timestamp("expires_at_unix_ns", m.expires_at_unix_ns)?,
        issuer: text(limits, "issuer", m.issuer)?,
        reason: text(limits, "reason", m.reason)?,
        constraints: Constraints {
            min,
            max,
            max_rate_per_s,
            interlocks: interlocks(limits, k)?,
        },
    };
    c.validate()
        .map_err(|e| DecodeError::invalid("command", e))?;
    Ok(c)
}

fn state_to_wire(s: CommandState) -> pb::CommandState {
    use pb::CommandState as P;
    match s {
        CommandState::Pending => P::Pending,
        CommandState::Queued => P::Queued,
        CommandState::Delivered => P::Delivered,
        CommandState::Validating => P::Validating,
        CommandState::Executing => P::Executing,
        CommandState::Completed => P::Completed,
        CommandState::Rejected => P::Rejected,
        CommandState::Failed => P::Failed,
        CommandState::Expired => P::Expired,
        CommandState::Interrupted => P::Interrupted,
    }
}

fn state_from_wire(s: i32) -> Result<CommandState, DecodeError> {
    use pb::CommandState as P;
    Ok(match P::try_from(s) {
        Ok(P::Pending) => CommandState::Pending,
        Ok(P::Queued) => CommandState::Queued,
        Ok(P::Delivered) => CommandState::Delivered,
        Ok(P::Validating) => CommandState::Validating,
        Ok(P::Executing) => CommandState::Executing,
        Ok(P::Completed) => CommandState::Completed,
        Ok(P::Rejected) => CommandState::Rejected,
        Ok(P::Failed) => CommandState::Failed,
        Ok(P::Expired) => CommandState::Expired,
        Ok(P::Interrupted) => CommandState::Interrupted,
        Ok(P::Unspecified) | Err(_) => {
            return Err(DecodeError::invalid(
                "state",
                crate::types::ValidationError::Field {
                    field: "state",
                    reason: format!("unknown command state {s}"),
                },
            ));
        }
    })
}

/// Encodes a v1 `CommandAck`.
pub fn encode_command_ack(a: &CommandAck) -> Vec<u8> {
    pb::CommandAck {
        schema_version: SCHEMA_VERSION,
        command_id: Bytes::copy_from_slice(&a.command_id.to_bytes()),
        device_id: a.device_id.to_string(),
        state: state_to_wire(a.state) as i32,
        time_unix_ns: a.time.unix_nanos(),
        detail: a.detail.clone(),
        result: a.result.as_ref().map(value_to_wire),
        duplicate: a.duplicate,
        reason: a.reason.map_or(0, AckReason::to_wire),
        received_at_unix_ns: a.received_at.map_or(0, Timestamp::unix_nanos),
    }
    .encode_to_vec()
}

/// Decodes a v1 `CommandAck`.
///
/// # Errors
/// [`DecodeError`]; an unknown state is [`DecodeError::Invalid`].
pub fn decode_command_ack(buf: &[u8], limits: &Limits) -> Result<CommandAck, DecodeError> {
    precheck(buf, limits, 0, 0)?;
    let m = pb::CommandAck::decode(buf).map_err(|e| prost_error(&e))?;
    Ok(CommandAck {
        command_id: message_id("command_id", &m.command_id)?,
        device_id: device_id(limits, m.device_id)?,
        state: state_from_wire(m.state)?,
        time: timestamp("time_unix_ns", m.time_unix_ns)?,
        detail: opt_text(limits, "detail", m.detail)?,
        result: value(limits, m.result)?,
        duplicate: m.duplicate,
        reason: AckReason::from_wire(m.reason),
        received_at: match m.received_at_unix_ns {
            0 => None,
            t => Some(timestamp("received_at_unix_ns", t)?),
        },
    })
}

fn settings(
    limits: &Limits,
    m: BTreeMap<String, pb::Value>,
) -> Result<BTreeMap<String, Value>, DecodeError> {
    let mut out = BTreeMap::new();
    for (k, v) in m {
        limits.check_text("settings key", &k)?;
        let v = value(limits, Some(v))?.ok_or_else(|| {
            DecodeError::invalid(
                format!("settings[{k}]"),
                crate::types::ValidationError::Missing { field: "value" },
            )
        })?;
        out.insert(k, v);
    }
    Ok(out)
}

fn settings_to_wire(s: &BTreeMap<String, Value>) -> BTreeMap<String, pb::Value> {
    s.iter()
        .map(|(k, v)| (k.clone(), value_to_wire(v)))
        .collect()
}

/// Field number of the settings map in both config messages.
const SETTINGS_FIELD: u32 = 4;

/// Encodes a v1 `ConfigDesired`.
pub fn encode_config_desired(c: &ConfigDesired) -> Vec<u8> {
    pb::ConfigDesired {
        schema_version: SCHEMA_VERSION,
        device_id: c.device_id.to_string(),
        revision: c.revision,
        settings: settings_to_wire(&c.settings),
        issued_at_unix_ns: c.issued_at.unix_nanos(),
    }
    .encode_to_vec()
}

/// Decodes a v1 `ConfigDesired`, counting settings before decoding them.
///
/// # Errors
/// [`DecodeError`].
pub fn decode_config_desired(buf: &[u8], limits: &Limits) -> Result<ConfigDesired, DecodeError> {
    limits.check_entries(
        "settings",
        precheck(buf, limits, SETTINGS_FIELD, limits.max_map_entries)?,
    )?;
    let m = pb::ConfigDesired::decode(buf).map_err(|e| prost_error(&e))?;
    Ok(ConfigDesired {
        device_id: device_id(limits, m.device_id)?,
        revision: m.revision,
        settings: settings(limits, m.settings)?,
        issued_at: timestamp("issued_at_unix_ns", m.issued_at_unix_ns)?,
    })
}

/// Encodes a v1 `ConfigReported`.
pub fn encode_config_reported(c: &ConfigReported) -> Vec<u8> {
    pb::ConfigReported {
        schema_version: SCHEMA_VERSION,
        device_id: c.device_id.to_string(),
        applied_revision: c.applied_revision,
        settings: settings_to_wire(&c.settings),
        time_unix_ns: c.time.unix_nanos(),
        errors: c.errors.clone(),
    }
    .encode_to_vec()
}

/// Decodes a v1 `ConfigReported`.
///
/// # Errors
/// [`DecodeError`].
pub fn decode_config_reported(buf: &[u8], limits: &Limits) -> Result<ConfigReported, DecodeError> {
    limits.check_entries(
        "settings",
        precheck(buf, limits, SETTINGS_FIELD, limits.max_map_entries)?,
    )?;
    let m = pb::ConfigReported::decode(buf).map_err(|e| prost_error(&e))?;
    limits.check_entries("settings", m.errors.len())?;
    for (k, v) in &m.errors {
        limits.check_text("errors key", k)?;
        limits.check_text("errors value", v)?;
    }
    Ok(ConfigReported {
        device_id: device_id(limits, m.device_id)?,
        applied_revision: m.applied_revision,
        settings: settings(limits, m.settings)?,
        time: timestamp("time_unix_ns", m.time_unix_ns)?,
        errors: m.errors,
    })
}
