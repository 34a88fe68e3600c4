//! The statements of one commit and of the sequence-state load.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use futures_util::SinkExt;
use iiot_core::types::{DataLossReason, DeviceId, Sequence};
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use super::copy::SampleCopyEncoder;
use super::schema::TableNames;
use super::types::{PgTime, PgU64};
use super::{Conn, StepError};
use crate::record::{CommitBatch, CommitReport, DeviceSequenceState, Gap, GapChange};

/// Bytes of COPY data handed to the connection at a time.
const COPY_CHUNK: usize = 256 * 1024;

/// Writes `batch` in one transaction on `conn`. On error the transaction is
/// dropped, which rolls it back.
pub(super) async fn write(conn: &mut Conn, batch: &CommitBatch) -> Result<CommitReport, StepError> {
    let tx = conn.client.transaction().await.map_err(|e| ("begin", e))?;

    // 1. Which telemetry batches are new? The first occurrence of each key in
    //    this batch stands for all of its repeats.
    let mut first_of: HashMap<(&str, [u8; 16]), usize> = HashMap::new();
    let mut unique = Vec::new();
    for (i, a) in batch.telemetry.iter().enumerate() {
        let key = (a.batch.device_id.as_str(), a.batch.message_id.to_bytes());
        if let std::collections::hash_map::Entry::Vacant(v) = first_of.entry(key) {
            v.insert(i);
            unique.push(i);
        }
    }
    let mut new = vec![false; batch.telemetry.len()];
    if !unique.is_empty() {
        let mut devices = Vec::with_capacity(unique.len());
        let mut ids = Vec::with_capacity(unique.len());
        let mut seqs = Vec::with_capacity(unique.len());
        let mut gateway_times = Vec::with_capacity(unique.len());
        let mut received = Vec::with_capacity(unique.len());
        let mut topics = Vec::with_capacity(unique.len());
        let mut counts = Vec::with_capacity(unique.len());
        let mut firmware = Vec::with_capacity(unique.len());
        let mut gateways = Vec::with_capacity(unique.len());
        for &i in &unique {
            let a = &batch.telemetry[i];
            let b = &a.batch;
            devices.push(b.device_id.as_str());
            ids.push(b.message_id.to_bytes().to_vec());
            seqs.push(PgU64(b.seq.0));
            gateway_times.push(PgTime(b.gateway_time));
            received.push(PgTime(a.received_at));
            topics.push(a.topic.as_str());
            counts.push(i32::try_from(b.samples.len()).unwrap_or(i32::MAX));
            firmware.push(b.metadata.firmware_version.as_deref());
            gateways.push(b.metadata.gateway_id.as_deref());
        }
        let params: [&(dyn ToSql + Sync); 9] = [
            &devices,
            &ids,
            &seqs,
            &gateway_times,
            &received,
            &topics,
            &counts,
            &firmware,
            &gateways,
        ];
        let rows = tx
            .query(&conn.insert_messages, &params)
            .await
            .map_err(|e| ("insert messages", e))?;
        for row in rows {
            let device: &str = row.try_get(0).map_err(|e| ("insert messages", e))?;
            let id: &[u8] = row.try_get(1).map_err(|e| ("insert messages", e))?;
            let Ok(id) = <[u8; 16]>::try_from(id) else {
                continue;
            };
            if let Some(&i) = first_of.get(&(device, id)) {
                new[i] = true;
            }
        }
    }
    let mut report = CommitReport::default();
    for (a, is_new) in batch.telemetry.iter().zip(&new) {
        if *is_new {
            report.batches_written += 1;
            report.rows_written += a.batch.samples.len() as u64;
        } else {
            report.batches_skipped += 1;
        }
    }

    // 2. The samples of new batches, by binary COPY.
    if report.rows_written > 0 {
        let sink = tx
            .copy_in(&conn.copy_samples)
            .await
            .map_err(|e| ("copy samples", e))?;
        let mut sink = std::pin::pin!(sink);
        let mut enc = SampleCopyEncoder::new();
        for (a, is_new) in batch.telemetry.iter().zip(&new) {
            if !*is_new {
                continue;
            }
            enc.push_batch(a);
            if enc.buffered() >= COPY_CHUNK {
                sink.send(enc.take())
                    .await
                    .map_err(|e| ("copy samples", e))?;
            }
        }
        sink.send(enc.finish())
            .await
            .map_err(|e| ("copy samples", e))?;
        sink.as_mut()
            .finish()
            .await
            .map_err(|e| ("copy samples", e))?;
    }

    // 3. Data loss, gaps, dead letters.
    if !batch.data_loss.is_empty() {
        let d = &batch.data_loss;
        let devices: Vec<&str> = d.iter().map(|x| x.device_id.as_str()).collect();
        let ids: Vec<Vec<u8>> = d.iter().map(|x| x.message_id.to_bytes().to_vec()).collect();
        let firsts: Vec<PgU64> = d.iter().map(|x| PgU64(x.first_seq().0)).collect();
        let lasts: Vec<PgU64> = d.iter().map(|x| PgU64(x.last_seq().0)).collect();
        let counts: Vec<PgU64> = d.iter().map(|x| PgU64(x.count())).collect();
        let reasons: Vec<&str> = d.iter().map(|x| data_loss_label(x.reason)).collect();
        let detected: Vec<PgTime> = d.iter().map(|x| PgTime(x.detected_at)).collect();
        let details: Vec<Option<Cow<'_, str>>> = d
            .iter()
            .map(|x| x.detail.as_deref().map(storable_text))
            .collect();
        let bytes: Vec<Option<PgU64>> = d.iter().map(|x| x.bytes.map(PgU64)).collect();
        let params: [&(dyn ToSql + Sync); 9] = [
            &devices, &ids, &firsts, &lasts, &counts, &reasons, &detected, &details, &bytes,
        ];
        tx.execute(&conn.insert_data_loss, &params)
            .await
            .map_err(|e| ("insert data loss", e))?;
    }

    // In order: a later change may touch the gap an earlier one created. Gap
    // changes are few per commit, so one round trip each is fine.
    for change in &batch.gaps {
        match change {
            GapChange::Opened(g) => upsert_gap(&tx, &conn.upsert_gap, g, g.first_seen).await,
            GapChange::Narrowed {
                device_id,
                first,
                remaining,
                at,
            } => {
                let deleted = tx
                    .execute(&conn.delete_gap, &[&device_id.as_str(), &PgU64(first.0)])
                    .await;
                match deleted {
                    Ok(_) => {
                        for g in remaining {
                            upsert_gap(&tx, &conn.upsert_gap, g, *at).await?;
                        }
                        Ok(())
                    }
                    Err(e) => Err(("gaps", e)),
                }
            }
        }?;
    }

    if !batch.dead_letters.is_empty() {
        let d = &batch.dead_letters;
        let received: Vec<PgTime> = d.iter().map(|x| PgTime(x.received_at)).collect();
        let topics: Vec<Cow<'_, str>> = d.iter().map(|x| storable_text(&x.topic)).collect();
        let reasons: Vec<String> = d.iter().map(|x| x.reason.label()).collect();
        let details: Vec<Cow<'_, str>> = d.iter().map(|x| storable_text(&x.detail)).collect();
        let payloads: Vec<&[u8]> = d.iter().map(|x| &x.payload[..]).collect();
        let params: [&(dyn ToSql + Sync); 5] = [&received, &topics, &reasons, &details, &payloads];
        tx.execute(&conn.insert_dead_letters, &params)
            .await
            .map_err(|e| ("insert dead letters", e))?;
    }

    // 4. Commands and acks.
    super::commands::write(&tx, &conn.upsert_command, &conn.upsert_ack, batch).await?;

    tx.commit().await.map_err(|e| ("commit", e))?;
    Ok(report)
}

