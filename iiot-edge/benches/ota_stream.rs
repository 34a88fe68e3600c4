//! OTA streaming verification (issue 17): a 256 MiB pseudo-random image through the
//! agent's real path, beside `openssl dgst -sha256` of the same file in the same run.
//!
//! CI only compiles this (`cargo bench --no-run`). Run by hand:
//!
//! ```text
//! cargo bench -p iiot-edge --bench ota_stream                       # 256 MiB, 3 rounds
//! cargo bench -p iiot-edge --bench ota_stream -- --mib 64 --rounds 5
//! IIOT_BENCH_DIR=/work/benchdir cargo bench -p iiot-edge --bench ota_stream
//! ```
//!
//! Per round, in this order, all on the same file (in the page cache: it was just
//! written, and `openssl` reads it once more before the first round):
//!
//! | name | what |
//! |---|---|
//! | `openssl` | `openssl dgst -sha256 FILE`, wall time of the process (start included) |
//! | `stream` | the streaming verification through the public API: `FileFetch::open` + `ImageBody::chunk` (256 KiB, one `spawn_blocking` each) into `Sha256::update` |
//! | `read+sha2` | diagnostic: `std::fs::File::read` of 256 KiB into `Sha256::update`, no async |
//! | `fetch@N` | diagnostic: what `FileBody::chunk` does (a fresh buffer read in `spawn_blocking`, hashed on the async task) at 64 KiB (the old default), 256 KiB, 1 MiB |
//! | `read+sha2+write` | diagnostic, the disk's floor for the install: `read+sha2` also written to a file with `fdatasync` every `sync_every` (4 MiB) |
//! | `update` | the whole update in a child process (this binary re-executed): a gateway with an OTA agent on `FileFetch` and `FileSlots`, manifest delivered → `Installed` status upstream (download into the slot with an fsync every `sync_every`, hash, mark for trial); the child reports its peak RSS (`VmHWM`) |
//!
//! MB/s are 10^6 bytes per second. The medians of the rounds are compared.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use iiot_core::codec::{Limits, protobuf};
use iiot_core::ota::{ImageBody as _, ImageFetch as _};
use iiot_core::publish::{ConfirmedPublish, OutboundMessage, PublishError};
use iiot_core::topic::UnsPath;
use iiot_core::types::{
    DeviceId, ManifestBody, OtaState, OtaStatus, SignatureAlgorithm, SignedManifest, Timestamp,
};
use iiot_edge::commands::ChannelInbox;
use iiot_edge::forwarder::ForwarderConfig;
use iiot_edge::ota::{
    FileFetch, FileSlots, FileSlotsConfig, Health, ImageInfo, OtaConfig, OtaSetup, SigningKey,
    TrustStore, TrustedKey,
};
use iiot_edge::outbox::{Outbox, OutboxConfig, WhenFull};
use iiot_edge::runtime::GatewayBuilder;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Set in the child: the image to install (the child runs one update and exits).
const CHILD_IMAGE: &str = "IIOT_OTA_BENCH_IMAGE";
/// Set in the child: the image's SHA-256, hex.
const CHILD_SHA256: &str = "IIOT_OTA_BENCH_SHA256";
/// Set in the child: the directory for the gateway's and the agent's state.
const CHILD_DIR: &str = "IIOT_OTA_BENCH_DIR";
/// The line the child prints its results on.
const CHILD_TAG: &str = "ota-child";

const DEVICE_TYPE: &str = "plc";
/// The read size of the `read+sha2` loops: `FileFetch`'s (256 KiB since this bench;
/// 64 KiB before).
const CHUNK: usize = 256 << 10;

fn hex(b: &[u8]) -> String {
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

fn unhex32(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("64 hex digits");
    }
    out
}

