//! Opening a store: load or initialise, and move a corrupt store aside.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use iiot_core::types::{DataLoss, DataLossReason, DeviceId, Sequence, Timestamp};

use super::codec::{
    self, DecodeError, FORMAT_VERSION, LOSS_PREFIX, META_FORMAT, META_STATE, Meta, SEG_PREFIX,
    encode_loss, index_segment, seg_key,
};
use super::config::{Engine, OutboxConfig};
use super::error::OpenError;
use super::storage::log::{LogStorage, holds_log_files};
#[cfg(feature = "sled")]
use super::storage::sled::SledStorage;
use super::storage::{EngineOpenError, Op, Storage};

/// A file the outbox writes next to sled's files once a store is initialised. If it exists
/// but sled shows an empty store, or sled refuses its own files, the store was damaged
/// (sled silently treats some damaged logs as empty: that must not be a silent loss).
const MARKER: &str = "iiot-outbox.marker";

/// A store loaded and ready for the writer.
pub(crate) struct Loaded {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) meta: Meta,
    pub(crate) loss_count: u64,
    pub(crate) oldest_at: Option<i64>,
}

enum LoadError {
    Corrupt(String),
    Io(io::Error),
    Newer(u32),
}

impl From<io::Error> for LoadError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<DecodeError> for LoadError {
    fn from(e: DecodeError) -> Self {
        Self::Corrupt(e.to_string())
    }
}

/// Refuses an engine this build leaves out, naming the cargo feature that brings it.
/// Called before anything on disk is touched.
fn require_built(path: &Path, engine: Engine) -> Result<(), OpenError> {
    let feature = match engine {
        Engine::Log => return Ok(()),
        Engine::Sled if cfg!(feature = "sled") => return Ok(()),
        Engine::Sled => "sled",
    };
    Err(OpenError::EngineNotEnabled {
        path: path.to_owned(),
        engine,
        feature,
    })
}

/// Opens `engine`'s store at `path`. The engine must be built ([`require_built`]).
fn open_engine(
    path: &Path,
    engine: Engine,
    config: &OutboxConfig,
) -> Result<Arc<dyn Storage>, EngineOpenError> {
    match engine {
        Engine::Log => Ok(Arc::new(LogStorage::open(path, SEG_PREFIX)?)),
        #[cfg(feature = "sled")]
        Engine::Sled => Ok(Arc::new(SledStorage::open(
            path,
            config.cache_bytes.get() as u64,
        )?)),
        // Refused by `require_built` first; not corruption, so nothing is moved.
        #[cfg(not(feature = "sled"))]
        Engine::Sled => {
            let _ = config; // only the sled engine reads it
            Err(EngineOpenError::Other(
                "the sled engine is not built (cargo feature `sled`)".to_owned(),
            ))
        }
    }
}

/// The engine to open `path` with: the one that wrote the store there, whatever the
/// configuration says (so that a gateway whose configuration or default changed still
/// opens its backlog instead of stranding it beside an empty store); the configured one
/// for a new store. Files of both engines are refused rather than guessed between, and an
/// engine this build leaves out (a sled store without the `sled` feature) is refused with
/// [`OpenError::EngineNotEnabled`] before anything is opened, never replaced by a new store.
fn engine_of(path: &Path, config: &OutboxConfig) -> Result<Engine, OpenError> {
    let sled_files = path.join("conf").exists() || path.join("db").exists();
    let found = match (sled_files, holds_log_files(path)) {
        (true, true) => {
            return Err(OpenError::Unsupported {
                path: path.to_owned(),
                reason: "it holds files of both the sled and the log engine".to_owned(),
            });
        }
        (true, false) => Engine::Sled,
        (false, true) => Engine::Log,
        (false, false) => {
            require_built(path, config.engine)?;
            return Ok(config.engine);
        }
    };
    require_built(path, found)?;
    if found != config.engine {
        tracing::warn!(path = %path.display(), configured = ?config.engine, found = ?found,
            "outbox store was written by another engine than configured; opening it with \
             the engine that wrote it (drain it and remove it to switch)");
    }
    Ok(found)
}

