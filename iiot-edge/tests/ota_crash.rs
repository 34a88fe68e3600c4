//! Power loss during a firmware update (issue 17): a child gateway runs one
//! update from manifest to confirm (download into the slot with an fsync every
//! 64 KiB, so a restart resumes; installed; a "reboot", the gateway stopped and
//! started again in the same process on the same directory; trial boot; health
//! check; confirmed), printing every status it sees. The parent SIGKILLs it right
//! after each of those lines in turn and at random moments, then checks the
//! slots the way the boot loader would find them (the state file parses and is
//! consistent, a verified image runs), restarts the agent on the same directory
//! with the manifest delivered again (as the broker redelivers an unacknowledged
//! or retained one) and drives it to the end: the update is confirmed, the new
//! slot holds the image, the anti-rollback minimum is the new version, and no
//! status ever said rejected, failed or rolled back.
//!
//! Some trials kill twice: the child is started again on the same directory
//! (it resumes) and killed once more before the parent finishes the update.
//!
//! Regression: a kill after the agent forgot a confirmed update (`update.json`)
//! but before its `Confirmed` status was in the control lane lost that status
//! for good (the device ran the new version, upstream's last word was
//! `TrialBoot`); the same order lost `RolledBack`, `Rejected` and `Failed`. The
//! agent now reports first and forgets after.
//!
//! The child is this test binary re-executed with `IIOT_OTA_CHILD` set. Kill
//! points come from a seed printed on failure, with the trial:
//! `IIOT_OTA_SEED=<n> IIOT_OTA_TRIAL=<k>` replays that plan (the moments are
//! then as close as timing allows).

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::gateway::path;
use common::ota::{OtaRig, body_for, factory, sign};
use iiot_core::ota::{FetchError, ImageBody, ImageFetch, Opened};
use iiot_core::types::{OtaState, OtaStatus, SignatureAlgorithm};
use iiot_edge::ota::{
    AgentState, BootState, FileSlots, FileSlotsConfig, Health, ImageInfo, OtaConfig, PublicKey,
    SigningKey, Slot, SlotBackend as _, TrustStore, TrustedKey,
};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use sha2::{Digest as _, Sha256};

const CHILD_ENV: &str = "IIOT_OTA_CHILD";
const RELEASE_ENV: &str = "IIOT_OTA_RELEASE";
const SEED_ENV: &str = "IIOT_OTA_SEED";
/// With the seed: run only this trial.
const TRIAL_ENV: &str = "IIOT_OTA_TRIAL";
/// Trials after the undisturbed one.
const TRIALS: usize = 110;
/// Trials running at once.
const PARALLEL: usize = 3;
const IMAGE_LEN: usize = 1 << 20;
const CAPACITY: u64 = 4 << 20;
const NEW: &str = "1.1.0";
const URL: &str = "https://images.example/pump-ctrl-1.1.0.bin";
const CHUNK: usize = 64 << 10;

fn new_version() -> semver::Version {
    semver::Version::parse(NEW).unwrap()
}

/// Small windows: an fsync of the slot every chunk (64 KiB), a progress status
/// every 256 KiB, and enough trial boots for two kills during the trial.
fn ota_config() -> OtaConfig {
    let mut c = common::ota::config();
    c.sync_every = CHUNK as u64;
    c.progress_every = 256 << 10;
    c.max_boots = 5;
    c
}

fn slots_config() -> FileSlotsConfig {
    FileSlotsConfig {
        capacity: CAPACITY,
        factory: factory(),
    }
}

async fn healthy() -> Health {
    Health::Healthy
}

/// The update every trial runs: the image, its signed manifest (the image is
/// served from a file) and a trust store with the key that signed it. The
/// parent writes it to a directory the children read.
struct Release {
    image: Arc<Vec<u8>>,
    manifest: Vec<u8>,
    trust: TrustStore,
}

