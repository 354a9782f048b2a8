//! Forwarding of names outside the cluster zone, with a cache: CoreDNS's
//! `forward` and `cache` plugins as kubeadm configures them (`cache 30`,
//! `forward . /etc/resolv.conf { max_concurrent 1000 }`). The blocking UDP
//! server threads answer hits synchronously with [`Forwarder::cached`];
//! misses go to [`Forwarder::resolve`] on the tokio runtime, which asks the
//! upstreams, tracks their health and fills the cache.

mod cache;
mod upstream;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::wire::{self, Query, rcode};
use cache::{Cache, FLAG_QR, FLAG_RA, FLAG_RD, FLAG_TC, Kind, Stored, short_reply};
use upstream::Upstreams;

/// How the forwarder reaches upstreams and caches their replies; the
/// defaults are what kubeadm's Corefile gives CoreDNS.
#[derive(Clone, Debug)]
pub struct Config {
    /// Upstream servers, tried in order of health (UDP, TCP on truncation). Empty: every forwarded query gets SERVFAIL.
    pub upstreams: Vec<SocketAddr>,
    /// At most this many upstream queries in flight; more get REFUSED (CoreDNS max_concurrent). Default 1000.
    /// 0 means no limit, as in CoreDNS.
    pub max_concurrent: usize,
    /// Cap on cached TTLs in seconds (kubeadm: cache 30). Default 30. 0 turns the cache off.
    pub cache_ttl: u32,
    /// Max cache entries (CoreDNS default 9984). Default 9984.
    pub cache_capacity: usize,
    /// Per-attempt upstream read timeout; CoreDNS uses 2 s. Default 2 s.
    pub timeout: Duration,
}

impl Default for Config {
    /// kubeadm's `cache 30` and `forward . /etc/resolv.conf { max_concurrent
    /// 1000 }`, with CoreDNS's defaults for the rest; no upstreams.
    fn default() -> Self {
        Config {
            upstreams: Vec::new(),
            max_concurrent: 1000,
            cache_ttl: 30,
            cache_capacity: 9984,
            timeout: Duration::from_secs(2),
        }
    }
}

/// The caching forwarder, shared by every server thread and task as an
/// `Arc<Forwarder>`.
pub struct Forwarder {
    cache: Cache,
    cache_ttl: u32,
    upstreams: Arc<Upstreams>,
    max_concurrent: usize,
    in_flight: AtomicUsize,
    rejects: AtomicU64,
}

/// A place among the `max_concurrent`, given back when the query ends (or
/// its future is dropped).
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A header-and-question reply to `query` with `code`.
fn error_reply(query: &Query<'_>, code: u16, out: &mut Vec<u8>) {
    let flags = FLAG_QR | (query.flags & (0x7800 | FLAG_RD)) | FLAG_RA | code;
    short_reply(out, query.id, flags, query.question, query.edns);
}

/// Appends `value` as a Prometheus label value (backslash, quote and
/// newline escaped).
fn push_label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

impl Forwarder {
    /// Builds the forwarder; nothing runs until the first query (the health
    /// prober starts only when an upstream goes down).
    pub fn new(config: Config) -> Arc<Self> {
        Arc::new(Forwarder {
            cache: Cache::new(config.cache_capacity),
            cache_ttl: config.cache_ttl,
            upstreams: Upstreams::new(&config.upstreams, config.timeout),
            max_concurrent: config.max_concurrent,
            in_flight: AtomicUsize::new(0),
            rejects: AtomicU64::new(0),
        })
    }

    /// Answers `query` (the parsed client query, whose raw bytes are `packet`) from the cache into `out`
    /// (cleared first): the stored response with the client's id, the client's question bytes (so the
    /// client's letter case comes back), and TTLs reduced by the time spent in the cache. If the stored
    /// response is larger than `limit` bytes, write a header+question-only reply with TC set instead.
    /// Returns false on a miss or an expired entry. Synchronous and cheap, for the blocking UDP threads:
    /// no await, no allocation beyond `out`'s growth, one lock of one of up to 64 shards.
    pub fn cached(
        &self,
        query: &Query<'_>,
        packet: &[u8],
        limit: usize,
        out: &mut Vec<u8>,
    ) -> bool {
        debug_assert!(packet.len() >= wire::HEADER_LEN + query.question.len());
        match self.cache.key(query) {
            Some(key) => self.cache.get(&key, query, limit, out, Instant::now()),
            None => false,
        }
    }

