//! Loading TOML config files: every problem names the file and the key.
//!
//! Config structs deserialize with `deny_unknown_fields`; a misspelt key, a value of
//! the wrong type and a value that fails a later check all become a
//! [`ConfigError::Invalid`] whose message starts with the file and the dotted key, e.g.
//! `config/ingest.toml: key "sink.sqlite.pth" (line 12): unknown field ...`.

use std::fmt;
use std::path::{Path, PathBuf};

use iiot_core::duration::legacy::{LegacyKey, LegacyUnit, upgrade_toml};
use serde::de::DeserializeOwned;

/// A config file that could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read config file: {source}", file = .file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML (or JSON, for a `.json` register map).
    #[error("{file}{line}: not valid {format}: {message}", file = .file.display(), line = LineSuffix(*.line))]
    Syntax {
        /// `TOML` or `JSON`.
        format: &'static str,
        /// The file.
        file: PathBuf,
        /// 1-based line, when known.
        line: Option<usize>,
        /// The parser's message.
        message: String,
    },
    /// A key is unknown or its value is wrong.
    #[error("{file}: key {key:?}{line}: {message}", file = .file.display(), line = LineSuffix(*.line))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The dotted key, e.g. `sink.sqlite.path`.
        key: String,
        /// 1-based line, when known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// A value that passed parsing but fails a check of the application.
    pub fn invalid(file: &Path, key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            file: file.to_owned(),
            key: key.into(),
            line: None,
            message: message.into(),
        }
    }
}

struct LineSuffix(Option<usize>);

impl fmt::Display for LineSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(l) => write!(f, " (line {l})"),
            None => Ok(()),
        }
    }
}

/// Reads and parses `file`.
///
/// # Errors
/// [`ConfigError`] naming the file and, for content problems, the key.
pub fn load<T: DeserializeOwned>(file: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_owned(),
        source,
    })?;
    parse(&text, file)
}

/// Reads and parses a JSON `file` (register maps may be written in JSON too), with
/// the same naming of file, key and line as TOML files.
///
/// # Errors
/// [`ConfigError`] naming the file and, for content problems, the key.
pub fn load_json<T: DeserializeOwned>(file: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_owned(),
        source,
    })?;
    let mut de = serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let line = Some(inner.line()).filter(|l| *l > 0);
        if inner.is_syntax() || inner.is_eof() {
            ConfigError::Syntax {
                format: "JSON",
                file: file.to_owned(),
                line,
                message: first_line(&inner.to_string()),
            }
        } else {
            ConfigError::Invalid {
                file: file.to_owned(),
                key,
                line,
                message: first_line(&inner.to_string()),
            }
        }
    })
}

/// Parses `text` as the content of `file`.
///
/// # Errors
/// [`ConfigError::Syntax`] or [`ConfigError::Invalid`].
pub fn parse<T: DeserializeOwned>(text: &str, file: &Path) -> Result<T, ConfigError> {
    let upgraded = upgrade(text, file);
    let text = upgraded.as_str();
    let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Syntax {
        format: "TOML",
        file: file.to_owned(),
        line: e.span().map(|s| line_of(text, s.start)),
        message: first_line(e.message()),
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = first_line(inner.message());
        // serde_path_to_error already ends the path with an unknown key in most
        // places; add it where it does not (the root, some enum contents).
        let key = match unknown_field(&message) {
            Some(field) if path == "." => field.to_owned(),
            Some(field) if path != field && !path.ends_with(&format!(".{field}")) => {
                format!("{path}.{field}")
            }
            _ => path,
        };
        ConfigError::Invalid {
            file: file.to_owned(),
            key,
            line: inner.span().map(|s| line_of(text, s.start)),
            message,
        }
    })
}

/// The keys of this deployment's own files that changed (beside the SDK's).
const APP_LEGACY_KEYS: &[LegacyKey] = &[
    LegacyKey::duration("keepalive_s", "keepalive", LegacyUnit::Secs),
    LegacyKey::duration("reconnect_max_ms", "reconnect_max", LegacyUnit::Millis),
    LegacyKey::duration("max_delay_ms", "max_delay", LegacyUnit::Millis),
    LegacyKey::duration("tick_ms", "tick", LegacyUnit::Millis),
];

/// Every old key a config file of the reference deployment may hold.
fn legacy_keys() -> impl Iterator<Item = &'static LegacyKey> {
    [
        APP_LEGACY_KEYS,
        iiot_protocols::mqtt::LEGACY_KEYS,
        iiot_protocols::modbus::LEGACY_KEYS,
        iiot_edge::outbox::LEGACY_KEYS,
        iiot_edge::forwarder::LEGACY_KEYS,
        iiot_ingest::LEGACY_KEYS,
    ]
    .into_iter()
    .flatten()
}

/// `text` with old numeric durations and renamed keys in today's form, each
/// rewrite logged at warn level with the file, key and line.
fn upgrade(text: &str, file: &Path) -> String {
    let keys: Vec<LegacyKey> = legacy_keys().copied().collect();
    let up = upgrade_toml(text, &keys);
    for d in &up.deprecations {
        tracing::warn!("{}: {d}", file.display());
    }
    up.text
}

