//! The HTTP(S) image fetcher against server processes nobody here wrote: Python's
//! RangeHTTPServer (PyPI `rangehttpserver`) for full downloads, ranges, the 416 at
//! the end, 404 and a server killed in the middle of an image then resumed from a
//! new process; `tests/peers/https_server.py` (`http.server` + `ssl`) for a private
//! CA, a bearer token and mutual TLS.
//!
//! Needs a python with `rangehttpserver` at `IIOT_PYTHON` (default
//! `~/.cache/iiot-rs/venv/bin/python`; `.ci/run` sets it up). Without it each test
//! says why and passes, unless `IIOT_REQUIRE_SERVICES=1`.

use std::future::Future;
use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use iiot_core::ota::{FetchError, FetchErrorKind, ImageBody, ImageFetch, Opened};
use iiot_protocols::http::{CaPolicy, HttpBody, HttpFetch, HttpFetchConfig, PemSource};

// --- peers ---------------------------------------------------------------------

/// The python to run peers with, or `None` (after printing why) when it is missing
/// or cannot import `module`. With `IIOT_REQUIRE_SERVICES=1` a missing one fails.
fn python(module: &str) -> Option<String> {
    let required = std::env::var("IIOT_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
    let skip = |why: String| {
        assert!(!required, "IIOT_REQUIRE_SERVICES=1 but {why}");
        eprintln!("skipping HTTP fetch test: {why}");
        None
    };
    let py = match std::env::var("IIOT_PYTHON") {
        Ok(py) => py,
        Err(_) => {
            let Some(home) = std::env::var_os("HOME") else {
                return skip("neither IIOT_PYTHON nor HOME is set (see .ci/run)".into());
            };
            let py = Path::new(&home).join(".cache/iiot-rs/venv/bin/python");
            py.to_string_lossy().into_owned()
        }
    };
    match Command::new(&py)
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Some(py),
        Ok(s) => skip(format!("{py} cannot import {module} ({s}; see .ci/run)")),
        Err(e) => skip(format!("cannot run {py}: {e} (see .ci/run)")),
    }
}

/// A server process owned by one test. Dropping it kills the process by its pid,
/// also when the test fails.
struct Peer {
    child: Child,
    port: u16,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    /// Starts `command` (a python server binding 127.0.0.1 port 0 that prints
    /// "... port N ..." once it listens) and waits until it accepts connections.
    fn start(mut command: Command, log: &Path) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("spawn the peer");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        // Owned by the guard before anything can fail.
        let mut peer = Self {
            child,
            port: 0,
            stdout,
        };
        let mut banner = String::new();
        peer.stdout.read_line(&mut banner).unwrap();
        let port = banner
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok());
        let Some(port) = port else {
            let err = std::fs::read_to_string(log).unwrap_or_default();
            panic!("peer printed no port: {banner:?}; its stderr:\n{err}");
        };
        peer.port = port;
        assert!(
            wait_listening(port, Duration::from_secs(10)),
            "peer does not accept on port {port}"
        );
        peer
    }

    /// Python's RangeHTTPServer serving `dir`.
    fn range_server(py: &str, dir: &Path) -> Self {
        let mut command = Command::new(py);
        command
            .args(["-u", "-m", "RangeHTTPServer", "--bind", "127.0.0.1", "0"])
            .current_dir(dir);
        Self::start(command, &dir.join(format!("server-{}.log", unique())))
    }

    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://127.0.0.1:{}/{path}", self.port)
    }

    /// Kills the process (SIGKILL) and reaps it.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Polls until something accepts TCP connections on `port`, at most `timeout`.
