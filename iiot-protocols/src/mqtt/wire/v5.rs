//! MQTT 5 on rumqttc's `v5` type tree. Every use of rumqttc internals for MQTT 5
//! is in this file: `EventLoop::pending`, `MqttState::events` and
//! `MqttState::collision`. rumqttc keeps the MQTT 5 network private, so manual
//! acks go through its request channel; the driver keeps polling while the
//! application is slow, and the Receive Maximum announced in CONNECT keeps the
//! broker from having more unacknowledged deliveries in flight than it holds.

use std::time::Duration;

use iiot_core::publish::{OutboundMessage, PublishRefusal, QoS};
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, Filter, LastWill, PubAck, PubAckReason, PubRec, Publish, PublishProperties,
    Subscribe, SubscribeReasonCode,
};
use rumqttc::v5::mqttbytes::{self, QoS as RQoS};
use rumqttc::v5::{
    AsyncClient, ConnectionError, Event as REvent, EventLoop, Incoming, MqttOptions, Request,
    StateError,
};
use rumqttc::{TlsConfiguration, Transport};

use super::{Error, Event, Granted, InPublish, Options, QueueError, Taken, Will, is_tls, secs};

pub(crate) struct Wire {
    eventloop: EventLoop,
    max_packet_size: usize,
}

fn qos(q: QoS) -> RQoS {
    match q {
        QoS::AtMostOnce => RQoS::AtMostOnce,
        _ => RQoS::AtLeastOnce,
    }
}

fn will(w: Will) -> LastWill {
    LastWill {
        topic: bytes::Bytes::copy_from_slice(w.topic.as_bytes()),
        message: w.payload,
        qos: RQoS::AtLeastOnce,
        retain: true,
        properties: None,
    }
}

fn expiry_secs(d: Duration) -> u32 {
    // Round up: a deadline of 0.5 s must not become "no expiry" (absent) or 0.
    u32::try_from(d.as_secs() + u64::from(d.subsec_nanos() > 0))
        .unwrap_or(u32::MAX)
        .max(1)
}

fn publish(m: &OutboundMessage) -> Publish {
    let properties = m.expiry.map(|e| PublishProperties {
        message_expiry_interval: Some(expiry_secs(e)),
        ..PublishProperties::default()
    });
    let mut p = Publish::new(m.topic.clone(), qos(m.qos), m.payload.clone(), properties);
    p.retain = m.retain;
    p
}

pub(super) fn build(o: &Options, last_will: Option<Will>) -> (AsyncClient, Wire) {
    let mut options = MqttOptions::new(o.client_id.clone(), o.host.clone(), o.port);
    let limit = u32::try_from(o.max_packet_size).unwrap_or(u32::MAX);
    options
        .set_keep_alive(Duration::from_secs(secs(o.keepalive)))
        .set_clean_start(o.clean)
        .set_session_expiry_interval(Some(match o.session_expiry {
            None => u32::MAX,
            Some(d) => u32::try_from(d.as_secs()).unwrap_or(u32::MAX),
        }))
        .set_outgoing_inflight_upper_limit(o.inflight)
        .set_manual_acks(o.manual_acks)
        .set_max_packet_size(Some(limit))
        .set_receive_maximum(Some(o.receive_maximum.max(1)))
        .set_connection_timeout(secs(o.connect_timeout));
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
    // Small packets, latency-bound: no Nagle delay (with the peer's delayed ACK it
    // held a publish or PUBACK back by up to 40 ms).
    let mut net = options.network_options();
    net.set_tcp_nodelay(true);
    options.set_network_options(net);
    let (client, eventloop) = AsyncClient::new(options, o.request_queue);
    (
        client,
        Wire {
            eventloop,
            max_packet_size: o.max_packet_size,
        },
    )
}

pub(super) fn try_publish(c: &AsyncClient, m: &OutboundMessage) -> Result<(), QueueError> {
    let p = publish(m);
    match p.properties {
        Some(props) => {
            c.try_publish_with_properties(m.topic.clone(), p.qos, p.retain, p.payload, props)
        }
        None => c.try_publish(m.topic.clone(), p.qos, p.retain, p.payload),
    }
    .map_err(|_| QueueError::Full)
}

pub(super) fn try_subscribe(c: &AsyncClient, filter: &str, q: QoS) -> Result<(), QueueError> {
    c.try_subscribe(filter.to_owned(), qos(q))
        .map_err(|_| QueueError::Full)
}

