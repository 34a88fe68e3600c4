//! Configuration of the PostgreSQL sink.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Whether the sink makes the samples table a TimescaleDB hypertable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TimescaleMode {
    /// Use TimescaleDB when the server offers the `timescaledb` extension
    /// (create the extension, make the samples table a hypertable); otherwise,
    /// or when creating the extension fails (for example it is not in
    /// `shared_preload_libraries`), log a warning and use plain PostgreSQL.
    #[default]
    Auto,
    /// Plain PostgreSQL tables even where TimescaleDB is available.
    Off,
    /// Fail setup ([`SinkError::Setup`](crate::sink::SinkError::Setup)) unless the
    /// samples table becomes a hypertable.
    Require,
}

/// Configuration of [`PostgresSink`](super::PostgresSink).
///
/// ## Defaults
/// | field | default |
/// |---|---|
/// | `url` | `postgres://postgres@127.0.0.1:5432/postgres` |
/// | `schema` | `public` |
/// | `table_prefix` | `iiot_` (tables `iiot_samples`, `iiot_messages`, `iiot_data_loss`, `iiot_gaps`, `iiot_dead_letter`, `iiot_commands`, `iiot_schema_version`) |
/// | `connect_timeout` | `"10s"` |
/// | `statement_timeout` | `"60s"` (`"0s"`: none) |
/// | `application_name` | `iiot-ingest` |
/// | `timescale` | `auto` |
///
/// `schema` and `table_prefix` are identifiers: lower-case ASCII letters, digits
/// and `_`, not starting with a digit; the schema at most 63 bytes, the prefix at
/// most 32 (so every derived table and index name fits PostgreSQL's 63).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// Connection URL or key=value string, as libpq and tokio-postgres accept.
    /// TLS is not supported yet: the connection is made without TLS.
    pub url: String,
    /// Schema that holds the tables; created if missing.
    pub schema: String,
    /// Prefix of every table name.
    pub table_prefix: String,
    /// How long to wait for a connection.
    #[serde(with = "iiot_core::duration::human")]
    pub connect_timeout: Duration,
    /// `statement_timeout` of the sink's sessions; zero disables it. A commit that
    /// runs into it fails with `Unavailable` and is retried.
    #[serde(with = "iiot_core::duration::human")]
    pub statement_timeout: Duration,
    /// `application_name` of the sink's sessions (visible in `pg_stat_activity`).
    pub application_name: String,
    /// TimescaleDB use.
    pub timescale: TimescaleMode,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            schema: "public".into(),
            table_prefix: "iiot_".into(),
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(60),
            application_name: "iiot-ingest".into(),
            timescale: TimescaleMode::Auto,
        }
    }
}

impl PostgresConfig {
    /// The defaults with `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Sets the schema.
    pub fn set_schema(&mut self, schema: impl Into<String>) -> &mut Self {
        self.schema = schema.into();
        self
    }

    /// Sets the table prefix.
    pub fn set_table_prefix(&mut self, prefix: impl Into<String>) -> &mut Self {
        self.table_prefix = prefix.into();
        self
    }

    /// Sets the connect timeout.
    pub fn set_connect_timeout(&mut self, t: Duration) -> &mut Self {
        self.connect_timeout = t;
        self
    }

    /// Sets the statement timeout (zero: none).
    pub fn set_statement_timeout(&mut self, t: Duration) -> &mut Self {
        self.statement_timeout = t;
        self
    }

    /// Sets the application name.
    pub fn set_application_name(&mut self, name: impl Into<String>) -> &mut Self {
        self.application_name = name.into();
        self
    }

    /// Sets the TimescaleDB mode.
    pub fn set_timescale(&mut self, mode: TimescaleMode) -> &mut Self {
        self.timescale = mode;
        self
    }

    /// Checks the identifiers.
    ///
    /// # Errors
    /// [`IdentifierError`] naming the field and the problem.
    pub fn validate(&self) -> Result<(), IdentifierError> {
        check_identifier("schema", &self.schema, 63)?;
        check_identifier("table_prefix", &self.table_prefix, 32)?;
        Ok(())
    }
}

/// A schema or table prefix that is not a plain identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{field} {value:?} is not a valid identifier (lower-case a-z, 0-9, _, not starting with a digit, at most {max} bytes)"
)]
#[non_exhaustive]
pub struct IdentifierError {
    /// Which config field.
    pub field: &'static str,
    /// Its value.
    pub value: String,
    /// Longest allowed.
    pub max: usize,
}

fn check_identifier(field: &'static str, value: &str, max: usize) -> Result<(), IdentifierError> {
    let ok_chars = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    let ok_start = value.bytes().next().is_some_and(|b| !b.is_ascii_digit());
    // An empty prefix is allowed (plain table names); an empty schema is not.
    let ok_len = value.len() <= max && (field == "table_prefix" || !value.is_empty());
    if ok_chars && ok_len && (ok_start || value.is_empty()) {
        Ok(())
    } else {
        Err(IdentifierError {
            field,
            value: value.to_owned(),
            max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_checked() {
        let mut c = PostgresConfig::default();
        assert!(c.validate().is_ok());
        c.set_table_prefix("");
        assert!(c.validate().is_ok());
        for bad in ["Iiot", "iiot-x", "1x", "a\"b", "x y", &"a".repeat(33)] {
            c.set_table_prefix(bad);
            assert!(c.validate().is_err(), "{bad}");
        }
        c.set_table_prefix("t_1");
        c.set_schema("");
        assert_eq!(c.validate().unwrap_err().field, "schema");
    }

    #[test]
    fn serde_defaults_and_unknown_fields() {
        let c: PostgresConfig =
            serde_json::from_str(r#"{"url":"postgres://x/y","statement_timeout":"1500ms"}"#)
                .unwrap();
        assert_eq!(c.url, "postgres://x/y");
        assert_eq!(c.statement_timeout, Duration::from_millis(1500));
        assert_eq!(c.schema, "public");
        assert_eq!(c.timescale, TimescaleMode::Auto);
        assert!(serde_json::from_str::<PostgresConfig>(r#"{"urll":"x"}"#).is_err());
        let back: PostgresConfig =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let t: PostgresConfig = serde_json::from_str(r#"{"timescale":"require"}"#).unwrap();
        assert_eq!(t.timescale, TimescaleMode::Require);
    }
}
