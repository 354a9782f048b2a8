//! The `backend` group: `backend-protocol`, `upstream-vhost`, `load-balance`
//! and `upstream-hash-by`, i.e. how the proxy talks to the endpoints and
//! picks one. `upstream-hash-by` is an nginx variable expression; it is
//! parsed here (and [`parse_hash_expr`] is public) so that a bad one is an
//! Event at build time, not a surprise in the dataplane.

use super::IngressAnnotations;
use super::reader::{Raw, Reader};
use crate::model::route::{BackendProtocol, Balance};

pub(super) const KEYS: &[&str] = &[
    "backend-protocol",
    "upstream-vhost",
    "load-balance",
    "upstream-hash-by",
];

pub(super) fn parse(r: &mut Reader, a: &mut IngressAnnotations) {
    a.backend_protocol = r
        .string("backend-protocol")
        .map(|raw| protocol(r, &raw))
        .unwrap_or_default();
    a.upstream_vhost = r.string("upstream-vhost").and_then(|raw| vhost(r, raw));
    let policy = r
        .string("load-balance")
        .map(|raw| load_balance(r, &raw))
        .unwrap_or_default();
    // ingress-nginx: a hash wins over the load-balance policy.
    a.balance = r
        .string("upstream-hash-by")
        .and_then(|raw| match parse_hash_expr(&raw.value) {
            Ok(_) => Some(Balance::Hash(raw.value)),
            Err(HashExprError::Invalid(why)) => {
                r.invalid(&raw, Some(&why));
                None
            }
            Err(HashExprError::UnknownVariable(var)) => {
                r.unsupported(
                    &raw,
                    &format!(
                        "variable ${var} is not supported (use $request_uri, $uri, $host, \
                         $remote_addr, $http_<header>, $cookie_<name> or $arg_<name>)"
                    ),
                );
                None
            }
        })
        .unwrap_or(policy);
}

fn protocol(r: &mut Reader, raw: &Raw) -> BackendProtocol {
    // ingress-nginx uppercases and trims (any case is accepted).
    match raw.value.to_ascii_uppercase().as_str() {
        "HTTP" => BackendProtocol::Http,
        "HTTPS" => BackendProtocol::Https,
        "GRPC" => BackendProtocol::Grpc,
        "GRPCS" => BackendProtocol::Grpcs,
        "H2C" => BackendProtocol::H2c,
        "AJP" | "FCGI" | "AUTO_HTTP" => {
            r.unsupported(
                raw,
                "this backend protocol is not supported by Ferry. Using HTTP",
            );
            BackendProtocol::Http
        }
        _ => {
            r.unsupported(
                raw,
                "is not a valid value for the backend-protocol annotation. Using HTTP",
            );
            BackendProtocol::Http
        }
    }
}

/// A Host header value: `name[:port]` or `[v6][:port]`.
fn vhost(r: &mut Reader, raw: Raw) -> Option<String> {
    let v = raw.value.as_str();
    if v.contains('$') {
        r.unsupported(&raw, "nginx variables are not supported in upstream-vhost");
        return None;
    }
    let (host, port) = match v.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && (h.starts_with('[') || !h.contains(':')) => {
            (h, Some(p))
        }
        _ => (v, None),
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => !host.is_empty() && super::reader::only(host, "-._~"),
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok());
    if !host_ok || !port_ok {
        r.invalid(&raw, Some("must be a host name with an optional port"));
        return None;
    }
    Some(raw.value)
}

fn load_balance(r: &mut Reader, raw: &Raw) -> Balance {
    match raw.value.as_str() {
        "round_robin" => Balance::RoundRobin,
        "least_conn" => Balance::LeastConn,
        "ewma" => Balance::Ewma,
        _ => {
            r.unsupported(raw, "is not supported, falling back to round_robin");
            Balance::RoundRobin
        }
    }
}

/// One piece of an `upstream-hash-by` expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashPart {
    Literal(String),
    /// `$request_uri`: path and query as received.
    RequestUri,
    /// `$uri`: the (normalized) path.
    Uri,
    /// `$host`: the Host, lowercase, without port.
    Host,
    /// `$remote_addr`: the client address.
    RemoteAddr,
    /// `$http_<name>`: a request header, named as HTTP spells it
    /// (`$http_x_user` → `x-user`).
    Header(String),
    /// `$cookie_<name>`.
    Cookie(String),
    /// `$arg_<name>`: a query parameter.
    Arg(String),
}

/// Why an `upstream-hash-by` expression is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashExprError {
    /// Not an nginx expression (or not one ingress-nginx accepts).
    Invalid(String),
    /// A well-formed variable Ferry does not know.
    UnknownVariable(String),
}

/// Parses an `upstream-hash-by` expression: nginx variables (`$name` or
/// `${name}`) among literal text, restricted to ingress-nginx's
/// `NGINXVariable` characters (`A-Za-z0-9-_${}`).
pub fn parse_hash_expr(expr: &str) -> Result<Vec<HashPart>, HashExprError> {
    if expr.is_empty() || !super::reader::only(expr, "-_${}") {
        return Err(HashExprError::Invalid(
            "only letters, digits, \"-\", \"_\" and nginx variables are allowed".into(),
        ));
    }
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        literal.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, next) = match after.strip_prefix('{') {
            Some(braced) => match braced.find('}') {
                Some(end) => (&braced[..end], &braced[end + 1..]),
                None => return Err(HashExprError::Invalid("unclosed \"${\"".into())),
            },
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        if name.is_empty() {
            return Err(HashExprError::Invalid(
                "\"$\" must be followed by a variable name".into(),
            ));
        }
        if !literal.is_empty() {
            parts.push(HashPart::Literal(std::mem::take(&mut literal)));
        }
        parts.push(variable(name)?);
        rest = next;
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(HashPart::Literal(literal));
    }
    Ok(parts)
}

