//! The HTTPS server of the streaming endpoint: the kubelet's paths
//! `/containerLogs/<ns>/<pod>/<container>`, `/exec/<ns>/<pod>/<container>`,
//! `/attach/<ns>/<pod>/<container>` and `/portForward/<ns>/<pod>`, behind a
//! bearer token (the API server's), on the node's InternalIP only.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;

use super::logs::{self, LogOptions};
use super::remotecommand::{self, Streams};
use super::{Registry, websocket};

/// Connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 1024;
/// Time for a TLS handshake, and for a request's head.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The kubelet's port.
pub const DEFAULT_PORT: u16 = 10250;

type Body = BoxBody<Bytes, std::io::Error>;

/// Shared by all connections.
pub struct Server {
    pub registry: Arc<Registry>,
    /// The Ferry binary (`ferry lab-run` starts exec'd commands).
    pub exe: PathBuf,
    /// Requests must carry `Authorization: Bearer <token>`.
    pub token: String,
}

fn text(status: u16, message: impl Into<String>) -> Response<Body> {
    let mut body = message.into();
    body.push('\n');
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed(),
        )
        .expect("static response parts are valid")
}

fn authorized(server: &Server, req: &Request<hyper::body::Incoming>) -> bool {
    let Some(token) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (token.trim().as_bytes(), server.token.as_bytes());
    !b.is_empty()
        && a.len() == b.len()
        && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The self-signed serving certificate: the API server does not verify
/// kubelet certificates unless told to (kube-apiserver's default without
/// `--kubelet-certificate-authority`); the token is what is checked.
fn tls_acceptor(sans: Vec<String>) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let key = rcgen::KeyPair::generate()?;
    let params = rcgen::CertificateParams::new(sans)?;
    let cert = params.self_signed(&key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
    // Upgrades (WebSocket, SPDY) are HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves on `addr` until the future is dropped.
pub async fn run(server: Arc<Server>, addr: SocketAddr, sans: Vec<String>) -> anyhow::Result<()> {
    let acceptor = tls_acceptor(sans)?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "streaming endpoint (logs, exec, attach, port-forward) ready");
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, most likely: back off, don't spin.
                tracing::warn!(error = %e, "streaming endpoint: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "streaming endpoint: {MAX_CONNECTIONS} connections open, refusing one");
            continue;
        };
        let acceptor = acceptor.clone();
        let server = server.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(handle(server, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, error = %e, "streaming connection ended with an error");
            }
        });
    }
}

async fn handle(server: Arc<Server>, mut req: Request<hyper::body::Incoming>) -> Response<Body> {
    if req.uri().path() == "/healthz" {
        return text(200, "ok");
    }
    if !authorized(&server, &req) {
        return text(401, "Unauthorized");
    }
    let path: Vec<String> = req
        .uri()
        .path()
        .trim_matches('/')
        .split('/')
        .map(ferry_api::url::percent_decode)
        .collect();
    let query = ferry_api::url::query_pairs(req.uri().query());
    let parts: Vec<&str> = path.iter().map(String::as_str).collect();
    match parts.as_slice() {
        ["containerLogs", ns, pod, container] if req.method() == Method::GET => {
            container_logs(&server, ns, pod, container, &query)
        }
        [op @ ("exec" | "attach"), ns, pod, container]
            if matches!(*req.method(), Method::GET | Method::POST) =>
        {
            let upgrade = hyper::upgrade::on(&mut req);
            remote_command(&server, op, ns, pod, container, &query, &req, upgrade)
        }
        ["portForward", ns, pod] if matches!(*req.method(), Method::GET | Method::POST) => {
            let upgrade = hyper::upgrade::on(&mut req);
            port_forward(&server, ns, pod, &req, upgrade)
        }
        _ => text(404, "404 page not found"),
    }
}

fn container_logs(
    server: &Server,
    ns: &str,
    pod: &str,
    container: &str,
    query: &[(String, String)],
) -> Response<Body> {
    let opts = match LogOptions::parse(query) {
        Ok(o) => o,
        Err(e) => return text(400, e),
    };
    match logs::open(server.registry.clone(), ns, pod, container, opts) {
        Ok(rx) => {
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|chunk| (chunk.map(Frame::data), rx))
            });
            Response::builder()
                .header(header::CONTENT_TYPE, "text/plain")
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .expect("static response parts are valid")
        }
        Err((status, message)) => text(status, message),
    }
}

