//! A/B slots: the boot loader's side of an update, as a trait, and a
//! file-backed implementation.
//!
//! The two slots hold firmware images. One is **active**: the boot loader boots
//! it. An update is written to the other (the *inactive* slot), then **marked for
//! trial**: the next boots run it, each counted, at most `max_boots` times. The
//! application **confirms** it after its health checks (it becomes active and the
//! anti-rollback minimum rises to its version) or it is **rolled back** (the
//! active slot boots again). Every change is persisted before the call returns,
//! so power lost at any point leaves a slot the boot loader can boot.
//!
//! ## On a real device
//!
//! | trait method | U-Boot (`fw_setenv`) | RAUC |
//! |---|---|---|
//! | [`SlotBackend::write`] | write the inactive partition (`/dev/mmcblk0p3`) | `rauc install` writes the other slot |
//! | [`SlotBackend::mark_for_trial`] | `boot_part=B upgrade_available=1 bootcount=0` | `rauc status mark-active other` |
//! | [`SlotBackend::boot`] (boot count) | U-Boot's `bootcount`/`bootlimit`, `altbootcmd` switches back | the boot loader's attempt counter (`BOOT_x_LEFT` in barebox, GRUB env) |
//! | [`SlotBackend::confirm`] | `upgrade_available=0 bootcount=0` | `rauc status mark-good` |
//! | [`SlotBackend::roll_back`] | `boot_part=A upgrade_available=0` | `rauc status mark-bad` |
//!
//! The anti-rollback minimum belongs in storage the running firmware cannot
//! lower (a U-Boot environment variable the boot loader checks, an eMMC RPMB
//! counter, a TPM NV index).

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use iiot_core::types::Timestamp;

/// One of the two slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    /// Slot A.
    A,
    /// Slot B.
    B,
}

impl Slot {
    /// The other slot.
    #[must_use]
    pub fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }

    fn index(self) -> usize {
        match self {
            Self::A => 0,
            Self::B => 1,
        }
    }
}

/// What a slot holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageInfo {
    /// The firmware's id.
    pub firmware_id: String,
    /// Its version.
    pub version: semver::Version,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, as verified when it was written.
    #[serde(with = "super::hex32_serde")]
    pub sha256: [u8; 32],
}

/// A slot on trial.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Trial {
    /// The slot on trial.
    pub slot: Slot,
    /// Boots counted so far.
    pub boots: u32,
    /// Most boots before the boot loader falls back.
    pub max_boots: u32,
    /// When it was marked.
    pub marked_at: Timestamp,
    /// When it must be confirmed by, or it rolls back.
    pub confirm_by: Timestamp,
}

/// The boot loader's state, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BootState {
    /// The slot that boots when no trial runs.
    pub active: Slot,
    /// What each slot holds (A, B); `None`: nothing verified.
    pub images: [Option<ImageInfo>; 2],
    /// The trial in progress.
    pub trial: Option<Trial>,
    /// The anti-rollback minimum: raised to a version when it is confirmed.
    pub min_version: Option<semver::Version>,
}

impl BootState {
    /// A device fresh from the factory: `factory` in slot A, active.
    pub fn factory(factory: ImageInfo) -> Self {
        Self {
            active: Slot::A,
            images: [Some(factory), None],
            trial: None,
            min_version: None,
        }
    }

    /// The slot this boot runs: the trial slot once a trial booted, else the
    /// active one. (After a roll back the trial image still runs until the
    /// reboot that follows.)
    pub fn running(&self) -> Slot {
        self.trial
            .as_ref()
            .filter(|t| t.boots > 0)
            .map_or(self.active, |t| t.slot)
    }

    /// The image this boot runs.
    pub fn running_image(&self) -> Option<&ImageInfo> {
        self.image(self.running())
    }

    /// What `slot` holds.
    pub fn image(&self, slot: Slot) -> Option<&ImageInfo> {
        self.images[slot.index()].as_ref()
    }

    /// The slot an update may be written to: the one neither active nor on
    /// trial. `None` during a trial (the other slot is the way back).
    pub fn writable(&self) -> Option<Slot> {
        match self.trial {
            Some(_) => None,
            None => Some(self.active.other()),
        }
    }

