//! The platform's image server of the demo: files of one directory over HTTP/1.1
//! GET with single `Range: bytes=N-` requests, one connection per request. Enough
//! for the OTA agent's resumable downloads; a deployment serves images from its
//! web server or object store.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::error::AppError;

/// Serves `dir` on 127.0.0.1 (a free port) until `cancel`; returns the address.
///
/// # Errors
/// [`AppError::Io`] when it cannot listen.
pub(super) async fn serve(dir: PathBuf, cancel: CancellationToken) -> Result<SocketAddr, AppError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| AppError::io("cannot listen for the image server", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| AppError::io("image server address", e))?;
    tokio::spawn(async move {
        loop {
            let conn = tokio::select! {
                () = cancel.cancelled() => return,
                c = listener.accept() => c,
            };
            if let Ok((stream, _)) = conn {
                let dir = dir.clone();
                let c = cancel.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = c.cancelled() => {}
                        r = answer(stream, &dir) => if let Err(e) = r {
                            tracing::debug!(error = %e, "image server: request failed");
                        },
                    }
                });
            }
        }
    });
    Ok(addr)
}

async fn answer(stream: TcpStream, dir: &Path) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut offset = 0u64;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).await? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("range:") {
            offset = v
                .trim()
                .strip_prefix("bytes=")
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        }
    }
    let mut stream = reader.into_inner();
    let name = target.trim_start_matches('/');
    let file = (method == "GET" && !name.is_empty() && !name.contains(['/', '\\']) && name != "..")
        .then(|| dir.join(name));
    let opened = match file {
        Some(p) => tokio::fs::File::open(p).await.ok(),
        None => None,
    };
    let Some(mut f) = opened else {
        let body = "not found\n";
        let head = format!(
            "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return stream.write_all(head.as_bytes()).await;
    };
    let total = f.metadata().await?.len();
    if offset >= total && offset > 0 {
        let head = format!(
            "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{total}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return stream.write_all(head.as_bytes()).await;
    }
    let head = if offset > 0 {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {offset}-{}/{total}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            total - 1,
            total - offset
        )
    } else {
        format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n")
    };
    stream.write_all(head.as_bytes()).await?;
    let mut f = {
        use tokio::io::AsyncSeekExt as _;
        f.seek(std::io::SeekFrom::Start(offset)).await?;
        f.take(total - offset)
    };
    tokio::io::copy(&mut f, &mut stream).await?;
    stream.shutdown().await
}
