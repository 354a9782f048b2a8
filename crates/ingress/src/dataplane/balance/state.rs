//! Per-upstream balancer state: a round-robin cursor and one counter set
//! per endpoint (in flight, peak EWMA). It lives outside the immutable
//! [`Upstream`] so it survives router swaps; the endpoint table is rebuilt
//! only when the endpoint list really changes, and a rebuild carries the
//! counters of endpoints that stay.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::RequestInfo;
use super::expr;
use crate::model::route::{Balance, Upstream};

/// ingress-nginx's `DECAY_TIME` (10 s), in nanoseconds.
const DECAY_NS: f64 = 10e9;
/// ingress-nginx's `PICK_SET_SIZE`: power of two choices.
const PICK_SET_SIZE: usize = 2;
/// Cost of each request in flight on an endpoint that never answered yet,
/// so a fresh endpoint is tried but not flooded before its first reply.
const UNMEASURED_PENALTY_NS: f64 = 1e9;

/// Nanoseconds since a process-wide origin.
fn now_ns() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = ORIGIN.get_or_init(Instant::now);
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A stable, opaque id of an endpoint within an upstream: the affinity
/// cookie value and the endpoint's point for consistent hashing. Derived
/// from the names only, so every controller replica agrees on it.
pub(super) fn endpoint_id(upstream: &str, addr: SocketAddr) -> u64 {
    let input = format!("{upstream}|{addr}");
    let digest = ring::digest::digest(&ring::digest::SHA256, input.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first)
}

/// Counters of one endpoint.
#[derive(Debug)]
pub(super) struct EndpointStats {
    pub(super) addr: SocketAddr,
    pub(super) id: u64,
    in_flight: AtomicUsize,
    /// Peak EWMA of latency, f64 nanoseconds as bits.
    ewma: AtomicU64,
    /// When `ewma` was last updated ([`now_ns`]).
    touched: AtomicU64,
}

impl EndpointStats {
    fn new(upstream: &str, addr: SocketAddr) -> EndpointStats {
        EndpointStats {
            addr,
            id: endpoint_id(upstream, addr),
            in_flight: AtomicUsize::new(0),
            ewma: AtomicU64::new(0f64.to_bits()),
            touched: AtomicU64::new(0),
        }
    }

    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(super) fn start(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn finish(&self) {
        // Never below zero, whatever the interleaving.
        let _ = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Folds one response time in: a slower sample replaces the average
    /// (peak sensitivity), a faster one is blended with weight by age.
    pub(super) fn observe(&self, rtt: Duration) {
        let rtt = rtt.as_nanos() as f64;
        let now = now_ns();
        let last = self.touched.swap(now, Ordering::Relaxed);
        let weight = (-(now.saturating_sub(last) as f64) / DECAY_NS).exp();
        let _ = self
            .ewma
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                let old = f64::from_bits(bits);
                let new = if rtt > old {
                    rtt
                } else {
                    old * weight + rtt * (1.0 - weight)
                };
                Some(new.to_bits())
            });
    }

    /// Expected cost of one more request: the latency average decayed to
    /// now (an idle endpoint slowly looks fast again) times the requests
    /// it would be queued behind.
    fn cost(&self, now: u64) -> f64 {
        let ewma = f64::from_bits(self.ewma.load(Ordering::Relaxed));
        let pending = self.in_flight() as f64;
        if ewma == 0.0 {
            return UNMEASURED_PENALTY_NS * pending;
        }
        let age = now.saturating_sub(self.touched.load(Ordering::Relaxed)) as f64;
        ewma * (-age / DECAY_NS).exp() * (pending + 1.0)
    }
}

/// The counters for one version of an upstream's endpoint list, in the
/// list's order.
#[derive(Debug)]
pub(super) struct Table {
    /// The `Upstream` this was built for: a pointer comparison makes the
    /// common case (same router) free. The `Weak` pins the allocation, so
    /// the address cannot be reused by another `Upstream`.
    source: Weak<Upstream>,
    pub(super) eps: Vec<Arc<EndpointStats>>,
}

impl Table {
    fn same_endpoints(&self, endpoints: &[SocketAddr]) -> bool {
        self.eps.len() == endpoints.len()
            && self.eps.iter().zip(endpoints).all(|(e, a)| e.addr == *a)
    }

    /// The index of the endpoint whose id is `id`.
    pub(super) fn find(&self, id: u64) -> Option<usize> {
        self.eps.iter().position(|e| e.id == id)
    }
}