    /// Sends the query upstream (after a cache miss) and returns the reply for the client: the client's id,
    /// cut to `limit` as in [`Forwarder::cached`]. Caches the reply. Failures (all upstreams failed or timed
    /// out, no upstreams) give SERVFAIL; being over max_concurrent gives REFUSED (not a health failure).
    /// Malformed upstream replies count as failures. A packet that is not a query gives FORMERR or NOTIMP
    /// as [`wire::parse_query`] says, or nothing (an empty reply: send none) when it is not DNS at all.
    pub async fn resolve(&self, packet: &[u8], limit: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let query = match wire::parse_query(packet) {
            Ok(q) => q,
            Err(wire::ParseError::FormErr { id, flags }) => {
                wire::error_reply(&mut out, id, flags, rcode::FORMERR);
                return out;
            }
            Err(wire::ParseError::NotImp { id, flags }) => {
                wire::error_reply(&mut out, id, flags, rcode::NOTIMP);
                return out;
            }
            Err(wire::ParseError::Drop) => return out,
        };
        if self.upstreams.is_empty() {
            error_reply(&query, rcode::SERVFAIL, &mut out);
            return out;
        }
        let Some(_slot) = self.slot() else {
            self.rejects.fetch_add(1, Ordering::Relaxed);
            error_reply(&query, rcode::REFUSED, &mut out);
            return out;
        };
        match self.upstreams.query(packet, query.question).await {
            Some(reply) => self.answer(&query, &reply, limit, &mut out),
            // Not cached: a recovered upstream must be seen at once.
            None => error_reply(&query, rcode::SERVFAIL, &mut out),
        }
        out
    }

    fn slot(&self) -> Option<Slot<'_>> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(&self.in_flight);
        (self.max_concurrent == 0 || before < self.max_concurrent).then_some(slot)
    }

    /// Turns an upstream reply into the client's, caching what CoreDNS
    /// would; other replies go back as they came, with the client's id and
    /// question bytes.
    fn answer(&self, query: &Query<'_>, reply: &[u8], limit: usize, out: &mut Vec<u8>) {
        let stored = match self.cache_ttl {
            0 => None,
            cap => Stored::from_reply(reply, cap),
        };
        if let Some(stored) = stored {
            stored.render(query, stored.ttl, limit, out);
            if let Some(key) = self.cache.key(query) {
                self.cache.insert(&key, stored, Instant::now());
            }
            return;
        }
        let flags = wire::read_u16(reply, 2).unwrap_or(FLAG_QR);
        let question_end = wire::HEADER_LEN + query.question.len();
        if reply.len() > limit || reply.len() < question_end {
            short_reply(out, query.id, flags | FLAG_TC, query.question, query.edns);
            return;
        }
        out.clear();
        out.extend_from_slice(&query.id.to_be_bytes());
        out.extend_from_slice(&reply[2..wire::HEADER_LEN]);
        out.extend_from_slice(query.question);
        out.extend_from_slice(&reply[question_end..]);
    }

    /// Appends Prometheus text-format metrics under CoreDNS's names, so
    /// dashboards and alerts written for CoreDNS keep working; `server` is
    /// the value of the `server` label (such as `dns://:53`).
    pub fn write_metrics(&self, server: &str, out: &mut String) {
        let mut labels = String::from("server=\"");
        push_label(&mut labels, server);
        labels.push('"');
        let zones = "zones=\".\"";
        let s = self.cache.stats();
        let by_kind = [
            (
                "coredns_cache_entries",
                "gauge",
                "The number of elements in the cache.",
                s.entries,
            ),
            (
                "coredns_cache_hits_total",
                "counter",
                "The count of cache hits.",
                s.hits,
            ),
            (
                "coredns_cache_evictions_total",
                "counter",
                "The count of cache evictions.",
                s.evictions,
            ),
        ];
        for (name, kind, help, values) in by_kind {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for k in Kind::ALL {
                let v = values[k as usize];
                let _ = writeln!(out, "{name}{{{labels},type=\"{}\",{zones}}} {v}", k.label());
            }
        }
        let requests = s.hits[0] + s.hits[1] + s.misses;
        let single = [
            (
                "coredns_cache_misses_total",
                "The count of cache misses.",
                s.misses,
            ),
            (
                "coredns_cache_requests_total",
                "The count of cache requests.",
                requests,
            ),
        ];
        for (name, help, v) in single {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{{labels},{zones}}} {v}"
            );
        }
        self.upstreams.write_metrics(out);
        let name = "coredns_forward_max_concurrent_rejects_total";
        let _ = writeln!(
            out,
            "# HELP {name} The count of queries rejected because the number of concurrent queries were at maximum.\n# TYPE {name} counter\n{name} {}",
            self.rejects.load(Ordering::Relaxed)
        );
    }
}
