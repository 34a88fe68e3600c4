//! Model-based test of the A/B slots (issue 17): random events on `FileSlots`
//! (boot, crash, a torn write of the state file, writing an image in pieces,
//! corrupt bytes, a resumed download, a new manifest mid-update, mark for trial,
//! confirm, roll back, the confirm deadline passing) against a reference model of
//! the boot loader. After every event:
//!
//! - the state is consistent and is the model's; `slots.json` on disk holds it;
//! - the running slot holds a verified image (the factory one, or one whose
//!   recorded size and SHA-256 are its file's), as does every bootable slot;
//! - the active slot changes only by confirm, the anti-rollback minimum never
//!   falls and rises only by confirm;
//! - writing (and reading, cutting, marking) is refused during a trial, a trial
//!   that used up its boots falls back, and every refused operation is a
//!   `SlotError::State` (a write past the capacity `SlotError::NoSpace`), never a
//!   panic.
//!
//! A smaller property drives the OTA agent itself (`OtaRig` on file slots)
//! through random deliveries (newer, a downgrade, a tampered image, the same
//! manifest again, a newer one mid-download), reboots at any moment and health
//! verdicts (healthy, failed, never ready: the confirm deadline passes), with
//! the broker delivering again what was not acknowledged. After every reboot the
//! slots are consistent, a verified image runs and the minimum is the active
//! version, never lower than before; at the end (rebooted until nothing is left
//! to do) no trial and no update in the record are left, the active version is
//! the last confirmed, every update that started ended, none was confirmed
//! twice.
//!
//! Regression (in `ota_model.proptest-regressions`): a download superseded by a
//! newer manifest could publish a progress status after its `Failed
//! (Superseded)` (the progress task outlived the job), so upstream saw it
//! downloading again; and a finished download's last progress could follow
//! `Verifying`.

#![allow(clippy::many_single_char_names)]

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::gateway::path;
use common::ota::{OtaRig, body_for, factory, keys, sign};
use iiot_core::types::{OtaState, OtaStatus, Timestamp};
use iiot_edge::ota::{
    AgentState, BootEvent, BootState, FileFetch, FileSlots, FileSlotsConfig, Health, ImageInfo,
    Slot, SlotBackend, SlotError, TrustStore,
};
use proptest::prelude::*;
use sha2::{Digest as _, Sha256};

/// Bytes one slot holds.
const CAPACITY: u64 = 16 << 10;

/// The images a case can write: the factory image (index 0, no bytes: it is
/// in slot A from the factory), and four updates, one a downgrade (0.9.0),
/// one a single byte, one exactly the capacity.
fn catalogue() -> Vec<(ImageInfo, Vec<u8>)> {
    let mut all = vec![(factory(), Vec::new())];
    for (i, (version, len)) in [
        ("0.9.0", 5_000usize),
        ("1.1.0", 12_000),
        ("1.2.0", 1),
        ("2.0.0", CAPACITY as usize),
    ]
    .into_iter()
    .enumerate()
    {
        let bytes: Vec<u8> = (0..len)
            .map(|b| (b as u8).wrapping_mul(7).wrapping_add(i as u8 * 50 + 1))
            .collect();
        let info = ImageInfo {
            firmware_id: "pump-ctrl".into(),
            version: semver::Version::parse(version).unwrap(),
            size: len as u64,
            sha256: Sha256::digest(&bytes).into(),
        };
        all.push((info, bytes));
    }
    all
}

