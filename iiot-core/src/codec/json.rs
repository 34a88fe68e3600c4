//! The JSON form brownfield devices send (and `iiot decode` prints).
//!
//! ```json
//! {
//!   "schema_version": 1,
//!   "msg_id": "01JDQ7Z3M4X5Y6Z7A8B9C0D1E2",
//!   "device_id": "plc-01",
//!   "seq": 42,
//!   "ts": "2026-11-26T01:22:32.5Z",
//!   "tags": {
//!     "tank1/level": { "v": 42.5, "q": 192 },
//!     "pump1/running": { "v": true, "q": 192, "ts": "2026-11-26T01:22:32.1Z" },
//!     "pump1/flow": { "v": null, "q": 24, "qc": 2149515264 }
//!   }
//! }
//! ```
//!
//! * `ts` is RFC 3339 text, or an integer of milliseconds since the epoch.
//! * Per tag: `v` the value (`null` or absent: no value), `q` the OPC DA quality
//!   byte (192 Good, 68 Uncertain/last usable, 0 Bad; absent means Good), `qc`
//!   the OPC-UA status code when the DA byte cannot carry it exactly, `ts` the
//!   source time when it differs from the batch time, `t` a type hint when the JSON
//!   value alone is ambiguous: `f64`, `f32`, `i64`, `u64`, `bool`, `string`, `bytes`
//!   (base64). Without `t`, integers become `i64` (or `u64` past `i64::MAX`), other
//!   numbers `f64`. NaN and infinities are the strings `"NaN"`, `"Infinity"`,
//!   `"-Infinity"` with `t` = `f64`/`f32`.
//! * A batch with the same tag more than once uses `"samples": [{"tag": ..., "v": ...}, ...]`
//!   instead of the `tags` object; decoders accept both.
//! * Unknown keys are ignored (forward compatibility).

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{DecodeError, LimitError, Limits, SCHEMA_VERSION};
use crate::quality::Quality;
use crate::types::{
    Backlog, BatchMetadata, DeviceId, MessageId, Sample, Sequence, SourceHealth, Status, TagPath,
    TelemetryBatch, Timestamp, Value,
};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

// ---- shared pieces ---------------------------------------------------------

/// A time as RFC 3339 text or integer milliseconds.
enum JsonTime<'a> {
    Millis(i64),
    Text(Cow<'a, str>),
}

impl<'de: 'a, 'a> Deserialize<'de> for JsonTime<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = JsonTime<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 time or integer milliseconds since the epoch")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(JsonTime::Millis(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                i64::try_from(v)
                    .map(JsonTime::Millis)
                    .map_err(|_| E::custom("time out of range"))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(JsonTime::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JsonTime::Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl JsonTime<'_> {
    fn resolve(&self, field: &str) -> Result<Timestamp, DecodeError> {
        match self {
            JsonTime::Millis(ms) => Timestamp::from_unix_millis(*ms),
            JsonTime::Text(s) => Timestamp::parse_rfc3339(s),
        }
        .map_err(|e| DecodeError::invalid(field, e))
    }
}

fn json_err(e: &serde_json::Error) -> DecodeError {
    DecodeError::from_json(e)
}

fn precheck(buf: &[u8], limits: &Limits) -> Result<(), DecodeError> {
    #[derive(Deserialize)]
    struct Peek {
        #[serde(default)]
        schema_version: Option<u64>,
    }
    if buf.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::Empty);
    }
    limits.check_payload(buf.len())?;
    let peek: Peek = serde_json::from_slice(buf).map_err(|e| json_err(&e))?;
    match peek.schema_version {
        None | Some(0) => Err(DecodeError::MissingVersion),
        Some(v) if v == u64::from(SCHEMA_VERSION) => Ok(()),
        Some(version) => Err(DecodeError::UnsupportedVersion { version }),
    }
}

// ---- telemetry in ------------------------------------------------------------

#[derive(Deserialize)]
struct SampleIn<'a> {
    #[serde(default, borrow)]
    tag: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    v: Option<&'a RawValue>,
    #[serde(default)]
    q: Option<u8>,
    #[serde(default)]
    qc: Option<u32>,
    #[serde(default, borrow)]
    ts: Option<JsonTime<'a>>,
    #[serde(default, borrow)]
    t: Option<Cow<'a, str>>,
}

/// The `tags` object, in document order, duplicates kept.
struct TagMap<'a>(Vec<(Cow<'a, str>, SampleIn<'a>)>);