fn refusal(r: PubAckReason) -> Option<PublishRefusal> {
    match r {
        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => None,
        PubAckReason::UnspecifiedError => Some(PublishRefusal::Unspecified),
        PubAckReason::ImplementationSpecificError => Some(PublishRefusal::ImplementationSpecific),
        PubAckReason::NotAuthorized => Some(PublishRefusal::NotAuthorized),
        PubAckReason::TopicNameInvalid => Some(PublishRefusal::TopicNameInvalid),
        PubAckReason::PacketIdentifierInUse => Some(PublishRefusal::PacketIdInUse),
        PubAckReason::QuotaExceeded => Some(PublishRefusal::QuotaExceeded),
        PubAckReason::PayloadFormatInvalid => Some(PublishRefusal::PayloadFormatInvalid),
    }
}

fn granted(c: SubscribeReasonCode) -> Granted {
    match c {
        SubscribeReasonCode::Success(_) => Granted::Yes,
        SubscribeReasonCode::Failure | SubscribeReasonCode::Unspecified => Granted::No(0x80),
        SubscribeReasonCode::ImplementationSpecific => Granted::No(0x83),
        SubscribeReasonCode::NotAuthorized => Granted::No(0x87),
        SubscribeReasonCode::TopicFilterInvalid => Granted::No(0x8F),
        SubscribeReasonCode::PkidInUse => Granted::No(0x91),
        SubscribeReasonCode::QuotaExceeded => Granted::No(0x97),
        SubscribeReasonCode::SharedSubscriptionsNotSupported => Granted::No(0x9E),
        SubscribeReasonCode::SubscriptionIdNotSupported => Granted::No(0xA1),
        SubscribeReasonCode::WildcardSubscriptionsNotSupported => Granted::No(0xA2),
    }
}

