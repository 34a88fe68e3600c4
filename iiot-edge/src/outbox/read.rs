//! Reading records in sequence order.

use super::codec::{self, Record, seg_key};
use super::error::OutboxError;
use super::shared::Shared;

/// Reads durable records with `seq >= from` and at or after the head (blocking).
pub(crate) fn read_blocking(
    shared: &Shared,
    from: u64,
    max_records: usize,
    max_bytes: usize,
) -> Result<Vec<Record>, OutboxError> {
    let (head, end) = {
        let st = shared.lock();
        (st.meta.head.max(st.ack_to), st.durable_end)
    };
    let start = from.max(head);
    let mut out = Vec::new();
    if start >= end {
        return Ok(out);
    }
    let storage = &shared.storage;
    let mut cursor = storage
        .floor(&seg_key(0), &seg_key(start))?
        .map_or_else(|| seg_key(start).to_vec(), |(k, _)| k.to_vec());
    let hi = seg_key(end);
    let mut bytes = 0usize;
    'segments: loop {
        let rows = storage.range(&cursor, &hi, storage.scan_batch())?;
        let Some((last, _)) = rows.last() else { break };
        cursor = [last.as_ref(), &[0]].concat();
        for (k, v) in &rows {
            let before = out.len();
            match codec::decode_segment(v, start, max_records, max_bytes, &mut out, &mut bytes) {
                Ok(true) => break 'segments,
                Ok(false) => {}
                Err(e) => {
                    out.truncate(before);
                    tracing::error!(segment = ?codec::key_number(k).ok(), error = %e,
                        "outbox: unreadable segment skipped");
                }
            }
        }
    }
    out.retain(|r| r.seq.0 < end);
    Ok(out)
}
