//! `iiot`: the iiot-rs reference deployment.
//!
//! | command | what |
//! |---|---|
//! | `iiot` / `iiot demo` | broker, simulated PLC, gateway and ingest in one process, with a scripted outage |
//! | `iiot gateway --config gateway.toml` | Modbus poll and OPC-UA subscription → outbox → MQTT |
//! | `iiot browse --endpoint opc.tcp://HOST:PORT/ [--from NODE] [--depth N]` | an OPC-UA server's variables printed as a tag map for `opcua_map` |
//! | `iiot ingest --config ingest.toml` | MQTT → pipeline → SQLite or PostgreSQL |
//! | `iiot sim --config plc.toml` | the simulated PLC alone on a TCP port |
//! | `iiot decode [FILE\|-]` | a Protobuf or JSON payload printed as JSON |
//! | `iiot command send --device D --tag T --value V --ttl 30s` | one command through the broker, waiting for its final ack (exit 0 completed, 4 not, 5 no answer) |
//! | `iiot ota keygen --algorithm ecdsa-p256\|ed25519 --out DIR [--id ID]` | a firmware signing key pair as PEM files `openssl` reads (exit 2 if one exists) |
//! | `iiot ota sign --image FILE --version V --firmware-id F --device-type T [--key KEY.pem ...] --out M [--body-out BODY]` | a signed firmware manifest, or without `--key` only the body for `openssl` to sign (exit 2 on a bad key or file) |
//! | `iiot ota attach --body BODY --signature pub=PUB.pem,sig=SIG[,id=ID] ... --out M` | a signed manifest from `openssl`-made signatures, each verified first (exit 3 if one does not) |
//! | `iiot ota verify --manifest M --trust PUB.pem ... --device-type T [--image FILE]` | checks a manifest as a device would (exit 0 valid, 3 rejected with the reason, 2 bad arguments or files) |
//!
//! Global: `--metrics 127.0.0.1:PORT` serves Prometheus metrics; `RUST_LOG` filters
//! the logs (stderr). Config files are TOML; an unknown key or a bad value stops the
//! command at start with the file and the key (exit code 2).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use iiot_reference::error::AppError;
use iiot_reference::{browse, command, decode, demo, gateway, ingest, observe, ota_cli, sim};

/// The exit codes, the same for every command (`iiot --help` prints them; the
/// reference README lists the same lines, and a test keeps the two equal).
const EXIT_CODES: &str = "\
Exit codes:
  0   done
  1   a runtime failure: a service unreachable, a file that cannot be written
  2   bad arguments or configuration: nothing was started
  3   rejected input: a payload that does not decode, a manifest or signature refused
  4   a promise not kept: the demo lost data, acted twice or left a command unanswered; a command ended other than completed
  5   iiot command send: no final ack in time
  10  iiot gateway: restart me (a firmware update needs the next boot)";

/// The iiot-rs reference deployment: PLC register to database row.
#[derive(Debug, Parser)]
#[command(name = "iiot", version, about, long_about = None, after_help = EXIT_CODES)]
struct Cli {
    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9898.
    #[arg(long, global = true, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// What to run (default: demo).
    #[command(subcommand)]
    command: Option<Task>,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Everything in one process with a scripted broker outage and commands; exits
    /// non-zero on loss, a double execution or an unanswered command.
    Demo(DemoArgs),
    /// The gateway: Modbus poll, OPC-UA subscription, deadband, outbox, MQTT forwarder.
    Gateway(ConfigArg),
    /// Prints an OPC-UA server's variables as a tag map (`opcua_map` of gateway.toml).
    Browse(browse::BrowseArgs),
    /// The ingest worker: MQTT, pipeline, SQLite or PostgreSQL.
    Ingest(ConfigArg),
    /// The simulated PLC alone on a TCP port.
    Sim(SimArgs),
    /// Prints a telemetry, status or data-loss payload (Protobuf or JSON) as JSON.
    Decode(decode::DecodeArgs),
    /// Commands to a gateway: `iiot command send --device D --tag T --value V`.
    #[command(subcommand)]
    Command(Box<command::CommandCli>),
    /// Firmware manifests: `iiot ota keygen | sign | attach | verify`.
    #[command(subcommand)]
    Ota(Box<ota_cli::OtaCli>),
}

