//! `iiot ingest`: MQTT → pipeline (decode, dedupe, gap check, batch) → sink.
//!
//! The source is one function, [`source::open`]; everything else is the SDK's
//! [`Pipeline`] over the SQLite or PostgreSQL sink named in the config.

pub mod metrics;
pub mod source;

use std::path::Path;

use iiot_ingest::sink::Sink;
use iiot_ingest::sink::postgres::{PostgresConfig, PostgresSink};
use iiot_ingest::sink::sqlite::{SqliteConfig, SqliteSink};
use iiot_ingest::{Pipeline, PipelineConfig, PipelineHandle, PipelineStats};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

pub use source::MqttSourceConfig;

use crate::config::{self, ConfigError};
use crate::error::AppError;

/// ingest.toml as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestFile {
    /// The broker and what to subscribe to.
    pub mqtt: MqttSourceConfig,
    /// Batching, dedupe, back-pressure, retries.
    pub pipeline: PipelineConfig,
    /// Where rows go.
    pub sink: SinkConfig,
}

/// The sink: `[sink.sqlite]` (default) or `[sink.postgres]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// The embedded SQLite file.
    Sqlite(SqliteConfig),
    /// PostgreSQL / TimescaleDB with binary COPY.
    Postgres(PostgresConfig),
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self::Sqlite(SqliteConfig::default())
    }
}

/// A checked ingest.toml.
#[derive(Debug)]
pub struct IngestSetup {
    /// Source settings.
    pub mqtt: MqttSourceConfig,
    /// Pipeline settings.
    pub pipeline: PipelineConfig,
    /// Sink settings.
    pub sink: SinkConfig,
}

impl IngestSetup {
    /// Reads and checks `file`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and the key.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let f: IngestFile = config::load(file)?;
        Self::check(f, file)
    }

    /// Checks an already parsed file.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and the key.
    pub fn check(f: IngestFile, file: &Path) -> Result<Self, ConfigError> {
        if let Err((key, problem)) = source::check(&f.mqtt) {
            return Err(ConfigError::invalid(file, format!("mqtt.{key}"), problem));
        }
        config::check_mqtt_session(file, &f.mqtt.session_config())?;
        if let SinkConfig::Postgres(pg) = &f.sink {
            if let Err(e) = pg.validate() {
                return Err(ConfigError::invalid(file, "sink.postgres", e.to_string()));
            }
            if pg.url.trim().is_empty() {
                return Err(ConfigError::invalid(
                    file,
                    "sink.postgres.url",
                    "must not be empty",
                ));
            }
        }
        if let SinkConfig::Sqlite(s) = &f.sink
            && s.path.as_os_str().is_empty()
        {
            return Err(ConfigError::invalid(
                file,
                "sink.sqlite.path",
                "must not be empty",
            ));
        }
        Ok(Self {
            mqtt: f.mqtt,
            pipeline: f.pipeline,
            sink: f.sink,
        })
    }
}

/// Runs ingest until Ctrl-C / SIGTERM, then commits what it holds and prints the
/// counters.
///
/// # Errors
/// [`AppError`] when the source or sink cannot be opened, or the pipeline fails.
pub async fn run(setup: IngestSetup) -> Result<(), AppError> {
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        crate::shutdown_signal().await;
        stop.cancel();
    });
    // Boxed: the pipeline's state machine is large.
    let stats = Box::pin(run_until(setup, &cancel, |broker, _| {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "ingest started on {broker}");
        let _ = out.flush();
    }))
    .await?;
    tracing::info!(?stats, "ingest stopped");
    Ok(())
}

/// Runs ingest until `cancel` fires; returns the pipeline's final counters.
/// `on_ready` is called with the broker URL and the pipeline's handle once the
/// source has started (it
/// subscribes as soon as it is connected).
///
/// # Errors
/// [`AppError`] when the source or sink cannot be opened, or the pipeline fails.
pub async fn run_until(
    setup: IngestSetup,
    cancel: &CancellationToken,
    on_ready: impl FnOnce(&str, &PipelineHandle) + Send,
) -> Result<PipelineStats, AppError> {
    match setup.sink {
        SinkConfig::Sqlite(cfg) => {
            tracing::info!(path = %cfg.path.display(), "opening the SQLite sink");
            let sink = SqliteSink::open(cfg).await?;
            pump(setup.mqtt, setup.pipeline, sink, cancel, on_ready).await
        }
        SinkConfig::Postgres(cfg) => {
            let sink = connect_postgres(cfg, cancel).await?;
            pump(setup.mqtt, setup.pipeline, sink, cancel, on_ready).await
        }
    }
}

/// Connects the PostgreSQL sink, retrying with backoff (1 s doubling to 30 s) while
/// the server cannot be reached: a database that starts after ingest is waited for,
/// with one warning naming host, port, database and user. A setup problem (bad
/// credentials, a schema that cannot be created) fails at once.
async fn connect_postgres(
    cfg: iiot_ingest::sink::postgres::PostgresConfig,
    cancel: &CancellationToken,
) -> Result<PostgresSink, AppError> {
    let mut sink = PostgresSink::new(cfg)?;
    tracing::info!(target = %sink.target(), "connecting the PostgreSQL sink");
    let backoff = iiot_core::backoff::Backoff::new(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(30),
    );
    let mut attempt = 0u32;
    loop {
        match sink.ensure_connected().await {
            Ok(()) => {
                if attempt > 0 {
                    tracing::warn!(target = %sink.target(), "PostgreSQL is reachable; ingesting");
                }
                return Ok(sink);
            }
            Err(e) if e.is_transient() => {
                let delay = backoff.delay(attempt, 1.0);
                if attempt == 0 {
                    tracing::warn!(target = %sink.target(),
                        "{e}; retrying every {delay:?} and up to 30s until it answers");
                } else {
                    tracing::info!(%e, ?delay, "PostgreSQL still unreachable; retrying");
                }
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    () = cancel.cancelled() => return Err(e.into()),
                    () = tokio::time::sleep(delay) => {}
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn pump<K: Sink + 'static>(
    mqtt: MqttSourceConfig,
    pipeline: PipelineConfig,
    sink: K,
    cancel: &CancellationToken,
    on_ready: impl FnOnce(&str, &PipelineHandle) + Send,
) -> Result<PipelineStats, AppError> {
    let source = source::open(&mqtt)?;
    let sink = metrics::DeviceMetricsSink::new(sink);
    let (handle, pipeline) = Pipeline::new(source, sink, pipeline);
    on_ready(&mqtt.url, &handle);
    let progress = {
        let mut handle = handle.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    s = handle.wait_for(|s| s.commits != last) => {
                        last = s.commits;
                        tracing::debug!(rows = s.rows_written, acked = s.acked, dead = s.dead_letter_total(), "committed");
                    }
                }
            }
        })
    };
    let result = pipeline.run(cancel.clone()).await;
    cancel.cancel();
    progress.abort();
    Ok(result?)
}
