//! Test backends and clients for the proxy tests, all on 127.0.0.1.
//!
//! A [`Backend`] is a small hyper server (HTTP/1.1 and h2c) that answers
//! by path: `/stream` (40 chunks, one per 50 ms), `/stall` (never
//! answers), `/download` (10 MiB), `/upload` (counts the body, noting when
//! the first byte arrived), a WebSocket echo on `Upgrade: websocket`, and
//! otherwise a JSON echo of what it received (its name, method, URI,
//! version, headers, body length).
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ferry_ingress::dataplane::proxy::{Proxy, Settings, bind};
use ferry_ingress::model::paths::{PathRule, PathType};
use ferry_ingress::model::route::{BackendProtocol, Location, ObjectRef, Routes, Upstream};
use ferry_ingress::model::router::HostRule;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub type TestBody = BoxBody<Bytes, Infallible>;

pub const STREAM_CHUNKS: usize = 40;
pub const DOWNLOAD_BYTES: usize = 10 * 1024 * 1024;

/// What a backend saw.
#[derive(Default)]
pub struct Seen {
    pub connections: AtomicUsize,
    pub requests: AtomicUsize,
    pub paths: Mutex<Vec<String>>,
    pub upload_started: AtomicBool,
}

pub struct Backend {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
}

pub async fn backend(name: &str) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let name: Arc<str> = name.into();
    let state = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            state.connections.fetch_add(1, Ordering::SeqCst);
            let name = name.clone();
            let seen = state.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let name = name.clone();
                    let seen = seen.clone();
                    async move { Ok::<_, Infallible>(answer(&name, &seen, req).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Backend { addr, seen }
}

fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).boxed()
}

async fn answer(name: &str, seen: &Seen, mut req: Request<Incoming>) -> Response<TestBody> {
    seen.requests.fetch_add(1, Ordering::SeqCst);
    seen.paths.lock().unwrap().push(req.uri().to_string());
    if req.headers().contains_key("sec-websocket-key") {
        return websocket(req);
    }
    match req.uri().path() {
        "/stream" => {
            let chunks = futures::stream::unfold(0usize, |i| async move {
                if i == STREAM_CHUNKS {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let frame = Frame::data(Bytes::from(format!("chunk-{i:02}\n")));
                Some((Ok::<_, Infallible>(frame), i + 1))
            });
            Response::new(StreamBody::new(chunks).boxed())
        }
        "/stall" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Response::new(full("late"))
        }
        "/download" => {
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let n = DOWNLOAD_BYTES / chunk.len();
            let chunks = futures::stream::iter(
                (0..n).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone()))),
            );
            Response::new(StreamBody::new(chunks).boxed())
        }
        "/upload" => {
            let body = req.body_mut();
            let mut received = 0usize;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Some(data) = frame.data_ref() {
                    if received == 0 && !data.is_empty() {
                        seen.upload_started.store(true, Ordering::SeqCst);
                    }
                    received += data.len();
                }
            }
            Response::new(full(received.to_string()))
        }
        _ => {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let mut headers = BTreeMap::<String, String>::new();
            for (k, v) in &parts.headers {
                let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                headers
                    .entry(k.as_str().to_string())
                    .and_modify(|e| {
                        e.push_str(", ");
                        e.push_str(&v);
                    })
                    .or_insert(v);
            }
            let json = serde_json::json!({
                "name": name,
                "method": parts.method.as_str(),
                "uri": parts.uri.to_string(),
                "version": format!("{:?}", parts.version),
                "headers": headers,
                "body_len": body.len(),
            });
            let mut resp = Response::new(full(json.to_string()));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            resp
        }
    }
}

