//! The Kafka sink: telemetry keyed by device id, dead letters and events.
//!
//! One [`Sink::commit`] produces, with `acks = all`, and returns only after the
//! broker acknowledged every record:
//!
//! | what | topic ([`KafkaConfig`]) | key | value | headers |
//! |---|---|---|---|---|
//! | each new telemetry batch | `telemetry_topic` | device id | the batch as v1 Protobuf `TelemetryBatch` | `message_id`, `seq`, `device_id`, `topic`, `received_at`, `content_type` |
//! | each data-loss record | `events_topic` | device id | v1 Protobuf `DataLoss` | `event = data_loss`, `message_id`, `device_id`, `content_type` |
//! | each gap change | `events_topic` | device id | JSON ([`EVENT_GAP_OPENED`], [`EVENT_GAP_NARROWED`]) | `event`, `device_id`, `content_type` |
//! | each dead letter | `dead_letter_topic` | MQTT topic | the original bytes, unchanged | `reason`, `topic`, `detail`, `received_at` |
//! | each command (as issued) | `commands_topic` | device id | v1 Protobuf `Command` | `event = command`, `command_id`, `device_id`, `topic`, `received_at`, `content_type` |
//! | each command ack | `commands_topic` | device id | v1 Protobuf `CommandAck` | `event = command_ack`, `command_id`, `device_id`, `state`, `duplicate`, `topic`, `received_at`, `content_type` |
//!
//! A record's partition is `murmur2(key) mod partitions`, as Kafka's default
//! partitioner chooses it ([`partition_for`]): all records of one device land in
//! one partition, in commit order, so a device's order is kept. The telemetry
//! value is re-encoded with [`encode_telemetry`](iiot_core::codec::protobuf::encode_telemetry)
//! and decodes to the accepted batch (commands and acks likewise). Record
//! timestamps are the gateway time (telemetry), the detection time (data loss),
//! the change time (gaps), the receive time (dead letters), `issued_at`
//! (commands) and the ack's time (acks). Header names and value forms are a wire format:
//! see [`records`] for the stability rules.
//!
//! ## Idempotency: what a consumer must do
//! Kafka offers no deduplication across produce requests without the
//! idempotent or transactional producer, and rskafka 0.6 implements neither (its
//! produce requests carry no producer id or sequence numbers). So this sink is
//! **at least once**, and consumers dedupe:
//!
//! - Telemetry: drop a record whose `(key, message_id header)`, i.e.
//!   `(device_id, message_id)`, was seen before. Data loss: the same with the
//!   event's `message_id`. Gap changes are idempotent state updates (apply by
//!   `(device_id, first)`). Dead letters may repeat. Commands and acks are the
//!   raw material of a commands table: apply them by the rules of
//!   [`commands`](crate::commands) (keyed by `(device_id, command_id)`), which
//!   make repeats change nothing. The sink does not sweep for
//!   `expired_unconfirmed`: a consumer applies the deadline (`expires_at` plus
//!   its grace) itself.
//! - Within one commit the sink sends each `(device_id, message_id)` once.
//! - Across commits the sink remembers the last
//!   [`recent_keys`](KafkaConfig::recent_keys) keys the broker acknowledged, so a
//!   commit retried after a partial failure (some partitions acknowledged,
//!   another not) skips what is already in Kafka and counts it in
//!   [`CommitReport::batches_skipped`]. That memory is lost on restart.
//! - A duplicate record is still possible when the outcome of a produce request
//!   is unclear: the broker appended it but the acknowledgement was lost
//!   (connection cut, timeout, rskafka's own retry of a broken connection), or
//!   ingest crashed between commit and the MQTT ack and the broker redelivered.
//!   Such a record is byte-identical to the first one in key, value and headers,
//!   and its `(device_id, message_id)` lets the consumer drop it.
//!
//! A commit is not atomic across partitions: on an error some partitions may
//! already hold their records. The pipeline's retry of the same batch then skips
//! those (see above) or, after an unclear failure, repeats them.
//!
//! ## Topics
//! On every (re)connect the sink reads the cluster metadata and, with
//! [`create_topics`](KafkaConfig::create_topics), creates missing topics with
//! [`partitions`](KafkaConfig::partitions) and
//! [`replication_factor`](KafkaConfig::replication_factor). It uses the partition
//! count it found at connect time until the next reconnect; adding partitions to
//! a topic moves keys, as in any Kafka producer.
//!
//! ## Sequence state
//! [`Sink::load_sequence_state`] returns an empty list: Kafka is a log, not a
//! query store, and rebuilding the highest sequence and open gaps per device
//! would mean reading every partition of two topics from the start (bounded only
//! by retention) at each restart. Gap detection therefore starts afresh after a
//! restart; pair this sink with a database sink where that matters.
//!
//! ## Errors and reconnects
//! A broker that cannot be reached, a lost connection, a commit that outlives
//! [`request_timeout`](KafkaConfig::request_timeout) and transient broker errors
//! (leader moves, not enough replicas) are [`SinkError::Unavailable`]: the sink
//! drops its client and the next call connects anew. A record larger than
//! [`max_batch_bytes`](KafkaConfig::max_batch_bytes) is
//! [`SinkError::Rejected`] before anything is sent; the broker's own refusals of
//! content (record too large, invalid record) are `Rejected` too. An invalid
//! config, missing permissions, a missing topic with `create_topics` off or a
//! topic the broker will not create are [`SinkError::Setup`]. A broker's refusal
//! carries its Kafka error code ([`ErrorCode::Kafka`], e.g. 10 for
//! `MESSAGE_TOO_LARGE`) and the rskafka error as its
//! [`source`](std::error::Error::source).
//!
//! [`ErrorCode::Kafka`]: crate::sink::ErrorCode::Kafka
//!
//! ## Metrics
//! Through the `metrics` facade, labelled `sink = "kafka"`:
//! `iiot_ingest_sink_rows_written_total`, `iiot_ingest_sink_batches_written_total`,
//! `iiot_ingest_sink_batches_skipped_total`, `iiot_ingest_sink_records_total`
//! (label `topic` = `telemetry`, `events`, `dead_letter` or `commands`) (counters),
//! `iiot_ingest_sink_commit_seconds` (histogram of successful commits),
//! `iiot_ingest_sink_errors_total` (label `kind` = `unavailable`, `rejected` or
//! `setup`) and `iiot_ingest_sink_reconnects_total`.
//!
//! ## Cancel safety
//! A dropped commit future may leave some records produced and others not; the
//! next call drops the connection it was using and connects anew, and the
//! retried commit repeats at most the records whose acknowledgement was not seen.

