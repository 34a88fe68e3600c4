//! The blocking SQLite work: open, migrate, write one commit, load state.
//! Every function here runs inside `spawn_blocking`.

use std::collections::{BTreeMap, HashSet};

use iiot_core::types::{DeviceId, Sequence, Timestamp, Value};
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};

use super::SqliteConfig;
use crate::record::{CommitBatch, CommitReport, DeviceSequenceState, Gap, GapChange};
use crate::sink::command_sql;
use crate::sink::{ErrorCode, SinkError, SinkErrorKind};

/// The migrations, in order. Never edit a released one: add the next.
const MIGRATIONS: &[(&str, &str)] = &[
    ("init", include_str!("migrations/0001_init.sql")),
    ("commands", include_str!("migrations/0002_commands.sql")),
];

/// The SQL of every statement, rendered once for the table prefix.
#[derive(Debug, Clone)]
pub(super) struct Statements {
    prefix: String,
    insert_message: String,
    insert_sample: String,
    insert_data_loss: String,
    upsert_gap: String,
    delete_gap: String,
    insert_dead_letter: String,
    highest: String,
    gaps: String,
    pub(super) upsert_command: String,
    pub(super) upsert_ack: String,
    pub(super) expire_commands: String,
}

impl Statements {
    pub(super) fn new(prefix: &str) -> Self {
        let commands = format!("\"{prefix}commands\"");
        Self {
            prefix: prefix.to_owned(),
            insert_message: format!(
                "INSERT OR IGNORE INTO \"{prefix}messages\" (device_id, message_id, seq, \
                 gateway_time, received_at, topic, samples, firmware_version, gateway_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
            insert_sample: format!(
                "INSERT INTO \"{prefix}samples\" (time, device_id, tag, value_type, v_double, \
                 v_int, v_uint, v_bool, v_text, v_bytes, quality, message_id, seq) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ),
            insert_data_loss: format!(
                "INSERT OR IGNORE INTO \"{prefix}data_loss\" (device_id, message_id, first_seq, \
                 last_seq, lost_count, reason, detected_at, detail, lost_bytes) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
            upsert_gap: format!(
                "INSERT INTO \"{prefix}gaps\" (device_id, first_seq, last_seq, first_seen, \
                 announced, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (device_id, first_seq) DO UPDATE SET last_seq = excluded.last_seq, \
                 first_seen = excluded.first_seen, announced = excluded.announced, \
                 updated_at = excluded.updated_at"
            ),
            delete_gap: format!(
                "DELETE FROM \"{prefix}gaps\" WHERE device_id = ?1 AND first_seq = ?2"
            ),
            insert_dead_letter: format!(
                "INSERT OR IGNORE INTO \"{prefix}dead_letter\" (received_at, topic, reason, \
                 detail, payload) VALUES (?1, ?2, ?3, ?4, ?5)"
            ),
            highest: format!(
                "SELECT device_id, max(seq) FROM \"{prefix}messages\" GROUP BY device_id"
            ),
            gaps: format!(
                "SELECT device_id, first_seq, last_seq, first_seen, announced \
                 FROM \"{prefix}gaps\" ORDER BY device_id, first_seq"
            ),
            upsert_command: command_sql::upsert_command(&commands, &sqlite_ph),
            upsert_ack: command_sql::upsert_ack(&commands, &sqlite_ph),
            expire_commands: command_sql::expire_unconfirmed(&commands, &sqlite_ph),
        }
    }
}

/// SQLite's numbered placeholder.
fn sqlite_ph(i: usize) -> String {
    format!("?{i}")
}

/// The reaction to an SQLite error.
///
/// Constraint, size and type errors are the content's
/// ([`SinkErrorKind::Rejected`]); a corrupt file, a denied permission or a
/// malformed statement is [`SinkErrorKind::Setup`]; busy, locked, I/O, full disk
/// and everything unknown are transient ([`SinkErrorKind::Unavailable`]: the
/// connection is reopened).
pub(super) fn kind_of(e: &rusqlite::Error) -> SinkErrorKind {
    use rusqlite::ErrorCode as C;
    match e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            C::ConstraintViolation | C::TooBig | C::TypeMismatch => SinkErrorKind::Rejected,
            C::DatabaseCorrupt
            | C::NotADatabase
            | C::PermissionDenied
            | C::AuthorizationForStatementDenied
            | C::ReadOnly
            | C::Unknown => SinkErrorKind::Setup,
            _ => SinkErrorKind::Unavailable,
        },
        rusqlite::Error::ToSqlConversionFailure(_) => SinkErrorKind::Rejected,
        rusqlite::Error::SqlInputError { .. } | rusqlite::Error::InvalidQuery => {
            SinkErrorKind::Setup
        }
        _ => SinkErrorKind::Unavailable,
    }
}

/// `e`, which happened while doing `during`, as a [`SinkError`] of
/// [`kind_of`]`(e)` with SQLite's extended result code and `e` as its source.
pub(super) fn classify(e: rusqlite::Error, during: &str) -> SinkError {
    let code = match &e {
        rusqlite::Error::SqliteFailure(f, _) | rusqlite::Error::SqlInputError { error: f, .. } => {
            Some(ErrorCode::Sqlite(f.extended_code))
        }
        _ => None,
    };
    let err = SinkError::new(kind_of(&e), format!("{during}: {e}"));
    let err = match code {
        Some(c) => err.with_code(c),
        None => err,
    };
    err.with_source(e)
}

/// Opens the database, sets WAL and `synchronous = FULL`, and migrates.
pub(super) fn open(config: &SqliteConfig, st: &Statements) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(&config.path, flags)?;
    conn.busy_timeout(config.busy_timeout)?;
    // `:memory:` answers "memory": durability claims need a file.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %config.path.display(), mode, "SQLite sink not in WAL mode");
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.set_prepared_statement_cache_capacity(32);
    migrate(&mut conn, &st.prefix)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, prefix: &str) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS \"{prefix}schema_version\" (\
             version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
    ))?;
    let current: i64 = tx.query_row(
        &format!("SELECT coalesce(max(version), 0) FROM \"{prefix}schema_version\""),
        [],
        |r| r.get(0),
    )?;
    for (i, (name, sql)) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        if version <= current {
            continue;
        }
        tracing::info!(version, name, prefix, "applying SQLite migration");
        tx.execute_batch(&sql.replace("__P__", prefix))?;
        tx.execute(
            &format!(
                "INSERT INTO \"{prefix}schema_version\" (version, name, applied_at) VALUES (?1, ?2, ?3)"
            ),
            params![version, name, Timestamp::now().unix_nanos()],
        )?;
    }
    tx.commit()
}

