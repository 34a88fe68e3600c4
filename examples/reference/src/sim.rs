//! `iiot sim`: the simulated PLC alone on a TCP port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use iiot_protocols::modbus::RegisterMap;
use iiot_protocols::modbus::sim::Simulator;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::{self, ConfigError};
use crate::error::AppError;
use crate::plant::{Plant, PlantConfig, TAGS};

/// plc.toml as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlcFile {
    /// Where the Modbus TCP server listens. Default `127.0.0.1:5020`.
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    /// The register map, relative to the config file.
    register_map: PathBuf,
    /// The plant model.
    #[serde(default)]
    plant: PlantConfig,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5020))
}

/// A checked plc.toml with its register map loaded.
#[derive(Debug)]
pub struct PlcSetup {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The plant's register map.
    pub map: RegisterMap,
    /// The plant model's parameters.
    pub plant: PlantConfig,
}

impl PlcSetup {
    /// Reads and checks `file`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and the key.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let f: PlcFile = config::load(file)?;
        if let Err((key, problem)) = f.plant.check() {
            return Err(ConfigError::invalid(file, format!("plant.{key}"), problem));
        }
        let map = config::load_register_map(file, "register_map", &f.register_map)?;
        check_plant_tags(&map, file)?;
        Ok(Self {
            listen: f.listen,
            map,
            plant: f.plant,
        })
    }
}

/// Checks that the map holds every tag the plant drives.
///
/// # Errors
/// [`ConfigError::Invalid`] naming `register_map` and the missing tag.
pub fn check_plant_tags(map: &RegisterMap, file: &Path) -> Result<(), ConfigError> {
    match TAGS.iter().find(|t| map.find(t).is_none()) {
        Some(missing) => Err(ConfigError::invalid(
            file,
            "register_map",
            format!("the plant drives tag {missing:?}, which the register map does not define"),
        )),
        None => Ok(()),
    }
}

/// A running simulated PLC.
#[derive(Debug)]
pub struct RunningPlc {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The simulator (registers, faults).
    pub sim: Simulator,
}

/// Binds the simulator, starts the plant model and the server under `cancel`.
///
/// # Errors
/// [`AppError::Io`] when the address cannot be bound.
pub async fn start(
    setup: PlcSetup,
    listen: SocketAddr,
    cancel: &CancellationToken,
) -> Result<(RunningPlc, tokio::task::JoinHandle<()>), AppError> {
    let sim = Simulator::new(setup.map);
    let mut plant = Plant::new(setup.plant.clone());
    let tick = setup.plant.tick();
    // Initial values before the first client connects.
    apply(&sim, &plant.step(tick));
    let server = sim
        .bind(listen)
        .await
        .map_err(|e| AppError::io(format!("cannot listen on {listen}"), e))?;
    let addr = server
        .local_addr()
        .map_err(|e| AppError::io("cannot read the bound address", e))?;
    let model_sim = sim.clone();
    let token = cancel.clone();
    let task = tokio::spawn(async move {
        let model = async {
            let mut iv = tokio::time::interval(tick);
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                iv.tick().await;
                apply(&model_sim, &plant.step(tick));
            }
        };
        tokio::select! {
            r = server.run(token.clone()) => {
                if let Err(e) = r {
                    tracing::error!(%e, "simulated PLC stopped");
                }
            }
            () = model => {}
            () = token.cancelled() => {}
        }
    });
    Ok((RunningPlc { addr, sim }, task))
}

fn apply(sim: &Simulator, values: &[(&'static str, iiot_core::types::Value)]) {
    for (tag, v) in values {
        if let Err(e) = sim.set_value(tag, v) {
            tracing::warn!(%e, "plant value not stored");
        }
    }
}

/// Runs the simulated PLC until Ctrl-C / SIGTERM; prints `listening on ADDR`.
///
/// # Errors
/// [`AppError`] when it cannot listen.
pub async fn run(setup: PlcSetup, listen: Option<SocketAddr>) -> Result<(), AppError> {
    let listen = listen.unwrap_or(setup.listen);
    let cancel = CancellationToken::new();
    let tags: Vec<String> = setup
        .map
        .tags()
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    let (plc, task) = start(setup, listen, &cancel).await?;
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {}", plc.addr);
        let _ = out.flush();
    }
    tracing::info!(addr = %plc.addr, tags = ?tags, "simulated PLC running; Ctrl-C stops it");
    crate::shutdown_signal().await;
    cancel.cancel();
    task.await.map_err(|e| AppError::Task {
        task: "simulated PLC",
        detail: e.to_string(),
    })
}
