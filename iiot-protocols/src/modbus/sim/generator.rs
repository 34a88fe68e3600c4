//! Value generators for simulated tags.

use std::time::Duration;

use iiot_core::types::Value;

/// How a simulated tag's value changes over time.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Generator {
    /// Always this value.
    Constant(Value),
    /// From `start`, `step` per tick, wrapping from `max` back to `min`.
    Ramp {
        /// First value.
        start: f64,
        /// Added every tick.
        step: f64,
        /// Lower bound.
        min: f64,
        /// Upper bound.
        max: f64,
    },
    /// `offset + amplitude × sin(2π t / period)`.
    Sine {
        /// Amplitude.
        amplitude: f64,
        /// Period.
        period: Duration,
        /// Mid value.
        offset: f64,
    },
    /// Uniformly distributed in `min..=max` (a deterministic xorshift sequence from `seed`).
    Random {
        /// Lower bound.
        min: f64,
        /// Upper bound.
        max: f64,
        /// Seed; the same seed gives the same sequence.
        seed: u64,
    },
}

/// A generator with its running state.
#[derive(Debug, Clone)]
pub(crate) struct Running {
    pub(crate) generator: Generator,
    ticks: u64,
    elapsed: Duration,
    state: u64,
}

impl Running {
    pub(crate) fn new(generator: Generator) -> Self {
        let state = match &generator {
            Generator::Random { seed, .. } => (*seed).max(1),
            _ => 1,
        };
        Self {
            generator,
            ticks: 0,
            elapsed: Duration::ZERO,
            state,
        }
    }

    /// The current value.
    pub(crate) fn value(&self) -> Value {
        match &self.generator {
            Generator::Constant(v) => v.clone(),
            Generator::Ramp {
                start,
                step,
                min,
                max,
            } => {
                let span = max - min;
                let x = start + step * self.ticks as f64;
                if span > 0.0 {
                    Value::Double(min + (x - min).rem_euclid(span))
                } else {
                    Value::Double(*min)
                }
            }
            Generator::Sine {
                amplitude,
                period,
                offset,
            } => {
                let p = period.as_secs_f64().max(f64::MIN_POSITIVE);
                let phase = self.elapsed.as_secs_f64() / p * std::f64::consts::TAU;
                Value::Double(offset + amplitude * phase.sin())
            }
            Generator::Random { min, max, .. } => {
                let unit = (self.state >> 11) as f64 / (1u64 << 53) as f64;
                Value::Double(min + (max - min) * unit)
            }
        }
    }

    /// Advances by one tick of `dt`.
    pub(crate) fn tick(&mut self, dt: Duration) {
        self.ticks = self.ticks.wrapping_add(1);
        self.elapsed += dt;
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_wraps_and_random_stays_in_range() {
        let mut r = Running::new(Generator::Ramp {
            start: 0.0,
            step: 4.0,
            min: 0.0,
            max: 10.0,
        });
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(r.value().as_f64().unwrap());
            r.tick(Duration::from_millis(100));
        }
        assert_eq!(seen, vec![0.0, 4.0, 8.0, 2.0]);
        let mut r = Running::new(Generator::Random {
            min: -1.0,
            max: 1.0,
            seed: 7,
        });
        for _ in 0..1000 {
            let v = r.value().as_f64().unwrap();
            assert!((-1.0..=1.0).contains(&v));
            r.tick(Duration::from_millis(1));
        }
    }
}
