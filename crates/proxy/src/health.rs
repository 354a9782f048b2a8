//! What `ferry proxy` tells the outside world over HTTP, as kube-proxy
//! does: `/healthz` and `/livez` (port 10256), `/metrics` (port 10249, on
//! loopback), and one health-check server per `healthCheckNodePort` of a
//! Service with `externalTrafficPolicy: Local`, which load balancers probe
//! to learn whether this node has local endpoints.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;

/// Upper bounds of the sync-duration histograms, in seconds (kube-proxy's
/// exponential buckets from 1 ms).
const BUCKETS: [f64; 15] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192, 16.384,
];

/// A Prometheus histogram.
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        for (i, le) in BUCKETS.iter().enumerate() {
            if seconds <= *le {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (le, n) in BUCKETS.iter().zip(self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", self.sum, self.count);
    }
}

/// The proxy's state as the HTTP endpoints show it.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// Whole-table syncs (the first one, or after an error).
    pub full: Histogram,
    /// Syncs that sent only a difference.
    pub partial: Histogram,
    pub last_sync: Option<SystemTime>,
    /// A change seen but not yet applied, since when.
    pub pending_since: Option<SystemTime>,
    pub chains: usize,
    pub rules: usize,
    pub sets: usize,
    pub elements: usize,
    pub service_ports: usize,
    pub sync_errors: u64,
    pub conntrack_deleted: u64,
    /// Local endpoint count per health-check node port, and its Service.
    pub health_checks: BTreeMap<u16, HealthCheck>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub namespace: String,
    pub name: String,
    pub local_endpoints: usize,
}

pub type Shared = Arc<Mutex<Status>>;

/// The proxy is healthy unless a change has waited longer than this.
const UNHEALTHY_AFTER: Duration = Duration::from_secs(60);

pub fn lock(status: &Shared) -> std::sync::MutexGuard<'_, Status> {
    status.lock().unwrap_or_else(|e| e.into_inner())
}

fn seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn rfc3339(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

impl Status {
    /// kube-proxy's rule: unhealthy when an update has been pending for
    /// too long (the dataplane is stuck), healthy otherwise.
    pub fn healthy(&self, now: SystemTime) -> bool {
        match self.pending_since {
            Some(since) => now.duration_since(since).unwrap_or_default() < UNHEALTHY_AFTER,
            None => true,
        }
    }

    fn healthz(&self) -> (StatusCode, String) {
        let now = SystemTime::now();
        let healthy = self.healthy(now);
        let body = serde_json::json!({
            "lastUpdated": self.last_sync.map(rfc3339).unwrap_or_default(),
            "currentTime": rfc3339(now),
            "nodeEligible": true,
        });
        let code = if healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (code, body.to_string())
    }

    /// Prometheus text format.
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        self.full.write(
            &mut out,
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
        );
        self.partial.write(
            &mut out,
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
        );
        let mut all = self.full.clone();
        all.counts
            .iter_mut()
            .zip(self.partial.counts)
            .for_each(|(a, b)| *a += b);
        all.count += self.partial.count;
        all.sum += self.partial.sum;
        all.write(
            &mut out,
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
        );
        let gauge = |out: &mut String, name: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        gauge(
            &mut out,
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            self.last_sync.map(seconds).unwrap_or(0.0).to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP ferry_proxy_nftables_objects Objects in the ferry-proxy table after the last sync\n# TYPE ferry_proxy_nftables_objects gauge"
        );
        for (kind, n) in [
            ("chains", self.chains),
            ("rules", self.rules),
            ("sets", self.sets),
            ("elements", self.elements),
        ] {
            let _ = writeln!(out, "ferry_proxy_nftables_objects{{kind=\"{kind}\"}} {n}");
        }
        gauge(
            &mut out,
            "ferry_proxy_service_ports",
            "Service ports programmed on this node",
            self.service_ports.to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP ferry_proxy_sync_errors_total Syncs the kernel refused\n# TYPE ferry_proxy_sync_errors_total counter\nferry_proxy_sync_errors_total {}",
            self.sync_errors
        );
        let _ = writeln!(
            out,
            "# HELP ferry_proxy_conntrack_deleted_total Stale UDP conntrack entries deleted\n# TYPE ferry_proxy_conntrack_deleted_total counter\nferry_proxy_conntrack_deleted_total {}",
            self.conntrack_deleted
        );
        out
    }

    /// The answer of health-check node port `port`, as kube-proxy's.
    fn health_check(&self, port: u16) -> (StatusCode, String, usize) {
        let Some(hc) = self.health_checks.get(&port) else {
            return (StatusCode::SERVICE_UNAVAILABLE, String::new(), 0);
        };
        let healthy = self.healthy(SystemTime::now());
        let body = serde_json::json!({
            "service": {"namespace": hc.namespace, "name": hc.name},
            "localEndpoints": hc.local_endpoints,
            "serviceProxyHealthy": healthy,
        });
        let code = if hc.local_endpoints > 0 && healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (code, body.to_string(), hc.local_endpoints)
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(code: StatusCode, content_type: &str, body: String) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_str(content_type)
            .unwrap_or(http::HeaderValue::from_static("text/plain")),
    );
    r.headers_mut().insert(
        "x-content-type-options",
        http::HeaderValue::from_static("nosniff"),
    );
    r
}

