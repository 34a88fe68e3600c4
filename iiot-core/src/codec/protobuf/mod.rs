//! The Protobuf form: conversions between domain types and the generated `v1`
//! types, with validation and limits on the way in.

use std::collections::HashMap;

use bytes::Bytes;
use prost::Message as _;

use super::wire::{self, WireError};
use super::{DecodeError, LimitError, Limits, SCHEMA_VERSION};
use crate::proto::v1 as pb;
use crate::quality::Quality;
use crate::types::{
    Backlog, BatchMetadata, DataLoss, DataLossReason, DeviceId, MessageId, Sample, Sequence,
    SourceHealth, Status, TagPath, TelemetryBatch, Timestamp, Value,
};

/// Field number of `TelemetryBatch.samples`.
const SAMPLES_FIELD: u32 = 6;
/// Field number of `TelemetryBatch.tag_table`.
const TAG_TABLE_FIELD: u32 = 7;

pub(crate) fn wire_error(e: WireError) -> DecodeError {
    DecodeError::Protobuf {
        reason: e.describe().to_owned(),
    }
}

pub(super) fn prost_error(e: &prost::DecodeError) -> DecodeError {
    DecodeError::Protobuf {
        reason: e.to_string(),
    }
}

/// Checks size and version of a Protobuf payload and counts `count_field`
/// occurrences (stopping past `limit`). Returns the count.
pub(crate) fn precheck(
    buf: &[u8],
    limits: &Limits,
    count_field: u32,
    limit: usize,
) -> Result<usize, DecodeError> {
    if buf.is_empty() {
        return Err(DecodeError::Empty);
    }
    limits.check_payload(buf.len())?;
    let scan = wire::scan(buf, count_field, limit).map_err(wire_error)?;
    check_version(scan.field1_varint)?;
    Ok(scan.count)
}

fn check_version(v: Option<u64>) -> Result<(), DecodeError> {
    match v {
        None | Some(0) => Err(DecodeError::MissingVersion),
        Some(v) if v == u64::from(SCHEMA_VERSION) => Ok(()),
        Some(version) => Err(DecodeError::UnsupportedVersion { version }),
    }
}

pub(super) fn timestamp(field: &str, ns: i64) -> Result<Timestamp, DecodeError> {
    Timestamp::from_unix_nanos(ns).map_err(|e| DecodeError::invalid(field, e))
}

pub(super) fn device_id(limits: &Limits, s: String) -> Result<DeviceId, DecodeError> {
    limits.check_text("device_id", &s)?;
    DeviceId::new(s).map_err(|e| DecodeError::invalid("device_id", e))
}

pub(super) fn message_id(field: &str, b: &[u8]) -> Result<MessageId, DecodeError> {
    MessageId::from_slice(b).map_err(|e| DecodeError::invalid(field, e))
}

pub(super) fn opt_text(
    limits: &Limits,
    field: &'static str,
    s: Option<String>,
) -> Result<Option<String>, DecodeError> {
    if let Some(s) = &s {
        limits.check_text(field, s)?;
    }
    Ok(s)
}

pub(super) fn check_value(limits: &Limits, index: usize, v: &Value) -> Result<(), LimitError> {
    limits.check_value(index, v)
}

// ---- values --------------------------------------------------------------

fn sample_value_to_domain(v: pb::sample::Value) -> Value {
    use pb::sample::Value as V;
    match v {
        V::DoubleValue(x) => Value::Double(x),
        V::FloatValue(x) => Value::Float(x),
        V::IntValue(x) => Value::Int(x),
        V::UintValue(x) => Value::UInt(x),
        V::BoolValue(x) => Value::Bool(x),
        V::StringValue(x) => Value::String(x),
        V::BytesValue(x) => Value::Bytes(x),
    }
}

fn sample_value_to_wire(v: &Value) -> pb::sample::Value {
    use pb::sample::Value as V;
    match v {
        Value::Double(x) => V::DoubleValue(*x),
        Value::Float(x) => V::FloatValue(*x),
        Value::Int(x) => V::IntValue(*x),
        Value::UInt(x) => V::UintValue(*x),
        Value::Bool(x) => V::BoolValue(*x),
        Value::String(x) => V::StringValue(x.clone()),
        Value::Bytes(x) => V::BytesValue(x.clone()),
    }
}