#[derive(Debug, Clone)]
enum Op {
    /// A power cycle: open the slots from disk again, then `boot()`.
    Boot,
    /// The process dies: open the slots from disk again, without `boot()`.
    Crash,
    /// The process dies while replacing `slots.json`: its temporary file is
    /// left half written; then as `Crash`.
    TornStateWrite,
    /// `boot()` a second time in the same process.
    BootAgain,
    /// A manifest for image `k` (1..): the writable slot is emptied for it; an
    /// update in progress gives way.
    Manifest(usize),
    /// A manifest for image `k` and all of its image, without a break.
    Download(usize),
    /// The next `n` bytes of the image being downloaded.
    Write(usize),
    /// `n` bytes no image has (a spoilt transfer).
    Garbage(usize),
    /// A resumed download: what the slot has is read back, then cut to the
    /// given share of it (per mille) and written on from there.
    Resume(u16),
    /// Mark the writable slot for trial as holding image `k` (`None`: the one
    /// being downloaded), with `max_boots`.
    Mark(Option<usize>, u32),
    /// The health check passed.
    Confirm,
    /// The health check failed.
    RollBack,
    /// The confirm deadline passed (the agent rolls back).
    Timeout,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Boot),
        1 => Just(Op::Crash),
        1 => Just(Op::TornStateWrite),
        1 => Just(Op::BootAgain),
        2 => (1usize..5).prop_map(Op::Manifest),
        4 => (1usize..5).prop_map(Op::Download),
        6 => (1usize..8_000).prop_map(Op::Write),
        2 => (1usize..6_000).prop_map(Op::Garbage),
        1 => (0u16..=1000).prop_map(Op::Resume),
        3 => (0u32..4).prop_map(|b| Op::Mark(None, b)),
        1 => ((0usize..5), (0u32..4)).prop_map(|(k, b)| Op::Mark(Some(k), b)),
        4 => Just(Op::Confirm),
        1 => Just(Op::RollBack),
        1 => Just(Op::Timeout),
    ]
}

/// What the boot loader's state must be, in terms of catalogue indices.
#[derive(Debug, Clone)]
struct Model {
    active: Slot,
    /// The image recorded for each slot (A, B).
    images: [Option<usize>; 2],
    /// The slot on trial, its boots so far, its boot limit.
    trial: Option<(Slot, u32, u32)>,
    /// Index of the image the anti-rollback minimum is the version of.
    min: Option<usize>,
    /// What each slot's file holds.
    files: [Vec<u8>; 2],
    /// The image being downloaded into the writable slot.
    download: Option<usize>,
    /// `boot()` was called since the slots were opened.
    booted: bool,
    /// The confirm deadline given when the trial was marked.
    confirm_by: Option<Timestamp>,
}

fn ix(s: Slot) -> usize {
    match s {
        Slot::A => 0,
        Slot::B => 1,
    }
}

impl Model {
    fn new() -> Self {
        Self {
            active: Slot::A,
            images: [Some(0), None],
            trial: None,
            min: None,
            files: [Vec::new(), Vec::new()],
            download: None,
            booted: false,
            confirm_by: None,
        }
    }

    fn writable(&self) -> Option<Slot> {
        self.trial.is_none().then(|| self.active.other())
    }

    fn running(&self) -> Slot {
        match self.trial {
            Some((s, boots, _)) if boots > 0 => s,
            _ => self.active,
        }
    }
}

fn config() -> FileSlotsConfig {
    FileSlotsConfig {
        capacity: CAPACITY,
        factory: factory(),
    }
}

fn open(dir: &Path) -> FileSlots {
    FileSlots::open(dir, config()).expect("the slots open")
}

/// The operation was refused as not fitting the state.
fn refused<T: std::fmt::Debug>(r: &Result<T, SlotError>) -> bool {
    matches!(r, Err(SlotError::State(_)))
}

