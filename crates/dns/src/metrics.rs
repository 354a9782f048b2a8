//! Counters of the query path, under CoreDNS's metric names so existing
//! dashboards keep working. Each worker thread owns one shard and is the
//! only one to lock it (uncontended); a scrape sums the shards.

use std::fmt::Write as _;
use std::sync::Mutex;

use crate::wire::rcode;

/// Query types CoreDNS names in `type` labels, then "other".
const TYPES: [&str; 19] = [
    "A", "AAAA", "MX", "SOA", "CNAME", "PTR", "TXT", "NS", "SRV", "DS", "DNSKEY", "RRSIG", "NSEC",
    "NSEC3", "HTTPS", "IXFR", "AXFR", "ANY", "other",
];
const RCODES: [u16; 7] = [
    rcode::NOERROR,
    rcode::FORMERR,
    rcode::SERVFAIL,
    rcode::NXDOMAIN,
    rcode::NOTIMP,
    rcode::REFUSED,
    rcode::BADVERS,
];
/// Who wrote a response (`plugin` label): "" for the server itself
/// (FORMERR, NOTIMP), then CoreDNS's plugin names.
pub const PLUGINS: [&str; 4] = ["", "kubernetes", "cache", "forward"];
/// `plugin.TimeBuckets`: 0.25 ms doubling to about 8 s.
const BUCKETS: usize = 16;

fn type_index(qtype: u16) -> usize {
    let name = crate::wire::rtype::metric_name(qtype);
    TYPES
        .iter()
        .position(|t| *t == name)
        .unwrap_or(TYPES.len() - 1)
}

fn bucket_bound(i: usize) -> f64 {
    0.00025 * f64::from(1u32 << i)
}

/// UDP or TCP (`proto` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

#[derive(Clone, Debug)]
struct Counters {
    /// [proto][family][type]
    requests: [[[u64; TYPES.len()]; 2]; 2],
    /// [rcode][plugin]; the last rcode row is "other".
    responses: [[u64; PLUGINS.len()]; RCODES.len() + 1],
    do_requests: u64,
    /// [type][bucket], cumulative at scrape time only.
    duration: [[u64; BUCKETS]; TYPES.len()],
    duration_sum: [f64; TYPES.len()],
    duration_count: [u64; TYPES.len()],
    request_bytes: [u64; 2],
    response_bytes: [u64; 2],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            requests: [[[0; TYPES.len()]; 2]; 2],
            responses: [[0; PLUGINS.len()]; RCODES.len() + 1],
            do_requests: 0,
            duration: [[0; BUCKETS]; TYPES.len()],
            duration_sum: [0.0; TYPES.len()],
            duration_count: [0; TYPES.len()],
            request_bytes: [0; 2],
            response_bytes: [0; 2],
        }
    }
}

/// One answered (or dropped) query, as the metrics see it.
#[derive(Clone, Copy, Debug)]
pub struct Observation {
    pub proto: Proto,
    pub ipv6: bool,
    pub qtype: u16,
    pub dnssec_ok: bool,
    /// `None`: no response was sent.
    pub rcode: Option<u16>,
    /// Index into [`PLUGINS`].
    pub plugin: usize,
    pub seconds: f64,
    pub request_bytes: usize,
    pub response_bytes: usize,
}

pub struct Metrics {
    shards: Box<[Mutex<Counters>]>,
}

