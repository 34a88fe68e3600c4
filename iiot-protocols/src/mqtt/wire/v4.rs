//! MQTT 3.1.1 on rumqttc's root type tree. Every use of rumqttc internals for
//! 3.1.1 is in this file: `EventLoop::pending`, `EventLoop::network`,
//! `MqttState::events` and `MqttState::collision`.

use std::time::Duration;

use iiot_core::publish::{OutboundMessage, QoS};
use rumqttc::{
    AsyncClient, ConnectionError, Event as REvent, EventLoop, LastWill, MqttOptions, Packet,
    PubAck, PubRec, Publish, Request, StateError, SubscribeFilter, SubscribeReasonCode,
    TlsConfiguration, Transport,
};

use super::{Error, Event, Granted, InPublish, Options, QueueError, Taken, Will, is_tls, secs};

pub(crate) struct Wire {
    eventloop: EventLoop,
    network_timeout: Duration,
    max_packet_size: usize,
}

fn qos(q: QoS) -> rumqttc::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
        _ => rumqttc::QoS::AtLeastOnce,
    }
}

fn will(w: Will) -> LastWill {
    LastWill {
        topic: w.topic,
        message: w.payload,
        qos: rumqttc::QoS::AtLeastOnce,
        retain: true,
    }
}

pub(super) fn build(o: &Options, last_will: Option<Will>) -> (AsyncClient, Wire) {
    let mut options = MqttOptions::new(o.client_id.clone(), o.host.clone(), o.port);
    options
        .set_keep_alive(Duration::from_secs(secs(o.keepalive)))
        .set_clean_session(o.clean)
        .set_inflight(o.inflight)
        .set_manual_acks(o.manual_acks)
        .set_max_packet_size(o.max_packet_size, o.max_packet_size);
    if let Some((user, password)) = &o.credentials {
        options.set_credentials(user.clone(), password.clone());
    }
    if let Some(tls) = &o.tls {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            tls.clone(),
        )));
    }
    if let Some(w) = last_will {
        options.set_last_will(will(w));
    }
    let (client, mut eventloop) = AsyncClient::new(options, o.request_queue);
    let mut net = eventloop.network_options();
    net.set_connection_timeout(secs(o.connect_timeout));
    // Small packets, latency-bound: no Nagle delay (see v5.rs).
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    (
        client,
        Wire {
            eventloop,
            network_timeout: o.connect_timeout.max(Duration::from_secs(1)),
            max_packet_size: o.max_packet_size,
        },
    )
}

pub(super) fn try_publish(c: &AsyncClient, m: &OutboundMessage) -> Result<(), QueueError> {
    c.try_publish(m.topic.clone(), qos(m.qos), m.retain, m.payload.clone())
        .map_err(|_| QueueError::Full)
}

pub(super) fn try_subscribe(c: &AsyncClient, filter: &str, q: QoS) -> Result<(), QueueError> {
    c.try_subscribe(filter.to_owned(), qos(q))
        .map_err(|_| QueueError::Full)
}

