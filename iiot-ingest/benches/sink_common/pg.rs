//! PostgreSQL helpers of the benches that write to a PostgreSQL sink.

use iiot_ingest::sink::postgres::{PostgresConfig, PostgresSink};

/// A PostgreSQL sink writing into `schema` (which it creates on first use).
pub async fn sink_for(url: &str, schema: &str) -> PostgresSink {
    let mut c = PostgresConfig::new(url);
    c.set_schema(schema).set_application_name(schema);
    PostgresSink::connect(c).await.unwrap()
}

/// Empties the sink's sample and message tables in `schema`.
pub async fn reset(client: &tokio_postgres::Client, schema: &str) {
    client
        .batch_execute(&format!(
            "TRUNCATE \"{schema}\".iiot_samples, \"{schema}\".iiot_messages"
        ))
        .await
        .unwrap();
}

/// Rows in the sample table of `schema`.
pub async fn count(client: &tokio_postgres::Client, schema: &str) -> i64 {
    client
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".iiot_samples"),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}