mod config;
mod error;
pub mod records;

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iiot_core::types::Timestamp;
use rskafka::BackoffConfig;
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;

pub use self::config::{KafkaConfig, KafkaConfigError};
use self::error::classify;
use self::records::{AckKey, Dest, build};
pub use self::records::{
    EVENT_COMMAND, EVENT_COMMAND_ACK, EVENT_DATA_LOSS, EVENT_GAP_NARROWED, EVENT_GAP_OPENED,
    murmur2, partition_for,
};
use crate::recent::RecentSet;
use crate::record::{CommitBatch, CommitReport, DeviceSequenceState};
use crate::sink::{Sink, SinkError, SinkErrorKind};

/// The Kafka sink. See the [module docs](self).
///
/// ```no_run
/// # async fn demo() -> Result<(), iiot_ingest::sink::SinkError> {
/// use iiot_ingest::record::CommitBatch;
/// use iiot_ingest::sink::Sink;
/// use iiot_ingest::sink::kafka::{KafkaConfig, KafkaSink};
///
/// let mut config = KafkaConfig::new("127.0.0.1:9092");
/// config.set_topics("plant.telemetry", "plant.dead_letter", "plant.events");
/// let mut sink = KafkaSink::connect(config).await?;
/// let report = sink.commit(&CommitBatch::default()).await?;
/// assert_eq!(report.rows_written, 0);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct KafkaSink {
    config: KafkaConfig,
    conn: Option<Conn>,
    /// Whether a connection was ever opened (the next open is a reconnect).
    connected_before: bool,
    /// Keys the broker acknowledged; `None` with `recent_keys = 0`.
    recent: Option<RecentSet<AckKey>>,
}

/// One client, the partition counts it found and its partition clients.
#[derive(Debug)]
struct Conn {
    client: Client,
    partitions: HashMap<Dest, i32>,
    clients: HashMap<(Dest, i32), Arc<PartitionClient>>,
}

/// The records for one partition, split into produce requests.
struct Work {
    dest: Dest,
    partition: i32,
    chunks: Vec<Vec<usize>>,
    /// Bytes in the last chunk.
    last_bytes: usize,
}

