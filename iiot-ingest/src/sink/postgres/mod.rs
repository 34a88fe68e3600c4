//! The PostgreSQL / TimescaleDB sink: binary COPY into a narrow table.
//!
//! One [`Sink::commit`] is one transaction:
//!
//! 1. `INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING RETURNING` into
//!    `{prefix}messages` (primary key `(device_id, message_id)`) tells which
//!    telemetry batches are new; batches already stored (a redelivery after a
//!    crash between commit and broker ack) and repeats within the same
//!    [`CommitBatch`] are skipped.
//! 2. `COPY {prefix}samples (…) FROM STDIN (FORMAT binary)` writes one row per
//!    sample of the new batches (see [`copy`] for the stream).
//! 3. Data-loss records (`{prefix}data_loss`, keyed by the event's message id),
//!    gap changes (`{prefix}gaps`) and dead letters (`{prefix}dead_letter`), each
//!    written so that replaying the same commit changes nothing.
//! 4. Commands and their acks, one upsert each into `{prefix}commands` (primary
//!    key `(device_id, command_id)`; the rules are in [`commands`](crate::commands)):
//!    replaying them changes nothing either.
//! 5. `COMMIT`.
//!
//! [`Sink::expire_unconfirmed_commands`] is one `UPDATE` of its own.
//!
//! ## Tables
//! Created on first connect by versioned migrations (`{prefix}schema_version`),
//! under an advisory lock. Where the server offers the `timescaledb` extension the
//! sink creates it and makes `{prefix}samples` a hypertable on `time`; otherwise
//! plain PostgreSQL works unchanged ([`TimescaleMode`]).
//!
//! Column types: sequence numbers, unsigned readings and counts are
//! `numeric(20,0)` (exact for all of `u64`); times are `timestamptz`, which keeps
//! microseconds (the sub-microsecond part of a [`Timestamp`]
//! is dropped); quality is the OPC-UA status code as `bigint`; `value_type` names
//! the [`Value`](iiot_core::types::Value) variant and thereby the `v_*` column that
//! holds it (`f32` widened exactly into `v_double`). NaN and `-0.0` are stored as
//! such.
//!
//! ## Errors and reconnects
//! A lost connection (killed backend, restart, network, statement timeout) is
//! [`SinkError::Unavailable`]; the sink drops the connection and the next call
//! opens a new one. Content the server refuses (SQLSTATE classes 22, 23, 54, such
//! as a text value with a NUL byte) is [`SinkError::Rejected`]; the connection is
//! kept. Missing permissions or a broken schema are [`SinkError::Setup`]. In every
//! case the transaction is rolled back: nothing of the batch is committed. An
//! error the server answered carries its SQLSTATE ([`SinkError::sqlstate`], e.g.
//! `23505` for a unique violation) and the tokio-postgres error as its
//! [`source`](std::error::Error::source); the reaction is decided by the
//! SQLSTATE's class, never by the message text.
//!
//! The idempotency of step 1 lasts as long as the `{prefix}messages` rows: prune
//! that table no faster than the broker may redeliver.
//!
//! ## Metrics
//! Through the `metrics` facade, labelled `sink = "postgres"`:
//! `iiot_ingest_sink_rows_written_total`, `iiot_ingest_sink_batches_written_total`,
//! `iiot_ingest_sink_batches_skipped_total` (counters),
//! `iiot_ingest_sink_commit_seconds` (histogram of successful commits),
//! `iiot_ingest_sink_errors_total` (counter, label `kind` = `unavailable`,
//! `rejected` or `setup`) and `iiot_ingest_sink_reconnects_total`.
//!
//! ## Cancel safety
//! A dropped commit future leaves its transaction uncommitted (or, if COMMIT was
//! already sent, committed); the next call discards that session and opens a new
//! one, and the retried commit is idempotent.

mod commands;
mod commit;
mod config;
pub mod copy;
mod error;
mod schema;
pub mod types;

use std::time::{Duration, Instant};

use iiot_core::types::Timestamp;
use tokio_postgres::{Client, NoTls, Statement};

