//! OPC-UA test helpers: a reading sink on a channel, waiting for readings, the
//! Python asyncua peer.

use std::process::{Command, Stdio};
use std::time::Duration;

use iiot_core::source::{Link, ReadingSink, SinkClosed, Source};
use iiot_core::types::Sample;
use tokio::sync::{mpsc, oneshot};

/// What a source handed over.
#[derive(Debug)]
pub enum Event {
    Reading(Sample),
    Link(Link),
}

/// A sink that forwards every reading and link change to a channel.
pub struct ChannelSink(pub mpsc::UnboundedSender<Event>);

impl ReadingSink for ChannelSink {
    async fn send(&mut self, reading: Sample) -> Result<(), SinkClosed> {
        self.0.send(Event::Reading(reading)).map_err(|_| SinkClosed)
    }
    fn link(&mut self, link: Link) {
        let _ = self.0.send(Event::Link(link));
    }
}

/// A source running on a task, with its events and a way to stop it.
pub struct Running {
    pub events: mpsc::UnboundedReceiver<Event>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn start(source: impl Source) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(source.run(ChannelSink(tx), async move {
            let _ = stop_rx.await;
        }));
        Self {
            events,
            stop: Some(stop_tx),
            task,
        }
    }

    /// The next reading for which `pred` holds, skipping others; panics after `within`.
    pub async fn reading(
        &mut self,
        within: Duration,
        what: &str,
        mut pred: impl FnMut(&Sample) -> bool,
    ) -> Sample {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("no reading {what} within {within:?}"));
            match next {
                None => panic!("the source ended before a reading {what}"),
                Some(Event::Reading(s)) if pred(&s) => return s,
                Some(e) if std::env::var_os("IIOT_TEST_TRACE").is_some() => {
                    eprintln!("skipped {e:?}");
                }
                Some(_) => {}
            }
        }
    }

    /// The next link change; panics after `within`.
    pub async fn link(&mut self, within: Duration) -> Link {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("no link change within {within:?}"));
            match next {
                None => panic!("the source ended before a link change"),
                Some(Event::Link(l)) => return l,
                Some(_) => {}
            }
        }
    }

    /// Stops the source and waits until it returned.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the source stops within 10 s")
            .expect("the source task does not panic");
    }
}

use super::PeerGuard;

/// The python with asyncua, or `None` with the reason printed (a failure when
/// `IIOT_REQUIRE_SERVICES=1`).
pub fn python() -> Option<String> {
    super::python_with("asyncua", "asyncua")
}

/// Starts `tests/peers/opcua_server.py` on `port` and waits for its READY line.
pub fn start_peer(py: &str, port: u16, extra: &[&str]) -> PeerGuard {
    use std::io::BufRead;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/opcua_server.py");
    let mut child = Command::new(py)
        .arg(script)
        .arg(port.to_string())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the asyncua peer");
    let stdout = child.stdout.take().expect("stdout");
    let guard = PeerGuard(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.trim() == "READY" {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the asyncua peer prints READY within 60 s");
    guard
}
