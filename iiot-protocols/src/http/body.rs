//! The streaming body of one response.

use std::fmt;

use bytes::Bytes;
use iiot_core::ota::{FetchError, FetchErrorKind, ImageBody};

use super::error::body_error;

/// The body of an opened image: chunks as the server sends them, never
/// buffered whole. Made by [`HttpFetch`](super::HttpFetch)'s
/// [`open`](iiot_core::ota::ImageFetch::open).
///
/// Besides HTTP's own framing it checks the length it was told (`Content-Length`,
/// or the size of the `Content-Range`): a body that ends early or runs long is a
/// [`FetchErrorKind::Protocol`] error; a connection that breaks is
/// [`FetchErrorKind::Unavailable`]. Both are retryable: open again from the
/// bytes received. After the end `chunk` keeps returning `Ok(None)`, after an
/// error the same error.
pub struct HttpBody {
    state: State,
    shown: String,
    received: u64,
    expected: Option<u64>,
}

enum State {
    Reading(reqwest::Response),
    Ended,
    Failed(FetchError),
}

impl HttpBody {
    pub(crate) fn new(response: reqwest::Response, shown: String, expected: Option<u64>) -> Self {
        Self {
            state: State::Reading(response),
            shown,
            received: 0,
            expected,
        }
    }

    /// A body with no bytes (the image was complete already).
    pub(crate) fn empty(shown: String) -> Self {
        Self {
            state: State::Ended,
            shown,
            received: 0,
            expected: Some(0),
        }
    }

    /// The bytes this body returned so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// How many bytes the server announced for this body, when it did.
    pub fn expected(&self) -> Option<u64> {
        self.expected
    }

    fn fail(&mut self, e: FetchError) -> FetchError {
        self.state = State::Failed(e.clone());
        e
    }

    fn protocol(&mut self, what: &str) -> FetchError {
        let e = FetchError::new(
            FetchErrorKind::Protocol,
            format!("GET {}: {what}", self.shown),
        );
        self.fail(e)
    }
}

impl fmt::Debug for HttpBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the response: its Debug shows the full URL, query included.
        f.debug_struct("HttpBody")
            .field("url", &self.shown)
            .field(
                "state",
                &match &self.state {
                    State::Reading(_) => "reading",
                    State::Ended => "ended",
                    State::Failed(_) => "failed",
                },
            )
            .field("received", &self.received)
            .field("expected", &self.expected)
            .finish()
    }
}

impl ImageBody for HttpBody {
    /// The next chunk from the connection.
    ///
    /// # Errors
    /// [`FetchErrorKind::Unavailable`] when the connection breaks (reset, the
    /// server went away), [`FetchErrorKind::Protocol`] when the body is shorter or
    /// longer than announced; TLS failures as in
    /// [`open`](iiot_core::ota::ImageFetch::open).
    ///
    /// # Cancel safety
    /// Dropping the future loses no byte that was returned; a chunk being read
    /// may be lost, after which the caller opens again from
    /// [`HttpBody::received`] bytes further.
    async fn chunk(&mut self) -> Result<Option<Bytes>, FetchError> {
        let response = match &mut self.state {
            State::Reading(response) => response,
            State::Ended => return Ok(None),
            State::Failed(e) => return Err(e.clone()),
        };
        match response.chunk().await {
            Ok(Some(chunk)) => {
                self.received += chunk.len() as u64;
                if let Some(expected) = self.expected
                    && self.received > expected
                {
                    let what = format!("body longer than the announced {expected} bytes");
                    return Err(self.protocol(&what));
                }
                Ok(Some(chunk))
            }
            Ok(None) => {
                if let Some(expected) = self.expected
                    && self.received < expected
                {
                    let what = format!(
                        "body ended after {} of the announced {expected} bytes",
                        self.received
                    );
                    return Err(self.protocol(&what));
                }
                self.state = State::Ended;
                Ok(None)
            }
            Err(e) => {
                let e = body_error(&e, &self.shown, self.received);
                Err(self.fail(e))
            }
        }
    }
}
