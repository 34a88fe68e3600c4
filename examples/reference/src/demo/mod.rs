//! `iiot demo`: the whole telemetry path in one process, with a broker outage.
//!
//! An embedded broker (rumqttd), the simulated PLC, the gateway (Modbus poll,
//! deadband, outbox, forwarder over MQTT with birth and last will) talking to
//! the broker through a relay that the scenario cuts, and ingest to SQLite. The
//! scenario: normal flow, an outage of several seconds while the PLC keeps
//! producing, recovery with paced replay; then polling stops, the outbox drains and
//! the SQLite rows are compared with what the gateway produced.

mod commands;
mod images;
mod net;
mod opcua;
mod ota;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use iiot_core::topic::UnsPath;
use iiot_core::types::DeviceId;
use iiot_ingest::sink::sqlite::SqliteConfig;
use iiot_ingest::source::mqtt::MqttSourceConfig;
use iiot_ingest::{PipelineConfig, PipelineHandle};
use iiot_protocols::modbus::{PollerConfig, RegisterMap, TransportConfig};
use iiot_protocols::mqtt::{MqttConfig, Session};
use tokio_util::sync::CancellationToken;

pub use commands::{CommandOutcomes, Operator, SETPOINT};
pub use net::{Relay, start_broker};
pub use ota::OtaOutcomes;

use crate::error::AppError;
use crate::gateway::{self, BatchSection, GatewayMqtt, GatewaySetup, ModbusSection};
use crate::ingest::{self, IngestSetup, SinkConfig};
use crate::plant::PlantConfig;
use crate::sim::{self, PlcSetup};

/// The plant's register map, built in so the demo runs from any directory.
const PLANT_MAP: &str = include_str!("../../config/plant-map.toml");
/// The demo device.
const DEVICE: &str = "plc-01";

/// What the demo does.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Length of the scenario (at least 6 s).
    pub duration: Duration,
    /// Where the outbox and SQLite file go; `None`: a new temporary directory.
    pub data_dir: Option<PathBuf>,
    /// Keep a temporary data directory.
    pub keep: bool,
    /// Print a progress line while it runs.
    pub progress: bool,
}

/// The outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoReport {
    /// Samples the gateway appended to its outbox.
    pub produced: u64,
    /// Sample rows in SQLite.
    pub stored: u64,
    /// Produced but not stored.
    pub lost: u64,
    /// Redelivered batches ingest dropped (in memory or already in the sink).
    pub duplicates_suppressed: u64,
    /// From the cut to the gateway's reconnect.
    pub longest_outage: Duration,
    /// Most records waiting in the outbox at once.
    pub backlog_peak: u64,
    /// Where the data went.
    pub data_dir: PathBuf,
    /// Whether the data directory is left behind.
    pub kept: bool,
    /// Sample rows of the OPC-UA server's tags (part of `stored`).
    pub opcua_stored: u64,
    /// What became of the commands the script sent.
    pub commands: CommandOutcomes,
    /// What became of the firmware updates.
    pub ota: OtaOutcomes,
}

impl DemoReport {
    /// Whether the run kept every promise: nothing lost, no command acted twice,
    /// every command answered, every firmware update ended as it must.
    pub fn ok(&self) -> bool {
        self.lost == 0
            && self.opcua_stored > 0
            && self.commands.double_executions == 0
            && self.commands.unanswered == 0
            && self.ota.ok()
    }
}

impl std::fmt::Display for DemoReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "iiot demo report")?;
        writeln!(f, "  samples produced       {}", self.produced)?;
        writeln!(f, "  rows stored            {}", self.stored)?;
        writeln!(f, "    of them from OPC-UA  {}", self.opcua_stored)?;
        writeln!(f, "  lost                   {}", self.lost)?;
        writeln!(f, "  duplicates suppressed  {}", self.duplicates_suppressed)?;
        writeln!(
            f,
            "  longest outage bridged {:.1} s",
            self.longest_outage.as_secs_f64()
        )?;
        writeln!(f, "  backlog peak           {} batches", self.backlog_peak)?;
        let c = &self.commands;
        writeln!(f, "  commands sent          {}", c.sent)?;
        writeln!(f, "  commands completed     {}", c.completed)?;
        writeln!(f, "  duplicate acks         {}", c.duplicate_acks)?;
        writeln!(f, "  commands expired       {}", c.expired)?;
        writeln!(f, "  commands rejected      {}", c.rejected)?;
        writeln!(f, "  commands unanswered    {}", c.unanswered)?;
        writeln!(f, "  PLC writes             {}", c.plc_writes)?;
        writeln!(f, "  double executions      {}", c.double_executions)?;
        let o = &self.ota;
        let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".into());
        writeln!(f, "  ota confirmed          {}", or_none(&o.confirmed))?;
        writeln!(
            f,
            "  ota forged             {}",
            o.forged
                .map_or_else(|| "NOT rejected".into(), |r| format!("rejected ({r})"))
        )?;
        writeln!(
            f,
            "  ota rolled back        {}",
            o.rolled_back
                .as_ref()
                .map_or_else(|| "none".into(), |(v, r)| format!("{v} ({r})"))
        )?;
        writeln!(
            f,
            "  ota running            {} after {} reboots",
            or_none(&o.running),
            o.reboots
        )?;
        let state = if self.kept { "kept" } else { "removed" };
        write!(
            f,
            "  data                   {} ({state})",
            self.data_dir.display()
        )
    }
}

