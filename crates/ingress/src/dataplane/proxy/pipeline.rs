//! One request, start to finish, in ingress-nginx's order: host and
//! framing checks, route, HTTPS redirect, access lists, redirects and
//! app-root, CORS preflight, body size, endpoint choice, the upstream
//! attempt(s), then response headers. Everything the request needs from
//! the configuration comes from the one `Routes` it loaded first.
//!
//! Retries (`proxy-next-upstream error`): only when the connection could
//! not be established, only for idempotent methods, on an endpoint not
//! tried yet, at most `max_retries` attempts in all. Status codes: no
//! endpoint 503; connection failures 502; no response headers within
//! `proxy-read-timeout` 504; body over `proxy-body-size` 413.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{
    CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderValue, ORIGIN, SET_COOKIE, STRICT_TRANSPORT_SECURITY,
};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use tokio::time::Instant;

use super::body::{Body, BodyFault, BodySlot, End, Observed, UpstreamBody};
use super::errors::{no_content, page, page_close, redirect};
use super::headers::{self, Forwarded};
use super::metrics::{ErrorKind, Sample};
use super::server::{Active, ConnCtx};
use super::upstream::Failure;
use super::{Proxy, upgrade, uri};
use crate::dataplane::balance::{Choice, InFlight, RequestInfo};
use crate::model::paths::PathRule;
use crate::model::route::{Access, Location, Routes};
use crate::model::router::{Routed, normalize_host};

/// What the metrics need to know about a request once it is answered.
#[derive(Default)]
struct Trace {
    loc: Option<Arc<Location>>,
    canary: bool,
    /// Upstream request sent at, and time to its response headers.
    upstream: Option<(Instant, Duration)>,
    inflight: Option<InFlight>,
}

/// Recorded when the response body ends (or is dropped).
struct Outcome {
    proxy: Arc<Proxy>,
    trace: Trace,
    method: &'static str,
    status: u16,
    start: Instant,
    _active: Active,
}

impl End for Outcome {
    fn finish(self: Box<Self>, bytes: u64) {
        let loc = self.trace.loc.as_deref();
        let canary = match (loc.and_then(|l| l.canary.as_ref()), self.trace.canary) {
            (Some(c), true) => c.upstream.name.as_str(),
            _ => "",
        };
        let sample = Sample {
            namespace: loc.map_or("", |l| l.ingress.namespace.as_str()),
            ingress: loc.map_or("", |l| l.ingress.name.as_str()),
            service: loc
                .and_then(|l| l.upstream.service.as_ref())
                .map_or("", |s| s.name.as_str()),
            host: loc.map_or("", |l| l.host.as_str()),
            path: loc.map_or("", |l| path_label(&l.path)),
            canary,
            method: self.method,
            status: self.status,
            duration: self.start.elapsed(),
            bytes,
            upstream: self
                .trace
                .upstream
                .map(|(sent, header)| (header, sent.elapsed())),
        };
        self.proxy.metrics.record(&sample);
    }
}

/// The rule's path as a metric label (bounded: it comes from Ingresses).
fn path_label(rule: &PathRule) -> &str {
    match rule {
        PathRule::Exact(p) => p,
        PathRule::Prefix(p) if p.is_empty() => "/",
        PathRule::Prefix(p) => p,
        PathRule::Regex { source, .. } => source,
    }
}

/// nginx's request-line buffer (one of `large-client-header-buffers`).
const MAX_REQUEST_LINE: usize = 8 * 1024;
/// The request line around method and target: `' '`, `" HTTP/1.1\r\n"`.
const REQUEST_LINE_OVERHEAD: usize = 1 + 11;

