//! Shared by the sink benchmarks: the rows and the arithmetic.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use bytes::Bytes;
use iiot_core::codec::protobuf;
use iiot_core::quality::Quality;
use iiot_core::topic::UnsPath;
use iiot_core::types::{
    DeviceId, MessageId, Sample, Sequence, TagPath, TelemetryBatch, Timestamp, Value,
};
use iiot_ingest::record::{AcceptedBatch, CommitBatch};

#[cfg(feature = "postgres")]
pub mod pg;

pub const SAMPLES_PER_BATCH: usize = 50;

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Commit batches of 50-sample telemetry batches from 20 devices: mostly
/// doubles, some ints, bools and floats, a few Uncertain qualities (the shape of
/// the codec benchmark).
pub fn build(rows: usize, commit_rows: usize) -> Vec<CommitBatch> {
    let base = Timestamp::now().unix_nanos();
    let tags: Vec<TagPath> = (0..SAMPLES_PER_BATCH)
        .map(|i| TagPath::new(format!("line2/filler3/pressure_{i:02}")).unwrap())
        .collect();
    let devices: Vec<DeviceId> = (0..20)
        .map(|d| DeviceId::new(format!("plc-{d:03}")).unwrap())
        .collect();
    let batches = rows.div_ceil(SAMPLES_PER_BATCH);
    let per_commit = (commit_rows / SAMPLES_PER_BATCH).max(1);
    let mut out = Vec::new();
    let mut current = CommitBatch::default();
    for b in 0..batches {
        let t = base + b as i64 * 1_000_000;
        let samples = tags
            .iter()
            .enumerate()
            .map(|(i, tag)| {
                let at = Timestamp::from_unix_nanos(t + i as i64 * 1_000).unwrap();
                let value: Value = match i % 10 {
                    7 => Value::Int(b as i64 * 3 - i as i64),
                    8 => Value::Bool(b % 2 == 0),
                    9 => Value::Float(b as f32 * 0.25),
                    _ => Value::Double(b as f64 * 0.1 + i as f64),
                };
                let q = if i % 17 == 0 {
                    Quality::UNCERTAIN_LAST_USABLE_VALUE
                } else {
                    Quality::GOOD
                };
                Sample::new(tag.clone(), Some(value), q, at).unwrap()
            })
            .collect();
        let device = devices[b % devices.len()].clone();
        let mut batch = TelemetryBatch::new(device, Sequence((b / devices.len()) as u64), samples);
        batch.message_id = MessageId::from_parts(1_700_000_000_000, b as u128);
        current.telemetry.push(AcceptedBatch {
            topic: format!("acme/s1/a1/l2/plc/{}/telemetry", batch.device_id.as_str()),
            batch,
            received_at: Timestamp::now(),
        });
        if current.telemetry.len() == per_commit {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.telemetry.is_empty() {
        out.push(current);
    }
    out
}

/// Every telemetry batch of `commits` as the Protobuf payload a gateway
/// publishes, on its UNS telemetry topic under `enterprise`.
pub fn payloads(commits: &[CommitBatch], enterprise: &str) -> Vec<(String, Bytes)> {
    commits
        .iter()
        .flat_map(|c| c.telemetry.iter())
        .map(|a| {
            let path = UnsPath::new(
                enterprise,
                "plant1",
                "area1",
                "line1",
                "plc",
                a.batch.device_id.clone(),
            )
            .unwrap();
            (
                path.telemetry().to_string(),
                Bytes::from(protobuf::encode_telemetry(&a.batch)),
            )
        })
        .collect()
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn rate(rows: usize, d: Duration) -> f64 {
    rows as f64 / d.as_secs_f64()
}

/// Runs `psql URL -c COPY_SQL < file` (the baseline: PostgreSQL's own client loading
/// the same rows) and returns how long it took, or why it failed.
pub fn psql_copy(url: &str, copy_sql: &str, file: &std::path::Path) -> Result<Duration, String> {
    let input = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let t = std::time::Instant::now();
    let status = std::process::Command::new("psql")
        .args([url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", copy_sql])
        .stdin(input)
        .stdout(std::process::Stdio::null())
        .status();
    let elapsed = t.elapsed();
    match status {
        Ok(s) if s.success() => Ok(elapsed),
        other => Err(format!("psql COPY failed: {other:?}")),
    }
}
