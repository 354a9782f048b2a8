//! The HTTP(S) reverse proxy: listeners, the request pipeline and the
//! upstream connection pools.
//!
//! Everything a request needs from the configuration comes from one
//! `Arc<Routes>` loaded at the start of the request, so [`Proxy::swap`]
//! never disturbs a request in flight, and listeners are never restarted:
//! configuration changes cost an atomic pointer store, nothing more.
//! Upgraded (WebSocket) connections hold no route state at all, so they
//! outlive any number of swaps.
//!
//! Layout: `server` accepts connections and drives hyper (limits,
//! idle timeouts, drain); `pipeline` is the per-request logic
//! (routing, redirects, access, CORS, body limit, retries); `headers` the
//! forwarded-header rules; `upstream` and `pool` talk to endpoints;
//! `upgrade` splices WebSockets; `uri` normalizes paths as nginx does
//! before matching; `body`, `errors` and `metrics` are the supporting
//! pieces.

mod body;
mod errors;
mod headers;
mod metrics;
mod pipeline;
mod pool;
mod server;
mod upgrade;
mod upstream;
mod uri;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, watch};

use crate::dataplane::balance::Balancers;
use crate::dataplane::tls::CertResolver;
use crate::model::route::{Cidr, Routes};

/// Listener and protocol limits (ingress-nginx's ConfigMap defaults).
#[derive(Clone, Debug)]
pub struct Settings {
    /// `client-header-timeout`: a client that has not sent a whole request
    /// head by then is disconnected (60 s).
    pub header_read_timeout: Duration,
    /// Largest request head; more gets 431 (32 KiB).
    pub max_header_bytes: usize,
    /// `client-body-timeout`: the longest wait for the next bytes of a
    /// request body before the request fails with 408 (60 s).
    pub client_body_timeout: Duration,
    /// `keep-alive`: idle client connections are closed after this (75 s).
    pub keepalive_idle: Duration,
    /// `proxy-next-upstream-tries`: attempts per request, counting the
    /// first (3). Only connect failures of idempotent requests are retried.
    pub max_retries: usize,
    /// Peers whose `X-Forwarded-*` headers are believed (`--trusted-proxies`).
    pub trusted_proxies: Vec<Cidr>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            header_read_timeout: Duration::from_secs(60),
            max_header_bytes: 32 * 1024,
            client_body_timeout: Duration::from_secs(60),
            keepalive_idle: Duration::from_secs(75),
            max_retries: 3,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Where the proxy is in its life: serving, draining (no new connections,
/// in-flight requests finish), closing (everything is dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Serving,
    Draining,
    Closing,
}

/// Resolves once the phase satisfies `f` (or the proxy is gone). The
/// watch guard stays inside, so callers' futures remain `Send`.
async fn until(rx: &mut watch::Receiver<Phase>, f: impl Fn(Phase) -> bool) {
    let _ = rx.wait_for(|p| f(*p)).await.map(|_| ());
}

/// What the proxy serves; every field swappable without touching listeners.
pub struct Proxy {
    routes: ArcSwap<Routes>,
    balancers: Balancers,
    settings: Settings,
    upstreams: upstream::Upstreams,
    metrics: metrics::Metrics,
    server: server::Server,
    phase: watch::Sender<Phase>,
    tracker: Tracker,
}

impl Proxy {
    pub fn new(routes: Routes, settings: Settings) -> Arc<Proxy> {
        let (phase, _) = watch::channel(Phase::Serving);
        Arc::new(Proxy {
            routes: ArcSwap::from_pointee(routes),
            balancers: Balancers::new(),
            server: server::Server::new(&settings),
            upstreams: upstream::Upstreams::new(),
            metrics: metrics::Metrics::default(),
            settings,
            phase,
            tracker: Tracker::default(),
        })
    }

    /// Publishes new routes atomically; requests in flight finish on the
    /// routes they started with.
    /// Serves `routes` from now on; returns the previous ones (requests
    /// in flight may still hold them).
    pub fn swap(&self, routes: Routes) -> Arc<Routes> {
        self.routes.swap(Arc::new(routes))
    }

    /// The routes currently served.
    pub fn routes(&self) -> Arc<Routes> {
        self.routes.load_full()
    }

