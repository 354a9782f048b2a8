//! Endpoint selection, per request. The proxy serves well over 100k
//! requests per second on one core, so nothing here takes a lock on the
//! request path: the per-upstream state map is an `ArcSwap` copied only
//! when an upstream appears or disappears, and counters are atomics.
//! State is keyed by upstream name and endpoint address, not by the
//! immutable `Upstream` values, so round robin, in-flight counts and
//! latency averages carry over when the router is swapped.
//!
//! Order of decisions, as ingress-nginx: canary or primary (affinity to
//! either, then `canary-by-header`, `canary-by-cookie`, `canary-weight`),
//! then within the upstream the affinity cookie, else the upstream's
//! policy (`upstream-hash-by` or `load-balance`).

mod affinity;
mod expr;
mod state;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::model::route::{Canary, Location, Upstream};
use state::{EndpointStats, UpstreamState};

/// What the chooser needs to know about the request.
#[derive(Clone, Copy, Debug)]
pub struct RequestInfo<'a> {
    pub client: IpAddr,
    pub host: &'a str,
    /// Path and query as received (`$request_uri`).
    pub uri: &'a str,
    /// Path only (`$uri`).
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    /// Whether the request came over HTTPS (the affinity cookie gets
    /// `Secure`).
    pub https: bool,
}

/// The chosen endpoint.
#[derive(Debug)]
pub struct Choice {
    /// The primary upstream or the canary's.
    pub upstream: Arc<Upstream>,
    /// Whether `upstream` is the canary's (the `canary` metric label).
    pub canary: bool,
    pub endpoint: SocketAddr,
    /// The affinity cookie to add to the response (new or re-chosen
    /// endpoint).
    pub set_cookie: Option<http::HeaderValue>,
    /// Dropping it ends the request for least_conn/ewma accounting.
    pub guard: InFlight,
}

/// One request in flight on an endpoint.
pub struct InFlight {
    stats: Arc<EndpointStats>,
}

impl InFlight {
    fn new(stats: Arc<EndpointStats>) -> InFlight {
        stats.start();
        InFlight { stats }
    }

    /// Records the endpoint's response time (for ewma).
    pub fn observe_latency(&self, d: Duration) {
        self.stats.observe(d);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.stats.finish();
    }
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("endpoint", &self.stats.addr)
            .finish()
    }
}

/// Balancer state for every upstream, keyed by `Upstream::name`. It
/// outlives router swaps; [`Balancers::retain`] forgets upstreams that
/// are gone.
#[derive(Default)]
pub struct Balancers {
    states: ArcSwap<HashMap<String, Arc<UpstreamState>>>,
}

impl std::fmt::Debug for Balancers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancers")
            .field("upstreams", &self.states.load().len())
            .finish()
    }
}

impl Balancers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Picks the upstream (primary or canary) and an endpoint for a
    /// request that matched `loc`. `exclude` holds endpoints that already
    /// failed to connect for this request. `None` when the chosen
    /// upstream has no (other) endpoint: the proxy answers 503.
    pub fn choose(
        &self,
        loc: &Location,
        req: &RequestInfo<'_>,
        exclude: &[SocketAddr],
    ) -> Option<Choice> {
        let sticky = loc
            .affinity
            .as_ref()
            .and_then(|a| expr::cookie(req.headers, &a.name))
            .and_then(affinity::parse_token);
        let (upstream, canary) = match &loc.canary {
            Some(c) if self.to_canary(loc, c, req, sticky) => (&c.upstream, true),
            _ => (&loc.upstream, false),
        };
        if upstream.endpoints.is_empty() {
            return None;
        }
        let state = self.state(&upstream.name);
        let table = state.table(upstream);
        let usable = |i: &usize| !exclude.contains(&table.eps[*i].addr);
        let mut set_cookie = None;
        let index = match (&loc.affinity, sticky.and_then(|id| table.find(id))) {
            (Some(_), Some(i)) if usable(&i) => i,
            (Some(aff), _) => {
                let i = state.pick(&table, &upstream.balance, req, exclude)?;
                let id = table.eps[i].id;
                let now = affinity::unix_now();
                set_cookie = affinity::set_cookie(aff, &loc.path, id, req.https, now);
                i
            }
            (None, _) => state.pick(&table, &upstream.balance, req, exclude)?,
        };
        let stats = Arc::clone(&table.eps[index]);
        Some(Choice {
            upstream: Arc::clone(upstream),
            canary,
            endpoint: stats.addr,
            set_cookie,
            guard: InFlight::new(stats),
        })
    }

    /// Forgets the state of upstreams not in `live` (called after a
    /// router swap).
    pub fn retain(&self, live: &HashSet<String>) {
        self.states.rcu(|cur| {
            cur.iter()
                .filter(|(name, _)| live.contains(*name))
                .map(|(name, s)| (name.clone(), Arc::clone(s)))
                .collect::<HashMap<_, _>>()
        });
    }

    /// The state for upstream `name`, created on first use.
    fn state(&self, name: &str) -> Arc<UpstreamState> {
        if let Some(s) = self.states.load().get(name) {
            return Arc::clone(s);
        }
        let created = Arc::new(UpstreamState::new(name));
        let mut found = Arc::clone(&created);
        self.states.rcu(|cur| {
            if let Some(s) = cur.get(name) {
                found = Arc::clone(s);
                return Arc::clone(cur);
            }
            found = Arc::clone(&created);
            let mut next = HashMap::clone(cur);
            next.insert(name.to_string(), Arc::clone(&created));
            Arc::new(next)
        });
        found
    }

    /// Whether `upstream` has a live endpoint with affinity id `id`.
    fn holds(&self, upstream: &Arc<Upstream>, id: u64) -> bool {
        self.state(&upstream.name)
            .table(upstream)
            .find(id)
            .is_some()
    }

    /// ingress-nginx's `route_to_alternative_balancer`.
    fn to_canary(
        &self,
        loc: &Location,
        canary: &Canary,
        req: &RequestInfo<'_>,
        sticky: Option<u64>,
    ) -> bool {
        // A canary without endpoints has no balancer in ingress-nginx:
        // its share goes to the primary.
        if canary.upstream.endpoints.is_empty() {
            return false;
        }
        if let Some(id) = sticky {
            // Already affinitized to one side: stay there.
            if self.holds(&loc.upstream, id) {
                return false;
            }
            if self.holds(&canary.upstream, id) {
                return true;
            }
        }
        let header = canary
            .header
            .as_ref()
            .and_then(|name| req.headers.get(name.as_str()))
            .and_then(|v| v.to_str().ok());
        if let Some(value) = header {
            // With `canary-by-header-value`, only that value counts.
            let wanted = canary.header_value.as_deref().filter(|v| !v.is_empty());
            match (value, wanted) {
                (v, Some(w)) if v == w => return true,
                (_, Some(_)) => {}
                ("always", None) => return true,
                ("never", None) => return false,
                _ => {}
            }
        }
        if let Some(name) = &canary.cookie {
            match expr::cookie(req.headers, name) {
                Some("always") => return true,
                Some("never") => return false,
                _ => {}
            }
        }
        let total = if canary.weight_total == 0 {
            100
        } else {
            canary.weight_total
        };
        canary.weight > 0 && rand::random_range(1..=total) <= canary.weight
    }
}

#[cfg(test)]
mod tests;
