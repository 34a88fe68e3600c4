//! Firmware images over HTTP(S) (feature `http`): [`HttpFetch`], the
//! [`ImageFetch`] of iiot-core's OTA contract, on reqwest with the workspace's
//! rustls (aws-lc-rs); no reqwest type appears in this API.
//!
//! - **Resume.** `open(url, offset)` with `offset > 0` asks for
//!   `Range: bytes={offset}-`. A 206 must answer with that very start in its
//!   `Content-Range` (otherwise [`FetchErrorKind::Protocol`]); a server that
//!   ignores ranges answers 200 and the body starts at 0 ([`Opened::start`]), the
//!   caller skips what it has. An offset equal to the image's length (the slot
//!   has every byte; the server answers 416) opens an empty body at that offset,
//!   with the length from `Content-Range: bytes */{length}` or, from servers that
//!   leave it out, from a one-byte range request.
//! - **Errors as the agent reacts to them** ([`FetchErrorKind`]): 404 and 410 are
//!   `NotFound`; 401, 403 and the other 4xx `Refused`; 408, 429 and 5xx
//!   `Unavailable` (a `Retry-After` is quoted in the message); connect failures,
//!   timeouts and broken bodies `Unavailable`; a failed TLS certificate
//!   verification `Refused` ("TLS certificate verification failed" in the
//!   message); URLs other than `http://` and `https://` `Unsupported`.
//! - **Trust.** The configured CA certificates are the only trust anchors
//!   ([`CaPolicy::Replace`], for a plant's private CA) or join the system's roots
//!   ([`CaPolicy::Extend`]); with none configured the system's roots
//!   (rustls-native-certs). Optional client certificate for mutual TLS; a
//!   redirect from `https://` to `http://` is refused.
//! - **Secrets stay out of logs.** The bearer token is never logged and `Debug`
//!   redacts it; every URL in a message or log has no user info, query or
//!   fragment (a signed URL's query is a credential).
//! - **Streaming.** [`HttpBody`] hands out the chunks as they arrive and checks
//!   the announced length; nothing is buffered whole. The throughput floor,
//!   deadlines, size limit, hash, retries and resume are the OTA agent's: only
//!   connecting has a timeout here.
//!
//! ```no_run
//! use iiot_core::ota::{ImageBody, ImageFetch};
//! use iiot_protocols::http::{HttpFetch, HttpFetchConfig};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = HttpFetchConfig::new();
//! config
//!     .add_ca_path("/etc/iiot/plant-ca.pem")
//!     .set_bearer_token("token from the campaign");
//! let fetch = HttpFetch::new(&config)?;
//!
//! let have = 1_048_576; // bytes already in the slot
//! let mut opened = fetch.open("https://images.plant/fw/pump-2.4.0.bin", have).await?;
//! let mut skip = have - opened.start; // the server may have ignored the range
//! while let Some(chunk) = opened.body.chunk().await? {
//!     let chunk = chunk.slice(skip.min(chunk.len() as u64) as usize..);
//!     skip = skip.saturating_sub(chunk.len() as u64);
//!     // ... hash and write `chunk` ...
//! #   let _ = chunk;
//! }
//! # Ok(()) }
//! ```

mod body;
mod config;
mod error;
mod range;
mod tls;

use std::fmt;

use iiot_core::ota::{FetchError, FetchErrorKind, ImageFetch, Opened};
use reqwest::header::{ACCEPT_ENCODING, AUTHORIZATION, CONTENT_RANGE, HeaderValue, RANGE};
use reqwest::{Response, StatusCode, Url};
use tracing::{debug, warn};

pub use body::HttpBody;
pub use config::{CaPolicy, HttpFetchConfig, PemSource};
pub use error::{HttpConfigError, PemProblem, PemRole};

use error::{send_error, status_error};
use range::ContentRange;

/// The User-Agent of every request: `iiot-rs/{version}`.
pub const USER_AGENT: &str = concat!("iiot-rs/", env!("CARGO_PKG_VERSION"));