    /// Checks the invariants every persisted state keeps: the active slot holds
    /// a verified image, a trial runs the other slot, which holds one too.
    pub fn is_consistent(&self) -> bool {
        self.image(self.active).is_some()
            && self.trial.as_ref().is_none_or(|t| {
                t.slot != self.active && self.image(t.slot).is_some() && t.boots <= t.max_boots
            })
    }
}

/// What [`SlotBackend::boot`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootEvent {
    /// The active slot booted.
    Normal,
    /// The trial slot booted, this many times now.
    Trial {
        /// Boots counted, this one included.
        boots: u32,
    },
    /// The trial slot used up its boots: the boot loader fell back to the active
    /// slot, and the trial image is discarded.
    FellBack {
        /// The image that failed.
        image: Option<ImageInfo>,
    },
}

/// A slot operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SlotError {
    /// Reading or writing storage failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The persisted state cannot be read.
    #[error("slot state {path}: {reason}")]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The operation does not fit the state (writing during a trial, confirming
    /// without one).
    #[error("{0}")]
    State(&'static str),
    /// The image does not fit the slot.
    #[error("{size} bytes do not fit a slot of {capacity}")]
    NoSpace {
        /// Bytes needed.
        size: u64,
        /// What the slot holds.
        capacity: u64,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SlotError {
    let what = what.into();
    move |source| SlotError::Io { what, source }
}

/// The boot loader and slot storage of a device. Every method that changes
/// state persists it before it returns. Calls are blocking; the OTA agent makes
/// them off the async runtime.
pub trait SlotBackend: Send + 'static {
    /// The current state.
    fn state(&self) -> &BootState;

    /// Called once per boot (process start), before anything else: counts a
    /// trial boot, and falls back when the trial used up its boots (what the boot
    /// loader does on a real device; there, this reads its verdict).
    ///
    /// # Errors
    /// [`SlotError`].
    fn boot(&mut self) -> Result<BootEvent, SlotError>;

    /// Bytes one slot holds.
    fn capacity(&self) -> u64;

    /// Bytes already in the writable slot (for resuming a download).
    ///
    /// # Errors
    /// [`SlotError::State`] during a trial.
    fn written(&mut self) -> Result<u64, SlotError>;

    /// Reads the writable slot from `offset` into `buf` (for re-hashing what a
    /// resumed download already has). Returns the bytes read; 0 at the end.
    ///
    /// # Errors
    /// [`SlotError`].
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, SlotError>;

    /// Cuts the writable slot to `len` bytes and forgets what it held; writing
    /// goes on from there.
    ///
    /// # Errors
    /// [`SlotError`]; [`SlotError::State`] during a trial.
    fn truncate(&mut self, len: u64) -> Result<(), SlotError>;

    /// Appends `data` to the writable slot.
    ///
    /// # Errors
    /// [`SlotError::NoSpace`] past the capacity, [`SlotError::Io`].
    fn write(&mut self, data: &[u8]) -> Result<(), SlotError>;

    /// Makes what was written durable.
    ///
    /// # Errors
    /// [`SlotError::Io`].
    fn sync(&mut self) -> Result<(), SlotError>;

    /// Marks the writable slot, holding `image` (already verified), for a trial:
    /// the next boots run it, at most `max_boots` times, and it must be
    /// confirmed by `confirm_by`.
    ///
    /// # Errors
    /// [`SlotError`]; [`SlotError::State`] when the slot does not hold
    /// `image.size` bytes or a trial runs.
    fn mark_for_trial(
        &mut self,
        image: ImageInfo,
        max_boots: u32,
        now: Timestamp,
        confirm_by: Timestamp,
    ) -> Result<(), SlotError>;

    /// The running trial passed: its slot becomes active and the anti-rollback
    /// minimum rises to its version.
    ///
    /// # Errors
    /// [`SlotError::State`] when no trial runs (or this boot is not in it).
    fn confirm(&mut self) -> Result<(), SlotError>;

    /// The trial failed: the active slot boots next, the trial image is
    /// discarded. A reboot follows.
    ///
    /// # Errors
    /// [`SlotError::State`] when no trial runs.
    fn roll_back(&mut self) -> Result<(), SlotError>;
}

/// [`FileSlots`] settings.
#[derive(Debug, Clone)]
pub struct FileSlotsConfig {
    /// Bytes one slot holds (a partition's size).
    pub capacity: u64,
    /// What slot A holds on a device fresh from the factory.
    pub factory: ImageInfo,
}

/// Slots as two files in a directory (`slot-a.img`, `slot-b.img`) and the boot
/// state in `slots.json`, replaced atomically (write a temporary file, fsync,
/// rename, fsync the directory). For gateways whose "firmware" is an application
/// bundle, for tests, and as the model a real boot loader backend follows.
#[derive(Debug)]
pub struct FileSlots {
    dir: PathBuf,
    capacity: u64,
    state: BootState,
    writer: Option<(Slot, File)>,
    booted: bool,
}

const STATE_FILE: &str = "slots.json";

impl FileSlots {
    /// Opens the slots in `dir` (created with the factory state when new).
    ///
    /// # Errors
    /// [`SlotError`] when the directory or a corrupt state file cannot be read.
    pub fn open(dir: impl AsRef<Path>, config: FileSlotsConfig) -> Result<Self, SlotError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        let path = dir.join(STATE_FILE);
        let state = match std::fs::read(&path) {
            Ok(bytes) => {
                let s: BootState =
                    serde_json::from_slice(&bytes).map_err(|e| SlotError::Corrupt {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                if !s.is_consistent() {
                    return Err(SlotError::Corrupt {
                        path,
                        reason: "inconsistent state".into(),
                    });
                }
                s
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let s = BootState::factory(config.factory);
                write_atomic(&dir, STATE_FILE, &state_bytes(&s))?;
                s
            }
            Err(e) => return Err(io(format!("read {}", path.display()))(e)),
        };
        Ok(Self {
            dir,
            capacity: config.capacity,
            state,
            writer: None,
            booted: false,
        })
    }

    /// The file of `slot`.
    pub fn slot_path(&self, slot: Slot) -> PathBuf {
        Self::slot_file(&self.dir, slot)
    }

    /// The file of `slot` in the slots directory `dir`.
    pub fn slot_file(dir: &Path, slot: Slot) -> PathBuf {
        dir.join(match slot {
            Slot::A => "slot-a.img",
            Slot::B => "slot-b.img",
        })
    }

    /// Reads the boot state persisted in `dir` without opening the slots (for
    /// observers: a health check, a status page).
    ///
    /// # Errors
    /// [`SlotError`] when it is missing or unreadable.
    pub fn read_state(dir: &Path) -> Result<BootState, SlotError> {
        let path = dir.join(STATE_FILE);
        let bytes = std::fs::read(&path).map_err(io(format!("read {}", path.display())))?;
        serde_json::from_slice(&bytes).map_err(|e| SlotError::Corrupt {
            path,
            reason: e.to_string(),
        })
    }

    fn persist(&mut self, next: BootState) -> Result<(), SlotError> {
        debug_assert!(next.is_consistent(), "{next:?}");
        write_atomic(&self.dir, STATE_FILE, &state_bytes(&next))?;
        self.state = next;
        Ok(())
    }

    /// Forgets the verified image of `slot` (persisted) before its bytes change.
    fn forget_image(&mut self, slot: Slot) -> Result<(), SlotError> {
        if self.state.image(slot).is_none() {
            return Ok(());
        }
        let mut next = self.state.clone();
        next.images[slot.index()] = None;
        self.persist(next)
    }

    fn writable(&self) -> Result<Slot, SlotError> {
        self.state
            .writable()
            .ok_or(SlotError::State("a trial runs: no slot may be written"))
    }

    fn writer(&mut self) -> Result<&mut File, SlotError> {
        let slot = self.writable()?;
        if self.writer.as_ref().is_none_or(|(s, _)| *s != slot) {
            let path = self.slot_path(slot);
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io(format!("open {}", path.display())))?;
            f.seek(SeekFrom::End(0))
                .map_err(io(format!("seek {}", path.display())))?;
            self.writer = Some((slot, f));
        }
        match &mut self.writer {
            Some((_, f)) => Ok(f),
            None => Err(SlotError::State("no writer")),
        }
    }
}

impl SlotBackend for FileSlots {
    fn state(&self) -> &BootState {
        &self.state
    }

    fn boot(&mut self) -> Result<BootEvent, SlotError> {
        if std::mem::replace(&mut self.booted, true) {
            return Err(SlotError::State("boot() is called once per boot"));
        }
        let Some(t) = self.state.trial.clone() else {
            return Ok(BootEvent::Normal);
        };
        let mut next = self.state.clone();
        if t.boots >= t.max_boots {
            let image = next.images[t.slot.index()].take();
            next.trial = None;
            self.persist(next)?;
            return Ok(BootEvent::FellBack { image });
        }
        let boots = t.boots + 1;
        if let Some(tr) = &mut next.trial {
            tr.boots = boots;
        }
        self.persist(next)?;
        Ok(BootEvent::Trial { boots })
    }

    fn capacity(&self) -> u64 {
        self.capacity
    }

    fn written(&mut self) -> Result<u64, SlotError> {
        let slot = self.writable()?;
        let path = self.slot_path(slot);
        match std::fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io(format!("stat {}", path.display()))(e)),
        }
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, SlotError> {
        let slot = self.writable()?;
        let path = self.slot_path(slot);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io(format!("open {}", path.display()))(e)),
        };
        f.seek(SeekFrom::Start(offset))
            .map_err(io(format!("seek {}", path.display())))?;
        f.read(buf).map_err(io(format!("read {}", path.display())))
    }

    fn truncate(&mut self, len: u64) -> Result<(), SlotError> {
        let slot = self.writable()?;
        self.forget_image(slot)?;
        let f = self.writer()?;
        f.set_len(len).map_err(io("truncate slot"))?;
        f.seek(SeekFrom::Start(len)).map_err(io("seek slot"))?;
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> Result<(), SlotError> {
        let capacity = self.capacity;
        let slot = self.writable()?;
        let at = self
            .writer()?
            .stream_position()
            .map_err(io("slot position"))?;
        let size = at + data.len() as u64;
        if size > capacity {
            return Err(SlotError::NoSpace { size, capacity });
        }
        self.forget_image(slot)?;
        self.writer()?.write_all(data).map_err(io("write slot"))
    }

    fn sync(&mut self) -> Result<(), SlotError> {
        match &mut self.writer {
            Some((_, f)) => f.sync_data().map_err(io("sync slot")),
            None => Ok(()),
        }
    }

    fn mark_for_trial(
        &mut self,
        image: ImageInfo,
        max_boots: u32,
        now: Timestamp,
        confirm_by: Timestamp,
    ) -> Result<(), SlotError> {
        let slot = self.writable()?;
        self.sync()?;
        if self.written()? != image.size {
            return Err(SlotError::State("the slot does not hold the image's size"));
        }
        let mut next = self.state.clone();
        next.images[slot.index()] = Some(image);
        next.trial = Some(Trial {
            slot,
            boots: 0,
            max_boots: max_boots.max(1),
            marked_at: now,
            confirm_by,
        });
        self.writer = None;
        self.persist(next)
    }

    fn confirm(&mut self) -> Result<(), SlotError> {
        let Some(t) = self.state.trial.clone() else {
            return Err(SlotError::State("no trial to confirm"));
        };
        if t.boots == 0 {
            return Err(SlotError::State("the trial slot has not booted yet"));
        }
        let mut next = self.state.clone();
        next.active = t.slot;
        next.trial = None;
        if let Some(img) = next.image(t.slot) {
            let v = img.version.clone();
            if next
                .min_version
                .as_ref()
                .is_none_or(|m| v.cmp_precedence(m).is_gt())
            {
                next.min_version = Some(v);
            }
        }
        self.persist(next)
    }

    fn roll_back(&mut self) -> Result<(), SlotError> {
        let Some(t) = self.state.trial.clone() else {
            return Err(SlotError::State("no trial to roll back"));
        };
        let mut next = self.state.clone();
        next.trial = None;
        next.images[t.slot.index()] = None;
        self.persist(next)
    }
}

fn state_bytes(s: &BootState) -> Vec<u8> {
    serde_json::to_vec_pretty(s).unwrap_or_default()
}

/// Replaces `dir/name` with `bytes` atomically: a temporary file, fsync, rename,
/// fsync of the directory. A crash leaves the old or the new file, never a mix.
///
/// # Errors
/// [`SlotError::Io`].
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), SlotError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let mut f = File::create(&tmp).map_err(io(format!("create {}", tmp.display())))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io(format!("write {}", tmp.display())))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io(format!("rename to {}", path.display())))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("sync {}", dir.display())))
}
