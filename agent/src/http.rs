//! A deliberately small HTTP/1.1 server for `/metrics`, `/healthz` and `/readyz`: one request per
//! connection, bounded request size and time, nothing else. Scrapers and kubelet probes need no
//! more, and it keeps the agent's footprint and dependency tree small.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use prometheus_client::{encoding, registry::Registry};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// Shared readiness: true once programs are attached and events are being read, and, with
/// Kubernetes attribution on, the first pod list has loaded (crate::pipeline sets it then).
pub type Ready = std::sync::Arc<std::sync::atomic::AtomicBool>;

const MAX_REQUEST: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once, all clients together. Each holds at most MAX_REQUEST bytes for
/// at most REQUEST_TIMEOUT, so this bounds what anyone who reaches the port can make the agent
/// hold (memory and file descriptors). Past it, a new connection is closed at once.
const MAX_CONNECTIONS: usize = 64;
/// Connections served at once from one client address: any pod can reach the port, and one
/// that opens idle or slow connections must not take the share of the scrapers and of kubelet's
/// probes (a Prometheus scrape and the node's probes need one or two each). Past it, that
/// client's new connection is closed at once; other addresses are still served.
const MAX_PER_CLIENT: usize = 8;
/// Pause after a failed accept (EMFILE and the like): the listener stays readable, and retrying
/// at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Size of the last /metrics body.
static LAST_BODY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(64 * 1024);
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds the metrics listener. The unspecified IPv6 address (`[::]`, the default) is bound
/// dual-stack (IPV6_V6ONLY off, whatever `net.ipv6.bindv6only` says), so kubelet's probes and
/// Prometheus reach it on IPv4, IPv6 and dual-stack clusters alike. Where the kernel has no
/// IPv6 (`ipv6.disable=1`), `[::]` falls back to `0.0.0.0` on the same port, with a warning.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    match bind_one(addr) {
        Err(e) if ipv6_unavailable(addr, &e) => {
            let v4 = SocketAddr::from(([0, 0, 0, 0], addr.port()));
            log::warn!("IPv6 is not available on this node ({e}): listening on {v4} (IPv4 only)");
            bind_one(v4)
        }
        other => other,
    }
}

/// Whether binding `addr` failed because the kernel has no IPv6 at all, so that `[::]` may fall
/// back to `0.0.0.0`. An explicit address never falls back.
fn ipv6_unavailable(addr: SocketAddr, e: &std::io::Error) -> bool {
    addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        && matches!(e.raw_os_error(), Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL))
}

