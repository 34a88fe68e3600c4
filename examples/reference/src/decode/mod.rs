//! `iiot decode [FILE|-]`: a payload (Protobuf or JSON) printed as JSON.
//!
//! Telemetry and status print in core's JSON form (what brownfield devices send),
//! every other kind as a plain JSON rendering of the decoded domain type. Without
//! `--kind` the payload is tried as telemetry, status and data loss, in that order.
//! A payload no kind accepts prints each kind's dead-letter label and reason and
//! exits with code 3.
//!
//! ```text
//! mosquitto_sub -t 'acme/#' -C 1 | iiot decode
//! ```

mod view;

use std::io::{Read as _, Write as _};
use std::path::PathBuf;

use bytes::Bytes;
use clap::{Args, ValueEnum};
use iiot_core::codec::{Limits, json};
use iiot_core::version::{Message, MessageKind, Router};

use crate::error::AppError;

/// Arguments of `iiot decode`.
#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// The payload file; `-` or nothing reads stdin.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
    /// The message kind; without it telemetry, status and data-loss are tried.
    #[arg(long, value_enum)]
    kind: Option<Kind>,
    /// Pretty-print (default: one line per payload).
    #[arg(long)]
    pretty: bool,
}

/// Message kinds `iiot decode` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    Telemetry,
    Status,
    DataLoss,
    Command,
    CommandAck,
    OtaManifest,
    OtaStatus,
    ConfigDesired,
    ConfigReported,
}

impl Kind {
    fn message_kind(self) -> MessageKind {
        match self {
            Self::Telemetry => MessageKind::Telemetry,
            Self::Status => MessageKind::Status,
            Self::DataLoss => MessageKind::DataLoss,
            Self::Command => MessageKind::Command,
            Self::CommandAck => MessageKind::CommandAck,
            Self::OtaManifest => MessageKind::OtaManifest,
            Self::OtaStatus => MessageKind::OtaStatus,
            Self::ConfigDesired => MessageKind::ConfigDesired,
            Self::ConfigReported => MessageKind::ConfigReported,
        }
    }
}

/// Kinds tried, in order, when `--kind` is not given.
const GUESSES: [MessageKind; 3] = [
    MessageKind::Telemetry,
    MessageKind::Status,
    MessageKind::DataLoss,
];

/// Runs `iiot decode`.
///
/// # Errors
/// [`AppError::Io`] when the input cannot be read or the output written,
/// [`AppError::Rejected`] when no kind accepts the payload.
pub fn run(args: &DecodeArgs) -> Result<(), AppError> {
    let payload = read_input(args.file.as_deref())?;
    let value = decode(
        &payload,
        args.kind.map(Kind::message_kind),
        &Router::new(Limits::default()),
    )?;
    let text = if args.pretty {
        serde_json::to_string_pretty(&value)
    } else {
        serde_json::to_string(&value)
    }
    .map_err(|e| AppError::io("cannot render JSON", e.into()))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|e| AppError::io("cannot write to stdout", e))
}

fn read_input(file: Option<&std::path::Path>) -> Result<Bytes, AppError> {
    match file {
        Some(p) if p.as_os_str() != "-" => std::fs::read(p)
            .map(Bytes::from)
            .map_err(|e| AppError::io(format!("cannot read {}", p.display()), e)),
        _ => {
            let mut buf = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut buf)
                .map_err(|e| AppError::io("cannot read stdin", e))?;
            Ok(Bytes::from(buf))
        }
    }
}

/// Decodes `payload` as `kind` (or the first of [`GUESSES`] that accepts it) into
/// its JSON rendering.
///
/// # Errors
/// [`AppError::Rejected`] with every kind's reason.
pub fn decode(
    payload: &Bytes,
    kind: Option<MessageKind>,
    router: &Router,
) -> Result<serde_json::Value, AppError> {
    let kinds: &[MessageKind] = match &kind {
        Some(k) => std::slice::from_ref(k),
        None => &GUESSES,
    };
    let mut reasons = Vec::new();
    for k in kinds {
        match router.decode(*k, payload.clone()) {
            Ok(decoded) => return Ok(render(&decoded.message)),
            Err(rejected) => reasons.push(format!(
                "  as {}: [{}] {}",
                k.as_str(),
                rejected.reason.label(),
                rejected.reason
            )),
        }
    }
    Err(AppError::Rejected {
        reasons: reasons.join("\n"),
    })
}

/// The JSON rendering of a decoded message.
fn render(message: &Message) -> serde_json::Value {
    let core_json = |bytes: Vec<u8>| {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            // Core's encoder always writes valid JSON; say so rather than panic if not.
            serde_json::json!({ "error": format!("core JSON form did not parse: {e}") })
        })
    };
    match message {
        Message::Telemetry(b) => core_json(json::encode_telemetry(b)),
        Message::Status(s) => core_json(json::encode_status(s)),
        other => view::render(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iiot_core::codec::protobuf;
    use iiot_core::types::{DataLoss, DataLossReason, DeviceId, Sequence, Timestamp};

    #[test]
    fn guesses_data_loss_and_reports_every_reason() {
        let d = DataLoss::new(
            DeviceId::new("plc-01").unwrap(),
            Sequence(100),
            Sequence(149),
            50,
            DataLossReason::Overflow,
            Timestamp::now(),
        )
        .unwrap();
        let router = Router::new(Limits::default());
        let v = decode(&protobuf::encode_data_loss(&d).into(), None, &router).unwrap();
        assert_eq!(v["kind"], "data_loss");
        assert_eq!(v["count"], 50);
        assert_eq!(v["reason"], "overflow");
        let e = decode(
            &Bytes::from_static(b"{\"schema_version\": 9}"),
            None,
            &router,
        )
        .unwrap_err();
        let s = e.to_string();
        assert!(s.contains("as telemetry: [unsupported_version]"), "{s}");
        assert!(s.contains("as data_loss: [no_json_form]"), "{s}");
    }
}
