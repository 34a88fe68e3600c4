//! Helpers shared by the gateway runtime tests.

use std::sync::{Arc, Mutex};

use iiot_core::publish::{ConfirmedPublish, OutboundMessage, PublishError};
use iiot_core::topic::UnsPath;
use iiot_core::types::DeviceId;

/// The test device's UNS path (device `dev-1`).
pub fn path() -> UnsPath {
    UnsPath::new(
        "acme",
        "p1",
        "a1",
        "l1",
        "plc",
        DeviceId::new("dev-1").unwrap(),
    )
    .unwrap()
}

/// A transport that confirms everything and keeps what it was given.
#[derive(Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Vec<OutboundMessage>>>);

impl ConfirmedPublish for Recorder {
    async fn publish_confirmed(&self, m: OutboundMessage) -> Result<(), PublishError> {
        self.0.lock().unwrap().push(m);
        Ok(())
    }
}
