//! Broker URLs: `mqtt://host[:port]` and `mqtts://host[:port]`, one parser for every
//! crate that connects to a broker (the MQTT session, ingest's MQTT source).

use std::str::FromStr;

/// Port of `mqtt://` when the URL names none.
pub const DEFAULT_PORT: u16 = 1883;
/// Port of `mqtts://` when the URL names none.
pub const DEFAULT_TLS_PORT: u16 = 8883;

/// A parsed broker URL.
///
/// ```
/// use iiot_core::publish::BrokerUrl;
///
/// let b: BrokerUrl = "mqtts://[::1]".parse().unwrap();
/// assert_eq!((b.host.as_str(), b.port, b.tls), ("::1", 8883, true));
/// assert!("http://broker".parse::<BrokerUrl>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerUrl {
    /// Host name or IP address (an IPv6 address without its brackets).
    pub host: String,
    /// TCP port (never 0).
    pub port: u16,
    /// `mqtts://`: TLS.
    pub tls: bool,
}

/// Why a broker URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("broker URL {url:?}: {reason}")]
#[non_exhaustive]
pub struct BrokerUrlError {
    /// The URL as given.
    pub url: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl BrokerUrl {
    /// Parses `mqtt://host[:port]` or `mqtts://host[:port]` (IPv6 hosts in brackets; one
    /// trailing `/` allowed; no user, path, query or fragment).
    ///
    /// # Errors
    /// [`BrokerUrlError`] naming the URL and what is wrong with it.
    pub fn parse(url: &str) -> Result<Self, BrokerUrlError> {
        let bad = |reason: &'static str| BrokerUrlError {
            url: url.to_owned(),
            reason,
        };
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else {
            return Err(bad("scheme must be mqtt:// or mqtts://"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '@', '?', '#']) {
            return Err(bad("only host and port are allowed"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if after.is_empty() => (host, None),
                None => return Err(bad("junk after ]")),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(bad("host is empty"));
        }
        if host.contains(char::is_whitespace) {
            return Err(bad("host contains whitespace"));
        }
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| bad("port is not a number"))?,
            None if tls => DEFAULT_TLS_PORT,
            None => DEFAULT_PORT,
        };
        if port == 0 {
            return Err(bad("port 0"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            tls,
        })
    }
}

impl FromStr for BrokerUrl {
    type Err = BrokerUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> (String, u16, bool) {
        let b = BrokerUrl::parse(url).unwrap();
        (b.host, b.port, b.tls)
    }

    fn why(url: &str) -> &'static str {
        BrokerUrl::parse(url).unwrap_err().reason
    }

    #[test]
    fn hosts_ports_and_schemes() {
        assert_eq!(
            ok("mqtt://127.0.0.1:1884"),
            ("127.0.0.1".into(), 1884, false)
        );
        assert_eq!(ok("mqtt://broker"), ("broker".into(), 1883, false));
        assert_eq!(
            ok("mqtts://broker.example/"),
            ("broker.example".into(), 8883, true)
        );
        assert_eq!(ok("mqtt://[::1]:1883"), ("::1".into(), 1883, false));
        assert_eq!(ok("mqtts://[fe80::1]"), ("fe80::1".into(), 8883, true));
    }

    #[test]
    fn every_refusal_says_why() {
        assert_eq!(why("http://x"), "scheme must be mqtt:// or mqtts://");
        assert_eq!(why("mqtt://:1883"), "host is empty");
        assert_eq!(why("mqtt://h:port"), "port is not a number");
        assert_eq!(why("mqtt://h:70000"), "port is not a number");
        assert_eq!(why("mqtt://h:0"), "port 0");
        assert_eq!(why("mqtt://user@h"), "only host and port are allowed");
        assert_eq!(why("mqtt://h/path"), "only host and port are allowed");
        assert_eq!(why("mqtt://[::1"), "unclosed [");
        assert_eq!(why("mqtt://[::1]x"), "junk after ]");
        assert_eq!(why("mqtt://h st"), "host contains whitespace");
        let e = BrokerUrl::parse("tcp://h").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"broker URL "tcp://h": scheme must be mqtt:// or mqtts://"#
        );
    }
}
