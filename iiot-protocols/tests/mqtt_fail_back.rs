//! An unconfirmed publish is never dropped silently (issue 5): against a scripted
//! broker on port 0 that accepts the connection but never sends PUBACK, the
//! caller gets `Timeout`, and when the connection is cut, `ConnectionLost`, each
//! time with its message back.

use std::time::Duration;

use iiot_core::publish::{ConfirmedPublish, OutboundMessage, PublishErrorKind};
use iiot_protocols::mqtt::{MqttConfig, MqttVersion, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(10);
const CONNACK: [u8; 4] = [0x20, 0x02, 0x00, 0x00];

/// Accepts one client, answers its CONNECT with CONNACK and returns the socket.
async fn accept(listener: &TcpListener) -> TcpStream {
    let (mut sock, _) = tokio::time::timeout(T, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(T, sock.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(n > 0 && buf[0] == 0x10, "expected CONNECT");
    sock.write_all(&CONNACK).await.unwrap();
    sock
}

/// Reads packets until a PUBLISH with `payload` went by; returns the packet ids
/// of the QoS 1 PUBLISHes read (minimal MQTT 3.1.1 framing).
async fn read_until_publish(sock: &mut TcpStream, payload: &[u8]) -> Vec<u16> {
    let mut pkids = Vec::new();
    tokio::time::timeout(T, async {
        loop {
            let header = sock.read_u8().await.unwrap();
            let mut len = 0usize;
            for shift in (0..4).map(|i| 7 * i) {
                let b = sock.read_u8().await.unwrap();
                len |= usize::from(b & 0x7f) << shift;
                if b & 0x80 == 0 {
                    break;
                }
            }
            let mut body = vec![0u8; len];
            sock.read_exact(&mut body).await.unwrap();
            if header >> 4 == 3 {
                let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
                let mut at = 2 + topic_len;
                if (header >> 1) & 0x03 > 0 {
                    pkids.push(u16::from_be_bytes([body[at], body[at + 1]]));
                    at += 2;
                }
                if &body[at..] == payload {
                    return;
                }
            }
        }
    })
    .await
    .expect("PUBLISH in time");
    pkids
}

#[tokio::test]
async fn timeout_and_connection_lost_give_the_message_back() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut config = MqttConfig::new(
        format!("mqtt://127.0.0.1:{port}"),
        "dev-fb",
        "iiot-test/site/area/line/gw/dev-fb",
    );
    // The scripted broker speaks MQTT 3.1.1 framing.
    config
        .set_protocol(MqttVersion::V311)
        .set_ack_timeout(Duration::from_millis(300))
        .set_shutdown_timeout(Duration::from_millis(200))
        .set_reconnect_backoff(Duration::from_millis(10), Duration::from_millis(50));
    let (handle, session, _inbound) = Session::new(&config).unwrap();
    let cancel = CancellationToken::new();
    let driver = tokio::spawn(session.run(cancel.clone()));

    let mut sock = accept(&listener).await;
    assert!(handle.wait_connected(T).await);
    let topic = "iiot-test/site/area/line/gw/dev-fb/telemetry";

    // No PUBACK: the trait call times out and returns the message.
    let err = handle
        .publish_confirmed(OutboundMessage::new(topic, b"first".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(err.kind, PublishErrorKind::Timeout);
    assert_eq!(err.message.payload.as_ref(), b"first");

    // Written, then the connection is cut before any PUBACK: ConnectionLost.
    let pending = handle
        .try_publish(OutboundMessage::new(topic, b"second".to_vec()))
        .unwrap();
    read_until_publish(&mut sock, b"second").await;
    drop(sock);
    let err = tokio::time::timeout(T, pending).await.unwrap().unwrap_err();
    assert_eq!(err.kind, PublishErrorKind::ConnectionLost);
    assert_eq!(err.message.payload.as_ref(), b"second");
    assert!(err.kind.is_retryable());

    // The session reconnects by itself; a publish acknowledged by the scripted
    // broker resolves.
    let mut sock = accept(&listener).await;
    assert!(handle.wait_connected(T).await);
    let third = handle
        .try_publish(OutboundMessage::new(topic, b"third".to_vec()))
        .unwrap();
    // The birth and "third" are QoS 1: acknowledge both.
    let pkids = read_until_publish(&mut sock, b"third").await;
    assert_eq!(pkids.len(), 2, "birth and third");
    for pkid in pkids {
        let [hi, lo] = pkid.to_be_bytes();
        sock.write_all(&[0x40, 0x02, hi, lo]).await.unwrap();
    }
    tokio::time::timeout(T, third).await.unwrap().unwrap();
    cancel.cancel();
    driver.await.unwrap();
}