use self::commit::{LoadError, load, write};
pub use self::config::{IdentifierError, PostgresConfig, TimescaleMode};
use self::copy::SAMPLE_COLUMNS;
use self::error::classify;
pub use self::schema::{SCHEMA_VERSION, TableNames};
use self::schema::{TimescalePlan, migrate, timescale_facts, timescale_plan, timescale_sql};
use self::types::PgTime;
use crate::record::{CommitBatch, CommitReport, DeviceSequenceState};
use crate::sink::{Sink, SinkError, SinkErrorKind, command_sql};

/// The PostgreSQL / TimescaleDB sink. See the [module docs](self).
///
/// ```no_run
/// # async fn demo() -> Result<(), iiot_ingest::sink::SinkError> {
/// use iiot_ingest::record::CommitBatch;
/// use iiot_ingest::sink::Sink;
/// use iiot_ingest::sink::postgres::{PostgresConfig, PostgresSink};
///
/// let mut sink = PostgresSink::connect(PostgresConfig::new("postgres://postgres@127.0.0.1/test")).await?;
/// let report = sink.commit(&CommitBatch::default()).await?;
/// assert_eq!(report.rows_written, 0);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PostgresSink {
    config: PostgresConfig,
    pg: tokio_postgres::Config,
    tables: TableNames,
    conn: Option<Conn>,
    migrated: bool,
    hypertable: bool,
}

/// One open connection and its prepared statements.
#[derive(Debug)]
struct Conn {
    client: Client,
    /// Set while a commit runs on this connection; still set at the next call
    /// means that commit's future was dropped mid-transaction, so the connection
    /// (and whatever transaction state it holds) is discarded.
    in_flight: bool,
    insert_messages: Statement,
    copy_samples: Statement,
    insert_data_loss: Statement,
    upsert_gap: Statement,
    delete_gap: Statement,
    insert_dead_letters: Statement,
    upsert_command: Statement,
    upsert_ack: Statement,
    expire_commands: Statement,
}

