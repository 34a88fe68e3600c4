//! The OTA agent end to end on file slots: download, trial boot, health check,
//! confirm or roll back, across "reboots" (the gateway stopped and started again
//! on the same directory), and every image attack refused with the slots left as
//! they were.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::ota::{OtaRig, body_for, config, keys, sign, slots};
use iiot_core::ota::{FetchError, ImageBody, ImageFetch, Opened};
use iiot_core::types::{OtaReason, OtaState};
use iiot_edge::ota::{
    FileFetch, Health, HealthCheck, OtaConfig, Slot, SlotBackend as _, TrustStore,
};

fn image(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn write_image(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_str().unwrap().to_owned()
}

/// One "boot" of the test device: file slots of `capacity` under `dir`, images
/// from local files.
async fn boot<H: HealthCheck>(
    dir: &Path,
    capacity: u64,
    health: H,
    trust: TrustStore,
    cfg: OtaConfig,
) -> OtaRig {
    OtaRig::start(
        dir,
        slots(dir, capacity),
        FileFetch::new(),
        health,
        trust,
        cfg,
    )
    .await
}

async fn healthy() -> Health {
    Health::Healthy
}

fn states(s: &[iiot_core::types::OtaStatus]) -> Vec<OtaState> {
    let mut v: Vec<_> = s.iter().map(|s| s.state).collect();
    v.dedup();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_downloads_boots_on_trial_and_is_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(3 << 20, 7);
    let url = write_image(dir.path(), "fw.bin", &img);
    let (k1, _, trust) = keys();
    let manifest = sign(&body_for(&img, "1.1.0", &url), &[("k1", &k1)]);

    let mut rig = boot(dir.path(), 8 << 20, healthy, trust.clone(), config()).await;
    rig.deliver(manifest.clone()).await;
    let seen = rig.until(OtaState::Installed).await;
    assert_eq!(
        states(&seen),
        [
            OtaState::Downloading,
            OtaState::Verifying,
            OtaState::Installed
        ]
    );
    let done: Vec<_> = seen.iter().filter_map(|s| s.bytes_done).collect();
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
    assert_eq!(done.last(), Some(&(img.len() as u64)));
    assert!(
        seen.iter()
            .all(|s| s.running_version.as_deref() == Some("1.0.0"))
    );
    tokio::time::timeout(Duration::from_secs(5), rig.ota().reboot_required())
        .await
        .unwrap();
    // Waiting for the reboot, the agent takes nothing more: a manifest stays
    // unacknowledged (the broker delivers it again after the reboot).
    let again = rig.sender.clone();
    let topic = common::gateway::path().ota_notification().to_string();
    let m = manifest.clone();
    let pending = tokio::spawn(async move { again.deliver(topic, m, false).await });
    assert_eq!(rig.stop().await, []);
    assert!(
        pending.await.unwrap().is_err(),
        "acknowledged while waiting for the reboot"
    );

    // Reboot: the trial slot runs, the health check passes, it is confirmed.
    let mut rig = boot(dir.path(), 8 << 20, healthy, trust.clone(), config()).await;
    let seen = rig.until(OtaState::Confirmed).await;
    assert_eq!(states(&seen), [OtaState::TrialBoot, OtaState::Confirmed]);
    assert_eq!(seen[1].running_version.as_deref(), Some("1.1.0"));
    assert_eq!(
        rig.ota().state().running,
        Some(semver::Version::new(1, 1, 0))
    );
    rig.deliver(manifest.clone()).await;
    assert_eq!(rig.stop().await, []);

    let s = slots(dir.path(), 8 << 20);
    assert_eq!(s.state().active, Slot::B);
    assert_eq!(s.state().min_version, Some(semver::Version::new(1, 1, 0)));
    assert_eq!(std::fs::read(s.slot_path(Slot::B)).unwrap(), img);
    // The same manifest again, now as a new delivery on a fresh agent: the
    // record remembers it, nothing is reported.
    let rig = OtaRig::start(dir.path(), s, FileFetch::new(), healthy, trust, config()).await;
    rig.deliver(manifest).await;
    assert_eq!(rig.stop().await, []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_health_check_rolls_back_and_the_old_slot_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(100_000, 1);
    let url = write_image(dir.path(), "fw.bin", &img);
    let (k1, _, trust) = keys();
    let manifest = sign(&body_for(&img, "1.2.0", &url), &[("k1", &k1)]);
    let mut rig = boot(dir.path(), 1 << 20, healthy, trust.clone(), config()).await;
    rig.deliver(manifest).await;
    rig.until(OtaState::Installed).await;
    rig.stop().await;

    let broken = || async { Health::Failed("the PLC does not answer".into()) };
    let mut rig = boot(dir.path(), 1 << 20, broken, trust.clone(), config()).await;
    let seen = rig.until(OtaState::RolledBack).await;
    let last = seen.last().unwrap();
    assert_eq!(last.reason, Some(OtaReason::HealthCheckFailed));
    assert_eq!(last.version, "1.2.0");
    tokio::time::timeout(Duration::from_secs(5), rig.ota().reboot_required())
        .await
        .unwrap();
    rig.stop().await;

    let s = slots(dir.path(), 1 << 20);
    assert_eq!(s.state().active, Slot::A);
    assert_eq!(
        s.state().running_image().unwrap().version,
        semver::Version::new(1, 0, 0)
    );
    assert_eq!(
        s.state().min_version,
        None,
        "a roll back never raises the minimum"
    );
    assert!(s.state().trial.is_none());
    // After the reboot nothing more happens: the agent is idle on the old version.
    let rig = OtaRig::start(dir.path(), s, FileFetch::new(), healthy, trust, config()).await;
    assert_eq!(
        rig.ota().state().running,
        Some(semver::Version::new(1, 0, 0))
    );
    assert_eq!(rig.stop().await, []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trial_that_never_gets_healthy_falls_back_after_its_boots() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(10_000, 2);
    let url = write_image(dir.path(), "fw.bin", &img);
    let (k1, _, trust) = keys();
    let mut cfg = config();
    cfg.max_boots = 2;
    let mut rig = boot(dir.path(), 1 << 20, healthy, trust.clone(), cfg.clone()).await;
    rig.deliver(sign(&body_for(&img, "1.3.0", &url), &[("k1", &k1)]))
        .await;
    rig.until(OtaState::Installed).await;
    rig.stop().await;
    let not_yet = || async { Health::NotYet("still starting".into()) };
    for n in 1..=2 {
        let mut rig = boot(dir.path(), 1 << 20, not_yet, trust.clone(), cfg.clone()).await;
        let s = rig.status().await;
        assert_eq!(s.state, OtaState::TrialBoot);
        assert_eq!(s.detail.as_deref(), Some(format!("boot {n} of 2").as_str()));
        // Power cut during the trial: stopped without a health verdict.
        rig.stop().await;
    }
    let mut rig = boot(dir.path(), 1 << 20, not_yet, trust, cfg).await;
    let s = rig.status().await;
    assert_eq!(
        (s.state, s.reason),
        (OtaState::RolledBack, Some(OtaReason::BootLimit))
    );
    assert_eq!(s.running_version.as_deref(), Some("1.0.0"));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trial_not_confirmed_in_time_rolls_back_and_a_manifest_meanwhile_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(10_000, 3);
    let url = write_image(dir.path(), "fw.bin", &img);
    let (k1, _, trust) = keys();
    let mut cfg = config();
    cfg.confirm_within = Duration::from_secs(2);
    let mut rig = boot(dir.path(), 1 << 20, healthy, trust.clone(), cfg.clone()).await;
    rig.deliver(sign(&body_for(&img, "1.4.0", &url), &[("k1", &k1)]))
        .await;
    rig.until(OtaState::Installed).await;
    rig.stop().await;
    let not_yet = || async { Health::NotYet("still starting".into()) };
    let mut rig = boot(dir.path(), 1 << 20, not_yet, trust.clone(), cfg).await;
    assert_eq!(rig.status().await.state, OtaState::TrialBoot);
    let other = image(5_000, 9);
    let url2 = write_image(dir.path(), "fw2.bin", &other);
    let busy = sign(&body_for(&other, "1.5.0", &url2), &[("k1", &k1)]);
    rig.deliver(busy.clone()).await;
    let s = rig.status().await;
    assert_eq!(
        (s.state, s.reason, s.version.as_str()),
        (OtaState::Rejected, Some(OtaReason::Busy), "1.5.0")
    );
    let s = rig.status().await;
    assert_eq!(
        (s.state, s.reason),
        (OtaState::RolledBack, Some(OtaReason::ConfirmDeadline))
    );
    rig.stop().await;
    // After the reboot the same manifest, sent again as the Busy status asked, is
    // taken (a Busy manifest is not remembered as handled).
    let mut rig = boot(dir.path(), 1 << 20, healthy, trust, config()).await;
    rig.deliver(busy).await;
    let seen = rig.until(OtaState::Installed).await;
    assert!(seen.iter().all(|s| s.version == "1.5.0"), "{seen:?}");
    rig.stop().await;
}

/// A fetcher serving `image` with a script: a chunk size, a pause per chunk,
/// and what to do at the end (send more forever, stop early).
#[derive(Clone)]
struct Scripted {
    image: Arc<Vec<u8>>,
    chunk: usize,
    pause: Duration,
    /// Pretend the image is this long (None: say nothing about the total).
    total: Option<u64>,
    /// Keep sending bytes past the image, forever.
    endless: bool,
    /// Stop for good (hang) after this many bytes.
    hang_after: Option<u64>,
    /// Every offset the agent opened at.
    opens: Arc<Mutex<Vec<u64>>>,
    sent: Arc<AtomicU64>,
}

impl Scripted {
    fn new(image: Vec<u8>) -> Self {
        let total = Some(image.len() as u64);
        Self {
            image: Arc::new(image),
            chunk: 16 * 1024,
            pause: Duration::ZERO,
            total,
            endless: false,
            hang_after: None,
            opens: Arc::default(),
            sent: Arc::default(),
        }
    }
}

struct ScriptedBody {
    s: Scripted,
    at: u64,
}

impl ImageFetch for Scripted {
    type Body = ScriptedBody;
    async fn open(&self, _url: &str, offset: u64) -> Result<Opened<ScriptedBody>, FetchError> {
        self.opens.lock().unwrap().push(offset);
        Ok(Opened {
            body: ScriptedBody {
                s: self.clone(),
                at: offset,
            },
            start: offset,
            total: self.total,
        })
    }
}

impl ImageBody for ScriptedBody {
    async fn chunk(&mut self) -> Result<Option<Bytes>, FetchError> {
        if !self.s.pause.is_zero() {
            tokio::time::sleep(self.s.pause).await;
        }
        if self.s.hang_after.is_some_and(|h| self.at >= h) {
            std::future::pending::<()>().await;
        }
        let len = self.s.image.len() as u64;
        let out: Vec<u8> = if self.at < len {
            let end = (self.at + self.s.chunk as u64).min(len) as usize;
            self.s.image[self.at as usize..end].to_vec()
        } else if self.s.endless {
            vec![0x5a; self.s.chunk]
        } else {
            return Ok(None);
        };
        self.at += out.len() as u64;
        self.s.sent.fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(Some(out.into()))
    }
}

/// The slot directory's state file and the writable slot, to compare before and after.
fn snapshot(dir: &Path) -> (Vec<u8>, Option<u64>) {
    let d = dir.join("slots");
    (
        std::fs::read(d.join("slots.json")).unwrap(),
        std::fs::metadata(d.join("slot-b.img"))
            .ok()
            .map(|m| m.len()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_image_attack_is_refused_with_its_reason_and_the_slots_unchanged() {
    let img = image(200_000, 4);
    let mut tampered = img.clone();
    tampered[123_456] ^= 0x80;
    let longer = {
        let mut v = img.clone();
        v.extend_from_slice(b"more");
        v
    };
    let mut slow = Scripted::new(img.clone());
    slow.chunk = 100;
    slow.pause = Duration::from_millis(200); // 500 B/s, under the 1 KiB/s floor
    // Garbage forever, with no length said.
    let mut endless = Scripted::new(Vec::new());
    endless.total = None;
    endless.endless = true;
    let mut hangs = Scripted::new(img.clone());
    hangs.hang_after = Some(50_000);
    let mut longer_unannounced = Scripted::new(longer.clone());
    longer_unannounced.total = None;
    let mut shorter_unannounced = Scripted::new(img[..150_000].to_vec());
    shorter_unannounced.total = None;
    let cases: Vec<(&str, Scripted, OtaState, OtaReason)> = vec![
        (
            "tampered image byte",
            Scripted::new(tampered),
            OtaState::Rejected,
            OtaReason::HashMismatch,
        ),
        (
            "image longer than declared",
            Scripted::new(longer),
            OtaState::Rejected,
            OtaReason::ImageTooLong,
        ),
        (
            "longer, total unannounced",
            longer_unannounced,
            OtaState::Rejected,
            OtaReason::ImageTooLong,
        ),
        (
            "image shorter than declared",
            Scripted::new(img[..150_000].to_vec()),
            OtaState::Rejected,
            OtaReason::ImageTooShort,
        ),
        (
            "shorter, total unannounced",
            shorter_unannounced,
            OtaState::Rejected,
            OtaReason::ImageTooShort,
        ),
        (
            "slow retrieval",
            slow,
            OtaState::Failed,
            OtaReason::DownloadStalled,
        ),
        (
            "a server that stops sending",
            hangs,
            OtaState::Failed,
            OtaReason::DownloadStalled,
        ),
        (
            "endless data",
            endless,
            OtaState::Rejected,
            OtaReason::ImageTooLong,
        ),
    ];
    let (k1, _, trust) = keys();
    let manifest = sign(
        &body_for(&img, "1.1.0", "https://images.example/fw.bin"),
        &[("k1", &k1)],
    );
    for (name, fetch, state, reason) in cases {
        eprintln!("case: {name}");
        let dir = tempfile::tempdir().unwrap();
        let s = slots(dir.path(), 1 << 20);
        let before = snapshot(dir.path());
        let sent = fetch.sent.clone();
        let mut rig = OtaRig::start(dir.path(), s, fetch, healthy, trust.clone(), config()).await;
        rig.deliver(manifest.clone()).await;
        let seen = rig.until(state).await;
        let last = seen.last().unwrap();
        assert_eq!(last.reason, Some(reason), "{name}: {last:?}");
        assert!(last.detail.is_some(), "{name}");
        rig.stop().await;
        let after = snapshot(dir.path());
        assert_eq!(after.0, before.0, "{name}: slots.json changed");
        assert!(
            after.1.unwrap_or(0) == 0,
            "{name}: the writable slot keeps {:?} bytes",
            after.1
        );
        // Endless data is cut at once: never much past the declared size.
        assert!(
            sent.load(Ordering::Relaxed) <= img.len() as u64 + 16 * 1024,
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_rejections_go_upstream_and_leave_the_slots_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(1000, 5);
    let url = write_image(dir.path(), "fw.bin", &img);
    let (k1, _, trust) = keys();
    let stranger =
        iiot_edge::ota::SigningKey::generate(iiot_core::types::SignatureAlgorithm::EcdsaP256Sha256);
    let before = {
        let _ = slots(dir.path(), 1 << 20);
        snapshot(dir.path())
    };
    let mut rig = boot(dir.path(), 1 << 20, healthy, trust, config()).await;
    let cases = [
        (
            sign(&body_for(&img, "1.1.0", &url), &[("k1", &stranger)]),
            OtaReason::SignatureInvalid,
        ),
        (
            sign(&body_for(&img, "0.9.0", &url), &[("k1", &k1)]),
            OtaReason::Downgrade,
        ),
        (b"not a manifest".to_vec(), OtaReason::ManifestMalformed),
    ];
    for (raw, reason) in cases {
        rig.deliver(raw).await;
        let s = rig.status().await;
        assert_eq!((s.state, s.reason), (OtaState::Rejected, Some(reason)));
    }
    // The agent's own topic only.
    rig.sender
        .deliver(
            "acme/site/area/line/plc/other/ota/notification",
            b"x".to_vec(),
            false,
        )
        .await
        .unwrap();
    assert_eq!(rig.stop().await, []);
    assert_eq!(snapshot(dir.path()), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_manifest_supersedes_the_download_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let first = image(400_000, 6);
    let second = image(50_000, 8);
    let url2 = write_image(dir.path(), "fw2.bin", &second);
    let (k1, _, trust) = keys();
    let mut slow = Scripted::new(first.clone());
    slow.chunk = 4096;
    slow.pause = Duration::from_millis(20); // 200 KiB/s: above the floor, slow enough
    // One fetcher for both URLs: the slow one for the first, files for the second.
    let fetch = iiot_edge::ota::Chain(Only("https://slow/fw1.bin", slow), FileFetch::new());
    let mut rig = OtaRig::start(
        dir.path(),
        slots(dir.path(), 1 << 20),
        fetch,
        healthy,
        trust,
        config(),
    )
    .await;
    rig.deliver(sign(
        &body_for(&first, "1.1.0", "https://slow/fw1.bin"),
        &[("k1", &k1)],
    ))
    .await;
    assert_eq!(rig.status().await.state, OtaState::Downloading);
    rig.deliver(sign(&body_for(&second, "1.2.0", &url2), &[("k1", &k1)]))
        .await;
    let s = rig.status().await;
    assert_eq!(
        (s.state, s.reason, s.version.as_str()),
        (OtaState::Failed, Some(OtaReason::Superseded), "1.1.0")
    );
    let seen = rig.until(OtaState::Installed).await;
    assert!(seen.iter().all(|s| s.version == "1.2.0"), "{seen:?}");
    rig.stop().await;
    let s = slots(dir.path(), 1 << 20);
    assert_eq!(std::fs::read(s.slot_path(Slot::B)).unwrap(), second);
}

/// Serves `url` with the inner fetcher; any other URL is not its business.
struct Only<F>(&'static str, F);

impl<F: ImageFetch> ImageFetch for Only<F> {
    type Body = F::Body;
    async fn open(&self, url: &str, offset: u64) -> Result<Opened<F::Body>, FetchError> {
        if url != self.0 {
            return Err(FetchError::new(
                iiot_core::ota::FetchErrorKind::Unsupported,
                url,
            ));
        }
        self.1.open(url, offset).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_interrupted_by_a_restart_resumes_from_the_slot() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(1 << 20, 10);
    let (k1, _, trust) = keys();
    let manifest = sign(
        &body_for(&img, "1.1.0", "https://images.example/fw.bin"),
        &[("k1", &k1)],
    );
    let mut cfg: OtaConfig = config();
    cfg.stall_window = Duration::from_secs(30);
    // First boot: the server stops after 600 000 bytes.
    let mut hangs = Scripted::new(img.clone());
    hangs.hang_after = Some(600_000);
    let rig = OtaRig::start(
        dir.path(),
        slots(dir.path(), 4 << 20),
        hangs.clone(),
        healthy,
        trust.clone(),
        cfg.clone(),
    )
    .await;
    rig.deliver(manifest).await;
    // Wait until the server stopped sending (after 600 000 bytes or a little more).
    while hangs.sent.load(Ordering::Relaxed) < 600_000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rig.stop().await;
    let have = std::fs::metadata(dir.path().join("slots/slot-b.img"))
        .unwrap()
        .len();
    assert_eq!(
        have,
        hangs.sent.load(Ordering::Relaxed),
        "every byte received is in the slot"
    );
    // Second boot: a good server; the agent resumes where the slot ends.
    let good = Scripted::new(img.clone());
    let mut rig = OtaRig::start(
        dir.path(),
        slots(dir.path(), 4 << 20),
        good.clone(),
        healthy,
        trust,
        cfg,
    )
    .await;
    let seen = rig.until(OtaState::Installed).await;
    assert_eq!(seen.first().unwrap().bytes_done, Some(have), "{seen:?}");
    assert_eq!(*good.opens.lock().unwrap(), [have]);
    assert_eq!(good.sent.load(Ordering::Relaxed), img.len() as u64 - have);
    rig.stop().await;
    let s = slots(dir.path(), 4 << 20);
    assert_eq!(std::fs::read(s.slot_path(Slot::B)).unwrap(), img);
}
