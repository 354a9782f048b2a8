//! Pooled upstream connections for every backend protocol.
//!
//! The pool drives hyper's connection-level clients itself rather than
//! hyper-util's legacy `Client`: a request needs no absolute URI, no
//! per-request connection-capture channel and no pool key hashing of a
//! formatted authority, HTTP/2 gets the client's host as `:authority`
//! (the legacy client sends the endpoint address), and TLS needs no
//! `tower_service` connector. Per endpoint it keeps one shared HTTP/2
//! connection (multiplexed; h2c, gRPC, or TLS that negotiated h2), or idle
//! HTTP/1.1 connections (plain, or TLS without h2) reused until they have
//! been idle for 60 s. Upstream certificates are not verified
//! (ingress-nginx's `proxy_ssl_verify off`), and no SNI is sent
//! (`proxy_ssl_server_name off`); the handshake signature is still checked
//! against the presented certificate.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::body::UpstreamBody;
use super::upstream::Failure;

/// How to talk to an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Mode {
    /// HTTP/1.1, cleartext.
    Plain,
    /// HTTP/2 with prior knowledge, cleartext.
    H2c,
    /// TLS, ALPN h2 or http/1.1.
    Tls,
    /// TLS, ALPN http/1.1 only (for upgrades, which HTTP/2 cannot carry).
    TlsH1,
}

struct IdleH1 {
    sender: http1::SendRequest<UpstreamBody>,
    since: Instant,
}

#[derive(Default)]
struct Slot {
    h2: Option<http2::SendRequest<UpstreamBody>>,
    h1: Vec<IdleH1>,
}

impl Slot {
    fn prune(&mut self, idle: Duration) {
        if self.h2.as_ref().is_some_and(|s| s.is_closed()) {
            self.h2 = None;
        }
        self.h1
            .retain(|c| !c.sender.is_closed() && c.since.elapsed() < idle);
    }

    fn is_empty(&self) -> bool {
        self.h2.is_none() && self.h1.is_empty()
    }
}

struct Slots {
    by_endpoint: HashMap<(SocketAddr, Mode), Slot>,
    last_sweep: Instant,
}

enum Sender {
    H1(http1::SendRequest<UpstreamBody>, bool),
    H2(http2::SendRequest<UpstreamBody>),
}

pub(super) struct Pool {
    tls: Arc<ClientConfig>,
    tls_h1: Arc<ClientConfig>,
    slots: Mutex<Slots>,
    idle: Duration,
    max_idle: usize,
}

impl Pool {
    pub(super) fn new(idle: Duration, max_idle: usize) -> Pool {
        Pool {
            tls: client_config(&[b"h2", b"http/1.1"]),
            tls_h1: client_config(&[b"http/1.1"]),
            slots: Mutex::new(Slots {
                by_endpoint: HashMap::new(),
                last_sweep: Instant::now(),
            }),
            idle,
            max_idle,
        }
    }