/// A `/proc/self/status` field in KiB (`VmHWM:`, `VmRSS:`).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// Writes `len` pseudo-random bytes (SplitMix64) to `path` 1 MiB at a time and
/// returns their SHA-256.
fn write_image(path: &Path, len: u64) -> [u8; 32] {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create the image"));
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut hasher = Sha256::new();
    let mut left = len;
    while left > 0 {
        for w in buf.chunks_exact_mut(8) {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            w.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).expect("write the image");
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    f.flush().expect("write the image");
    hasher.finalize().into()
}

/// `openssl dgst -sha256 path`: its wall time and the digest it printed.
fn openssl(path: &Path) -> (Duration, String) {
    let start = Instant::now();
    let out = Command::new("openssl")
        .arg("dgst")
        .arg("-sha256")
        .arg(path)
        .output()
        .expect("openssl runs");
    let elapsed = start.elapsed();
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let digest = text
        .rsplit("= ")
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    (elapsed, digest)
}

/// The streaming verification through the public API: `FileFetch` chunks into SHA-256.
async fn stream(path: &Path) -> (Duration, [u8; 32]) {
    let url = path.to_str().expect("a UTF-8 path");
    let start = Instant::now();
    let mut body = FileFetch::new().open(url, 0).await.expect("open").body;
    let mut hasher = Sha256::new();
    while let Some(c) = body.chunk().await.expect("read") {
        hasher.update(&c);
    }
    (start.elapsed(), hasher.finalize().into())
}

/// Diagnostic: what `FileBody::chunk` does, at any read size: each read of `chunk`
/// bytes into a fresh buffer in `spawn_blocking`, hashed on the async task.
async fn fetch_like(path: &Path, chunk: usize) -> (Duration, [u8; 32]) {
    let start = Instant::now();
    let mut file = Some(std::fs::File::open(path).expect("open"));
    let mut hasher = Sha256::new();
    while let Some(mut f) = file.take() {
        let (f, buf) = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; chunk];
            let k = f.read(&mut buf).expect("read");
            buf.truncate(k);
            (f, bytes::Bytes::from(buf))
        })
        .await
        .expect("the read task");
        if !buf.is_empty() {
            hasher.update(&buf);
            file = Some(f);
        }
    }
    (start.elapsed(), hasher.finalize().into())
}

/// Diagnostic: the floor of the install path on this disk, no async: reads of
/// [`CHUNK`] into SHA-256 and written to a file, `fdatasync` every `sync_every`
/// (the agent's default) and at the end, as the agent writes the slot.
fn read_sha2_write(path: &Path, out: &Path) -> (Duration, [u8; 32]) {
    let sync_every = OtaConfig::new(DEVICE_TYPE, 2).sync_every;
    let start = Instant::now();
    let mut f = std::fs::File::open(path).expect("open");
    let mut w = std::fs::File::create(out).expect("create");
    let mut buf = vec![0u8; CHUNK];
    let mut hasher = Sha256::new();
    let mut since_sync = 0u64;
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        w.write_all(&buf[..n]).expect("write");
        since_sync += n as u64;
        if since_sync >= sync_every {
            w.sync_data().expect("fdatasync");
            since_sync = 0;
        }
    }
    w.sync_data().expect("fdatasync");
    let elapsed = start.elapsed();
    drop(w);
    let _ = std::fs::remove_file(out);
    (elapsed, hasher.finalize().into())
}

/// Diagnostic: plain blocking reads of [`CHUNK`] into SHA-256.
fn read_sha2(path: &Path) -> (Duration, [u8; 32]) {
    let start = Instant::now();
    let mut f = std::fs::File::open(path).expect("open");
    let mut buf = vec![0u8; CHUNK];
    let mut hasher = Sha256::new();
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    (start.elapsed(), hasher.finalize().into())
}

/// What one update child reported.
struct ChildReport {
    elapsed: Duration,
    vmhwm_kib: u64,
    vmhwm_before_kib: u64,
}

/// Runs one update in a child process (a fresh state directory under `base`).
fn update_child(base: &Path, image: &Path, sha256: &[u8; 32]) -> ChildReport {
    let dir = tempfile::tempdir_in(base).expect("state dir");
    let out = Command::new(std::env::current_exe().expect("the bench binary"))
        .env(CHILD_IMAGE, image)
        .env(CHILD_SHA256, hex(sha256))
        .env(CHILD_DIR, dir.path())
        .output()
        .expect("the update child runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "update child failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with(CHILD_TAG))
        .unwrap_or_else(|| panic!("no report from the update child: {stdout}"));
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
    };
    ChildReport {
        elapsed: Duration::from_micros(field("elapsed_us")),
        vmhwm_kib: field("vmhwm_kib"),
        vmhwm_before_kib: field("vmhwm_before_kib"),
    }
}

/// A transport that confirms everything and hands every OTA status over.
#[derive(Clone)]
struct StatusTap(mpsc::UnboundedSender<OtaStatus>);

impl ConfirmedPublish for StatusTap {
    async fn publish_confirmed(&self, m: OutboundMessage) -> Result<(), PublishError> {
        if m.topic.ends_with("/ota/status")
            && let Ok(s) = protobuf::decode_ota_status(&m.payload, &Limits::default())
        {
            let _ = self.0.send(s);
        }
        Ok(())
    }
}