impl Proxy {
    pub(super) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: Arc<ConnCtx>,
    ) -> Response<Body> {
        let start = Instant::now();
        let active = conn.begin();
        let method = headers::method_label(req.method());
        let routes = self.routes.load_full();
        let mut trace = Trace::default();
        let resp = self.pipeline(req, &routes, &conn, &mut trace).await;
        let (parts, body) = resp.into_parts();
        let outcome = Outcome {
            proxy: self.clone(),
            trace,
            method,
            status: parts.status.as_u16(),
            start,
            _active: active,
        };
        Response::from_parts(parts, Observed::wrap(body, Box::new(outcome)))
    }

    async fn pipeline(
        &self,
        mut req: Request<Incoming>,
        routes: &Routes,
        conn: &ConnCtx,
        trace: &mut Trace,
    ) -> Response<Body> {
        let h1 = req.version() <= Version::HTTP_11;
        // hyper already refused duplicate differing Content-Lengths, a
        // final coding other than chunked, and TE on HTTP/1.0 (400); with
        // both TE and CL it dropped CL, reads chunked and closes after.
        if h1 && headers::bad_transfer_encoding(req.headers()) {
            return page_close(StatusCode::BAD_REQUEST);
        }
        // RFC 9112 3.2: more than one Host is a 400 (a proxy routing on one
        // and a backend reading another is a classic split).
        if req.headers().get_all(HOST).iter().nth(1).is_some() {
            return page_close(StatusCode::BAD_REQUEST);
        }
        // An Ingress routes requests for resources; tunnels (CONNECT) and
        // TRACE are not proxied (nginx answers 405).
        if req.method() == Method::CONNECT || req.method() == Method::TRACE {
            return page_close(StatusCode::METHOD_NOT_ALLOWED);
        }
        // A cheap (shared bytes) copy, so the path can be borrowed while
        // the request is taken apart.
        let uri = req.uri().clone();
        // ingress-nginx's `large-client-header-buffers` (4 8k): a request
        // line that does not fit one 8 KiB buffer is a 414.
        let target_len = uri.authority().map_or(0, |a| a.as_str().len())
            + uri.path_and_query().map_or(0, |p| p.as_str().len());
        if req.method().as_str().len() + target_len + REQUEST_LINE_OVERHEAD > MAX_REQUEST_LINE {
            return page_close(StatusCode::URI_TOO_LONG);
        }
        // The asterisk form is only for a server-wide OPTIONS (RFC 9112
        // 3.2.4); with any other method the target is malformed.
        if uri.path() == "*" && req.method() != Method::OPTIONS {
            return page_close(StatusCode::BAD_REQUEST);
        }
        let raw_host = match uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| req.headers().get(HOST).and_then(|h| h.to_str().ok()))
        {
            Some(h) => h.to_string(),
            None if req.version() == Version::HTTP_11 => {
                return page_close(StatusCode::BAD_REQUEST);
            }
            None => String::new(),
        };
        let host = normalize_host(&raw_host);
        let Some(path) = uri::normalize(uri.path()) else {
            return if h1 {
                page_close(StatusCode::BAD_REQUEST)
            } else {
                page(StatusCode::BAD_REQUEST)
            };
        };
        let path = &*path;
        let loc = match routes.router.route(&host, path) {
            Routed::Rule(loc) | Routed::Default(loc) => loc.clone(),
            Routed::NotFound => return page(StatusCode::NOT_FOUND),
        };
        trace.loc = Some(loc.clone());

        let settings = &self.settings;
        let peer_trusted = headers::trusted(conn.peer.ip(), &settings.trusted_proxies);
        let client = headers::client_ip(conn.peer.ip(), req.headers(), &settings.trusted_proxies);
        let scheme = headers::scheme(conn.https, peer_trusted, req.headers());
        let pq = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));

        // HTTPS redirect (lua_ingress `redirect_to_https`): a trailing `/`
        // of the request URI is dropped, as ingress-nginx does.
        if scheme == "http"
            && !path.starts_with("/.well-known/acme-challenge")
            && (loc.force_ssl_redirect || (loc.ssl_redirect && routes.tls_hosts.contains(&host)))
        {
            let uri = pq.as_str();
            let uri = uri.strip_suffix('/').unwrap_or(uri);
            return redirect_or_500(
                StatusCode::PERMANENT_REDIRECT,
                &format!("https://{host}{uri}"),
            );
        }

        match &loc.access {
            Access::All => {}
            Access::Rules { allow, deny } => {
                if deny.iter().any(|c| c.contains(client))
                    || (!allow.is_empty() && !allow.iter().any(|c| c.contains(client)))
                {
                    return page(StatusCode::FORBIDDEN);
                }
            }
            Access::Denied(_) => return page(StatusCode::SERVICE_UNAVAILABLE),
        }

        if let Some((code, url)) = &loc.redirect {
            let code = StatusCode::from_u16(*code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
            return redirect_or_500(code, url);
        }
        if let Some(root) = &loc.app_root
            && path == "/"
        {
            return redirect_or_500(StatusCode::FOUND, &format!("{scheme}://{raw_host}{root}"));
        }

        let cors = loc.cors.as_ref().and_then(|c| {
            headers::cors_origin(c, req.headers().get(ORIGIN)).map(|origin| (c, origin))
        });
        if let Some((c, origin)) = &cors
            && req.method() == Method::OPTIONS
        {
            let mut resp = no_content();
            let h = resp.headers_mut();
            headers::set_cors(h, c, origin.clone());
            h.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain charset=UTF-8"),
            );
            h.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
            return resp;
        }

        if let Some(limit) = loc.body_limit {
            let declared = req
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                .unwrap_or(0)
                .max(req.body().size_hint().lower());
            if declared > limit {
                // The unread body makes the connection unusable anyway.
                return if h1 {
                    page_close(StatusCode::PAYLOAD_TOO_LARGE)
                } else {
                    page(StatusCode::PAYLOAD_TOO_LARGE)
                };
            }
        }

        let upgrade = h1 && headers::wants_upgrade(req.headers());
        let target = match &loc.rewrite_target {
            Some(target) => {
                let path = crate::model::rewrite::rewrite(&loc.path, target, path);
                let path = uri::encode_path(&path);
                let full = match uri.query() {
                    Some(q) => format!("{path}?{q}"),
                    None => path.into_owned(),
                };
                match PathAndQuery::try_from(full) {
                    Ok(pq) => pq,
                    Err(_) => return page(StatusCode::INTERNAL_SERVER_ERROR),
                }
            }
            None => pq.clone(),
        };

        let info = RequestInfo {
            client,
            host: &host,
            uri: pq.as_str(),
            path,
            query: uri.query(),
            headers: req.headers(),
            https: scheme == "https",
        };
        let first = self.balancers.choose(&loc, &info, &[]);
        let Some(first) = first else {
            self.upstream_error(&loc, ErrorKind::NoEndpoints);
            return page(StatusCode::SERVICE_UNAVAILABLE);
        };

        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let method = parts.method;
        let mut forward = parts.headers;
        let h2_upstream = !matches!(
            first.upstream.protocol,
            crate::model::route::BackendProtocol::Http
        );
        headers::strip_hop_by_hop(&mut forward, upgrade, h2_upstream);
        headers::set_forwarded(
            &mut forward,
            &Forwarded {
                client,
                peer: conn.peer.ip(),
                peer_trusted,
                scheme,
                port: conn.port,
                host: &raw_host,
            },
        );
        let upstream_host = loc.upstream_vhost.as_deref().unwrap_or(&raw_host);
        match HeaderValue::from_str(upstream_host) {
            Ok(v) => forward.insert(HOST, v),
            Err(_) => return page(StatusCode::BAD_REQUEST),
        };

        let slot = BodySlot::new(body, loc.body_limit, self.settings.client_body_timeout);
        let retry = headers::idempotent(&method);
        let max_tries = self.settings.max_retries.max(1);
        let mut exclude: Vec<SocketAddr> = Vec::new();
        let mut next = Some(first);
        let (mut resp, choice, sent) = loop {
            let Some(choice) = next.take() else {
                return page(StatusCode::BAD_GATEWAY);
            };
            // Whether another attempt could follow (if not, the headers
            // move into the request instead of being copied).
            let tried = exclude.len() + 1;
            let last = !retry || tried >= max_tries || choice.upstream.endpoints.len() <= tried;
            let headers = if last {
                std::mem::take(&mut forward)
            } else {
                forward.clone()
            };
            let mut up = Request::new(if upgrade {
                UpstreamBody::none()
            } else {
                slot.body()
            });
            *up.method_mut() = method.clone();
            *up.uri_mut() = http::Uri::from(target.clone());
            *up.headers_mut() = headers;
            let sent = Instant::now();
            let result = self
                .upstreams
                .send(
                    choice.upstream.protocol,
                    choice.endpoint,
                    up,
                    upgrade,
                    loc.connect_timeout,
                    loc.read_timeout,
                )
                .await;
            // The client's body went wrong: its fault, not the upstream's.
            // What is left of the body on the connection can't be framed,
            // so the connection closes after the answer.
            if result.is_err()
                && let Some(fault) = slot.fault()
            {
                return page_close(match fault {
                    BodyFault::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                    BodyFault::Malformed => StatusCode::BAD_REQUEST,
                    BodyFault::Stalled => StatusCode::REQUEST_TIMEOUT,
                });
            }
            let (kind, e) = match result {
                Ok(resp) => break (resp, choice, sent),
                Err(Failure::Timeout) => {
                    self.upstream_error(&loc, ErrorKind::Timeout);
                    return page(StatusCode::GATEWAY_TIMEOUT);
                }
                Err(Failure::Connect(e)) => (ErrorKind::Connect, e),
                Err(Failure::Other(e)) => (ErrorKind::Reset, e),
            };
            tracing::debug!(endpoint = %choice.endpoint, error = %e, "upstream attempt failed");
            self.upstream_error(&loc, kind);
            // No response yet and an idempotent request whose body (if any)
            // is still whole: try the next endpoint, as ingress-nginx's
            // `proxy_next_upstream error` does (a refused connect, or a
            // kept-alive connection to a pod that just exited).
            if last || !slot.intact() {
                return page(StatusCode::BAD_GATEWAY);
            }
            exclude.push(choice.endpoint);
            let info = RequestInfo {
                client,
                host: &host,
                uri: pq.as_str(),
                path,
                query: uri.query(),
                headers: &forward,
                https: scheme == "https",
            };
            next = self.balancers.choose(&loc, &info, &exclude);
        };

        let header_time = sent.elapsed();
        let Choice {
            canary,
            set_cookie,
            guard,
            ..
        } = choice;
        guard.observe_latency(header_time);
        trace.canary = canary;
        trace.upstream = Some((sent, header_time));
        trace.inflight = Some(guard);

        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            let Some(client_upgrade) = client_upgrade else {
                return page(StatusCode::BAD_GATEWAY);
            };
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            upgrade::splice(
                client_upgrade,
                upstream_upgrade,
                self.tracker.enter(),
                self.phase.subscribe(),
            );
        }
        let (mut parts, body) = resp.into_parts();
        parts.version = Version::HTTP_11;
        let h = &mut parts.headers;
        headers::strip_hop_by_hop(h, switching, false);
        if let Some(cookie) = set_cookie {
            h.append(SET_COOKIE, cookie);
        }
        if let Some((c, origin)) = cors {
            headers::set_cors(h, c, origin);
        }
        if let Some(hsts) = &loc.hsts
            && conn.https
            && conn
                .resolver
                .as_ref()
                .is_some_and(|r| !r.current().is_default(Some(&host)))
        {
            h.insert(STRICT_TRANSPORT_SECURITY, headers::hsts_value(hsts));
        }
        Response::from_parts(parts, body.map_err(Into::into).boxed_unsync())
    }

    fn upstream_error(&self, loc: &Location, kind: ErrorKind) {
        let service = loc
            .upstream
            .service
            .as_ref()
            .map_or("", |s| s.name.as_str());
        self.metrics
            .upstream_error(&loc.ingress.namespace, &loc.ingress.name, service, kind);
    }
}

fn redirect_or_500(code: StatusCode, location: &str) -> Response<Body> {
    redirect(code, location).unwrap_or_else(|| page(StatusCode::INTERNAL_SERVER_ERROR))
}