fn check(ops: &[Op]) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cat = catalogue();
    let mut slots = open(dir);
    let mut m = Model::new();
    let t0 = Timestamp::now();
    for (step, op) in ops.iter().enumerate() {
        let before = slots.state().clone();
        let what = format!("step {step} {op:?}");
        match op {
            Op::Boot | Op::Crash | Op::TornStateWrite => {
                if matches!(op, Op::TornStateWrite) {
                    std::fs::write(dir.join(".slots.json.tmp"), b"{\"active\": \"b\", \"ima")
                        .unwrap();
                }
                drop(slots);
                slots = open(dir);
                m.booted = false;
                if matches!(op, Op::Boot) {
                    boot(&mut slots, &mut m, &cat, &what)?;
                }
            }
            Op::BootAgain => {
                if m.booted {
                    let r = slots.boot();
                    prop_assert!(refused(&r), "{what}: {r:?}");
                } else {
                    boot(&mut slots, &mut m, &cat, &what)?;
                }
            }
            Op::Manifest(k) | Op::Download(k) => {
                let r = slots.truncate(0);
                match m.writable() {
                    None => prop_assert!(refused(&r), "{what}: {r:?}"),
                    Some(w) => {
                        prop_assert!(r.is_ok(), "{what}: {r:?}");
                        m.files[ix(w)].clear();
                        m.images[ix(w)] = None;
                        m.download = Some(*k);
                        if matches!(op, Op::Download(_)) {
                            let img = &cat[*k].1;
                            for c in img.chunks(4096) {
                                let r = slots.write(c);
                                prop_assert!(r.is_ok(), "{what}: {r:?}");
                            }
                            let r = slots.sync();
                            prop_assert!(r.is_ok(), "{what}: {r:?}");
                            m.files[ix(w)].clone_from(img);
                        }
                    }
                }
            }
            Op::Write(n) | Op::Garbage(n) => {
                let data: Vec<u8> = match (op, m.download, m.writable()) {
                    (Op::Write(_), Some(k), Some(w)) => {
                        let have = m.files[ix(w)].len();
                        let img = &cat[k].1;
                        if have >= img.len() || !img.starts_with(&m.files[ix(w)]) {
                            continue;
                        }
                        img[have..(have + n).min(img.len())].to_vec()
                    }
                    (Op::Write(_), None, Some(_)) => continue,
                    _ => vec![0xa5; *n],
                };
                let r = slots.write(&data);
                match m.writable() {
                    None => prop_assert!(refused(&r), "{what}: {r:?}"),
                    Some(w) => {
                        let size = (m.files[ix(w)].len() + data.len()) as u64;
                        if size > CAPACITY {
                            prop_assert!(
                                matches!(r, Err(SlotError::NoSpace { size: s, capacity: CAPACITY }) if s == size),
                                "{what}: {r:?}"
                            );
                        } else {
                            prop_assert!(r.is_ok(), "{what}: {r:?}");
                            m.files[ix(w)].extend_from_slice(&data);
                            // Changed bytes: the slot's recorded image is forgotten.
                            m.images[ix(w)] = None;
                        }
                        let r = slots.sync();
                        prop_assert!(r.is_ok(), "{what}: {r:?}");
                    }
                }
            }
            Op::Resume(per_mille) => {
                let r = slots.written();
                match m.writable() {
                    None => {
                        prop_assert!(refused(&r), "{what}: written {r:?}");
                        let mut buf = [0u8; 16];
                        let r = slots.read(0, &mut buf);
                        prop_assert!(refused(&r), "{what}: read {r:?}");
                        let r = slots.truncate(0);
                        prop_assert!(refused(&r), "{what}: truncate {r:?}");
                    }
                    Some(w) => {
                        let have = r.map_err(|e| TestCaseError::fail(format!("{what}: {e}")))?;
                        let file = &m.files[ix(w)];
                        prop_assert_eq!(have, file.len() as u64, "{}: written", what);
                        let mut back = Vec::new();
                        let mut buf = vec![0u8; 4096];
                        loop {
                            let n = slots
                                .read(back.len() as u64, &mut buf)
                                .map_err(|e| TestCaseError::fail(format!("{what}: {e}")))?;
                            if n == 0 {
                                break;
                            }
                            back.extend_from_slice(&buf[..n]);
                        }
                        prop_assert!(back == *file, "{}: read back differs", what);
                        let keep = file.len() * usize::from(*per_mille) / 1000;
                        let r = slots.truncate(keep as u64);
                        prop_assert!(r.is_ok(), "{what}: {r:?}");
                        m.files[ix(w)].truncate(keep);
                        m.images[ix(w)] = None;
                    }
                }
            }
            Op::Mark(k, max_boots) => {
                let k = k.or(m.download).unwrap_or(1);
                let (info, bytes) = &cat[k];
                let holds = m.writable().map(|w| &m.files[ix(w)]);
                if holds.is_some_and(|f| f.len() == bytes.len() && f != bytes) {
                    // Spoilt bytes of the right length: the download's hash
                    // check stops them; the slots take the caller's word.
                    continue;
                }
                let now = t0.saturating_add(Duration::from_secs(step as u64));
                let by = now.saturating_add(Duration::from_secs(600));
                let r = slots.mark_for_trial(info.clone(), *max_boots, now, by);
                match m.writable() {
                    Some(w) if m.files[ix(w)] == *bytes => {
                        prop_assert!(r.is_ok(), "{what}: {r:?}");
                        m.images[ix(w)] = Some(k);
                        m.trial = Some((w, 0, (*max_boots).max(1)));
                        m.download = None;
                        m.confirm_by = Some(by);
                    }
                    _ => prop_assert!(refused(&r), "{what}: {r:?}"),
                }
            }
            Op::Confirm => {
                let r = slots.confirm();
                match m.trial {
                    Some((s, boots, _)) if boots > 0 => {
                        prop_assert!(r.is_ok(), "{what}: {r:?}");
                        m.active = s;
                        m.trial = None;
                        let v = m.images[ix(s)].expect("a trial slot holds an image");
                        if m.min.is_none_or(|i| {
                            cat[v].0.version.cmp_precedence(&cat[i].0.version).is_gt()
                        }) {
                            m.min = Some(v);
                        }
                    }
                    _ => prop_assert!(refused(&r), "{what}: {r:?}"),
                }
            }
            Op::RollBack | Op::Timeout => {
                if matches!(op, Op::Timeout) {
                    let Some(t) = slots.state().trial.clone() else {
                        continue;
                    };
                    prop_assert_eq!(Some(t.confirm_by), m.confirm_by, "{}", what);
                }
                let r = slots.roll_back();
                match m.trial {
                    Some((s, _, _)) => {
                        prop_assert!(r.is_ok(), "{what}: {r:?}");
                        m.images[ix(s)] = None;
                        m.trial = None;
                    }
                    None => prop_assert!(refused(&r), "{what}: {r:?}"),
                }
            }
        }
        invariants(dir, &slots, &before, &m, &cat, op, &what)?;
    }
    Ok(())
}

