//! Table names, versioned migrations and the TimescaleDB choice.

use tokio_postgres::Client;

use super::config::{PostgresConfig, TimescaleMode};

/// The migrations, in order. Version `n` is `MIGRATIONS[n - 1]`. Never edit a
/// released one: add the next.
const MIGRATIONS: &[(&str, &str)] = &[
    ("init", include_str!("migrations/0001_init.sql")),
    ("commands", include_str!("migrations/0002_commands.sql")),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Fully qualified, quoted names of the sink's tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    /// The schema (unquoted).
    pub schema: String,
    /// The table prefix (unquoted).
    pub prefix: String,
    /// `"schema"."{prefix}samples"`.
    pub samples: String,
    /// `"schema"."{prefix}messages"`.
    pub messages: String,
    /// `"schema"."{prefix}data_loss"`.
    pub data_loss: String,
    /// `"schema"."{prefix}gaps"`.
    pub gaps: String,
    /// `"schema"."{prefix}dead_letter"`.
    pub dead_letter: String,
    /// `"schema"."{prefix}commands"`.
    pub commands: String,
    /// `"schema"."{prefix}schema_version"`.
    pub schema_version: String,
}

impl TableNames {
    /// Names for a validated config.
    pub(crate) fn new(config: &PostgresConfig) -> Self {
        let q = |t: &str| format!("\"{}\".\"{}{t}\"", config.schema, config.table_prefix);
        Self {
            schema: config.schema.clone(),
            prefix: config.table_prefix.clone(),
            samples: q("samples"),
            messages: q("messages"),
            data_loss: q("data_loss"),
            gaps: q("gaps"),
            dead_letter: q("dead_letter"),
            commands: q("commands"),
            schema_version: q("schema_version"),
        }
    }

    /// All tables, the samples table first.
    pub fn all(&self) -> [&str; 7] {
        [
            &self.samples,
            &self.messages,
            &self.data_loss,
            &self.gaps,
            &self.dead_letter,
            &self.commands,
            &self.schema_version,
        ]
    }

    fn render(&self, sql: &str) -> String {
        sql.replace("__SCHEMA__", &self.schema)
            .replace("__P__", &self.prefix)
    }
}

/// Brings the schema to [`SCHEMA_VERSION`], under an advisory lock so that sinks
/// starting together do not race. Idempotent.
pub(crate) async fn migrate(
    client: &mut Client,
    t: &TableNames,
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    // The lock comes first: even `CREATE SCHEMA IF NOT EXISTS` races with itself.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&format!("iiot-ingest schema {}", t.schema_version)],
    )
    .await?;
    tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{}\"", t.schema))
        .await?;
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {} (\
             version integer PRIMARY KEY, \
             name text NOT NULL, \
             applied_at timestamptz NOT NULL DEFAULT now())",
        t.schema_version
    ))
    .await?;
    let current: i32 = tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {}", t.schema_version),
            &[],
        )
        .await?
        .try_get(0)?;
    for (i, (name, sql)) in MIGRATIONS.iter().enumerate() {
        let version = i as i32 + 1;
        if version <= current {
            continue;
        }
        tracing::info!(version, name, schema = %t.schema, prefix = %t.prefix, "applying migration");
        tx.batch_execute(&t.render(sql)).await?;
        tx.execute(
            &format!(
                "INSERT INTO {} (version, name) VALUES ($1, $2)",
                t.schema_version
            ),
            &[&version, name],
        )
        .await?;
    }
    tx.commit().await
}

/// What to do about TimescaleDB, decided from the mode and what the server has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimescalePlan {
    /// Plain PostgreSQL tables.
    Plain,
    /// Create the extension if it is not installed, then the hypertable.
    Hypertable {
        /// Whether `CREATE EXTENSION` is needed.
        create_extension: bool,
    },
    /// `Require` on a server without the extension.
    Unavailable,
}

