//! The executor task: deliveries in, ledger writes, checks, one handler call at a
//! time, acks out on the control lane.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use iiot_core::codec::{DecodeError, Limits, protobuf};
use iiot_core::command::{
    Acknowledge, Action, CommandHandler, Delivery, HandlerError, HandlerErrorKind, Inbox,
};
use iiot_core::publish::OutboundMessage;
use iiot_core::topic::{Topic, TopicClass, UnsPath};
use iiot_core::types::{AckReason, Command, CommandAck, CommandState, MessageId, Timestamp, Value};
use tokio_util::sync::CancellationToken;

use super::CommandConfig;
use super::check::{self, Context, Refusal, reject};
use super::ledger::{Entry, Executed, Ledger, LedgerError};
use crate::runtime::{ControlLane, LatestValues};

/// What the executor did so far (also exported as metrics `iiot_gateway_commands_*`).
#[derive(Debug, Default)]
pub struct CommandCounters {
    /// Deliveries that carried a command id (first deliveries and duplicates).
    pub received: AtomicU64,
    /// Deliveries of an id seen before (answered with the stored ack, never run).
    pub duplicates: AtomicU64,
    /// Handler calls made.
    pub executed: AtomicU64,
    /// Commands that completed.
    pub completed: AtomicU64,
    /// Commands refused before acting (any reason but expiry).
    pub rejected: AtomicU64,
    /// Commands whose TTL passed before they could run.
    pub expired: AtomicU64,
    /// Handler calls that failed or timed out.
    pub failed: AtomicU64,
    /// Commands found executing after a restart, reported interrupted.
    pub interrupted: AtomicU64,
    /// Deliveries without a readable command id (dead letters, acknowledged).
    pub dead_letters: AtomicU64,
    /// Acks recorded on the control lane (final and duplicate).
    pub acks: AtomicU64,
    /// Acks the control lane refused (sent again after the next restart).
    pub ack_failures: AtomicU64,
}

/// A cheap handle to a running [`Executor`]: its counters.
#[derive(Debug, Clone)]
pub struct ExecutorHandle {
    counters: Arc<CommandCounters>,
}

impl ExecutorHandle {
    /// The executor's counters.
    pub fn counters(&self) -> &CommandCounters {
        &self.counters
    }
}

/// How a handler call ended.
enum Outcome {
    Done(Result<Option<Value>, HandlerError>),
    TimedOut,
    Panicked(String),
}

type Running = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// A command received and durably recorded, waiting for its turn.
struct Pending {
    command: Command,
    received_at: Timestamp,
    received: Instant,
    dups: u32,
}

/// Runs commands for one device: see the [module docs](super). Build with
/// [`Executor::new`], run with [`Executor::run`] (or let the gateway runtime do both,
/// [`GatewayBuilder::commands`](crate::runtime::GatewayBuilder::commands)).
pub struct Executor<H> {
    path: UnsPath,
    ledger: Ledger,
    handler: Arc<H>,
    control: ControlLane,
    latest: LatestValues,
    config: CommandConfig,
    limits: Limits,
    counters: Arc<CommandCounters>,
    queue: VecDeque<Pending>,
    /// Start instants of recent handler calls (the rate limit's window; at most
    /// its count, kept only with a rate limit).
    recent: VecDeque<Instant>,
}

impl<H> std::fmt::Debug for Executor<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("device", &self.path.device_id().as_str())
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, LedgerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LedgerError::Io {
            path: std::path::PathBuf::new(),
            source: std::io::Error::other(format!("ledger task failed: {e}")),
        })
}

fn reason_label(r: AckReason) -> &'static str {
    r.as_str()
}

impl<H: CommandHandler> Executor<H> {
    /// An executor for the device at `path`: `ledger` records every id,
    /// `handler` acts, acks go through `control`, checks read `latest`.
    pub fn new(
        path: UnsPath,
        ledger: Ledger,
        handler: H,
        control: ControlLane,
        latest: LatestValues,
        config: CommandConfig,
    ) -> (ExecutorHandle, Self) {
        let counters = Arc::new(CommandCounters::default());
        let limits = Limits {
            max_payload_bytes: config.max_payload_bytes,
            ..Limits::default()
        };
        (
            ExecutorHandle {
                counters: counters.clone(),
            },
            Self {
                path,
                ledger,
                handler: Arc::new(handler),
                control,
                latest,
                config,
                limits,
                counters,
                queue: VecDeque::new(),
                recent: VecDeque::new(),
            },
        )
    }

