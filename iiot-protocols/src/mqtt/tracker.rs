//! Which caller waits for which packet: a state machine without I/O.
//!
//! rumqttc assigns packet ids inside its event loop and reports them only as
//! events (`Outgoing::Publish(pkid)` when a request is written, `Incoming::PubAck`
//! when it is confirmed). Requests reach the event loop from two ordered sources:
//! `pending` (owned by the driver, always served first) and the request channel
//! (fed by the handles). The tracker mirrors both as FIFOs of waiters, so each
//! outgoing event pairs with exactly one waiter.
//!
//! On a connection loss rumqttc moves every unacknowledged publish and every
//! request still in its channel into `pending`; the driver takes that list and
//! hands it here, and every waiter in it is failed with `ConnectionLost` (the
//! message is given back; the caller resends). rumqttc would otherwise silently
//! drop that list when the broker reports `session_present = false`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use iiot_core::publish::{OutboundMessage, PublishError, PublishErrorKind, PublishRefusal, QoS};
use tokio::sync::oneshot;

use super::error::{SubscribeError, SubscribeErrorKind};
use super::wire::{Granted, Taken};

/// Reply channel of one publish.
pub(crate) type PublishReply = oneshot::Sender<Result<(), PublishError>>;
/// Reply channel of one subscribe.
pub(crate) type SubscribeReply = oneshot::Sender<Result<(), SubscribeError>>;

/// A caller (or the session itself) waiting for one request.
#[derive(Debug)]
pub(crate) enum Waiter {
    Publish {
        message: OutboundMessage,
        reply: Option<PublishReply>,
        queued: Instant,
    },
    Subscribe {
        filters: Vec<String>,
        reply: Option<SubscribeReply>,
    },
    Disconnect,
}

impl Waiter {
    fn fail(self, kind: &PublishErrorKind, sub: &SubscribeErrorKind) {
        match self {
            Waiter::Publish {
                message,
                reply: Some(reply),
                ..
            } => {
                let _ = reply.send(Err(PublishError {
                    message,
                    kind: kind.clone(),
                }));
            }
            Waiter::Subscribe {
                filters,
                reply: Some(reply),
            } => {
                let _ = reply.send(Err(SubscribeError {
                    filter: filters.join(","),
                    kind: sub.clone(),
                }));
            }
            _ => {}
        }
    }
}

/// Counts of what one event resolved, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// A publish was confirmed after this long since it was queued.
    pub(crate) acked: Option<Duration>,
    /// Waiters failed back.
    pub(crate) failed: usize,
    /// A publish the broker refused (MQTT 5 PUBACK reason).
    pub(crate) refused: Option<PublishRefusal>,
    /// A request left the channel (room for a waiting publisher).
    pub(crate) from_channel: bool,
}

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    channel: VecDeque<Waiter>,
    pending: VecDeque<Waiter>,
    inflight: HashMap<u16, Waiter>,
    collision: Option<(u16, Waiter)>,
    subacks: HashMap<u16, Waiter>,
    /// Every filter subscribed, restored when the broker lost the session.
    pub(crate) subscriptions: BTreeMap<String, QoS>,
    /// Filters the broker refused, newest last (each named once).
    pub(crate) refused: Vec<SubscribeError>,
    /// A SUBSCRIBE was outstanding at a connection loss: restore even if the session is present.
    pub(crate) restore_needed: bool,
}

impl Tracker {
    /// A request was put in the rumqttc channel (under the same lock).
    pub(crate) fn queued_in_channel(&mut self, waiter: Waiter) {
        self.channel.push_back(waiter);
    }

    /// A request without packet id was put in `pending` by the driver.
    pub(crate) fn queued_in_pending(&mut self, waiter: Waiter) {
        self.pending.push_back(waiter);
    }

    /// Requests in the channel not yet written.
    #[cfg(test)]
    pub(crate) fn channel_len(&self) -> usize {
        self.channel.len()
    }

