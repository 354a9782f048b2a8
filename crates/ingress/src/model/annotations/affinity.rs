//! The `sessionaffinity` group: `affinity: cookie` and the
//! `session-cookie-*` settings Ferry implements (name, path, expires,
//! max-age). Affinity wins over hashing and the balance policy, so it is
//! kept on the location rather than folded into `Balance`.

use super::IngressAnnotations;
use super::reader::{INVALID, Raw, Reader};
use crate::model::route::CookieAffinity;

pub(super) const KEYS: &[&str] = &[
    "affinity",
    "session-cookie-name",
    "session-cookie-path",
    "session-cookie-expires",
    "session-cookie-max-age",
];

/// ingress-nginx's `defaultAffinityCookieName`.
pub(super) const DEFAULT_COOKIE: &str = "INGRESSCOOKIE";

/// Must run after the rewrite group (reads `use_regex`).
pub(super) fn parse(r: &mut Reader, a: &mut IngressAnnotations) {
    let Some(raw) = r.string("affinity") else {
        return;
    };
    if raw.value != "cookie" {
        r.invalid(&raw, Some("the only affinity type is \"cookie\""));
        return;
    }
    let name = r
        .string("session-cookie-name")
        .and_then(|raw| {
            let ok = super::reader::is_token(&raw.value);
            check(r, raw, ok, "not a valid cookie name")
        })
        .unwrap_or_else(|| DEFAULT_COOKIE.to_string());
    let path = r.string("session-cookie-path").and_then(|raw| {
        // ingress-nginx's `URLIsValidRegex`, and a path.
        let ok = raw.value.starts_with('/') && super::reader::only(&raw.value, "-._~/:,?&=");
        check(r, raw, ok, "must be a path")
    });
    if path.is_none() && a.use_regex {
        r.warn(
            INVALID,
            format!(
                "annotation {}session-cookie-path should be set when use-regex is true",
                raw.key.trim_end_matches("affinity")
            ),
        );
    }
    a.affinity = Some(CookieAffinity {
        name,
        path,
        expires: seconds(r, "session-cookie-expires"),
        max_age: seconds(r, "session-cookie-max-age"),
    });
}

fn check(r: &mut Reader, raw: Raw, ok: bool, why: &str) -> Option<String> {
    if ok {
        Some(raw.value)
    } else {
        r.invalid(&raw, Some(why));
        None
    }
}

/// `^(0|-?[1-9]\d*)$` as an i64.
fn seconds(r: &mut Reader, name: &str) -> Option<i64> {
    let raw = r.string(name)?;
    let digits = raw.value.strip_prefix('-').unwrap_or(&raw.value);
    let shape = raw.value == "0"
        || (!digits.is_empty()
            && !digits.starts_with('0')
            && digits.bytes().all(|b| b.is_ascii_digit()));
    match raw.value.parse::<i64>() {
        Ok(n) if shape => Some(n),
        _ => {
            r.invalid(&raw, Some("must be a number of seconds"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{diag, location, parse_map};
    use super::*;

    #[test]
    fn cookie_affinity_defaults() {
        let (a, d) = parse_map(&[("nginx.ingress.kubernetes.io/affinity", "cookie")]);
        assert!(d.is_empty());
        let expected = CookieAffinity {
            name: "INGRESSCOOKIE".into(),
            path: None,
            expires: None,
            max_age: None,
        };
        assert_eq!(a.affinity.as_ref(), Some(&expected));
        let mut loc = location();
        a.apply(&mut loc);
        assert_eq!(loc.affinity, Some(expected));
    }

    #[test]
    fn cookie_affinity_settings() {
        let (a, d) = parse_map(&[
            ("nginx.ingress.kubernetes.io/affinity", "cookie"),
            ("nginx.ingress.kubernetes.io/session-cookie-name", "route"),
            ("nginx.ingress.kubernetes.io/session-cookie-path", "/app"),
            (
                "nginx.ingress.kubernetes.io/session-cookie-expires",
                "172800",
            ),
            ("nginx.ingress.kubernetes.io/session-cookie-max-age", "-1"),
        ]);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(
            a.affinity,
            Some(CookieAffinity {
                name: "route".into(),
                path: Some("/app".into()),
                expires: Some(172800),
                max_age: Some(-1),
            })
        );
    }

    #[test]
    fn affinity_invalid_values() {
        let (a, d) = parse_map(&[("nginx.ingress.kubernetes.io/affinity", "ip")]);
        assert_eq!(a.affinity, None);
        assert_eq!(diag(&d), vec!["InvalidAnnotation"]);
        let (a, d) = parse_map(&[
            ("nginx.ingress.kubernetes.io/affinity", "cookie"),
            ("nginx.ingress.kubernetes.io/session-cookie-name", "a;b"),
            ("nginx.ingress.kubernetes.io/session-cookie-path", "app"),
            ("nginx.ingress.kubernetes.io/session-cookie-expires", "01"),
            ("nginx.ingress.kubernetes.io/session-cookie-max-age", "1h"),
        ]);
        let c = a.affinity.expect("cookie affinity");
        assert_eq!(
            (c.name.as_str(), c.path, c.expires, c.max_age),
            ("INGRESSCOOKIE", None, None, None)
        );
        assert_eq!(diag(&d), vec!["InvalidAnnotation"; 4]);
    }

    #[test]
    fn session_cookie_settings_without_affinity_are_ignored() {
        let (a, d) = parse_map(&[("nginx.ingress.kubernetes.io/session-cookie-name", "x")]);
        assert_eq!(a.affinity, None);
        assert!(d.is_empty());
    }

    #[test]
    fn affinity_with_use_regex_wants_a_cookie_path() {
        let (a, d) = parse_map(&[
            ("nginx.ingress.kubernetes.io/affinity", "cookie"),
            ("nginx.ingress.kubernetes.io/use-regex", "true"),
        ]);
        assert!(a.affinity.is_some());
        assert_eq!(
            d[0].message,
            "annotation nginx.ingress.kubernetes.io/session-cookie-path should be set when use-regex is true"
        );
    }
}