    /// Sends `req` (origin-form URI and `Host`, as the pipeline builds it;
    /// turned into `:authority` for HTTP/2 here) to `addr`.
    pub(super) async fn send(
        self: &Arc<Self>,
        mode: Mode,
        addr: SocketAddr,
        mut req: Request<UpstreamBody>,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<Response<Incoming>, Failure> {
        // A reused HTTP/1.1 connection may have been closed by the
        // endpoint just now; hyper hands the unsent request back, and it
        // goes out on another connection.
        for _ in 0..4 {
            let sender = match self.checkout(mode, addr) {
                Some(s) => s,
                None => self.connect(mode, addr, connect_timeout).await?,
            };
            match sender {
                Sender::H2(mut tx) => {
                    if tx.ready().await.is_err() {
                        // The shared connection died since it was pooled.
                        self.forget_h2(mode, addr);
                        continue;
                    }
                    to_h2(&mut req, mode != Mode::H2c, addr);
                    return match tokio::time::timeout(read_timeout, tx.send_request(req)).await {
                        Ok(Ok(resp)) => Ok(resp),
                        Ok(Err(e)) => Err(Failure::Other(e.into())),
                        Err(_) => Err(Failure::Timeout),
                    };
                }
                Sender::H1(mut tx, reused) => {
                    to_h1(&mut req);
                    let sent = tokio::time::timeout(read_timeout, tx.try_send_request(req)).await;
                    match sent {
                        Ok(Ok(resp)) => {
                            self.recycle(mode, addr, tx);
                            return Ok(resp);
                        }
                        Ok(Err(mut e)) => match e.take_message() {
                            Some(back) if reused => req = back,
                            _ => return Err(Failure::Other(e.into_error().into())),
                        },
                        Err(_) => return Err(Failure::Timeout),
                    }
                }
            }
        }
        Err(Failure::Other("no usable upstream connection".into()))
    }

    fn forget_h2(&self, mode: Mode, addr: SocketAddr) {
        if let Ok(mut guard) = self.slots.lock()
            && let Some(slot) = guard.by_endpoint.get_mut(&(addr, mode))
            && slot.h2.as_ref().is_some_and(|h2| h2.is_closed())
        {
            slot.h2 = None;
        }
    }

    fn checkout(&self, mode: Mode, addr: SocketAddr) -> Option<Sender> {
        let mut guard = self.slots.lock().ok()?;
        let Slots {
            by_endpoint: slots,
            last_sweep,
        } = &mut *guard;
        if last_sweep.elapsed() > Duration::from_secs(30) {
            *last_sweep = Instant::now();
            slots.retain(|_, slot| {
                slot.prune(self.idle);
                !slot.is_empty()
            });
        }
        let slot = slots.get_mut(&(addr, mode))?;
        if let Some(h2) = &slot.h2 {
            if !h2.is_closed() {
                return Some(Sender::H2(h2.clone()));
            }
            slot.h2 = None;
        }
        while let Some(idle) = slot.h1.pop() {
            if idle.sender.is_ready() && idle.since.elapsed() < self.idle {
                return Some(Sender::H1(idle.sender, true));
            }
        }
        None
    }

    /// Back to the idle list once the response has been read (hyper says
    /// ready); a connection that was upgraded or broken never is.
    fn recycle(
        self: &Arc<Self>,
        mode: Mode,
        addr: SocketAddr,
        mut tx: http1::SendRequest<UpstreamBody>,
    ) {
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            if tx.ready().await.is_err() {
                return;
            }
            let Some(pool) = pool.upgrade() else { return };
            let Ok(mut guard) = pool.slots.lock() else {
                return;
            };
            let slot = guard.by_endpoint.entry((addr, mode)).or_default();
            if slot.h1.len() < pool.max_idle {
                slot.h1.push(IdleH1 {
                    sender: tx,
                    since: Instant::now(),
                });
            }
        });
    }

    async fn connect(
        &self,
        mode: Mode,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<Sender, Failure> {
        let deadline = Instant::now() + timeout;
        let tcp = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(Failure::Connect(e.into())),
            Err(_) => return Err(Failure::Connect("connect timeout".into())),
        };
        let _ = tcp.set_nodelay(true);
        let config = match mode {
            Mode::Plain => return self.handshake(mode, addr, tcp, false).await,
            Mode::H2c => return self.handshake(mode, addr, tcp, true).await,
            Mode::Tls => self.tls.clone(),
            Mode::TlsH1 => self.tls_h1.clone(),
        };
        let name = ServerName::IpAddress(addr.ip().into());
        let connector = tokio_rustls::TlsConnector::from(config);
        let tls = match tokio::time::timeout_at(deadline, connector.connect(name, tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return Err(Failure::Connect(e.into())),
            Err(_) => return Err(Failure::Connect("TLS handshake timeout".into())),
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        self.handshake(mode, addr, tls, h2).await
    }

    async fn handshake<I>(
        &self,
        mode: Mode,
        addr: SocketAddr,
        io: I,
        h2: bool,
    ) -> Result<Sender, Failure>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        if h2 {
            let (tx, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(|e| Failure::Connect(e.into()))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream h2 connection ended");
                }
            });
            if let Ok(mut guard) = self.slots.lock() {
                guard.by_endpoint.entry((addr, mode)).or_default().h2 = Some(tx.clone());
            }
            Ok(Sender::H2(tx))
        } else {
            let (tx, conn) = http1::Builder::new()
                .handshake(io)
                .await
                .map_err(|e| Failure::Connect(e.into()))?;
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(error = %e, "upstream connection ended");
                }
            });
            Ok(Sender::H1(tx, false))
        }
    }
}

/// HTTP/2 takes the authority from the URI (`:authority`): the `Host`
/// the pipeline chose moves there (the endpoint address if it has none).
fn to_h2(req: &mut Request<UpstreamBody>, tls: bool, addr: SocketAddr) {
    *req.version_mut() = http::Version::HTTP_2;
    if req.uri().authority().is_some() {
        return;
    }
    let authority = req
        .headers_mut()
        .remove(http::header::HOST)
        .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
        .or_else(|| http::uri::Authority::try_from(addr.to_string()).ok());
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.scheme = Some(if tls {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    });
    parts.authority = authority;
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}

/// HTTP/1.1 wants origin-form and a `Host` header.
fn to_h1(req: &mut Request<UpstreamBody>) {
    *req.version_mut() = http::Version::HTTP_11;
    if let Some(authority) = req.uri().authority().cloned() {
        if !req.headers().contains_key(http::header::HOST)
            && let Ok(host) = http::HeaderValue::from_str(authority.as_str())
        {
            req.headers_mut().insert(http::header::HOST, host);
        }
        let pq = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        *req.uri_mut() = http::Uri::from(pq);
    }
}

fn client_config(alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.enable_sni = false;
    Arc::new(config)
}

/// Accepts any certificate (`proxy_ssl_verify off`), still checking that
/// the peer signed the handshake with the certificate's key.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
