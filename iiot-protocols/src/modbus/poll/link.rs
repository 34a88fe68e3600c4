//! The connection of a poller to its peer: one warning when it is lost, one when it
//! is back, the state published for the gateway runtime.

use iiot_core::source::Link;
use tokio::sync::watch;
use tokio::time::Instant;

/// Connection state of one poller, logged once per change.
#[derive(Debug)]
pub(super) struct LinkState {
    peer: String,
    /// Since when the peer is unreachable (`None`: up or not tried yet).
    down_since: Option<Instant>,
    tx: watch::Sender<Option<Link>>,
}

impl LinkState {
    pub(super) fn new(peer: String) -> (Self, watch::Receiver<Option<Link>>) {
        let (tx, rx) = watch::channel(None);
        (
            Self {
                peer,
                down_since: None,
                tx,
            },
            rx,
        )
    }

    /// A connection was made.
    pub(super) fn up(&mut self) {
        if let Some(since) = self.down_since.take() {
            tracing::warn!(
                peer = %self.peer,
                down_for = ?since.elapsed(),
                "connection to {} is back after {:.1?}",
                self.peer,
                since.elapsed()
            );
        } else {
            tracing::debug!(peer = %self.peer, "connected");
        }
        self.tx.send_if_modified(|s| {
            let changed = s.as_ref().is_none_or(|l| !l.is_up());
            *s = Some(Link::Up);
            changed
        });
    }

    /// Connecting failed or an established connection broke.
    pub(super) fn down(&mut self, cause: &std::io::Error) {
        if self.down_since.is_some() {
            tracing::debug!(peer = %self.peer, %cause, "still unreachable");
            return;
        }
        self.down_since = Some(Instant::now());
        let was_up = self.tx.borrow().as_ref().is_some_and(Link::is_up);
        let what = if was_up {
            "lost the connection to"
        } else {
            "cannot connect to"
        };
        tracing::warn!(
            peer = %self.peer, %cause,
            "{what} {}: {cause}; its tags read Bad until it answers (retrying every poll)",
            self.peer
        );
        self.tx.send_replace(Some(Link::Down {
            cause: cause.to_string(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One change (and so one warning) per outage and one per recovery, however
    /// many attempts fail in between.
    #[tokio::test]
    async fn one_change_per_outage() {
        let (mut link, mut rx) = LinkState::new("Modbus TCP 127.0.0.1:1".into());
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        link.down(&refused);
        assert!(rx.has_changed().unwrap());
        assert!(matches!(&*rx.borrow_and_update(), Some(Link::Down { .. })));
        for _ in 0..5 {
            link.down(&refused);
        }
        assert!(
            !rx.has_changed().unwrap(),
            "repeated failures are one outage"
        );
        link.up();
        assert_eq!(*rx.borrow_and_update(), Some(Link::Up));
        link.up();
        assert!(!rx.has_changed().unwrap());
        link.down(&refused);
        assert!(rx.has_changed().unwrap(), "a new outage is a new change");
    }
}