fn variable(name: &str) -> Result<HashPart, HashExprError> {
    let part = match name {
        "request_uri" => HashPart::RequestUri,
        "uri" => HashPart::Uri,
        "host" => HashPart::Host,
        "remote_addr" => HashPart::RemoteAddr,
        _ => match name.split_once('_') {
            Some(("http", h)) if !h.is_empty() => {
                HashPart::Header(h.to_ascii_lowercase().replace('_', "-"))
            }
            Some(("cookie", c)) if !c.is_empty() => HashPart::Cookie(c.to_string()),
            Some(("arg", a)) if !a.is_empty() => HashPart::Arg(a.to_string()),
            _ => return Err(HashExprError::UnknownVariable(name.to_string())),
        },
    };
    Ok(part)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{diag, parse_map};
    use super::*;

    #[test]
    fn backend_protocol_values() {
        for (value, expected) in [
            ("HTTP", BackendProtocol::Http),
            ("https", BackendProtocol::Https),
            (" GRPC ", BackendProtocol::Grpc),
            ("grpcs", BackendProtocol::Grpcs),
            ("H2C", BackendProtocol::H2c),
        ] {
            let (a, d) = parse_map(&[("nginx.ingress.kubernetes.io/backend-protocol", value)]);
            assert_eq!(a.backend_protocol, expected, "{value}");
            assert!(d.is_empty(), "{value}");
        }
        for value in ["AJP", "FCGI", "AUTO_HTTP", "SPDY"] {
            let (a, d) = parse_map(&[("nginx.ingress.kubernetes.io/backend-protocol", value)]);
            assert_eq!(a.backend_protocol, BackendProtocol::Http, "{value}");
            assert_eq!(diag(&d), vec!["UnsupportedAnnotationValue"], "{value}");
        }
    }

    #[test]
    fn upstream_vhost() {
        for value in [
            "internal.example",
            "internal.example:8080",
            "[2001:db8::1]:80",
        ] {
            let (a, d) = parse_map(&[("nginx.ingress.kubernetes.io/upstream-vhost", value)]);
            assert_eq!(a.upstream_vhost.as_deref(), Some(value));
            assert!(d.is_empty(), "{value}");
        }
        for (value, reason) in [
            ("a b", "InvalidAnnotation"),
            ("host:port", "InvalidAnnotation"),
            ("$host", "UnsupportedAnnotationValue"),
        ] {
            let (a, d) = parse_map(&[("nginx.ingress.kubernetes.io/upstream-vhost", value)]);
            assert_eq!(a.upstream_vhost, None, "{value}");
            assert_eq!(diag(&d), vec![reason], "{value}");
        }
    }

    #[test]
    fn load_balance_policies() {
        for (value, expected) in [
            ("round_robin", Balance::RoundRobin),
            ("least_conn", Balance::LeastConn),
            ("ewma", Balance::Ewma),
        ] {
            let (a, d) = parse_map(&[("nginx.ingress.kubernetes.io/load-balance", value)]);
            assert_eq!(a.balance, expected);
            assert!(d.is_empty());
        }
        let (a, d) = parse_map(&[("nginx.ingress.kubernetes.io/load-balance", "chash")]);
        assert_eq!(a.balance, Balance::RoundRobin);
        assert_eq!(diag(&d), vec!["UnsupportedAnnotationValue"]);
    }

    #[test]
    fn upstream_hash_by_wins_over_load_balance() {
        let (a, d) = parse_map(&[
            ("nginx.ingress.kubernetes.io/load-balance", "ewma"),
            (
                "nginx.ingress.kubernetes.io/upstream-hash-by",
                "$request_uri$host",
            ),
        ]);
        assert!(d.is_empty());
        assert_eq!(a.balance, Balance::Hash("$request_uri$host".into()));
        // An unusable expression falls back to the policy.
        let (a, d) = parse_map(&[
            ("nginx.ingress.kubernetes.io/load-balance", "ewma"),
            (
                "nginx.ingress.kubernetes.io/upstream-hash-by",
                "$binary_remote_addr",
            ),
        ]);
        assert_eq!(a.balance, Balance::Ewma);
        assert_eq!(diag(&d), vec!["UnsupportedAnnotationValue"]);
        let (a, d) = parse_map(&[("nginx.ingress.kubernetes.io/upstream-hash-by", "$host/x")]);
        assert_eq!(a.balance, Balance::RoundRobin);
        assert_eq!(diag(&d), vec!["InvalidAnnotation"]);
    }

    #[test]
    fn hash_expressions() {
        use HashPart::*;
        assert_eq!(
            parse_hash_expr("${request_uri}-text-value"),
            Ok(vec![RequestUri, Literal("-text-value".into())])
        );
        assert_eq!(
            parse_hash_expr("$uri$remote_addr-$http_X_User_Id$cookie_sid${arg_q}x"),
            Ok(vec![
                Uri,
                RemoteAddr,
                Literal("-".into()),
                Header("x-user-id".into()),
                Cookie("sid".into()),
                Arg("q".into()),
                Literal("x".into()),
            ])
        );
        assert_eq!(
            parse_hash_expr("static"),
            Ok(vec![Literal("static".into())])
        );
        assert_eq!(
            parse_hash_expr("$http_"),
            Err(HashExprError::UnknownVariable("http_".into()))
        );
        assert_eq!(
            parse_hash_expr("$pid"),
            Err(HashExprError::UnknownVariable("pid".into()))
        );
        for bad in ["", "$", "a$-b", "${host", "${}", "$host.x"] {
            assert!(
                matches!(parse_hash_expr(bad), Err(HashExprError::Invalid(_))),
                "{bad}"
            );
        }
    }
}