    /// Publishes written and not yet acknowledged.
    #[cfg(test)]
    pub(crate) fn inflight_len(&self) -> usize {
        self.inflight.len() + usize::from(self.collision.is_some())
    }

    fn next(&mut self, outcome: &mut Outcome) -> Option<Waiter> {
        if let Some(w) = self.pending.pop_front() {
            return Some(w);
        }
        let w = self.channel.pop_front();
        outcome.from_channel |= w.is_some();
        w
    }

    /// `Outgoing::Publish(pkid)`.
    pub(crate) fn outgoing_publish(&mut self, pkid: u16) -> Outcome {
        let mut out = Outcome::default();
        if pkid != 0 && self.inflight.contains_key(&pkid) {
            // A resend within the session: the waiter stays.
            return out;
        }
        if let Some((c, _)) = &self.collision
            && *c == pkid
            && let Some((_, w)) = self.collision.take()
        {
            self.inflight.insert(pkid, w);
            return out;
        }
        let Some(w) = self.next(&mut out) else {
            tracing::warn!(pkid, "publish event without a waiter");
            return out;
        };
        if pkid == 0 {
            // QoS 0: written is all the confirmation there is.
            if let Waiter::Publish {
                reply: Some(reply), ..
            } = w
            {
                let _ = reply.send(Ok(()));
            }
        } else {
            self.inflight.insert(pkid, w);
        }
        out
    }

    /// `Outgoing::AwaitAck(pkid)`: the next request collided with an unacknowledged id.
    pub(crate) fn await_ack(&mut self, pkid: u16) -> Outcome {
        let mut out = Outcome::default();
        if let Some(w) = self.next(&mut out)
            && let Some((_, old)) = self.collision.replace((pkid, w))
        {
            // rumqttc keeps one collision; it lost the older one.
            old.fail(
                &PublishErrorKind::ConnectionLost,
                &SubscribeErrorKind::ConnectionLost,
            );
            out.failed += 1;
        }
        out
    }

