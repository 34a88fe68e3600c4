//! Outbox configuration and policies.

use std::num::NonZeroUsize;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When an append counts as stored, and therefore what survives a power cut.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Durability {
    /// `append` returns only after the record (and every record before it) was flushed
    /// to disk. **Power cut:** every record whose `append` returned `Ok` survives.
    /// Concurrent appenders share flushes (group commit without added delay): while one
    /// flush runs, new appends queue and the next flush covers them all. Default.
    #[default]
    EveryWrite,
    /// Appends are collected for up to `window` after the first one arrives, then written
    /// and flushed together. `append` returns once the record is queued, with a
    /// [`Appended::durable`](super::Appended::durable) future that resolves when it is on
    /// disk. **Power cut:** records whose `durable()` resolved survive; records appended in
    /// the last window (plus the time of one flush) may be lost, and because they never left
    /// the gateway their sequence numbers are reused after restart, so upstream sees no gap.
    GroupCommit {
        /// How long to collect appends before one flush. Default 10 ms.
        #[serde(with = "iiot_core::duration::human")]
        window: Duration,
    },
}

/// The storage engine under the outbox.
///
/// Both keep the same guarantees (atomic commit groups, an explicit durability point with
/// `fdatasync`, corrupt stores moved aside); they differ in speed and memory. The setting
/// applies when a store is created: an existing store is always opened with the engine
/// that wrote it (logged at warn level when that is not the configured one), so a changed
/// configuration or default never strands a backlog. To switch, drain the store and
/// remove it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Engine {
    /// An append-only log of checksummed frames in preallocated files of up to 32 MiB,
    /// with an in-memory index of about 24 bytes per stored segment (a commit group's
    /// records, up to 64 KiB), not per byte stored. One `write` and one `fdatasync` per
    /// commit; files are removed as records are acknowledged. Default.
    #[default]
    Log,
    /// sled 0.34. Writes about 3.5× the record bytes and holds about half the store's size
    /// in memory (see docs/BENCHMARKS.md); kept for stores created with it. Needs the
    /// cargo feature `sled`: without it, opening a sled store (or creating one) fails
    /// with `OpenError::EngineNotEnabled` and touches nothing on disk.
    Sled,
}

/// What happens when an append would exceed [`OutboxConfig::max_bytes`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WhenFull {
    /// Back-pressure: `append` waits until the forwarder frees space, and `try_append`
    /// returns [`AppendError::Full`](super::AppendError::Full) with the message given back.
    /// Nothing stored is ever dropped for space; the producer must handle the refusal.
    Block,
    /// The oldest records are discarded to make room. Every discarded range is counted in
    /// persistent counters and queued as a `DataLoss { reason: Overflow }` event that the
    /// forwarder publishes ahead of records. Default: the newest data is usually the most
    /// valuable on a plant floor, and the loss is announced.
    #[default]
    DropOldest,
}

/// Configuration of an [`Outbox`](super::Outbox).
///
/// ## Defaults
/// | field | default |
/// |---|---|
/// | `engine` | [`Engine::Log`] |
/// | `cache_bytes` | 64 MiB (sled page cache; [`Engine::Sled`] only) |
/// | `max_bytes` | 1 GiB of stored records |
/// | `max_age` | 7 days |
/// | `max_record_bytes` | 1 MiB |
/// | `when_full` | [`WhenFull::DropOldest`] |
/// | `durability` | [`Durability::EveryWrite`] |
/// | `max_pending_bytes` | 8 MiB accepted but not yet written |
///
/// Size the byte bound from the field rule: bytes/s × worst outage × 1.3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    /// The storage engine.
    pub engine: Engine,
    /// sled page cache in bytes ([`Engine::Sled`] only). Note: sled 0.34's resident memory is *not* bounded by this;
    /// it grows with the store (about 0.5 GiB for a 1 GiB backlog, see docs/BENCHMARKS.md).
    pub cache_bytes: NonZeroUsize,
    /// Bound on stored records, in bytes (payload + topic + 15 bytes of framing each).
    pub max_bytes: NonZeroUsize,
    /// Records older than this are expired (and announced as data loss); `None` keeps them
    /// until the byte bound applies.
    #[serde(with = "iiot_core::duration::human::option")]
    pub max_age: Option<Duration>,
    /// Largest accepted record (payload + topic + framing).
    pub max_record_bytes: NonZeroUsize,
    /// Policy when `max_bytes` is reached.
    pub when_full: WhenFull,
    /// When an append is on disk.
    pub durability: Durability,
    /// Bound on records accepted but not yet written (memory). Appends wait when reached.
    pub max_pending_bytes: NonZeroUsize,
}

