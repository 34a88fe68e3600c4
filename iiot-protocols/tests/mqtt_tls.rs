//! mTLS against a Mosquitto process owned by the test (issue 5): the right client
//! connects; a client with a wrong CA, or without a certificate, is refused; a
//! certificate whose CN differs from the client id never leaves the gateway.

#[path = "common/mqtt.rs"]
mod mqtt_common;

use std::time::Duration;

use iiot_core::publish::{ConfirmedPublish, OutboundMessage};
use iiot_protocols::mqtt::{
    ConfigError, ConnectionState, DisconnectReason, IdentityProblem, MqttConfig, MqttVersion,
    Session,
};
use mqtt_common::{Pki, prefix, unique};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(10);

/// Runs a session until it is connected (true) or has failed `attempts` times (false).
async fn connects(config: &MqttConfig, attempts: u32) -> (bool, Option<DisconnectReason>) {
    let (handle, session, _inbound) = Session::new(config).unwrap();
    let cancel = CancellationToken::new();
    let driver = tokio::spawn(session.run(cancel.clone()));
    let mut state = handle.state();
    let seen = tokio::time::timeout(
        T,
        state.wait_for(|s| match s {
            ConnectionState::Connected { .. } => true,
            ConnectionState::Disconnected { attempt, .. } => *attempt >= attempts,
            _ => false,
        }),
    )
    .await
    .expect("state change in time")
    .unwrap()
    .clone();
    let result = match seen {
        ConnectionState::Connected { .. } => {
            // Prove the link works: a confirmed publish.
            let topic = format!("{}/telemetry", prefix(handle.client_id()));
            handle
                .publish_confirmed(OutboundMessage::new(topic, b"tls".to_vec()))
                .await
                .unwrap();
            (true, None)
        }
        ConnectionState::Disconnected { reason, .. } => (false, Some(reason)),
        other => panic!("{other:?}"),
    };
    cancel.cancel();
    driver.await.unwrap();
    result
}

#[tokio::test]
async fn mutual_tls_with_mosquitto_mqtt5() {
    mutual_tls_with_mosquitto(MqttVersion::V5).await;
}

#[tokio::test]
async fn mutual_tls_with_mosquitto_mqtt311() {
    mutual_tls_with_mosquitto(MqttVersion::V311).await;
}

async fn mutual_tls_with_mosquitto(version: MqttVersion) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let Some(broker) = pki.mtls_mosquitto(dir.path()) else {
        return;
    };
    let url = broker.url(true);
    let device = unique("tls");
    let fast = |c: &mut MqttConfig| {
        c.set_protocol(version)
            .set_reconnect_backoff(Duration::from_millis(20), Duration::from_millis(50));
    };

    // The right client.
    let (cert, key) = pki.client(&device, false);
    let mut good = MqttConfig::new(&url, &device, prefix(&device));
    good.set_ca_path(&pki.ca).set_client_identity(&cert, &key);
    fast(&mut good);
    assert_eq!(connects(&good, 1).await, (true, None));

    // A client that trusts another CA: the server certificate fails verification.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Pki::new(other_dir.path(), "other");
    let mut wrong_ca = good.clone();
    wrong_ca.set_ca_path(&other.ca);
    let (ok, reason) = connects(&wrong_ca, 2).await;
    assert!(!ok);
    assert_eq!(reason, Some(DisconnectReason::Tls));

    // A client without a certificate: the broker refuses the handshake.
    let mut anonymous = MqttConfig::new(&url, &device, prefix(&device));
    anonymous.set_ca_path(&pki.ca);
    fast(&mut anonymous);
    let (ok, reason) = connects(&anonymous, 2).await;
    assert!(!ok, "a client without certificate must be refused");
    assert!(
        matches!(
            reason,
            Some(DisconnectReason::Tls | DisconnectReason::Io { .. })
        ),
        "{reason:?}"
    );

    // A certificate issued by the right CA whose CN is not the client id: refused
    // before connecting.
    let (cert2, key2) = pki.client(&unique("someone-else"), false);
    let mut mismatch = good.clone();
    mismatch.set_client_identity(&cert2, &key2);
    match Session::new(&mismatch) {
        Err(ConfigError::Identity(e)) => {
            assert!(matches!(
                e.problem,
                IdentityProblem::CommonNameMismatch { .. }
            ));
        }
        other => panic!("{other:?}"),
    }
    drop(broker);
}
