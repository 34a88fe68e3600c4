//! Errors of the outbox, one enum per operation.

use std::io;
use std::path::PathBuf;

use iiot_core::publish::OutboundMessage;
use iiot_core::types::Sequence;

use super::config::Engine;

/// Why [`Outbox::open`](super::Outbox::open) failed. A corrupt store is not an error: it is
/// moved aside and reported as data loss.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The store (or its directory) may not be read or written.
    #[error("permission denied on outbox store {path}")]
    PermissionDenied {
        /// The path refused.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Another outbox (in this or another process) holds the store open.
    #[error("outbox store {path} is in use by another process or handle")]
    Locked {
        /// The store's path.
        path: PathBuf,
    },
    /// Another I/O error.
    #[error("I/O error opening outbox store {path}")]
    Io {
        /// The store's path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The store was corrupt and could not be moved aside.
    #[error("outbox store {path} is corrupt and could not be moved to {aside}")]
    MoveAside {
        /// The corrupt store.
        path: PathBuf,
        /// Where it should have gone.
        aside: PathBuf,
        /// The rename error.
        #[source]
        source: io::Error,
    },
    /// The store was written by a newer format or the engine refused it for a reason that is
    /// not corruption; it is left untouched.
    #[error("outbox store {path} cannot be used: {reason}")]
    Unsupported {
        /// The store's path.
        path: PathBuf,
        /// What the engine said.
        reason: String,
    },
    /// The store needs a storage engine this build of iiot-edge leaves out: the store on
    /// disk was written by it, or the configuration asks for it for a new (or replacement)
    /// store. Nothing on disk was read, moved or created; rebuild with the cargo feature
    /// named here (`iiot-edge = { features = ["sled"] }`), or drain the store with a build
    /// that has it and remove it.
    #[error(
        "outbox store {path} needs the {engine:?} storage engine, which this build of \
         iiot-edge leaves out: enable iiot-edge's cargo feature `{feature}`"
    )]
    EngineNotEnabled {
        /// The store's path.
        path: PathBuf,
        /// The engine it needs.
        engine: Engine,
        /// The cargo feature of iiot-edge that brings the engine.
        feature: &'static str,
    },
    /// The blocking task running the open was cancelled (runtime shutting down).
    #[error("outbox open was cancelled")]
    Cancelled,
}

/// Why an append failed. The message is always given back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The record is larger than the configured limit.
    #[error("record of {len} bytes exceeds the limit of {limit} bytes")]
    RecordTooLarge {
        /// The record's stored size (payload + topic + framing).
        len: usize,
        /// The limit.
        limit: usize,
        /// The message, given back.
        message: OutboundMessage,
    },
    /// The topic is longer than 65535 bytes.
    #[error("topic of {len} bytes exceeds 65535 bytes")]
    TopicTooLong {
        /// The topic's length.
        len: usize,
        /// The message, given back.
        message: OutboundMessage,
    },
    /// The outbox is full and the policy is [`WhenFull::Block`](super::WhenFull::Block)
    /// (only from `try_append`), or too much is waiting to be written.
    #[error("outbox full: {used} of {limit} bytes in use")]
    Full {
        /// Bytes in use.
        used: usize,
        /// The bound that was hit.
        limit: usize,
        /// The message, given back.
        message: OutboundMessage,
    },
    /// Writing or flushing failed (disk full, I/O error). Records stored before are intact.
    #[error("outbox write failed at sequence {seq}")]
    Io {
        /// The sequence number the record would have had. It is not reused (unless the
        /// process dies before the disk accepts another commit).
        seq: Sequence,
        /// The underlying error (`kind()` tells disk full from others).
        #[source]
        source: io::Error,
        /// The message, given back.
        message: OutboundMessage,
    },
    /// The outbox was closed.
    #[error("outbox closed")]
    Closed {
        /// The message, given back.
        message: OutboundMessage,
    },
}

impl AppendError {
    /// The message that was not stored.
    pub fn into_message(self) -> OutboundMessage {
        match self {
            Self::RecordTooLarge { message, .. }
            | Self::TopicTooLong { message, .. }
            | Self::Full { message, .. }
            | Self::Io { message, .. }
            | Self::Closed { message } => message,
        }
    }
}

/// Why a record accepted under group commit did not become durable. The message is given back.
#[derive(Debug, thiserror::Error)]
#[error("record {seq} was not made durable")]
pub struct DurableError {
    /// The record's sequence number (not reused).
    pub seq: Sequence,
    /// The underlying error; `None` when the outbox shut down before writing it.
    #[source]
    pub source: Option<io::Error>,
    /// The message, given back (empty only if the writer thread died, which is a bug).
    pub message: OutboundMessage,
}

/// Why a read, acknowledge or other outbox operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The storage engine failed.
    #[error("outbox storage I/O error")]
    Io(#[from] io::Error),
    /// The outbox was closed.
    #[error("outbox closed")]
    Closed,
}