/// The child: one update of `image` from manifest delivery to `Installed`, then its
/// peak RSS. Prints one `ota-child key=value…` line.
async fn child(image: PathBuf, sha256: [u8; 32], dir: PathBuf) {
    let size = std::fs::metadata(&image).expect("the image").len();
    let path = UnsPath::new(
        "acme",
        "p1",
        "a1",
        "l1",
        "plc",
        DeviceId::new("dev-1").expect("device id"),
    )
    .expect("UNS path");
    // The release side: a key, the manifest body (size + SHA-256), its signature.
    let key = SigningKey::generate(SignatureAlgorithm::EcdsaP256Sha256);
    let trust = TrustStore::new().with_key("k1", TrustedKey::new(key.public()));
    let now = Timestamp::now();
    let body = protobuf::encode_manifest_body(&ManifestBody {
        firmware_id: "pump-ctrl".into(),
        version: semver::Version::new(1, 1, 0),
        device_type: DEVICE_TYPE.into(),
        min_hw_revision: 1,
        size,
        sha256,
        published_at: now,
        expires_at: now.saturating_add(Duration::from_secs(86_400)),
        url: image.to_str().expect("a UTF-8 path").into(),
    });
    let manifest = protobuf::encode_signed_manifest(&SignedManifest {
        signatures: vec![key.signature("k1", &body)],
        body: body.into(),
    });
    // The device side, as `GatewayBuilder::ota` runs it, with the default settings.
    let slots = FileSlots::open(
        dir.join("slots"),
        FileSlotsConfig {
            capacity: size * 2,
            factory: ImageInfo {
                firmware_id: "pump-ctrl".into(),
                version: semver::Version::new(1, 0, 0),
                size: 0,
                sha256: [0; 32],
            },
        },
    )
    .expect("slots");
    let config = OtaConfig::new(DEVICE_TYPE, 2);
    let device = path.device_id().clone();
    let telemetry = Outbox::open(dir.join("outbox"), device.clone(), OutboxConfig::default())
        .await
        .expect("telemetry outbox");
    let mut cc = OutboxConfig::default();
    cc.set_when_full(WhenFull::Block);
    let control = Outbox::open(dir.join("control"), device, cc)
        .await
        .expect("control outbox");
    let healthy = || async { Health::Healthy };
    let setup = OtaSetup::open(
        dir.join("ota"),
        slots,
        FileFetch::new(),
        healthy,
        trust,
        config,
    )
    .expect("OTA setup");
    let (tx, mut statuses) = mpsc::unbounded_channel();
    let (sender, inbox) = ChannelInbox::new(16);
    let cancel = CancellationToken::new();
    let gateway = GatewayBuilder::new(path.clone(), telemetry, StatusTap(tx))
        .control_lane(control, ForwarderConfig::default())
        .ota(inbox, setup)
        .expect("a control lane")
        .start(&cancel);
    let vmhwm_before = status_kib("VmHWM:");

    let start = Instant::now();
    sender
        .deliver(path.ota_notification().to_string(), manifest, false)
        .await
        .expect("the agent takes the manifest");
    let mut downloading = 0u32;
    loop {
        let s = tokio::time::timeout(Duration::from_secs(600), statuses.recv())
            .await
            .expect("a status within 600 s")
            .expect("the transport");
        match s.state {
            OtaState::Installed => break,
            OtaState::Downloading | OtaState::Verifying => downloading += 1,
            other => panic!("the update ended {other:?}: {s:?}"),
        }
    }
    let elapsed = start.elapsed();
    let vmhwm = status_kib("VmHWM:");
    let slot = std::fs::metadata(dir.join("slots").join("slot-b.img")).map_or(0, |m| m.len());
    assert_eq!(slot, size, "the slot holds the image");
    gateway.shutdown(&cancel, Duration::from_secs(5)).await;
    println!(
        "{CHILD_TAG} elapsed_us={} vmhwm_kib={vmhwm} vmhwm_before_kib={vmhwm_before} statuses={downloading}",
        elapsed.as_micros()
    );
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(|| "unknown".into(), |m| m.trim().to_owned())
}

