//! The embedded SQLite sink: the zero-setup default.
//!
//! One file (rusqlite, SQLite bundled), WAL journal with `synchronous = FULL`, so
//! a commit that returned `Ok` survives a power loss. Every blocking call runs in
//! [`tokio::task::spawn_blocking`]; the sink builds no runtime.
//!
//! Tables and behaviour match the PostgreSQL sink: `{prefix}messages` (primary
//! key `(device_id, message_id)`, `INSERT OR IGNORE`: a batch already stored, or
//! repeated within a commit, writes no rows), `{prefix}samples` (one row per
//! sample), `{prefix}data_loss`, `{prefix}gaps`, `{prefix}dead_letter`,
//! `{prefix}commands` (one row per command, upserted from the command and its
//! acks in any order: see [`commands`](crate::commands)), and
//! `{prefix}schema_version` for the migrations. Storage differs where SQLite's
//! types do: times are INTEGER nanoseconds (exact), `u64` columns hold INTEGER up
//! to `i64::MAX` and 20-digit TEXT above it (order-preserving), and NaN and `-0.0`
//! readings keep their exact bits in `v_bytes` because REAL cannot hold them.
//!
//! `:memory:` works (tests) but holds nothing past the sink: no durability.
//!
//! Errors: constraint, size and type errors are [`SinkError::Rejected`]; busy or
//! locked files, I/O errors and a full disk are [`SinkError::Unavailable`] (the
//! connection is reopened on the next call); a corrupt or read-only file, denied
//! permissions or a broken schema are [`SinkError::Setup`]. An error SQLite
//! answered carries its extended result code ([`ErrorCode::Sqlite`], e.g. 2067
//! for a UNIQUE constraint) and the rusqlite error as its
//! [`source`](std::error::Error::source).
//!
//! [`ErrorCode::Sqlite`]: crate::sink::ErrorCode::Sqlite
//!
//! ## Metrics
//! The same as the PostgreSQL sink's, labelled `sink = "sqlite"`:
//! `iiot_ingest_sink_rows_written_total`, `iiot_ingest_sink_batches_written_total`,
//! `iiot_ingest_sink_batches_skipped_total`, `iiot_ingest_sink_commit_seconds`,
//! `iiot_ingest_sink_errors_total` (label `kind`).
//!
//! # Cancel safety
//! A dropped commit future leaves its blocking task running to the end: the
//! transaction is committed or rolled back, never half-written.

mod commands;
mod store;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use iiot_core::types::Timestamp;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use self::store::{LoadError, Statements, classify};
use crate::record::{CommitBatch, CommitReport, DeviceSequenceState};
use crate::sink::{Sink, SinkError, SinkErrorKind};

/// Configuration of [`SqliteSink`].
///
/// ## Defaults
/// | field | default |
/// |---|---|
/// | `path` | `iiot-ingest.sqlite3` (relative to the working directory) |
/// | `table_prefix` | `iiot_` |
/// | `busy_timeout` | `"5s"` |
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqliteConfig {
    /// The database file; created if missing. `:memory:` for a throw-away
    /// database (no durability).
    pub path: PathBuf,
    /// Prefix of every table name: lower-case ASCII letters, digits and `_`, not
    /// starting with a digit, at most 32 bytes; may be empty.
    pub table_prefix: String,
    /// How long a statement waits for another process's lock before the commit
    /// fails with [`SinkError::Unavailable`].
    #[serde(with = "iiot_core::duration::human")]
    pub busy_timeout: Duration,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("iiot-ingest.sqlite3"),
            table_prefix: "iiot_".into(),
            busy_timeout: Duration::from_secs(5),
        }
    }
}

impl SqliteConfig {
    /// The defaults with `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            ..Self::default()
        }
    }

    /// Sets the table prefix.
    pub fn set_table_prefix(&mut self, prefix: impl Into<String>) -> &mut Self {
        self.table_prefix = prefix.into();
        self
    }

    /// Sets the busy timeout.
    pub fn set_busy_timeout(&mut self, t: Duration) -> &mut Self {
        self.busy_timeout = t;
        self
    }

    fn validate(&self) -> Result<(), SinkError> {
        let p = &self.table_prefix;
        let ok = p.len() <= 32
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !p.bytes().next().is_some_and(|b| b.is_ascii_digit());
        if ok {
            Ok(())
        } else {
            Err(SinkError::setup(format!(
                "table_prefix {p:?} is not a valid identifier (lower-case a-z, 0-9, _, not starting with a digit, at most 32 bytes)"
            )))
        }
    }
}

/// The SQLite sink. See the [module docs](self).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), iiot_ingest::sink::SinkError> {
/// use iiot_ingest::record::CommitBatch;
/// use iiot_ingest::sink::Sink;
/// use iiot_ingest::sink::sqlite::{SqliteConfig, SqliteSink};
///
/// let dir = std::env::temp_dir().join(format!("iiot-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).ok();
/// let mut sink = SqliteSink::open(SqliteConfig::new(dir.join("ingest.sqlite3"))).await?;
/// let report = sink.commit(&CommitBatch::default()).await?;
/// assert_eq!(report.rows_written, 0);
/// assert!(sink.load_sequence_state().await?.is_empty());
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SqliteSink {
    config: Arc<SqliteConfig>,
    statements: Arc<Statements>,
    /// `None` until opened, and again after a transient failure (reopened on
    /// the next call).
    conn: Arc<Mutex<Option<Connection>>>,
}

