//! The control lane: a second outbox and forwarder for acks and statuses, with
//! its own sequence space, never queued behind telemetry.

use iiot_core::codec::protobuf;
use iiot_core::publish::{ConfirmedPublish, OutboundMessage};
use iiot_core::topic::UnsPath;
use iiot_core::types::{DataLoss, Sequence};
use tokio_util::sync::CancellationToken;

use crate::forwarder::{Forwarder, ForwarderConfig};
use crate::outbox::{AppendError, DurableError, Outbox};

/// Where acks and statuses go: durable like telemetry, with their own
/// sequence, never dropped to make room for telemetry, and forwarded by their
/// own forwarder, so a telemetry backlog never delays them. Cheap to clone.
#[derive(Clone)]
pub struct ControlLane {
    outbox: Outbox,
}

impl std::fmt::Debug for ControlLane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlLane")
            .field("outbox", &self.outbox.stats())
            .finish()
    }
}

/// Why a control message was not recorded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The outbox refused it (full under `WhenFull::Refuse`, too large, closed).
    #[error(transparent)]
    Append(#[from] AppendError),
    /// It was accepted but the write to disk failed.
    #[error(transparent)]
    Durable(#[from] DurableError),
}

impl ControlLane {
    pub(crate) fn new(outbox: Outbox) -> Self {
        Self { outbox }
    }

    /// Records `message` durably (returns once it is on disk); the control
    /// lane's forwarder publishes it, whatever the telemetry backlog. Returns its
    /// sequence in the control lane's own numbering.
    ///
    /// # Errors
    /// [`ControlError`]; the message is not recorded.
    pub async fn publish(&self, message: OutboundMessage) -> Result<Sequence, ControlError> {
        Ok(self.outbox.append(message).await?.durable().await?)
    }

    /// The control lane's outbox (backlog, counters).
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    pub(crate) fn into_outbox(self) -> Outbox {
        self.outbox
    }
}

/// Runs the control lane's forwarder until `cancel`. Its loss events (records
/// that could not be read back) go out as Protobuf `DataLoss` on the device's
/// `status` topic, not retained, so they never count against telemetry.
pub(crate) async fn run_forwarder<P: ConfirmedPublish + 'static>(
    outbox: Outbox,
    publisher: P,
    path: UnsPath,
    config: ForwarderConfig,
    cancel: CancellationToken,
) {
    let topic = path.status().to_string();
    let encode = move |l: &DataLoss| {
        metrics::counter!("iiot_gateway_control_loss_total").increment(l.count());
        OutboundMessage::new(topic.clone(), protobuf::encode_data_loss(l))
    };
    let (_status, forwarder) = Forwarder::new(outbox, publisher, encode, config);
    let exit = forwarder.run(cancel).await;
    tracing::info!(?exit, "control forwarder stopped");
}