fn sha_ni() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .split_whitespace()
        .any(|w| w == "sha_ni")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    };
    if let (Ok(image), Ok(sha), Ok(dir)) = (
        std::env::var(CHILD_IMAGE),
        std::env::var(CHILD_SHA256),
        std::env::var(CHILD_DIR),
    ) {
        rt().block_on(child(image.into(), unhex32(&sha), dir.into()));
        return;
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let arg = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let mib = arg("--mib", 256).max(1);
    let rounds = arg("--rounds", 3).max(1) as usize;
    let size = mib << 20;
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipping: the openssl CLI is not installed");
        return;
    }
    let base = std::env::var("IIOT_BENCH_DIR").map_or_else(|_| std::env::temp_dir(), PathBuf::from);
    let tmp = tempfile::tempdir_in(&base).expect("bench dir");
    let image = tmp.path().join("fw.bin");

    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    println!("cpu        {} ({cores} cores)", cpu_model());
    #[cfg(target_arch = "x86_64")]
    let detected = std::arch::is_x86_feature_detected!("sha");
    #[cfg(not(target_arch = "x86_64"))]
    let detected = false;
    println!(
        "sha_ni     /proc/cpuinfo: {}, detected at run time: {}",
        if sha_ni() { "yes" } else { "no" },
        if detected { "yes" } else { "no" }
    );
    let ver = Command::new("openssl")
        .arg("version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!("openssl    {ver}");
    println!("load       {} (1, 5, 15 min) at the start", loadavg());

    let t = Instant::now();
    let sha256 = write_image(&image, size);
    println!(
        "image      {} bytes ({mib} MiB) written in {:.1?}, SHA-256 {}",
        size,
        t.elapsed(),
        hex(&sha256)
    );
    // Warm the page cache (and check openssl agrees): every reader below reads memory.
    let (warm, digest) = openssl(&image);
    assert_eq!(digest, hex(&sha256), "openssl's digest");
    println!(
        "page cache warmed by one openssl run ({:.0} MB/s); all readers read from memory",
        mb_per_s(size, warm)
    );
    // What the process start costs openssl (included in its figures).
    let empty = tmp.path().join("empty.bin");
    std::fs::write(&empty, b"").expect("an empty file");
    let mut starts: Vec<f64> = (0..5)
        .map(|_| openssl(&empty).0.as_secs_f64() * 1e3)
        .collect();
    starts.sort_by(f64::total_cmp);
    println!(
        "openssl    start-up (dgst of an empty file, median of 5): {:.1} ms",
        starts[2]
    );

    let runtime = rt();
    // MB/s per round, by name, in the order printed.
    let names = [
        "openssl",
        "stream",
        "read+sha2",
        "fetch@64KiB",
        "fetch@256KiB",
        "fetch@1MiB",
        "read+sha2+write",
        "update",
    ];
    let mut mbs: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut rss = Vec::new();
    for round in 1..=rounds {
        let (d, digest) = openssl(&image);
        assert_eq!(digest, hex(&sha256), "openssl's digest");
        let mut row = vec![d];
        for (d, digest) in [
            runtime.block_on(stream(&image)),
            read_sha2(&image),
            runtime.block_on(fetch_like(&image, 64 << 10)),
            runtime.block_on(fetch_like(&image, 256 << 10)),
            runtime.block_on(fetch_like(&image, 1 << 20)),
            read_sha2_write(&image, &tmp.path().join("copy.bin")),
        ] {
            assert_eq!(digest, sha256);
            row.push(d);
        }
        let c = update_child(tmp.path(), &image, &sha256);
        row.push(c.elapsed);
        rss.push(c.vmhwm_kib as f64 / 1024.0);
        let mut line = format!("round {round}   ");
        for ((name, d), v) in names.iter().zip(&row).zip(&mut mbs) {
            v.push(mb_per_s(size, *d));
            let _ = write!(line, " {name} {:.0}", mb_per_s(size, *d));
        }
        println!(
            "{line} MB/s; update {:.2?}, child VmHWM {:.1} MiB ({:.1} MiB before the delivery)",
            c.elapsed,
            c.vmhwm_kib as f64 / 1024.0,
            c.vmhwm_before_kib as f64 / 1024.0,
        );
    }
    println!("load       {} (1, 5, 15 min) at the end", loadavg());
    println!("medians of {rounds} rounds, {mib} MiB, MB/s = 10^6 bytes/s:");
    let med: Vec<f64> = mbs.iter().map(|v| median(v)).collect();
    let what = [
        "openssl dgst -sha256 (process wall time)",
        "stream: FileFetch + sha2 (the 0.9x goal)",
        "read+sha2, no async",
        "FileBody's way at 64 KiB chunks (the old default)",
        "FileBody's way at 256 KiB chunks",
        "FileBody's way at 1 MiB chunks",
        "read+sha2+write, fdatasync every sync_every",
        "update: delivery -> Installed (writes + fsyncs the slot)",
    ];
    for ((name, m), w) in names.iter().zip(&med).zip(what) {
        println!(
            "  {name:<16} {m:>6.0} MB/s  {:>5.2}x openssl  {w}",
            m / med[0]
        );
    }
    let rss_mib = median(&rss);
    println!(
        "  update child peak RSS (VmHWM) {rss_mib:.1} MiB: goal < 16 MiB {}",
        if rss_mib < 16.0 { "met" } else { "missed" }
    );
    println!(
        "  streaming verification {:.2}x openssl: goal >= 0.9x {}",
        med[1] / med[0],
        if med[1] / med[0] >= 0.9 {
            "met"
        } else {
            "missed"
        }
    );
}