/// When the outage starts and how long it lasts, for a scenario of `duration`.
fn outage_window(duration: Duration) -> (Duration, Duration) {
    let start = duration.mul_f64(0.3);
    let len = duration
        .mul_f64(0.3)
        .clamp(Duration::from_secs(3), Duration::from_secs(10));
    (start, len)
}

fn plant_map() -> Result<RegisterMap, AppError> {
    RegisterMap::from_toml_str(PLANT_MAP).map_err(|e| {
        AppError::io(
            "the built-in plant map",
            std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        )
    })
}

/// Runs the scenario.
///
/// # Errors
/// [`AppError`] when a part cannot start.
pub async fn run(opts: DemoOptions) -> Result<DemoReport, AppError> {
    let duration = opts.duration.max(Duration::from_secs(6));
    let (temp, data_dir) = match &opts.data_dir {
        Some(d) => {
            // A previous run's stores would be counted with this run's (its rows in
            // SQLite, its outbox backlog replayed): the report would not add up.
            if let Some(old) = ["iiot.sqlite3", "outbox", "commands", "slots"]
                .iter()
                .find(|f| d.join(f).exists())
            {
                return Err(AppError::Usage(format!(
                    "--data-dir {} holds a previous demo run ({old}); give an empty or new directory, or remove that one",
                    d.display()
                )));
            }
            std::fs::create_dir_all(d)
                .map_err(|e| AppError::io(format!("cannot create {}", d.display()), e))?;
            (None, d.clone())
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("iiot-demo-")
                .tempdir()
                .map_err(|e| AppError::io("cannot create a temporary directory", e))?;
            let p = t.path().to_owned();
            (Some(t), p)
        }
    };
    eprintln!("iiot demo: data in {}", data_dir.display());
    let cancel = CancellationToken::new();
    let result = scenario(duration, &data_dir, opts.progress, &cancel).await;
    cancel.cancel();
    let kept = opts.data_dir.is_some() || opts.keep;
    if let Some(t) = temp {
        if opts.keep {
            let _ = t.keep();
        } else {
            drop(t);
        }
    }
    let mut report = result?;
    report.data_dir = data_dir;
    report.kept = kept;
    Ok(report)
}