    /// Recovers what a restart left (commands found executing are acknowledged
    /// `Interrupted` and never run; received ones are queued again; final acks not
    /// yet on the control lane are sent), then takes deliveries from `inbox` until
    /// `cancel` or until the inbox ends. A handler call under way when it stops is
    /// allowed to finish (within the handler timeout) and acknowledged.
    pub async fn run<I: Inbox>(mut self, mut inbox: I, cancel: CancellationToken) {
        if let Err(e) = self.recover().await {
            tracing::error!(error = %e, "commands: cannot read the ledger; no command runs");
            return;
        }
        let mut running: Option<(Pending, Running)> = None;
        loop {
            if running.is_none() {
                running = self.next().await;
            }
            let job = async {
                match running.as_mut() {
                    Some((_, f)) => f.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                r = job => {
                    if let Some((p, _)) = running.take() {
                        self.finish(p, r).await;
                    }
                }
                d = inbox.recv() => match d {
                    Some(d) => self.deliver(d).await,
                    None => break,
                },
            }
        }
        if let Some((p, f)) = running.take() {
            let r = f.await;
            self.finish(p, r).await;
        }
    }

    fn device_ack(
        &self,
        id: MessageId,
        state: CommandState,
        reason: Option<AckReason>,
        detail: Option<String>,
        result: Option<Value>,
        received_at: Option<Timestamp>,
    ) -> CommandAck {
        CommandAck {
            command_id: id,
            device_id: self.path.device_id().clone(),
            state,
            time: Timestamp::now(),
            detail,
            result,
            duplicate: false,
            reason,
            received_at,
        }
    }

    /// Records `ack` and `dups` duplicates of it on the control lane.
    async fn publish_acks(&self, ack: &CommandAck, dups: u32) -> bool {
        let topic = self.path.command_ack(ack.command_id).to_string();
        let mut dup = ack.clone();
        dup.duplicate = true;
        let first = protobuf::encode_command_ack(ack);
        let again = protobuf::encode_command_ack(&dup);
        let mut ok = true;
        for payload in std::iter::once(first).chain(std::iter::repeat_n(again, dups as usize)) {
            match self
                .control
                .publish(OutboundMessage::new(topic.clone(), payload))
                .await
            {
                Ok(_) => {
                    self.counters.acks.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    ok = false;
                    self.counters.ack_failures.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("iiot_gateway_command_ack_failures_total").increment(1);
                    tracing::warn!(command = %ack.command_id, error = %e, "commands: the control lane refused an ack; it is sent again after a restart");
                }
            }
        }
        ok
    }

    fn count_final(&self, state: CommandState, reason: Option<AckReason>) {
        let c = &self.counters;
        match state {
            CommandState::Completed => {
                c.completed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("iiot_gateway_commands_completed_total").increment(1);
            }
            CommandState::Expired => {
                c.expired.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("iiot_gateway_commands_expired_total").increment(1);
            }
            CommandState::Failed => {
                c.failed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("iiot_gateway_commands_failed_total").increment(1);
            }
            CommandState::Interrupted => {
                c.interrupted.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("iiot_gateway_commands_interrupted_total").increment(1);
            }
            _ => {
                c.rejected.fetch_add(1, Ordering::Relaxed);
                let r = reason.map_or("unspecified", reason_label);
                metrics::counter!("iiot_gateway_commands_rejected_total", "reason" => r)
                    .increment(1);
            }
        }
    }

    /// Makes `ack` the final word on its id: durable in the ledger, then on the
    /// control lane (with `dups` duplicates). Returns false when the ledger refused.
    async fn finalize(&self, issued_at: i64, received_at: i64, ack: CommandAck, dups: u32) -> bool {
        let id = ack.command_id;
        let mut entry = Entry {
            state: ack.state,
            issued_at,
            received_at,
            dups,
            ack_queued: false,
            command: Vec::new(),
            ack: protobuf::encode_command_ack(&ack),
        };
        let ledger = self.ledger.clone();
        let e = entry.clone();
        match blocking(move || ledger.put(id, &e, None, true)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) | Err(e) => {
                tracing::error!(command = %id, error = %e, "commands: cannot record the outcome");
                // Still tell the platform what happened; it is not durable here.
                self.publish_acks(&ack, dups).await;
                return false;
            }
        }
        self.count_final(ack.state, ack.reason);
        if self.publish_acks(&ack, dups).await {
            entry.ack_queued = true;
            let ledger = self.ledger.clone();
            // Not synced: losing this flag only sends the ack again (a duplicate the
            // platform ignores).
            let _ = blocking(move || ledger.put(id, &entry, None, false)).await;
        }
        let ledger = self.ledger.clone();
        let now = Timestamp::now();
        if let Ok(Err(e)) = blocking(move || ledger.prune(now)).await {
            tracing::warn!(error = %e, "commands: cannot prune the ledger");
        }
        true
    }