/// Everything kept for one upstream name.
#[derive(Debug)]
pub(super) struct UpstreamState {
    name: String,
    cursor: AtomicUsize,
    table: ArcSwap<Table>,
}

impl UpstreamState {
    pub(super) fn new(name: &str) -> UpstreamState {
        UpstreamState {
            name: name.to_string(),
            cursor: AtomicUsize::new(0),
            table: ArcSwap::from_pointee(Table {
                source: Weak::new(),
                eps: Vec::new(),
            }),
        }
    }

    /// The counters for `up`'s current endpoint list, rebuilt (keeping
    /// the counters of endpoints that stay) if the list changed.
    pub(super) fn table(&self, up: &Arc<Upstream>) -> Arc<Table> {
        let mut new = None;
        for _ in 0..4 {
            let cur = self.table.load_full();
            if std::ptr::eq(cur.source.as_ptr(), Arc::as_ptr(up)) {
                return cur;
            }
            let built = Arc::new(self.rebuild(&cur, up));
            let prev = self.table.compare_and_swap(&cur, Arc::clone(&built));
            if Arc::ptr_eq(&prev, &cur) {
                return built;
            }
            new = Some(built);
        }
        // Two routers with different lists for this name are serving at
        // once (during a swap): use ours without fighting over the slot.
        new.unwrap_or_else(|| Arc::new(self.rebuild(&self.table.load(), up)))
    }

    fn rebuild(&self, cur: &Table, up: &Arc<Upstream>) -> Table {
        let eps = if cur.same_endpoints(&up.endpoints) {
            cur.eps.clone()
        } else {
            let old: HashMap<SocketAddr, &Arc<EndpointStats>> =
                cur.eps.iter().map(|e| (e.addr, e)).collect();
            up.endpoints
                .iter()
                .map(|a| match old.get(a) {
                    Some(e) => Arc::clone(e),
                    None => Arc::new(EndpointStats::new(&self.name, *a)),
                })
                .collect()
        };
        Table {
            source: Arc::downgrade(up),
            eps,
        }
    }

    /// An endpoint index by `balance`, skipping `exclude`; `None` when
    /// every endpoint is excluded or there is none.
    pub(super) fn pick(
        &self,
        table: &Table,
        balance: &Balance,
        req: &RequestInfo<'_>,
        exclude: &[SocketAddr],
    ) -> Option<usize> {
        let eps = &table.eps;
        let n = eps.len();
        let usable = |i: usize| !exclude.contains(&eps[i].addr);
        match balance {
            Balance::RoundRobin => {
                let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|k| (start.wrapping_add(k)) % n)
                    .find(|&i| usable(i))
            }
            Balance::LeastConn => {
                // Scanning from a moving start spreads ties round robin.
                let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|k| (start.wrapping_add(k)) % n)
                    .filter(|&i| usable(i))
                    .min_by_key(|&i| eps[i].in_flight())
            }
            Balance::Ewma if exclude.is_empty() => pick_ewma(eps, n, |k| k),
            Balance::Ewma => {
                // A retry: rare enough to afford the list.
                let usable: Vec<usize> = (0..n).filter(|&i| usable(i)).collect();
                pick_ewma(eps, usable.len(), |k| usable[k])
            }
            Balance::Hash(e) => {
                let key = expr::hash_key(e, req);
                // Rendezvous hashing: removing an endpoint moves only its
                // own keys, and an excluded one falls to the runner-up.
                (0..n)
                    .filter(|&i| usable(i))
                    .max_by_key(|&i| expr::fmix64(key ^ eps[i].id))
            }
        }
    }
}

/// Power of two random choices by [`EndpointStats::cost`] among `n`
/// candidates; `at(k)` is the endpoint index of candidate `k`.
fn pick_ewma(eps: &[Arc<EndpointStats>], n: usize, at: impl Fn(usize) -> usize) -> Option<usize> {
    let now = now_ns();
    let better = |a: usize, b: usize| {
        if eps[b].cost(now) < eps[a].cost(now) {
            b
        } else {
            a
        }
    };
    match n {
        0 => None,
        n if n <= PICK_SET_SIZE => (0..n).map(at).reduce(better),
        n => {
            let a = rand::random_range(0..n);
            let mut b = rand::random_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            Some(better(at(a), at(b)))
        }
    }
}
