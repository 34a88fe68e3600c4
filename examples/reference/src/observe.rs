//! Logs (tracing, filtered by `RUST_LOG`) and the Prometheus endpoint.

use std::net::SocketAddr;

use metrics_exporter_prometheus::PrometheusBuilder;
use tracing_subscriber::EnvFilter;

use crate::error::AppError;

/// Logs go to stderr (stdout carries command output), filtered by `RUST_LOG`
/// (default `info`, with the embedded broker silent and the MQTT client library at `warn`).
pub fn init_tracing() {
    init_tracing_at("info");
}

/// Libraries whose own logs repeat what our messages say better: the embedded broker,
/// and async-opcua, which logs a missing certificate as an ERROR even on a channel
/// without security and every failed reconnect (the OPC-UA source logs one warning per
/// outage instead). `RUST_LOG=opcua_client=debug` brings them back.
const QUIET: &str = "rumqttd=off,rumqttc=warn,opcua_client=off,opcua_core=off,opcua_crypto=off,opcua_server=error,opcua_nodes=error";

/// As [`init_tracing`], with `level` as the default instead of `info` (a one-shot
/// command such as `iiot command send` logs warnings only unless `RUST_LOG` says
/// otherwise: its answer is its output).
pub fn init_tracing_at(level: &str) {
    // RUST_LOG wins for what it names; the quiet libraries stay quiet unless it
    // names them.
    let env = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let with_quiet = |base: &str| {
        let mut spec = base.to_owned();
        for d in QUIET.split(',') {
            let target = d.split('=').next().unwrap_or(d);
            if !base.contains(target) {
                spec.push(',');
                spec.push_str(d);
            }
        }
        spec
    };
    let filter = env
        .and_then(|e| EnvFilter::try_new(with_quiet(&e)).ok())
        .unwrap_or_else(|| EnvFilter::new(with_quiet(level)));
    // A second initialisation (tests calling in-process) is harmless; ignore it.
    // Colour only on a terminal (and never with NO_COLOR): a log file gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

/// Serves the `metrics` facade as Prometheus text on `http://{addr}/metrics` (any
/// path answers). Must run inside the tokio runtime.
///
/// The per-device IoT signals come from the SDK crates:
///
/// | signal | per device | overall |
/// |---|---|---|
/// | connectivity | `iiot_ingest_device_online{device}` | `iiot_mqtt_connected{client}`, `iiot_gateway_source_connected{source}`, `iiot_opcua_connected{source}` |
/// | freshness | `iiot_ingest_device_last_seen_seconds{device}` | `iiot_gateway_source_last_good_timestamp_seconds{source}`, `iiot_opcua_tag_last_update_seconds{source,tag}` |
/// | throughput | `iiot_reference_device_samples_committed_total{device}` | `iiot_ingest_rows_written_total`, `iiot_mqtt_publishes_total` |
/// | errors | `iiot_reference_device_dead_letters_total{device,reason}`, `iiot_reference_device_gaps_opened_total{device}`, `iiot_reference_device_data_loss_records_total{device}` | `iiot_ingest_dead_letters_total{reason}`, `iiot_ingest_sink_errors_total` |
///
/// (`iiot_reference_device_*` come from [`crate::ingest::metrics`].) The gateway
/// counts what it produced in `iiot_reference_gateway_samples_total` and
/// `iiot_reference_gateway_batches_total` (durably in the outbox; the counters start
/// at zero with each process, the [produced log](crate::gateway::produced) keeps
/// them across runs).
///
/// # Errors
/// [`AppError::Metrics`] when the listener cannot be set up or a recorder is
/// already installed.
pub fn serve_metrics(addr: SocketAddr) -> Result<(), AppError> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| AppError::Metrics {
            addr,
            detail: e.to_string(),
        })?;
    describe();
    tracing::info!(%addr, "serving Prometheus metrics");
    Ok(())
}

fn describe() {
    metrics::describe_gauge!(
        "iiot_ingest_device_online",
        "1 while the device's retained status says online (connectivity)"
    );
    metrics::describe_gauge!(
        "iiot_ingest_device_last_seen_seconds",
        "Unix time of the device's newest accepted telemetry (freshness)"
    );
    metrics::describe_counter!(
        "iiot_ingest_rows_written_total",
        "Sample rows committed to the sink (throughput)"
    );
    metrics::describe_counter!(
        "iiot_reference_device_samples_committed_total",
        "Samples of the device committed to the sink (throughput)"
    );
    metrics::describe_counter!(
        "iiot_reference_device_dead_letters_total",
        "Payloads of the device dead-lettered, by reason (errors)"
    );
    metrics::describe_counter!(
        "iiot_ingest_dead_letters_total",
        "Payloads dead-lettered, by reason (errors)"
    );
    metrics::describe_counter!(
        "iiot_reference_gateway_samples_total",
        "Samples the gateway appended durably to its outbox (produced; this process only)"
    );
    metrics::describe_counter!(
        "iiot_reference_gateway_batches_total",
        "Telemetry batches the gateway appended durably to its outbox (this process only)"
    );
    metrics::describe_counter!(
        "iiot_reference_gateway_append_errors_total",
        "Batches the outbox refused or could not make durable (their samples are not produced)"
    );
    metrics::describe_counter!(
        "iiot_reference_gateway_produced_log_errors_total",
        "Lines that could not be written to the gateway's produced log"
    );
}