impl Release {
    fn create(dir: &Path) -> Self {
        let image: Vec<u8> = (0..IMAGE_LEN)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add((i >> 12) as u8))
            .collect();
        std::fs::write(dir.join("fw.bin"), &image).unwrap();
        let key = SigningKey::generate(SignatureAlgorithm::Ed25519);
        let manifest = sign(&body_for(&image, NEW, URL), &[("k1", &key)]);
        std::fs::write(dir.join("manifest.bin"), &manifest).unwrap();
        std::fs::write(dir.join("release.pem"), key.public().to_pem()).unwrap();
        Self::load(dir)
    }

    fn load(dir: &Path) -> Self {
        let pem = std::fs::read_to_string(dir.join("release.pem")).unwrap();
        let key = PublicKey::from_pem(&pem).unwrap();
        Self {
            image: Arc::new(std::fs::read(dir.join("fw.bin")).unwrap()),
            manifest: std::fs::read(dir.join("manifest.bin")).unwrap(),
            trust: TrustStore::new().with_key("k1", TrustedKey::new(key)),
        }
    }

    fn sha256(&self) -> [u8; 32] {
        Sha256::digest(self.image.as_slice()).into()
    }
}

/// How a status shows in the child's output (and in the parent's view of what
/// went upstream): `STATUS <version> <state> <bytes_done>`.
fn status_line(s: &OtaStatus) -> String {
    let done = s
        .bytes_done
        .map_or_else(|| "-".to_owned(), |b| b.to_string());
    format!("STATUS {} {:?} {done}", s.version, s.state)
}

fn is_step(line: &str) -> bool {
    ["START ", "STATUS ", "FETCH ", "REBOOT", "DONE"]
        .iter()
        .any(|p| line.starts_with(p))
}

fn failed(s: &AgentState) -> bool {
    matches!(
        s.state,
        OtaState::Rejected | OtaState::Failed | OtaState::RolledBack
    )
}

/// What [`drive`] saw.
struct Driven {
    /// Every status that went upstream.
    seen: Vec<OtaStatus>,
    /// The agent's last state.
    last: AgentState,
    /// The offsets the image was opened at.
    opens: Vec<u64>,
}

/// The image server: serves the image from `offset` in chunks of 64 KiB (one
/// fsync of the slot each, so a kill mid-download leaves most of it), and
/// notes where each attempt starts (with `print`, prints `FETCH <offset>`).
#[derive(Clone)]
struct Fetch {
    image: Arc<Vec<u8>>,
    opens: Arc<Mutex<Vec<u64>>>,
    print: bool,
}

struct Body {
    image: Arc<Vec<u8>>,
    at: usize,
}

impl ImageFetch for Fetch {
    type Body = Body;

    async fn open(&self, url: &str, offset: u64) -> Result<Opened<Body>, FetchError> {
        assert_eq!(url, URL);
        if self.print {
            println!("FETCH {offset}");
        }
        self.opens.lock().unwrap().push(offset);
        let len = self.image.len() as u64;
        Ok(Opened {
            body: Body {
                image: self.image.clone(),
                at: offset.min(len) as usize,
            },
            start: offset.min(len),
            total: Some(len),
        })
    }
}

impl ImageBody for Body {
    async fn chunk(&mut self) -> Result<Option<Bytes>, FetchError> {
        let end = (self.at + CHUNK).min(self.image.len());
        if self.at == end {
            return Ok(None);
        }
        let c = Bytes::copy_from_slice(&self.image[self.at..end]);
        self.at = end;
        Ok(Some(c))
    }
}

