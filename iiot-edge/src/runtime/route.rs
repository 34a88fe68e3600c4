//! One transport's deliveries, split between the command executor and the OTA
//! agent.

use iiot_core::command::{Acknowledge, Delivery, Inbox};
use iiot_core::topic::UnsPath;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The deliveries of one class, as an [`Inbox`] of their own.
#[derive(Debug)]
pub struct RoutedInbox<A> {
    rx: mpsc::Receiver<Delivery<A>>,
}

impl<A: Acknowledge> Inbox for RoutedInbox<A> {
    type Ack = A;

    async fn recv(&mut self) -> Option<Delivery<A>> {
        self.rx.recv().await
    }
}

/// Splits one [`Inbox`] (the MQTT session's deliveries, subscribed to both
/// `commands/+` and `ota/notification` of the device) by topic: commands to
/// one inbox, manifests to the other. A delivery on any other topic, or for an
/// inbox nobody reads any more, is acknowledged and dropped with a warning (the
/// broker would otherwise deliver it again forever). Each inbox holds up to
/// `capacity` deliveries; when one is full the router waits (nothing is dropped).
/// Run it with [`super::GatewayBuilder::task`].
#[derive(Debug)]
pub struct InboxRouter<I: Inbox> {
    inbox: I,
    commands_prefix: String,
    ota_topic: String,
    commands: mpsc::Sender<Delivery<I::Ack>>,
    ota: mpsc::Sender<Delivery<I::Ack>>,
}

impl<I: Inbox> InboxRouter<I> {
    /// The router for the device at `path`, and its commands and OTA inboxes.
    pub fn new(
        inbox: I,
        path: &UnsPath,
        capacity: usize,
    ) -> (Self, RoutedInbox<I::Ack>, RoutedInbox<I::Ack>) {
        let (ctx, crx) = mpsc::channel(capacity.max(1));
        let (otx, orx) = mpsc::channel(capacity.max(1));
        (
            Self {
                inbox,
                commands_prefix: format!("{path}/commands/"),
                ota_topic: path.ota_notification().to_string(),
                commands: ctx,
                ota: otx,
            },
            RoutedInbox { rx: crx },
            RoutedInbox { rx: orx },
        )
    }

    /// Routes until `cancel` or the inbox ends.
    pub async fn run(mut self, cancel: CancellationToken) {
        loop {
            let d = tokio::select! {
                () = cancel.cancelled() => return,
                d = self.inbox.recv() => match d {
                    Some(d) => d,
                    None => return,
                },
            };
            let to = if d.topic.starts_with(&self.commands_prefix) {
                Some(&self.commands)
            } else if d.topic == self.ota_topic {
                Some(&self.ota)
            } else {
                None
            };
            let unrouted = match to {
                Some(tx) => tokio::select! {
                    () = cancel.cancelled() => return,
                    r = tx.send(d) => r.err().map(|e| e.0),
                },
                None => Some(d),
            };
            if let Some(d) = unrouted {
                tracing::warn!(topic = %d.topic, "inbox: a delivery nobody takes; acknowledged and dropped");
                if let Some(a) = d.ack {
                    a.ack().await;
                }
            }
        }
    }
}
