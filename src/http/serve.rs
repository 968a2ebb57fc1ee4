//! The front door: accepts TCP connections and serves HTTP/1.1 on them, with every wait
//! bounded. Headers (and the idle wait between keep-alive requests) must arrive within
//! `server.header_timeout_ms`, header bytes are bounded, accept errors back off instead of
//! spinning, and one address holds at most `server.max_connections_per_ip` sockets: past
//! it, every request on the extra socket (but the health probes) is answered 429.
//!
//! axum's own `serve` has no timers at all, which left an unfinished request holding its
//! socket (and a file descriptor) forever.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::Request;
use axum::response::IntoResponse;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::stream::Stream;
use super::ApiError;
use crate::metrics;
use crate::tls::TlsAcceptor;

/// The limits of the door, from `server.*`, and its TLS.
#[derive(Clone)]
pub struct DoorLimits {
    /// Longest wait for a request's headers, and between two keep-alive requests.
    pub header_timeout: Duration,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// Sockets one address may hold (0 = no limit).
    pub max_connections_per_ip: usize,
    /// Every connection starts with a TLS handshake (within `header_timeout`) when set.
    pub tls: Option<TlsAcceptor>,
}

/// Open sockets per peer address.
#[derive(Clone, Default)]
struct PerIp(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One counted socket; dropping it (with the socket) gives the slot back.
struct IpSlot {
    table: PerIp,
    ip: IpAddr,
}

impl PerIp {
    /// Counts a socket from `ip`; returns its slot and the address's count with it.
    fn enter(&self, ip: IpAddr) -> (IpSlot, usize) {
        let mut map = self.0.lock().expect("per-ip lock poisoned");
        let n = map.entry(ip).or_insert(0);
        *n += 1;
        let count = *n;
        drop(map);
        let slot = IpSlot {
            table: self.clone(),
            ip,
        };
        (slot, count)
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self.table.0.lock().expect("per-ip lock poisoned");
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// A socket that carries its per-address slot: the slot lives exactly as long as the
/// socket, through an upgrade to WebSocket included.
struct Counted {
    io: Stream,
    _slot: IpSlot,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The socket under a connection upgraded by [`serve`], with what must live as long as it
/// (its per-address slot) and the bytes read past the upgrade request. A connection that did
/// not come through [`serve`] is given back.
pub(crate) fn upgraded_socket(
    upgraded: hyper::upgrade::Upgraded,
) -> Result<(Stream, Box<dyn Send>, bytes::Bytes), hyper::upgrade::Upgraded> {
    let parts = upgraded.downcast::<TokioIo<Counted>>()?;
    let Counted { io, _slot } = parts.io.into_inner();
    Ok((io, Box::new(_slot), parts.read_buf))
}

/// Serves `router` on `listener` until `stop` is cancelled. While the node then drains
/// (until `drained` resolves, at most `grace`) it still answers, one request per
/// connection, so a load balancer's probe reads 503 instead of a refused connection (the
/// router answers draining itself); then it stops accepting, lets requests in progress
/// finish (upgraded connections are the sessions' to close) and returns once every HTTP
/// connection ended or `grace` passed. What it returns keeps answering 503 on the listener
/// until it is finished, so the node reads as draining, not dead, until the process exits.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: DoorLimits,
    stop: CancellationToken,
    drained: impl Future<Output = ()>,
    grace: Duration,
) -> io::Result<Closing> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // hyper's read buffer bounds the request head; its minimum is 8 KiB.
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    let mut last_call = http.clone();
    last_call.keep_alive(false);
    let per_ip = PerIp::default();
    let connections = TaskTracker::new();
    let mut backoff = Backoff::default();
    let mut drained = std::pin::pin!(drained);
    let mut draining: Option<tokio::time::Instant> = None;
    loop {
        let until = draining.unwrap_or_else(|| tokio::time::Instant::now() + grace);
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled(), if draining.is_none() => {
                draining = Some(tokio::time::Instant::now() + grace);
                continue;
            }
            _ = drained.as_mut(), if draining.is_some() => break,
            _ = tokio::time::sleep_until(until), if draining.is_some() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    backoff.reset();
                    a
                }
                Err(e) => {
                    backoff.wait(&e).await;
                    continue;
                }
            },
        };
        // Small frames must not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        let (slot, count) = per_ip.enter(peer.ip());
        let over = limits.max_connections_per_ip > 0 && count > limits.max_connections_per_ip;
        let app = router.clone();
        let service = TowerToHyperService::new(tower::service_fn(move |mut req: Request<_>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            async move {
                if over && !super::probes::is_probe(req.uri().path()) {
                    metrics::connection_refused("ip");
                    let refusal =
                        ApiError::TooManyRequests("Too many connections from this address".into());
                    return Ok(refusal.into_response());
                }
                app.oneshot(req.map(axum::body::Body::new)).await
            }
        }));
        let http = if draining.is_some() {
            last_call.clone()
        } else {
            http.clone()
        };
        let (tls, wait) = (limits.tls.clone(), limits.header_timeout);
        let stop = (draining.is_none()).then(|| stop.clone());
        connections.spawn(async move {
            let Some(io) = open(tcp, tls, wait).await else {
                return;
            };
            let io = TokioIo::new(Counted { io, _slot: slot });
            let conn = http.serve_connection(io, service).with_upgrades();
            let mut conn = std::pin::pin!(conn);
            if let Some(stop) = stop {
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
                }
            }
            let _ = conn.await;
        });
    }
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = connections.len(),
            "HTTP connections still open after the grace period"
        );
    }
    Ok(Closing::answer(listener, last_call, limits))
}

