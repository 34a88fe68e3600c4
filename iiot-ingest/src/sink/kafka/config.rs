//! Configuration of the Kafka sink.

use std::num::NonZeroUsize;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Configuration of [`KafkaSink`](super::KafkaSink).
///
/// ## Defaults
/// | field | default |
/// |---|---|
/// | `bootstrap_servers` | `["127.0.0.1:9092"]` |
/// | `client_id` | `iiot-ingest` |
/// | `telemetry_topic` | `iiot.telemetry` |
/// | `dead_letter_topic` | `iiot.dead_letter` |
/// | `events_topic` | `iiot.events` |
/// | `commands_topic` | `iiot.commands` |
/// | `create_topics` | `true` |
/// | `partitions` | 3 (for topics the sink creates) |
/// | `replication_factor` | 1 (for topics the sink creates) |
/// | `connect_timeout` | `"10s"` |
/// | `request_timeout` | `"30s"` (bounds one whole commit) |
/// | `max_batch_bytes` | 1 000 000 (one produce request per partition at most this big) |
/// | `recent_keys` | 65 536 |
///
/// Topic names follow Kafka's rules: 1 to 249 characters of `a-z A-Z 0-9 . _ -`,
/// not `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port` of one or more brokers; the client learns the rest of the
    /// cluster from their metadata. Plain TCP (no TLS, no SASL yet).
    pub bootstrap_servers: Vec<String>,
    /// Client id sent with every request (visible in broker logs and quotas).
    pub client_id: String,
    /// Topic of telemetry batches, one record per batch, keyed by device id.
    pub telemetry_topic: String,
    /// Topic of dead letters, one record per payload, keyed by the MQTT topic.
    pub dead_letter_topic: String,
    /// Topic of data-loss records and gap changes, keyed by device id.
    pub events_topic: String,
    /// Topic of commands (as issued) and command acks, keyed by device id.
    pub commands_topic: String,
    /// Create missing topics (with `partitions` and `replication_factor`) on
    /// every (re)connect. Off: a missing topic is a setup error.
    pub create_topics: bool,
    /// Partitions of a topic the sink creates. Existing topics keep theirs; the
    /// sink uses however many a topic has.
    pub partitions: u16,
    /// Replication factor of a topic the sink creates.
    pub replication_factor: u16,
    /// How long to wait for a broker connection and the cluster metadata.
    #[serde(with = "iiot_core::duration::human")]
    pub connect_timeout: Duration,
    /// How long one commit may take, all produce requests and the client's
    /// internal retries included; past it the commit fails as `Unavailable`.
    #[serde(with = "iiot_core::duration::human")]
    pub request_timeout: Duration,
    /// Largest produce request per partition, counted as the records' keys,
    /// values and headers. More records go out in several requests, in order; one
    /// record larger than this is refused (`Rejected`) before anything is sent.
    /// Keep it at or below the broker's `message.max.bytes`.
    pub max_batch_bytes: NonZeroUsize,
    /// How many keys of acknowledged telemetry, data-loss, command and ack
    /// records (`(device_id, message_id)`, `(device_id, command_id)`, …) the sink
    /// remembers, so that a commit retried after a partial failure does not send
    /// them again. Zero disables it.
    pub recent_keys: usize,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: vec!["127.0.0.1:9092".into()],
            client_id: "iiot-ingest".into(),
            telemetry_topic: "iiot.telemetry".into(),
            dead_letter_topic: "iiot.dead_letter".into(),
            events_topic: "iiot.events".into(),
            commands_topic: "iiot.commands".into(),
            create_topics: true,
            partitions: 3,
            replication_factor: 1,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_batch_bytes: NonZeroUsize::new(1_000_000).unwrap_or(NonZeroUsize::MIN),
            recent_keys: 65_536,
        }
    }
}

