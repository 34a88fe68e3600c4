//! Per-unit circuit breaker: a unit that keeps timing out is polled less, so it does not
//! eat the bus time of its neighbours. A state machine without I/O.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Circuit breaker settings.
///
/// ## Defaults
/// Opens after 3 consecutive timed-out requests, stays open 5 s, doubling after each
/// failed probe up to 60 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive requests (each after all retries) that timed out before the breaker opens.
    pub failures_to_open: u32,
    /// First open time (`open_for = "5s"`).
    #[serde(with = "iiot_core::duration::human")]
    pub open_for: Duration,
    /// Longest open time (`max_open_for = "60s"`).
    #[serde(with = "iiot_core::duration::human")]
    pub max_open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures_to_open: 3,
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant, backoff: Duration },
    HalfOpen { backoff: Duration },
}

/// What the breaker allows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Poll normally, with retries.
    Normal,
    /// One probe request, no retries.
    Probe,
    /// Do not poll; report the unit's tags as not communicating.
    Skip,
}

#[derive(Debug, Clone)]
pub(crate) struct Breaker {
    cfg: BreakerConfig,
    consecutive: u32,
    state: State,
}

impl Breaker {
    pub(crate) fn new(cfg: BreakerConfig) -> Self {
        Self {
            cfg,
            consecutive: 0,
            state: State::Closed,
        }
    }

    pub(crate) fn admit(&mut self, now: Instant) -> Admit {
        match self.state {
            State::Closed => Admit::Normal,
            State::Open { until, backoff } if now >= until => {
                self.state = State::HalfOpen { backoff };
                Admit::Probe
            }
            State::Open { .. } | State::HalfOpen { .. } => Admit::Skip,
        }
    }

    pub(crate) fn success(&mut self) {
        if self.state != State::Closed {
            tracing::info!("unit answers again; circuit closed");
        }
        self.consecutive = 0;
        self.state = State::Closed;
    }

    pub(crate) fn timeout(&mut self, now: Instant) {
        self.consecutive = self.consecutive.saturating_add(1);
        match self.state {
            State::HalfOpen { backoff } => {
                let backoff = (backoff * 2).min(self.cfg.max_open_for);
                self.state = State::Open {
                    until: now + backoff,
                    backoff,
                };
            }
            State::Closed if self.consecutive >= self.cfg.failures_to_open.max(1) => {
                tracing::warn!(
                    failures = self.consecutive,
                    "unit keeps timing out; circuit open"
                );
                self.state = State::Open {
                    until: now + self.cfg.open_for,
                    backoff: self.cfg.open_for,
                };
            }
            _ => {}
        }
    }

    #[cfg(test)]
    pub(crate) fn is_open(&self) -> bool {
        !matches!(self.state, State::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_probes_backs_off_and_closes() {
        let cfg = BreakerConfig::default();
        let mut b = Breaker::new(cfg);
        let t0 = Instant::now();
        for _ in 0..2 {
            assert_eq!(b.admit(t0), Admit::Normal);
            b.timeout(t0);
        }
        assert_eq!(b.admit(t0), Admit::Normal);
        b.timeout(t0);
        assert!(b.is_open());
        assert_eq!(b.admit(t0 + Duration::from_secs(4)), Admit::Skip);
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(b.admit(t1), Admit::Probe);
        assert_eq!(b.admit(t1), Admit::Skip);
        b.timeout(t1);
        assert_eq!(b.admit(t1 + Duration::from_secs(9)), Admit::Skip);
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(b.admit(t2), Admit::Probe);
        b.success();
        assert_eq!(b.admit(t2), Admit::Normal);
        assert!(!b.is_open());
    }
}
