//! `/healthz` and `/metrics` on :10254, where ingress-nginx has them, so
//! probes and scrape configs carry over.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;

use crate::dataplane::proxy::Proxy;

/// Serves until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, proxy: Arc<Proxy>, synced: Arc<AtomicBool>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (proxy, synced) = (proxy.clone(), synced.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let r = respond(req.uri().path(), &proxy, synced.load(Ordering::Relaxed));
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(path: &str, proxy: &Proxy, synced: bool) -> Response<Full<Bytes>> {
    let (status, body) = match path {
        "/healthz" if synced => (StatusCode::OK, "ok".to_string()),
        "/healthz" => (StatusCode::SERVICE_UNAVAILABLE, "not synced".to_string()),
        "/metrics" => {
            let mut out = String::with_capacity(16 * 1024);
            proxy.write_metrics(&mut out);
            (StatusCode::OK, out)
        }
        _ => (StatusCode::NOT_FOUND, "404 page not found\n".to_string()),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}