/// Held (read) by a "reboot" from stopping the gateway until it started again,
/// and (write) while spawning a child: a child between fork and exec holds a
/// copy of every descriptor, the outbox's lock file among them, so the stop's
/// close would not release the lock before the start takes it (`Locked`).
static REOPEN: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Runs the agent on `dir` until the update is confirmed, "rebooting" (stop,
/// start again on the same directory) whenever it asks to. Every start
/// delivers the manifest again, as the broker would. With `print`, prints
/// `START <n>` after each start, each status as it reaches the transport,
/// `REBOOT` before each stop.
async fn drive(dir: &Path, release: &Release, print: bool) -> Driven {
    let say = |line: &str| {
        if print {
            println!("{line}");
        }
    };
    let mut seen = Vec::new();
    let fetch = Fetch {
        image: release.image.clone(),
        opens: Arc::default(),
        print,
    };
    let mut reopening = None;
    for boot in 1..=6 {
        let backend = FileSlots::open(dir.join("slots"), slots_config()).unwrap();
        let mut rig = OtaRig::start(
            dir,
            backend,
            fetch.clone(),
            healthy,
            release.trust.clone(),
            ota_config(),
        )
        .await;
        drop(reopening.take());
        say(&format!("START {boot}"));
        let h = rig.ota().clone();
        let sender = rig.sender.clone();
        let manifest = release.manifest.clone();
        let mut ack = tokio::spawn(async move {
            sender
                .deliver(path().ota_notification().to_string(), manifest, false)
                .await
                .is_ok()
        });
        let mut acked = false;
        let run = async {
            loop {
                let st = h.state();
                if st.reboot_required || failed(&st) {
                    return st;
                }
                // Done: confirmed now, or found confirmed (the manifest then
                // acknowledged as handled before).
                let confirmed = st.state == OtaState::Confirmed
                    || (st.state == OtaState::Idle && st.running == Some(new_version()));
                if acked && confirmed {
                    return st;
                }
                tokio::select! {
                    s = rig.statuses.recv() => {
                        let s = s.expect("transport gone");
                        say(&status_line(&s));
                        seen.push(s);
                    }
                    r = &mut ack, if !acked => {
                        assert!(r.unwrap(), "the agent stopped before acknowledging");
                        acked = true;
                    }
                    _ = h.wait_for(|s| s.reboot_required || failed(s)) => {}
                }
            }
        };
        let st = tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .unwrap_or_else(|_| panic!("boot {boot}: stuck at {:?}; seen {seen:?}", h.state()));
        if st.reboot_required {
            say("REBOOT");
            reopening = Some(REOPEN.read().await);
        }
        for s in rig.stop().await {
            say(&status_line(&s));
            seen.push(s);
        }
        ack.abort();
        if !st.reboot_required {
            let opens = fetch.opens.lock().unwrap().clone();
            return Driven {
                seen,
                last: st,
                opens,
            };
        }
    }
    panic!("not done after 6 boots: {seen:?}");
}

/// The child. Does nothing as a normal test.
#[test]
fn ota_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let release = Release::load(Path::new(&std::env::var(RELEASE_ENV).unwrap()));
    // The harness's "test ota_child ... " has no newline: end it.
    println!();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        drive(Path::new(&dir), &release, true).await;
    });
    println!("DONE");
}

/// Kill the child `delay` after the `line`-th step line it prints (from 0).
#[derive(Debug, Clone, Copy)]
struct Kill {
    line: usize,
    delay: Duration,
}

/// A child's step lines, each with when it arrived (from the start).
struct Run {
    lines: Vec<(Duration, String)>,
    /// It printed `DONE` (the kill, if any, came too late).
    done: bool,
}

/// SIGKILLs the child it holds when dropped, even when the test fails.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill(); // SIGKILL, by pid
        let _ = self.0.wait();
    }
}

