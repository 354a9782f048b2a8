//! What a route leads to: the contract between the model (which builds
//! these from Ingresses, Services, EndpointSlices and annotations) and the
//! dataplane (which serves requests with them). Everything here is
//! immutable once built; a change builds new values and swaps the router.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::paths::PathRule;
use super::router::Router;

/// `namespace/name` of an object, for logs, Events and metric labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// How the proxy talks to the endpoints (`backend-protocol`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BackendProtocol {
    /// HTTP/1.1 (what ingress-nginx speaks upstream by default).
    #[default]
    Http,
    /// HTTP/1.1 or HTTP/2 over TLS (upstream certificates not verified, as
    /// ingress-nginx's `proxy_ssl_verify off`).
    Https,
    /// gRPC: HTTP/2 with prior knowledge, cleartext.
    Grpc,
    /// gRPC over TLS.
    Grpcs,
    /// HTTP/2 with prior knowledge, cleartext (a Ferry extension).
    H2c,
}

/// How an endpoint is picked (`load-balance`, `upstream-hash-by`,
/// `affinity`; affinity wins over hashing, hashing over the policy).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Balance {
    #[default]
    RoundRobin,
    /// Fewest requests in flight (a Ferry extension; ingress-nginx falls
    /// back to round robin).
    LeastConn,
    /// Peak EWMA of latency, power of two choices (decay 10 s).
    Ewma,
    /// Consistent hash of an nginx-style expression (`$request_uri`,
    /// `$host`, `$remote_addr`, `$http_<h>`, `$cookie_<c>`, `$arg_<a>`,
    /// literals).
    Hash(String),
}

/// One Service port's endpoints, shared by every route that uses it.
#[derive(Clone, Debug, Default)]
pub struct Upstream {
    /// `<namespace>-<service>-<port>`, as ingress-nginx names upstreams.
    pub name: String,
    pub service: Option<ObjectRef>,
    /// Ready endpoints (terminating ones get no new requests).
    pub endpoints: Vec<SocketAddr>,
    pub protocol: BackendProtocol,
    pub balance: Balance,
}

/// `affinity: cookie`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieAffinity {
    /// `session-cookie-name`, default `INGRESSCOOKIE`.
    pub name: String,
    /// `session-cookie-path`, default the rule's path.
    pub path: Option<String>,
    /// `session-cookie-expires`, seconds.
    pub expires: Option<i64>,
    /// `session-cookie-max-age`, seconds.
    pub max_age: Option<i64>,
}

/// `enable-cors` and its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cors {
    /// Allowed origins; `*` allows any.
    pub allow_origin: Vec<String>,
    pub allow_methods: String,
    pub allow_headers: String,
    pub allow_credentials: bool,
    pub expose_headers: String,
    pub max_age: u64,
}

/// HSTS (opt-in, `ferry.dev/hsts`): sent on HTTPS responses of hosts with
/// a real certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hsts {
    pub max_age: u64,
    pub include_subdomains: bool,
    pub preload: bool,
}

/// A canary Ingress's claim on a route.
#[derive(Clone, Debug)]
pub struct Canary {
    pub upstream: Arc<Upstream>,
    pub ingress: ObjectRef,
    /// `canary-by-header`: `always` → canary, `never` → primary (unless a
    /// value is set, then only that value sends to the canary).
    pub header: Option<String>,
    pub header_value: Option<String>,
    /// `canary-by-cookie`: `always`/`never`.
    pub cookie: Option<String>,
    /// `canary-weight` out of `weight_total` (100 unless set above 100).
    pub weight: u32,
    pub weight_total: u32,
}

/// An IPv4 or IPv6 network (`whitelist-source-range` entries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `192.0.2.1` (a /32), `2001:db8::/32`.
    pub fn parse(s: &str) -> Option<Cidr> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?),
            None => {
                let a = s.parse::<IpAddr>().ok()?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Who may reach a location (`whitelist-`/`denylist-source-range`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Access {
    #[default]
    All,
    /// Only these (403 otherwise); deny entries are checked first.
    Rules { allow: Vec<Cidr>, deny: Vec<Cidr> },
    /// The allow list had no usable entry: every request gets 503, as
    /// ingress-nginx's "Location denied".
    Denied(String),
}

/// Everything the proxy needs for requests that matched one rule.
#[derive(Clone, Debug)]
pub struct Location {
    /// The Ingress the rule came from (metrics, logs).
    pub ingress: ObjectRef,
    pub host: String,
    /// The rule's path, for `rewrite-target` capture groups and the
    /// default cookie path.
    pub path: PathRule,
    pub upstream: Arc<Upstream>,
    /// `rewrite-target`, with `$1`..`$9` from the path's regex.
    pub rewrite_target: Option<String>,
    /// `app-root`: requests for `/` get 302 to it.
    pub app_root: Option<String>,
    /// `temporal-redirect` (302) or `permanent-redirect` (its code):
    /// the whole location answers with this.
    pub redirect: Option<(u16, String)>,
    /// `ssl-redirect` (default true; fires only when the host has a
    /// certificate) and `force-ssl-redirect`.
    pub ssl_redirect: bool,
    pub force_ssl_redirect: bool,
    /// `upstream-vhost`: the Host sent upstream instead of the client's.
    pub upstream_vhost: Option<String>,
    /// `proxy-body-size`; `None` is unlimited (`0`).
    pub body_limit: Option<u64>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub send_timeout: Duration,
    pub access: Access,
    pub affinity: Option<CookieAffinity>,
    pub canary: Option<Canary>,
    pub cors: Option<Cors>,
    pub hsts: Option<Hsts>,
}

impl Location {
    /// A plain location with ingress-nginx's defaults.
    pub fn new(
        ingress: ObjectRef,
        host: String,
        path: PathRule,
        upstream: Arc<Upstream>,
    ) -> Location {
        Location {
            ingress,
            host,
            path,
            upstream,
            rewrite_target: None,
            app_root: None,
            redirect: None,
            ssl_redirect: true,
            force_ssl_redirect: false,
            upstream_vhost: None,
            body_limit: Some(1024 * 1024),
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            access: Access::All,
            affinity: None,
            canary: None,
            cors: None,
            hsts: None,
        }
    }
}

/// What the dataplane serves: swapped whole on every change.
#[derive(Clone, Debug, Default)]
pub struct Routes {
    pub router: Router<Arc<Location>>,
    /// Hosts (lowercase) that have a real certificate: `ssl-redirect`
    /// applies to them, and HSTS may be sent.
    pub tls_hosts: std::collections::HashSet<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.0.0.0/8").expect("cidr");
        assert!(c.contains("10.1.2.3".parse().expect("ip")));
        assert!(!c.contains("11.0.0.1".parse().expect("ip")));
        assert!(c.contains("::ffff:10.0.0.1".parse().expect("ip")));
        let one = Cidr::parse(" 192.0.2.7 ").expect("ip");
        assert!(one.contains("192.0.2.7".parse().expect("ip")));
        assert!(!one.contains("192.0.2.8".parse().expect("ip")));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .expect("all")
                .contains("8.8.8.8".parse().expect("ip"))
        );
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nonsense").is_none());
        let v6 = Cidr::parse("2001:db8::/32").expect("v6");
        assert!(v6.contains("2001:db8::1".parse().expect("ip")));
    }
}
