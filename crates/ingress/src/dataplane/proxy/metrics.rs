//! Request metrics under ingress-nginx's names (brief §10) so existing
//! dashboards keep working, plus Ferry's upstream error counter.
//!
//! Labels are bounded: `path` is the Ingress rule's path (never the
//! request's), `host` the rule's host, `method` a standard method or
//! `OTHER`, `status` a number. Series live in a few mutex-protected shards
//! keyed by a hash of the borrowed labels, so recording a request
//! allocates nothing once its series exists. The text is written by hand
//! as in crates/dns/src/metrics.rs.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

/// `--time-buckets`.
const TIME_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// `--size-buckets`.
const SIZE_BUCKETS: [f64; 7] = [10.0, 100.0, 1000.0, 10000.0, 100000.0, 1e6, 1e7];
const SHARDS: usize = 8;

/// One finished request, as the metrics see it.
pub(super) struct Sample<'a> {
    pub namespace: &'a str,
    pub ingress: &'a str,
    pub service: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub canary: &'a str,
    pub method: &'static str,
    pub status: u16,
    /// First byte in to last byte out.
    pub duration: Duration,
    /// Response body bytes sent.
    pub bytes: u64,
    /// Upstream time to response headers, and to the end of its body.
    pub upstream: Option<(Duration, Duration)>,
}

/// Why an upstream attempt failed (`kind` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum ErrorKind {
    Connect,
    Timeout,
    Reset,
    NoEndpoints,
}

