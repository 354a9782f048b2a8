//! The query path, shared by the UDP workers and the TCP server: parse,
//! answer from the index, else from the forwarder's cache, else hand the
//! query to the forwarder. Nothing here allocates on a cluster answer or a
//! cache hit: the response goes into the caller's reused buffer.

pub mod tcp;
pub mod udp;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::forward::Forwarder;
use crate::metrics::{Metrics, Observation, Proto};
use crate::model::{self, Answered, Index};
use crate::wire::{self, ParseError, rcode};

/// Plugin label indexes (see [`crate::metrics::PLUGINS`]).
const BY_SERVER: usize = 0;
const BY_KUBERNETES: usize = 1;
const BY_CACHE: usize = 2;
pub const BY_FORWARD: usize = 3;

/// What the query path shares: the current index, the forwarder, metrics.
pub struct Shared {
    pub index: ArcSwap<Index>,
    pub forwarder: Arc<Forwarder>,
    pub metrics: Metrics,
    /// Set while shutting down (lame duck): /ready turns 503.
    pub stopping: AtomicBool,
    /// `server` label of the metrics (`dns://:53`).
    pub server_label: String,
    pub builds: std::sync::Mutex<crate::agent::Builds>,
}

/// What to do with a packet after [`Shared::handle`].
#[derive(Debug, PartialEq, Eq)]
pub enum Handled {
    /// The response is in the output buffer.
    Reply,
    /// Ask the forwarder; the response limit for this client is given.
    Forward { limit: usize },
    /// No response (not a query).
    Drop,
}

impl Shared {
    pub fn synced(&self) -> bool {
        self.index.load().synced && !self.stopping.load(Ordering::Relaxed)
    }

    /// Handles one packet from `proto`; `rotation` varies the order of
    /// multi-address answers; metrics go to `shard` (forwarded queries are
    /// counted by the caller with [`Shared::observe_forwarded`]).
    pub fn handle(
        &self,
        packet: &[u8],
        proto: Proto,
        ipv6: bool,
        rotation: usize,
        shard: usize,
        out: &mut Vec<u8>,
    ) -> Handled {
        let started = Instant::now();
        let query = match wire::parse_query(packet) {
            Ok(q) => q,
            Err(ParseError::Drop) => return Handled::Drop,
            Err(ParseError::FormErr { id, flags }) => {
                return self.error(
                    out,
                    id,
                    flags,
                    rcode::FORMERR,
                    proto,
                    ipv6,
                    shard,
                    started,
                    packet.len(),
                );
            }
            Err(ParseError::NotImp { id, flags }) => {
                return self.error(
                    out,
                    id,
                    flags,
                    rcode::NOTIMP,
                    proto,
                    ipv6,
                    shard,
                    started,
                    packet.len(),
                );
            }
        };
        let limit = match proto {
            Proto::Udp => query.udp_limit(),
            Proto::Tcp => usize::from(u16::MAX),
        };
        let dnssec_ok = query.edns.is_some_and(|e| e.dnssec_ok);
        let index = self.index.load();
        match model::answer(&index, &query, limit, rotation, out) {
            Answered::Local { rcode } => {
                self.observe(
                    shard,
                    proto,
                    ipv6,
                    query.qtype,
                    dnssec_ok,
                    Some(rcode),
                    BY_KUBERNETES,
                    started,
                    packet.len(),
                    out.len(),
                );
                Handled::Reply
            }
            Answered::Forward => {
                if self.forwarder.cached(&query, packet, limit, out) {
                    let code = wire::response_rcode(out).unwrap_or(rcode::SERVFAIL);
                    self.observe(
                        shard,
                        proto,
                        ipv6,
                        query.qtype,
                        dnssec_ok,
                        Some(code),
                        BY_CACHE,
                        started,
                        packet.len(),
                        out.len(),
                    );
                    Handled::Reply
                } else {
                    Handled::Forward { limit }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn error(
        &self,
        out: &mut Vec<u8>,
        id: u16,
        flags: u16,
        code: u16,
        proto: Proto,
        ipv6: bool,
        shard: usize,
        started: Instant,
        request_bytes: usize,
    ) -> Handled {
        wire::error_reply(out, id, flags, code);
        self.observe(
            shard,
            proto,
            ipv6,
            0,
            false,
            Some(code),
            BY_SERVER,
            started,
            request_bytes,
            out.len(),
        );
        Handled::Reply
    }

    /// Counts a query answered by the forwarder.
    pub fn observe_forwarded(
        &self,
        shard: usize,
        proto: Proto,
        ipv6: bool,
        packet: &[u8],
        reply: &[u8],
        started: Instant,
    ) {
        let (qtype, dnssec_ok) = wire::parse_query(packet)
            .map(|q| (q.qtype, q.edns.is_some_and(|e| e.dnssec_ok)))
            .unwrap_or((0, false));
        let code = wire::response_rcode(reply);
        self.observe(
            shard,
            proto,
            ipv6,
            qtype,
            dnssec_ok,
            code,
            BY_FORWARD,
            started,
            packet.len(),
            reply.len(),
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn observe(
        &self,
        shard: usize,
        proto: Proto,
        ipv6: bool,
        qtype: u16,
        dnssec_ok: bool,
        rcode: Option<u16>,
        plugin: usize,
        started: Instant,
        request_bytes: usize,
        response_bytes: usize,
    ) {
        self.metrics.observe(
            shard,
            &Observation {
                proto,
                ipv6,
                qtype,
                dnssec_ok,
                rcode,
                plugin,
                seconds: started.elapsed().as_secs_f64(),
                request_bytes,
                response_bytes,
            },
        );
    }
}
