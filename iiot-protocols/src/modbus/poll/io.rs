//! The poller's driver: schedule, requests with timeout and retries, decode, emit, writes.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;

use iiot_core::types::{Sample, Timestamp};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_modbus::client::Reader as _;
use tokio_modbus::slave::{Slave, SlaveContext as _};
use tokio_util::sync::CancellationToken;

use super::breaker::{Admit, Breaker};
use super::{Poller, Reading};
use crate::modbus::codec::decode_registers;
use crate::modbus::error::{ExceptionCode, ReadFailure};
use crate::modbus::map::Area;
use crate::modbus::plan::ReadRequest;
use crate::modbus::transport::Connector;

enum Data {
    Words(Vec<u16>),
    Bits(Vec<bool>),
}

/// Outcome of one attempt.
pub(super) type Attempt<T> = Result<Result<T, ExceptionCode>, ReadFailure>;

impl<C: Connector> Poller<C> {
    /// Polls until `cancel` fires. Requests of due poll groups run one at a time, units
    /// interleaved round-robin; writes run between requests.
    ///
    /// # Cancel safety
    /// Stops between or inside requests; a write in flight when cancelled reports
    /// [`WriteError::Closed`](super::WriteError::Closed) to its caller.
    pub async fn run(mut self, cancel: CancellationToken) {
        let start = Instant::now();
        let groups: Vec<_> = self.map.groups().to_vec();
        let mut next_due: Vec<Option<Instant>> = (0..groups.len())
            .map(|g| self.plan.group(g).next().map(|_| start))
            .collect();
        let mut cmds_open = true;
        loop {
            let due = next_due.iter().flatten().min().copied();
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                cmd = self.cmds.recv(), if cmds_open => match cmd {
                    Some(cmd) => {
                        if cancel.run_until_cancelled(self.write(cmd)).await.is_none() {
                            break;
                        }
                    }
                    None => cmds_open = false,
                },
                () = sleep_until(due.unwrap_or_else(|| Instant::now() + super::Duration::from_secs(3600))), if due.is_some() => {
                    let now = Instant::now();
                    let mut due_groups = Vec::new();
                    for (g, next) in next_due.iter_mut().enumerate() {
                        if let Some(n) = next && *n <= now {
                            due_groups.push(g);
                            let mut following = *n + groups[g].interval;
                            if following <= now {
                                following = now + groups[g].interval;
                            }
                            *next = Some(following);
                        }
                    }
                    if cancel.run_until_cancelled(self.cycle(&due_groups)).await.is_none() {
                        break;
                    }
                }
            }
        }
        if let Some(mut ctx) = self.ctx.take() {
            let _ = tokio_modbus::client::Client::disconnect(&mut ctx).await;
        }
        tracing::debug!("poller stopped");
    }

    /// Polls every group once, now, and returns when all readings are emitted (for
    /// benchmarks, tests and "read now" commands; [`Poller::run`] is the normal driver).
    ///
    /// # Cancel safety
    /// Dropping the future mid-cycle drops the request in flight; the next request
    /// reconnects if the transport needs it.
    pub async fn poll_once(&mut self) {
        let groups: Vec<usize> = (0..self.map.groups().len()).collect();
        self.cycle(&groups).await;
    }

    /// One poll cycle over the due groups, units interleaved round-robin.
    async fn cycle(&mut self, groups: &[usize]) {
        self.cycle += 1;
        let mut by_unit: BTreeMap<u8, VecDeque<ReadRequest>> = BTreeMap::new();
        for &g in groups {
            for r in self.plan.group(g) {
                by_unit.entry(r.unit_id).or_default().push_back(r.clone());
            }
        }
        let mut queues: Vec<VecDeque<ReadRequest>> = by_unit.into_values().collect();
        if !queues.is_empty() {
            let n = queues.len();
            queues.rotate_left((self.cycle as usize) % n);
        }
        let mut conn_down = false;
        while queues.iter().any(|q| !q.is_empty()) {
            for q in &mut queues {
                let Some(req) = q.pop_front() else { continue };
                // Writes wait at most one request.
                while let Ok(cmd) = self.cmds.try_recv() {
                    self.write(cmd).await;
                }
                let follow = self.read(&req, &mut conn_down).await;
                for r in follow.into_iter().rev() {
                    q.push_front(r);
                }
            }
        }
        self.counters.cycles.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads one request and emits its tags; returns replacement requests when the device
    /// refused a coalesced read.
    async fn read(&mut self, req: &ReadRequest, conn_down: &mut bool) -> Vec<ReadRequest> {
        let now = Instant::now();
        let breaker = self
            .breakers
            .entry(req.unit_id)
            .or_insert_with(|| Breaker::new(self.cfg.breaker));
        let retries = match breaker.admit(now) {
            Admit::Normal => self.cfg.retries,
            Admit::Probe => 0,
            Admit::Skip => {
                self.emit_failure(req, &ReadFailure::CircuitOpen).await;
                return Vec::new();
            }
        };
        let result = if *conn_down {
            Err(ReadFailure::Connection {
                kind: std::io::ErrorKind::NotConnected,
            })
        } else {
            self.attempts(req.unit_id, retries, |ctx| {
                let req = req.clone();
                Box::pin(async move {
                    let (s, c) = (req.start, req.count);
                    match req.area {
                        Area::Coil => ctx.read_coils(s, c).await.map(|r| r.map(Data::Bits)),
                        Area::DiscreteInput => ctx
                            .read_discrete_inputs(s, c)
                            .await
                            .map(|r| r.map(Data::Bits)),
                        Area::InputRegister => ctx
                            .read_input_registers(s, c)
                            .await
                            .map(|r| r.map(Data::Words)),
                        Area::HoldingRegister => ctx
                            .read_holding_registers(s, c)
                            .await
                            .map(|r| r.map(Data::Words)),
                    }
                })
            })
            .await
        };
        let breaker = self
            .breakers
            .entry(req.unit_id)
            .or_insert_with(|| Breaker::new(self.cfg.breaker));
        match result {
            Ok(Ok(data)) => {
                breaker.success();
                self.emit_data(req, &data).await;
                Vec::new()
            }
            Ok(Err(exc)) => {
                breaker.success();
                if let Some(split) = self.plan.refused(&self.map, req, exc) {
                    return split;
                }
                self.emit_failure(req, &ReadFailure::Exception(exc)).await;
                Vec::new()
            }
            Err(failure) => {
                match failure {
                    ReadFailure::Timeout { .. } => breaker.timeout(Instant::now()),
                    ReadFailure::Connection { .. } => *conn_down = true,
                    _ => {}
                }
                tracing::debug!(unit = req.unit_id, start = req.start, count = req.count, %failure, "read failed");
                self.emit_failure(req, &failure).await;
                Vec::new()
            }
        }
    }

    /// Runs `op` with timeout and retries, reconnecting as needed.
    pub(super) async fn attempts<T, F>(&mut self, unit: u8, retries: u32, mut op: F) -> Attempt<T>
    where
        F: for<'a> FnMut(
            &'a mut tokio_modbus::client::Context,
        ) -> std::pin::Pin<
            Box<dyn Future<Output = tokio_modbus::Result<T>> + Send + 'a>,
        >,
    {
        let mut last = ReadFailure::Timeout { attempts: 0 };
        for attempt in 0..=retries {
            if attempt > 0 {
                sleep(self.cfg.retry_backoff).await;
            }
            let delay = self.connector.inter_frame_delay();
            if !delay.is_zero() {
                sleep(delay).await;
            }
            if self.ctx.is_none() {
                match timeout(self.cfg.timeout, self.connector.connect()).await {
                    Ok(Ok(ctx)) => {
                        self.ctx = Some(ctx);
                        self.link.up();
                    }
                    Ok(Err(e)) => {
                        self.link.down(&e);
                        last = ReadFailure::Connection { kind: e.kind() };
                        continue;
                    }
                    Err(_) => {
                        let kind = std::io::ErrorKind::TimedOut;
                        self.link.down(&std::io::Error::new(
                            kind,
                            format!("no connection within {:?}", self.cfg.timeout),
                        ));
                        last = ReadFailure::Connection { kind };
                        continue;
                    }
                }
            }
            let Some(ctx) = self.ctx.as_mut() else {
                continue;
            };
            ctx.set_slave(Slave(unit));
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            match timeout(self.cfg.timeout, op(ctx)).await {
                Ok(Ok(Ok(v))) => return Ok(Ok(v)),
                Ok(Ok(Err(exc))) => return Ok(Err(exc.into())),
                Ok(Err(tokio_modbus::Error::Transport(e))) => {
                    self.link.down(&e);
                    self.ctx = None;
                    last = ReadFailure::Connection { kind: e.kind() };
                }
                Ok(Err(tokio_modbus::Error::Protocol(e))) => {
                    tracing::debug!(error = %e, "protocol error");
                    if self.connector.reconnect_after_timeout() {
                        self.ctx = None;
                    }
                    last = ReadFailure::Protocol;
                }
                Err(_) => {
                    if self.connector.reconnect_after_timeout() {
                        self.ctx = None;
                    }
                    last = ReadFailure::Timeout {
                        attempts: attempt + 1,
                    };
                }
            }
        }
        Err(last)
    }

    async fn emit_data(&mut self, req: &ReadRequest, data: &Data) {
        let now = Timestamp::now();
        for &i in &req.tags {
            let Some(tag) = self.map.tags().get(i) else {
                continue;
            };
            let off = usize::from(tag.address.saturating_sub(req.start));
            let decoded = match data {
                Data::Bits(bits) => bits
                    .get(off)
                    .map(|b| iiot_core::types::Value::Bool(*b))
                    .ok_or(ReadFailure::Protocol),
                Data::Words(words) => match words.get(off..) {
                    Some(w) => decode_registers(tag, w).map_err(|_| ReadFailure::Protocol),
                    None => Err(ReadFailure::Protocol),
                },
            };
            let reading = match decoded {
                Ok(v) => Reading {
                    sample: Sample::good(tag.name.clone(), v, now),
                    failure: None,
                },
                Err(f) => Reading {
                    sample: Sample::without_value(tag.name.clone(), f.quality(), now),
                    failure: Some(f),
                },
            };
            self.emit(i, reading).await;
        }
    }

    async fn emit_failure(&mut self, req: &ReadRequest, failure: &ReadFailure) {
        let now = Timestamp::now();
        for &i in &req.tags {
            let Some(tag) = self.map.tags().get(i) else {
                continue;
            };
            let sample = Sample::without_value(tag.name.clone(), failure.quality(), now);
            self.emit(
                i,
                Reading {
                    sample,
                    failure: Some(failure.clone()),
                },
            )
            .await;
        }
    }

    async fn emit(&mut self, i: usize, reading: Reading) {
        let admit = self.filters.get_mut(i).is_none_or(|f| {
            f.admit(
                reading.sample.value(),
                reading.sample.quality(),
                Instant::now().into_std(),
            )
        });
        if admit && self.out.send(reading).await.is_err() {
            tracing::trace!("reading receiver dropped");
        }
    }
}
