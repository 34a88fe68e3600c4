//! The simulated plant: a tank filled at a noisy rate and emptied by a pump with
//! hysteresis, with a slowly swinging temperature. No I/O: [`Plant::step`] advances
//! the model and returns the tag values to put into the PLC's registers.

use std::time::Duration;

use iiot_core::types::Value;
use serde::{Deserialize, Serialize};

/// Tag of the tank level (m, f32).
pub const TAG_LEVEL: &str = "tank1/level";
/// Tag of the tank temperature (degC).
pub const TAG_TEMPERATURE: &str = "tank1/temperature";
/// Tag of the pump state (coil).
pub const TAG_PUMP: &str = "pump1/running";
/// Tag of the pump flow (m3/h, f32 in CDAB order).
pub const TAG_FLOW: &str = "pump1/flow";
/// Tag of the pumped volume (litres, u32 in CDAB order).
pub const TAG_TOTAL: &str = "pump1/total";
/// Every tag the plant drives; the register map must define them all.
pub const TAGS: [&str; 5] = [TAG_LEVEL, TAG_TEMPERATURE, TAG_PUMP, TAG_FLOW, TAG_TOTAL];

/// Plant parameters (`[plant]` in plc.toml).
///
/// ## Defaults
/// Tick 100 ms, seed 7, a 2 m² × 5 m tank, 6 m³/h inflow, a 14 m³/h pump starting at
/// 4 m and stopping at 1 m, 20 ± 3 °C over 120 s, 2 % noise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlantConfig {
    /// Model step and register update interval (`tick = "100ms"`, more than 0s).
    #[serde(with = "iiot_core::duration::human")]
    pub tick: Duration,
    /// Noise seed.
    pub seed: u64,
    /// Tank cross-section, m² (> 0).
    pub tank_area_m2: f64,
    /// Tank height, m (> 0).
    pub tank_height_m: f64,
    /// Mean inflow, m³/h (≥ 0).
    pub inflow_m3h: f64,
    /// Outflow while the pump runs, m³/h (≥ 0).
    pub pump_capacity_m3h: f64,
    /// The pump starts at or above this level, m.
    pub pump_start_level_m: f64,
    /// The pump stops at or below this level, m (below the start level).
    pub pump_stop_level_m: f64,
    /// Mean temperature, °C.
    pub temperature_mean_c: f64,
    /// Amplitude of the temperature swing, °C.
    pub temperature_swing_c: f64,
    /// Period of the temperature swing, s (> 0).
    pub temperature_period_s: f64,
    /// Measurement noise in percent of the value (0..=50).
    pub noise_percent: f64,
}

impl Default for PlantConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(100),
            seed: 7,
            tank_area_m2: 2.0,
            tank_height_m: 5.0,
            inflow_m3h: 6.0,
            pump_capacity_m3h: 14.0,
            pump_start_level_m: 4.0,
            pump_stop_level_m: 1.0,
            temperature_mean_c: 20.0,
            temperature_swing_c: 3.0,
            temperature_period_s: 120.0,
            noise_percent: 2.0,
        }
    }
}

impl PlantConfig {
    /// Checks the parameters.
    ///
    /// # Errors
    /// The first broken rule as `(key, problem)`, keys relative to `[plant]`.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let positive = [
            ("tick", self.tick.as_secs_f64()),
            ("tank_area_m2", self.tank_area_m2),
            ("tank_height_m", self.tank_height_m),
            ("temperature_period_s", self.temperature_period_s),
        ];
        for (key, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err((key, format!("must be greater than 0, got {v}")));
            }
        }
        for (key, v) in [
            ("inflow_m3h", self.inflow_m3h),
            ("pump_capacity_m3h", self.pump_capacity_m3h),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err((key, format!("must be 0 or more, got {v}")));
            }
        }
        if !(0.0..=50.0).contains(&self.noise_percent) {
            return Err((
                "noise_percent",
                format!("must be within 0..=50, got {}", self.noise_percent),
            ));
        }
        if !(self.pump_stop_level_m < self.pump_start_level_m
            && self.pump_start_level_m <= self.tank_height_m
            && self.pump_stop_level_m >= 0.0)
        {
            return Err((
                "pump_stop_level_m",
                format!(
                    "need 0 <= pump_stop_level_m ({}) < pump_start_level_m ({}) <= tank_height_m ({})",
                    self.pump_stop_level_m, self.pump_start_level_m, self.tank_height_m
                ),
            ));
        }
        Ok(())
    }

    /// The model step (at least 1 ms).
    pub fn tick(&self) -> Duration {
        self.tick.max(Duration::from_millis(1))
    }
}

