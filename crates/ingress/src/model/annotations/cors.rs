//! The `cors` group (cors/main.go): `enable-cors` and its settings, with
//! ingress-nginx's defaults and validation. The validation is not cosmetic:
//! the values are echoed in response headers, so anything outside the
//! expected shapes falls back to the default.

use std::sync::LazyLock;

use regex::Regex;

use super::IngressAnnotations;
use super::reader::{Raw, Reader};
use crate::model::route::Cors;

pub(super) const KEYS: &[&str] = &[
    "enable-cors",
    "cors-allow-origin",
    "cors-allow-methods",
    "cors-allow-headers",
    "cors-allow-credentials",
    "cors-expose-headers",
    "cors-max-age",
];

pub(super) const DEFAULT_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
pub(super) const DEFAULT_HEADERS: &str = "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization";
pub(super) const DEFAULT_MAX_AGE: u64 = 1_728_000;

// Constant patterns: `None` (never, the tests compile them) would only
// make every value invalid, never panic.
static ORIGIN: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^(https?://(\*\.)?[A-Za-z0-9\-\.]*(:[0-9]+)?|\*)?$").ok());
static METHODS: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"^([A-Za-z]+,?\s?)+$").ok());
static HEADERS: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^([A-Za-z0-9\-_]+,?\s?)+$").ok());
static EXPOSE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^(([A-Za-z0-9\-_]+|\*),?\s?)+$").ok());

fn is_match(re: &LazyLock<Option<Regex>>, s: &str) -> bool {
    re.as_ref().is_some_and(|re| re.is_match(s))
}

pub(super) fn parse(r: &mut Reader, a: &mut IngressAnnotations) {
    if r.bool("enable-cors") != Some(true) {
        return;
    }
    let allow_origin = r
        .string("cors-allow-origin")
        .map_or_else(|| vec!["*".to_string()], |raw| origins(r, &raw));
    let allow_methods = matching(r, "cors-allow-methods", &METHODS, DEFAULT_METHODS);
    let allow_headers = matching(r, "cors-allow-headers", &HEADERS, DEFAULT_HEADERS);
    let expose_headers = matching(r, "cors-expose-headers", &EXPOSE, "");
    a.cors = Some(Cors {
        allow_origin,
        allow_methods,
        allow_headers,
        allow_credentials: r.bool("cors-allow-credentials").unwrap_or(true),
        expose_headers,
        max_age: r.int::<u64>("cors-max-age").unwrap_or(DEFAULT_MAX_AGE),
    });
}

/// The comma-separated origins: `*` anywhere means only `*`; entries that
/// are not `http(s)://[*.]host[:port]` are skipped (and reported). An
/// empty result matches no origin, as in ingress-nginx.
fn origins(r: &mut Reader, raw: &Raw) -> Vec<String> {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for origin in raw
        .value
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
    {
        if origin == "*" {
            return vec!["*".to_string()];
        }
        if is_match(&ORIGIN, origin) {
            good.push(origin.to_string());
        } else {
            bad.push(format!("{origin:?}"));
        }
    }
    if !bad.is_empty() {
        let why = format!("not an http(s) origin, skipped: {}", bad.join(", "));
        r.invalid(raw, Some(&why));
    }
    good
}