async fn scenario(
    duration: Duration,
    data_dir: &std::path::Path,
    progress: bool,
    cancel: &CancellationToken,
) -> Result<DemoReport, AppError> {
    let broker = start_broker().await?;
    let relay = Relay::start(broker, cancel).await?;
    let broker_url = format!("mqtt://{broker}");

    // The PLC.
    let plc_setup = PlcSetup {
        listen: "127.0.0.1:0".parse().map_err(|_| AppError::Task {
            task: "demo",
            detail: "bad PLC address".into(),
        })?,
        map: plant_map()?,
        plant: PlantConfig::default(),
    };
    let (plc, _plc_task) =
        sim::start(plc_setup, "127.0.0.1:0".parse().unwrap_or(broker), cancel).await?;

    // Ingest, straight to the broker, into SQLite.
    let db = data_dir.join("iiot.sqlite3");
    let mut mqtt = MqttSourceConfig::default();
    mqtt.url.clone_from(&broker_url);
    mqtt.client_id = "iiot-demo-ingest".into();
    mqtt.filters = vec![
        "demo/+/+/+/+/+/telemetry/#".into(),
        "demo/+/+/+/+/+/status".into(),
        "demo/+/+/+/+/+/commands/+".into(),
        "demo/+/+/+/+/+/commands/+/ack".into(),
    ];
    let pipeline = PipelineConfig {
        batch_max_delay: Duration::from_millis(100),
        ..PipelineConfig::default()
    };
    let ingest_setup = IngestSetup {
        mqtt,
        pipeline,
        sink: SinkConfig::Sqlite(SqliteConfig::new(&db)),
    };
    let ingest_cancel = cancel.child_token();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<PipelineHandle>();
    let ingest_task = {
        let c = ingest_cancel.clone();
        tokio::spawn(async move {
            // Boxed: the pipeline's state machine is large.
            Box::pin(ingest::run_until(ingest_setup, &c, |_, h| {
                let _ = ready_tx.send(h.clone());
            }))
            .await
        })
    };
    let mut pipeline_handle = ready_rx.await.map_err(|_| AppError::Task {
        task: "ingest",
        detail: "stopped before it started".into(),
    })?;
    wait_subscribed(&broker_url, &mut pipeline_handle).await?;

    // The gateway, through the relay.
    let device = DeviceId::new(DEVICE).map_err(|e| AppError::Task {
        task: "demo",
        detail: e.to_string(),
    })?;
    let path = UnsPath::new(
        "demo",
        "plant1",
        "packaging",
        "line3",
        "plc",
        device.clone(),
    )
    .map_err(|e| AppError::Task {
        task: "demo",
        detail: e.to_string(),
    })?;
    let plc_addr = plc.addr;
    // The oven beside the PLC, on OPC-UA.
    let oven = opcua::start(cancel).await?;
    let mut gw_setup = demo_gateway(
        &path,
        plc_addr,
        &format!("mqtt://{}", relay.addr()),
        data_dir,
        None,
    )?;
    gw_setup.opcua = Some(oven.clone());
    let gw_cancel = cancel.child_token();
    let mut gw = gateway::start(gw_setup, &gw_cancel).await?;
    // The operator talks to the broker directly (the outage cuts the gateway only).
    let mut operator = Operator::start(&broker_url, &path).await?;
    let mut commands_sent = false;

    // The script.
    let (outage_at, outage_len) = outage_window(duration);
    let started = Instant::now();
    let mut backlog_peak = 0u64;
    let mut cut_at: Option<Instant> = None;
    let mut longest_outage = Duration::ZERO;
    let mut restored = false;
    let mut connection = gw.session.state();
    let mut last_print = Instant::now();
    let mut last_produced = 0;
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = started.elapsed();
        if !commands_sent && connection.borrow().is_connected() && t >= outage_at / 2 {
            commands_sent = true;
            let twice = operator.setpoint(40.0, Duration::from_secs(30), 2).await?;
            let stale = operator.stale_setpoint(45.0).await?;
            let high = operator.setpoint(150.0, Duration::from_secs(30), 1).await?;
            eprintln!(
                "iiot demo: commands: {twice} (delivered twice), {stale} (already expired), {high} (above its maximum)"
            );
        }
        if cut_at.is_none() && t >= outage_at {
            eprintln!(
                "iiot demo: broker outage starts ({:.0} s)",
                outage_len.as_secs_f64()
            );
            relay.cut();
            cut_at = Some(Instant::now());
            let during = operator.setpoint(60.0, Duration::from_secs(60), 1).await?;
            eprintln!("iiot demo: command {during} sent during the outage");
        }
        if let Some(c) = cut_at
            && !restored
            && c.elapsed() >= outage_len
        {
            relay.restore();
            restored = true;
            eprintln!("iiot demo: broker back; replaying the backlog");
        }
        if restored && longest_outage.is_zero() && connection.borrow_and_update().is_connected() {
            longest_outage = cut_at.map_or(Duration::ZERO, |c| c.elapsed());
        }
        let stats = gw.outbox.stats();
        backlog_peak = backlog_peak.max(stats.backlog_records);
        if progress && last_print.elapsed() >= Duration::from_secs(1) {
            let produced = gw.counters.samples.load(Ordering::Relaxed);
            let rate = (produced - last_produced) as f64 / last_print.elapsed().as_secs_f64();
            last_produced = produced;
            last_print = Instant::now();
            eprintln!(
                "[{:5.1} s] broker {}  produced {produced:6}  stored {:6}  backlog {:4}  {rate:5.1} samples/s",
                t.as_secs_f64(),
                if relay.is_up() { "up  " } else { "DOWN" },
                pipeline_handle.stats().rows_written,
                stats.backlog_records,
            );
        }
    }
    if restored && longest_outage.is_zero() {
        // Reconnected between the last check and the end of the scenario.
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            connection.wait_for(iiot_protocols::mqtt::ConnectionState::is_connected),
        )
        .await;
        longest_outage = cut_at.map_or(Duration::ZERO, |c| c.elapsed());
    }

    // Every command answered? The PLC's write count says how often they acted.
    let plc_sim = plc.sim.clone();
    let commands = operator
        .outcomes(Duration::from_secs(20), move || plc_sim.writes())
        .await;
    drop(operator);

    // Stop producing, drain, and let ingest commit everything.
    gw.stop_producing().await;
    let produced = gw.counters.samples.load(Ordering::Relaxed);
    eprintln!("iiot demo: polling stopped; draining the outbox");
    if !gw.drain(Duration::from_secs(30)).await {
        tracing::warn!(
            backlog = gw.outbox.stats().backlog_records,
            "outbox did not drain"
        );
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(30),
        pipeline_handle.wait_for(|s| s.rows_written >= produced),
    )
    .await;
    gw_cancel.cancel();
    gw.join().await;
    ingest_cancel.cancel();
    let stats = ingest_task.await.map_err(|e| AppError::Task {
        task: "ingest",
        detail: e.to_string(),
    })??;
    let stored = count_rows(&db, DEVICE, "%")?;
    let opcua_stored = count_rows(&db, DEVICE, &format!("{}%", opcua::PREFIX))?;

    // Firmware updates, after the telemetry is counted: each reboot starts the
    // gateway again on its data directory.
    let key =
        iiot_edge::ota::SigningKey::generate(iiot_core::types::SignatureAlgorithm::EcdsaP256Sha256);
    let ota_cfg = ota::setup_config(&key);
    let ota = ota::run(&broker_url, &path, data_dir, &key, || {
        let mut setup = demo_gateway(
            &path,
            plc_addr,
            &broker_url,
            data_dir,
            Some(ota_cfg.clone()),
        )?;
        setup.opcua = Some(oven.clone());
        Ok(setup)
    })
    .await?;
    Ok(DemoReport {
        produced,
        stored,
        lost: produced.saturating_sub(stored),
        opcua_stored,
        duplicates_suppressed: stats.duplicates_suppressed + stats.duplicates_at_sink,
        longest_outage,
        backlog_peak,
        data_dir: PathBuf::new(),
        kept: false,
        commands,
        ota,
    })
}

