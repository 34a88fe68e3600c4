//! The OPC-UA source's writable tags as targets of commands.

use iiot_core::command::{Action, ActionKind, CommandHandler, HandlerError, Target};
use iiot_core::types::{AckReason, TagPath, Value};

use super::error::OpcUaError;
use super::source::OpcUaHandle;

/// Each tag marked `writable` is a target taking the kind of value of its node's data
/// type (read from the server when the source connects; until then the tag is not a
/// target). A write the server refuses (`BadNotWritable`, `BadTypeMismatch`,
/// `BadUserAccessDenied`, ...) is Rejected: nothing was written. A write sent without an
/// answer is Failed: it may have happened; it is never retried.
impl CommandHandler for OpcUaHandle {
    fn target(&self, tag: &TagPath) -> Option<Target> {
        self.node(tag)?;
        Some(Target::writable(self.write_type(tag)?.kind()))
    }

    async fn execute(&self, action: Action) -> Result<Option<Value>, HandlerError> {
        let ActionKind::Write(value) = action.kind else {
            return Err(HandlerError::unsupported(
                "an OPC-UA tag has no named actions, only writes",
            ));
        };
        match self.write(&action.target, &value).await {
            Ok(()) => Ok(Some(value)),
            Err(e @ OpcUaError::Convert(_)) => {
                Err(HandlerError::refused(AckReason::WrongType, e.to_string()))
            }
            Err(e @ OpcUaError::NotConnected { .. }) => Err(HandlerError::refused(
                AckReason::HandlerFailed,
                format!("{e}; nothing was written"),
            )),
            Err(e @ OpcUaError::Node { .. }) => Err(HandlerError::refused(
                AckReason::DeviceRefused,
                format!("{e}; nothing was written"),
            )),
            Err(e) => Err(HandlerError::failed(e.to_string())),
        }
    }
}