impl KafkaConfig {
    /// The defaults with one bootstrap server (`host:port`).
    pub fn new(bootstrap_server: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: vec![bootstrap_server.into()],
            ..Self::default()
        }
    }

    /// Sets the three topic names.
    pub fn set_topics(
        &mut self,
        telemetry: impl Into<String>,
        dead_letter: impl Into<String>,
        events: impl Into<String>,
    ) -> &mut Self {
        self.telemetry_topic = telemetry.into();
        self.dead_letter_topic = dead_letter.into();
        self.events_topic = events.into();
        self
    }

    /// Sets the commands topic.
    pub fn set_commands_topic(&mut self, commands: impl Into<String>) -> &mut Self {
        self.commands_topic = commands.into();
        self
    }

    /// Sets the client id.
    pub fn set_client_id(&mut self, id: impl Into<String>) -> &mut Self {
        self.client_id = id.into();
        self
    }

    /// Sets whether missing topics are created.
    pub fn set_create_topics(&mut self, create: bool) -> &mut Self {
        self.create_topics = create;
        self
    }

    /// Sets the partitions of created topics.
    pub fn set_partitions(&mut self, partitions: u16) -> &mut Self {
        self.partitions = partitions;
        self
    }

    /// Sets the replication factor of created topics.
    pub fn set_replication_factor(&mut self, factor: u16) -> &mut Self {
        self.replication_factor = factor;
        self
    }

    /// Sets the connect timeout.
    pub fn set_connect_timeout(&mut self, t: Duration) -> &mut Self {
        self.connect_timeout = t;
        self
    }

    /// Sets the per-commit timeout.
    pub fn set_request_timeout(&mut self, t: Duration) -> &mut Self {
        self.request_timeout = t;
        self
    }

    /// Sets the largest produce request per partition.
    pub fn set_max_batch_bytes(&mut self, bytes: NonZeroUsize) -> &mut Self {
        self.max_batch_bytes = bytes;
        self
    }

    /// Sets how many acknowledged keys are remembered (zero: none).
    pub fn set_recent_keys(&mut self, n: usize) -> &mut Self {
        self.recent_keys = n;
        self
    }

    /// Checks servers, topic names, partitions and timeouts.
    ///
    /// # Errors
    /// [`KafkaConfigError`] naming the field and the problem.
    pub fn validate(&self) -> Result<(), KafkaConfigError> {
        let bad = |field: &'static str, problem: String| KafkaConfigError { field, problem };
        if self.bootstrap_servers.is_empty() {
            return Err(bad("bootstrap_servers", "is empty".into()));
        }
        for s in &self.bootstrap_servers {
            let port_ok = s
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return Err(bad("bootstrap_servers", format!("{s:?} is not host:port")));
            }
        }
        for (field, name) in [
            ("telemetry_topic", &self.telemetry_topic),
            ("dead_letter_topic", &self.dead_letter_topic),
            ("events_topic", &self.events_topic),
            ("commands_topic", &self.commands_topic),
        ] {
            check_topic(name).map_err(|p| bad(field, format!("{name:?} {p}")))?;
        }
        if self.partitions == 0 {
            return Err(bad("partitions", "must be at least 1".into()));
        }
        if self.replication_factor == 0 || self.replication_factor > i16::MAX as u16 {
            return Err(bad("replication_factor", "must be 1 to 32767".into()));
        }
        if self.connect_timeout.is_zero() {
            return Err(bad("connect_timeout", "must not be zero".into()));
        }
        if self.request_timeout.is_zero() || self.request_timeout.as_millis() > i32::MAX as u128 {
            return Err(bad("request_timeout", "must be 1 to 2^31-1 ms".into()));
        }
        Ok(())
    }
}

/// Kafka's topic name rule.
fn check_topic(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 249 {
        return Err("must be 1 to 249 characters");
    }
    if name == "." || name == ".." {
        return Err("is reserved");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("may hold only a-z A-Z 0-9 . _ -");
    }
    Ok(())
}

/// A [`KafkaConfig`] field that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kafka config: {field} {problem}")]
#[non_exhaustive]
pub struct KafkaConfigError {
    /// Which field (its serde name).
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_fields_are_named() {
        let mut c = KafkaConfig::default();
        assert!(c.validate().is_ok());
        c.set_topics("ok", "bad topic", "ok2");
        assert_eq!(c.validate().unwrap_err().field, "dead_letter_topic");
        for bad in ["", ".", "..", "a/b", "ü", &"a".repeat(250)] {
            c.set_topics(bad, "x", "y");
            assert_eq!(c.validate().unwrap_err().field, "telemetry_topic", "{bad}");
        }
        c.set_topics("a.b_c-D9", "x", "a".repeat(249));
        assert!(c.validate().is_ok());
        c.set_commands_topic("no/slash");
        assert_eq!(c.validate().unwrap_err().field, "commands_topic");
        c.set_commands_topic("iiot.commands");
        c.set_partitions(0);
        assert_eq!(c.validate().unwrap_err().field, "partitions");
        c.set_partitions(1).set_replication_factor(0);
        assert_eq!(c.validate().unwrap_err().field, "replication_factor");
        c.set_replication_factor(1);
        for bad in ["127.0.0.1", ":9092", "h:x", "h:70000"] {
            c.bootstrap_servers = vec![bad.into()];
            assert_eq!(
                c.validate().unwrap_err().field,
                "bootstrap_servers",
                "{bad}"
            );
        }
        c.bootstrap_servers = vec![];
        assert!(c.validate().is_err());
        c.bootstrap_servers = vec!["[::1]:9092".into()];
        assert!(c.validate().is_ok());
        c.set_request_timeout(Duration::ZERO);
        assert_eq!(c.validate().unwrap_err().field, "request_timeout");
    }

    #[test]
    fn serde_defaults_and_unknown_fields() {
        let c: KafkaConfig = serde_json::from_str(
            r#"{"bootstrap_servers":["k1:9092","k2:9092"],"request_timeout":"1500ms","max_batch_bytes":4096}"#,
        )
        .unwrap();
        assert_eq!(c.bootstrap_servers.len(), 2);
        assert_eq!(c.request_timeout, Duration::from_millis(1500));
        assert_eq!(c.max_batch_bytes.get(), 4096);
        assert_eq!(c.telemetry_topic, "iiot.telemetry");
        assert_eq!(c.commands_topic, "iiot.commands");
        assert_eq!(c.partitions, 3);
        assert!(serde_json::from_str::<KafkaConfig>(r#"{"bootstrap":"x"}"#).is_err());
        assert!(serde_json::from_str::<KafkaConfig>(r#"{"max_batch_bytes":0}"#).is_err());
        let back: KafkaConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
