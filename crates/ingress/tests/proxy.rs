//! The proxy end to end over loopback: routing, forwarded headers,
//! redirects, limits, smuggling attempts, retries, WebSockets and streams
//! surviving route swaps, streaming bodies, HTTP/2 both ways, CORS, HSTS,
//! metrics and drain. Tests live in `tests/proxy/*.rs` by theme; the
//! backends and clients they use in `tests/support/`.
#![allow(clippy::unwrap_used)]

mod support;

#[path = "proxy/limits.rs"]
mod limits;
#[path = "proxy/routing.rs"]
mod routing;
#[path = "proxy/streams.rs"]
mod streams;
#[path = "proxy/upstreams.rs"]
mod upstreams;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_ingress::dataplane::proxy::Settings;
use ferry_ingress::dataplane::tls::{CertResolver, server_config};
use ferry_ingress::model::paths::{PathRule, PathType};
use ferry_ingress::model::route::{Access, BackendProtocol, Cidr, Cors, Hsts};
use ferry_ingress::model::tls::{CertIndex, certificate_from_secret, default_certificate};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const NOT_FOUND_PAGE: &str = "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n\
<center><h1>404 Not Found</h1></center>\r\n<hr><center>ferry</center>\r\n</body>\r\n</html>\r\n";

/// Metrics are recorded when a response body is dropped, which can be a
/// moment after the client has read it.
pub async fn metrics_with(proxy: &ferry_ingress::dataplane::proxy::Proxy, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let mut metrics = String::new();
        proxy.write_metrics(&mut metrics);
        if metrics.contains(needle) {
            return metrics;
        }
        assert!(Instant::now() < deadline, "no {needle} in\n{metrics}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