/// The field named by serde's "unknown field `x`, expected ..." message.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().trim().to_owned()
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.get(..end).map_or(0, |t| t.matches('\n').count()) + 1
}

/// `path` resolved against the directory of `config_file` when relative.
pub fn relative_to(config_file: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_owned();
    }
    match config_file.parent() {
        Some(dir) => dir.join(path),
        None => path.to_owned(),
    }
}

/// Builds the MQTT session `cfg` describes without connecting (TLS files read and
/// checked), so that a mistake in `[mqtt]` of `config_file` stops the command at load,
/// naming the key, before any state exists.
///
/// # Errors
/// [`ConfigError`] naming `config_file` and the `mqtt.*` key.
pub fn check_mqtt_session(
    config_file: &Path,
    cfg: &iiot_protocols::mqtt::MqttConfig,
) -> Result<(), ConfigError> {
    use iiot_protocols::mqtt::ConfigError as M;
    let Err(e) = iiot_protocols::mqtt::Session::new(cfg) else {
        return Ok(());
    };
    let key = match &e {
        M::BrokerUrl { .. } => "mqtt.url".to_owned(),
        M::MissingCa | M::Identity(_) => "mqtt.ca_path".to_owned(),
        M::TlsFiles { .. } => "mqtt.client_cert_path".to_owned(),
        M::Value { field, .. } => format!("mqtt.{field}"),
        _ => "mqtt".to_owned(),
    };
    Err(ConfigError::invalid(config_file, key, e.to_string()))
}

/// Loads and checks the OPC-UA tag map `path` named by `key` of `config_file`
/// (relative to it): the format `iiot browse` prints.
///
/// # Errors
/// [`ConfigError`] naming the map file (a missing file, TOML that does not fit) or the
/// key (what [`OpcUaConfig::validate`](iiot_protocols::opcua::OpcUaConfig::validate)
/// finds).
pub fn load_opcua_map(
    config_file: &Path,
    key: &str,
    path: &Path,
) -> Result<iiot_protocols::opcua::OpcUaConfig, ConfigError> {
    let map_file = relative_to(config_file, path);
    if !map_file.is_file() {
        return Err(ConfigError::invalid(
            config_file,
            key,
            format!("OPC-UA tag map {} does not exist", map_file.display()),
        ));
    }
    let cfg: iiot_protocols::opcua::OpcUaConfig = load(&map_file)?;
    cfg.validate().map_err(|e| {
        let key = match &e {
            iiot_protocols::opcua::OpcUaConfigError::Tag { tag, .. } => {
                format!("tags[name = {tag:?}]")
            }
            iiot_protocols::opcua::OpcUaConfigError::Endpoint { .. } => "endpoint".to_owned(),
            iiot_protocols::opcua::OpcUaConfigError::Security { .. } => "security".to_owned(),
            iiot_protocols::opcua::OpcUaConfigError::Duration { what } => (*what).to_owned(),
            _ => "tags".to_owned(),
        };
        ConfigError::invalid(&map_file, key, e.to_string())
    })?;
    Ok(cfg)
}

/// Loads the register map that `config_file` names under `key` (a path relative to
/// the config file), checking it with the same rules as the poller.
///
/// # Errors
/// [`ConfigError`] naming the config file and key when the map cannot be read, or
/// the map file and the offending key or tag when it is invalid.
pub fn load_register_map(
    config_file: &Path,
    key: &str,
    path: &Path,
) -> Result<iiot_protocols::modbus::RegisterMap, ConfigError> {
    let map_file = relative_to(config_file, path);
    if !map_file.is_file() {
        return Err(ConfigError::invalid(
            config_file,
            key,
            format!("register map {} does not exist", map_file.display()),
        ));
    }
    let is_json = map_file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let map_cfg: iiot_protocols::modbus::MapConfig = if is_json {
        load_json(&map_file)?
    } else {
        load(&map_file)?
    };
    iiot_protocols::modbus::RegisterMap::from_config(&map_cfg).map_err(|e| {
        let key = match &e {
            iiot_protocols::modbus::MapError::Tag { tag, .. } => format!("tags[name = {tag:?}]"),
            iiot_protocols::modbus::MapError::GroupInterval { group } => {
                format!("poll_groups.{group}.interval")
            }
            iiot_protocols::modbus::MapError::Overlap { tag, .. } => {
                format!("tags[name = {tag:?}]")
            }
            _ => "tags".to_owned(),
        };
        ConfigError::invalid(&map_file, key, e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        port: u16,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        inner: Inner,
    }

    #[test]
    fn names_file_key_and_line() {
        let f = Path::new("x.toml");
        let e = parse::<Outer>("name = \"a\"\n[inner]\nport = \"no\"\n", f).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("x.toml: key \"inner.port\" (line 3)"), "{s}");
        let e = parse::<Outer>("name = \"a\"\n[inner]\nport = 1\nprot = 2\n", f).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("x.toml: key \"inner.prot\""), "{s}");
        let e = parse::<Outer>("nme = \"a\"\n", f).unwrap_err();
        assert!(e.to_string().starts_with("x.toml: key \"nme\""), "{e}");
        let e = parse::<Outer>("name = \n", f).unwrap_err();
        assert!(
            matches!(e, ConfigError::Syntax { line: Some(1), .. }),
            "{e}"
        );
    }
}