/// A `u64` as stored: INTEGER up to `i64::MAX`, else 20-digit TEXT.
pub(crate) fn u64_to_sql(v: u64) -> SqlValue {
    match i64::try_from(v) {
        Ok(i) => SqlValue::Integer(i),
        Err(_) => SqlValue::Text(format!("{v:020}")),
    }
}

/// The inverse of [`u64_to_sql`].
///
/// # Errors
/// When the stored value is neither form.
pub(crate) fn u64_from_sql(v: ValueRef<'_>) -> Result<u64, String> {
    match v {
        ValueRef::Integer(i) => u64::try_from(i).map_err(|_| format!("negative u64 {i}")),
        ValueRef::Text(t) => std::str::from_utf8(t)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "u64 text is not a number".to_owned()),
        other => Err(format!("u64 stored as {:?}", other.data_type())),
    }
}

/// `value_type` and the six value columns of one sample.
pub(super) type ValueColumns = (
    Option<&'static str>,
    Option<f64>,
    Option<i64>,
    Option<SqlValue>,
    Option<bool>,
    Option<String>,
    Option<Vec<u8>>,
);

pub(super) fn value_columns(v: Option<&Value>) -> ValueColumns {
    let Some(v) = v else {
        return (None, None, None, None, None, None, None);
    };
    let t = Some(v.type_name());
    match v {
        Value::Double(x) => {
            let exact = (x.is_nan() || (*x == 0.0 && x.is_sign_negative()))
                .then(|| x.to_bits().to_be_bytes().to_vec());
            (t, Some(*x), None, None, None, None, exact)
        }
        Value::Float(x) => {
            let exact = (x.is_nan() || (*x == 0.0 && x.is_sign_negative()))
                .then(|| x.to_bits().to_be_bytes().to_vec());
            (t, Some(f64::from(*x)), None, None, None, None, exact)
        }
        Value::Int(x) => (t, None, Some(*x), None, None, None, None),
        Value::UInt(x) => (t, None, None, Some(u64_to_sql(*x)), None, None, None),
        Value::Bool(x) => (t, None, None, None, Some(*x), None, None),
        Value::String(x) => (t, None, None, None, None, Some(x.clone()), None),
        Value::Bytes(x) => (t, None, None, None, None, None, Some(x.to_vec())),
        // A variant added to core later: keep the row with its type name.
        _ => (t, None, None, None, None, None, None),
    }
}

