//! Accepting and serving client connections.
//!
//! hyper-util's auto builder serves HTTP/1.1 and HTTP/2 (h2c with prior
//! knowledge on the plain listener, ALPN on TLS) with upgrades enabled.
//! Limits, and what enforces them:
//! * request head larger than `max_header_bytes`: hyper's HTTP/1
//!   `max_buf_size` answers 431 itself; HTTP/2 `max_header_list_size`
//!   makes h2 answer 431;
//! * slow request heads: hyper's HTTP/1 `header_read_timeout` closes the
//!   connection (no response). hyper runs that timer whenever it waits for
//!   a request head, including between keep-alive requests, so it is set to
//!   min(`header_read_timeout`, `keepalive_idle`);
//! * everything hyper does not time (the TLS handshake, the HTTP/2
//!   preface, idle HTTP/2 connections): a per-connection watchdog closes a
//!   connection gracefully when it has had no request in flight for
//!   `header_read_timeout` (before its first request) or `keepalive_idle`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::{Phase, Proxy, Settings};
use crate::dataplane::tls::CertResolver;

pub(super) struct Server {
    builder: auto::Builder<TokioExecutor>,
    first_request: Duration,
    idle: Duration,
}

impl Server {
    pub(super) fn new(settings: &Settings) -> Server {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(settings.header_read_timeout.min(settings.keepalive_idle))
            .max_buf_size(settings.max_header_bytes.max(8192))
            .max_headers(100);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(128);
        Server {
            builder,
            first_request: settings.header_read_timeout,
            idle: settings.keepalive_idle,
        }
    }
}

/// One client connection, as requests see it.
pub(super) struct ConnCtx {
    pub peer: SocketAddr,
    pub https: bool,
    /// The listener's port (`X-Forwarded-Port`).
    pub port: u16,
    pub resolver: Option<Arc<CertResolver>>,
    epoch: Instant,
    active: AtomicUsize,
    last_ms: AtomicU64,
    seen: AtomicBool,
}

impl ConnCtx {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A request started; the returned guard ends it (when its response
    /// body is done).
    pub(super) fn begin(self: &Arc<Self>) -> Active {
        self.seen.store(true, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::AcqRel);
        Active { conn: self.clone() }
    }

    /// When the watchdog should look again, or `None` to close now.
    fn next_check(&self, first: Duration, idle: Duration) -> Option<Instant> {
        let limit = if self.seen.load(Ordering::Relaxed) {
            idle
        } else {
            first
        };
        if self.active.load(Ordering::Acquire) > 0 {
            return Some(Instant::now() + limit);
        }
        let last = self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Acquire));
        let due = last + limit;
        (due > Instant::now()).then_some(due)
    }
}

/// A request in flight on a connection.
pub(super) struct Active {
    conn: Arc<ConnCtx>,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.conn
            .last_ms
            .store(self.conn.now_ms(), Ordering::Release);
        self.conn.active.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(super) async fn accept_loop(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    tls: Option<(Arc<rustls::ServerConfig>, Arc<CertResolver>)>,
) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let acceptor =
        tls.map(|(config, resolver)| (tokio_rustls::TlsAcceptor::from(config), resolver));
    let mut phase = proxy.phase.subscribe();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = super::until(&mut phase, |p| p != Phase::Serving) => return,
        };
        let _ = tcp.set_nodelay(true);
        let tracked = proxy.tracker.enter();
        let proxy = proxy.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _tracked = tracked;
            let ctx = |resolver| {
                Arc::new(ConnCtx {
                    peer,
                    https: acceptor.is_some(),
                    port,
                    resolver,
                    epoch: Instant::now(),
                    active: AtomicUsize::new(0),
                    last_ms: AtomicU64::new(0),
                    seen: AtomicBool::new(false),
                })
            };
            match &acceptor {
                None => serve_conn(proxy, tcp, ctx(None)).await,
                Some((acceptor, resolver)) => {
                    let limit = proxy.server.first_request;
                    match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            serve_conn(proxy, stream, ctx(Some(resolver.clone()))).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_conn<I>(proxy: Arc<Proxy>, io: I, ctx: Arc<ConnCtx>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let proxy = proxy.clone();
        let ctx = ctx.clone();
        service_fn(move |req| {
            let proxy = proxy.clone();
            let ctx = ctx.clone();
            async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, ctx).await) }
        })
    };
    let conn = proxy
        .server
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut phase = proxy.phase.subscribe();
    let (first, idle) = (proxy.server.first_request, proxy.server.idle);
    let mut closing = false;
    let initial = *phase.borrow_and_update();
    if initial != Phase::Serving {
        conn.as_mut().graceful_shutdown();
        closing = true;
    }
    let mut check = Instant::now() + first;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(peer = %ctx.peer, error = %e, "connection ended");
                }
                return;
            }
            changed = phase.changed() => {
                let now = match changed {
                    Ok(()) => *phase.borrow_and_update(),
                    Err(_) => Phase::Closing,
                };
                match now {
                    Phase::Closing => return,
                    Phase::Draining if !closing => {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    _ => {}
                }
            }
            _ = tokio::time::sleep_until(check), if !closing => {
                match ctx.next_check(first, idle) {
                    Some(next) => check = next,
                    None => {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
        }
    }
}
