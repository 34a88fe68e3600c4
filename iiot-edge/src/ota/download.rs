//! Streaming an image into the writable slot: through SHA-256, never past the
//! declared size, resumable, with a throughput floor and a deadline.

use std::sync::{Arc, Mutex};

use iiot_core::backoff::Backoff;
use iiot_core::ota::{FetchErrorKind, ImageBody as _, ImageFetch};
use iiot_core::types::{ManifestBody, OtaReason};
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::slots::{ImageInfo, SlotBackend};
use super::{OtaConfig, Rejection, blocking};

/// How a download ended, short of success.
#[derive(Debug)]
pub(crate) enum DownloadEnd {
    /// Cancelled (shutdown or a newer manifest); the slot keeps what it has.
    Cancelled,
    /// The image or its server was refused ([`OtaReason::is_rejection`]) or the
    /// download failed; the slot was emptied.
    Refused(Rejection),
}

/// Progress reports go through this.
pub(crate) type Progress = Box<dyn Fn(u64) + Send + Sync>;

/// Downloads `body`'s image into the writable slot, resuming from the bytes the
/// slot already has (re-hashed first). Returns the verified image's info.
pub(crate) async fn download<B: SlotBackend, F: ImageFetch>(
    backend: Arc<Mutex<B>>,
    fetch: Arc<F>,
    body: ManifestBody,
    config: OtaConfig,
    progress: Progress,
    cancel: CancellationToken,
) -> Result<ImageInfo, DownloadEnd> {
    let deadline = Instant::now() + config.download_deadline;
    let mut from_zero = false;
    loop {
        let r = attempt(
            &backend, &*fetch, &body, &config, &progress, deadline, from_zero, &cancel,
        )
        .await;
        match r {
            Ok(info) => return Ok(info),
            // A resumed download whose hash fails may hold bytes a crash spoilt:
            // once, start over from nothing before calling the image bad.
            Err(Attempt::ResumedMismatch) if !from_zero => from_zero = true,
            Err(Attempt::ResumedMismatch) => {
                let _ = blocking(&backend, |b| b.truncate(0)).await;
                return Err(DownloadEnd::Refused(Rejection::new(
                    OtaReason::HashMismatch,
                    "the image's SHA-256 is not the manifest's",
                )));
            }
            Err(Attempt::End(DownloadEnd::Cancelled)) => return Err(DownloadEnd::Cancelled),
            Err(Attempt::End(DownloadEnd::Refused(r))) => {
                let _ = blocking(&backend, |b| b.truncate(0)).await;
                return Err(DownloadEnd::Refused(r));
            }
        }
    }
}

enum Attempt {
    ResumedMismatch,
    End(DownloadEnd),
}

impl From<Rejection> for Attempt {
    fn from(r: Rejection) -> Self {
        Self::End(DownloadEnd::Refused(r))
    }
}

fn storage(e: &super::SlotError) -> Rejection {
    Rejection::new(OtaReason::StorageFailed, e.to_string())
}

