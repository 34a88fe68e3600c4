//! `iiot command send`: issues one command to a gateway through the broker and waits
//! for its final ack.
//!
//! It connects as a platform client, subscribes to the command's ack topic, publishes
//! the command with QoS 1 and the MQTT 5 message expiry of its TTL
//! (`iiot_ingest::commands::CommandIssuer`), and prints every ack as one JSON line.
//! Exit code 0 when the command completed, 4 when it ended otherwise (rejected,
//! failed, expired, interrupted: the ack says why), 5 when no final ack came within
//! `--wait`.

use std::time::Duration;

use clap::{Args, Subcommand};
use iiot_core::codec::{Limits, protobuf};
use iiot_core::publish::QoS;
use iiot_core::topic::UnsPath;
use iiot_core::types::{
    CommandState, Constraints, DeviceId, MessageId, Operation, TagPath, Timestamp, Value,
};
use iiot_ingest::commands::{CommandIssuer, CommandRequest};
use iiot_protocols::mqtt::{MqttConfig, Session};
use tokio_util::sync::CancellationToken;

use crate::error::AppError;

/// `iiot command ...`.
#[derive(Debug, Subcommand)]
pub enum CommandCli {
    /// Sends one command and waits for its final ack.
    Send(SendArgs),
}

/// Arguments of `iiot command send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The device id (the gateway's `device_id`).
    #[arg(long)]
    pub device: String,
    /// The tag to act on (a writable tag of the register map).
    #[arg(long)]
    pub tag: String,
    /// The value: `true`/`false`, an integer, a number, or text. Absent with
    /// `--action` for a named action without a value.
    #[arg(long, allow_hyphen_values = true)]
    pub value: Option<String>,
    /// Add `--value` to the current value instead of setting it (a relative command).
    #[arg(long)]
    pub add: bool,
    /// A named action without a value (e.g. `reset_alarm`) instead of a write.
    #[arg(long)]
    pub action: Option<String>,
    /// How long the command stays valid.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Lowest value the device may accept.
    #[arg(long, allow_hyphen_values = true)]
    pub min: Option<f64>,
    /// Highest value the device may accept.
    #[arg(long, allow_hyphen_values = true)]
    pub max: Option<f64>,
    /// The device's UNS levels above it: enterprise/site/area/line/device_type.
    #[arg(long, default_value = "acme/plant1/packaging/line3/plc")]
    pub uns: String,
    /// The broker.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    pub broker: String,
    /// Who issues it (recorded with the command).
    #[arg(long, default_value = "iiot-cli")]
    pub issuer: String,
    /// Why (recorded with the command).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// How long to wait for the final ack (default: the TTL plus 10 s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub wait: Option<Duration>,
}

/// Parses a command-line value: a boolean, an integer, a number, else text.
pub fn parse_value(s: &str) -> Value {
    match s {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => s
            .parse::<i64>()
            .map(Value::Int)
            .or_else(|_| s.parse::<f64>().map(Value::Double))
            .unwrap_or_else(|_| Value::String(s.to_owned())),
    }
}

fn path_of(args: &SendArgs) -> Result<UnsPath, AppError> {
    let bad = |why: String| AppError::Usage(format!("--uns {:?}: {why}", args.uns));
    let levels: Vec<&str> = args.uns.split('/').collect();
    let [enterprise, site, area, line, device_type] = levels[..] else {
        return Err(bad(
            "needs five levels: enterprise/site/area/line/device_type".into(),
        ));
    };
    let device = DeviceId::new(args.device.clone())
        .map_err(|e| AppError::Usage(format!("--device {:?}: {e}", args.device)))?;
    UnsPath::new(enterprise, site, area, line, device_type, device).map_err(|e| bad(e.to_string()))
}

