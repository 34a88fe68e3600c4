//! Commands, command acks and configuration in the Protobuf form.

use std::collections::BTreeMap;

use bytes::Bytes;
use prost::Message as _;

use super::util::{check_value, device_id, message_id, opt_text, prost_error, timestamp};
use super::{precheck, value_from_wire, value_to_wire};
use crate::codec::{DecodeError, LimitError, Limits, SCHEMA_VERSION};
use crate::proto::v1 as pb;
use crate::types::{
    Command, CommandAck, CommandState, ConfigDesired, ConfigReported, Constraints, Interlock,
    TagPath, Value,
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

/// Encodes a v1 `Command`.
pub fn encode_command(c: &Command) -> Vec<u8> {
    let k = &c.constraints;
    pb::Command {
        schema_version: SCHEMA_VERSION,
        command_id: Bytes::copy_from_slice(&c.id.to_bytes()),
        device_id: c.device_id.to_string(),
        action: c.action.clone(),
        target: c.target.to_string(),
        value: Some(value_to_wire(&c.value)),
        issued_at_unix_ns: c.issued_at.unix_nanos(),
        expires_at_unix_ns: c.expires_at.unix_nanos(),
        issuer: c.issuer.clone(),
        reason: c.reason.clone(),
        constraints: Some(pb::Constraints {
            min: k.min,
            max: k.max,
            max_rate_per_s: k.max_rate_per_s,
            interlock_tag: k.interlock.as_ref().map(|i| i.tag.to_string()),
            interlock_value: k.interlock.as_ref().map(|i| value_to_wire(&i.value)),
        }),
    }
    .encode_to_vec()
}

/// Decodes and validates a v1 `Command` (value present, expiry after issue, sane
/// constraints).
///
/// # Errors
/// [`DecodeError`].
pub fn decode_command(buf: &[u8], limits: &Limits) -> Result<Command, DecodeError> {
    precheck(buf, limits, 0, 0)?;
    let m = pb::Command::decode(buf).map_err(|e| prost_error(&e))?;
    let k = m.constraints.unwrap_or_default();
    let interlock = match (k.interlock_tag, value(limits, k.interlock_value)?) {
        (Some(t), Some(v)) => Some(Interlock {
            tag: tag("constraints.interlock_tag", limits, t)?,
            value: v,
        }),
        (None, None) => None,
        _ => {
            return Err(DecodeError::invalid(
                "constraints",
                crate::types::ValidationError::Field {
                    field: "interlock",
                    reason: "interlock_tag and interlock_value come together".into(),
                },
            ));
        }
    };
    let c = Command {
        id: message_id("command_id", &m.command_id)?,
        device_id: device_id(limits, m.device_id)?,
        action: text(limits, "action", m.action)?,
        target: tag("target", limits, m.target)?,
        value: value(limits, m.value)?.ok_or_else(|| {
            DecodeError::invalid(
                "value",
                crate::types::ValidationError::Missing { field: "value" },
            )
        })?,
        issued_at: timestamp("issued_at_unix_ns", m.issued_at_unix_ns)?,
        expires_at: timestamp("expires_at_unix_ns", m.expires_at_unix_ns)?,
        issuer: text(limits, "issuer", m.issuer)?,
        reason: text(limits, "reason", m.reason)?,
        constraints: Constraints {
            min: k.min,
            max: k.max,
            max_rate_per_s: k.max_rate_per_s,
            interlock,
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