/// Arguments of the demo.
#[derive(Debug, Args, Default)]
struct DemoArgs {
    /// How long the scenario runs, in seconds.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Where the outbox and the SQLite file go (default: a new temporary directory); it
    /// must not hold a previous run.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Keep the data directory (and its SQLite file) for inspection.
    #[arg(long)]
    keep: bool,
}

/// A command that takes only a config file.
#[derive(Debug, Args)]
struct ConfigArg {
    /// The TOML config file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

/// Arguments of `iiot sim`.
#[derive(Debug, Args)]
struct SimArgs {
    /// The TOML config file (see config/plc.toml).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Listen here instead of the config's `listen` (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Some(Task::Command(_) | Task::Browse(_))) {
        observe::init_tracing_at("warn");
    } else {
        observe::init_tracing();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("iiot: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}", error_report(&e));
            ExitCode::from(e.exit_code())
        }
    }
}

/// `iiot: <error>` and then each cause the message does not already say (most of
/// our errors carry their source's text in their own, and printing it again as a
/// "caused by" line only repeats it).
fn error_report(e: &AppError) -> String {
    let mut out = format!("iiot: {e}");
    let mut said = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !said.contains(&text) {
            out.push_str("\n  caused by: ");
            out.push_str(&text);
            said.push_str(&text);
        }
        source = s.source();
    }
    out
}

async fn run(cli: Cli) -> Result<ExitCode, AppError> {
    let command = cli
        .command
        .unwrap_or_else(|| Task::Demo(DemoArgs::default_run()));
    // Config first, so a bad file fails before anything listens.
    match command {
        Task::Decode(args) => decode::run(&args).map(|()| ExitCode::SUCCESS),
        Task::Browse(args) => browse::run(&args).await.map(|()| ExitCode::SUCCESS),
        Task::Command(cli) => match *cli {
            command::CommandCli::Send(args) => command::send(&args).await.map(ExitCode::from),
        },
        Task::Ota(cli) => Ok(ExitCode::from(ota_cli::run(&cli))),
        Task::Sim(args) => {
            let cfg = sim::PlcSetup::load(&args.config)?;
            start_metrics(cli.metrics)?;
            sim::run(cfg, args.listen).await?;
            Ok(ExitCode::SUCCESS)
        }
        Task::Ingest(args) => {
            let cfg = ingest::IngestSetup::load(&args.config)?;
            start_metrics(cli.metrics)?;
            ingest::run(cfg).await?;
            Ok(ExitCode::SUCCESS)
        }
        Task::Gateway(args) => {
            let cfg = gateway::GatewaySetup::load(&args.config)?;
            start_metrics(cli.metrics)?;
            Ok(match gateway::run(cfg).await? {
                gateway::GatewayExit::Signal => ExitCode::SUCCESS,
                gateway::GatewayExit::Reboot => ExitCode::from(gateway::ota::REBOOT_EXIT_CODE),
            })
        }
        Task::Demo(args) => {
            start_metrics(cli.metrics)?;
            let report = demo::run(demo::DemoOptions {
                duration: std::time::Duration::from_secs(args.duration),
                data_dir: args.data_dir,
                keep: args.keep,
                progress: true,
            })
            .await?;
            println!("{report}");
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(4)
            })
        }
    }
}

impl DemoArgs {
    /// The demo's defaults when `iiot` runs without a subcommand.
    fn default_run() -> Self {
        Self {
            duration: 30,
            ..Self::default()
        }
    }
}

fn start_metrics(addr: Option<SocketAddr>) -> Result<(), AppError> {
    match addr {
        Some(addr) => observe::serve_metrics(addr),
        None => Ok(()),
    }
}