/// What one listener answers.
#[derive(Clone, Copy, Debug)]
pub enum Endpoint {
    /// `/healthz` and `/livez`.
    Healthz,
    /// `/metrics`.
    Metrics,
    /// A Service's health-check node port: any path.
    HealthCheck(u16),
}

fn answer(what: Endpoint, req: &Request<hyper::body::Incoming>, status: &Shared) -> Reply {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".into(),
        );
    }
    let status = lock(status);
    match (what, req.uri().path()) {
        (Endpoint::Healthz, "/healthz" | "/livez") => {
            let (code, body) = status.healthz();
            reply(code, "application/json", body)
        }
        (Endpoint::Metrics, "/metrics") => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            status.metrics(),
        ),
        (Endpoint::HealthCheck(port), _) => {
            let (code, body, count) = status.health_check(port);
            let mut r = reply(code, "application/json", body);
            if let Ok(v) = http::HeaderValue::from_str(&count.to_string()) {
                r.headers_mut()
                    .insert("x-load-balancing-endpoint-weight", v);
            }
            r
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "404 page not found\n".into(),
        ),
    }
}

/// Serves `what` on `listener` until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, what: Endpoint, status: Shared) {
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let status = status.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let r = answer(what, &req, &status);
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Binds `addr` inside the network namespace at `netns` (the socket keeps
/// that namespace for its whole life).
pub fn bind_in(
    netns: &std::path::Path,
    addr: SocketAddr,
) -> anyhow::Result<tokio::net::TcpListener> {
    let ns = ferry_netlink::netns::NetNs::open(netns)?;
    let listener = ns.run(|| -> std::io::Result<std::net::TcpListener> {
        let l = std::net::TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        Ok(l)
    })??;
    Ok(tokio::net::TcpListener::from_std(listener)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_check_is_200_with_local_endpoints_else_503() {
        let mut s = Status::default();
        s.health_checks.insert(
            32000,
            HealthCheck {
                namespace: "shop".into(),
                name: "web".into(),
                local_endpoints: 2,
            },
        );
        let (code, body, n) = s.health_check(32000);
        assert_eq!((code, n), (StatusCode::OK, 2));
        assert!(body.contains(r#""localEndpoints":2"#), "{body}");
        assert!(body.contains(r#""name":"web""#), "{body}");
        s.health_checks.get_mut(&32000).expect("hc").local_endpoints = 0;
        assert_eq!(s.health_check(32000).0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(s.health_check(1).0, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn stuck_updates_make_healthz_fail() {
        let now = SystemTime::now();
        let mut s = Status::default();
        assert!(s.healthy(now));
        s.pending_since = Some(now - Duration::from_secs(5));
        assert!(s.healthy(now));
        s.pending_since = Some(now - Duration::from_secs(120));
        assert!(!s.healthy(now));
        assert_eq!(s.healthz().0, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn metrics_name_full_and_partial_syncs() {
        let mut s = Status::default();
        s.full.observe(0.3);
        s.partial.observe(0.003);
        s.partial.observe(0.005);
        s.last_sync = Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        s.elements = 600;
        let m = s.metrics();
        assert!(m.contains("kubeproxy_sync_full_proxy_rules_duration_seconds_count 1"));
        assert!(m.contains("kubeproxy_sync_partial_proxy_rules_duration_seconds_count 2"));
        assert!(m.contains("kubeproxy_sync_proxy_rules_duration_seconds_count 3"));
        assert!(m.contains(
            "kubeproxy_sync_partial_proxy_rules_duration_seconds_bucket{le=\"0.004\"} 1"
        ));
        assert!(m.contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds 1700000000"));
        assert!(m.contains("ferry_proxy_nftables_objects{kind=\"elements\"} 600"));
    }
}
