//! A deliberately small HTTP/1.1 server for `/metrics`, `/healthz` and `/readyz`: one request per
//! connection, bounded request size and time, nothing else. Scrapers and kubelet probes need no
//! more, and it keeps the agent's footprint and dependency tree small.
use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use prometheus_client::{encoding, registry::Registry};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
};

/// Shared readiness: true once programs are attached and events are being read.
pub type Ready = std::sync::Arc<std::sync::atomic::AtomicBool>;

const MAX_REQUEST: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once. Each holds at most MAX_REQUEST bytes for at most REQUEST_TIMEOUT,
/// so this bounds what anyone who reaches the port can make the agent hold (memory and file
/// descriptors). Past it, a new connection is closed at once: a flood can delay a scrape, not
/// exhaust the agent. Scrapers and probes need a handful.
const MAX_CONNECTIONS: usize = 64;
/// Pause after a failed accept (EMFILE and the like): the listener stays readable, and retrying
/// at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Size of the last /metrics body.
static LAST_BODY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(64 * 1024);
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    ready: Ready,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let registry = registry.clone();
                        let ready = ready.clone();
                        tokio::spawn(async move {
                            let _permit = permit;
                            let served = handle(stream, &registry, &ready);
                            if let Err(e) = tokio::time::timeout(REQUEST_TIMEOUT, served).await {
                                log::debug!("metrics client timed out: {e}");
                            }
                        });
                    }
                    // Dropping the stream closes it.
                    Err(_) => log::debug!("{MAX_CONNECTIONS} metrics connections open: closed {peer}"),
                },
                Err(e) => {
                    log::warn!("accepting a metrics connection: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

async fn handle(mut stream: TcpStream, registry: &Registry, ready: &Ready) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) if buf.len() + n > MAX_REQUEST => {
                let _ = respond(&mut stream, 431, "text/plain", "request too large\n", false).await;
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let line = buf.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let head = method == b"HEAD";
    if method != b"GET" && !head {
        let _ = respond(&mut stream, 405, "text/plain", "only GET and HEAD\n", head).await;
        return;
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let result = match path {
        b"/metrics" => {
            // OpenMetrics when the scraper asks for it (Prometheus does), else the classic text
            // format that promtool, curl and older tools read.
            let openmetrics = wants_openmetrics(&buf);
            // Sized from the previous scrape: growing a multi-megabyte String by doubling copies
            // it about ten times, a visible share of a large scrape (docs/benchmarks.md).
            let mut body = String::with_capacity(LAST_BODY.load(Ordering::Relaxed) * 9 / 8);
            let (encoded, content_type) = if openmetrics {
                (encoding::text::encode(&mut body, registry), OPENMETRICS)
            } else {
                (encoding::prometheus_text::encode(&mut body, registry), PROMETHEUS_TEXT)
            };
            LAST_BODY.store(body.len(), Ordering::Relaxed);
            match encoded {
                Ok(()) => respond(&mut stream, 200, content_type, &body, head).await,
                Err(e) => {
                    respond(&mut stream, 500, "text/plain", &format!("encoding: {e}\n"), head).await
                }
            }
        }
        b"/healthz" => respond(&mut stream, 200, "text/plain", "ok\n", head).await,
        b"/readyz" if ready.load(Ordering::Acquire) => {
            respond(&mut stream, 200, "text/plain", "ready\n", head).await
        }
        b"/readyz" => {
            respond(&mut stream, 503, "text/plain", "programs not attached yet\n", head).await
        }
        _ => {
            respond(&mut stream, 404, "text/plain", "try /metrics, /healthz or /readyz\n", head)
                .await
        }
    };
    if let Err(e) = result {
        log::debug!("writing metrics response: {e}");
    }
}

/// Whether the request's `Accept` header names OpenMetrics.
fn wants_openmetrics(request: &[u8]) -> bool {
    let text = String::from_utf8_lossy(request);
    text.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("accept")
                && value.to_ascii_lowercase().contains("application/openmetrics-text")
        })
    })
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
    head: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    let header = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes()).await?;
    if !head {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::wants_openmetrics;

    #[test]
    fn negotiates_the_format_from_accept() {
        let prom = b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n\r\n";
        assert!(wants_openmetrics(prom));
        assert!(!wants_openmetrics(b"GET /metrics HTTP/1.1\r\nAccept: */*\r\n\r\n"));
        assert!(!wants_openmetrics(b"GET /metrics HTTP/1.1\r\n\r\n"));
    }
}