/// A domain value as the generated `Value` message.
pub fn value_to_wire(v: &Value) -> pb::Value {
    use pb::value::Kind as K;
    let kind = match v {
        Value::Double(x) => K::DoubleValue(*x),
        Value::Float(x) => K::FloatValue(*x),
        Value::Int(x) => K::IntValue(*x),
        Value::UInt(x) => K::UintValue(*x),
        Value::Bool(x) => K::BoolValue(*x),
        Value::String(x) => K::StringValue(x.clone()),
        Value::Bytes(x) => K::BytesValue(x.clone()),
    };
    pb::Value { kind: Some(kind) }
}

/// The generated `Value` message as a domain value (`None` when unset).
pub fn value_from_wire(v: pb::Value) -> Option<Value> {
    use pb::value::Kind as K;
    Some(match v.kind? {
        K::DoubleValue(x) => Value::Double(x),
        K::FloatValue(x) => Value::Float(x),
        K::IntValue(x) => Value::Int(x),
        K::UintValue(x) => Value::UInt(x),
        K::BoolValue(x) => Value::Bool(x),
        K::StringValue(x) => Value::String(x),
        K::BytesValue(x) => Value::Bytes(x),
    })
}

// ---- telemetry -----------------------------------------------------------

/// Encodes a batch as a v1 `TelemetryBatch`.
pub fn encode_telemetry(batch: &TelemetryBatch) -> Vec<u8> {
    telemetry_to_wire(batch).encode_to_vec()
}

/// The generated message for a batch.
///
/// When a tag occurs more than once in the batch (several scans of the same
/// tags), every tag goes into `tag_table` once and samples refer to it by index;
/// otherwise tags are written inline.
pub fn telemetry_to_wire(batch: &TelemetryBatch) -> pb::TelemetryBatch {
    let base = batch.gateway_time;
    let mut index: HashMap<&str, u32> = HashMap::with_capacity(batch.samples.len());
    let mut table: Vec<String> = Vec::new();
    let mut repeated = false;
    for s in &batch.samples {
        let next = u32::try_from(index.len()).unwrap_or(u32::MAX);
        let tag = s.tag().as_str();
        if index.insert(tag, next).is_some() {
            repeated = true;
        }
    }
    if repeated {
        index.clear();
        for s in &batch.samples {
            let tag = s.tag().as_str();
            if !index.contains_key(tag) {
                index.insert(tag, u32::try_from(table.len()).unwrap_or(u32::MAX));
                table.push(tag.to_owned());
            }
        }
    }
    pb::TelemetryBatch {
        schema_version: SCHEMA_VERSION,
        message_id: Bytes::copy_from_slice(&batch.message_id.to_bytes()),
        device_id: batch.device_id.to_string(),
        seq: batch.seq.0,
        gateway_time_unix_ns: base.unix_nanos(),
        samples: batch
            .samples
            .iter()
            .map(|s| {
                let (tag, tag_ref) = if repeated {
                    (
                        String::new(),
                        index.get(s.tag().as_str()).copied().unwrap_or(0),
                    )
                } else {
                    (s.tag().to_string(), 0)
                };
                pb::Sample {
                    tag,
                    tag_ref,
                    value: s.value().map(sample_value_to_wire),
                    quality: s.quality().status_code(),
                    source_time_offset_ns: s.source_time().offset_from(base),
                }
            })
            .collect(),
        tag_table: table,
        firmware_version: batch.metadata.firmware_version.clone(),
        gateway_id: batch.metadata.gateway_id.clone(),
    }
}

/// Decodes a v1 `TelemetryBatch`, applying `limits` before and during decoding.
///
/// # Errors
/// [`DecodeError`] naming the limit, the malformed field or the broken rule.
pub fn decode_telemetry(buf: &[u8], limits: &Limits) -> Result<TelemetryBatch, DecodeError> {
    if buf.is_empty() {
        return Err(DecodeError::Empty);
    }
    limits.check_payload(buf.len())?;
    let max = limits.max_samples_per_batch;
    let scan = wire::scan2(buf, SAMPLES_FIELD, TAG_TABLE_FIELD, max).map_err(wire_error)?;
    check_version(scan.field1_varint)?;
    if scan.count > max || scan.count2 > max {
        return Err(LimitError::TooManySamples {
            count: scan.count.max(scan.count2),
            limit: max,
        }
        .into());
    }
    let msg = pb::TelemetryBatch::decode(buf).map_err(|e| prost_error(&e))?;
    telemetry_from_wire(msg, limits)
}

fn tag_path(
    limits: &Limits,
    index: usize,
    field: &dyn Fn() -> String,
    tag: String,
) -> Result<TagPath, DecodeError> {
    limits.check_tag(index, &tag)?;
    TagPath::new(tag).map_err(|e| DecodeError::invalid(field(), e))
}