/// A failed step of a commit: which, and the driver's error.
type StepError = (&'static str, tokio_postgres::Error);

impl PostgresSink {
    /// Checks `config` without connecting; the first call that needs the database
    /// connects and creates the tables.
    ///
    /// # Errors
    /// [`SinkError::Setup`] when an identifier or the URL is invalid.
    pub fn new(config: PostgresConfig) -> Result<Self, SinkError> {
        config
            .validate()
            .map_err(|e| SinkError::setup(e.to_string()).with_source(e))?;
        let mut pg: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e| SinkError::setup(format!("invalid PostgreSQL url: {e}")).with_source(e))?;
        pg.connect_timeout(config.connect_timeout)
            .application_name(&config.application_name);
        let tables = TableNames::new(&config);
        Ok(Self {
            config,
            pg,
            tables,
            conn: None,
            migrated: false,
            hypertable: false,
        })
    }

    /// [`PostgresSink::new`], then connects and brings the schema up to date.
    ///
    /// # Errors
    /// [`SinkError::Setup`] for an invalid config or a schema that cannot be
    /// created; [`SinkError::Unavailable`] when the server cannot be reached.
    pub async fn connect(config: PostgresConfig) -> Result<Self, SinkError> {
        let mut sink = Self::new(config)?;
        sink.connection().await?;
        Ok(sink)
    }

    /// Connects (and brings the schema up to date) unless a connection is open: what
    /// [`PostgresSink::connect`] does after [`PostgresSink::new`], for a caller that
    /// retries it.
    ///
    /// # Errors
    /// As [`PostgresSink::connect`].
    pub async fn ensure_connected(&mut self) -> Result<(), SinkError> {
        self.connection().await.map(|_| ())
    }

    /// The sink's table names.
    pub fn tables(&self) -> &TableNames {
        &self.tables
    }

    /// Whether the samples table was made a TimescaleDB hypertable (known after
    /// the first connection).
    pub fn is_hypertable(&self) -> bool {
        self.hypertable
    }

    /// The configuration.
    pub fn config(&self) -> &PostgresConfig {
        &self.config
    }

    /// The open connection, opening one (and migrating, the first time) if
    /// there is none or it was closed.
    async fn connection(&mut self) -> Result<&mut Conn, SinkError> {
        let conn = match self.conn.take() {
            Some(c) if !c.client.is_closed() && !c.in_flight => c,
            Some(_) => {
                tracing::info!("PostgreSQL connection closed or abandoned; reconnecting");
                metrics::counter!("iiot_ingest_sink_reconnects_total", "sink" => "postgres")
                    .increment(1);
                self.open().await?
            }
            None => self.open().await?,
        };
        Ok(self.conn.insert(conn))
    }

    /// Where the sink connects, for messages: `host:port/database as user` (every
    /// host of a multi-host URL; never the password).
    pub fn target(&self) -> String {
        let ports = self.pg.get_ports();
        let hosts: Vec<String> = self
            .pg
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                match h {
                    tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
                    #[cfg(unix)]
                    tokio_postgres::config::Host::Unix(dir) => {
                        format!("{}/.s.PGSQL.{port}", dir.display())
                    }
                }
            })
            .collect();
        format!(
            "{}/{} as {}",
            hosts.join(","),
            self.pg.get_dbname().unwrap_or("postgres"),
            self.pg.get_user().unwrap_or("(default user)")
        )
    }

    async fn open(&mut self) -> Result<Conn, SinkError> {
        let connecting = tokio::time::timeout(self.config.connect_timeout, self.pg.connect(NoTls));
        let (mut client, connection) = match connecting.await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(classify(e, &format!("connect to {}", self.target()))),
            Err(_) => {
                return Err(SinkError::unavailable(format!(
                    "connect to {}: no session within {:?}",
                    self.target(),
                    self.config.connect_timeout
                )));
            }
        };
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "PostgreSQL connection ended");
            }
        });
        let ms = self.config.statement_timeout.as_millis();
        client
            .batch_execute(&format!("SET statement_timeout = {ms}"))
            .await
            .map_err(|e| classify(e, "set statement_timeout"))?;
        if !self.migrated {
            self.setup_schema(&mut client).await?;
            self.migrated = true;
        }
        prepare(client, &self.tables)
            .await
            .map_err(|(step, e)| classify(e, step))
    }

    async fn setup_schema(&mut self, client: &mut Client) -> Result<(), SinkError> {
        // Anything but a lost connection is a setup problem here.
        let setup = |step: &str, e: tokio_postgres::Error| {
            let err = classify(e, step);
            if err.is_transient() {
                err
            } else {
                err.with_kind(SinkErrorKind::Setup)
            }
        };
        migrate(client, &self.tables)
            .await
            .map_err(|e| setup("migrate", e))?;
        let (available, installed) = timescale_facts(client)
            .await
            .map_err(|e| setup("timescaledb check", e))?;
        let plan = timescale_plan(self.config.timescale, available, installed);
        if plan == TimescalePlan::Unavailable {
            return Err(SinkError::setup(
                "timescale = require, but the server has no timescaledb extension",
            ));
        }
        for sql in timescale_sql(plan, &self.tables) {
            if let Err(e) = client.batch_execute(&sql).await {
                let err = setup("timescaledb", e);
                if self.config.timescale == TimescaleMode::Require || err.is_transient() {
                    return Err(err);
                }
                tracing::warn!(error = %err, "TimescaleDB unusable; using plain PostgreSQL");
                return Ok(());
            }
        }
        self.hypertable = matches!(plan, TimescalePlan::Hypertable { .. });
        tracing::info!(hypertable = self.hypertable, samples = %self.tables.samples, "PostgreSQL sink ready");
        Ok(())
    }

    /// Counts a failure; drops the connection unless the content was refused.
    fn fail(&mut self, err: &SinkError) {
        let kind = err.kind();
        if kind != SinkErrorKind::Rejected {
            self.conn = None;
        }
        metrics::counter!("iiot_ingest_sink_errors_total", "sink" => "postgres", "kind" => kind.label())
            .increment(1);
    }
}

