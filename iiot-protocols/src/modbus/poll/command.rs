//! The poller as a command handler: a command's target is a tag of the register map,
//! written with the map's FC5/FC6/FC15/FC16 rules (see [`PollerHandle::write`]).

use iiot_core::command::{Action, ActionKind, CommandHandler, HandlerError, Target, ValueKind};
use iiot_core::types::{AckReason, TagPath, Value};

use super::PollerHandle;
use super::write::{WriteError, WriteOutcome};
use crate::modbus::map::{DataType, Tag};

fn kind(tag: &Tag) -> ValueKind {
    // Exact on purpose: only the identity transform keeps whole numbers whole.
    #[allow(clippy::float_cmp)]
    let scaled = tag.scale != 1.0 || tag.offset != 0.0;
    match tag.data_type {
        DataType::Bool | DataType::Bit => ValueKind::Bool,
        DataType::String => ValueKind::Text,
        DataType::F32 | DataType::F64 => ValueKind::Number,
        // Engineering units of a scaled register may have a fraction.
        _ if scaled => ValueKind::Number,
        _ => ValueKind::Integer,
    }
}

/// Each writable tag of the map (coils and holding registers) is a target taking
/// the kind of value its data type holds. A write the device refuses with an
/// exception is Rejected (nothing was written); a write without an answer is
/// Failed (it may have happened; never retried).
impl CommandHandler for PollerHandle {
    fn target(&self, tag: &TagPath) -> Option<Target> {
        let (_, t) = self.map().find(tag.as_str())?;
        t.area.is_writable().then(|| Target::writable(kind(t)))
    }

    async fn execute(&self, action: Action) -> Result<Option<Value>, HandlerError> {
        let ActionKind::Write(value) = action.kind else {
            return Err(HandlerError::unsupported(
                "a Modbus tag has no named actions, only writes",
            ));
        };
        match self.write(action.target.as_str(), &value).await {
            Ok(WriteOutcome::Written) => Ok(Some(value)),
            Ok(WriteOutcome::Refused(code)) => Err(HandlerError::refused(
                AckReason::DeviceRefused,
                format!(
                    "the device refused the write with exception {code:?}; nothing was written"
                ),
            )),
            Err(e @ (WriteError::UnknownTag { .. } | WriteError::ReadOnly { .. })) => Err(
                HandlerError::refused(AckReason::UnknownTarget, e.to_string()),
            ),
            Err(e @ WriteError::Encode { .. }) => {
                Err(HandlerError::refused(AckReason::WrongType, e.to_string()))
            }
            Err(e) => Err(HandlerError::failed(e.to_string())),
        }
    }
}
