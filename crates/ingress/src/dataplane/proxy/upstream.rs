//! One attempt to one endpoint, by backend protocol.
//!
//! Plain HTTP (the common case) goes through hyper-util's legacy `Client`:
//! pooled keep-alive connections, 60 s idle timeout, at most 320 idle per
//! endpoint (ingress-nginx's `upstream-keepalive-*`). Its connector's
//! connect timeout is fixed per client, so there is one client per
//! distinct `proxy-connect-timeout` value (in practice one or two).
//! HTTP/2 and TLS backends go through [`super::pool`].
//!
//! Failures are classified so the pipeline can retry only what is safe:
//! [`Failure::Connect`] (nothing was sent), [`Failure::Timeout`] (no
//! response headers within `proxy-read-timeout`), [`Failure::Other`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{CaptureConnection, HttpConnector, capture_connection};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::{BoxError, UpstreamBody};
use super::pool::{Mode, Pool};
use crate::model::route::BackendProtocol;

/// `upstream-keepalive-timeout`.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// `upstream-keepalive-connections`.
const MAX_IDLE: usize = 320;

#[derive(Debug)]
pub(super) enum Failure {
    /// The connection (TCP or TLS) could not be established.
    Connect(BoxError),
    /// No response headers within the read timeout.
    Timeout,
    /// Anything after the request started (reset, protocol error, the
    /// request body failing).
    Other(BoxError),
}

type H1Client = Client<HttpConnector, UpstreamBody>;

pub(super) struct Upstreams {
    h1: RwLock<HashMap<Duration, H1Client>>,
    pool: Arc<Pool>,
}

impl Upstreams {
    pub(super) fn new() -> Upstreams {
        Upstreams {
            h1: RwLock::new(HashMap::new()),
            pool: Arc::new(Pool::new(IDLE_TIMEOUT, MAX_IDLE)),
        }
    }

    fn h1_client(&self, connect_timeout: Duration) -> H1Client {
        if let Ok(clients) = self.h1.read()
            && let Some(c) = clients.get(&connect_timeout)
        {
            return c.clone();
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(MAX_IDLE)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        if let Ok(mut clients) = self.h1.write() {
            clients
                .entry(connect_timeout)
                .or_insert_with(|| client.clone());
        }
        client
    }

    /// Sends `req` (origin-form URI, `Host` set) to `endpoint`; the read
    /// timeout counts from the moment a connection is in hand.
    /// `upgrade` asks for an HTTP/1.1 connection (WebSocket).
    pub(super) async fn send(
        &self,
        protocol: BackendProtocol,
        endpoint: SocketAddr,
        mut req: Request<UpstreamBody>,
        upgrade: bool,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<Response<Incoming>, Failure> {
        let mode = match protocol {
            BackendProtocol::Http => None,
            BackendProtocol::H2c | BackendProtocol::Grpc => Some(Mode::H2c),
            BackendProtocol::Https | BackendProtocol::Grpcs if upgrade => Some(Mode::TlsH1),
            BackendProtocol::Https | BackendProtocol::Grpcs => Some(Mode::Tls),
        };
        if let Some(mode) = mode {
            return self
                .pool
                .send(mode, endpoint, req, connect_timeout, read_timeout)
                .await;
        }
        let pq = req
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        *req.uri_mut() = Uri::builder()
            .scheme("http")
            .authority(endpoint.to_string())
            .path_and_query(pq)
            .build()
            .map_err(|e| Failure::Other(e.into()))?;
        *req.version_mut() = http::Version::HTTP_11;
        let client = self.h1_client(connect_timeout);
        // The connector's timeout bounds the connect phase; the read
        // timeout starts once the client has a connection (pooled or new),
        // which the capture extension reports.
        let mut capture = capture_connection(&mut req);
        let response = client.request(req);
        tokio::pin!(response);
        tokio::select! {
            done = &mut response => return classify(done),
            () = connected(&mut capture) => {}
        }
        match tokio::time::timeout(read_timeout, response).await {
            Ok(done) => classify(done),
            Err(_) => Err(Failure::Timeout),
        }
    }
}

async fn connected(capture: &mut CaptureConnection) {
    let _ = capture.wait_for_connection_metadata().await.is_some();
}

fn classify(
    done: Result<Response<Incoming>, hyper_util::client::legacy::Error>,
) -> Result<Response<Incoming>, Failure> {
    match done {
        Ok(resp) => Ok(resp),
        Err(e) if e.is_connect() => Err(Failure::Connect(e.into())),
        Err(e) => Err(Failure::Other(e.into())),
    }
}
