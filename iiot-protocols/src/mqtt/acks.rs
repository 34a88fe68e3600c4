//! Manual acknowledgement order: a state machine without I/O.
//!
//! Every QoS 1 (or 2) delivery of a connection gets a token with the
//! connection's generation and its delivery index. The application hands tokens
//! back in any order; a PUBACK is released only once every earlier delivery of
//! the same connection was acknowledged too (MQTT 3.1.1 4.6 and MQTT 5 4.6 ask
//! for acks in the order of the publishes), and a token of an earlier
//! connection releases nothing: its packet id may already name another message
//! on the new connection, and the broker redelivers the message anyway.

use std::collections::BTreeMap;

/// Hand this back to [`super::SessionHandle::ack`] once the message is safe
/// (committed, recorded). Cloning it does not make a second ack: acking the same
/// delivery twice releases one PUBACK.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AckToken {
    pub(crate) generation: u64,
    pub(crate) index: u64,
    pub(crate) pkid: u16,
    pub(crate) exactly_once: bool,
}

impl AckToken {
    /// The connection it was delivered on (1 for the first CONNACK of the session
    /// driver, counting up).
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// What acknowledging one token released.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Released {
    /// PUBACKs (or PUBRECs) to write now, in delivery order: `(pkid, exactly_once)`.
    pub(crate) ready: Vec<(u16, bool)>,
    /// The token belonged to an earlier connection.
    pub(crate) stale: bool,
}

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct AckOrder {
    /// Generation of the live connection; `None` while disconnected.
    live: Option<u64>,
    /// Deliveries handed out on the live connection.
    delivered: u64,
    /// Index of the next delivery whose ack goes out.
    next: u64,
    /// Acked, waiting for an earlier delivery's ack.
    waiting: BTreeMap<u64, (u16, bool)>,
}

impl AckOrder {
    /// A new connection: earlier tokens become stale.
    pub(crate) fn connected(&mut self, generation: u64) {
        *self = Self {
            live: Some(generation),
            ..Self::default()
        };
    }

    /// The connection dropped.
    pub(crate) fn disconnected(&mut self) {
        *self = Self::default();
    }

    /// A QoS 1/2 delivery on the live connection; `None` while disconnected
    /// (a delivery rumqttc decoded from a connection that has since failed).
    pub(crate) fn deliver(&mut self, pkid: u16, exactly_once: bool) -> Option<AckToken> {
        let generation = self.live?;
        let index = self.delivered;
        self.delivered += 1;
        Some(AckToken {
            generation,
            index,
            pkid,
            exactly_once,
        })
    }

    /// Deliveries whose ack has not gone out yet.
    #[cfg(test)]
    pub(crate) fn outstanding(&self) -> u64 {
        self.delivered - self.next
    }

    /// The application acknowledged `token`.
    pub(crate) fn ack(&mut self, token: &AckToken) -> Released {
        if self.live != Some(token.generation) || token.index >= self.delivered {
            return Released {
                ready: Vec::new(),
                stale: true,
            };
        }
        let mut out = Released::default();
        if token.index < self.next {
            return out; // acked before
        }
        self.waiting
            .insert(token.index, (token.pkid, token.exactly_once));
        while let Some(entry) = self.waiting.first_entry() {
            if *entry.key() != self.next {
                break;
            }
            out.ready.push(entry.remove());
            self.next += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn releases_in_delivery_order_only() {
        let mut o = AckOrder::default();
        o.connected(1);
        let t: Vec<AckToken> = (0..3).map(|i| o.deliver(10 + i, false).unwrap()).collect();
        assert!(o.ack(&t[2]).ready.is_empty());
        assert!(o.ack(&t[1]).ready.is_empty());
        assert_eq!(
            o.ack(&t[0]).ready,
            vec![(10, false), (11, false), (12, false)]
        );
        assert_eq!(o.outstanding(), 0);
        // A second ack of the same delivery releases nothing.
        assert_eq!(o.ack(&t[0]), Released::default());
    }

    #[test]
    fn tokens_of_an_earlier_connection_are_stale() {
        let mut o = AckOrder::default();
        o.connected(1);
        let old = o.deliver(5, false).unwrap();
        o.disconnected();
        assert!(o.deliver(6, false).is_none());
        assert!(o.ack(&old).stale);
        o.connected(2);
        let new = o.deliver(5, false).unwrap();
        let r = o.ack(&old);
        assert!(r.stale && r.ready.is_empty());
        assert_eq!(o.ack(&new).ready, vec![(5, false)]);
    }

    proptest! {
        /// Against a model: whatever the order of acks (with duplicates and stale
        /// tokens mixed in), the released acks are exactly a prefix of the
        /// deliveries of the live connection, in order, each once.
        #[test]
        fn released_is_the_acked_prefix(
            n in 1usize..40,
            order in proptest::collection::vec(0usize..60, 0..120),
        ) {
            let mut o = AckOrder::default();
            o.connected(1);
            let old = o.deliver(999, false).unwrap();
            o.connected(2);
            let tokens: Vec<AckToken> =
                (0..n).map(|i| o.deliver(i as u16, i % 7 == 0).unwrap()).collect();
            let mut acked = vec![false; n];
            let mut released: VecDeque<(u16, bool)> = VecDeque::new();
            for i in order {
                if i >= n {
                    prop_assert!(o.ack(&old).stale);
                    continue;
                }
                acked[i] = true;
                released.extend(o.ack(&tokens[i]).ready);
            }
            let prefix = acked.iter().take_while(|a| **a).count();
            let expected: Vec<(u16, bool)> =
                (0..prefix).map(|i| (i as u16, i % 7 == 0)).collect();
            prop_assert_eq!(Vec::from(released), expected);
            prop_assert_eq!(o.outstanding(), (n - prefix) as u64);
        }
    }
}
