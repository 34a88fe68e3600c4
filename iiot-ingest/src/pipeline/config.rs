//! Pipeline configuration.

use std::num::NonZeroUsize;
use std::time::Duration;

use iiot_core::codec::Limits;
use serde::{Deserialize, Serialize};

/// How the pipeline batches, bounds memory, dedupes and retries.
///
/// ## Defaults
///
/// | field | default | what |
/// |---|---|---|
/// | `batch_max_rows` | 5 000 | commit once the batch holds this many samples |
/// | `batch_max_delay` | 200 ms | commit at the latest this long after the batch's first message (a batch holding a command ack commits at once) |
/// | `idle_flush` | 10 ms | commit early when no message arrived for this long (a broker that limits un-acked messages in flight waits for our acks) |
/// | `max_in_flight` | 1 000 | deliveries held un-acked; at the limit the pipeline stops pulling (back-pressure) |
/// | `dedupe_window` | 10 min | how long a `(device_id, message_id)` is remembered in memory |
/// | `dedupe_capacity` | 200 000 | most keys remembered |
/// | `max_open_gaps_per_device` | 1 000 | open gaps tracked in memory per device |
/// | `retry_initial` | 100 ms | first back-off after a transient sink error |
/// | `retry_max` | 10 s | back-off cap |
/// | `command_grace` | 30 s | how long after a command's `expires_at` its final ack may still arrive before the command is marked `expired_unconfirmed` |
/// | `command_sweep_interval` | 10 s | how often the pipeline asks the sink to mark overdue commands ([`Sink::expire_unconfirmed_commands`](crate::sink::Sink::expire_unconfirmed_commands)); `"0s"` never |
/// | `limits` | [`Limits::default`] | limits for untrusted payloads |
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Commit once the batch holds this many samples.
    pub batch_max_rows: NonZeroUsize,
    /// Commit at the latest this long after the batch's first message.
    #[serde(with = "iiot_core::duration::human")]
    pub batch_max_delay: Duration,
    /// Commit early when the source has been idle this long.
    #[serde(with = "iiot_core::duration::human")]
    pub idle_flush: Duration,
    /// Deliveries held un-acknowledged at most.
    pub max_in_flight: NonZeroUsize,
    /// How long a message key is remembered for in-memory dedupe.
    #[serde(with = "iiot_core::duration::human")]
    pub dedupe_window: Duration,
    /// Most keys remembered for in-memory dedupe.
    pub dedupe_capacity: NonZeroUsize,
    /// Open gaps tracked in memory per device.
    pub max_open_gaps_per_device: NonZeroUsize,
    /// First back-off after a transient sink error.
    #[serde(with = "iiot_core::duration::human")]
    pub retry_initial: Duration,
    /// Back-off cap.
    #[serde(with = "iiot_core::duration::human")]
    pub retry_max: Duration,
    /// How long after a command's `expires_at` its final ack may still arrive
    /// (device clock skew, a gateway reconnecting with acks queued) before the
    /// command is marked `expired_unconfirmed`.
    #[serde(with = "iiot_core::duration::human")]
    pub command_grace: Duration,
    /// How often the pipeline marks overdue commands; zero: never.
    #[serde(with = "iiot_core::duration::human")]
    pub command_sweep_interval: Duration,
    /// Limits for untrusted payloads.
    pub limits: Limits,
}

const fn nz(n: usize) -> NonZeroUsize {
    match NonZeroUsize::new(n) {
        Some(n) => n,
        None => NonZeroUsize::MIN,
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            batch_max_rows: nz(5000),
            batch_max_delay: Duration::from_millis(200),
            idle_flush: Duration::from_millis(10),
            max_in_flight: nz(1000),
            dedupe_window: Duration::from_secs(600),
            dedupe_capacity: nz(200_000),
            max_open_gaps_per_device: nz(1000),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
            command_grace: Duration::from_secs(30),
            command_sweep_interval: Duration::from_secs(10),
            limits: Limits::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_durations_are_human_and_unknown_keys_refused() {
        let c: PipelineConfig =
            serde_json::from_str(r#"{"command_grace":"1m","command_sweep_interval":"0s"}"#)
                .unwrap();
        assert_eq!(c.command_grace, Duration::from_secs(60));
        assert_eq!(c.command_sweep_interval, Duration::ZERO);
        assert_eq!(c.batch_max_rows, PipelineConfig::default().batch_max_rows);
        assert!(serde_json::from_str::<PipelineConfig>(r#"{"command_grace_ms":1}"#).is_err());
        let d = PipelineConfig::default();
        assert_eq!(
            (d.command_grace, d.command_sweep_interval),
            (Duration::from_secs(30), Duration::from_secs(10))
        );
    }
}