impl<'de: 'a, 'a> Deserialize<'de> for TagMap<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = TagMap<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of tag -> {\"v\": ..., \"q\": ...}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1024));
                while let Some(k) = map.next_key::<Cow<'de, str>>()? {
                    out.push((k, map.next_value::<SampleIn<'de>>()?));
                }
                Ok(TagMap(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct BatchIn<'a> {
    #[serde(borrow)]
    msg_id: Cow<'a, str>,
    #[serde(borrow)]
    device_id: Cow<'a, str>,
    seq: u64,
    #[serde(borrow)]
    ts: JsonTime<'a>,
    #[serde(default)]
    firmware_version: Option<String>,
    #[serde(default)]
    gateway_id: Option<String>,
    #[serde(default, borrow)]
    tags: Option<TagMap<'a>>,
    #[serde(default, borrow)]
    samples: Option<Vec<SampleIn<'a>>>,
}

fn parse_special_float(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

fn parse_value(raw: &RawValue, hint: Option<&str>, field: &str) -> Result<Value, DecodeError> {
    let text = raw.get();
    let bad = |reason: &str| {
        DecodeError::invalid(
            field,
            crate::types::ValidationError::Field {
                field: "v",
                reason: reason.to_owned(),
            },
        )
    };
    let string = || serde_json::from_str::<String>(text).map_err(|_| bad("expected a string"));
    let first = text.as_bytes().first().copied().unwrap_or(b' ');
    match hint {
        None => match first {
            b'"' => Ok(Value::String(string()?)),
            b't' => Ok(Value::Bool(true)),
            b'f' => Ok(Value::Bool(false)),
            b'-' | b'0'..=b'9' => {
                if text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) {
                    text.parse::<f64>()
                        .map(Value::Double)
                        .map_err(|_| bad("bad number"))
                } else if let Ok(i) = text.parse::<i64>() {
                    Ok(Value::Int(i))
                } else if let Ok(u) = text.parse::<u64>() {
                    Ok(Value::UInt(u))
                } else {
                    text.parse::<f64>()
                        .map(Value::Double)
                        .map_err(|_| bad("bad number"))
                }
            }
            _ => Err(bad("arrays and objects are not values")),
        },
        Some("f64") => {
            if first == b'"' {
                parse_special_float(&string()?)
                    .map(Value::Double)
                    .ok_or_else(|| bad("expected a number"))
            } else {
                text.parse::<f64>()
                    .map(Value::Double)
                    .map_err(|_| bad("expected a number"))
            }
        }
        Some("f32") => {
            if first == b'"' {
                parse_special_float(&string()?)
                    .map(|f| Value::Float(f as f32))
                    .ok_or_else(|| bad("expected a number"))
            } else {
                text.parse::<f32>()
                    .map(Value::Float)
                    .map_err(|_| bad("expected a number"))
            }
        }
        Some("i64") => text
            .parse::<i64>()
            .map(Value::Int)
            .map_err(|_| bad("expected an i64")),
        Some("u64") => text
            .parse::<u64>()
            .map(Value::UInt)
            .map_err(|_| bad("expected a u64")),
        Some("bool") => match text {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(bad("expected a bool")),
        },
        Some("string") => Ok(Value::String(string()?)),
        Some("bytes") => B64
            .decode(string()?)
            .map(|b| Value::Bytes(b.into()))
            .map_err(|_| bad("expected base64")),
        Some(_) => Err(bad("unknown type hint")),
    }
}

fn sample_from_json(
    index: usize,
    tag: &str,
    s: &SampleIn<'_>,
    base: Timestamp,
    limits: &Limits,
) -> Result<Sample, DecodeError> {
    limits.check_tag(index, tag)?;
    let tag =
        TagPath::new(tag).map_err(|e| DecodeError::invalid(format!("samples[{index}].tag"), e))?;
    let value =
        s.v.map(|raw| parse_value(raw, s.t.as_deref(), &format!("samples[{index}].v")))
            .transpose()?;
    if let Some(v) = &value {
        limits.check_value(index, v)?;
    }
    let quality = match (s.qc, s.q) {
        (Some(code), _) => Quality::from_status_code(code),
        (None, Some(da)) => Quality::from_da(da),
        (None, None) => Quality::GOOD,
    };
    let time = match &s.ts {
        Some(t) => t.resolve(&format!("samples[{index}].ts"))?,
        None => base,
    };
    Sample::new(tag, value, quality, time)
        .map_err(|e| DecodeError::invalid(format!("samples[{index}]"), e))
}

/// Decodes the JSON form of a v1 telemetry batch.
///
/// # Errors
/// [`DecodeError`] naming the limit, position or rule.
pub fn decode_telemetry(buf: &[u8], limits: &Limits) -> Result<TelemetryBatch, DecodeError> {
    precheck(buf, limits)?;
    let b: BatchIn<'_> = serde_json::from_slice(buf).map_err(|e| json_err(&e))?;
    let base = b.ts.resolve("ts")?;
    let n = b.tags.as_ref().map_or(0, |t| t.0.len()) + b.samples.as_ref().map_or(0, Vec::len);
    if n > limits.max_samples_per_batch {
        return Err(LimitError::TooManySamples {
            count: n,
            limit: limits.max_samples_per_batch,
        }
        .into());
    }
    let mut samples = Vec::with_capacity(n);
    if let Some(tags) = &b.tags {
        for (tag, s) in &tags.0 {
            samples.push(sample_from_json(samples.len(), tag, s, base, limits)?);
        }
    }
    if let Some(list) = &b.samples {
        for s in list {
            let Some(tag) = s.tag.as_deref() else {
                return Err(DecodeError::invalid(
                    format!("samples[{}].tag", samples.len()),
                    crate::types::ValidationError::Missing { field: "tag" },
                ));
            };
            samples.push(sample_from_json(samples.len(), tag, s, base, limits)?);
        }
    }
    limits.check_text("device_id", &b.device_id)?;
    for (field, v) in [
        ("firmware_version", &b.firmware_version),
        ("gateway_id", &b.gateway_id),
    ] {
        if let Some(v) = v {
            limits.check_text(field, v)?;
        }
    }
    Ok(TelemetryBatch {
        message_id: b
            .msg_id
            .parse::<MessageId>()
            .map_err(|e| DecodeError::invalid("msg_id", e))?,
        device_id: DeviceId::new(b.device_id).map_err(|e| DecodeError::invalid("device_id", e))?,
        seq: Sequence(b.seq),
        gateway_time: base,
        samples,
        metadata: BatchMetadata {
            firmware_version: b.firmware_version,
            gateway_id: b.gateway_id,
        },
    })
}

// ---- telemetry out -----------------------------------------------------------

struct ValueOut<'a>(&'a Value);

impl Serialize for ValueOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        fn special<S: Serializer>(s: S, f: f64) -> Result<S::Ok, S::Error> {
            s.serialize_str(if f.is_nan() {
                "NaN"
            } else if f > 0.0 {
                "Infinity"
            } else {
                "-Infinity"
            })
        }
        match self.0 {
            Value::Double(f) if f.is_finite() => s.serialize_f64(*f),
            Value::Double(f) => special(s, *f),
            Value::Float(f) if f.is_finite() => s.serialize_f32(*f),
            Value::Float(f) => special(s, f64::from(*f)),
            Value::Int(i) => s.serialize_i64(*i),
            Value::UInt(u) => s.serialize_u64(*u),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::String(t) => s.serialize_str(t),
            Value::Bytes(b) => s.serialize_str(&B64.encode(b)),
        }
    }
}