impl ErrorKind {
    fn label(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::NoEndpoints => "no_endpoints",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Labels {
    ingress: String,
    namespace: String,
    service: String,
    status: u16,
    method: &'static str,
    host: String,
    path: String,
    canary: String,
}

impl Labels {
    fn is(&self, s: &Sample<'_>) -> bool {
        self.status == s.status
            && self.method == s.method
            && self.ingress == s.ingress
            && self.namespace == s.namespace
            && self.service == s.service
            && self.host == s.host
            && self.path == s.path
            && self.canary == s.canary
    }
}

#[derive(Clone, Debug)]
struct Hist<const N: usize> {
    counts: [u64; N],
    sum: f64,
    count: u64,
}

impl<const N: usize> Default for Hist<N> {
    fn default() -> Self {
        Hist {
            counts: [0; N],
            sum: 0.0,
            count: 0,
        }
    }
}

impl<const N: usize> Hist<N> {
    fn observe(&mut self, bounds: &[f64; N], v: f64) {
        if let Some(i) = bounds.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }
}

#[derive(Clone, Debug)]
struct Series {
    labels: Labels,
    requests: u64,
    duration: Hist<11>,
    size: Hist<7>,
    header: Hist<11>,
    response: Hist<11>,
}

/// Reads one histogram of a series: (bucket counts, sum, count).
type HistOf = fn(&Series) -> (&[u64], f64, u64);

#[derive(Default)]
pub(super) struct Metrics {
    shards: [Mutex<HashMap<u64, Vec<Series>>>; SHARDS],
    errors: Mutex<HashMap<(String, String, String, ErrorKind), u64>>,
}

fn key(s: &Sample<'_>) -> u64 {
    let mut h = DefaultHasher::new();
    (s.namespace, s.ingress, s.service, s.host, s.path, s.canary).hash(&mut h);
    (s.method, s.status).hash(&mut h);
    h.finish()
}

impl Metrics {
    pub(super) fn record(&self, s: &Sample<'_>) {
        let k = key(s);
        let Ok(mut shard) = self.shards[(k as usize) % SHARDS].lock() else {
            return;
        };
        let list = shard.entry(k).or_default();
        let at = match list.iter().position(|series| series.labels.is(s)) {
            Some(i) => i,
            None => {
                list.push(Series {
                    labels: Labels {
                        ingress: s.ingress.to_string(),
                        namespace: s.namespace.to_string(),
                        service: s.service.to_string(),
                        status: s.status,
                        method: s.method,
                        host: s.host.to_string(),
                        path: s.path.to_string(),
                        canary: s.canary.to_string(),
                    },
                    requests: 0,
                    duration: Hist::default(),
                    size: Hist::default(),
                    header: Hist::default(),
                    response: Hist::default(),
                });
                list.len() - 1
            }
        };
        let series = &mut list[at];
        series.requests += 1;
        series
            .duration
            .observe(&TIME_BUCKETS, s.duration.as_secs_f64());
        series.size.observe(&SIZE_BUCKETS, s.bytes as f64);
        if let Some((header, total)) = s.upstream {
            series.header.observe(&TIME_BUCKETS, header.as_secs_f64());
            series.response.observe(&TIME_BUCKETS, total.as_secs_f64());
        }
    }

    pub(super) fn upstream_error(
        &self,
        namespace: &str,
        ingress: &str,
        service: &str,
        kind: ErrorKind,
    ) {
        if let Ok(mut errors) = self.errors.lock() {
            *errors
                .entry((namespace.into(), ingress.into(), service.into(), kind))
                .or_default() += 1;
        }
    }

    pub(super) fn write(&self, out: &mut String) {
        let mut all: Vec<Series> = Vec::new();
        for shard in &self.shards {
            if let Ok(shard) = shard.lock() {
                all.extend(shard.values().flatten().cloned());
            }
        }
        all.sort_by(|a, b| a.labels.cmp(&b.labels));
        family(
            out,
            "nginx_ingress_controller_requests",
            "counter",
            "The total number of client requests",
        );
        for s in &all {
            let _ = writeln!(
                out,
                "nginx_ingress_controller_requests{{{}}} {}",
                labels(&s.labels),
                s.requests
            );
        }
        let hists: [(&str, &str, HistOf, &[f64]); 4] = [
            (
                "nginx_ingress_controller_request_duration_seconds",
                "The request processing time in seconds (first byte in to last byte out)",
                |s| (&s.duration.counts, s.duration.sum, s.duration.count),
                &TIME_BUCKETS,
            ),
            (
                "nginx_ingress_controller_response_size",
                "The response length (body bytes sent)",
                |s| (&s.size.counts, s.size.sum, s.size.count),
                &SIZE_BUCKETS,
            ),
            (
                "nginx_ingress_controller_header_duration_seconds",
                "The time spent receiving the first header from the upstream server",
                |s| (&s.header.counts, s.header.sum, s.header.count),
                &TIME_BUCKETS,
            ),
            (
                "nginx_ingress_controller_response_duration_seconds",
                "The time spent receiving the response from the upstream server",
                |s| (&s.response.counts, s.response.sum, s.response.count),
                &TIME_BUCKETS,
            ),
        ];
        for (name, help, get, bounds) in hists {
            family(out, name, "histogram", help);
            for s in &all {
                let (counts, sum, count) = get(s);
                if count == 0 {
                    continue;
                }
                let l = labels(&s.labels);
                let mut cumulative = 0;
                for (bound, n) in bounds.iter().zip(counts) {
                    cumulative += n;
                    let _ = writeln!(out, "{name}_bucket{{{l},le=\"{bound}\"}} {cumulative}");
                }
                let _ = writeln!(out, "{name}_bucket{{{l},le=\"+Inf\"}} {count}");
                let _ = writeln!(out, "{name}_sum{{{l}}} {sum}");
                let _ = writeln!(out, "{name}_count{{{l}}} {count}");
            }
        }
        family(
            out,
            "ferry_ingress_upstream_errors_total",
            "counter",
            "Upstream attempts that failed: connect, timeout (no response headers in time), reset, no_endpoints",
        );
        let mut errors: Vec<_> = match self.errors.lock() {
            Ok(e) => e.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            Err(_) => Vec::new(),
        };
        errors.sort();
        for ((namespace, ingress, service, kind), n) in errors {
            let _ = writeln!(
                out,
                "ferry_ingress_upstream_errors_total{{namespace=\"{}\",ingress=\"{}\",service=\"{}\",kind=\"{}\"}} {n}",
                escape(&namespace),
                escape(&ingress),
                escape(&service),
                kind.label()
            );
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn labels(l: &Labels) -> String {
    format!(
        "ingress=\"{}\",namespace=\"{}\",service=\"{}\",status=\"{}\",method=\"{}\",host=\"{}\",path=\"{}\",canary=\"{}\"",
        escape(&l.ingress),
        escape(&l.namespace),
        escape(&l.service),
        l.status,
        l.method,
        escape(&l.host),
        escape(&l.path),
        escape(&l.canary),
    )
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_writes_bounded_series() {
        let m = Metrics::default();
        let sample = |status, bytes| Sample {
            namespace: "default",
            ingress: "web",
            service: "s1",
            host: "a.test",
            path: "/",
            canary: "",
            method: "GET",
            status,
            duration: Duration::from_millis(20),
            bytes,
            upstream: Some((Duration::from_millis(3), Duration::from_millis(10))),
        };
        m.record(&sample(200, 50));
        m.record(&sample(200, 5000));
        m.record(&sample(404, 0));
        m.upstream_error("default", "web", "s1", ErrorKind::Connect);
        let mut out = String::new();
        m.write(&mut out);
        let l = "ingress=\"web\",namespace=\"default\",service=\"s1\",status=\"200\",method=\"GET\",host=\"a.test\",path=\"/\",canary=\"\"";
        assert!(
            out.contains(&format!("nginx_ingress_controller_requests{{{l}}} 2")),
            "{out}"
        );
        assert!(out.contains(&format!(
            "nginx_ingress_controller_request_duration_seconds_bucket{{{l},le=\"0.025\"}} 2"
        )));
        assert!(out.contains(&format!(
            "nginx_ingress_controller_response_size_bucket{{{l},le=\"100\"}} 1"
        )));
        assert!(out.contains(
            "ferry_ingress_upstream_errors_total{namespace=\"default\",ingress=\"web\",service=\"s1\",kind=\"connect\"} 1"
        ));
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
    }
}
