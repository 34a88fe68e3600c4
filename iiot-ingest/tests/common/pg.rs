//! A private schema per PostgreSQL test, so tests run in parallel in the shared
//! database and clean up after themselves.

use iiot_ingest::sink::postgres::{PostgresConfig, PostgresSink};
use tokio_postgres::Client;

use super::services::{pg_client, pg_url};
use super::sink::{StoredSample, ValueColumns, sorted};

/// One test's schema, a client for inspection, and the sink's config.
pub struct PgEnv {
    /// A separate session for reading back and for faults.
    pub client: Client,
    /// The test's schema (also the sink's `application_name`).
    pub schema: String,
    /// Config for sinks of this test.
    pub config: PostgresConfig,
}

impl PgEnv {
    /// A fresh schema named after the test and the process; `None` when
    /// PostgreSQL is unreachable (and not required).
    pub async fn new(name: &str) -> Option<Self> {
        let client = pg_client().await?;
        let schema = format!("iiot_t_{name}_{}", std::process::id());
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await
            .unwrap();
        let mut config = PostgresConfig::new(pg_url());
        config.set_schema(&schema).set_application_name(&schema);
        Some(Self {
            client,
            schema,
            config,
        })
    }

    /// A connected sink on this schema.
    pub async fn sink(&self) -> PostgresSink {
        PostgresSink::connect(self.config.clone()).await.unwrap()
    }

    /// `"schema"."iiot_{table}"`.
    pub fn table(&self, table: &str) -> String {
        format!("\"{}\".\"iiot_{table}\"", self.schema)
    }

    /// Row count of `iiot_{table}`.
    pub async fn count(&self, table: &str) -> i64 {
        self.client
            .query_one(&format!("SELECT count(*) FROM {}", self.table(table)), &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Every sample row (times in ns, at the microsecond resolution stored).
    pub async fn samples(&self) -> Vec<StoredSample> {
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT (extract(epoch FROM time) * 1000000)::int8, device_id, tag, \
                     value_type, v_double, v_int, v_uint::text, v_bool, v_text, v_bytes, \
                     quality, message_id, seq::text FROM {}",
                    self.table("samples")
                ),
                &[],
            )
            .await
            .unwrap();
        let out = rows
            .iter()
            .map(|r| {
                let us: i64 = r.get(0);
                let uint: Option<&str> = r.get(6);
                let id: &[u8] = r.get(11);
                let seq: &str = r.get(12);
                StoredSample {
                    time_ns: us * 1_000,
                    device: r.get(1),
                    tag: r.get(2),
                    value: ValueColumns {
                        value_type: r.get(3),
                        double: r.get(4),
                        int: r.get(5),
                        uint: uint.map(|u| u.parse().unwrap()),
                        boolean: r.get(7),
                        text: r.get(8),
                        bytes: r.get(9),
                    }
                    .value(),
                    quality: u32::try_from(r.get::<_, i64>(10)).unwrap(),
                    message_id: id.try_into().unwrap(),
                    seq: seq.parse().unwrap(),
                }
            })
            .collect();
        sorted(out)
    }

    /// Terminates every session of this test's sinks; returns how many.
    pub async fn terminate_sinks(&self) -> usize {
        self.client
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = $1 AND pid <> pg_backend_pid()",
                &[&self.schema],
            )
            .await
            .unwrap()
            .len()
    }

    /// Drops the schema.
    pub async fn cleanup(self) {
        self.client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                self.schema
            ))
            .await
            .unwrap();
    }
}