/// `boot()` on freshly opened slots, against the model.
fn boot(
    slots: &mut FileSlots,
    m: &mut Model,
    cat: &[(ImageInfo, Vec<u8>)],
    what: &str,
) -> Result<(), TestCaseError> {
    let r = slots.boot();
    m.booted = true;
    let expected = match m.trial {
        None => BootEvent::Normal,
        Some((s, boots, max)) if boots >= max => {
            let image = m.images[ix(s)].map(|i| cat[i].0.clone());
            m.images[ix(s)] = None;
            m.trial = None;
            BootEvent::FellBack { image }
        }
        Some((s, boots, max)) => {
            m.trial = Some((s, boots + 1, max));
            BootEvent::Trial { boots: boots + 1 }
        }
    };
    match r {
        Ok(e) => prop_assert_eq!(e, expected, "{}", what),
        Err(e) => prop_assert!(false, "{what}: boot failed: {e}"),
    }
    Ok(())
}

/// `slot`'s image is the factory one, or its file holds exactly its bytes.
fn verified(slots: &FileSlots, slot: Slot, info: &ImageInfo) -> bool {
    if *info == factory() {
        return true;
    }
    let bytes = std::fs::read(slots.slot_path(slot)).unwrap_or_default();
    bytes.len() as u64 == info.size && <[u8; 32]>::from(Sha256::digest(&bytes)) == info.sha256
}

