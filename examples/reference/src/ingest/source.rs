//! The ingest source: where payloads come from.
//!
//! [`open`] is the one place that builds it: iiot-ingest's [`MqttSource`], a
//! persistent session (clean session off) with manual acknowledgements, so the
//! broker keeps every message until the pipeline has committed it. A crash of the
//! ingest process between receipt and commit means redelivery, never loss; the
//! sink's idempotency and the dedupe window absorb the copies.

use iiot_core::topic::TopicFilter;
use iiot_ingest::source::mqtt::MqttSource;
pub use iiot_ingest::source::mqtt::MqttSourceConfig;

use crate::error::AppError;

/// Checks what iiot-ingest would only find when the source starts, so a bad
/// `[mqtt]` section fails with the key named.
///
/// # Errors
/// The first broken rule as `(key, problem)`, keys relative to `[mqtt]`.
pub fn check(cfg: &MqttSourceConfig) -> Result<(), (&'static str, String)> {
    let tls = cfg.url.starts_with("mqtts://");
    if !(tls || cfg.url.starts_with("mqtt://")) {
        return Err((
            "url",
            format!("{:?} must start with mqtt:// or mqtts://", cfg.url),
        ));
    }
    if tls && cfg.ca_path.is_none() {
        return Err(("ca_path", "mqtts:// needs a CA file".into()));
    }
    if cfg.client_cert_path.is_some() != cfg.client_key_path.is_some() {
        return Err((
            "client_cert_path",
            "client_cert_path and client_key_path go together".into(),
        ));
    }
    if cfg.client_id.trim().is_empty() {
        return Err(("client_id", "must not be empty".into()));
    }
    if cfg.filters.is_empty() {
        return Err(("filters", "needs at least one topic filter".into()));
    }
    // The MQTT filter rules, as iiot-core checks them (and the session would at start).
    for f in &cfg.filters {
        if let Err(e) = TopicFilter::parse(f) {
            return Err(("filters", format!("{f:?}: {e}")));
        }
    }
    Ok(())
}

/// Starts the source (its session task runs until the source is dropped).
///
/// # Errors
/// [`AppError::Source`] for a bad URL, unreadable TLS files or no filters.
pub fn open(cfg: &MqttSourceConfig) -> Result<MqttSource, AppError> {
    let source = MqttSource::start(cfg)?;
    tracing::info!(url = %cfg.url, client_id = %cfg.client_id, filters = ?cfg.filters, "MQTT source started");
    Ok(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_filters(filters: &[&str]) -> MqttSourceConfig {
        MqttSourceConfig {
            filters: filters.iter().map(|f| (*f).to_owned()).collect(),
            ..MqttSourceConfig::default()
        }
    }

    #[test]
    fn filters() {
        assert_eq!(check(&MqttSourceConfig::default()), Ok(()));
        assert_eq!(
            check(&with_filters(&[
                "+/+/+/+/+/+/telemetry/#",
                "$share/g/acme/#"
            ])),
            Ok(())
        );
        for (f, why) in [
            ("acme/#/x", "'#' at level 2 (1-based) is not the last level"),
            (
                "acme/a+",
                "level 2 (1-based) mixes a wildcard with other characters",
            ),
            ("", "it is empty"),
            ("$share/g", "shared subscription needs"),
        ] {
            let (key, problem) = check(&with_filters(&["a/#", f])).unwrap_err();
            assert_eq!(key, "filters");
            assert!(
                problem.starts_with(&format!("{f:?}: invalid topic filter: "))
                    && problem.contains(why),
                "{problem}"
            );
        }
    }
}