/// Redirects followed before giving up.
const MAX_REDIRECTS: usize = 10;

/// Fetches firmware images over HTTP and HTTPS. Cheap to clone: clones share one
/// connection pool.
///
/// `Debug` redacts the bearer token.
#[derive(Clone)]
pub struct HttpFetch {
    client: reqwest::Client,
    authorization: Option<HeaderValue>,
}

impl fmt::Debug for HttpFetch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpFetch")
            .field(
                "bearer_token",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

impl HttpFetch {
    /// A fetcher for `config`: reads the PEM files and the system's trust roots
    /// now, so a wrong file fails here rather than at the first download.
    ///
    /// # Errors
    /// [`HttpConfigError`]: a PEM input unreadable or without what it should
    /// hold, a client certificate without key, a token that cannot be a header.
    pub fn new(config: &HttpFetchConfig) -> Result<Self, HttpConfigError> {
        let authorization = match &config.bearer_token {
            None => None,
            Some(token) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| HttpConfigError::BadToken)?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let tls = tls::client_config(config)?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(config.connect_timeout)
            .user_agent(USER_AGENT)
            .redirect(redirect_policy())
            // A Referer would carry the previous URL's query (a signature) along.
            .referer(false)
            .build()
            .map_err(|e| HttpConfigError::Client(Box::new(e.without_url())))?;
        Ok(Self {
            client,
            authorization,
        })
    }

    async fn get(
        &self,
        url: &Url,
        range: Option<String>,
        shown: &str,
    ) -> Result<Response, FetchError> {
        if self.authorization.is_some() && url.scheme() == "http" {
            warn!(url = shown, "sending the bearer token over plain http");
        }
        let mut request = self
            .client
            .get(url.clone())
            // Ranges and lengths are of the image itself, never of a compressed form.
            .header(ACCEPT_ENCODING, "identity");
        if let Some(range) = range {
            request = request.header(RANGE, range);
        }
        if let Some(auth) = &self.authorization {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        request.send().await.map_err(|e| send_error(&e, shown))
    }

    async fn open_url(&self, url: &str, offset: u64) -> Result<Opened<HttpBody>, FetchError> {
        let url = parse(url)?;
        let shown = redact(&url);
        debug!(url = %shown, offset, "opening image");
        let range = (offset > 0).then(|| format!("bytes={offset}-"));
        let response = self.get(&url, range, &shown).await?;
        let status = response.status();
        debug!(url = %shown, offset, status = status.as_u16(), "image response");
        match status {
            StatusCode::OK => {
                let total = response.content_length();
                Ok(Opened {
                    body: HttpBody::new(response, shown, total),
                    start: 0,
                    total,
                })
            }
            StatusCode::PARTIAL_CONTENT => partial(response, offset, shown),
            StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 => {
                let complete = match content_range(&response) {
                    Some(ContentRange::Unsatisfied { complete }) => complete,
                    // Python's RangeHTTPServer and others leave it out.
                    _ => self.length(&url, offset, &shown).await?,
                };
                if complete == offset {
                    Ok(Opened {
                        body: HttpBody::empty(shown),
                        start: offset,
                        total: Some(complete),
                    })
                } else {
                    Err(FetchError::new(
                        FetchErrorKind::Protocol,
                        format!(
                            "GET {shown}: range from {offset} not satisfiable, the image has {complete} bytes"
                        ),
                    ))
                }
            }
            status => Err(status_error(status, response.headers(), &shown)),
        }
    }

    /// The image's length, asked with the one byte before `offset`, after a 416
    /// without `Content-Range`.
    async fn length(&self, url: &Url, offset: u64, shown: &str) -> Result<u64, FetchError> {
        let last = offset - 1;
        let response = self
            .get(url, Some(format!("bytes={last}-{last}")), shown)
            .await?;
        let status = response.status();
        let complete = match status {
            StatusCode::PARTIAL_CONTENT => match content_range(&response) {
                Some(ContentRange::Bytes { complete, .. }) => complete,
                _ => None,
            },
            StatusCode::OK => response.content_length(),
            StatusCode::RANGE_NOT_SATISFIABLE => {
                return Err(FetchError::new(
                    FetchErrorKind::Protocol,
                    format!("GET {shown}: offset {offset} is past the end of the image"),
                ));
            }
            status => return Err(status_error(status, response.headers(), shown)),
        };
        complete.ok_or_else(|| {
            FetchError::new(
                FetchErrorKind::Protocol,
                format!("GET {shown}: range from {offset} not satisfiable and the image's length unknown"),
            )
        })
    }
}

impl ImageFetch for HttpFetch {
    type Body = HttpBody;

    /// Opens `url` (`http://` or `https://`) from byte `offset` on; see the
    /// [module docs](self) for ranges, 416 and the error kinds.
    ///
    /// # Errors
    /// [`FetchError`], its kind as the module docs list; the message names the
    /// URL without user info, query or fragment.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the request; nothing else is left behind.
    async fn open(&self, url: &str, offset: u64) -> Result<Opened<HttpBody>, FetchError> {
        self.open_url(url, offset).await
    }
}

/// A 206 answer to `Range: bytes={offset}-`.
fn partial(response: Response, offset: u64, shown: String) -> Result<Opened<HttpBody>, FetchError> {
    let protocol =
        |what: String| FetchError::new(FetchErrorKind::Protocol, format!("GET {shown}: {what}"));
    let Some(ContentRange::Bytes {
        first,
        last,
        complete,
    }) = content_range(&response)
    else {
        return Err(protocol(
            "206 Partial Content without a valid single byte range in Content-Range".to_owned(),
        ));
    };
    if first != offset {
        return Err(protocol(format!(
            "asked for bytes from {offset}, the server sent bytes {first}-{last}"
        )));
    }
    let len = last - first + 1;
    if let Some(announced) = response.content_length()
        && announced != len
    {
        return Err(protocol(format!(
            "Content-Length {announced} differs from the range's {len} bytes"
        )));
    }
    Ok(Opened {
        body: HttpBody::new(response, shown, Some(len)),
        start: first,
        total: complete,
    })
}

fn content_range(response: &Response) -> Option<ContentRange> {
    let value = response.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    ContentRange::parse(value)
}

/// Parses an `http://` or `https://` URL with a host.
fn parse(url: &str) -> Result<Url, FetchError> {
    let unsupported = |why: &str| FetchError::new(FetchErrorKind::Unsupported, why.to_owned());
    let parsed = Url::parse(url).map_err(|e| unsupported(&format!("not a URL: {e}")))?;
    match parsed.scheme() {
        "http" | "https" if parsed.host().is_some() => Ok(parsed),
        "http" | "https" => Err(unsupported("URL without a host")),
        scheme => Err(unsupported(&format!(
            "the HTTP fetcher does not serve {scheme}:// URLs"
        ))),
    }
}

/// The URL for messages and logs: no user info, query or fragment.
fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    let had_query = shown.query().is_some();
    shown.set_query(None);
    shown.set_fragment(None);
    // Cannot fail for http(s) URLs with a host.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    let mut text = shown.to_string();
    if had_query {
        text.push_str("?...");
    }
    text
}

/// Follows up to [`MAX_REDIRECTS`] redirects, never from https to http.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt.url().scheme() == "http"
            && attempt.previous().iter().any(|u| u.scheme() == "https");
        if downgrade {
            attempt.error("redirect from https:// to http:// refused")
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
        } else {
            attempt.follow()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_are_served() {
        for url in [
            "ftp://host/fw.bin",
            "file:///tmp/fw.bin",
            "fw.bin",
            "http://",
            "not a url",
        ] {
            let e = parse(url).unwrap_err();
            assert_eq!(e.kind, FetchErrorKind::Unsupported, "{url}: {e}");
        }
        assert!(parse("https://images.plant:8443/fw.bin").is_ok());
        assert!(parse("http://127.0.0.1/fw.bin").is_ok());
    }

    #[test]
    fn shown_urls_carry_no_credentials() {
        let url = parse(
            "https://user:secret@s3.example/b/fw.bin?X-Amz-Signature=abc&X-Amz-Credential=k#f",
        )
        .unwrap();
        let shown = redact(&url);
        assert_eq!(shown, "https://s3.example/b/fw.bin?...");
        let url = parse("http://h:8080/fw.bin").unwrap();
        assert_eq!(redact(&url), "http://h:8080/fw.bin");
    }

    #[test]
    fn debug_redacts_the_token() {
        let mut config = HttpFetchConfig::new();
        config.set_bearer_token("s3cr3t-token").set_client_identity(
            PemSource::path("/etc/iiot/gw.pem"),
            PemSource::pem("-----BEGIN PRIVATE KEY-----\nkeymaterial\n-----END PRIVATE KEY-----\n"),
        );
        let text = format!("{config:?}");
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(!text.contains("keymaterial"), "{text}");
        assert!(text.contains("/etc/iiot/gw.pem"), "{text}");

        let mut config = HttpFetchConfig::new();
        config.set_bearer_token("s3cr3t-token");
        let fetch = HttpFetch::new(&config).unwrap();
        let text = format!("{fetch:?}");
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }

    #[test]
    fn config_loads_from_toml() {
        let config: HttpFetchConfig = toml::from_str(
            r#"
            connect_timeout = "3s"
            ca = [{ path = "/etc/iiot/plant-ca.pem" }, { pem = "-----BEGIN CERTIFICATE-----" }]
            ca_policy = "extend"
            bearer_token = "t"
            client_cert = { path = "/etc/iiot/gw.pem" }
            client_key = { path = "/etc/iiot/gw.key" }
            "#,
        )
        .unwrap();
        assert_eq!(config.connect_timeout(), std::time::Duration::from_secs(3));
        assert_eq!(config.ca().len(), 2);
        assert_eq!(config.ca_policy(), CaPolicy::Extend);
        assert!(config.has_bearer_token());
        assert!(config.client_identity().is_some());

        let defaults: HttpFetchConfig = toml::from_str("").unwrap();
        assert_eq!(defaults, HttpFetchConfig::default());
        assert_eq!(
            defaults.connect_timeout(),
            std::time::Duration::from_secs(10)
        );
        assert!(toml::from_str::<HttpFetchConfig>("connect_timeout_ms = 5").is_err());
        assert!(toml::from_str::<HttpFetchConfig>("connect_timeout = 5").is_err());
    }

    #[test]
    fn bad_pem_is_refused_when_building() {
        let mut config = HttpFetchConfig::new();
        config.add_ca_pem("not pem at all");
        let e = HttpFetch::new(&config).unwrap_err();
        assert!(
            matches!(
                e,
                HttpConfigError::BadPem {
                    role: PemRole::Ca,
                    path: None,
                    problem: PemProblem::NoCertificate
                }
            ),
            "{e}"
        );

        let mut config = HttpFetchConfig::new();
        config.add_ca_path("/nonexistent/iiot/ca.pem");
        let e = HttpFetch::new(&config).unwrap_err();
        assert!(
            matches!(
                e,
                HttpConfigError::Unreadable {
                    role: PemRole::Ca,
                    ..
                }
            ),
            "{e}"
        );

        let config: HttpFetchConfig =
            toml::from_str(r#"client_cert = { path = "/etc/iiot/gw.pem" }"#).unwrap();
        let e = HttpFetch::new(&config).unwrap_err();
        assert!(matches!(e, HttpConfigError::IncompleteIdentity), "{e}");

        let mut config = HttpFetchConfig::new();
        config.set_bearer_token("line\nbreak");
        let e = HttpFetch::new(&config).unwrap_err();
        assert!(matches!(e, HttpConfigError::BadToken), "{e}");
        assert!(!e.to_string().contains("break"));
    }
}