fn invariants(
    dir: &Path,
    slots: &FileSlots,
    before: &BootState,
    m: &Model,
    cat: &[(ImageInfo, Vec<u8>)],
    op: &Op,
    what: &str,
) -> Result<(), TestCaseError> {
    let st = slots.state();
    prop_assert!(st.is_consistent(), "{what}: inconsistent {st:?}");
    // The model's state, and what is on disk.
    prop_assert_eq!(st.active, m.active, "{}", what);
    for s in [Slot::A, Slot::B] {
        prop_assert_eq!(
            st.image(s),
            m.images[ix(s)].map(|i| &cat[i].0),
            "{}: slot {:?}",
            what,
            s
        );
    }
    prop_assert_eq!(
        st.trial.as_ref().map(|t| (t.slot, t.boots, t.max_boots)),
        m.trial,
        "{}",
        what
    );
    prop_assert_eq!(
        st.min_version.as_ref(),
        m.min.map(|i| &cat[i].0.version),
        "{}",
        what
    );
    let disk = FileSlots::open(dir, config())
        .map_err(|e| TestCaseError::fail(format!("{what}: reopen: {e}")))?;
    prop_assert_eq!(disk.state(), st, "{}: slots.json is not the state", what);
    // A verified image runs, and every slot that may boot holds one.
    prop_assert_eq!(st.running(), m.running(), "{}", what);
    let running = st.running_image();
    prop_assert!(
        running.is_some_and(|i| verified(slots, st.running(), i)),
        "{what}: the running slot {:?} holds {running:?}",
        st.running()
    );
    // (Only those: `write` leaves the writable slot's record as it was, so
    // after a confirm the old slot may be recorded as holding what appending
    // changed; the agent always cuts before it writes.)
    let bootable = std::iter::once(st.active).chain(st.trial.as_ref().map(|t| t.slot));
    for s in bootable {
        let img = st.image(s);
        prop_assert!(
            img.is_some_and(|i| verified(slots, s, i)),
            "{what}: bootable slot {s:?} holds {img:?}"
        );
    }
    // The active slot and the minimum move by confirm only, the minimum up.
    if !matches!(op, Op::Confirm) {
        prop_assert_eq!(st.active, before.active, "{}: active changed", what);
        prop_assert_eq!(&st.min_version, &before.min_version, "{}", what);
    } else if let Some(prev) = &before.min_version {
        let now = st.min_version.as_ref();
        prop_assert!(
            now.is_some_and(|v| v.cmp_precedence(prev).is_ge()),
            "{what}: the minimum fell from {prev} to {now:?}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn file_slots_match_the_model(ops in prop::collection::vec(op(), 1..80)) {
        check(&ops)?;
    }
}

// The agent itself, through `OtaRig` (see the file's doc).

#[derive(Debug, Clone)]
enum AgentOp {
    /// The broker delivers manifest `k`.
    Deliver(usize),
    /// The gateway stops and starts again (at once, whatever it was doing).
    Reboot,
    /// What the health check says from now on.
    Health(u8),
    /// Wait until the agent has nothing more to do without a reboot.
    Settle,
}

fn agent_op() -> impl Strategy<Value = AgentOp> {
    prop_oneof![
        3 => (0usize..2).prop_map(AgentOp::Deliver),
        1 => (2usize..RELEASES.len()).prop_map(AgentOp::Deliver),
        3 => Just(AgentOp::Reboot),
        2 => (0u8..3).prop_map(AgentOp::Health),
        2 => Just(AgentOp::Settle),
    ]
}

/// Version, image length, whether the manifest's hash is the image's.
const RELEASES: [(&str, usize, bool); 4] = [
    ("1.1.0", 96 << 10, true),
    ("1.2.0", 40 << 10, true),
    ("0.9.0", 8 << 10, true),
    ("1.3.0", 20 << 10, false),
];

fn health_of(h: u8) -> Health {
    match h {
        0 => Health::Healthy,
        1 => Health::Failed("the PLC does not answer".into()),
        _ => Health::NotYet("still starting".into()),
    }
}

struct AgentCase {
    dir: tempfile::TempDir,
    manifests: Vec<Vec<u8>>,
    trust: TrustStore,
    health: Arc<Mutex<u8>>,
    statuses: Vec<OtaStatus>,
}

impl AgentCase {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (_, k2, trust) = keys();
        let manifests = RELEASES
            .iter()
            .enumerate()
            .map(|(i, (version, len, honest))| {
                let img: Vec<u8> = (0..*len).map(|b| (b as u8) ^ (i as u8 * 40)).collect();
                let p = dir.path().join(format!("fw-{version}.bin"));
                std::fs::write(&p, &img).unwrap();
                let mut body = body_for(&img, version, p.to_str().unwrap());
                if !honest {
                    body.sha256[0] ^= 1;
                }
                sign(&body, &[("k2", &k2)])
            })
            .collect();
        Self {
            dir,
            manifests,
            trust,
            health: Arc::new(Mutex::new(0)),
            statuses: Vec::new(),
        }
    }

    fn slots_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("slots")
    }

    async fn start(&self) -> OtaRig {
        let mut cfg = common::ota::config();
        cfg.confirm_within = Duration::from_millis(300);
        cfg.max_boots = 2;
        let health = self.health.clone();
        let check = move || {
            let h = *health.lock().unwrap();
            async move { health_of(h) }
        };
        OtaRig::start(
            self.dir.path(),
            FileSlots::open(
                self.slots_dir(),
                FileSlotsConfig {
                    capacity: 1 << 20,
                    factory: factory(),
                },
            )
            .unwrap(),
            FileFetch::new(),
            check,
            self.trust.clone(),
            cfg,
        )
        .await
    }
}