/// Opens the store at `path`; a corrupt one is moved aside and replaced. Returns it and
/// the engine it is on.
pub(crate) fn open_store(
    path: &Path,
    device: &DeviceId,
    config: &OutboxConfig,
) -> Result<(Loaded, Engine), OpenError> {
    let engine = engine_of(path, config)?;
    let marked = path.join(MARKER).exists();
    let reason = match open_engine(path, engine, config) {
        Ok(s) => {
            if marked && s.is_empty() {
                "the store was initialised but its log reads as empty".to_owned()
            } else {
                match load(&s) {
                    Ok(l) => {
                        if !marked {
                            write_marker(path).map_err(|e| io_open_error(path, e))?;
                        }
                        return Ok((l, engine));
                    }
                    Err(LoadError::Io(e)) => return Err(io_open_error(path, e)),
                    Err(LoadError::Newer(v)) => {
                        return Err(OpenError::Unsupported {
                            path: path.to_owned(),
                            reason: format!("store format {v} is newer than {FORMAT_VERSION}"),
                        });
                    }
                    Err(LoadError::Corrupt(r)) => r,
                }
            }
        }
        Err(EngineOpenError::Corrupt(r)) => r,
        Err(EngineOpenError::Io(e)) => return Err(io_open_error(path, e)),
        // An engine refusing files it wrote itself means they are damaged.
        Err(EngineOpenError::Other(r)) if marked => r,
        Err(EngineOpenError::Other(reason)) => {
            return Err(OpenError::Unsupported {
                path: path.to_owned(),
                reason,
            });
        }
    };
    // The engine handle is dropped here (end of the match arm), releasing the files.
    // The fresh store is on the configured engine: refuse before moving anything aside if
    // this build leaves it out.
    require_built(path, config.engine)?;
    let aside = aside_path(path);
    tracing::error!(
        path = %path.display(), aside = %aside.display(), %reason,
        "outbox store is corrupt: moving it aside and starting a fresh store; \
         its unacknowledged records are lost and reported as data loss"
    );
    std::fs::rename(path, &aside).map_err(|source| OpenError::MoveAside {
        path: path.to_owned(),
        aside: aside.clone(),
        source,
    })?;
    // A fresh store: the configured engine.
    let engine = config.engine;
    let s: Arc<dyn Storage> = match open_engine(path, engine, config) {
        Ok(s) => s,
        Err(EngineOpenError::Io(e)) => return Err(io_open_error(path, e)),
        Err(EngineOpenError::Corrupt(r) | EngineOpenError::Other(r)) => {
            return Err(OpenError::Unsupported {
                path: path.to_owned(),
                reason: r,
            });
        }
    };
    // The old sequence is unknown: restart above any value it can plausibly have reached,
    // so sequence numbers stay monotonic for the consumer's gap detection.
    let floor = u64::try_from(Timestamp::now().unix_nanos() / 1000)
        .unwrap_or(1)
        .max(2);
    let mut loss = DataLoss::new(
        device.clone(),
        Sequence(1),
        Sequence(floor - 1),
        1,
        DataLossReason::StoreCorrupt,
        Timestamp::now(),
    )
    .map_err(|e| OpenError::Unsupported {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    loss.detail = Some(format!(
        "store {} was corrupt ({reason}) and was moved to {}; the number of lost records is \
         unknown (count is a lower bound); sequence restarts at {floor}",
        path.display(),
        aside.display()
    ));
    let meta = Meta {
        head: floor,
        next_seq: floor,
        next_loss_id: 1,
        ..Meta::default()
    };
    init(&s, meta, Some(&loss)).map_err(|e| io_open_error(path, e))?;
    write_marker(path).map_err(|e| io_open_error(path, e))?;
    Ok((
        Loaded {
            storage: s,
            meta,
            loss_count: 1,
            oldest_at: None,
        },
        engine,
    ))
}

/// Writes the marker durably (file and directory synced).
fn write_marker(path: &Path) -> io::Result<()> {
    let p = path.join(MARKER);
    let mut f = std::fs::File::create(&p)?;
    io::Write::write_all(
        &mut f,
        format!("iiot-outbox store, format {FORMAT_VERSION}\n").as_bytes(),
    )?;
    f.sync_all()?;
    std::fs::File::open(path)?.sync_all()
}

fn aside_path(path: &Path) -> PathBuf {
    let stamp = Timestamp::now().to_rfc3339().replace(':', "-");
    let name = path
        .file_name()
        .map_or_else(|| "outbox".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!("{name}.corrupt-{stamp}"))
}

fn io_open_error(path: &Path, e: io::Error) -> OpenError {
    let path = path.to_owned();
    match e.kind() {
        io::ErrorKind::PermissionDenied => OpenError::PermissionDenied { path, source: e },
        io::ErrorKind::WouldBlock => OpenError::Locked { path },
        _ if e.to_string().contains("lock") => OpenError::Locked { path },
        _ => OpenError::Io { path, source: e },
    }
}

fn init(s: &Arc<dyn Storage>, meta: Meta, loss: Option<&DataLoss>) -> io::Result<()> {
    let mut ops = vec![
        Op::Put(META_FORMAT.to_vec(), FORMAT_VERSION.to_be_bytes().to_vec()),
        Op::Put(META_STATE.to_vec(), meta.encode()),
    ];
    if let Some(l) = loss {
        ops.push(Op::Put(codec::loss_key(0).to_vec(), encode_loss(l)));
    }
    s.apply(ops)?;
    s.flush()
}

/// Loads meta from an existing store, or initialises an empty one.
#[cfg(test)]
pub(crate) fn load_or_init(s: &Arc<dyn Storage>) -> Result<Loaded, OpenError> {
    load(s).map_err(|e| match e {
        LoadError::Io(e) => OpenError::Io {
            path: PathBuf::new(),
            source: e,
        },
        LoadError::Corrupt(r) => OpenError::Unsupported {
            path: PathBuf::new(),
            reason: r,
        },
        LoadError::Newer(v) => OpenError::Unsupported {
            path: PathBuf::new(),
            reason: format!("format {v}"),
        },
    })
}

fn load(s: &Arc<dyn Storage>) -> Result<Loaded, LoadError> {
    let Some(fmt) = s.get(META_FORMAT)? else {
        if !s.is_empty() {
            return Err(LoadError::Corrupt("format marker missing".into()));
        }
        let meta = Meta {
            head: 1,
            next_seq: 1,
            ..Meta::default()
        };
        init(s, meta, None)?;
        return Ok(Loaded {
            storage: Arc::clone(s),
            meta,
            loss_count: 0,
            oldest_at: None,
        });
    };
    let v = u32::from_be_bytes(
        fmt.as_ref()
            .try_into()
            .map_err(|_| LoadError::Corrupt("format marker".into()))?,
    );
    if v > FORMAT_VERSION {
        return Err(LoadError::Newer(v));
    }
    if v != FORMAT_VERSION {
        return Err(LoadError::Corrupt(format!("format marker {v}")));
    }
    let raw = s
        .get(META_STATE)?
        .ok_or_else(|| LoadError::Corrupt("meta record missing".into()))?;
    let mut meta = Meta::decode(&raw)?;
    // Meta is written atomically with segments, so they agree; be defensive anyway.
    if let Some((k, v)) = s.last(&seg_key(0), &[SEG_PREFIX + 1])? {
        let end = index_segment(&v)
            .map_or_else(|_| codec::key_number(&k).map_or(0, |n| n + 1), |i| i.end());
        meta.next_seq = meta.next_seq.max(end);
    }
    meta.head = meta.head.min(meta.next_seq);
    let lo = codec::loss_key(0);
    let hi = [LOSS_PREFIX + 1];
    let losses = s.range(&lo, &hi, usize::MAX)?;
    if let Some((k, _)) = losses.last() {
        meta.next_loss_id = meta.next_loss_id.max(codec::key_number(k)? + 1);
    }
    let oldest_at = first_live_at(s, &meta)?;
    Ok(Loaded {
        storage: Arc::clone(s),
        meta,
        loss_count: losses.len() as u64,
        oldest_at,
    })
}

pub(crate) fn first_live_at(s: &Arc<dyn Storage>, meta: &Meta) -> io::Result<Option<i64>> {
    if meta.backlog_records == 0 {
        return Ok(None);
    }
    let start = s
        .floor(&seg_key(0), &seg_key(meta.head))?
        .map_or_else(|| seg_key(meta.head).to_vec(), |(k, _)| k.to_vec());
    for (_, v) in s.range(&start, &[SEG_PREFIX + 1], 4)? {
        if let Ok(idx) = index_segment(&v) {
            let skip = meta.head.saturating_sub(idx.first) as usize;
            if let Some(&(at, _)) = idx.records.get(skip) {
                return Ok(Some(at));
            }
        }
    }
    Ok(None)
}