/// Runs the child on `dir`; kills it as `kill` says (or lets it finish).
fn run_child(release: &Path, dir: &Path, kill: Option<Kill>) -> Run {
    let stderr = dir.join("child-stderr.txt");
    let spawning = REOPEN.blocking_write();
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args(["ota_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir)
            .env(RELEASE_ENV, release)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap(),
    );
    drop(spawning);
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let give_up = start + Duration::from_secs(30);
    let mut kill_at = None;
    let mut lines = Vec::new();
    let take = |at: Instant, line: String, lines: &mut Vec<(Duration, String)>| {
        if is_step(&line) {
            lines.push((at - start, line));
        }
    };
    let ended = loop {
        let until = kill_at.unwrap_or(give_up);
        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok((at, line)) => {
                take(at, line, &mut lines);
                if let Some(k) = kill
                    && kill_at.is_none()
                    && lines.len() > k.line
                {
                    kill_at = Some(at + k.delay);
                }
            }
            Err(RecvTimeoutError::Timeout) => break false,
            Err(RecvTimeoutError::Disconnected) => break true,
        }
    };
    drop(child);
    reader.join().unwrap();
    for (at, line) in rx.try_iter() {
        take(at, line, &mut lines);
    }
    let done = lines.last().is_some_and(|(_, l)| l == "DONE");
    // Killed, or done; otherwise it failed (exited) or hung (no kill due).
    assert!(
        done || !(ended || kill_at.is_none()),
        "the child {} before DONE; its lines: {lines:?}; its stderr:\n{}",
        if ended { "exited" } else { "hung" },
        std::fs::read_to_string(&stderr).unwrap_or_default()
    );
    Run { lines, done }
}

/// What the boot loader finds after a kill: a state file that parses, slots that
/// open, a consistent state, every recorded image in its slot file, the running
/// one the factory image or the update.
fn check_after_kill(dir: &Path, release: &Release, ctx: &str) {
    let state_file = dir.join("slots").join("slots.json");
    if let Ok(raw) = std::fs::read(&state_file) {
        let parsed: Result<BootState, _> = serde_json::from_slice(&raw);
        assert!(
            parsed.is_ok(),
            "{ctx}: slots.json does not parse: {parsed:?}\n{}",
            String::from_utf8_lossy(&raw)
        );
    }
    if let Ok(raw) = std::fs::read(dir.join("ota").join("update.json")) {
        let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&raw);
        assert!(parsed.is_ok(), "{ctx}: update.json does not parse");
    }
    let slots = match FileSlots::open(dir.join("slots"), slots_config()) {
        Ok(s) => s,
        Err(e) => panic!("{ctx}: the slots do not open: {e}"),
    };
    let st = slots.state().clone();
    assert!(st.is_consistent(), "{ctx}: inconsistent: {st:?}");
    for slot in [Slot::A, Slot::B] {
        if let Some(img) = st.image(slot) {
            check_image(&slots, slot, img, release, &format!("{ctx}: slot {slot:?}"));
        }
    }
    assert!(
        st.running_image().is_some(),
        "{ctx}: nothing verified runs: {st:?}"
    );
    assert!(
        st.min_version.is_none() || st.min_version == Some(new_version()),
        "{ctx}: {st:?}"
    );
}

/// `img`, recorded for `slot`, is the factory image or the update, and the
/// slot's file holds exactly the update's bytes.
fn check_image(slots: &FileSlots, slot: Slot, img: &ImageInfo, release: &Release, ctx: &str) {
    if *img == factory() {
        return;
    }
    assert_eq!(img.version, new_version(), "{ctx}: {img:?}");
    assert_eq!(img.size, release.image.len() as u64, "{ctx}: {img:?}");
    assert_eq!(img.sha256, release.sha256(), "{ctx}: {img:?}");
    let bytes = std::fs::read(slots.slot_path(slot)).unwrap_or_default();
    assert_eq!(bytes.len() as u64, img.size, "{ctx}: slot file size");
    let got: [u8; 32] = Sha256::digest(&bytes).into();
    assert_eq!(got, img.sha256, "{ctx}: the slot file's SHA-256");
}

/// What a trial found.
#[derive(Default)]
struct Outcome {
    /// The first child run's step lines.
    first: Vec<(Duration, String)>,
    /// Kills that landed before the child was done.
    kills: usize,
    /// For each kill, the last step line before it (without its byte count).
    after: Vec<String>,
    /// Runs after a kill that opened the image past 0: they resumed.
    resumed: usize,
}