impl KafkaSink {
    /// Checks `config` without connecting; the first call that needs the broker
    /// connects and creates missing topics.
    ///
    /// # Errors
    /// [`SinkError::Setup`] when the config is invalid.
    pub fn new(config: KafkaConfig) -> Result<Self, SinkError> {
        config
            .validate()
            .map_err(|e| SinkError::setup(e.to_string()).with_source(e))?;
        let recent = NonZeroUsize::new(config.recent_keys).map(|n| RecentSet::new(n, None));
        Ok(Self {
            config,
            conn: None,
            connected_before: false,
            recent,
        })
    }

    /// [`KafkaSink::new`], then connects and creates missing topics.
    ///
    /// # Errors
    /// [`SinkError::Setup`] for an invalid config or topics that cannot be
    /// created; [`SinkError::Unavailable`] when no broker can be reached.
    pub async fn connect(config: KafkaConfig) -> Result<Self, SinkError> {
        let mut sink = Self::new(config)?;
        sink.connection().await?;
        Ok(sink)
    }

    /// The configuration.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// Partitions of the telemetry, dead-letter and events topics, as found at
    /// the last connect; `None` while not connected.
    pub fn partition_counts(&self) -> Option<(i32, i32, i32)> {
        let c = self.conn.as_ref()?;
        let n = |d| c.partitions.get(&d).copied().unwrap_or(1);
        Some((n(Dest::Telemetry), n(Dest::DeadLetter), n(Dest::Events)))
    }

    /// Partitions of the commands topic, as found at the last connect; `None`
    /// while not connected.
    pub fn command_partitions(&self) -> Option<i32> {
        let c = self.conn.as_ref()?;
        Some(c.partitions.get(&Dest::Commands).copied().unwrap_or(1))
    }

    fn topic(&self, d: Dest) -> &str {
        match d {
            Dest::Telemetry => &self.config.telemetry_topic,
            Dest::DeadLetter => &self.config.dead_letter_topic,
            Dest::Events => &self.config.events_topic,
            Dest::Commands => &self.config.commands_topic,
        }
    }

    async fn connection(&mut self) -> Result<&mut Conn, SinkError> {
        let conn = match self.conn.take() {
            Some(c) => c,
            None => self.open().await?,
        };
        Ok(self.conn.insert(conn))
    }

    /// Opens a connection, counting it as a reconnect when one was open before.
    async fn open(&mut self) -> Result<Conn, SinkError> {
        if self.connected_before {
            tracing::info!("Kafka sink reconnecting");
            metrics::counter!("iiot_ingest_sink_reconnects_total", "sink" => "kafka").increment(1);
        }
        let conn = self.open_timed().await?;
        self.connected_before = true;
        Ok(conn)
    }

    async fn open_timed(&self) -> Result<Conn, SinkError> {
        let limit = self.config.connect_timeout;
        match tokio::time::timeout(limit, self.open_inner()).await {
            Ok(r) => r,
            Err(_) => Err(SinkError::unavailable(format!(
                "connect to {:?}: no metadata within {limit:?}",
                self.config.bootstrap_servers
            ))),
        }
    }