fn wait_listening(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// --- images --------------------------------------------------------------------

/// `len` bytes of a fixed pseudo-random sequence (xorshift), written to `dir/name`.
fn image(dir: &Path, name: &str, len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ len as u64;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    std::fs::write(dir.join(name), &data).unwrap();
    data
}

async fn read_all(body: &mut HttpBody) -> Result<Vec<u8>, FetchError> {
    let mut out = Vec::new();
    while let Some(chunk) = body.chunk().await? {
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

async fn open(fetch: &HttpFetch, url: &str, offset: u64) -> Result<Opened<HttpBody>, FetchError> {
    fetch.open(url, offset).await
}

fn plain() -> HttpFetch {
    HttpFetch::new(&HttpFetchConfig::default()).unwrap()
}

/// Every test is bounded: a hung server fails the test instead of the suite.
async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("test took longer than 20 s")
}

// --- plain HTTP against RangeHTTPServer ------------------------------------------

#[tokio::test]
async fn full_download_equals_the_file() {
    let Some(py) = python("RangeHTTPServer") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = image(dir.path(), "fw.bin", 1024 * 1024 + 13);
    let server = Peer::range_server(&py, dir.path());
    within(async {
        let mut opened = open(&plain(), &server.url("http", "fw.bin"), 0)
            .await
            .unwrap();
        assert_eq!(opened.start, 0);
        assert_eq!(opened.total, Some(data.len() as u64));
        let got = read_all(&mut opened.body).await.unwrap();
        assert!(
            got == data,
            "{} bytes differ from the file's {}",
            got.len(),
            data.len()
        );
        // The end stays the end.
        assert_eq!(opened.body.chunk().await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn open_in_the_middle_starts_there() {
    let Some(py) = python("RangeHTTPServer") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = image(dir.path(), "fw.bin", 300_007);
    let server = Peer::range_server(&py, dir.path());
    within(async {
        let offset = 123_457;
        let mut opened = open(&plain(), &server.url("http", "fw.bin"), offset)
            .await
            .unwrap();
        assert_eq!(opened.start, offset);
        assert_eq!(opened.total, Some(data.len() as u64));
        let got = read_all(&mut opened.body).await.unwrap();
        assert!(got == data[offset as usize..], "the rest of the file");
    })
    .await;
}

#[tokio::test]
async fn offset_at_the_end_is_an_empty_body() {
    let Some(py) = python("RangeHTTPServer") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = image(dir.path(), "fw.bin", 4099);
    let server = Peer::range_server(&py, dir.path());
    let url = server.url("http", "fw.bin");
    within(async {
        let fetch = plain();
        // RangeHTTPServer answers 416 without `Content-Range: bytes */len`: the
        // length comes from a one-byte range.
        let len = data.len() as u64;
        let mut opened = open(&fetch, &url, len).await.unwrap();
        assert_eq!(opened.start, len);
        assert_eq!(opened.total, Some(len));
        assert_eq!(opened.body.chunk().await.unwrap(), None);

        // Past the end is not "complete".
        let e = open(&fetch, &url, len + 1).await.unwrap_err();
        assert_eq!(e.kind, FetchErrorKind::Protocol, "{e}");
    })
    .await;
}

#[tokio::test]
async fn missing_image_is_not_found() {
    let Some(py) = python("RangeHTTPServer") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Peer::range_server(&py, dir.path());
    within(async {
        let fetch = plain();
        for offset in [0, 10] {
            let e = open(&fetch, &server.url("http", "nope.bin"), offset)
                .await
                .unwrap_err();
            assert_eq!(e.kind, FetchErrorKind::NotFound, "{e}");
            assert!(e.message.contains("404"), "{e}");
        }
    })
    .await;
}

#[tokio::test]
async fn other_urls_are_unsupported() {
    let fetch = plain();
    for url in [
        "ftp://127.0.0.1/fw.bin",
        "file:///tmp/fw.bin",
        "mqtt://127.0.0.1/fw.bin",
        "garbage",
        "",
        "http//127.0.0.1/fw.bin",
    ] {
        let e = within(open(&fetch, url, 0)).await.unwrap_err();
        assert_eq!(e.kind, FetchErrorKind::Unsupported, "{url:?}: {e}");
    }
}

#[tokio::test]
async fn nobody_listening_is_unavailable() {
    let fetch = plain();
    let url = format!(
        "http://127.0.0.1:{}/fw.bin?sig=secret-signature",
        closed_port()
    );
    let e = within(open(&fetch, &url, 0)).await.unwrap_err();
    assert_eq!(e.kind, FetchErrorKind::Unavailable, "{e}");
    assert!(e.kind.is_retryable());
    assert!(!e.message.contains("secret-signature"), "{e}");
}

/// The server dies in the middle of a 32 MiB image: the body fails with a retryable
/// error, a new server process on the same directory serves the rest from the bytes
/// received, and the two parts are the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_mid_image_then_resume_on_a_new_one() {
    let Some(py) = python("RangeHTTPServer") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = image(dir.path(), "big.bin", 32 * 1024 * 1024);
    let mut first = Peer::range_server(&py, dir.path());
    let fetch = plain();
    within(async {
        let url = first.url("http", "big.bin");
        let mut opened = open(&fetch, &url, 0).await.unwrap();
        assert_eq!(opened.total, Some(data.len() as u64));
        let mut got = Vec::new();
        while got.len() < 1024 * 1024 {
            let chunk = opened.body.chunk().await.unwrap().expect("more bytes");
            got.extend_from_slice(&chunk);
        }

        first.kill();
        // What the kernel had buffered still arrives, then the cut.
        let e = loop {
            match opened.body.chunk().await {
                Ok(Some(chunk)) => got.extend_from_slice(&chunk),
                Ok(None) => panic!("body ended cleanly after the server was killed"),
                Err(e) => break e,
            }
        };
        assert!(e.kind.is_retryable(), "{e:?}");
        assert!(got.len() < data.len(), "{} bytes", got.len());
        assert!(got == data[..got.len()], "the bytes before the cut");
        // The failure sticks; and the dead server refuses connections.
        assert_eq!(opened.body.chunk().await.unwrap_err(), e);
        let e = open(&fetch, &url, got.len() as u64).await.unwrap_err();
        assert_eq!(e.kind, FetchErrorKind::Unavailable, "{e}");

        let second = Peer::range_server(&py, dir.path());
        let received = got.len() as u64;
        let mut opened = open(&fetch, &second.url("http", "big.bin"), received)
            .await
            .unwrap();
        assert_eq!(opened.start, received);
        assert_eq!(opened.total, Some(data.len() as u64));
        got.extend(read_all(&mut opened.body).await.unwrap());
        assert_eq!(got.len(), data.len());
        assert!(got == data, "resumed image differs from the file");
    })
    .await;
}

// --- HTTPS against tests/peers/https_server.py -----------------------------------

/// A CA with its server certificate for 127.0.0.1 and a client certificate, as
/// PEM files in `dir`.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn pki(dir: &Path, name: &str) -> Pki {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} image server CA"));
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);

    let write = |file: &str, pem: String| {
        let path = dir.join(format!("{name}-{file}"));
        std::fs::write(&path, pem).unwrap();
        path
    };
    let ca = write("ca.pem", ca_cert.pem());

    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "images.plant");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let server_cert = write("server.pem", cert.pem());
    let server_key = write("server.key", key.serialize_pem());

    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "gw-7");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let client_cert = write("client.pem", cert.pem());
    let client_key = write("client.key", key.serialize_pem());
    Pki {
        ca,
        server_cert,
        server_key,
        client_cert,
        client_key,
    }
}

fn https_server(py: &str, pki: &Pki, file: &Path, extra: &[&str]) -> Peer {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/https_server.py");
    let mut command = Command::new(py);
    command
        .arg("-u")
        .arg(script)
        .arg("--cert")
        .arg(&pki.server_cert)
        .arg("--key")
        .arg(&pki.server_key)
        .arg("--file")
        .arg(file)
        .args(extra);
    let log = file.with_file_name(format!("https-{}.log", unique()));
    Peer::start(command, &log)
}

fn with_ca(ca: &Path) -> HttpFetchConfig {
    let mut config = HttpFetchConfig::new();
    config.add_ca_path(ca);
    config
}

#[tokio::test]
async fn https_trusts_the_configured_ca_only() {
    let Some(py) = python("ssl") else { return };
    let dir = tempfile::tempdir().unwrap();
    let plant = pki(dir.path(), "plant");
    let other = pki(dir.path(), "other");
    let data = image(dir.path(), "fw.bin", 200_003);
    let server = https_server(&py, &plant, &dir.path().join("fw.bin"), &[]);
    let url = server.url("https", "fw.bin");
    within(async {
        // The plant's CA, as a file and as PEM text: download and resume.
        let fetch = HttpFetch::new(&with_ca(&plant.ca)).unwrap();
        let mut opened = open(&fetch, &url, 0).await.unwrap();
        assert_eq!(opened.total, Some(data.len() as u64));
        assert!(read_all(&mut opened.body).await.unwrap() == data);
        let mut config = HttpFetchConfig::new();
        config.add_ca_pem(std::fs::read_to_string(&plant.ca).unwrap());
        let fetch = HttpFetch::new(&config).unwrap();
        let mut opened = open(&fetch, &url, 1000).await.unwrap();
        assert_eq!(opened.start, 1000);
        assert!(read_all(&mut opened.body).await.unwrap() == data[1000..]);
        // Past the end: this server says the length in its 416.
        let opened = open(&fetch, &url, data.len() as u64).await.unwrap();
        assert_eq!(opened.total, Some(data.len() as u64));

        // Added to the system's roots it still verifies.
        let mut config = with_ca(&plant.ca);
        config.set_ca_policy(CaPolicy::Extend);
        let fetch = HttpFetch::new(&config).unwrap();
        assert!(
            read_all(&mut open(&fetch, &url, 0).await.unwrap().body)
                .await
                .unwrap()
                == data
        );

        // The system's roots alone, or another CA: refused, and said why.
        for config in [HttpFetchConfig::new(), with_ca(&other.ca)] {
            let fetch = HttpFetch::new(&config).unwrap();
            let e = open(&fetch, &url, 0).await.unwrap_err();
            assert_eq!(e.kind, FetchErrorKind::Refused, "{e}");
            assert!(
                e.message.contains("TLS certificate verification failed"),
                "{e}"
            );
            assert!(!e.kind.is_retryable());
        }
    })
    .await;
}

#[tokio::test]
async fn bearer_token_is_required_and_sent() {
    let Some(py) = python("ssl") else { return };
    let dir = tempfile::tempdir().unwrap();
    let plant = pki(dir.path(), "plant");
    let data = image(dir.path(), "fw.bin", 70_001);
    let token = "campaign-42-token";
    let server = https_server(&py, &plant, &dir.path().join("fw.bin"), &["--token", token]);
    // A signed URL's query is a credential too: it must not show in messages.
    let url = format!("{}?X-Amz-Signature=deadbeef", server.url("https", "fw.bin"));
    within(async {
        let fetch = HttpFetch::new(&with_ca(&plant.ca)).unwrap();
        let e = open(&fetch, &url, 0).await.unwrap_err();
        assert_eq!(e.kind, FetchErrorKind::Refused, "{e}");
        assert!(e.message.contains("401"), "{e}");
        assert!(!e.message.contains("deadbeef"), "{e}");

        let mut config = with_ca(&plant.ca);
        config.set_bearer_token("wrong-token");
        let e = open(&HttpFetch::new(&config).unwrap(), &url, 0)
            .await
            .unwrap_err();
        assert_eq!(e.kind, FetchErrorKind::Refused, "{e}");
        assert!(!e.message.contains("wrong-token"), "{e}");

        let mut config = with_ca(&plant.ca);
        config.set_bearer_token(token);
        assert!(!format!("{config:?}").contains(token));
        let fetch = HttpFetch::new(&config).unwrap();
        assert!(!format!("{fetch:?}").contains(token));
        let mut opened = open(&fetch, &url, 0).await.unwrap();
        assert!(read_all(&mut opened.body).await.unwrap() == data);
        let mut opened = open(&fetch, &url, 65_536).await.unwrap();
        assert_eq!(opened.start, 65_536);
        assert!(read_all(&mut opened.body).await.unwrap() == data[65_536..]);
    })
    .await;
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate() {
    let Some(py) = python("ssl") else { return };
    let dir = tempfile::tempdir().unwrap();
    let plant = pki(dir.path(), "plant");
    let data = image(dir.path(), "fw.bin", 10_000);
    let ca = plant.ca.to_str().unwrap().to_owned();
    let server = https_server(
        &py,
        &plant,
        &dir.path().join("fw.bin"),
        &["--client-ca", &ca],
    );
    let url = server.url("https", "fw.bin");
    within(async {
        let mut config = with_ca(&plant.ca);
        config.set_client_identity(
            PemSource::path(&plant.client_cert),
            PemSource::pem(std::fs::read_to_string(&plant.client_key).unwrap()),
        );
        let fetch = HttpFetch::new(&config).unwrap();
        let mut opened = open(&fetch, &url, 0).await.unwrap();
        assert!(read_all(&mut opened.body).await.unwrap() == data);

        // Without a client certificate the server ends the handshake.
        let fetch = HttpFetch::new(&with_ca(&plant.ca)).unwrap();
        let e = open(&fetch, &url, 0).await.unwrap_err();
        assert_eq!(e.kind, FetchErrorKind::Refused, "{e}");
    })
    .await;
}