/// Writes `batch` in one IMMEDIATE transaction.
pub(super) fn write(
    conn: &mut Connection,
    st: &Statements,
    batch: &CommitBatch,
) -> rusqlite::Result<CommitReport> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut report = CommitReport::default();
    {
        let mut msg = tx.prepare_cached(&st.insert_message)?;
        let mut sample = tx.prepare_cached(&st.insert_sample)?;
        for a in &batch.telemetry {
            let b = &a.batch;
            let id = b.message_id.to_bytes();
            let inserted = msg.execute(params![
                b.device_id.as_str(),
                &id[..],
                u64_to_sql(b.seq.0),
                b.gateway_time.unix_nanos(),
                a.received_at.unix_nanos(),
                a.topic,
                i64::try_from(b.samples.len()).unwrap_or(i64::MAX),
                b.metadata.firmware_version,
                b.metadata.gateway_id,
            ])?;
            if inserted == 0 {
                report.batches_skipped += 1;
                continue;
            }
            report.batches_written += 1;
            let seq = u64_to_sql(b.seq.0);
            for s in &b.samples {
                let (vt, vd, vi, vu, vb, vs, vbytes) = value_columns(s.value());
                sample.execute(params![
                    s.source_time().unix_nanos(),
                    b.device_id.as_str(),
                    s.tag().as_str(),
                    vt,
                    vd,
                    vi,
                    vu,
                    vb,
                    vs,
                    vbytes,
                    i64::from(s.quality().status_code()),
                    &id[..],
                    seq,
                ])?;
                report.rows_written += 1;
            }
        }
    }
    if !batch.data_loss.is_empty() {
        let mut stmt = tx.prepare_cached(&st.insert_data_loss)?;
        for d in &batch.data_loss {
            stmt.execute(params![
                d.device_id.as_str(),
                &d.message_id.to_bytes()[..],
                u64_to_sql(d.first_seq().0),
                u64_to_sql(d.last_seq().0),
                u64_to_sql(d.count()),
                data_loss_label(d.reason),
                d.detected_at.unix_nanos(),
                d.detail,
                d.bytes.map(u64_to_sql),
            ])?;
        }
    }
    if !batch.gaps.is_empty() {
        let mut upsert = tx.prepare_cached(&st.upsert_gap)?;
        let mut delete = tx.prepare_cached(&st.delete_gap)?;
        let mut put = |g: &Gap, at: Timestamp| {
            upsert.execute(params![
                g.device_id.as_str(),
                u64_to_sql(g.first.0),
                u64_to_sql(g.last.0),
                g.first_seen.unix_nanos(),
                g.announced,
                at.unix_nanos(),
            ])
        };
        for change in &batch.gaps {
            match change {
                GapChange::Opened(g) => {
                    put(g, g.first_seen)?;
                }
                GapChange::Narrowed {
                    device_id,
                    first,
                    remaining,
                    at,
                } => {
                    delete.execute(params![device_id.as_str(), u64_to_sql(first.0)])?;
                    for g in remaining {
                        put(g, *at)?;
                    }
                }
            }
        }
    }
    if !batch.dead_letters.is_empty() {
        let mut stmt = tx.prepare_cached(&st.insert_dead_letter)?;
        for d in &batch.dead_letters {
            stmt.execute(params![
                d.received_at.unix_nanos(),
                d.topic,
                d.reason.label(),
                d.detail,
                &d.payload[..],
            ])?;
        }
    }
    super::commands::write(&tx, st, batch)?;
    tx.commit()?;
    Ok(report)
}

/// The `reason` column of a data-loss row (the serde name of the reason).
fn data_loss_label(r: iiot_core::types::DataLossReason) -> &'static str {
    use iiot_core::types::DataLossReason as R;
    match r {
        R::Overflow => "overflow",
        R::Expired => "expired",
        R::StoreCorrupt => "store_corrupt",
        R::Unreadable => "unreadable",
        _ => "unknown",
    }
}