/// The plant's state.
#[derive(Debug, Clone)]
pub struct Plant {
    cfg: PlantConfig,
    level_m: f64,
    pump_on: bool,
    pumped_l: f64,
    elapsed: Duration,
    rng: u64,
}

impl Plant {
    /// A plant half full, pump off.
    pub fn new(cfg: PlantConfig) -> Self {
        let level_m = f64::midpoint(cfg.pump_start_level_m, cfg.pump_stop_level_m);
        let rng = cfg.seed.max(1);
        Self {
            cfg,
            level_m,
            pump_on: false,
            pumped_l: 0.0,
            elapsed: Duration::ZERO,
            rng,
        }
    }

    /// A uniformly distributed number in -1..1 (xorshift64).
    fn noise(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        let unit = (x >> 11) as f64 / (1u64 << 53) as f64;
        unit * 2.0 - 1.0
    }

    fn noisy(&mut self, v: f64) -> f64 {
        v * (1.0 + self.noise() * self.cfg.noise_percent / 100.0)
    }

    /// Advances the model by `dt` and returns every tag's new value.
    pub fn step(&mut self, dt: Duration) -> [(&'static str, Value); 5] {
        let hours = dt.as_secs_f64() / 3600.0;
        let inflow = self.noisy(self.cfg.inflow_m3h).max(0.0);
        let outflow = if self.pump_on {
            self.noisy(self.cfg.pump_capacity_m3h).max(0.0)
        } else {
            0.0
        };
        let dv = (inflow - outflow) * hours;
        self.level_m =
            (self.level_m + dv / self.cfg.tank_area_m2).clamp(0.0, self.cfg.tank_height_m);
        if self.level_m >= self.cfg.pump_start_level_m {
            self.pump_on = true;
        } else if self.level_m <= self.cfg.pump_stop_level_m {
            self.pump_on = false;
        }
        self.pumped_l += outflow * hours * 1000.0;
        self.elapsed += dt;
        let phase =
            self.elapsed.as_secs_f64() / self.cfg.temperature_period_s * std::f64::consts::TAU;
        let temperature = self.cfg.temperature_mean_c
            + self.cfg.temperature_swing_c * phase.sin()
            + self.noise() * 0.05;
        let level = self.noisy(self.level_m).max(0.0);
        // The u32 register pair wraps like a real totaliser.
        let total = (self.pumped_l as u64 % (u64::from(u32::MAX) + 1)) as u32;
        [
            (TAG_LEVEL, Value::Double(level)),
            (TAG_TEMPERATURE, Value::Double(temperature)),
            (TAG_PUMP, Value::Bool(self.pump_on)),
            (TAG_FLOW, Value::Double(outflow)),
            (TAG_TOTAL, Value::UInt(u64::from(total))),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pump_cycles_with_hysteresis_and_level_stays_in_tank() {
        let cfg = PlantConfig {
            inflow_m3h: 600.0,
            pump_capacity_m3h: 1400.0,
            ..PlantConfig::default()
        };
        cfg.check().unwrap();
        let mut p = Plant::new(cfg);
        let (mut starts, mut was_on) = (0, false);
        for _ in 0..2000 {
            let values = p.step(Duration::from_millis(100));
            let on = matches!(values[2].1, Value::Bool(true));
            if on && !was_on {
                starts += 1;
            }
            was_on = on;
            let level = values[0].1.as_f64().unwrap();
            assert!((0.0..=5.2).contains(&level), "{level}");
        }
        assert!(starts >= 2, "pump started {starts} times");
    }

    #[test]
    fn bad_levels_are_named() {
        let cfg = PlantConfig {
            pump_stop_level_m: 4.5,
            ..PlantConfig::default()
        };
        assert_eq!(cfg.check().unwrap_err().0, "pump_stop_level_m");
    }
}
