//! The transport trait for firmware images.

use std::future::Future;

use bytes::Bytes;

/// Fetches firmware images: the bytes of a URL from an offset. Implementations
/// decide which URLs they serve (an HTTP client `http://`/`https://`, a file
/// fetcher local paths) and return [`FetchErrorKind::Unsupported`] for others.
///
/// The OTA agent owns everything else: the throughput floor, the deadline, the
/// size limit, the hash, retries and resuming. An implementation only opens and
/// reads; it must not buffer a whole image.
pub trait ImageFetch: Send + Sync + 'static {
    /// The body of one response.
    type Body: ImageBody;

    /// Opens `url` to read from byte `offset` on (an HTTP Range request). The
    /// returned [`Opened::start`] says where the body really starts: a server
    /// that ignores the range starts at 0, and the caller skips what it has.
    ///
    /// # Errors
    /// [`FetchError`].
    fn open(
        &self,
        url: &str,
        offset: u64,
    ) -> impl Future<Output = Result<Opened<Self::Body>, FetchError>> + Send;
}

/// The chunks of one response body, in order.
pub trait ImageBody: Send {
    /// The next chunk; `None` at the end of the body. Cancel safe enough for a
    /// timeout around it: a dropped call may lose the chunk in flight, after
    /// which the caller opens again from where it is.
    ///
    /// # Errors
    /// [`FetchError`] (connection reset, a body that is not what was announced).
    fn chunk(&mut self) -> impl Future<Output = Result<Option<Bytes>, FetchError>> + Send;
}

/// An opened image.
#[derive(Debug)]
pub struct Opened<B> {
    /// Its bytes from [`Opened::start`] on.
    pub body: B,
    /// The offset of the body's first byte in the image.
    pub start: u64,
    /// The whole image's length, when the server said it.
    pub total: Option<u64>,
}

/// What went wrong fetching an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FetchErrorKind {
    /// This fetcher does not serve that URL (scheme, malformed URL).
    Unsupported,
    /// The image is not there (HTTP 404/410, no such file).
    NotFound,
    /// The server refused us (HTTP 401/403 and other client errors, TLS
    /// verification failed): trying again will not help.
    Refused,
    /// The server or network is unavailable for now (connect failed, reset,
    /// HTTP 5xx, 408, 429): worth trying again.
    Unavailable,
    /// The response broke the protocol (a range that is not the one asked for,
    /// a body that ends early).
    Protocol,
}

impl FetchErrorKind {
    /// Whether trying again later may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Unavailable | Self::Protocol)
    }
}

/// A failed fetch: its kind and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FetchError {
    /// What kind of failure.
    pub kind: FetchErrorKind,
    /// What happened, for logs and the OTA status's detail.
    pub message: String,
}

impl FetchError {
    /// A failure of `kind`.
    pub fn new(kind: FetchErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}