async fn prepare(client: Client, t: &TableNames) -> Result<Conn, StepError> {
    let p = |sql: String| {
        let client = &client;
        async move { client.prepare(&sql).await }
    };
    let insert_messages = p(format!(
        "INSERT INTO {} (device_id, message_id, seq, gateway_time, received_at, topic, samples, \
         firmware_version, gateway_id) \
         SELECT * FROM unnest($1::text[], $2::bytea[], $3::numeric[], $4::timestamptz[], \
         $5::timestamptz[], $6::text[], $7::int4[], $8::text[], $9::text[]) \
         ON CONFLICT (device_id, message_id) DO NOTHING RETURNING device_id, message_id",
        t.messages
    ));
    let copy_samples = p(format!(
        "COPY {} ({SAMPLE_COLUMNS}) FROM STDIN (FORMAT binary)",
        t.samples
    ));
    let insert_data_loss = p(format!(
        "INSERT INTO {} (device_id, message_id, first_seq, last_seq, lost_count, reason, \
         detected_at, detail, lost_bytes) \
         SELECT * FROM unnest($1::text[], $2::bytea[], $3::numeric[], $4::numeric[], \
         $5::numeric[], $6::text[], $7::timestamptz[], $8::text[], $9::numeric[]) \
         ON CONFLICT (device_id, message_id) DO NOTHING",
        t.data_loss
    ));
    let upsert_gap = p(format!(
        "INSERT INTO {} (device_id, first_seq, last_seq, first_seen, announced, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (device_id, first_seq) DO UPDATE SET \
         last_seq = EXCLUDED.last_seq, first_seen = EXCLUDED.first_seen, \
         announced = EXCLUDED.announced, updated_at = EXCLUDED.updated_at",
        t.gaps
    ));
    let delete_gap = p(format!(
        "DELETE FROM {} WHERE device_id = $1 AND first_seq = $2",
        t.gaps
    ));
    let insert_dead_letters = p(format!(
        "INSERT INTO {} (received_at, topic, reason, detail, payload) \
         SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::bytea[]) \
         ON CONFLICT (received_at, topic, md5(payload)) DO NOTHING",
        t.dead_letter
    ));
    let pg_ph = |i: usize| format!("${i}");
    let upsert_command = p(command_sql::upsert_command(&t.commands, &pg_ph));
    let upsert_ack = p(command_sql::upsert_ack(&t.commands, &pg_ph));
    let expire_commands = p(command_sql::expire_unconfirmed(&t.commands, &pg_ph));
    // Prepared concurrently: one round trip for all nine.
    let (
        insert_messages,
        copy_samples,
        insert_data_loss,
        upsert_gap,
        delete_gap,
        insert_dead_letters,
        upsert_command,
        upsert_ack,
        expire_commands,
    ) = tokio::try_join!(
        insert_messages,
        copy_samples,
        insert_data_loss,
        upsert_gap,
        delete_gap,
        insert_dead_letters,
        upsert_command,
        upsert_ack,
        expire_commands,
    )
    .map_err(|e| ("prepare", e))?;
    Ok(Conn {
        client,
        in_flight: false,
        insert_messages,
        copy_samples,
        insert_data_loss,
        upsert_gap,
        delete_gap,
        insert_dead_letters,
        upsert_command,
        upsert_ack,
        expire_commands,
    })
}

impl Sink for PostgresSink {
    async fn commit(&mut self, batch: &CommitBatch) -> Result<CommitReport, SinkError> {
        if batch.is_empty() {
            return Ok(CommitReport::default());
        }
        let started = Instant::now();
        let conn = self.connection().await?;
        conn.in_flight = true;
        let result = write(conn, batch).await;
        conn.in_flight = false;
        match result {
            Ok(report) => {
                super::record_commit("postgres", &report, started);
                Ok(report)
            }
            Err((step, e)) => {
                let err = classify(e, step);
                tracing::warn!(error = %err, "PostgreSQL commit failed; rolled back");
                self.fail(&err);
                Err(err)
            }
        }
    }

    async fn load_sequence_state(&mut self) -> Result<Vec<DeviceSequenceState>, SinkError> {
        let t = self.tables.clone();
        let conn = self.connection().await?;
        match load(&conn.client, &t).await {
            Ok(v) => Ok(v),
            Err(LoadError::Db(step, e)) => {
                let err = classify(e, step);
                self.fail(&err);
                Err(err)
            }
            Err(LoadError::Invalid(detail)) => Err(SinkError::setup(detail)),
        }
    }

    async fn expire_unconfirmed_commands(
        &mut self,
        now: Timestamp,
        grace: Duration,
    ) -> Result<u64, SinkError> {
        let conn = self.connection().await?;
        let cutoff = now.saturating_sub(grace);
        conn.in_flight = true;
        let result = conn
            .client
            .execute(&conn.expire_commands, &[&PgTime(now), &PgTime(cutoff)])
            .await;
        conn.in_flight = false;
        result.map_err(|e| {
            let err = classify(e, "expire unconfirmed commands");
            self.fail(&err);
            err
        })
    }
}