fn deliver(rig: &OtaRig, manifest: Vec<u8>) -> tokio::task::JoinHandle<bool> {
    let sender = rig.sender.clone();
    tokio::spawn(async move {
        sender
            .deliver(path().ota_notification().to_string(), manifest, false)
            .await
            .is_ok()
    })
}

/// A delivery of manifest `k`: waiting for its acknowledgement, or answered
/// (acknowledged or not: the agent stopped first).
enum Sent {
    Waiting(usize, tokio::task::JoinHandle<bool>),
    Answered(usize, bool),
}

/// Waits until the agent handled every delivery (or needs a reboot, when it
/// takes none), booted (a delivery on another topic, acknowledged once the
/// agent takes deliveries), and has nothing to do but wait: a reboot it needs,
/// or no download, verification or trial in progress.
async fn settle(rig: &OtaRig, sent: &mut [Sent]) -> Result<(), TestCaseError> {
    let h = rig.ota().clone();
    let busy = |s: &AgentState| {
        !s.reboot_required
            && matches!(
                s.state,
                OtaState::Downloading
                    | OtaState::Verifying
                    | OtaState::Installed
                    | OtaState::TrialBoot
            )
    };
    let done = async {
        for d in sent.iter_mut() {
            if let Sent::Waiting(k, task) = d {
                tokio::select! {
                    r = task => *d = Sent::Answered(*k, r.unwrap_or(false)),
                    _ = h.wait_for(|s| s.reboot_required) => return,
                }
            }
        }
        let sender = rig.sender.clone();
        tokio::select! {
            _ = sender.deliver(format!("{}/ping", path()), b"ping".to_vec(), false) => {}
            _ = h.wait_for(|s| s.reboot_required) => return,
        }
        h.wait_for(|s| !busy(s)).await;
    };
    match tokio::time::timeout(Duration::from_secs(10), done).await {
        Ok(()) => Ok(()),
        Err(_) => Err(TestCaseError::fail(format!(
            "the agent did not settle: {:?}",
            h.state()
        ))),
    }
}

/// What a stopped device must look like: a consistent state, a verified image
/// running, the minimum never lower than at the last check and the version of
/// the active slot (confirmed, it is the highest yet: only newer ones install).
fn check_stopped(
    case: &AgentCase,
    min: &mut Option<semver::Version>,
    what: &str,
) -> Result<(), TestCaseError> {
    let slots = FileSlots::open(case.slots_dir(), config())
        .map_err(|e| TestCaseError::fail(format!("{what}: the slots do not open: {e}")))?;
    let st = slots.state();
    prop_assert!(st.is_consistent(), "{what}: {st:?}");
    let running = st.running_image();
    prop_assert!(
        running.is_some_and(|i| verified(&slots, st.running(), i)),
        "{what}: the running slot holds {running:?}"
    );
    let active = st.image(st.active).map(|i| i.version.clone());
    if st.min_version.is_some() {
        prop_assert_eq!(&st.min_version, &active, "{}: {:?}", what, st);
    } else {
        prop_assert_eq!(active, Some(factory().version), "{}: {:?}", what, st);
    }
    prop_assert!(
        min.as_ref()
            .is_none_or(|m| st.min_version.as_ref().is_some_and(|v| v >= m)),
        "{what}: the minimum fell from {min:?} to {:?}",
        st.min_version
    );
    min.clone_from(&st.min_version);
    Ok(())
}