fn event(e: REvent) -> Event {
    match e {
        REvent::Incoming(Packet::ConnAck(c)) => Event::ConnAck {
            session_present: c.session_present,
            max_packet_size: None,
        },
        REvent::Incoming(Packet::Publish(p)) => Event::Publish(InPublish {
            topic: p.topic,
            payload: p.payload,
            qos: if p.qos == rumqttc::QoS::AtMostOnce {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            exactly_once: p.qos == rumqttc::QoS::ExactlyOnce,
            retain: p.retain,
            pkid: p.pkid,
        }),
        // 3.1.1 has no PUBACK reason: a PUBACK is always "accepted".
        REvent::Incoming(Packet::PubAck(a)) => Event::PubAck {
            pkid: a.pkid,
            refusal: None,
        },
        REvent::Incoming(Packet::SubAck(s)) => Event::SubAck {
            pkid: s.pkid,
            granted: s
                .return_codes
                .iter()
                .map(|c| match c {
                    SubscribeReasonCode::Success(_) => Granted::Yes,
                    SubscribeReasonCode::Failure => Granted::No(0x80),
                })
                .collect(),
        },
        REvent::Outgoing(o) => super::outgoing(&o),
        REvent::Incoming(_) => Event::Other,
    }
}

fn error(e: &ConnectionError, limit: usize) -> Error {
    if is_tls(e) {
        return Error::Tls(e.to_string());
    }
    match e {
        ConnectionError::ConnectionRefused(code) => Error::Refused {
            code: *code as u8,
            reason: format!("{code:?}"),
        },
        ConnectionError::Tls(t) => Error::Tls(t.to_string()),
        ConnectionError::Io(io) | ConnectionError::MqttState(StateError::Io(io)) => Error::Io {
            kind: io.kind(),
            detail: io.to_string(),
        },
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(size),
        )) => Error::TooLarge { size: *size, limit },
        ConnectionError::MqttState(StateError::ConnectionAborted) => Error::Io {
            kind: std::io::ErrorKind::ConnectionAborted,
            detail: "connection closed by the broker".into(),
        },
        ConnectionError::NetworkTimeout | ConnectionError::FlushTimeout => Error::Timeout,
        other => Error::Protocol(other.to_string()),
    }
}

impl Wire {
    pub(super) async fn poll(&mut self) -> Result<Event, Error> {
        self.eventloop
            .poll()
            .await
            .map(event)
            .map_err(|e| error(&e, self.max_packet_size))
    }

    pub(super) fn push_publish(&mut self, m: &OutboundMessage) {
        let mut p = Publish::from_bytes(m.topic.clone(), qos(m.qos), m.payload.clone());
        p.retain = m.retain;
        self.eventloop.pending.push_back(Request::Publish(p));
    }

    pub(super) fn push_subscribe(&mut self, filters: &[(String, QoS)]) {
        let filters: Vec<SubscribeFilter> = filters
            .iter()
            .map(|(f, q)| SubscribeFilter::new(f.clone(), qos(*q)))
            .collect();
        self.eventloop
            .pending
            .push_back(Request::Subscribe(rumqttc::Subscribe::new_many(filters)));
    }

    pub(super) fn push_disconnect(&mut self) {
        self.eventloop
            .pending
            .push_back(Request::Disconnect(rumqttc::Disconnect));
    }

    pub(super) fn lost(&mut self) -> (Vec<Event>, Vec<Taken>) {
        let buffered = self.eventloop.state.events.drain(..).map(event).collect();
        let taken = std::mem::take(&mut self.eventloop.pending)
            .into_iter()
            .map(|r| match r {
                Request::Publish(p) => Taken::Publish { pkid: p.pkid },
                Request::Subscribe(_) => Taken::Subscribe,
                Request::Unsubscribe(_) | Request::Disconnect(_) => Taken::Other,
                _ => Taken::Ignored,
            })
            .collect();
        let _ = self.eventloop.state.collision.take();
        (buffered, taken)
    }

    pub(super) fn set_will(&mut self, w: Will) {
        self.eventloop.mqtt_options.set_last_will(will(w));
    }

    pub(super) async fn write_acks(&mut self, acks: &[(u16, bool)]) -> Result<(), Error> {
        let limit = self.max_packet_size;
        let Some(network) = self.eventloop.network.as_mut() else {
            return Ok(());
        };
        let io = |e: StateError| error(&ConnectionError::MqttState(e), limit);
        for &(pkid, exactly_once) in acks {
            let packet = if exactly_once {
                Packet::PubRec(PubRec::new(pkid))
            } else {
                Packet::PubAck(PubAck::new(pkid))
            };
            network.write(packet).await.map_err(io)?;
        }
        tokio::time::timeout(self.network_timeout, network.flush())
            .await
            .map_err(|_| Error::Timeout)?
            .map_err(io)
    }

    pub(super) fn drop_connection(&mut self) {
        if self.eventloop.network.is_some() {
            self.eventloop.clean();
        }
    }
}
