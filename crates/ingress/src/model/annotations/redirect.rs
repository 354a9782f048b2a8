//! The `redirect` group (redirect/redirect.go): `permanent-redirect`,
//! `permanent-redirect-code`, `temporal-redirect`. The whole location
//! answers with the redirect; temporal wins over permanent, as ingress-nginx
//! evaluates it first.

use super::IngressAnnotations;
use super::reader::{Raw, Reader};

pub(super) const KEYS: &[&str] = &[
    "permanent-redirect",
    "permanent-redirect-code",
    "temporal-redirect",
];

const DEFAULT_PERMANENT_CODE: u16 = 301;

pub(super) fn parse(r: &mut Reader, a: &mut IngressAnnotations) {
    a.temporal_redirect = r.string("temporal-redirect").and_then(|raw| url(r, raw));
    let permanent = r.string("permanent-redirect").and_then(|raw| url(r, raw));
    a.permanent_redirect = permanent.map(|u| (permanent_code(r), u));
}

/// `permanent-redirect-code`, read only when there is a redirect to use it.
fn permanent_code(r: &mut Reader) -> u16 {
    let Some(raw) = r.raw("permanent-redirect-code") else {
        return DEFAULT_PERMANENT_CODE;
    };
    match raw.value.parse::<u16>() {
        // ingress-nginx: `prc < 300 || prc > 308` → 301.
        Ok(code) if (300..=308).contains(&code) => code,
        _ => {
            r.invalid(
                &raw,
                Some("must be a redirect code from 300 to 308; using 301"),
            );
            DEFAULT_PERMANENT_CODE
        }
    }
}

/// ingress-nginx's `isValidURL`: the scheme must be http(s). Ferry also
/// wants a host, and no nginx variables (nothing expands them).
fn url(r: &mut Reader, raw: Raw) -> Option<String> {
    if raw.value.contains('$') {
        r.unsupported(&raw, "nginx variables are not supported in redirect URLs");
        return None;
    }
    let ok = http::Uri::try_from(raw.value.as_str()).is_ok_and(|u| {
        matches!(u.scheme_str(), Some("http" | "https"))
            && u.authority().is_some_and(|a| !a.host().is_empty())
    });
    if !ok {
        r.invalid(&raw, Some("must be an http or https URL"));
        return None;
    }
    Some(raw.value)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{diag, location, parse_map};

    #[test]
    fn permanent_redirect_default_code() {
        let (a, d) = parse_map(&[(
            "nginx.ingress.kubernetes.io/permanent-redirect",
            "https://www.google.com",
        )]);
        assert!(d.is_empty());
        assert_eq!(
            a.permanent_redirect,
            Some((301, "https://www.google.com".to_string()))
        );
        let mut loc = location();
        a.apply(&mut loc);
        assert_eq!(loc.redirect, Some((301, "https://www.google.com".into())));
    }

    #[test]
    fn permanent_redirect_code() {
        let (a, d) = parse_map(&[
            (
                "nginx.ingress.kubernetes.io/permanent-redirect",
                "http://x.example/a?b=c",
            ),
            ("nginx.ingress.kubernetes.io/permanent-redirect-code", "308"),
        ]);
        assert!(d.is_empty());
        assert_eq!(
            a.permanent_redirect,
            Some((308, "http://x.example/a?b=c".into()))
        );
        for code in ["200", "309", "abc"] {
            let (a, d) = parse_map(&[
                (
                    "nginx.ingress.kubernetes.io/permanent-redirect",
                    "http://x.example",
                ),
                ("nginx.ingress.kubernetes.io/permanent-redirect-code", code),
            ]);
            assert_eq!(a.permanent_redirect, Some((301, "http://x.example".into())));
            assert_eq!(diag(&d), vec!["InvalidAnnotation"], "{code}");
        }
    }

    #[test]
    fn temporal_wins_over_permanent() {
        let (a, d) = parse_map(&[
            (
                "nginx.ingress.kubernetes.io/permanent-redirect",
                "https://p.example",
            ),
            (
                "nginx.ingress.kubernetes.io/temporal-redirect",
                "https://t.example/x",
            ),
        ]);
        assert!(d.is_empty());
        assert_eq!(a.temporal_redirect.as_deref(), Some("https://t.example/x"));
        let mut loc = location();
        a.apply(&mut loc);
        assert_eq!(loc.redirect, Some((302, "https://t.example/x".into())));
    }

    #[test]
    fn redirect_urls_must_be_http() {
        for (value, reason) in [
            ("ftp://x.example", "InvalidAnnotation"),
            ("/relative", "InvalidAnnotation"),
            ("https://", "InvalidAnnotation"),
            (
                "https://x.example$request_uri",
                "UnsupportedAnnotationValue",
            ),
        ] {
            let (a, d) = parse_map(&[("nginx.ingress.kubernetes.io/temporal-redirect", value)]);
            assert_eq!(a.temporal_redirect, None, "{value}");
            assert_eq!(diag(&d), vec![reason], "{value}");
        }
    }
}