const MIB: usize = 1024 * 1024;

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            engine: Engine::Log,
            cache_bytes: nz(64 * MIB),
            max_bytes: nz(1024 * MIB),
            max_age: Some(Duration::from_secs(7 * 24 * 3600)),
            max_record_bytes: nz(MIB),
            when_full: WhenFull::DropOldest,
            durability: Durability::EveryWrite,
            max_pending_bytes: nz(8 * MIB),
        }
    }
}

fn nz(v: usize) -> NonZeroUsize {
    NonZeroUsize::new(v).unwrap_or(NonZeroUsize::MIN)
}

impl OutboxConfig {
    /// Sets the storage engine.
    pub fn set_engine(&mut self, v: Engine) -> &mut Self {
        self.engine = v;
        self
    }
    /// Sets the sled cache size.
    pub fn set_cache_bytes(&mut self, v: NonZeroUsize) -> &mut Self {
        self.cache_bytes = v;
        self
    }
    /// Sets the byte bound.
    pub fn set_max_bytes(&mut self, v: NonZeroUsize) -> &mut Self {
        self.max_bytes = v;
        self
    }
    /// Sets the age bound (`None`: no age bound).
    pub fn set_max_age(&mut self, v: Option<Duration>) -> &mut Self {
        self.max_age = v;
        self
    }
    /// Sets the largest accepted record.
    pub fn set_max_record_bytes(&mut self, v: NonZeroUsize) -> &mut Self {
        self.max_record_bytes = v;
        self
    }
    /// Sets the overflow policy.
    pub fn set_when_full(&mut self, v: WhenFull) -> &mut Self {
        self.when_full = v;
        self
    }
    /// Sets the durability policy.
    pub fn set_durability(&mut self, v: Durability) -> &mut Self {
        self.durability = v;
        self
    }
    /// Sets the bound on accepted-but-unwritten bytes.
    pub fn set_max_pending_bytes(&mut self, v: NonZeroUsize) -> &mut Self {
        self.max_pending_bytes = v;
        self
    }

    /// The effective record limit: never more than the byte bound, and never more than
    /// the format's 4 GiB payload field.
    pub(crate) fn record_limit(&self) -> usize {
        self.max_record_bytes
            .get()
            .min(self.max_bytes.get())
            .min(u32::MAX as usize)
    }
}

/// The old numeric keys of [`OutboxConfig`] files (milliseconds), for
/// [`iiot_core::duration::legacy::upgrade_toml`].
pub const LEGACY_KEYS: &[iiot_core::duration::legacy::LegacyKey] = {
    use iiot_core::duration::legacy::{LegacyKey, LegacyUnit};
    &[
        LegacyKey::duration("window", "window", LegacyUnit::Millis),
        LegacyKey::duration("max_age", "max_age", LegacyUnit::Millis),
    ]
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_and_rejects_unknown_fields() {
        let mut c = OutboxConfig::default();
        c.set_durability(Durability::GroupCommit {
            window: Duration::from_millis(10),
        });
        let j = serde_json::to_string(&c).unwrap();
        assert!(
            j.contains(r#""durability":{"group_commit":{"window":"10ms"}}"#),
            "{j}"
        );
        assert_eq!(serde_json::from_str::<OutboxConfig>(&j).unwrap(), c);
        assert!(serde_json::from_str::<OutboxConfig>(r#"{"max_byts":1}"#).is_err());
        assert_eq!(
            serde_json::from_str::<OutboxConfig>("{}").unwrap(),
            OutboxConfig::default()
        );
    }
}