/// Why loading failed: the database, or a stored value this code cannot read.
pub(super) enum LoadError {
    Db(rusqlite::Error),
    Invalid(String),
}

impl From<rusqlite::Error> for LoadError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Db(e)
    }
}

/// Highest stored sequence per device and the open gaps.
pub(super) fn load(
    conn: &Connection,
    st: &Statements,
) -> Result<Vec<DeviceSequenceState>, LoadError> {
    let device = |s: String| {
        DeviceId::new(s).map_err(|e| LoadError::Invalid(format!("stored device id: {e}")))
    };
    let seq = |v: ValueRef<'_>| u64_from_sql(v).map(Sequence).map_err(LoadError::Invalid);
    let mut out: BTreeMap<String, DeviceSequenceState> = BTreeMap::new();
    let mut with_batches = HashSet::new();
    let mut stmt = conn.prepare_cached(&st.highest)?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        let highest_seq = seq(r.get_ref(1)?)?;
        with_batches.insert(id.clone());
        out.insert(
            id.clone(),
            DeviceSequenceState {
                device_id: device(id)?,
                highest_seq,
                open_gaps: Vec::new(),
            },
        );
    }
    let mut stmt = conn.prepare_cached(&st.gaps)?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        let first_seen = Timestamp::from_unix_nanos(r.get(3)?)
            .map_err(|e| LoadError::Invalid(format!("stored gap time: {e}")))?;
        let gap = Gap {
            device_id: device(id.clone())?,
            first: seq(r.get_ref(1)?)?,
            last: seq(r.get_ref(2)?)?,
            first_seen,
            announced: r.get(4)?,
        };
        out.entry(id)
            .or_insert_with(|| DeviceSequenceState {
                device_id: gap.device_id.clone(),
                highest_seq: Sequence(0),
                open_gaps: Vec::new(),
            })
            .open_gaps
            .push(gap);
    }
    // A device with gaps but no stored batch resumes after its last gap.
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
    fn u64_storage_round_trips_and_sorts() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v)").unwrap();
        let vals = [
            0,
            1,
            i64::MAX as u64,
            i64::MAX as u64 + 1,
            u64::MAX - 1,
            u64::MAX,
        ];
        for v in vals.iter().rev() {
            conn.execute("INSERT INTO t VALUES (?1)", [u64_to_sql(*v)])
                .unwrap();
        }
        let mut stmt = conn.prepare("SELECT v FROM t ORDER BY v").unwrap();
        let mut rows = stmt.query([]).unwrap();
        let mut got = Vec::new();
        while let Some(r) = rows.next().unwrap() {
            got.push(u64_from_sql(r.get_ref(0).unwrap()).unwrap());
        }
        assert_eq!(got, vals);
        let max: u64 = conn
            .query_row("SELECT max(v) FROM t", [], |r| {
                Ok(u64_from_sql(r.get_ref(0)?).unwrap())
            })
            .unwrap();
        assert_eq!(max, u64::MAX);
    }

    #[test]
    fn error_classes() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER NOT NULL)")
            .unwrap();
        let e = conn.execute("INSERT INTO t VALUES (NULL)", []).unwrap_err();
        assert_eq!(kind_of(&e), SinkErrorKind::Rejected);
        let err = classify(e, "insert");
        assert_eq!(err.kind(), SinkErrorKind::Rejected);
        // SQLITE_CONSTRAINT_NOTNULL; primary SQLITE_CONSTRAINT.
        assert_eq!(err.code(), Some(ErrorCode::Sqlite(1299)));
        assert_eq!(err.code().and_then(|c| c.sqlite_primary()), Some(19));
        let source = std::error::Error::source(&err).unwrap();
        assert!(source.is::<rusqlite::Error>(), "{source:?}");
        let e = conn.execute("INSERT INTO nope VALUES (1)", []).unwrap_err();
        assert_eq!(kind_of(&e), SinkErrorKind::Setup);
        // "no such table" is SQLITE_ERROR (1).
        assert_eq!(classify(e, "insert").code(), Some(ErrorCode::Sqlite(1)));
    }
}