    pub fn balancers(&self) -> &Balancers {
        &self.balancers
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Serves plain HTTP on `listener` until [`Proxy::drain`] (the port 80
    /// role: `X-Forwarded-Proto: http`, `X-Forwarded-Port` = the listener's
    /// port). HTTP/1.1 and HTTP/2 with prior knowledge (h2c).
    pub async fn serve_http(self: Arc<Self>, listener: tokio::net::TcpListener) {
        server::accept_loop(self, listener, None).await;
    }

    /// Serves HTTPS on `listener` until [`Proxy::drain`]: TLS with `tls`
    /// (ALPN h2, http/1.1), certificates from `resolver` (which also tells
    /// whether a host has a real certificate, for HSTS).
    pub async fn serve_https(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        tls: Arc<rustls::ServerConfig>,
        resolver: Arc<CertResolver>,
    ) {
        server::accept_loop(self, listener, Some((tls, resolver))).await;
    }

    /// Prometheus text exposition of the request metrics (ingress-nginx
    /// names, see `metrics`).
    pub fn write_metrics(&self, out: &mut String) {
        self.metrics.write(out);
    }

    /// Graceful shutdown: stops accepting, asks every connection to finish
    /// (HTTP/1 closes after the current response, HTTP/2 sends GOAWAY),
    /// waits up to `grace` for them, then closes what is left (including
    /// WebSocket tunnels) and returns.
    pub async fn drain(&self, grace: Duration) {
        self.phase.send_replace(Phase::Draining);
        self.tracker
            .wait_idle(tokio::time::Instant::now() + grace)
            .await;
        self.phase.send_replace(Phase::Closing);
        // Tasks notice Closing at their next poll; give them a moment.
        self.tracker
            .wait_idle(tokio::time::Instant::now() + Duration::from_secs(1))
            .await;
    }

    /// Open client connections and WebSocket tunnels.
    pub fn open_connections(&self) -> usize {
        self.tracker.inner.count.load(Ordering::Acquire)
    }
}

/// Serves `proxy` from `workers` threads (at least one), each running its
/// own single-threaded Tokio runtime that accepts from `http` and `https`
/// (nginx's worker processes, as threads). A connection, its upstream
/// requests and its upstream connections stay on one thread: no work
/// stealing, no cross-thread wake-ups on the request path, which costs a
/// quarter less CPU per small request than one multi-threaded runtime.
/// Every worker accepts from a duplicate of the same listening sockets, so
/// no other process can bind into the port. The threads live until the
/// proxy is drained (or the process exits).
pub fn spawn_workers(
    proxy: &Arc<Proxy>,
    workers: usize,
    http: &std::net::TcpListener,
    https: &std::net::TcpListener,
    tls: &Arc<rustls::ServerConfig>,
    resolver: &Arc<CertResolver>,
) -> std::io::Result<()> {
    for i in 0..workers.max(1) {
        let http = http.try_clone()?;
        let https = https.try_clone()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (proxy, tls, resolver) = (proxy.clone(), tls.clone(), resolver.clone());
        std::thread::Builder::new()
            .name(format!("ingress-worker-{i}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let (http, https) = match (
                        tokio::net::TcpListener::from_std(http),
                        tokio::net::TcpListener::from_std(https),
                    ) {
                        (Ok(h), Ok(s)) => (h, s),
                        (Err(e), _) | (_, Err(e)) => {
                            tracing::error!("worker {i}: listener: {e}");
                            return;
                        }
                    };
                    let mut phase = proxy.phase.subscribe();
                    tokio::join!(
                        proxy.clone().serve_http(http),
                        proxy.clone().serve_https(https, tls, resolver),
                    );
                    // The accept loops stop when draining starts; the
                    // connections (tasks of this runtime) finish until the
                    // drain closes them.
                    until(&mut phase, |p| p == Phase::Closing).await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                });
            })?;
    }
    Ok(())
}

/// [`bind_std`] as a Tokio listener. Must be called inside a Tokio
/// runtime.
pub fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::from_std(bind_std(addr)?)
}

/// Binds a listening socket the way a node-level proxy needs it:
/// `SO_REUSEADDR` (restart without waiting for TIME_WAIT) and
/// `SO_REUSEPORT` (a new process can bind next to the old one during an
/// upgrade), non-blocking, backlog 1024.
pub fn bind_std(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Counts live connections and tunnels so [`Proxy::drain`] knows when
/// they are gone.
#[derive(Clone, Default)]
struct Tracker {
    inner: Arc<TrackerInner>,
}

#[derive(Default)]
struct TrackerInner {
    count: AtomicUsize,
    idle: Notify,
}

/// One live connection or tunnel; dropping it ends the count.
struct Tracked {
    inner: Arc<TrackerInner>,
}

impl Tracker {
    fn enter(&self) -> Tracked {
        self.inner.count.fetch_add(1, Ordering::AcqRel);
        Tracked {
            inner: self.inner.clone(),
        }
    }

    async fn wait_idle(&self, deadline: tokio::time::Instant) {
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inner.count.load(Ordering::Acquire) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.inner.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}
