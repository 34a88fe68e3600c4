//! Image fetchers the edge crate can offer without a network stack: local files,
//! and a chain that tries one fetcher and then another.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::PathBuf;

use bytes::Bytes;
use iiot_core::ota::{FetchError, FetchErrorKind, ImageBody, ImageFetch, Opened};

/// Images from local files: `file:///abs/path` or an absolute path. For images
/// brought on a USB stick or by a side channel, and for tests.
#[derive(Debug, Clone, Default)]
pub struct FileFetch {
    chunk: usize,
}

/// What [`FileFetch`] reads at a time. Each read is one `spawn_blocking` round
/// trip and one fresh buffer, so a chunk must be large for those to cost little
/// beside hashing it: at 64 KiB the streaming verification of a 256 MiB image ran
/// at 0.79x `openssl dgst -sha256`, at 256 KiB 1.05x (docs/BENCHMARKS.md).
/// Larger chunks gain little more and hold more memory per chunk in flight.
const FILE_CHUNK: usize = 256 << 10;

impl FileFetch {
    /// A file fetcher reading 256 KiB at a time.
    pub fn new() -> Self {
        Self { chunk: FILE_CHUNK }
    }

    fn path(url: &str) -> Option<PathBuf> {
        let p = url.strip_prefix("file://").unwrap_or(url);
        let p = PathBuf::from(p);
        p.is_absolute().then_some(p)
    }
}

/// The body of a [`FileFetch`].
#[derive(Debug)]
pub struct FileBody {
    file: Option<std::fs::File>,
    chunk: usize,
}

impl ImageFetch for FileFetch {
    type Body = FileBody;

    async fn open(&self, url: &str, offset: u64) -> Result<Opened<FileBody>, FetchError> {
        let Some(path) = Self::path(url) else {
            return Err(FetchError::new(
                FetchErrorKind::Unsupported,
                format!("not a file URL or absolute path: {url}"),
            ));
        };
        let chunk = if self.chunk == 0 {
            FILE_CHUNK
        } else {
            self.chunk
        };
        tokio::task::spawn_blocking(move || {
            let mut f = std::fs::File::open(&path).map_err(|e| {
                let kind = if e.kind() == std::io::ErrorKind::NotFound {
                    FetchErrorKind::NotFound
                } else {
                    FetchErrorKind::Refused
                };
                FetchError::new(kind, format!("{}: {e}", path.display()))
            })?;
            let total = f
                .metadata()
                .map_err(|e| FetchError::new(FetchErrorKind::Unavailable, e.to_string()))?
                .len();
            let start = offset.min(total);
            f.seek(SeekFrom::Start(start))
                .map_err(|e| FetchError::new(FetchErrorKind::Unavailable, e.to_string()))?;
            Ok(Opened {
                body: FileBody {
                    file: Some(f),
                    chunk,
                },
                start,
                total: Some(total),
            })
        })
        .await
        .unwrap_or_else(|e| Err(FetchError::new(FetchErrorKind::Unavailable, e.to_string())))
    }
}

impl ImageBody for FileBody {
    async fn chunk(&mut self) -> Result<Option<Bytes>, FetchError> {
        let Some(mut f) = self.file.take() else {
            return Ok(None);
        };
        let n = self.chunk;
        let (f, r) = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; n];
            let r = f.read(&mut buf).map(|k| {
                buf.truncate(k);
                buf
            });
            (f, r)
        })
        .await
        .map_err(|e| FetchError::new(FetchErrorKind::Unavailable, e.to_string()))?;
        match r {
            Ok(buf) if buf.is_empty() => Ok(None),
            Ok(buf) => {
                self.file = Some(f);
                Ok(Some(Bytes::from(buf)))
            }
            Err(e) => Err(FetchError::new(FetchErrorKind::Unavailable, e.to_string())),
        }
    }
}

/// Tries `A`, and `B` for URLs `A` does not serve ([`FetchErrorKind::Unsupported`]):
/// `Chain(FileFetch::new(), http)` serves both local paths and HTTP(S).
#[derive(Debug, Clone)]
pub struct Chain<A, B>(pub A, pub B);

/// The body of a [`Chain`]: whichever fetcher served it.
#[derive(Debug)]
pub enum ChainBody<A, B> {
    /// From the first.
    First(A),
    /// From the second.
    Second(B),
}

impl<A: ImageFetch, B: ImageFetch> ImageFetch for Chain<A, B> {
    type Body = ChainBody<A::Body, B::Body>;

    async fn open(&self, url: &str, offset: u64) -> Result<Opened<Self::Body>, FetchError> {
        match self.0.open(url, offset).await {
            Ok(o) => Ok(Opened {
                body: ChainBody::First(o.body),
                start: o.start,
                total: o.total,
            }),
            Err(e) if e.kind == FetchErrorKind::Unsupported => {
                let o = self.1.open(url, offset).await?;
                Ok(Opened {
                    body: ChainBody::Second(o.body),
                    start: o.start,
                    total: o.total,
                })
            }
            Err(e) => Err(e),
        }
    }
}

impl<A: ImageBody, B: ImageBody> ImageBody for ChainBody<A, B> {
    async fn chunk(&mut self) -> Result<Option<Bytes>, FetchError> {
        match self {
            Self::First(a) => a.chunk().await,
            Self::Second(b) => b.chunk().await,
        }
    }
}