/// Prints the seed and the trial when the test fails.
struct OnFailure(String);

impl Drop for OnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("ota_crash failed: {}", self.0);
        }
    }
}

/// One trial in its own directory under `root`: the child killed at each of
/// `kills` in turn (`None`: it runs to the end), the slots checked after each
/// kill, then the update finished here.
async fn trial(
    root: PathBuf,
    release: Arc<Release>,
    kills: Vec<Option<Kill>>,
    ctx: String,
) -> Outcome {
    let _guard = OnFailure(ctx.clone());
    let dir = tempfile::tempdir_in(&root).unwrap();
    let mut out = Outcome::default();
    let mut upstream: Vec<String> = Vec::new();
    for (n, kill) in kills.into_iter().enumerate() {
        let (r, d) = (root.clone(), dir.path().to_path_buf());
        let run = tokio::task::spawn_blocking(move || run_child(&r, &d, kill))
            .await
            .unwrap();
        if n > 0
            && run
                .lines
                .iter()
                .any(|(_, l)| l.starts_with("FETCH ") && l != "FETCH 0")
        {
            out.resumed += 1;
        }
        if !run.done {
            out.kills += 1;
            let last = run.lines.last().map_or("", |(_, l)| l.as_str());
            out.after
                .push(last.split(' ').take(3).collect::<Vec<_>>().join(" "));
            check_after_kill(dir.path(), &release, &format!("{ctx}, after kill {n}"));
        }
        upstream.extend(
            run.lines
                .iter()
                .filter(|(_, l)| l.starts_with("STATUS "))
                .map(|(_, l)| l.clone()),
        );
        upstream.push(format!("(child run {n} ends here)"));
        if n == 0 {
            out.first = run.lines;
        }
    }
    let end = drive(dir.path(), &release, false).await;
    if end.opens.iter().any(|&o| o > 0) {
        out.resumed += 1;
    }
    upstream.extend(end.seen.iter().map(status_line));
    check_finished(dir.path(), &release, &end.last, &upstream, &ctx);
    out
}

