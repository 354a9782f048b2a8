//! One attempt to one endpoint, by backend protocol. Every protocol goes
//! through [`super::pool`]: pooled keep-alive HTTP/1.1 connections (60 s
//! idle timeout, at most 320 idle per endpoint: ingress-nginx's
//! `upstream-keepalive-*`), one shared HTTP/2 connection per endpoint for
//! h2c and gRPC, and TLS for HTTPS and gRPCS.
//!
//! Failures are classified so the pipeline can retry only what is safe:
//! [`Failure::Connect`] (nothing was sent), [`Failure::Timeout`] (no
//! response headers within `proxy-read-timeout`), [`Failure::Other`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;

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

pub(super) struct Upstreams {
    pool: Arc<Pool>,
}

impl Upstreams {
    pub(super) fn new() -> Upstreams {
        Upstreams {
            pool: Arc::new(Pool::new(IDLE_TIMEOUT, MAX_IDLE)),
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) to `endpoint`; the read
    /// timeout counts from the moment a connection is in hand.
    /// `upgrade` asks for an HTTP/1.1 connection (WebSocket).
    pub(super) async fn send(
        &self,
        protocol: BackendProtocol,
        endpoint: SocketAddr,
        req: Request<UpstreamBody>,
        upgrade: bool,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<Response<Incoming>, Failure> {
        let mode = match protocol {
            BackendProtocol::Http => Mode::Plain,
            BackendProtocol::H2c | BackendProtocol::Grpc => Mode::H2c,
            BackendProtocol::Https | BackendProtocol::Grpcs if upgrade => Mode::TlsH1,
            BackendProtocol::Https | BackendProtocol::Grpcs => Mode::Tls,
        };
        self.pool
            .send(mode, endpoint, req, connect_timeout, read_timeout)
            .await
    }
}