async fn upsert_gap(
    tx: &tokio_postgres::Transaction<'_>,
    stmt: &tokio_postgres::Statement,
    g: &Gap,
    at: iiot_core::types::Timestamp,
) -> Result<(), StepError> {
    tx.execute(
        stmt,
        &[
            &g.device_id.as_str(),
            &PgU64(g.first.0),
            &PgU64(g.last.0),
            &PgTime(g.first_seen),
            &g.announced,
            &PgTime(at),
        ],
    )
    .await
    .map(drop)
    .map_err(|e| ("gaps", e))
}

/// Text that PostgreSQL accepts: NUL (which `text` refuses) becomes U+FFFD.
///
/// Used for the records that must never be refused: dead letters (their bytes
/// are kept exactly in `payload`) and data-loss details. Telemetry text values
/// are not altered: a NUL there makes the commit `Rejected`, and the pipeline
/// dead-letters the batch with its original bytes.
pub(crate) fn storable_text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{fffd}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// The `reason` column of a data-loss row (the serde name of the reason).
pub(crate) fn data_loss_label(r: DataLossReason) -> &'static str {
    match r {
        DataLossReason::Overflow => "overflow",
        DataLossReason::Expired => "expired",
        DataLossReason::StoreCorrupt => "store_corrupt",
        DataLossReason::Unreadable => "unreadable",
        _ => "unknown",
    }
}