    async fn recover(&mut self) -> Result<(), LedgerError> {
        let ledger = self.ledger.clone();
        let entries = blocking(move || ledger.entries()).await??;
        let mut queued = Vec::new();
        for (id, e) in entries {
            match e.state {
                CommandState::Executing => {
                    tracing::warn!(command = %id, "commands: found executing after a restart; reported interrupted, not run again");
                    let ack = self.device_ack(
                        id,
                        CommandState::Interrupted,
                        Some(AckReason::Interrupted),
                        Some("the gateway restarted while the command executed; its outcome is unknown and it is not run again".into()),
                        None,
                        Timestamp::from_unix_nanos(e.received_at).ok(),
                    );
                    self.finalize(e.issued_at, e.received_at, ack, e.dups).await;
                }
                s if s.is_terminal() => {
                    if !e.ack_queued {
                        match protobuf::decode_command_ack(&e.ack, &Limits::default()) {
                            Ok(ack) => {
                                if self.publish_acks(&ack, e.dups).await {
                                    let mut e = e;
                                    e.ack_queued = true;
                                    let ledger = self.ledger.clone();
                                    let _ = blocking(move || ledger.put(id, &e, None, false)).await;
                                }
                            }
                            Err(err) => {
                                tracing::error!(command = %id, error = %err, "commands: a stored ack does not decode");
                            }
                        }
                    }
                }
                _ => match protobuf::decode_command(&e.command, &self.limits) {
                    Ok(command) => queued.push((e.received_at, e.dups, command)),
                    Err(err) => {
                        let ack = self.device_ack(
                            id,
                            CommandState::Rejected,
                            Some(AckReason::Malformed),
                            Some(format!("stored command unreadable: {err}")),
                            None,
                            Timestamp::from_unix_nanos(e.received_at).ok(),
                        );
                        self.finalize(e.issued_at, e.received_at, ack, e.dups).await;
                    }
                },
            }
        }
        queued.sort_by_key(|(r, _, c)| (*r, c.id));
        for (received_at, dups, command) in queued {
            self.queue.push_back(Pending {
                command,
                received_at: Timestamp::from_unix_nanos(received_at)
                    .unwrap_or_else(|_| Timestamp::now()),
                received: Instant::now(),
                dups,
            });
        }
        Ok(())
    }