/// The pure decision (unit-tested; the server facts come from [`timescale_facts`]).
pub(crate) fn timescale_plan(
    mode: TimescaleMode,
    available: bool,
    installed: bool,
) -> TimescalePlan {
    match (mode, available || installed) {
        (TimescaleMode::Off, _) | (TimescaleMode::Auto, false) => TimescalePlan::Plain,
        (TimescaleMode::Require, false) => TimescalePlan::Unavailable,
        (_, true) => TimescalePlan::Hypertable {
            create_extension: !installed,
        },
    }
}

/// The statements that carry out a plan, in order.
pub(crate) fn timescale_sql(plan: TimescalePlan, t: &TableNames) -> Vec<String> {
    match plan {
        TimescalePlan::Plain | TimescalePlan::Unavailable => Vec::new(),
        TimescalePlan::Hypertable { create_extension } => {
            let mut v = Vec::new();
            if create_extension {
                v.push("CREATE EXTENSION IF NOT EXISTS timescaledb".to_owned());
            }
            v.push(format!(
                "SELECT create_hypertable('{}', 'time', if_not_exists => TRUE, migrate_data => TRUE)",
                t.samples
            ));
            v
        }
    }
}

/// `(available, installed)` for the `timescaledb` extension.
pub(crate) const TIMESCALE_FACTS_SQL: &str = "SELECT \
     EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'), \
     EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')";

/// Asks the server about TimescaleDB.
pub(crate) async fn timescale_facts(
    client: &Client,
) -> Result<(bool, bool), tokio_postgres::Error> {
    let row = client.query_one(TIMESCALE_FACTS_SQL, &[]).await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> TableNames {
        let mut c = PostgresConfig::default();
        c.set_schema("s1").set_table_prefix("p_");
        TableNames::new(&c)
    }

    #[test]
    fn timescale_choice() {
        use TimescaleMode::{Auto, Off, Require};
        assert_eq!(timescale_plan(Auto, false, false), TimescalePlan::Plain);
        assert_eq!(
            timescale_plan(Auto, true, false),
            TimescalePlan::Hypertable {
                create_extension: true
            }
        );
        assert_eq!(
            timescale_plan(Auto, true, true),
            TimescalePlan::Hypertable {
                create_extension: false
            }
        );
        assert_eq!(timescale_plan(Off, true, true), TimescalePlan::Plain);
        assert_eq!(
            timescale_plan(Require, false, false),
            TimescalePlan::Unavailable
        );
        assert_eq!(
            timescale_plan(Require, true, false),
            TimescalePlan::Hypertable {
                create_extension: true
            }
        );
    }

    #[test]
    fn timescale_statements() {
        let t = names();
        assert!(timescale_sql(TimescalePlan::Plain, &t).is_empty());
        assert_eq!(
            timescale_sql(TimescalePlan::Hypertable { create_extension: true }, &t),
            vec![
                "CREATE EXTENSION IF NOT EXISTS timescaledb".to_owned(),
                "SELECT create_hypertable('\"s1\".\"p_samples\"', 'time', if_not_exists => TRUE, migrate_data => TRUE)".to_owned(),
            ]
        );
        assert_eq!(
            timescale_sql(
                TimescalePlan::Hypertable {
                    create_extension: false
                },
                &t
            )
            .len(),
            1
        );
    }

    #[test]
    fn migrations_render_every_placeholder() {
        let t = names();
        for (_, sql) in MIGRATIONS {
            let r = t.render(sql);
            assert!(!r.contains("__"), "unreplaced placeholder");
            assert!(r.contains("\"s1\".\"p_"));
        }
        assert!(t.render(MIGRATIONS[0].1).contains("\"s1\".\"p_samples\""));
        assert!(t.render(MIGRATIONS[1].1).contains("\"s1\".\"p_commands\""));
        assert_eq!(t.samples, "\"s1\".\"p_samples\"");
        assert_eq!(t.commands, "\"s1\".\"p_commands\"");
        assert_eq!(SCHEMA_VERSION, 2);
    }
}
