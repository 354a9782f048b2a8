//! Header rules, as ingress-nginx's template writes them (brief §5.1):
//! the `X-Forwarded-*` set (client values replaced unless the peer is a
//! trusted proxy), hop-by-hop stripping, request ids, CORS and HSTS.

use std::net::{IpAddr, SocketAddr};

use http::Method;
use http::header::{
    CONNECTION, HeaderMap, HeaderName, HeaderValue, TE, TRANSFER_ENCODING, UPGRADE,
};

use crate::model::route::{Cidr, Cors, Hsts};

pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_ORIGINAL_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-original-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub(super) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub(super) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_SCHEME: HeaderName = HeaderName::from_static("x-forwarded-scheme");
const X_SCHEME: HeaderName = HeaderName::from_static("x-scheme");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const PROXY: HeaderName = HeaderName::from_static("proxy");

pub(super) fn trusted(ip: IpAddr, proxies: &[Cidr]) -> bool {
    proxies.iter().any(|c| c.contains(ip))
}

/// The client's address: the peer, or, when the peer is a trusted proxy,
/// the right-most `X-Forwarded-For` entry that is not itself trusted.
pub(super) fn client_ip(peer: IpAddr, headers: &HeaderMap, proxies: &[Cidr]) -> IpAddr {
    if !trusted(peer, proxies) {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let mut client = peer;
    for entry in entries.iter().rev() {
        if !trusted(client, proxies) {
            break;
        }
        match parse_hop(entry) {
            Some(ip) => client = ip,
            None => break,
        }
    }
    client
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:80`.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// What the forwarded headers say about one request.
pub(super) struct Forwarded<'a> {
    pub client: IpAddr,
    /// The address that connected to us.
    pub peer: IpAddr,
    pub peer_trusted: bool,
    /// `http`/`https` as the client used it.
    pub scheme: &'a str,
    pub port: u16,
    /// The client's Host (with port), `$best_http_host`.
    pub host: &'a str,
}

/// The scheme the client used: the listener's, or a trusted proxy's
/// `X-Forwarded-Proto`.
pub(super) fn scheme(https: bool, peer_trusted: bool, headers: &HeaderMap) -> &'static str {
    if peer_trusted && let Some(v) = headers.get(X_FORWARDED_PROTO).and_then(|v| v.to_str().ok()) {
        match v.split(',').next().map(str::trim) {
            Some(p) if p.eq_ignore_ascii_case("https") => return "https",
            Some(p) if p.eq_ignore_ascii_case("http") => return "http",
            _ => {}
        }
    }
    if https { "https" } else { "http" }
}

/// Sets the headers ingress-nginx sends upstream (everything but `Host`).
/// `X-Forwarded-For` is the client alone, or, from a trusted proxy, its
/// list with the proxy's address appended.
pub(super) fn set_forwarded(h: &mut HeaderMap, f: &Forwarded<'_>) {
    h.remove(PROXY); // httpoxy
    h.remove(http::header::EXPECT); // hyper answered 100-continue already
    if h.get(X_REQUEST_ID).is_none_or(|v| v.is_empty()) {
        h.insert(X_REQUEST_ID, request_id());
    }
    let client = HeaderValue::from_str(&f.client.to_string()).ok();
    let incoming = joined(h, &X_FORWARDED_FOR);
    match &incoming {
        Some(xff) => {
            h.insert(X_ORIGINAL_FORWARDED_FOR, xff.clone());
        }
        None => {
            h.remove(X_ORIGINAL_FORWARDED_FOR);
        }
    }
    if let Some(client) = client {
        let xff = match (&incoming, f.peer_trusted) {
            (Some(xff), true) => xff
                .to_str()
                .ok()
                .and_then(|x| HeaderValue::from_str(&format!("{x}, {}", f.peer)).ok())
                .unwrap_or_else(|| client.clone()),
            _ => client.clone(),
        };
        h.insert(X_FORWARDED_FOR, xff);
        h.insert(X_REAL_IP, client);
    }
    let keep = |h: &HeaderMap, name: &HeaderName| f.peer_trusted && h.contains_key(name);
    if !keep(h, &X_FORWARDED_HOST)
        && let Ok(v) = HeaderValue::from_str(f.host)
    {
        h.insert(X_FORWARDED_HOST, v);
    }
    if !keep(h, &X_FORWARDED_PORT) {
        h.insert(X_FORWARDED_PORT, HeaderValue::from(f.port));
    }
    let scheme = HeaderValue::from_static(if f.scheme == "https" { "https" } else { "http" });
    h.insert(X_FORWARDED_PROTO, scheme.clone());
    h.insert(X_FORWARDED_SCHEME, scheme.clone());
    h.insert(X_SCHEME, scheme);
}

/// All values of a header as one comma-separated value.
fn joined(h: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let mut values = h.get_all(name).iter();
    let first = values.next()?;
    let mut out = first.as_bytes().to_vec();
    for v in values {
        out.extend_from_slice(b", ");
        out.extend_from_slice(v.as_bytes());
    }
    HeaderValue::from_bytes(&out).ok()
}

/// 16 random bytes as 32 lowercase hex characters, as nginx's
/// `$request_id`.
pub(super) fn request_id() -> HeaderValue {
    let id: u128 = rand::random();
    HeaderValue::from_str(&format!("{id:032x}")).unwrap_or(HeaderValue::from_static("0"))
}

/// Tokens of a comma-separated header, lowercase-compared by the caller.
fn tokens<'a>(h: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// An HTTP/1.1 `Connection: upgrade` + `Upgrade: ...` request.
pub(super) fn wants_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(UPGRADE) && tokens(h, &CONNECTION).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// A `Transfer-Encoding` other than exactly `chunked` (hyper rejects a
/// final coding that is not chunked; this also refuses `gzip, chunked` and
/// `chunked, chunked`, which nothing legitimate sends to a proxy).
pub(super) fn bad_transfer_encoding(h: &HeaderMap) -> bool {
    if !h.contains_key(TRANSFER_ENCODING) {
        return false;
    }
    let mut codings = tokens(h, &TRANSFER_ENCODING);
    !matches!((codings.next(), codings.next()), (Some(c), None) if c.eq_ignore_ascii_case("chunked"))
}

/// Removes hop-by-hop headers: those `Connection` names, `Connection`
/// itself, `Keep-Alive`, `Proxy-Connection`, `TE` (except `trailers` when
/// `keep_te_trailers`, which gRPC over HTTP/2 needs), `Trailer`,
/// `Transfer-Encoding` and `Upgrade`. With `upgrade`, the `Upgrade` pair
/// is kept as `Connection: upgrade` + `Upgrade`.
pub(super) fn strip_hop_by_hop(h: &mut HeaderMap, upgrade: bool, keep_te_trailers: bool) {
    if h.contains_key(CONNECTION) {
        let listed: Vec<HeaderName> = tokens(h, &CONNECTION)
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in listed {
            if !(upgrade && name == UPGRADE) {
                h.remove(name);
            }
        }
        h.remove(CONNECTION);
    }
    h.remove(KEEP_ALIVE);
    h.remove(PROXY_CONNECTION);
    let te_trailers =
        keep_te_trailers && tokens(h, &TE).any(|t| t.eq_ignore_ascii_case("trailers"));
    h.remove(TE);
    if te_trailers {
        h.insert(TE, HeaderValue::from_static("trailers"));
    }
    h.remove(http::header::TRAILER);
    h.remove(TRANSFER_ENCODING);
    if upgrade && h.contains_key(UPGRADE) {
        h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        h.remove(UPGRADE);
    }
}

/// The `method` metric label: standard methods, else `OTHER` (bounded).
pub(super) fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// Methods retried on another endpoint after a connect failure.
pub(super) fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// The `Access-Control-Allow-Origin` value when `origin` is allowed:
/// `*` when the list allows any origin (ingress-nginx echoes `*` then),
/// else the request's own Origin. Entries are `scheme://host[:port]`, the
/// first host label may be `*` (one DNS label), compared
/// case-insensitively.
pub(super) fn cors_origin(cors: &Cors, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
    if cors.allow_origin.iter().any(|o| o.trim() == "*") {
        return Some(HeaderValue::from_static("*"));
    }
    let value = origin?;
    let origin = value.to_str().ok()?;
    cors.allow_origin
        .iter()
        .any(|allowed| origin_matches(allowed.trim(), origin))
        .then(|| value.clone())
}

fn origin_matches(allowed: &str, origin: &str) -> bool {
    let (Some((a_scheme, a_rest)), Some((o_scheme, o_rest))) =
        (allowed.split_once("://"), origin.split_once("://"))
    else {
        return false;
    };
    if !a_scheme.eq_ignore_ascii_case(o_scheme) {
        return false;
    }
    match a_rest.strip_prefix('*') {
        Some(suffix) if suffix.starts_with('.') => {
            o_rest.len() > suffix.len() && o_rest.is_char_boundary(o_rest.len() - suffix.len()) && {
                let (label, rest) = o_rest.split_at(o_rest.len() - suffix.len());
                rest.eq_ignore_ascii_case(suffix)
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }
        }
        _ => a_rest.eq_ignore_ascii_case(o_rest),
    }
}

/// The CORS response headers (ingress-nginx's `CORS` template block).
pub(super) fn set_cors(h: &mut HeaderMap, cors: &Cors, allow_origin: HeaderValue) {
    use http::header::{
        ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
        ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS,
        ACCESS_CONTROL_MAX_AGE,
    };
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
    if cors.allow_credentials {
        h.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if let Ok(v) = HeaderValue::from_str(&cors.allow_methods) {
        h.insert(ACCESS_CONTROL_ALLOW_METHODS, v);
    }
    if let Ok(v) = HeaderValue::from_str(&cors.allow_headers) {
        h.insert(ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    if !cors.expose_headers.is_empty()
        && let Ok(v) = HeaderValue::from_str(&cors.expose_headers)
    {
        h.insert(ACCESS_CONTROL_EXPOSE_HEADERS, v);
    }
    h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from(cors.max_age));
}

/// `max-age=N[; includeSubDomains][; preload]`.
pub(super) fn hsts_value(hsts: &Hsts) -> HeaderValue {
    let mut v = format!("max-age={}", hsts.max_age);
    if hsts.include_subdomains {
        v.push_str("; includeSubDomains");
    }
    if hsts.preload {
        v.push_str("; preload");
    }
    HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("max-age=0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).expect("cidr")
    }

    #[test]
    fn client_ip_trusts_only_configured_proxies() {
        let mut h = HeaderMap::new();
        h.insert(
            X_FORWARDED_FOR,
            HeaderValue::from_static("203.0.113.9, 10.0.0.2"),
        );
        let peer: IpAddr = "10.0.0.1".parse().expect("ip");
        assert_eq!(client_ip(peer, &h, &[]), peer);
        let proxies = [cidr("10.0.0.0/8")];
        assert_eq!(
            client_ip(peer, &h, &proxies),
            "203.0.113.9".parse::<IpAddr>().expect("ip")
        );
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("junk"));
        assert_eq!(client_ip(peer, &h, &proxies), peer);
    }

    #[test]
    fn forwarded_headers_replace_untrusted_values() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        h.insert(X_FORWARDED_HOST, HeaderValue::from_static("evil"));
        h.insert(PROXY, HeaderValue::from_static("http://evil"));
        let f = Forwarded {
            client: "192.0.2.1".parse().expect("ip"),
            peer: "192.0.2.1".parse().expect("ip"),
            peer_trusted: false,
            scheme: "http",
            port: 80,
            host: "a.test:8080",
        };
        set_forwarded(&mut h, &f);
        assert_eq!(h[X_FORWARDED_FOR], "192.0.2.1");
        assert_eq!(h[X_ORIGINAL_FORWARDED_FOR], "1.1.1.1");
        assert_eq!(h[X_REAL_IP], "192.0.2.1");
        assert_eq!(h[X_FORWARDED_HOST], "a.test:8080");
        assert_eq!(h[X_FORWARDED_PORT], "80");
        assert_eq!(h[X_SCHEME], "http");
        assert!(h.get(PROXY).is_none());
        let id = h[X_REQUEST_ID].to_str().expect("ascii");
        assert_eq!(id.len(), 32);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(KEEP_ALIVE, HeaderValue::from_static("timeout=5"));
        h.insert(TE, HeaderValue::from_static("trailers"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        let mut grpc = h.clone();
        strip_hop_by_hop(&mut h, false, false);
        assert_eq!(h.len(), 1);
        strip_hop_by_hop(&mut grpc, true, true);
        assert_eq!(grpc[TE], "trailers");
        assert_eq!(grpc[CONNECTION], "upgrade");
        assert_eq!(grpc[UPGRADE], "websocket");
    }

    #[test]
    fn transfer_encodings() {
        let mut h = HeaderMap::new();
        assert!(!bad_transfer_encoding(&h));
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("Chunked"));
        assert!(!bad_transfer_encoding(&h));
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("gzip, chunked"));
        assert!(bad_transfer_encoding(&h));
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.append(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        assert!(bad_transfer_encoding(&h));
    }

    #[test]
    fn cors_origins() {
        let cors = Cors {
            allow_origin: vec!["https://a.com".into(), "https://*.b.com:8443".into()],
            allow_methods: "GET".into(),
            allow_headers: "X".into(),
            allow_credentials: true,
            expose_headers: String::new(),
            max_age: 5,
        };
        let o = |s: &'static str| cors_origin(&cors, Some(&HeaderValue::from_static(s)));
        assert_eq!(o("https://A.com").expect("match"), "https://A.com");
        assert!(o("http://a.com").is_none());
        assert!(o("https://a.com.evil").is_none());
        assert!(o("https://x.b.com:8443").is_some());
        assert!(o("https://x.y.b.com:8443").is_none());
        assert!(o("https://x.b.com").is_none());
        assert!(cors_origin(&cors, None).is_none());
        let any = Cors {
            allow_origin: vec!["*".into()],
            ..cors
        };
        assert_eq!(cors_origin(&any, None).expect("any"), "*");
    }

    #[test]
    fn hsts() {
        let v = hsts_value(&Hsts {
            max_age: 100,
            include_subdomains: true,
            preload: true,
        });
        assert_eq!(v, "max-age=100; includeSubDomains; preload");
    }
}