/// The demo's gateway: polls the PLC at `plc`, talks MQTT to `url`, keeps its
/// stores in `data_dir`, takes firmware updates with `ota`.
fn demo_gateway(
    path: &UnsPath,
    plc: std::net::SocketAddr,
    url: &str,
    data_dir: &std::path::Path,
    ota: Option<gateway::ota::OtaSetupConfig>,
) -> Result<GatewaySetup, AppError> {
    let mut forwarder = gateway::default_forwarder();
    forwarder.set_backoff(Duration::from_millis(200), Duration::from_secs(1));
    forwarder.set_replay_rate(std::num::NonZeroU32::new(20));
    Ok(GatewaySetup {
        path: path.clone(),
        map: plant_map()?,
        opcua: None,
        modbus: ModbusSection {
            transport: TransportConfig::Tcp {
                host: plc.ip().to_string(),
                port: plc.port(),
            },
            poller: PollerConfig::default(),
        },
        mqtt: GatewayMqtt {
            url: url.to_owned(),
            keepalive: Duration::from_secs(5),
            firmware_version: Some("0.1.0-demo".into()),
            gateway_id: Some("gw-demo".into()),
            reconnect_max: Duration::from_secs(1),
            ..GatewayMqtt::default()
        },
        batch: BatchSection {
            max_samples: std::num::NonZeroUsize::new(50).unwrap_or(std::num::NonZeroUsize::MIN),
            max_delay: Duration::from_millis(250),
        },
        data_dir: data_dir.to_owned(),
        produced_log: None,
        outbox: iiot_edge::outbox::OutboxConfig::default(),
        forwarder,
        commands: gateway::CommandsSection::default(),
        ota,
    })
}

/// Waits until ingest has received a retained birth of a probe device: its
/// subscriptions are then in place and no telemetry published later goes unseen.
async fn wait_subscribed(broker_url: &str, handle: &mut PipelineHandle) -> Result<(), AppError> {
    let probe = "demo/plant1/packaging/line3/probe/demo-probe";
    let (_h, session, _in) = Session::new(&MqttConfig::new(broker_url, "demo-probe", probe))?;
    let stop = CancellationToken::new();
    let task = tokio::spawn(session.run(stop.clone()));
    let seen =
        tokio::time::timeout(Duration::from_secs(15), handle.wait_for(|s| s.received > 0)).await;
    stop.cancel();
    let _ = task.await;
    if seen.is_err() {
        tracing::warn!("ingest did not confirm its subscriptions within 15 s; going on");
    }
    Ok(())
}

/// Sample rows of `device` whose tag is `LIKE` `tags`.
fn count_rows(db: &std::path::Path, device: &str, tags: &str) -> Result<u64, AppError> {
    let io = |e: rusqlite::Error| {
        AppError::io(
            format!("cannot count rows in {}", db.display()),
            std::io::Error::other(e.to_string()),
        )
    };
    let conn = rusqlite::Connection::open(db).map_err(io)?;
    let n: i64 = conn
        .query_row(
            "SELECT count(*) FROM iiot_samples WHERE device_id = ?1 AND tag LIKE ?2",
            [device, tags],
            |r| r.get(0),
        )
        .map_err(io)?;
    Ok(u64::try_from(n).unwrap_or(0))
}