fn bind_one(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => {
            let socket = tokio::net::TcpSocket::new_v6()?;
            if addr.ip().is_unspecified() {
                set_v6only(&socket, false)?;
            }
            socket
        }
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

fn set_v6only(socket: &tokio::net::TcpSocket, on: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let value: libc::c_int = on.into();
    // SAFETY: setsockopt reads `value` (an int, as IPV6_V6ONLY takes) for the length given, on a
    // descriptor the socket owns.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Open connections, in all and per client address.
#[derive(Debug, Default)]
struct Connections {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// Why a connection was not served.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    Total,
    Client,
}

/// One open connection's place in [`Connections`], given back when dropped.
struct Slot {
    connections: Arc<Mutex<Connections>>,
    client: IpAddr,
}

impl Connections {
    /// A place for a connection from `client`, unless it or everyone already holds their share.
    fn admit(this: &Arc<Mutex<Self>>, client: IpAddr) -> Result<Slot, Refused> {
        // IPv4 clients of a dual-stack socket arrive as ::ffff:a.b.c.d: the same client.
        let client = client.to_canonical();
        let mut c = this.lock().unwrap_or_else(|e| e.into_inner());
        if c.total >= MAX_CONNECTIONS {
            return Err(Refused::Total);
        }
        let open = c.per_client.entry(client).or_default();
        if *open >= MAX_PER_CLIENT {
            return Err(Refused::Client);
        }
        *open += 1;
        c.total += 1;
        Ok(Slot { connections: this.clone(), client })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        c.total -= 1;
        if let Some(open) = c.per_client.get_mut(&self.client) {
            *open -= 1;
            if *open == 0 {
                c.per_client.remove(&self.client);
            }
        }
    }
}

pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    ready: Ready,
    mut shutdown: watch::Receiver<bool>,
) {
    let connections = Arc::new(Mutex::new(Connections::default()));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match Connections::admit(&connections, peer.ip()) {
                    Ok(slot) => {
                        let registry = registry.clone();
                        let ready = ready.clone();
                        tokio::spawn(async move {
                            let _slot = slot;
                            let served = handle(stream, &registry, &ready);
                            if let Err(e) = tokio::time::timeout(REQUEST_TIMEOUT, served).await {
                                log::debug!("metrics client timed out: {e}");
                            }
                        });
                    }
                    // Dropping the stream closes it.
                    Err(Refused::Client) => {
                        let client = peer.ip().to_canonical();
                        log::debug!("{MAX_PER_CLIENT} metrics connections open from {client}: closed {peer}")
                    }
                    Err(Refused::Total) => {
                        log::debug!("{MAX_CONNECTIONS} metrics connections open: closed {peer}")
                    }
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
            let body = "not ready: programs not attached, or the first pod list not loaded\n";
            respond(&mut stream, 503, "text/plain", body, head).await
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
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn one_client_cannot_take_the_others_share() {
        let connections = Arc::new(Mutex::new(Connections::default()));
        let flood: IpAddr = [10, 0, 0, 66].into();
        let scraper: IpAddr = [10, 0, 0, 9].into();
        let mut held: Vec<Slot> =
            (0..MAX_PER_CLIENT).map(|_| Connections::admit(&connections, flood).unwrap()).collect();
        assert_eq!(Connections::admit(&connections, flood).err(), Some(Refused::Client));
        // The same client over a dual-stack socket, as ::ffff:10.0.0.66.
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 66).to_ipv6_mapped());
        assert_eq!(Connections::admit(&connections, mapped).err(), Some(Refused::Client));
        let scrape = Connections::admit(&connections, scraper).unwrap();
        // A slot comes back when its connection ends.
        held.pop();
        held.push(Connections::admit(&connections, flood).unwrap());
        drop(scrape);
        drop(held);
        let c = connections.lock().unwrap();
        assert_eq!((c.total, c.per_client.len()), (0, 0));
    }

    #[test]
    fn many_clients_together_stop_at_the_total() {
        let connections = Arc::new(Mutex::new(Connections::default()));
        let mut held = Vec::new();
        for i in 0..MAX_CONNECTIONS {
            held.push(Connections::admit(&connections, [10, 1, 0, i as u8].into()).unwrap());
        }
        assert_eq!(
            Connections::admit(&connections, [10, 2, 0, 1].into()).err(),
            Some(Refused::Total)
        );
    }

    #[test]
    fn only_the_unspecified_ipv6_address_falls_back_and_only_without_ipv6() {
        let any6: SocketAddr = "[::]:9500".parse().unwrap();
        let no_family = std::io::Error::from_raw_os_error(libc::EAFNOSUPPORT);
        let in_use = std::io::Error::from_raw_os_error(libc::EADDRINUSE);
        assert!(ipv6_unavailable(any6, &no_family));
        assert!(!ipv6_unavailable(any6, &in_use));
        assert!(!ipv6_unavailable("[::1]:9500".parse().unwrap(), &no_family));
        assert!(!ipv6_unavailable("0.0.0.0:9500".parse().unwrap(), &no_family));
    }

    /// `[::]` takes IPv4 and IPv6 clients on one socket, even where bindv6only would say
    /// otherwise (it is set per socket).
    #[tokio::test]
    async fn the_default_address_is_dual_stack() {
        let listener = bind("[::]:0".parse().unwrap()).unwrap();
        let port = listener.local_addr().unwrap().port();
        for client in ["127.0.0.1", "::1"] {
            let ip: IpAddr = client.parse().unwrap();
            let connect = TcpStream::connect(SocketAddr::new(ip, port));
            let (connected, accepted) = tokio::join!(connect, listener.accept());
            connected.unwrap();
            assert_eq!(accepted.unwrap().1.ip().to_canonical(), ip);
        }
    }

    #[test]
    fn negotiates_the_format_from_accept() {
        let prom = b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n\r\n";
        assert!(wants_openmetrics(prom));
        assert!(!wants_openmetrics(b"GET /metrics HTTP/1.1\r\nAccept: */*\r\n\r\n"));
        assert!(!wants_openmetrics(b"GET /metrics HTTP/1.1\r\n\r\n"));
    }
}