fn type_hint(v: &Value) -> Option<&'static str> {
    match v {
        Value::Double(f) if !f.is_finite() => Some("f64"),
        Value::Float(_) => Some("f32"),
        Value::UInt(_) => Some("u64"),
        Value::Bytes(_) => Some("bytes"),
        _ => None,
    }
}

#[derive(Serialize)]
struct SampleOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    v: Option<ValueOut<'a>>,
    q: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    qc: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    t: Option<&'static str>,
}

fn sample_out(s: &Sample, base: Timestamp, with_tag: bool) -> SampleOut<'_> {
    let q = s.quality().to_da();
    SampleOut {
        tag: with_tag.then(|| s.tag().as_str()),
        v: s.value().map(ValueOut),
        q,
        qc: (Quality::from_da(q) != s.quality()).then(|| s.quality().status_code()),
        ts: (s.source_time() != base).then(|| s.source_time().to_rfc3339()),
        t: s.value().and_then(type_hint),
    }
}

struct TagsOut<'a>(&'a [Sample], Timestamp);

impl Serialize for TagsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for sample in self.0 {
            map.serialize_entry(sample.tag().as_str(), &sample_out(sample, self.1, false))?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct BatchOut<'a> {
    schema_version: u32,
    msg_id: String,
    device_id: &'a str,
    seq: u64,
    ts: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    firmware_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<TagsOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    samples: Option<Vec<SampleOut<'a>>>,
}

fn tags_unique(samples: &[Sample]) -> bool {
    let mut seen = std::collections::HashSet::with_capacity(samples.len());
    samples.iter().all(|s| seen.insert(s.tag().as_str()))
}