fn event(e: REvent) -> Event {
    match e {
        REvent::Incoming(Incoming::ConnAck(c)) => Event::ConnAck {
            session_present: c.session_present,
            max_packet_size: c
                .properties
                .and_then(|p| p.max_packet_size)
                .map(|n| n as usize),
        },
        REvent::Incoming(Incoming::Publish(p)) => Event::Publish(InPublish {
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            payload: p.payload,
            qos: if p.qos == RQoS::AtMostOnce {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            exactly_once: p.qos == RQoS::ExactlyOnce,
            retain: p.retain,
            pkid: p.pkid,
        }),
        REvent::Incoming(Incoming::PubAck(PubAck { pkid, reason, .. })) => Event::PubAck {
            pkid,
            refusal: refusal(reason),
        },
        REvent::Incoming(Incoming::SubAck(s)) => Event::SubAck {
            pkid: s.pkid,
            granted: s.return_codes.into_iter().map(granted).collect(),
        },
        REvent::Outgoing(o) => super::outgoing(&o),
        REvent::Incoming(_) => Event::Other,
    }
}

fn refused_code(c: ConnectReturnCode) -> u8 {
    match c {
        ConnectReturnCode::Success => 0x00,
        ConnectReturnCode::RefusedProtocolVersion => 0x84,
        ConnectReturnCode::BadClientId => 0x85,
        ConnectReturnCode::ServiceUnavailable => 0x88,
        ConnectReturnCode::BadUserNamePassword => 0x86,
        ConnectReturnCode::NotAuthorized => 0x87,
        ConnectReturnCode::Banned => 0x8A,
        ConnectReturnCode::QuotaExceeded => 0x97,
        _ => 0x80,
    }
}

fn state_error(e: &StateError, limit: usize) -> Error {
    match e {
        StateError::Io(io) | StateError::Deserialization(mqttbytes::Error::Io(io)) => {
            if is_tls(io) {
                Error::Tls(io.to_string())
            } else {
                Error::Io {
                    kind: io.kind(),
                    detail: io.to_string(),
                }
            }
        }
        StateError::Deserialization(mqttbytes::Error::PayloadSizeLimitExceeded {
            pkt_size,
            ..
        })
        | StateError::IncomingPacketTooLarge { pkt_size, .. } => Error::TooLarge {
            size: *pkt_size,
            limit,
        },
        StateError::OutgoingPacketTooLarge { pkt_size, max } => Error::OutgoingTooLarge {
            size: *pkt_size as usize,
            limit: *max as usize,
        },
        StateError::ServerDisconnect {
            reason_code,
            reason_string,
        } => Error::ServerDisconnect {
            code: *reason_code as u8,
            reason: reason_string.clone(),
        },
        StateError::ConnFail { reason } => Error::Refused {
            code: refused_code(*reason),
            reason: format!("{reason:?}"),
        },
        StateError::ConnectionAborted => Error::Io {
            kind: std::io::ErrorKind::ConnectionAborted,
            detail: "connection closed by the broker".into(),
        },
        other => Error::Protocol(other.to_string()),
    }
}

fn error(e: &ConnectionError, limit: usize) -> Error {
    if is_tls(e) {
        return Error::Tls(e.to_string());
    }
    match e {
        ConnectionError::ConnectionRefused(code) => Error::Refused {
            code: refused_code(*code),
            reason: format!("{code:?}"),
        },
        ConnectionError::Tls(t) => Error::Tls(t.to_string()),
        ConnectionError::Io(io) => Error::Io {
            kind: io.kind(),
            detail: io.to_string(),
        },
        ConnectionError::MqttState(s) => state_error(s, limit),
        ConnectionError::Timeout(_) => Error::Timeout,
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
        self.eventloop
            .pending
            .push_back(Request::Publish(publish(m)));
    }

    pub(super) fn push_subscribe(&mut self, filters: &[(String, QoS)]) {
        let filters: Vec<Filter> = filters
            .iter()
            .map(|(f, q)| Filter::new(f.clone(), qos(*q)))
            .collect();
        self.eventloop
            .pending
            .push_back(Request::Subscribe(Subscribe::new_many(filters, None)));
    }

    pub(super) fn push_disconnect(&mut self) {
        self.eventloop.pending.push_back(Request::Disconnect);
    }

    pub(super) fn push_acks(&mut self, acks: &[(u16, bool)]) {
        for &(pkid, exactly_once) in acks {
            self.eventloop.pending.push_back(if exactly_once {
                Request::PubRec(PubRec::new(pkid, None))
            } else {
                Request::PubAck(PubAck::new(pkid, None))
            });
        }
    }

    pub(super) fn lost(&mut self) -> (Vec<Event>, Vec<Taken>) {
        let buffered = self.eventloop.state.events.drain(..).map(event).collect();
        let taken = std::mem::take(&mut self.eventloop.pending)
            .into_iter()
            .map(|r| match r {
                Request::Publish(p) => Taken::Publish { pkid: p.pkid },
                Request::Subscribe(_) => Taken::Subscribe,
                Request::Unsubscribe(_) | Request::Disconnect => Taken::Other,
                _ => Taken::Ignored,
            })
            .collect();
        let _ = self.eventloop.state.collision.take();
        (buffered, taken)
    }

    pub(super) fn set_will(&mut self, w: Will) {
        self.eventloop.options.set_last_will(will(w));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_rounds_up_and_never_zero() {
        assert_eq!(expiry_secs(Duration::from_millis(500)), 1);
        assert_eq!(expiry_secs(Duration::from_secs(30)), 30);
        assert_eq!(expiry_secs(Duration::from_millis(30_001)), 31);
        assert_eq!(expiry_secs(Duration::ZERO), 1);
        assert_eq!(expiry_secs(Duration::from_secs(u64::MAX)), u32::MAX);
    }

    #[test]
    fn puback_reasons_map_to_refusals() {
        assert_eq!(refusal(PubAckReason::Success), None);
        assert_eq!(refusal(PubAckReason::NoMatchingSubscribers), None);
        for (r, code) in [
            (PubAckReason::NotAuthorized, 0x87),
            (PubAckReason::QuotaExceeded, 0x97),
            (PubAckReason::TopicNameInvalid, 0x90),
            (PubAckReason::PayloadFormatInvalid, 0x99),
        ] {
            assert_eq!(refusal(r).map(PublishRefusal::code), Some(code));
        }
    }

    #[test]
    fn publish_carries_expiry_and_retain() {
        let m = OutboundMessage::new("a/b", b"x".to_vec())
            .with_retain(true)
            .with_expiry(Duration::from_secs(30));
        let p = publish(&m);
        assert!(p.retain);
        assert_eq!(
            p.properties.and_then(|p| p.message_expiry_interval),
            Some(30)
        );
        assert!(
            publish(&OutboundMessage::new("a/b", b"x".to_vec()))
                .properties
                .is_none()
        );
    }
}