fn request(args: &SendArgs, path: UnsPath) -> Result<CommandRequest, AppError> {
    let target = TagPath::new(args.tag.clone())
        .map_err(|e| AppError::Usage(format!("--tag {:?}: {e}", args.tag)))?;
    let op = match (&args.action, &args.value, args.add) {
        (Some(_), None, false) => Operation::Invoke,
        (None, Some(v), false) => Operation::Set(parse_value(v)),
        (None, Some(v), true) => Operation::Add(parse_value(v)),
        _ => {
            return Err(AppError::Usage(
                "give --value (with --add for a relative command), or --action alone".into(),
            ));
        }
    };
    let mut r = CommandRequest::new(path, target, op, args.ttl);
    if let Some(a) = &args.action {
        r.set_action(a.clone());
    }
    r.set_constraints(Constraints {
        min: args.min,
        max: args.max,
        ..Constraints::default()
    })
    .set_issuer(args.issuer.clone())
    .set_reason(args.reason.clone());
    Ok(r)
}

/// Runs `iiot command send`; returns the exit code.
///
/// # Errors
/// [`AppError::Usage`] for bad arguments, [`AppError::Mqtt`] and
/// [`AppError::Subscribe`] when the broker cannot be used, [`AppError::Issue`] when
/// the command could not be published.
pub async fn send(args: &SendArgs) -> Result<u8, AppError> {
    let path = path_of(args)?;
    let req = request(args, path.clone())?;
    let client_id = format!("iiot-cli-{}", MessageId::generate());
    let mut cfg = MqttConfig::platform(&args.broker, client_id);
    cfg.set_clean_session(true);
    let (handle, session, mut inbound) = Session::new(&cfg)?;
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let driver = tokio::spawn(session.run(cancel.clone()));
    if !handle.wait_connected(Duration::from_secs(10)).await {
        return Err(AppError::Usage(format!(
            "cannot reach the broker at {} within 10 s",
            args.broker
        )));
    }
    let issuer = CommandIssuer::new(handle.clone(), args.issuer.clone());
    let command = issuer.build(&req, Timestamp::now())?;
    // Subscribe before publishing, so no ack can pass unseen.
    handle
        .subscribe(path.command_ack(command.id).to_string(), QoS::AtLeastOnce)
        .await?;
    let command = issuer.publish(&path, command, args.ttl).await?;
    eprintln!(
        "iiot: command {} sent to {} ({} = {:?}, ttl {})",
        command.id,
        path.device_id(),
        command.target,
        command.op,
        humantime::format_duration(args.ttl)
    );
    let wait = args.wait.unwrap_or(args.ttl + Duration::from_secs(10));
    let deadline = tokio::time::Instant::now() + wait;
    let code = loop {
        let Ok(Some(m)) = tokio::time::timeout_at(deadline, inbound.recv()).await else {
            eprintln!(
                "iiot: no final ack for {} within {}",
                command.id,
                humantime::format_duration(wait)
            );
            break 5;
        };
        let ack = match protobuf::decode_command_ack(&m.payload, &Limits::default()) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("iiot: an undecodable ack on {}: {e}", m.topic);
                continue;
            }
        };
        let line = serde_json::json!({
            "command_id": ack.command_id,
            "device_id": ack.device_id,
            "state": ack.state,
            "reason": ack.reason.map(|r| r.to_string()),
            "detail": ack.detail,
            "result": ack.result.as_ref().map(|v| format!("{v:?}")),
            "duplicate": ack.duplicate,
            "time": ack.time,
        });
        println!("{line}");
        if ack.state.is_terminal() {
            break if ack.state == CommandState::Completed {
                0
            } else {
                4
            };
        }
    };
    cancel.cancel();
    let _ = driver.await;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_to_the_narrowest_kind() {
        assert_eq!(parse_value("true"), Value::Bool(true));
        assert_eq!(parse_value("80"), Value::Int(80));
        assert_eq!(parse_value("-3"), Value::Int(-3));
        assert_eq!(parse_value("21.5"), Value::Double(21.5));
        assert_eq!(parse_value("OK"), Value::String("OK".into()));
    }
}