/// Validates a generated `TelemetryBatch` into the domain type.
///
/// # Errors
/// [`DecodeError::Limit`] or [`DecodeError::Invalid`] naming the field.
pub fn telemetry_from_wire(
    msg: pb::TelemetryBatch,
    limits: &Limits,
) -> Result<TelemetryBatch, DecodeError> {
    let max = limits.max_samples_per_batch;
    if msg.samples.len() > max || msg.tag_table.len() > max {
        return Err(LimitError::TooManySamples {
            count: msg.samples.len().max(msg.tag_table.len()),
            limit: max,
        }
        .into());
    }
    let base = timestamp("gateway_time_unix_ns", msg.gateway_time_unix_ns)?;
    let table = msg
        .tag_table
        .into_iter()
        .enumerate()
        .map(|(i, t)| tag_path(limits, i, &|| format!("tag_table[{i}]"), t))
        .collect::<Result<Vec<_>, _>>()?;
    let mut samples = Vec::with_capacity(msg.samples.len());
    for (index, s) in msg.samples.into_iter().enumerate() {
        let tag = if s.tag.is_empty() {
            let r = s.tag_ref as usize;
            table.get(r).cloned().ok_or_else(|| {
                DecodeError::invalid(
                    format!("samples[{index}].tag_ref"),
                    crate::types::ValidationError::Field {
                        field: "tag_ref",
                        reason: format!("{r} is outside a tag table of {}", table.len()),
                    },
                )
            })?
        } else {
            tag_path(limits, index, &|| format!("samples[{index}].tag"), s.tag)?
        };
        let value = s.value.map(sample_value_to_domain);
        if let Some(v) = &value {
            check_value(limits, index, v)?;
        }
        let time = Timestamp::from_offset(base, s.source_time_offset_ns).map_err(|e| {
            DecodeError::invalid(format!("samples[{index}].source_time_offset_ns"), e)
        })?;
        let sample = Sample::new(tag, value, Quality::from_status_code(s.quality), time)
            .map_err(|e| DecodeError::invalid(format!("samples[{index}]"), e))?;
        samples.push(sample);
    }
    Ok(TelemetryBatch {
        message_id: message_id("message_id", &msg.message_id)?,
        device_id: device_id(limits, msg.device_id)?,
        seq: Sequence(msg.seq),
        gateway_time: base,
        samples,
        metadata: BatchMetadata {
            firmware_version: opt_text(limits, "firmware_version", msg.firmware_version)?,
            gateway_id: opt_text(limits, "gateway_id", msg.gateway_id)?,
        },
    })
}

// ---- status --------------------------------------------------------------

/// Encodes a v1 `Status`.
pub fn encode_status(s: &Status) -> Vec<u8> {
    pb::Status {
        schema_version: SCHEMA_VERSION,
        device_id: s.device_id.to_string(),
        online: s.online,
        time_unix_ns: s.time.unix_nanos(),
        firmware_version: s.firmware_version.clone(),
        gateway_id: s.gateway_id.clone(),
        start_time_unix_ns: s.start_time.map(Timestamp::unix_nanos),
        reason: s.reason.clone(),
        backlog: s.backlog.as_ref().map(|b| pb::Backlog {
            records: b.records,
            bytes: b.bytes,
            oldest_age_ms: b.oldest_age_ms(),
        }),
        sources: s
            .sources
            .iter()
            .map(|h| pb::SourceHealth {
                name: h.name.clone(),
                last_good_unix_ns: h.last_good.map(Timestamp::unix_nanos),
                connected: h.connected,
            })
            .collect(),
    }
    .encode_to_vec()
}

/// Decodes a v1 `Status`.
///
/// # Errors
/// [`DecodeError`].
pub fn decode_status(buf: &[u8], limits: &Limits) -> Result<Status, DecodeError> {
    precheck(buf, limits, 0, 0)?;
    let m = pb::Status::decode(buf).map_err(|e| prost_error(&e))?;
    Ok(Status {
        device_id: device_id(limits, m.device_id)?,
        online: m.online,
        time: timestamp("time_unix_ns", m.time_unix_ns)?,
        firmware_version: opt_text(limits, "firmware_version", m.firmware_version)?,
        gateway_id: opt_text(limits, "gateway_id", m.gateway_id)?,
        start_time: m
            .start_time_unix_ns
            .map(|ns| timestamp("start_time_unix_ns", ns))
            .transpose()?,
        reason: opt_text(limits, "reason", m.reason)?,
        backlog: m.backlog.map(|b| Backlog {
            records: b.records,
            bytes: b.bytes,
            oldest_age: b.oldest_age_ms.map(std::time::Duration::from_millis),
        }),
        sources: source_health(limits, m.sources)?,
    })
}