impl Metrics {
    /// `shards`: one per worker thread plus one for the async tasks.
    pub fn new(shards: usize) -> Metrics {
        Metrics {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(Counters::default()))
                .collect(),
        }
    }

    pub fn observe(&self, shard: usize, o: &Observation) {
        let Ok(mut c) = self.shards[shard % self.shards.len()].lock() else {
            return;
        };
        let t = type_index(o.qtype);
        let p = o.proto as usize;
        c.requests[p][usize::from(o.ipv6)][t] += 1;
        if o.dnssec_ok {
            c.do_requests += 1;
        }
        c.request_bytes[p] += o.request_bytes as u64;
        if let Some(code) = o.rcode {
            let r = RCODES
                .iter()
                .position(|x| *x == code)
                .unwrap_or(RCODES.len());
            c.responses[r][o.plugin.min(PLUGINS.len() - 1)] += 1;
            c.response_bytes[p] += o.response_bytes as u64;
        }
        let b = (0..BUCKETS)
            .find(|i| o.seconds <= bucket_bound(*i))
            .unwrap_or(BUCKETS);
        if b < BUCKETS {
            c.duration[t][b] += 1;
        }
        c.duration_sum[t] += o.seconds;
        c.duration_count[t] += 1;
    }

    fn total(&self) -> Counters {
        let mut sum = Counters::default();
        for shard in self.shards.iter() {
            let Ok(c) = shard.lock() else { continue };
            for p in 0..2 {
                for f in 0..2 {
                    for t in 0..TYPES.len() {
                        sum.requests[p][f][t] += c.requests[p][f][t];
                    }
                }
                sum.request_bytes[p] += c.request_bytes[p];
                sum.response_bytes[p] += c.response_bytes[p];
            }
            for r in 0..=RCODES.len() {
                for p in 0..PLUGINS.len() {
                    sum.responses[r][p] += c.responses[r][p];
                }
            }
            sum.do_requests += c.do_requests;
            for t in 0..TYPES.len() {
                for b in 0..BUCKETS {
                    sum.duration[t][b] += c.duration[t][b];
                }
                sum.duration_sum[t] += c.duration_sum[t];
                sum.duration_count[t] += c.duration_count[t];
            }
        }
        sum
    }

    /// The Prometheus text of the query counters; `server` as CoreDNS
    /// writes it (`dns://:53`), zone "." for everything.
    pub fn write(&self, server: &str, out: &mut String) {
        let c = self.total();
        let labels = format!("server=\"{server}\",zone=\".\",view=\"\"");
        let _ = writeln!(
            out,
            "# HELP coredns_dns_requests_total Counter of DNS requests made per zone, protocol and family.\n# TYPE coredns_dns_requests_total counter"
        );
        for (p, proto) in ["udp", "tcp"].iter().enumerate() {
            for (f, family) in ["1", "2"].iter().enumerate() {
                for (t, name) in TYPES.iter().enumerate() {
                    let n = c.requests[p][f][t];
                    if n > 0 {
                        let _ = writeln!(
                            out,
                            "coredns_dns_requests_total{{{labels},proto=\"{proto}\",family=\"{family}\",type=\"{name}\"}} {n}"
                        );
                    }
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP coredns_dns_responses_total Counter of response status codes.\n# TYPE coredns_dns_responses_total counter"
        );
        for r in 0..=RCODES.len() {
            let name = RCODES.get(r).map_or("other", |code| rcode::name(*code));
            for (p, plugin) in PLUGINS.iter().enumerate() {
                let n = c.responses[r][p];
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "coredns_dns_responses_total{{{labels},rcode=\"{name}\",plugin=\"{plugin}\"}} {n}"
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP coredns_dns_do_requests_total Counter of DNS requests with DO bit set per zone.\n# TYPE coredns_dns_do_requests_total counter\ncoredns_dns_do_requests_total{{{labels}}} {}",
            c.do_requests
        );
        let _ = writeln!(
            out,
            "# HELP coredns_dns_request_duration_seconds Histogram of the time (in seconds) each request took per zone.\n# TYPE coredns_dns_request_duration_seconds histogram"
        );
        for (t, name) in TYPES.iter().enumerate() {
            if c.duration_count[t] == 0 {
                continue;
            }
            let mut cumulative = 0;
            for b in 0..BUCKETS {
                cumulative += c.duration[t][b];
                let _ = writeln!(
                    out,
                    "coredns_dns_request_duration_seconds_bucket{{{labels},type=\"{name}\",le=\"{}\"}} {cumulative}",
                    bucket_bound(b)
                );
            }
            let _ = writeln!(
                out,
                "coredns_dns_request_duration_seconds_bucket{{{labels},type=\"{name}\",le=\"+Inf\"}} {}\ncoredns_dns_request_duration_seconds_sum{{{labels},type=\"{name}\"}} {}\ncoredns_dns_request_duration_seconds_count{{{labels},type=\"{name}\"}} {}",
                c.duration_count[t], c.duration_sum[t], c.duration_count[t]
            );
        }
        for (what, bytes) in [("request", c.request_bytes), ("response", c.response_bytes)] {
            // A summary-like pair instead of CoreDNS's size histograms: the
            // total bytes per protocol.
            let _ = writeln!(
                out,
                "# HELP ferry_dns_{what}_bytes_total Bytes of DNS {what}s per protocol.\n# TYPE ferry_dns_{what}_bytes_total counter"
            );
            for (p, proto) in ["udp", "tcp"].iter().enumerate() {
                let _ = writeln!(
                    out,
                    "ferry_dns_{what}_bytes_total{{{labels},proto=\"{proto}\"}} {}",
                    bytes[p]
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_summed_under_coredns_names() {
        let m = Metrics::new(3);
        let o = Observation {
            proto: Proto::Udp,
            ipv6: false,
            qtype: crate::wire::rtype::A,
            dnssec_ok: false,
            rcode: Some(rcode::NOERROR),
            plugin: 1,
            seconds: 0.0001,
            request_bytes: 40,
            response_bytes: 56,
        };
        m.observe(0, &o);
        m.observe(2, &o);
        m.observe(
            1,
            &Observation {
                rcode: Some(rcode::NXDOMAIN),
                qtype: 99,
                ..o
            },
        );
        let mut out = String::new();
        m.write("dns://:53", &mut out);
        assert!(out.contains(
            "coredns_dns_requests_total{server=\"dns://:53\",zone=\".\",view=\"\",proto=\"udp\",family=\"1\",type=\"A\"} 2"
        ));
        assert!(out.contains("type=\"other\"} 1"));
        assert!(out.contains("rcode=\"NXDOMAIN\",plugin=\"kubernetes\"} 1"));
        assert!(out.contains(
            "coredns_dns_request_duration_seconds_bucket{server=\"dns://:53\",zone=\".\",view=\"\",type=\"A\",le=\"0.00025\"} 2"
        ));
    }
}