/// Why loading the sequence state failed.
pub(super) enum LoadError {
    Db(&'static str, tokio_postgres::Error),
    Invalid(String),
}

/// Highest stored sequence per device and the open gaps.
pub(super) async fn load(
    client: &Client,
    t: &TableNames,
) -> Result<Vec<DeviceSequenceState>, LoadError> {
    let highest_sql = format!(
        "SELECT device_id, max(seq) FROM {} GROUP BY device_id",
        t.messages
    );
    let gaps_sql = format!(
        "SELECT device_id, first_seq, last_seq, first_seen, announced FROM {} \
         ORDER BY device_id, first_seq",
        t.gaps
    );
    let highest = client.query(&highest_sql, &[]);
    let gaps = client.query(&gaps_sql, &[]);
    let (highest, gaps) = tokio::try_join!(highest, gaps).map_err(|e| LoadError::Db("load", e))?;
    let db = |e| LoadError::Db("load", e);
    let device = |s: &str| {
        DeviceId::new(s).map_err(|e| LoadError::Invalid(format!("stored device id: {e}")))
    };
    let mut out: BTreeMap<String, DeviceSequenceState> = BTreeMap::new();
    let mut with_batches = HashSet::new();
    for row in highest {
        let id: &str = row.try_get(0).map_err(db)?;
        let seq: PgU64 = row.try_get(1).map_err(db)?;
        with_batches.insert(id.to_owned());
        out.insert(
            id.to_owned(),
            DeviceSequenceState {
                device_id: device(id)?,
                highest_seq: Sequence(seq.0),
                open_gaps: Vec::new(),
            },
        );
    }
    for row in gaps {
        let id: &str = row.try_get(0).map_err(db)?;
        let first: PgU64 = row.try_get(1).map_err(db)?;
        let last: PgU64 = row.try_get(2).map_err(db)?;
        let first_seen: PgTime = row.try_get(3).map_err(db)?;
        let announced: bool = row.try_get(4).map_err(db)?;
        let device_id = device(id)?;
        let state = out
            .entry(id.to_owned())
            .or_insert_with(|| DeviceSequenceState {
                device_id: device_id.clone(),
                highest_seq: Sequence(0),
                open_gaps: Vec::new(),
            });
        state.open_gaps.push(Gap {
            device_id,
            first: Sequence(first.0),
            last: Sequence(last.0),
            first_seen: first_seen.0,
            announced,
        });
    }
    // A device with gaps but no stored batch (pruned, or only announced loss)
    // resumes after its last gap.
    for (id, state) in &mut out {
        if !with_batches.contains(id) {
            state.highest_seq = state
                .open_gaps
                .iter()
                .map(|g| g.last)
                .max()
                .unwrap_or_default();
        }
    }
    Ok(out.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storable_text_replaces_nul_only() {
        assert!(matches!(storable_text("plain ✓"), Cow::Borrowed("plain ✓")));
        assert_eq!(storable_text("a\0b\0"), "a\u{fffd}b\u{fffd}");
    }
}