#[allow(clippy::too_many_arguments)]
async fn attempt<B: SlotBackend, F: ImageFetch>(
    backend: &Arc<Mutex<B>>,
    fetch: &F,
    body: &ManifestBody,
    config: &OtaConfig,
    progress: &Progress,
    deadline: Instant,
    from_zero: bool,
    cancel: &CancellationToken,
) -> Result<ImageInfo, Attempt> {
    let size = body.size;
    // What the slot already has, re-hashed.
    let have = blocking(backend, SlotBackend::written)
        .await
        .map_err(|e| storage(&e))?;
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    if !from_zero && have > 0 && have <= size {
        let mut buf = vec![0u8; 1 << 20];
        while offset < have {
            if cancel.is_cancelled() {
                return Err(Attempt::End(DownloadEnd::Cancelled));
            }
            let (n, b) = {
                let at = offset;
                let mut b = std::mem::take(&mut buf);
                blocking(backend, move |s| {
                    let r = s.read(at, &mut b);
                    r.map(|n| (n, b))
                })
                .await
                .map_err(|e| storage(&e))?
            };
            buf = b;
            if n == 0 {
                break;
            }
            let n = n.min((have - offset) as usize);
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
    }
    let resumed = offset > 0;
    blocking(backend, move |b| b.truncate(offset))
        .await
        .map_err(|e| storage(&e))?;
    if resumed {
        tracing::info!(offset, size, "ota: resuming the download");
    }
    progress(offset);
    let mut attempt_no = 0u32;
    let mut last_reported = offset;
    let mut since_sync = 0u64;
    let mut no_progress_ends = 0u32;
    'outer: while offset < size {
        if Instant::now() >= deadline {
            return Err(Rejection::new(
                OtaReason::DownloadDeadline,
                format!(
                    "{offset} of {size} bytes after {}",
                    humantime::format_duration(config.download_deadline)
                ),
            )
            .into());
        }
        let open = tokio::select! {
            () = cancel.cancelled() => return Err(Attempt::End(DownloadEnd::Cancelled)),
            r = tokio::time::timeout(config.stall_window, fetch.open(&body.url, offset)) => r,
        };
        let opened = match open {
            Ok(Ok(o)) => o,
            Ok(Err(e)) if e.kind.is_retryable() => {
                retry_wait(config, &mut attempt_no, deadline, cancel, &e.message).await?;
                continue;
            }
            Ok(Err(e)) => {
                let reason = if e.kind == FetchErrorKind::Unsupported {
                    OtaReason::UnsupportedUrl
                } else {
                    OtaReason::DownloadFailed
                };
                return Err(Rejection::new(reason, e.message).into());
            }
            Err(_) => {
                retry_wait(config, &mut attempt_no, deadline, cancel, "no response").await?;
                continue;
            }
        };
        if let Some(total) = opened.total {
            if total > size {
                return Err(Rejection::new(
                    OtaReason::ImageTooLong,
                    format!("the server has {total} bytes, the manifest declares {size}"),
                )
                .into());
            }
            if total < size && total <= offset {
                return Err(Rejection::new(
                    OtaReason::ImageTooShort,
                    format!("the server has {total} bytes, the manifest declares {size}"),
                )
                .into());
            }
        }
        if opened.start > offset {
            retry_wait(
                config,
                &mut attempt_no,
                deadline,
                cancel,
                "the server skipped bytes",
            )
            .await?;
            continue;
        }
        let mut skip = offset - opened.start;
        let mut body_stream = opened.body;
        // The throughput floor: every `stall_window`, at least floor × window bytes.
        let mut window_start = Instant::now();
        let mut window_bytes = 0u64;
        let floor = (u128::from(config.min_bytes_per_s) * config.stall_window.as_millis() / 1000)
            .min(u128::from(u64::MAX)) as u64;
        let offset_at_open = offset;
        loop {
            let now = Instant::now();
            if now >= deadline {
                continue 'outer;
            }
            let wait = (window_start + config.stall_window)
                .saturating_duration_since(now)
                .min(deadline - now);
            let next = tokio::select! {
                () = cancel.cancelled() => return Err(Attempt::End(DownloadEnd::Cancelled)),
                r = tokio::time::timeout(wait, body_stream.chunk()) => r,
            };
            if window_start.elapsed() >= config.stall_window {
                if window_bytes < floor {
                    return Err(Rejection::new(
                        OtaReason::DownloadStalled,
                        format!(
                            "{window_bytes} bytes in {}, the floor is {} B/s ({offset} of {size} bytes)",
                            humantime::format_duration(config.stall_window),
                            config.min_bytes_per_s
                        ),
                    )
                    .into());
                }
                window_start = Instant::now();
                window_bytes = 0;
            }
            let chunk = match next {
                Err(_) => continue, // the window check above judges it
                Ok(Ok(Some(c))) => c,
                Ok(Ok(None)) => {
                    if offset == offset_at_open {
                        no_progress_ends += 1;
                        if no_progress_ends >= 2 {
                            return Err(Rejection::new(
                                OtaReason::ImageTooShort,
                                format!(
                                    "the image ends at {offset} bytes, the manifest declares {size}"
                                ),
                            )
                            .into());
                        }
                    }
                    if offset < size {
                        retry_wait(
                            config,
                            &mut attempt_no,
                            deadline,
                            cancel,
                            "the body ended early",
                        )
                        .await?;
                    }
                    continue 'outer;
                }
                Ok(Err(e)) => {
                    if !e.kind.is_retryable() {
                        return Err(Rejection::new(OtaReason::DownloadFailed, e.message).into());
                    }
                    retry_wait(config, &mut attempt_no, deadline, cancel, &e.message).await?;
                    continue 'outer;
                }
            };
            window_bytes += chunk.len() as u64;
            let mut data = chunk;
            if skip > 0 {
                let s = skip.min(data.len() as u64) as usize;
                data = data.slice(s..);
                skip -= s as u64;
            }
            if data.is_empty() {
                continue;
            }
            if offset + data.len() as u64 > size {
                return Err(Rejection::new(
                    OtaReason::ImageTooLong,
                    format!("the server sent more than the declared {size} bytes"),
                )
                .into());
            }
            hasher.update(&data);
            let n = data.len() as u64;
            let sync = since_sync + n >= config.sync_every || offset + n == size;
            blocking(backend, move |b| {
                b.write(&data)?;
                if sync { b.sync() } else { Ok(()) }
            })
            .await
            .map_err(|e| storage(&e))?;
            offset += n;
            since_sync = if sync { 0 } else { since_sync + n };
            attempt_no = 0;
            no_progress_ends = 0;
            if offset - last_reported >= config.progress_every || offset == size {
                last_reported = offset;
                progress(offset);
            }
            if offset == size {
                break 'outer;
            }
        }
    }
    let digest: [u8; 32] = hasher.finalize().into();
    if digest != body.sha256 {
        if resumed {
            tracing::warn!(
                "ota: the resumed image's hash differs; downloading it again from the start"
            );
            return Err(Attempt::ResumedMismatch);
        }
        return Err(Rejection::new(
            OtaReason::HashMismatch,
            format!(
                "SHA-256 {} is not the manifest's {}",
                super::hex(&digest),
                super::hex(&body.sha256)
            ),
        )
        .into());
    }
    Ok(ImageInfo {
        firmware_id: body.firmware_id.clone(),
        version: body.version.clone(),
        size,
        sha256: digest,
    })
}

async fn retry_wait(
    config: &OtaConfig,
    attempt_no: &mut u32,
    deadline: Instant,
    cancel: &CancellationToken,
    why: &str,
) -> Result<(), Attempt> {
    let delay = Backoff::new(config.retry_initial, config.retry_max)
        .delay(*attempt_no, rand::random::<f64>());
    *attempt_no = attempt_no.saturating_add(1);
    tracing::info!(why, retry_in = ?delay, "ota: download interrupted");
    let until = (Instant::now() + delay).min(deadline);
    tokio::select! {
        () = cancel.cancelled() => Err(Attempt::End(DownloadEnd::Cancelled)),
        () = tokio::time::sleep_until(until) => Ok(()),
    }
}
