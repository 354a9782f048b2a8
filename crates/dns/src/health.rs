//! `/health` (liveness, :8080), `/ready` (readiness, :8181) and `/metrics`
//! (:9153), where kubeadm's CoreDNS has them, so the same probes and
//! scrape configs work.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;

use crate::server::Shared;

/// Which of the three a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Health,
    Ready,
    Metrics,
}

/// Serves `what` on `listener` until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, what: Endpoint, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let r = respond(what, &req, &shared);
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub fn respond<B>(what: Endpoint, req: &Request<B>, shared: &Shared) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        );
    }
    match (what, req.uri().path()) {
        // CoreDNS: 200 "OK" while the process runs, also in lame duck.
        (Endpoint::Health, "/health") => text(StatusCode::OK, "OK".into()),
        (Endpoint::Ready, "/ready") => {
            if shared.synced() {
                text(StatusCode::OK, "OK".into())
            } else {
                // CoreDNS lists the plugins that are not ready.
                text(StatusCode::SERVICE_UNAVAILABLE, "kubernetes".into())
            }
        }
        (Endpoint::Metrics, "/metrics") => {
            let mut out = String::with_capacity(16 * 1024);
            shared.metrics.write(&shared.server_label, &mut out);
            shared
                .forwarder
                .write_metrics(&shared.server_label, &mut out);
            let index = shared.index.load();
            let _ = writeln!(
                out,
                "# HELP ferry_dns_index_names Names in the answer index.\n# TYPE ferry_dns_index_names gauge\nferry_dns_index_names {}\n# HELP ferry_dns_synced Whether every watch has listed once.\n# TYPE ferry_dns_synced gauge\nferry_dns_synced {}\n# HELP coredns_build_info A metric with a constant '1' value labeled by version.\n# TYPE coredns_build_info gauge\ncoredns_build_info{{version=\"ferry-{}\"}} 1",
                index.len(),
                u8::from(index.synced),
                env!("CARGO_PKG_VERSION")
            );
            if let Ok(b) = shared.builds.lock() {
                b.write(&mut out);
            }
            let mut r = text(StatusCode::OK, out);
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        _ => text(StatusCode::NOT_FOUND, "404 page not found\n".into()),
    }
}