    /// `Incoming::PubAck(pkid)`, accepted (`refusal` = `None`) or refused.
    pub(crate) fn puback(
        &mut self,
        pkid: u16,
        refusal: Option<PublishRefusal>,
        now: Instant,
    ) -> Outcome {
        let mut out = Outcome::default();
        if let Some(Waiter::Publish {
            reply,
            queued,
            message,
        }) = self.inflight.remove(&pkid)
        {
            match refusal {
                None => {
                    out.acked = Some(now.saturating_duration_since(queued));
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(()));
                    }
                }
                Some(refusal) => {
                    out.refused = Some(refusal);
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(PublishError {
                            message,
                            kind: PublishErrorKind::Refused { refusal },
                        }));
                    }
                }
            }
        } else {
            tracing::warn!(pkid, "PUBACK without a waiter");
        }
        out
    }

    /// `Outgoing::Subscribe(pkid)` (also used for unsubscribe and disconnect, which
    /// consume one request each).
    pub(crate) fn outgoing_other(&mut self, pkid: Option<u16>) -> Outcome {
        let mut out = Outcome::default();
        if let Some(w) = self.next(&mut out)
            && let Some(pkid) = pkid
        {
            self.subacks.insert(pkid, w);
        }
        out
    }

    /// `Incoming::SubAck`.
    /// Returns how many filters were refused.
    pub(crate) fn suback(&mut self, pkid: u16, granted: &[Granted]) -> usize {
        let Some(Waiter::Subscribe { filters, reply }) = self.subacks.remove(&pkid) else {
            return 0;
        };
        let refused: Vec<SubscribeError> = filters
            .iter()
            .zip(granted)
            .filter_map(|(f, g)| match g {
                Granted::Yes => None,
                Granted::No(code) => Some(SubscribeError {
                    filter: f.clone(),
                    kind: SubscribeErrorKind::Refused { code: *code },
                }),
            })
            .collect();
        for e in &refused {
            tracing::error!(filter = %e.filter, error = %e.kind, "broker refused subscription");
            self.subscriptions.remove(e.filter.as_str());
            self.refused.retain(|r| r.filter != e.filter);
            self.refused.push(e.clone());
        }
        let n = refused.len();
        if let Some(reply) = reply {
            let result = match refused.into_iter().next() {
                None => Ok(()),
                Some(e) => Err(e),
            };
            let _ = reply.send(result);
        }
        n
    }

    /// The connection dropped. `taken` is what rumqttc had moved into `pending`
    /// (unacknowledged publishes with their ids, then unsent requests), in order;
    /// the publish rumqttc held back after a collision is the tracker's own
    /// `collision`. Every waiter is failed back.
    pub(crate) fn connection_lost(&mut self, taken: Vec<Taken>) -> Outcome {
        let mut out = Outcome::default();
        let lost = PublishErrorKind::ConnectionLost;
        let sub_lost = SubscribeErrorKind::ConnectionLost;
        let fail = |w: Waiter, out: &mut Outcome| {
            w.fail(&lost, &sub_lost);
            out.failed += 1;
        };
        for req in taken {
            let waiter = match req {
                Taken::Publish { pkid } if pkid != 0 => self.inflight.remove(&pkid),
                Taken::Subscribe => {
                    self.restore_needed = true;
                    self.next(&mut out)
                }
                Taken::Publish { .. } | Taken::Other => self.next(&mut out),
                Taken::Ignored => None,
            };
            if let Some(w) = waiter {
                fail(w, &mut out);
            }
        }
        if let Some((_, w)) = self.collision.take() {
            fail(w, &mut out);
        }
        // Whatever is left was written and never acknowledged (defensive: rumqttc
        // returns all of them above).
        for (_, w) in self.inflight.drain() {
            fail(w, &mut out);
        }
        for w in self.pending.drain(..) {
            fail(w, &mut out);
        }
        if !self.subacks.is_empty() {
            self.restore_needed = true;
        }
        for (_, w) in self.subacks.drain() {
            fail(w, &mut out);
        }
        out
    }

    /// The session is over: fail every waiter with `Closed`.
    pub(crate) fn close(&mut self) -> usize {
        let mut n = 0;
        let all = self
            .channel
            .drain(..)
            .chain(self.pending.drain(..))
            .chain(self.inflight.drain().map(|(_, w)| w))
            .chain(self.subacks.drain().map(|(_, w)| w))
            .chain(self.collision.take().map(|(_, w)| w));
        for w in all {
            w.fail(&PublishErrorKind::Closed, &SubscribeErrorKind::Closed);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(n: u8) -> (Waiter, oneshot::Receiver<Result<(), PublishError>>) {
        let (tx, rx) = oneshot::channel();
        (
            Waiter::Publish {
                message: OutboundMessage::new("t", vec![n]),
                reply: Some(tx),
                queued: Instant::now(),
            },
            rx,
        )
    }

    fn req(pkid: u16) -> Taken {
        Taken::Publish { pkid }
    }

    #[test]
    fn acks_pair_with_waiters_in_order() {
        let mut t = Tracker::default();
        let (w1, mut r1) = publish(1);
        let (w2, mut r2) = publish(2);
        t.queued_in_channel(w1);
        t.queued_in_channel(w2);
        assert!(t.outgoing_publish(1).from_channel);
        t.outgoing_publish(2);
        assert!(t.puback(2, None, Instant::now()).acked.is_some());
        assert!(r1.try_recv().is_err());
        assert!(r2.try_recv().unwrap().is_ok());
        t.puback(1, None, Instant::now());
        assert!(r1.try_recv().unwrap().is_ok());
        assert_eq!(t.inflight_len(), 0);
    }

    #[test]
    fn pending_is_served_before_channel() {
        let mut t = Tracker::default();
        let (w1, mut r1) = publish(1);
        let (w2, mut r2) = publish(2);
        t.queued_in_channel(w1);
        t.queued_in_pending(w2);
        assert!(!t.outgoing_publish(5).from_channel);
        t.puback(5, None, Instant::now());
        assert!(r2.try_recv().unwrap().is_ok());
        assert!(r1.try_recv().is_err());
    }

    #[test]
    fn collision_waits_for_ack_of_same_id() {
        let mut t = Tracker::default();
        let (w1, mut r1) = publish(1);
        let (w2, mut r2) = publish(2);
        t.queued_in_channel(w1);
        t.queued_in_channel(w2);
        t.outgoing_publish(1);
        t.await_ack(1);
        t.puback(1, None, Instant::now());
        assert!(r1.try_recv().unwrap().is_ok());
        t.outgoing_publish(1); // the collided publish is written now
        t.puback(1, None, Instant::now());
        assert!(r2.try_recv().unwrap().is_ok());
    }

    #[test]
    fn connection_loss_fails_back_written_and_drained_but_not_queued_later() {
        let mut t = Tracker::default();
        let (w1, mut r1) = publish(1);
        let (w2, mut r2) = publish(2);
        let (w3, mut r3) = publish(3);
        t.queued_in_channel(w1);
        t.queued_in_channel(w2);
        t.queued_in_channel(w3);
        t.outgoing_publish(1);
        // rumqttc drained w2 from its channel; w3 was queued after the drain.
        let out = t.connection_lost(vec![req(1), req(0)]);
        assert_eq!(out.failed, 2);
        let e1 = r1.try_recv().unwrap().unwrap_err();
        assert_eq!(e1.kind, PublishErrorKind::ConnectionLost);
        assert_eq!(e1.message.payload.as_ref(), [1]);
        assert_eq!(
            r2.try_recv().unwrap().unwrap_err().kind,
            PublishErrorKind::ConnectionLost
        );
        assert!(r3.try_recv().is_err());
        assert_eq!(t.channel_len(), 1);
        t.outgoing_publish(1);
        t.puback(1, None, Instant::now());
        assert!(r3.try_recv().unwrap().is_ok());
    }

    #[test]
    fn refused_puback_fails_back_with_the_reason_and_the_message() {
        let mut t = Tracker::default();
        let (w1, mut r1) = publish(7);
        t.queued_in_channel(w1);
        t.outgoing_publish(3);
        let out = t.puback(3, Some(PublishRefusal::NotAuthorized), Instant::now());
        assert_eq!(out.refused, Some(PublishRefusal::NotAuthorized));
        assert!(out.acked.is_none());
        let e = r1.try_recv().unwrap().unwrap_err();
        assert_eq!(
            e.kind,
            PublishErrorKind::Refused {
                refusal: PublishRefusal::NotAuthorized
            }
        );
        assert_eq!(e.message.payload.as_ref(), [7]);
        assert_eq!(t.inflight_len(), 0);
    }

    #[test]
    fn refused_filters_are_named_and_forgotten() {
        let mut t = Tracker::default();
        let (tx, mut rx) = oneshot::channel();
        t.subscriptions.insert("a/#".into(), QoS::AtLeastOnce);
        t.subscriptions.insert("b/#".into(), QoS::AtLeastOnce);
        t.queued_in_channel(Waiter::Subscribe {
            filters: vec!["a/#".into(), "b/#".into()],
            reply: Some(tx),
        });
        t.outgoing_other(Some(9));
        assert_eq!(t.suback(9, &[Granted::Yes, Granted::No(0x87)]), 1);
        let e = rx.try_recv().unwrap().unwrap_err();
        assert_eq!(e.filter, "b/#");
        assert_eq!(e.kind, SubscribeErrorKind::Refused { code: 0x87 });
        assert!(t.subscriptions.contains_key("a/#"));
        assert!(!t.subscriptions.contains_key("b/#"));
        assert_eq!(t.refused.len(), 1);
    }

    #[test]
    fn close_fails_everything() {
        let mut t = Tracker::default();
        let (w1, mut r1) = publish(1);
        t.queued_in_channel(w1);
        assert_eq!(t.close(), 1);
        assert_eq!(
            r1.try_recv().unwrap().unwrap_err().kind,
            PublishErrorKind::Closed
        );
    }
}
