//! Counters the pipeline keeps, published after every commit.

use std::collections::BTreeMap;

/// What the pipeline has done since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Deliveries received.
    pub received: u64,
    /// Deliveries acknowledged to the source (after commit).
    pub acked: u64,
    /// Telemetry batches accepted (decoded, valid, not an in-memory duplicate).
    pub batches_accepted: u64,
    /// Telemetry batches dropped as in-memory duplicates (acknowledged after the
    /// original's commit).
    pub duplicates_suppressed: u64,
    /// Telemetry batches the sink already held (redelivery after a restart).
    pub duplicates_at_sink: u64,
    /// Rows written.
    pub rows_written: u64,
    /// Dead letters, by reason label.
    pub dead_letters: BTreeMap<String, u64>,
    /// Data-loss announcements stored.
    pub data_loss_records: u64,
    /// Gaps opened.
    pub gaps_opened: u64,
    /// Successful commits.
    pub commits: u64,
    /// Commit attempts that failed transiently and were retried.
    pub commit_retries: u64,
    /// Telemetry batches isolated as poison and dead-lettered (commands and
    /// acks isolated the same way count too).
    pub poison_batches: u64,
    /// Commands committed (seen on `.../commands/{id}`; re-deliveries count).
    pub commands: u64,
    /// Command acks committed (duplicates and re-deliveries count).
    pub command_acks: u64,
    /// Commands the sweep marked `expired_unconfirmed`.
    pub commands_expired_unconfirmed: u64,
    /// Sweeps that failed (logged; retried at the next interval).
    pub command_sweep_errors: u64,
}

impl PipelineStats {
    /// Total dead letters.
    pub fn dead_letter_total(&self) -> u64 {
        self.dead_letters.values().sum()
    }
}