fn source_health(
    limits: &Limits,
    sources: Vec<pb::SourceHealth>,
) -> Result<Vec<SourceHealth>, DecodeError> {
    limits.check_entries("sources", sources.len())?;
    sources
        .into_iter()
        .map(|h| {
            limits.check_text("sources.name", &h.name)?;
            Ok(SourceHealth {
                name: h.name,
                last_good: h
                    .last_good_unix_ns
                    .map(|ns| timestamp("sources.last_good_unix_ns", ns))
                    .transpose()?,
                connected: h.connected,
            })
        })
        .collect()
}

// ---- data loss -----------------------------------------------------------

fn reason_to_wire(r: DataLossReason) -> pb::DataLossReason {
    match r {
        DataLossReason::Overflow => pb::DataLossReason::Overflow,
        DataLossReason::Expired => pb::DataLossReason::Expired,
        DataLossReason::StoreCorrupt => pb::DataLossReason::StoreCorrupt,
        DataLossReason::Unreadable => pb::DataLossReason::Unreadable,
        DataLossReason::WriteFailed => pb::DataLossReason::WriteFailed,
        DataLossReason::Unknown => pb::DataLossReason::Unspecified,
    }
}

fn reason_from_wire(r: i32) -> DataLossReason {
    match pb::DataLossReason::try_from(r) {
        Ok(pb::DataLossReason::Overflow) => DataLossReason::Overflow,
        Ok(pb::DataLossReason::Expired) => DataLossReason::Expired,
        Ok(pb::DataLossReason::StoreCorrupt) => DataLossReason::StoreCorrupt,
        Ok(pb::DataLossReason::Unreadable) => DataLossReason::Unreadable,
        Ok(pb::DataLossReason::WriteFailed) => DataLossReason::WriteFailed,
        Ok(pb::DataLossReason::Unspecified) | Err(_) => DataLossReason::Unknown,
    }
}

/// Encodes a v1 `DataLoss`.
pub fn encode_data_loss(d: &DataLoss) -> Vec<u8> {
    pb::DataLoss {
        schema_version: SCHEMA_VERSION,
        message_id: Bytes::copy_from_slice(&d.message_id.to_bytes()),
        device_id: d.device_id.to_string(),
        first_seq: d.first_seq().0,
        last_seq: d.last_seq().0,
        count: d.count(),
        reason: reason_to_wire(d.reason) as i32,
        detected_at_unix_ns: d.detected_at.unix_nanos(),
        detail: d.detail.clone(),
        bytes: d.bytes,
    }
    .encode_to_vec()
}

/// Decodes a v1 `DataLoss`. An unknown reason (from a newer sender) becomes
/// [`DataLossReason::Unknown`], never an error: the loss itself must be recorded.
///
/// # Errors
/// [`DecodeError`].
pub fn decode_data_loss(buf: &[u8], limits: &Limits) -> Result<DataLoss, DecodeError> {
    precheck(buf, limits, 0, 0)?;
    let m = pb::DataLoss::decode(buf).map_err(|e| prost_error(&e))?;
    let mut d = DataLoss::new(
        device_id(limits, m.device_id)?,
        Sequence(m.first_seq),
        Sequence(m.last_seq),
        m.count,
        reason_from_wire(m.reason),
        timestamp("detected_at_unix_ns", m.detected_at_unix_ns)?,
    )
    .map_err(|e| DecodeError::invalid("first_seq/last_seq/count", e))?;
    d.message_id = message_id("message_id", &m.message_id)?;
    d.detail = opt_text(limits, "detail", m.detail)?;
    d.bytes = m.bytes;
    Ok(d)
}

mod control;
mod ota;

pub use control::{
    decode_command, decode_command_ack, decode_config_desired, decode_config_reported,
    encode_command, encode_command_ack, encode_config_desired, encode_config_reported,
};
pub use ota::{
    decode_manifest_body, decode_ota_status, decode_signed_manifest, encode_manifest_body,
    encode_ota_status, encode_signed_manifest,
};

/// Shared helpers for the submodules.
mod util {
    pub(super) use super::{check_value, device_id, message_id, opt_text, prost_error, timestamp};
}