impl SqliteSink {
    /// Checks `config` without touching the file; the first call opens it.
    ///
    /// # Errors
    /// [`SinkError::Setup`] for an invalid table prefix.
    pub fn new(config: SqliteConfig) -> Result<Self, SinkError> {
        config.validate()?;
        let statements = Arc::new(Statements::new(&config.table_prefix));
        Ok(Self {
            config: Arc::new(config),
            statements,
            conn: Arc::new(Mutex::new(None)),
        })
    }

    /// [`SqliteSink::new`], then opens the file and creates the tables.
    ///
    /// # Errors
    /// [`SinkError::Setup`] when the file or schema cannot be created;
    /// [`SinkError::Unavailable`] when the file is busy or I/O fails.
    pub async fn open(config: SqliteConfig) -> Result<Self, SinkError> {
        let sink = Self::new(config)?;
        sink.run("open", |_, _| Ok(())).await?;
        Ok(sink)
    }

    /// The configuration.
    pub fn config(&self) -> &SqliteConfig {
        &self.config
    }

    /// Runs `f` on the connection in a blocking task, opening it first if needed.
    async fn run<T, F>(&self, during: &'static str, f: F) -> Result<T, SinkError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Statements) -> Result<T, LoadError> + Send + 'static,
    {
        let config = Arc::clone(&self.config);
        let statements = Arc::clone(&self.statements);
        let conn = Arc::clone(&self.conn);
        let task = tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(PoisonError::into_inner);
            if guard.is_none() {
                let opened = store::open(&config, &statements).map_err(|e| {
                    let err = classify(e, &format!("open {}", config.path.display()));
                    // Content cannot be at fault before anything was written.
                    match err.kind() {
                        SinkErrorKind::Rejected => err.with_kind(SinkErrorKind::Setup),
                        _ => err,
                    }
                })?;
                *guard = Some(opened);
            }
            let Some(c) = guard.as_mut() else {
                return Err(SinkError::unavailable("SQLite connection missing"));
            };
            match f(c, &statements) {
                Ok(v) => Ok(v),
                Err(LoadError::Db(e)) => {
                    let err = classify(e, during);
                    if err.kind() != SinkErrorKind::Rejected {
                        *guard = None;
                    }
                    Err(err)
                }
                Err(LoadError::Invalid(detail)) => {
                    Err(SinkError::setup(format!("{during}: {detail}")))
                }
            }
        });
        match task.await {
            Ok(r) => r,
            Err(e) => Err(
                SinkError::unavailable(format!("{during}: blocking task failed: {e}"))
                    .with_source(e),
            ),
        }
    }
}

impl Sink for SqliteSink {
    async fn commit(&mut self, batch: &CommitBatch) -> Result<CommitReport, SinkError> {
        if batch.is_empty() {
            return Ok(CommitReport::default());
        }
        let started = Instant::now();
        // The blocking task needs its own copy ('static); ids and tags are
        // reference-counted, so this is mostly value copies.
        let owned = batch.clone();
        let result = self
            .run("commit", move |c, st| {
                store::write(c, st, &owned).map_err(LoadError::Db)
            })
            .await;
        match &result {
            Ok(report) => {
                super::record_commit("sqlite", report, started);
            }
            Err(e) => {
                tracing::warn!(error = %e, "SQLite commit failed; rolled back");
                metrics::counter!("iiot_ingest_sink_errors_total", "sink" => "sqlite", "kind" => e.kind().label())
                    .increment(1);
            }
        }
        result
    }

    async fn load_sequence_state(&mut self) -> Result<Vec<DeviceSequenceState>, SinkError> {
        self.run("load sequence state", |c, st| store::load(c, st))
            .await
    }

    async fn expire_unconfirmed_commands(
        &mut self,
        now: Timestamp,
        grace: Duration,
    ) -> Result<u64, SinkError> {
        let result = self
            .run("expire unconfirmed commands", move |c, st| {
                commands::expire(c, st, now, grace).map_err(LoadError::Db)
            })
            .await;
        if let Err(e) = &result {
            metrics::counter!("iiot_ingest_sink_errors_total", "sink" => "sqlite", "kind" => e.kind().label())
                .increment(1);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_serde_and_validation() {
        let c: SqliteConfig =
            serde_json::from_str(r#"{"path":"/tmp/x.db","busy_timeout":"250ms"}"#).unwrap();
        assert_eq!(c.path, PathBuf::from("/tmp/x.db"));
        assert_eq!(c.busy_timeout, Duration::from_millis(250));
        assert_eq!(c.table_prefix, "iiot_");
        assert!(serde_json::from_str::<SqliteConfig>(r#"{"pth":"x"}"#).is_err());
        let mut c = SqliteConfig::default();
        assert!(SqliteSink::new(c.clone()).is_ok());
        c.set_table_prefix("x\"; DROP");
        assert!(matches!(SqliteSink::new(c), Err(SinkError::Setup { .. })));
    }
}