fn matching(r: &mut Reader, name: &str, re: &LazyLock<Option<Regex>>, default: &str) -> String {
    match r.string(name) {
        Some(raw) if is_match(re, &raw.value) => raw.value,
        Some(raw) => {
            r.invalid(&raw, None);
            default.to_string()
        }
        None => default.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{diag, location, parse_map};
    use super::*;

    #[test]
    fn cors_defaults() {
        let (a, d) = parse_map(&[("nginx.ingress.kubernetes.io/enable-cors", "true")]);
        assert!(d.is_empty());
        let expected = Cors {
            allow_origin: vec!["*".into()],
            allow_methods: "GET, PUT, POST, DELETE, PATCH, OPTIONS".into(),
            allow_headers: "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization".into(),
            allow_credentials: true,
            expose_headers: String::new(),
            max_age: 1728000,
        };
        assert_eq!(a.cors.as_ref(), Some(&expected));
        let mut loc = location();
        a.apply(&mut loc);
        assert_eq!(loc.cors, Some(expected));
    }

    #[test]
    fn cors_disabled_ignores_settings() {
        let (a, d) = parse_map(&[(
            "nginx.ingress.kubernetes.io/cors-allow-origin",
            "https://a.example",
        )]);
        assert_eq!(a.cors, None);
        assert!(d.is_empty());
        let (a, _) = parse_map(&[("nginx.ingress.kubernetes.io/enable-cors", "false")]);
        assert_eq!(a.cors, None);
    }

    #[test]
    fn cors_settings() {
        let (a, d) = parse_map(&[
            ("nginx.ingress.kubernetes.io/enable-cors", "true"),
            (
                "nginx.ingress.kubernetes.io/cors-allow-origin",
                "https://origin-site.com:4443, http://origin-site.com, https://*.example.org",
            ),
            (
                "nginx.ingress.kubernetes.io/cors-allow-methods",
                "PUT, GET, POST",
            ),
            (
                "nginx.ingress.kubernetes.io/cors-allow-headers",
                "X-Forwarded-For, X-app123-XPTO",
            ),
            (
                "nginx.ingress.kubernetes.io/cors-allow-credentials",
                "false",
            ),
            (
                "nginx.ingress.kubernetes.io/cors-expose-headers",
                "*, X-CustomResponseHeader",
            ),
            ("nginx.ingress.kubernetes.io/cors-max-age", "600"),
        ]);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(
            a.cors,
            Some(Cors {
                allow_origin: vec![
                    "https://origin-site.com:4443".into(),
                    "http://origin-site.com".into(),
                    "https://*.example.org".into(),
                ],
                allow_methods: "PUT, GET, POST".into(),
                allow_headers: "X-Forwarded-For, X-app123-XPTO".into(),
                allow_credentials: false,
                expose_headers: "*, X-CustomResponseHeader".into(),
                max_age: 600,
            })
        );
    }

    #[test]
    fn cors_star_origin_wins() {
        let (a, _) = parse_map(&[
            ("nginx.ingress.kubernetes.io/enable-cors", "true"),
            (
                "nginx.ingress.kubernetes.io/cors-allow-origin",
                "https://a.example, *",
            ),
        ]);
        assert_eq!(a.cors.expect("cors").allow_origin, vec!["*".to_string()]);
    }

    #[test]
    fn cors_invalid_values_default() {
        let (a, d) = parse_map(&[
            ("nginx.ingress.kubernetes.io/enable-cors", "true"),
            (
                "nginx.ingress.kubernetes.io/cors-allow-origin",
                "https://ok.example,https://$host,ftp://x",
            ),
            ("nginx.ingress.kubernetes.io/cors-allow-methods", "GET;rm"),
            (
                "nginx.ingress.kubernetes.io/cors-allow-headers",
                "X-A, $pid",
            ),
            (
                "nginx.ingress.kubernetes.io/cors-allow-credentials",
                "maybe",
            ),
            ("nginx.ingress.kubernetes.io/cors-expose-headers", "X-A:"),
            ("nginx.ingress.kubernetes.io/cors-max-age", "-1"),
        ]);
        assert_eq!(diag(&d), vec!["InvalidAnnotation"; 6]);
        let c = a.cors.expect("cors");
        assert_eq!(c.allow_origin, vec!["https://ok.example".to_string()]);
        assert_eq!(c.allow_methods, DEFAULT_METHODS);
        assert_eq!(c.allow_headers, DEFAULT_HEADERS);
        assert!(c.allow_credentials);
        assert_eq!(c.expose_headers, "");
        assert_eq!(c.max_age, DEFAULT_MAX_AGE);
        // Nothing usable: no origin matches.
        let (a, _) = parse_map(&[
            ("nginx.ingress.kubernetes.io/enable-cors", "true"),
            ("nginx.ingress.kubernetes.io/cors-allow-origin", "nope://x"),
        ]);
        assert!(a.cors.expect("cors").allow_origin.is_empty());
    }

    #[test]
    fn cors_patterns_compile() {
        for re in [&ORIGIN, &METHODS, &HEADERS, &EXPOSE] {
            assert!(re.is_some());
        }
    }
}