#[allow(clippy::too_many_arguments)]
fn remote_command(
    server: &Server,
    op: &str,
    ns: &str,
    pod: &str,
    container: &str,
    query: &[(String, String)],
    req: &Request<hyper::body::Incoming>,
    upgrade: hyper::upgrade::OnUpgrade,
) -> Response<Body> {
    let Some(entry) = server.registry.pod(ns, pod) else {
        return text(404, format!("pod {ns}/{pod} is not on this node"));
    };
    let Some(state) = entry.containers.get(container) else {
        return text(
            400,
            format!("container {container} is not valid for pod {pod}"),
        );
    };
    let Some(run) = state.running.clone() else {
        return text(400, format!("container {container} is not running"));
    };
    let streams = Streams::parse(query);
    if !(streams.stdin || streams.stdout || streams.stderr || streams.tty) {
        return text(400, "you must specify at least 1 of stdin, stdout, stderr");
    }
    let argv = remotecommand::command(query);
    if op == "exec" && argv.is_empty() {
        return text(
            400,
            "you must specify at least one command for the container",
        );
    }
    if op == "attach" && streams.stdin && run.console.is_none() {
        return text(
            400,
            format!("container {container} does not take stdin (set stdin: true in its spec)"),
        );
    }
    if !websocket::is_upgrade(req) {
        return text(
            400,
            "exec and attach need a WebSocket upgrade (v5.channel.k8s.io, kubectl 1.31 and later); \
             SPDY remote command is not supported",
        );
    }
    let Some(key) = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.trim().is_empty())
        .map(str::to_string)
    else {
        return text(400, "WebSocket upgrade without a Sec-WebSocket-Key");
    };
    let Some(protocol) = remotecommand::choose_protocol(&websocket::offered_protocols(req)) else {
        return text(
            400,
            format!(
                "no supported streaming protocol offered; supported: {}, {}",
                remotecommand::V5,
                remotecommand::V4
            ),
        );
    };
    let exe = server.exe.clone();
    let registry = server.registry.clone();
    let (op, ns, pod, container) = (
        op.to_string(),
        ns.to_string(),
        pod.to_string(),
        container.to_string(),
    );
    let stdin_once = state.stdin_once;
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        if op == "exec" {
            remotecommand::exec(io, exe, run, argv, streams).await;
        } else {
            remotecommand::attach(io, registry, ns, pod, container, run, stdin_once, streams).await;
        }
    });
    switching_protocols(
        "websocket",
        &[
            (
                header::SEC_WEBSOCKET_ACCEPT.as_str(),
                &websocket::accept_key(&key),
            ),
            (header::SEC_WEBSOCKET_PROTOCOL.as_str(), protocol),
        ],
    )
}

/// `101 Switching Protocols` to `upgrade`, with `headers`.
fn switching_protocols(upgrade: &str, headers: &[(&str, &str)]) -> Response<Body> {
    let mut resp = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, upgrade);
    for (name, value) in headers {
        resp = resp.header(*name, *value);
    }
    resp.body(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed(),
    )
    .expect("static response parts are valid")
}

fn port_forward(
    server: &Server,
    ns: &str,
    pod: &str,
    req: &Request<hyper::body::Incoming>,
    upgrade: hyper::upgrade::OnUpgrade,
) -> Response<Body> {
    let Some(entry) = server.registry.pod(ns, pod) else {
        return text(404, format!("pod {ns}/{pod} is not on this node"));
    };
    let spdy = req
        .headers()
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.eq_ignore_ascii_case("SPDY/3.1"));
    let offers_protocol = req
        .headers()
        .get_all("X-Stream-Protocol-Version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == super::portforward::PROTOCOL);
    if !spdy || !offers_protocol {
        // kubectl tries a WebSocket tunnel first and falls back to SPDY
        // when the upgrade is refused.
        return text(
            400,
            "port-forward needs an HTTP upgrade to SPDY/3.1 with protocol portforward.k8s.io",
        );
    }
    let netns = entry.netns.clone();
    let describe = format!("{pod}_{ns}");
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        super::portforward::serve_pod(io, describe, move |port| connect_in(netns.clone(), port))
            .await;
    });
    switching_protocols(
        "SPDY/3.1",
        &[("X-Stream-Protocol-Version", super::portforward::PROTOCOL)],
    )
}

/// Connects to `localhost:port` inside the pod's network namespace, as a
/// container runtime's port-forward does. The socket is made on a thread
/// of its own that enters the namespace and then ends; the socket stays
/// in the namespace it was made in.
pub async fn connect_in(
    netns: Option<PathBuf>,
    port: u16,
) -> std::io::Result<tokio::net::TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = (|| {
            if let Some(path) = &netns {
                let file = std::fs::File::open(path)?;
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
            }
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            // Worded as the kubelet's (Go's) dial errors.
            let stream =
                std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(10))
                    .map_err(|e| {
                        std::io::Error::new(
                            e.kind(),
                            format!(
                                "dial tcp {addr}: connect: {}",
                                super::portforward::os_error_text(&e)
                            ),
                        )
                    })?;
            stream.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(stream)
        })();
        let _ = tx.send(result);
    });
    let stream = rx
        .await
        .map_err(|_| std::io::Error::other("connect thread ended"))??;
    tokio::net::TcpStream::from_std(stream)
}