/// The RFC 6455 handshake, then echo frames (unmasked) until a close.
fn websocket(mut req: Request<Incoming>) -> Response<TestBody> {
    let key = req.headers()["sec-websocket-key"].as_bytes().to_vec();
    let accept = ws_accept(&key);
    let on = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on.await else { return };
        let mut io = TokioIo::new(upgraded);
        while let Some((opcode, payload)) = read_frame(&mut io).await {
            if opcode == 8 {
                break;
            }
            if io.write_all(&frame(opcode, &payload, None)).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", accept)
        .body(Empty::new().boxed())
        .unwrap()
}

pub fn ws_accept(key: &[u8]) -> String {
    let mut input = key.to_vec();
    input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64(digest.as_ref())
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One WebSocket frame (FIN set), masked when `mask` is given.
pub fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    let m = if mask.is_some() { 0x80 } else { 0 };
    if payload.len() < 126 {
        out.push(m | payload.len() as u8);
    } else {
        out.push(m | 126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// Reads one frame: (opcode, unmasked payload); `None` at EOF.
pub async fn read_frame<R: tokio::io::AsyncRead + Unpin>(io: &mut R) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    io.read_exact(&mut head).await.ok()?;
    let mut len = u64::from(head[1] & 0x7f);
    if len == 126 {
        let mut ext = [0u8; 2];
        io.read_exact(&mut ext).await.ok()?;
        len = u64::from(u16::from_be_bytes(ext));
    } else if len == 127 {
        let mut ext = [0u8; 8];
        io.read_exact(&mut ext).await.ok()?;
        len = u64::from_be_bytes(ext);
    }
    let mask = if head[1] & 0x80 != 0 {
        let mut key = [0u8; 4];
        io.read_exact(&mut key).await.ok()?;
        Some(key)
    } else {
        None
    };
    let mut payload = vec![0u8; usize::try_from(len).ok()?];
    io.read_exact(&mut payload).await.ok()?;
    if let Some(key) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    Some((head[0] & 0x0f, payload))
}

/// A WebSocket handshake by hand through `addr` for `host`; checks the
/// 101 and the RFC 6455 example accept value.
pub async fn ws_connect(addr: SocketAddr, host: &str) -> TcpStream {
    let mut ws = TcpStream::connect(addr).await.unwrap();
    let handshake = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    ws.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        ws.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    ws
}

/// A port nothing listens on (connection refused).
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub fn upstream(name: &str, endpoints: &[SocketAddr], protocol: BackendProtocol) -> Arc<Upstream> {
    Arc::new(Upstream {
        name: format!("default-{name}-80"),
        service: Some(ObjectRef {
            namespace: "default".into(),
            name: name.into(),
        }),
        endpoints: endpoints.to_vec(),
        protocol,
        balance: Default::default(),
    })
}

/// A Prefix rule's location with ingress-nginx's defaults.
pub fn location(host: &str, path: &str, upstream: Arc<Upstream>) -> Location {
    Location::new(
        ObjectRef {
            namespace: "default".into(),
            name: "web".into(),
        },
        host.into(),
        PathRule::new(path, PathType::Prefix, false).unwrap(),
        upstream,
    )
}

/// Routes from locations (each under its own `host`, empty = any host).
pub fn routes(locations: Vec<Location>) -> Routes {
    let mut routes = Routes::default();
    for loc in locations {
        let host = HostRule::parse(Some(&loc.host));
        let path = loc.path.clone();
        assert!(routes.router.insert(&host, path, Arc::new(loc)));
    }
    routes
}

/// A proxy serving plain HTTP on 127.0.0.1.
pub async fn start(routes: Routes, settings: Settings) -> (Arc<Proxy>, SocketAddr) {
    let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let proxy = Proxy::new(routes, settings);
    tokio::spawn(proxy.clone().serve_http(listener));
    (proxy, addr)
}

/// Sends one request on a new HTTP/1.1 connection.
pub async fn send<B>(addr: SocketAddr, req: Request<B>) -> Response<Incoming>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    tx.send_request(req).await.unwrap()
}

/// GET `path` with `Host: host` (and `extra` headers): status, headers, body.
pub async fn get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Bytes) {
    request(addr, "GET", host, path, extra, Bytes::new()).await
}

pub async fn request(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: Bytes,
) -> (StatusCode, HeaderMap, Bytes) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = send(addr, req.body(Full::new(body)).unwrap()).await;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

/// The backend's JSON echo.
pub fn json(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

/// Writes raw bytes on a new connection and reads until the proxy closes
/// it (or `limit` passes): everything it answered.
pub async fn raw(addr: SocketAddr, bytes: &[u8], limit: Duration) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