/// Encodes a batch in the JSON form.
pub fn encode_telemetry(batch: &TelemetryBatch) -> Vec<u8> {
    let base = batch.gateway_time;
    let unique = tags_unique(&batch.samples);
    let out = BatchOut {
        schema_version: SCHEMA_VERSION,
        msg_id: batch.message_id.to_string(),
        device_id: batch.device_id.as_str(),
        seq: batch.seq.0,
        ts: base.to_rfc3339(),
        firmware_version: batch.metadata.firmware_version.as_deref(),
        gateway_id: batch.metadata.gateway_id.as_deref(),
        tags: unique.then(|| TagsOut(&batch.samples, base)),
        samples: (!unique).then(|| {
            batch
                .samples
                .iter()
                .map(|s| sample_out(s, base, true))
                .collect()
        }),
    };
    // Serializing these plain structs into a Vec cannot fail.
    serde_json::to_vec(&out).unwrap_or_default()
}

// ---- status ------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct StatusJson<'a> {
    #[serde(default)]
    schema_version: u32,
    #[serde(borrow)]
    device_id: Cow<'a, str>,
    online: bool,
    #[serde(borrow, skip_serializing_if = "Option::is_none", default)]
    ts: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    firmware_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    gateway_id: Option<String>,
    #[serde(borrow, skip_serializing_if = "Option::is_none", default)]
    start_time: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    backlog: Option<BacklogJson>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    sources: Vec<SourceHealthJson>,
}

#[derive(Serialize, Deserialize)]
struct BacklogJson {
    records: u64,
    bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    oldest_age_ms: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct SourceHealthJson {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    last_good: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    connected: Option<bool>,
}

/// Encodes a status in the JSON form, e.g.
/// `{"schema_version":1,"device_id":"plc-01","online":false,"ts":"..."}`.
pub fn encode_status(s: &Status) -> Vec<u8> {
    let out = StatusJson {
        schema_version: SCHEMA_VERSION,
        device_id: Cow::Borrowed(s.device_id.as_str()),
        online: s.online,
        ts: Some(Cow::Owned(s.time.to_rfc3339())),
        firmware_version: s.firmware_version.clone(),
        gateway_id: s.gateway_id.clone(),
        start_time: s.start_time.map(|t| Cow::Owned(t.to_rfc3339())),
        reason: s.reason.clone(),
        backlog: s.backlog.as_ref().map(|b| BacklogJson {
            records: b.records,
            bytes: b.bytes,
            oldest_age_ms: b.oldest_age_ms(),
        }),
        sources: s
            .sources
            .iter()
            .map(|h| SourceHealthJson {
                name: h.name.clone(),
                last_good: h.last_good.map(Timestamp::to_rfc3339),
                connected: h.connected,
            })
            .collect(),
    };
    serde_json::to_vec(&out).unwrap_or_default()
}

/// Decodes the JSON form of a status. A missing `ts` decodes as the epoch.
///
/// # Errors
/// [`DecodeError`].
pub fn decode_status(buf: &[u8], limits: &Limits) -> Result<Status, DecodeError> {
    precheck(buf, limits)?;
    let m: StatusJson<'_> = serde_json::from_slice(buf).map_err(|e| json_err(&e))?;
    let time = |field: &str, t: &Option<Cow<'_, str>>| -> Result<Option<Timestamp>, DecodeError> {
        t.as_deref()
            .map(|s| Timestamp::parse_rfc3339(s).map_err(|e| DecodeError::invalid(field, e)))
            .transpose()
    };
    limits.check_text("device_id", &m.device_id)?;
    for (field, v) in [
        ("firmware_version", &m.firmware_version),
        ("gateway_id", &m.gateway_id),
        ("reason", &m.reason),
    ] {
        if let Some(v) = v {
            limits.check_text(field, v)?;
        }
    }
    limits.check_entries("sources", m.sources.len())?;
    let mut sources = Vec::with_capacity(m.sources.len());
    for h in m.sources {
        limits.check_text("sources.name", &h.name)?;
        let last_good = h
            .last_good
            .as_deref()
            .map(|t| {
                Timestamp::parse_rfc3339(t)
                    .map_err(|e| DecodeError::invalid("sources.last_good", e))
            })
            .transpose()?;
        sources.push(SourceHealth {
            name: h.name,
            last_good,
            connected: h.connected,
        });
    }
    Ok(Status {
        device_id: DeviceId::new(m.device_id.as_ref())
            .map_err(|e| DecodeError::invalid("device_id", e))?,
        online: m.online,
        time: time("ts", &m.ts)?.unwrap_or(Timestamp::UNIX_EPOCH),
        start_time: time("start_time", &m.start_time)?,
        firmware_version: m.firmware_version,
        gateway_id: m.gateway_id,
        reason: m.reason,
        backlog: m.backlog.map(|b| Backlog {
            records: b.records,
            bytes: b.bytes,
            oldest_age: b.oldest_age_ms.map(std::time::Duration::from_millis),
        }),
        sources,
    })
}
