//! Sustained confirmed QoS 1 publishes per second to the local Mosquitto
//! (`IIOT_MQTT_URL`, default `mqtt://127.0.0.1:1883`) with in-flight 1, 16 and
//! 100, in the same run as `mosquitto_pub -q 1 -l` sending the same lines (the C
//! client as the anchor). Each iteration sends 10 000 messages; criterion reports
//! elements per second. Without a reachable broker the bench prints why and
//! measures nothing.

#[path = "../tests/common/mqtt.rs"]
mod mqtt_common;

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use iiot_core::publish::OutboundMessage;
use iiot_protocols::mqtt::{MqttConfig, Session};
use tokio_util::sync::CancellationToken;

const N: usize = 10_000;

fn lines() -> Vec<String> {
    (0..N)
        .map(|i| format!("{{\"seq\":{i:08},\"tag\":\"line3/pump7/flow\",\"v\":12.5,\"q\":192}}"))
        .collect()
}

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
        config.set_inflight(NonZeroUsize::new(inflight).unwrap());
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