    async fn open_inner(&self) -> Result<Conn, SinkError> {
        let c = &self.config;
        // rskafka retries transient errors internally; the deadline keeps a dead
        // broker from holding a commit forever.
        let backoff = BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
            deadline: Some(c.request_timeout),
        };
        let client = ClientBuilder::new(c.bootstrap_servers.clone())
            .client_id(c.client_id.as_str())
            .backoff_config(backoff)
            .build()
            .await
            .map_err(|e| classify(e, "connect"))?;
        let mut partitions = HashMap::new();
        let topics = client
            .list_topics()
            .await
            .map_err(|e| classify(e, "metadata"))?;
        let mut created = false;
        for dest in Dest::ALL {
            let name = self.topic(dest);
            if let Some(t) = topics.iter().find(|t| t.name == name) {
                partitions.insert(dest, t.partitions.len().max(1) as i32);
                continue;
            }
            if !c.create_topics {
                return Err(SinkError::setup(format!(
                    "topic {name:?} does not exist and create_topics is off"
                )));
            }
            self.create_topic(&client, name).await?;
            created = true;
            partitions.insert(dest, i32::from(c.partitions));
        }
        if created {
            // Use what the broker made, which may differ from what was asked.
            let topics = client
                .list_topics()
                .await
                .map_err(|e| classify(e, "metadata"))?;
            for dest in Dest::ALL {
                let name = self.topic(dest);
                if let Some(t) = topics.iter().find(|t| t.name == name)
                    && !t.partitions.is_empty()
                {
                    partitions.insert(dest, t.partitions.len() as i32);
                }
            }
        }
        tracing::info!(servers = ?c.bootstrap_servers, ?partitions, "Kafka sink connected");
        Ok(Conn {
            client,
            partitions,
            clients: HashMap::new(),
        })
    }

    async fn create_topic(&self, client: &Client, name: &str) -> Result<(), SinkError> {
        let c = &self.config;
        let controller = client
            .controller_client()
            .map_err(|e| classify(e, "controller"))?;
        let timeout_ms = i32::try_from(c.request_timeout.as_millis()).unwrap_or(i32::MAX);
        let rf = i16::try_from(c.replication_factor).unwrap_or(i16::MAX);
        match controller
            .create_topic(name, i32::from(c.partitions), rf, timeout_ms)
            .await
        {
            Ok(()) => {
                tracing::info!(
                    topic = name,
                    partitions = c.partitions,
                    "created Kafka topic"
                );
                Ok(())
            }
            Err(rskafka::client::error::Error::ServerError {
                protocol_error: rskafka::client::error::ProtocolError::TopicAlreadyExists,
                ..
            }) => Ok(()),
            Err(e) => {
                let err = classify(e, &format!("create topic {name:?}"));
                // A broker that refuses the topic for any reason but its own
                // availability is a setup problem.
                Err(if err.is_transient() {
                    err
                } else {
                    err.with_kind(SinkErrorKind::Setup)
                })
            }
        }
    }

    /// Groups records by partition and splits each group into produce requests
    /// of at most `max_batch_bytes`, keeping order.
    ///
    /// # Errors
    /// [`SinkError::Rejected`] for a record larger than `max_batch_bytes`.
    fn plan(
        &self,
        conn: &Conn,
        records: &[Record],
        dests: &[Dest],
    ) -> Result<Vec<Work>, SinkError> {
        let max = self.config.max_batch_bytes.get();
        let mut groups: BTreeMap<(Dest, i32), Work> = BTreeMap::new();
        for (i, (r, &dest)) in records.iter().zip(dests).enumerate() {
            let size = r.approximate_size();
            if size > max {
                return Err(SinkError::rejected(format!(
                    "a {} record of {size} bytes exceeds max_batch_bytes = {max}",
                    self.topic(dest)
                )));
            }
            let n = conn.partitions.get(&dest).copied().unwrap_or(1);
            let partition = partition_for(r.key.as_deref().unwrap_or_default(), n);
            let w = groups.entry((dest, partition)).or_insert_with(|| Work {
                dest,
                partition,
                chunks: Vec::new(),
                last_bytes: 0,
            });
            match w.chunks.last_mut() {
                Some(chunk) if w.last_bytes + size <= max => {
                    chunk.push(i);
                    w.last_bytes += size;
                }
                _ => {
                    w.chunks.push(vec![i]);
                    w.last_bytes = size;
                }
            }
        }
        Ok(groups.into_values().collect())
    }

    /// The partition client of `(dest, partition)`, created on first use.
    async fn partition_client(
        &self,
        conn: &mut Conn,
        dest: Dest,
        partition: i32,
    ) -> Result<Arc<PartitionClient>, rskafka::client::error::Error> {
        if let Some(p) = conn.clients.get(&(dest, partition)) {
            return Ok(Arc::clone(p));
        }
        let p = Arc::new(
            conn.client
                .partition_client(self.topic(dest), partition, UnknownTopicHandling::Retry)
                .await?,
        );
        conn.clients.insert((dest, partition), Arc::clone(&p));
        Ok(p)
    }

    /// Produces every record; returns, per record, whether the broker
    /// acknowledged it, and the first error.
    async fn produce(
        &self,
        conn: &mut Conn,
        records: Vec<Record>,
        work: Vec<Work>,
    ) -> (Vec<bool>, Option<SinkError>) {
        let mut acked = vec![false; records.len()];
        let mut slots: Vec<Option<Record>> = records.into_iter().map(Some).collect();
        let mut jobs = Vec::with_capacity(work.len());
        for w in work {
            let client = match self.partition_client(conn, w.dest, w.partition).await {
                Ok(c) => c,
                Err(e) => {
                    let during = format!("partition {}/{}", self.topic(w.dest), w.partition);
                    return (acked, Some(classify(e, &during)));
                }
            };
            let chunks: Vec<(Vec<usize>, Vec<Record>)> = w
                .chunks
                .into_iter()
                .map(|idx| {
                    let recs = idx.iter().filter_map(|&i| slots[i].take()).collect();
                    (idx, recs)
                })
                .collect();
            let topic = self.topic(w.dest).to_owned();
            jobs.push(async move {
                let mut done = Vec::new();
                for (idx, recs) in chunks {
                    if let Err(e) = client.produce(recs, Compression::NoCompression).await {
                        let during = format!("produce to {topic}/{}", client.partition());
                        return (done, Some(classify(e, &during)));
                    }
                    done.extend(idx);
                }
                (done, None)
            });
        }
        let mut first: Option<SinkError> = None;
        for (done, err) in futures_util::future::join_all(jobs).await {
            for i in done {
                acked[i] = true;
            }
            // A content error decides the reaction: retrying would fail again.
            let rejected = |e: &SinkError| e.kind() == SinkErrorKind::Rejected;
            if let Some(e) = err
                && first.as_ref().is_none_or(|f| !rejected(f) && rejected(&e))
            {
                first = Some(e);
            }
        }
        (acked, first)
    }

    async fn commit_inner(&mut self, batch: &CommitBatch) -> Result<CommitReport, SinkError> {
        let (out, skipped) = build(batch, self.recent.as_ref());
        let mut report = CommitReport {
            batches_skipped: skipped,
            ..CommitReport::default()
        };
        if out.is_empty() {
            return Ok(report);
        }
        let mut records = Vec::with_capacity(out.len());
        let mut meta = Vec::with_capacity(out.len());
        for o in out {
            records.push(o.record);
            meta.push((o.dest, o.ack_key, o.samples));
        }
        let dests: Vec<Dest> = meta.iter().map(|m| m.0).collect();
        // The connection leaves `self` while in use: a dropped commit future
        // drops it, and the next call connects anew.
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self.open().await?,
        };
        let work = match self.plan(&conn, &records, &dests) {
            Ok(w) => w,
            Err(e) => {
                self.conn = Some(conn);
                return Err(e);
            }
        };
        let limit = self.config.request_timeout;
        let produced = tokio::time::timeout(limit, self.produce(&mut conn, records, work)).await;
        let Ok((acked, err)) = produced else {
            let detail = format!("commit not acknowledged within {limit:?}");
            return Err(self.failed(SinkError::unavailable(detail)));
        };
        let acked_at = Timestamp::now();
        let mut written = [0u64; Dest::ALL.len()];
        for (ok, (dest, key, samples)) in acked.iter().zip(meta) {
            if !ok {
                continue;
            }
            if let Some(k) = key {
                if matches!(k, AckKey::Telemetry(..)) {
                    report.batches_written += 1;
                    report.rows_written += samples;
                }
                if let Some(recent) = &mut self.recent {
                    recent.insert(k, acked_at);
                }
            }
            written[dest as usize] += 1;
        }
        if let Some(e) = err {
            if e.kind() == SinkErrorKind::Rejected {
                self.conn = Some(conn);
            }
            return Err(self.failed(e));
        }
        self.conn = Some(conn);
        for (dest, n) in Dest::ALL.into_iter().zip(written) {
            metrics::counter!("iiot_ingest_sink_records_total", "sink" => "kafka", "topic" => dest.label())
                .increment(n);
        }
        Ok(report)
    }

    /// Counts a failure; drops the connection unless the content was refused.
    fn failed(&mut self, err: SinkError) -> SinkError {
        tracing::warn!(error = %err, "Kafka commit failed");
        let kind = err.kind();
        if kind != SinkErrorKind::Rejected {
            self.conn = None;
        }
        metrics::counter!("iiot_ingest_sink_errors_total", "sink" => "kafka", "kind" => kind.label())
            .increment(1);
        err
    }
}

impl Sink for KafkaSink {
    async fn commit(&mut self, batch: &CommitBatch) -> Result<CommitReport, SinkError> {
        if batch.is_empty() {
            return Ok(CommitReport::default());
        }
        let started = Instant::now();
        let report = self.commit_inner(batch).await?;
        super::record_commit("kafka", &report, started);
        Ok(report)
    }

    /// Always empty: see the [module docs](self#sequence-state).
    async fn load_sequence_state(&mut self) -> Result<Vec<DeviceSequenceState>, SinkError> {
        Ok(Vec::new())
    }
}