fn check_finished(
    dir: &Path,
    release: &Release,
    last: &AgentState,
    upstream: &[String],
    ctx: &str,
) {
    let dump = || {
        let read = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap_or_default();
        format!(
            "upstream saw {upstream:#?}\nslots.json {}\nupdate.json {}",
            read("slots/slots.json"),
            read("ota/update.json")
        )
    };
    assert!(!failed(last), "{ctx}: the agent ended {last:?}; {}", dump());
    let upstream: Vec<&String> = upstream
        .iter()
        .filter(|l| l.starts_with("STATUS "))
        .collect();
    for l in &upstream {
        assert!(
            l.starts_with(&format!("STATUS {NEW} ")),
            "{ctx}: a status for another version: {l}"
        );
        for bad in ["Rejected", "Failed", "RolledBack"] {
            assert!(
                !l.contains(&format!(" {bad} ")),
                "{ctx}: the crash made the update end {bad}; {}",
                dump()
            );
        }
    }
    assert!(
        upstream.last().is_some_and(|l| l.contains(" Confirmed ")),
        "{ctx}: the last status upstream is not Confirmed; {}",
        dump()
    );
    let slots = FileSlots::open(dir.join("slots"), slots_config()).unwrap();
    let st = slots.state();
    assert!(st.is_consistent(), "{ctx}: {st:?}");
    assert!(st.trial.is_none(), "{ctx}: {st:?}");
    assert_eq!(st.active, Slot::B, "{ctx}: {st:?}");
    assert_eq!(st.min_version, Some(new_version()), "{ctx}: {st:?}");
    let img = st.image(Slot::B).unwrap_or_else(|| panic!("{ctx}: {st:?}"));
    check_image(&slots, Slot::B, img, release, ctx);
    assert!(
        std::fs::read(slots.slot_path(Slot::B)).unwrap() == *release.image,
        "{ctx}: slot B is not the image"
    );
    assert_eq!(last.running, Some(new_version()), "{ctx}: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_every_step_and_at_random_moments_leaves_a_bootable_verified_slot() {
    let started = Instant::now();
    let seed: u64 = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let only: Option<usize> = std::env::var(TRIAL_ENV).ok().and_then(|s| s.parse().ok());
    let mut rng = StdRng::seed_from_u64(seed);
    let root = tempfile::tempdir().unwrap();
    let release = Arc::new(Release::create(root.path()));

    // An undisturbed run: its step lines and the time between them.
    let calibration = trial(
        root.path().to_path_buf(),
        release.clone(),
        vec![None],
        format!("{SEED_ENV}={seed}, the undisturbed run"),
    )
    .await;
    let lines = calibration.first;
    let steps: Vec<&str> = lines
        .iter()
        .map(|(_, l)| l.as_str())
        .filter(|l| *l != "DONE")
        .collect();
    for step in [
        "START 1",
        "FETCH 0",
        "Verifying",
        "Installed",
        "REBOOT",
        "START 2",
        "TrialBoot",
        "Confirmed",
    ] {
        assert!(
            steps.iter().any(|l| l.contains(step)),
            "no {step}: {steps:?}"
        );
    }
    let gaps: Vec<Duration> = lines
        .windows(2)
        .map(|w| w[1].0.saturating_sub(w[0].0).max(Duration::from_millis(1)))
        .collect();

    // Right after each step, twice; then random moments after a random step,
    // a quarter of them followed by a second kill of the resumed child.
    let mut plans: Vec<Vec<Option<Kill>>> = Vec::new();
    for _ in 0..2 {
        for line in 0..steps.len() {
            plans.push(vec![Some(Kill {
                line,
                delay: Duration::ZERO,
            })]);
        }
    }
    while plans.len() < TRIALS {
        let line = rng.random_range(0..steps.len());
        let delay = rng.random_range(Duration::ZERO..=gaps[line]);
        let mut plan = vec![Some(Kill { line, delay })];
        if rng.random_bool(0.25) {
            plan.push(Some(Kill {
                line: rng.random_range(0..8),
                delay: rng.random_range(Duration::ZERO..=Duration::from_millis(5)),
            }));
        }
        plans.push(plan);
    }

    // A few trials at a time: most of a trial is waiting for fsync.
    let mut pending = plans
        .into_iter()
        .enumerate()
        .filter(|(n, _)| only.is_none_or(|o| o == *n));
    let mut running = tokio::task::JoinSet::new();
    let (mut trials, mut kills, mut resumed) = (1, calibration.kills, calibration.resumed);
    let mut after: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        while running.len() < PARALLEL {
            let Some((n, plan)) = pending.next() else {
                break;
            };
            let mut ctx = format!("{SEED_ENV}={seed} {TRIAL_ENV}={n}:");
            for k in plan.iter().flatten() {
                let _ = write!(ctx, " [kill {:?} after line {}]", k.delay, k.line);
            }
            running.spawn(trial(root.path().to_path_buf(), release.clone(), plan, ctx));
        }
        match running.join_next().await {
            None => break,
            Some(Ok(o)) => {
                trials += 1;
                kills += o.kills;
                resumed += o.resumed;
                for a in o.after {
                    *after.entry(a).or_default() += 1;
                }
            }
            Some(Err(e)) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    println!(
        "{trials} trials, {kills} kills, {resumed} resumed downloads, in {:?} (seed {seed}); \
         steps {steps:?}; killed after {after:?}",
        started.elapsed()
    );
    if only.is_none() {
        assert!(trials >= 100);
        assert!(resumed > 0, "no kill landed mid-download");
        for step in ["Downloading", "Verifying", "REBOOT", "TrialBoot"] {
            assert!(
                after.keys().any(|k| k.contains(step)),
                "no kill after {step}: {after:?}"
            );
        }
    }
}