/// The listener after the node drained: every request gets 503 (one per connection) until
/// [`Closing::finish`], so a load balancer sees a draining node until the process ends.
pub struct Closing {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Closing {
    fn answer(
        listener: TcpListener,
        http: hyper::server::conn::http1::Builder,
        limits: DoorLimits,
    ) -> Self {
        let stop = CancellationToken::new();
        let done = stop.clone();
        let task = tokio::spawn(async move {
            // Dropped with the task: whatever is still answering is cut at the end.
            let mut answering = tokio::task::JoinSet::new();
            let mut backoff = Backoff::default();
            loop {
                let tcp = tokio::select! {
                    _ = done.cancelled() => return,
                    Some(_) = answering.join_next(), if !answering.is_empty() => continue,
                    accepted = listener.accept() => match accepted {
                        Ok((tcp, _)) => tcp,
                        Err(e) => {
                            backoff.wait(&e).await;
                            continue;
                        }
                    },
                };
                let (http, tls, wait) = (http.clone(), limits.tls.clone(), limits.header_timeout);
                answering.spawn(async move {
                    let Some(io) = open(tcp, tls, wait).await else {
                        return;
                    };
                    let service = tower::service_fn(|_: Request<hyper::body::Incoming>| {
                        let refusal = ApiError::Unavailable("Server is shutting down".into());
                        std::future::ready(Ok::<_, std::convert::Infallible>(
                            refusal.into_response(),
                        ))
                    });
                    let io = TokioIo::new(io);
                    let _ = http
                        .serve_connection(io, TowerToHyperService::new(service))
                        .await;
                });
            }
        });
        Self { stop, task }
    }

    /// Stops answering and closes the listener.
    pub async fn finish(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// The connection's stream: the TCP socket, or the TLS session over it once the handshake
/// is done. The handshake is part of the request's head: it gets the same deadline.
async fn open(
    tcp: tokio::net::TcpStream,
    tls: Option<TlsAcceptor>,
    wait: Duration,
) -> Option<Stream> {
    let Some(tls) = tls else {
        return Some(Stream::Plain(tcp));
    };
    match tokio::time::timeout(wait, tls.accept(tcp)).await {
        Ok(Ok(s)) => Some(Stream::Tls(Box::new(s))),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}

/// Delays after accept errors: running out of descriptors must not spin a core.
#[derive(Default)]
struct Backoff {
    delay: Option<Duration>,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    fn reset(&mut self) {
        self.delay = None;
    }

    fn wait(&mut self, e: &io::Error) -> impl Future<Output = ()> {
        let delay = self.delay.map_or(Self::FIRST, |d| (d * 2).min(Self::MAX));
        if self.delay.is_none() || delay == Self::MAX {
            tracing::warn!(error = %e, retry_in = ?delay, "accept failed");
        }
        metrics::accept_error();
        self.delay = Some(delay);
        tokio::time::sleep(delay)
    }
}