async fn check_agent(ops: Vec<AgentOp>) -> Result<(), TestCaseError> {
    let mut case = AgentCase::new();
    let mut rig = case.start().await;
    let mut sent: Vec<Sent> = Vec::new();
    let mut min = None;
    for (step, op) in ops.iter().enumerate() {
        let what = format!("step {step} {op:?}");
        match op {
            AgentOp::Deliver(k) => {
                sent.push(Sent::Waiting(*k, deliver(&rig, case.manifests[*k].clone())));
            }
            AgentOp::Health(h) => *case.health.lock().unwrap() = *h,
            AgentOp::Settle => settle(&rig, &mut sent)
                .await
                .map_err(|e| TestCaseError::fail(format!("{what}: {e}")))?,
            AgentOp::Reboot => {
                case.statuses.extend(rig.stop().await);
                check_stopped(&case, &mut min, &what)?;
                rig = reboot_start(&mut case, &mut sent).await;
            }
        }
        while let Ok(s) = rig.statuses.try_recv() {
            case.statuses.push(s);
        }
    }
    // Reboot until nothing is left to do (no trial, no update in the record,
    // every delivery acknowledged): a trial ends whatever the health check says.
    let mut round = 0;
    loop {
        settle(&rig, &mut sent).await?;
        case.statuses.extend(rig.stop().await);
        check_stopped(&case, &mut min, "finishing")?;
        answer(&mut sent).await;
        let slots = FileSlots::open(case.slots_dir(), config()).unwrap();
        let record =
            std::fs::read_to_string(case.dir.path().join("ota/update.json")).unwrap_or_default();
        let acked = sent.iter().all(|d| matches!(d, Sent::Answered(_, true)));
        if slots.state().trial.is_none() && !record.contains("pending") && acked {
            break;
        }
        round += 1;
        prop_assert!(
            round < 6,
            "not done after 6 reboots: {:?}; {record}; {:?}",
            slots.state(),
            case.statuses
        );
        rig = reboot_start(&mut case, &mut sent).await;
    }
    // Once more, for the statuses a stop left in the control lane (reported
    // while the gateway was shutting down): they go out on the next start.
    let rig = reboot_start(&mut case, &mut sent).await;
    settle(&rig, &mut sent).await?;
    case.statuses.extend(rig.stop().await);
    check_stopped(&case, &mut min, "at the end")?;
    let slots = FileSlots::open(case.slots_dir(), config()).unwrap();
    let st = slots.state();
    let confirmed: Vec<semver::Version> = case
        .statuses
        .iter()
        .filter(|s| s.state == OtaState::Confirmed)
        .map(|s| semver::Version::parse(&s.version).unwrap())
        .collect();
    prop_assert_eq!(
        st.image(st.active).map(|i| i.version.clone()),
        Some(confirmed.last().cloned().unwrap_or(factory().version)),
        "the active version is not the last confirmed: {:?}",
        case.statuses
    );
    prop_assert_eq!(
        st.min_version.clone(),
        confirmed.iter().max().cloned(),
        "the minimum is not the highest confirmed"
    );
    prop_assert!(st.trial.is_none(), "{st:?}");
    // Every update that started ended.
    for (i, s) in case.statuses.iter().enumerate() {
        if s.state == OtaState::Downloading {
            prop_assert!(
                case.statuses[i..].iter().any(|e| e.version == s.version
                    && matches!(
                        e.state,
                        OtaState::Confirmed
                            | OtaState::RolledBack
                            | OtaState::Rejected
                            | OtaState::Failed
                    )),
                "{} never ended: {:?}",
                s.version,
                case.statuses
            );
        }
    }
    // None confirmed twice (the same status sent again by the control lane,
    // which delivers at least once, has the same time).
    let confirms: std::collections::HashSet<(&str, Timestamp)> = case
        .statuses
        .iter()
        .filter(|s| s.state == OtaState::Confirmed)
        .map(|s| (s.version.as_str(), s.time))
        .collect();
    let versions: std::collections::HashSet<&str> = confirms.iter().map(|c| c.0).collect();
    prop_assert_eq!(
        confirms.len(),
        versions.len(),
        "confirmed twice: {:?}",
        case.statuses
    );
    Ok(())
}

/// Waits for the answer to every delivery (the gateway stopped: each comes).
async fn answer(sent: &mut [Sent]) {
    for d in sent.iter_mut() {
        if let Sent::Waiting(k, task) = d {
            *d = Sent::Answered(*k, task.await.unwrap_or(false));
        }
    }
}

/// Starts the gateway again (stopped); the broker delivers again what was not
/// acknowledged.
async fn reboot_start(case: &mut AgentCase, sent: &mut Vec<Sent>) -> OtaRig {
    answer(sent).await;
    let again: Vec<usize> = sent
        .drain(..)
        .filter_map(|d| match d {
            Sent::Answered(k, false) => Some(k),
            _ => None,
        })
        .collect();
    let rig = case.start().await;
    for k in again {
        sent.push(Sent::Waiting(k, deliver(&rig, case.manifests[k].clone())));
    }
    rig
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_agent_keeps_the_slots_sound(ops in prop::collection::vec(agent_op(), 1..12)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(check_agent(ops))?;
    }
}
