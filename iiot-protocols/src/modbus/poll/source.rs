//! The poller as a source of the gateway runtime (`iiot_core::source::Source`).

use iiot_core::source::{ReadingSink, ReportPolicy, Source, SourceInfo};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Poller, Reading};
use crate::modbus::transport::Connector;

/// A [`Poller`] as a [`Source`] of the gateway runtime in `iiot-edge`. Made with
/// [`Poller::into_source`]. It emits every reading: the register map's deadbands
/// and maximum report intervals travel in [`Source::info`] to the runtime,
/// which applies them (the poller's own filter is off, so nothing is filtered
/// twice). Writes keep going through the [`super::PollerHandle`].
pub struct ModbusSource<C> {
    name: String,
    poller: Poller<C>,
    readings: mpsc::Receiver<Reading>,
}

impl<C> std::fmt::Debug for ModbusSource<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModbusSource")
            .field("name", &self.name)
            .field("poller", &self.poller)
            .finish_non_exhaustive()
    }
}

impl<C: Connector> Poller<C> {
    /// This poller and its reading channel (from [`Poller::new`]) as a source
    /// named `name` for the gateway runtime; report by exception moves to the
    /// runtime.
    pub fn into_source(
        mut self,
        readings: mpsc::Receiver<Reading>,
        name: impl Into<String>,
    ) -> ModbusSource<C> {
        self.filters.clear();
        ModbusSource {
            name: name.into(),
            poller: self,
            readings,
        }
    }
}

impl<C: Connector> Source for ModbusSource<C> {
    fn info(&self) -> SourceInfo {
        let mut info = SourceInfo::new(self.name.clone());
        for t in self.poller.map.tags() {
            info = info.with_tag(
                t.name.clone(),
                ReportPolicy {
                    deadband: t.deadband,
                    max_interval: t.max_report_interval,
                },
            );
        }
        info
    }

    /// Polls until `stop`; the readings of the last cycle are still handed over.
    async fn run<K: ReadingSink + 'static>(
        self,
        mut sink: K,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let Self {
            poller,
            mut readings,
            ..
        } = self;
        let mut link = poller.link();
        let cancel = CancellationToken::new();
        let polling = tokio::spawn(poller.run(cancel.clone()));
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                () = &mut stop => break,
                Ok(()) = link.changed() => {
                    if let Some(l) = link.borrow_and_update().clone() {
                        sink.link(l);
                    }
                }
                r = readings.recv() => match r {
                    Some(r) => {
                        if sink.send(r.sample).await.is_err() {
                            break;
                        }
                        // What else is queued goes without a select per reading
                        // (bounded, so a stop is seen between bursts).
                        let mut closed = false;
                        for _ in 0..1024 {
                            let Ok(r) = readings.try_recv() else { break };
                            if sink.send(r.sample).await.is_err() {
                                closed = true;
                                break;
                            }
                        }
                        if closed {
                            break;
                        }
                    }
                    None => break,
                },
            }
        }
        cancel.cancel();
        let _ = polling.await;
        // What the poller delivered before it stopped.
        while let Ok(r) = readings.try_recv() {
            if sink.send(r.sample).await.is_err() {
                break;
            }
        }
    }
}
