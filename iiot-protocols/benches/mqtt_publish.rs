//! Sustained confirmed QoS 1 publishes per second to the local Mosquitto
//! (`IIOT_MQTT_URL`, default `mqtt://127.0.0.1:1883`) with in-flight 1, 16 and
//! 100, in the same run as `mosquitto_pub -q 1 -l` sending the same lines (the C
//! client as the anchor) and bare rumqttc (the client the session wraps, same
//! protocol version and in-flight window, counting PUBACKs on its event loop).
//! Each iteration sends 10 000 messages; criterion reports elements per second.
//! `IIOT_BENCH_MQTT` picks the protocol version: `5` (default) or `3.1.1`.
//! Without a reachable broker the bench prints why and measures nothing.

#[path = "../tests/common/mqtt.rs"]
mod mqtt_common;

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use iiot_core::publish::OutboundMessage;
use iiot_protocols::mqtt::{MqttConfig, MqttVersion, Session};
use tokio_util::sync::CancellationToken;

const N: usize = 10_000;

fn lines() -> Vec<String> {
    (0..N)
        .map(|i| format!("{{\"seq\":{i:08},\"tag\":\"line3/pump7/flow\",\"v\":12.5,\"q\":192}}"))
        .collect()
}

fn protocol() -> MqttVersion {
    match std::env::var("IIOT_BENCH_MQTT").as_deref() {
        Ok("3.1.1" | "4" | "v4") => MqttVersion::V311,
        _ => MqttVersion::V5,
    }
}

/// Bare rumqttc on one of its two type trees: connects, then times `payloads`
/// QoS 1 publishes until the last PUBACK, with rumqttc's own in-flight window.
macro_rules! bare {
    ($name:ident, $tree:path, $inflight:ident, $max:expr) => {
        async fn $name(
            host: &str,
            port: u16,
            topic: &str,
            payloads: &[bytes::Bytes],
            inflight: u16,
        ) -> Duration {
            use $tree as t;
            let mut o = t::MqttOptions::new(mqtt_common::unique("bare"), host, port);
            o.$inflight(inflight)
                .set_keep_alive(Duration::from_secs(30));
            $max(&mut o);
            let (client, mut ev) = t::AsyncClient::new(o, 1000);
            while !matches!(
                ev.poll().await.unwrap(),
                t::Event::Incoming(t::Packet::ConnAck(_))
            ) {}
            let start = Instant::now();
            let (topic, payloads) = (topic.to_owned(), payloads.to_vec());
            let total = payloads.len();
            let sender = tokio::spawn(async move {
                for p in payloads {
                    client
                        .publish_bytes(topic.clone(), t::QoS::AtLeastOnce, false, p)
                        .await
                        .unwrap();
                }
                client
            });
            let mut acked = 0;
            while acked < total {
                if let t::Event::Incoming(t::Packet::PubAck(_)) = ev.poll().await.unwrap() {
                    acked += 1;
                }
            }
            let elapsed = start.elapsed();
            let _ = sender.await.unwrap().disconnect().await;
            elapsed
        }
    };
}

/// rumqttc's 3.1.1 names, in one place for the macro.
mod v4_tree {
    pub(crate) use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
}

/// rumqttc's MQTT 5 names, in one place for the macro.
mod v5_tree {
    pub(crate) use rumqttc::v5::mqttbytes::QoS;
    pub(crate) use rumqttc::v5::mqttbytes::v5::Packet;
    pub(crate) use rumqttc::v5::{AsyncClient, Event, MqttOptions};
}

bare!(
    bare_v4,
    v4_tree,
    set_inflight,
    |o: &mut rumqttc::MqttOptions| {
        o.set_max_packet_size(1 << 20, 1 << 20);
    }
);
bare!(
    bare_v5,
    v5_tree,
    set_outgoing_inflight_upper_limit,
    |o: &mut rumqttc::v5::MqttOptions| {
        o.set_max_packet_size(Some(1 << 20));
    }
);

fn bench(c: &mut Criterion) {
    let Some((host, port)) = mqtt_common::shared_mosquitto() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let payloads: Vec<bytes::Bytes> = lines().into_iter().map(bytes::Bytes::from).collect();
    let device = mqtt_common::unique("bench");
    let topic = format!("{}/telemetry", mqtt_common::prefix(&device));

    let mut group = c.benchmark_group("mqtt_confirmed_qos1_10k");
    group
        .throughput(Throughput::Elements(N as u64))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));

    for inflight in [1usize, 16, 100] {
        let mut config = MqttConfig::new(
            format!("mqtt://{host}:{port}"),
            device.clone(),
            mqtt_common::prefix(&device),
        );
        config
            .set_inflight(NonZeroUsize::new(inflight).unwrap())
            .set_protocol(protocol());
        let (handle, session, _inbound) = Session::new(&config).unwrap();
        let cancel = CancellationToken::new();
        let driver = rt.spawn(session.run(cancel.clone()));
        assert!(rt.block_on(handle.wait_connected(Duration::from_secs(10))));
        group.bench_function(BenchmarkId::new("iiot_session", inflight), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let mut open = VecDeque::with_capacity(inflight);
                        for p in &payloads {
                            let msg = OutboundMessage::new(topic.clone(), p.clone());
                            open.push_back(handle.publish(msg).await.unwrap());
                            if open.len() >= inflight {
                                open.pop_front().unwrap().await.unwrap();
                            }
                        }
                        for c in open {
                            c.await.unwrap();
                        }
                    }
                    start.elapsed()
                })
            });
        });
        cancel.cancel();
        rt.block_on(driver).unwrap();
    }

    for inflight in [1u16, 16, 100] {
        group.bench_function(BenchmarkId::new("rumqttc_bare", inflight), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += match protocol() {
                            MqttVersion::V311 => {
                                bare_v4(&host, port, &topic, &payloads, inflight).await
                            }
                            _ => bare_v5(&host, port, &topic, &payloads, inflight).await,
                        };
                    }
                    total
                })
            });
        });
    }

    let text = lines();
    group.bench_function("mosquitto_pub_-q1_-l", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| mqtt_common::mosquitto_pub_lines(port, &topic, &text))
                .sum()
        });
    });
    group.finish();
    rt.block_on(mqtt_common::clear_retained(
        &host,
        port,
        &format!("{}/status", mqtt_common::prefix(&device)),
    ));
}

// The macro generates an undocumented public function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench);
}
use group::benches;
criterion_main!(benches);