    /// Handles one delivery: dedupe, record, acknowledge to the transport, queue.
    async fn deliver<A: Acknowledge>(&mut self, d: Delivery<A>) {
        let Delivery {
            topic,
            payload,
            retain,
            ack,
        } = d;
        let topic_id = match Topic::parse(&topic) {
            Ok(t) => match t.class {
                TopicClass::Command(id) => Some(id),
                _ => None,
            },
            Err(_) => None,
        };
        let Some(topic_id) = topic_id else {
            self.counters.dead_letters.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("iiot_gateway_command_dead_letters_total").increment(1);
            tracing::warn!(%topic, bytes = payload.len(), "commands: a message on a topic without a command id; dropped (dead letter)");
            if let Some(a) = ack {
                a.ack().await;
            }
            return;
        };
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("iiot_gateway_commands_received_total").increment(1);
        let now = Timestamp::now();
        // Seen before?
        if let Some(p) = self.queue.iter_mut().find(|p| p.command.id == topic_id) {
            p.dups += 1;
            let entry = pending_entry(p);
            self.duplicate_in_flight(topic_id, entry, ack).await;
            return;
        }
        let ledger = self.ledger.clone();
        let seen = match blocking(move || ledger.get(topic_id)).await {
            Ok(Ok(e)) => e,
            Ok(Err(e)) | Err(e) => {
                self.ledger_down(topic_id, &e).await;
                return; // no transport ack: the broker delivers it again
            }
        };
        if let Some(entry) = seen {
            self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("iiot_gateway_commands_duplicates_total").increment(1);
            if entry.state.is_terminal() {
                match protobuf::decode_command_ack(&entry.ack, &Limits::default()) {
                    Ok(mut stored) => {
                        stored.duplicate = true;
                        let topic = self.path.command_ack(topic_id).to_string();
                        match self
                            .control
                            .publish(OutboundMessage::new(
                                topic,
                                protobuf::encode_command_ack(&stored),
                            ))
                            .await
                        {
                            Ok(_) => {
                                self.counters.acks.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                self.counters.ack_failures.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(command = %topic_id, error = %e, "commands: cannot record a duplicate's ack; the broker delivers it again");
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(command = %topic_id, error = %e, "commands: a stored ack does not decode");
                    }
                }
                if let Some(a) = ack {
                    a.ack().await;
                }
            } else {
                // Executing (the one running now): its duplicates are answered when it ends.
                let mut entry = entry;
                entry.dups += 1;
                self.duplicate_in_flight(topic_id, entry, ack).await;
            }
            return;
        }
        // New id: everything that can be judged at once is judged now and recorded.
        let refused = self.admit(topic_id, &payload, retain, now);
        let (command, refusal) = match refused {
            Ok(c) => (Some(c), None),
            Err((c, r)) => (c, Some(r)),
        };
        // A payload without a readable issue time is kept (and pruned) by its
        // receipt time; with 0 it was pruned at once and its id forgotten.
        let issued_at = command
            .as_ref()
            .map_or(now.unix_nanos(), |c| c.issued_at.unix_nanos());
        if let Some(r) = refusal {
            tracing::info!(command = %topic_id, reason = %r.reason, detail = %r.detail, "commands: refused");
            let a = self.device_ack(
                topic_id,
                r.state,
                Some(r.reason),
                Some(r.detail),
                None,
                Some(now),
            );
            if self.finalize(issued_at, now.unix_nanos(), a, 0).await
                && let Some(t) = ack
            {
                t.ack().await;
            }
            return;
        }
        let Some(command) = command else { return };
        let entry = Entry {
            state: CommandState::Delivered,
            issued_at,
            received_at: now.unix_nanos(),
            dups: 0,
            ack_queued: false,
            command: payload.to_vec(),
            ack: Vec::new(),
        };
        let ledger = self.ledger.clone();
        match blocking(move || ledger.put(topic_id, &entry, None, true)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) | Err(e) => {
                self.ledger_down(topic_id, &e).await;
                return;
            }
        }
        // Durable: now the broker may forget it.
        if let Some(t) = ack {
            t.ack().await;
        }
        self.queue.push_back(Pending {
            command,
            received_at: now,
            received: Instant::now(),
            dups: 0,
        });
    }

    async fn duplicate_in_flight<A: Acknowledge>(
        &self,
        id: MessageId,
        entry: Entry,
        ack: Option<A>,
    ) {
        let ledger = self.ledger.clone();
        match blocking(move || ledger.put(id, &entry, None, true)).await {
            Ok(Ok(())) => {
                if let Some(t) = ack {
                    t.ack().await;
                }
            }
            Ok(Err(e)) | Err(e) => {
                tracing::error!(command = %id, error = %e, "commands: cannot record a duplicate; the broker delivers it again");
            }
        }
    }

    async fn ledger_down(&self, id: MessageId, e: &LedgerError) {
        tracing::error!(command = %id, error = %e, "commands: the ledger cannot record the command; refused, and the broker delivers it again");
        let a = self.device_ack(
            id,
            CommandState::Rejected,
            Some(AckReason::LedgerUnavailable),
            Some(e.to_string()),
            None,
            Some(Timestamp::now()),
        );
        self.count_final(a.state, a.reason);
        self.publish_acks(&a, 0).await;
    }

    /// Decodes and judges what does not depend on the order of execution.
    #[allow(clippy::result_large_err)]
    fn admit(
        &self,
        topic_id: MessageId,
        payload: &[u8],
        retain: bool,
        now: Timestamp,
    ) -> Result<Command, (Option<Command>, Refusal)> {
        if payload.len() > self.limits.max_payload_bytes {
            return Err((
                None,
                reject(
                    AckReason::TooLarge,
                    format!(
                        "{} bytes, limit {}",
                        payload.len(),
                        self.limits.max_payload_bytes
                    ),
                ),
            ));
        }
        let command = match protobuf::decode_command(payload, &self.limits) {
            Ok(c) => c,
            Err(e) => {
                let reason = match e {
                    DecodeError::Limit(_) => AckReason::TooLarge,
                    _ => AckReason::Malformed,
                };
                return Err((None, reject(reason, e.to_string())));
            }
        };
        let refuse = |r: Refusal| Err((Some(command.clone()), r));
        if command.id != topic_id {
            return refuse(reject(
                AckReason::Malformed,
                format!("the payload's id {} differs from the topic's", command.id),
            ));
        }
        if retain {
            return refuse(reject(
                AckReason::Retained,
                "delivered from the broker's retained store; retained commands never run",
            ));
        }
        if command.device_id != *self.path.device_id() {
            return refuse(reject(
                AckReason::WrongDevice,
                format!(
                    "addressed to {}, this is {}",
                    command.device_id,
                    self.path.device_id()
                ),
            ));
        }
        let issued = command.issued_at.unix_nanos();
        let oldest = now.saturating_sub(self.ledger.retention()).unix_nanos();
        if issued <= self.ledger.watermark() || issued < oldest {
            return refuse(reject(
                AckReason::TooOld,
                "issued before the ledger's window: the device cannot prove it never ran it",
            ));
        }
        if self.queue.len() >= self.config.max_pending {
            return refuse(reject(
                AckReason::QueueFull,
                format!("{} commands already wait", self.queue.len()),
            ));
        }
        Ok(command)
    }

    /// Takes the next command by the order rules, checks it and starts its handler
    /// call (or finishes it refused and takes the one after).
    async fn next(&mut self) -> Option<(Pending, Running)> {
        loop {
            let front = self.queue.front()?;
            // For one target: issue order among those waiting.
            let target = front.command.target.clone();
            let (idx, _) = self
                .queue
                .iter()
                .enumerate()
                .filter(|(_, p)| p.command.target == target)
                .min_by_key(|(_, p)| (p.command.issued_at.unix_nanos(), p.command.id))?;
            let p = self.queue.remove(idx)?;
            let now = Timestamp::now();
            let mono = Instant::now();
            let verdict = {
                let ctx = Context {
                    now,
                    mono,
                    config: &self.config,
                    target: self.handler.target(&p.command.target),
                    latest: &self.latest,
                    last: self.ledger.executed(p.command.target.as_str()),
                };
                check::check(&p.command, &ctx)
            };
            let verdict = verdict.and_then(|a| self.rate_limit(mono).map(|()| a));
            let kind = match verdict {
                Ok(kind) => kind,
                Err(r) => {
                    tracing::info!(command = %p.command.id, reason = %r.reason, detail = %r.detail, "commands: refused");
                    let a = self.device_ack(
                        p.command.id,
                        r.state,
                        Some(r.reason),
                        Some(r.detail),
                        None,
                        Some(p.received_at),
                    );
                    self.finalize(
                        p.command.issued_at.unix_nanos(),
                        p.received_at.unix_nanos(),
                        a,
                        p.dups,
                    )
                    .await;
                    continue;
                }
            };
            // Executing is on disk before the handler is called.
            let mut entry = pending_entry(&p);
            entry.state = CommandState::Executing;
            let executed = Executed {
                issued_at: p.command.issued_at.unix_nanos(),
                id: p.command.id,
                started_at: now.unix_nanos(),
            };
            let ledger = self.ledger.clone();
            let target_name = p.command.target.as_str().to_owned();
            let id = p.command.id;
            match blocking(move || ledger.put(id, &entry, Some((&target_name, executed)), true))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) | Err(e) => {
                    tracing::error!(command = %id, error = %e, "commands: cannot record the start; not run");
                    let a = self.device_ack(
                        id,
                        CommandState::Rejected,
                        Some(AckReason::LedgerUnavailable),
                        Some(e.to_string()),
                        None,
                        Some(p.received_at),
                    );
                    self.count_final(a.state, a.reason);
                    self.publish_acks(&a, p.dups).await;
                    continue;
                }
            }
            if self.config.rate_limit.is_some() {
                self.recent.push_back(mono);
            }
            self.counters.executed.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("iiot_gateway_commands_executed_total").increment(1);
            let handler = self.handler.clone();
            let action = Action {
                command: id,
                target: p.command.target.clone(),
                kind,
            };
            let timeout = self.config.handler_timeout;
            // Its own task: a panicking handler fails its command, not the executor;
            // one that overruns the timeout is aborted.
            let f: Running = Box::pin(async move {
                let mut task = tokio::spawn(async move { handler.execute(action).await });
                match tokio::time::timeout(timeout, &mut task).await {
                    Ok(Ok(r)) => Outcome::Done(r),
                    Ok(Err(e)) => Outcome::Panicked(e.to_string()),
                    Err(_) => {
                        task.abort();
                        Outcome::TimedOut
                    }
                }
            });
            return Some((p, f));
        }
    }

    fn rate_limit(&mut self, now: Instant) -> Result<(), Refusal> {
        let Some(limit) = self.config.rate_limit else {
            return Ok(());
        };
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= limit.per)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= limit.commands as usize {
            return Err(reject(
                AckReason::RateLimited,
                format!(
                    "more than {} commands in {}",
                    limit.commands,
                    humantime::format_duration(limit.per)
                ),
            ));
        }
        Ok(())
    }

    async fn finish(&mut self, p: Pending, r: Outcome) {
        let id = p.command.id;
        let (state, reason, detail, result) = match r {
            Outcome::Done(Ok(result)) => (CommandState::Completed, None, None, result),
            Outcome::Done(Err(e)) => match e.kind {
                HandlerErrorKind::Refused(reason) => {
                    (CommandState::Rejected, Some(reason), Some(e.message), None)
                }
                _ => (
                    CommandState::Failed,
                    Some(AckReason::HandlerFailed),
                    Some(e.message),
                    None,
                ),
            },
            Outcome::Panicked(e) => (
                CommandState::Failed,
                Some(AckReason::HandlerFailed),
                Some(format!(
                    "the handler panicked ({e}); the outcome is unknown and it is not retried"
                )),
                None,
            ),
            Outcome::TimedOut => (
                CommandState::Failed,
                Some(AckReason::HandlerTimeout),
                Some(format!(
                    "no answer within {}; the outcome is unknown and it is not retried",
                    humantime::format_duration(self.config.handler_timeout)
                )),
                None,
            ),
        };
        // The duplicates that came while it ran were counted in its ledger entry.
        let ledger = self.ledger.clone();
        let dups = match blocking(move || ledger.get(id)).await {
            Ok(Ok(Some(e))) => e.dups,
            _ => p.dups,
        };
        let latency = p.received.elapsed();
        metrics::histogram!("iiot_gateway_command_latency_seconds").record(latency.as_secs_f64());
        tracing::info!(command = %id, target = %p.command.target, ?state, reason = reason.map(AckReason::as_str), latency_ms = latency.as_millis() as u64, "commands: executed");
        let a = self.device_ack(id, state, reason, detail, result, Some(p.received_at));
        self.finalize(
            p.command.issued_at.unix_nanos(),
            p.received_at.unix_nanos(),
            a,
            dups,
        )
        .await;
    }
}

fn pending_entry(p: &Pending) -> Entry {
    Entry {
        state: CommandState::Delivered,
        issued_at: p.command.issued_at.unix_nanos(),
        received_at: p.received_at.unix_nanos(),
        dups: p.dups,
        ack_queued: false,
        command: protobuf::encode_command(&p.command),
        ack: Vec::new(),
    }
}
