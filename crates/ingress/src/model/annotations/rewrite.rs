//! The `rewrite` group of ingress-nginx (rewrite/main.go): `rewrite-target`,
//! `use-regex`, `app-root`, `ssl-redirect`, `force-ssl-redirect`. They are
//! parsed together because ingress-nginx does, and because `use-regex` and
//! `rewrite-target` together decide whether a host's paths are regexes.

use super::IngressAnnotations;
use super::reader::{Raw, Reader};

pub(super) const KEYS: &[&str] = &[
    "rewrite-target",
    "use-regex",
    "app-root",
    "ssl-redirect",
    "force-ssl-redirect",
];

/// ingress-nginx's `RegexPathWithCapture` (`^/?[-._~a-zA-Z0-9/:$]*$`).
fn path_with_capture(s: &str) -> bool {
    super::reader::only(s, "-._~/:$")
}

pub(super) fn parse(r: &mut Reader, a: &mut IngressAnnotations) {
    a.rewrite_target = r
        .string("rewrite-target")
        .and_then(|raw| rewrite_target(r, raw));
    a.use_regex = r.bool("use-regex").unwrap_or(false);
    a.app_root = r.string("app-root").and_then(|raw| app_root(r, raw));
    a.ssl_redirect = r.bool("ssl-redirect");
    a.force_ssl_redirect = r.bool("force-ssl-redirect").unwrap_or(false);
}

fn rewrite_target(r: &mut Reader, raw: Raw) -> Option<String> {
    if !path_with_capture(&raw.value) {
        r.invalid(&raw, None);
        return None;
    }
    let v = raw.value.as_str();
    if v.starts_with("http:") || v.starts_with("https:") {
        // nginx turns such a rewrite into a 302 to the client.
        r.unsupported(
            &raw,
            "a rewrite to an absolute URL (a redirect in nginx) is not supported; \
             use temporal-redirect or permanent-redirect",
        );
        return None;
    }
    let bytes = v.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b != b'$' {
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'1'..=b'9') => {}
            Some(c) if c.is_ascii_alphanumeric() || *c == b'_' => {
                r.unsupported(
                    &raw,
                    "nginx variables are not supported in rewrite-target, only the capture groups $1 to $9",
                );
                return None;
            }
            _ => {
                r.invalid(
                    &raw,
                    Some("\"$\" must be followed by a capture group number"),
                );
                return None;
            }
        }
    }
    Some(raw.value)
}

fn app_root(r: &mut Reader, raw: Raw) -> Option<String> {
    let v = raw.value.as_str();
    if v.contains("://") {
        r.invalid(&raw, Some("app-root only allows absolute paths, not URLs"));
        return None;
    }
    if !v.starts_with('/') || v.starts_with("//") || !path_with_capture(v) {
        r.invalid(&raw, Some("app-root must be an absolute path"));
        return None;
    }
    Some(raw.value)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{diag, parse_map};

    #[test]
    fn rewrite_target_and_use_regex() {
        let (a, d) = parse_map(&[
            ("nginx.ingress.kubernetes.io/rewrite-target", " /$2 "),
            ("nginx.ingress.kubernetes.io/use-regex", "true"),
        ]);
        assert_eq!(a.rewrite_target.as_deref(), Some("/$2"));
        assert!(a.use_regex);
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn rewrite_target_invalid_values() {
        for (value, reason) in [
            ("/foo bar", "InvalidAnnotation"),
            ("/foo?x=$1", "InvalidAnnotation"),
            ("/foo/$", "InvalidAnnotation"),
            ("/$0", "UnsupportedAnnotationValue"),
            ("/$host/$1", "UnsupportedAnnotationValue"),
            ("https://other/$1", "UnsupportedAnnotationValue"),
        ] {
            let (a, d) = parse_map(&[("nginx.ingress.kubernetes.io/rewrite-target", value)]);
            assert_eq!(a.rewrite_target, None, "{value}");
            assert_eq!(diag(&d), vec![reason], "{value}: {d:?}");
        }
    }

    #[test]
    fn use_regex_go_booleans() {
        for (value, expected) in [("1", true), ("T", true), ("True", true), ("f", false)] {
            let (a, d) = parse_map(&[("nginx.ingress.kubernetes.io/use-regex", value)]);
            assert_eq!(a.use_regex, expected, "{value}");
            assert!(d.is_empty());
        }
        let (a, d) = parse_map(&[("nginx.ingress.kubernetes.io/use-regex", "yes")]);
        assert!(!a.use_regex);
        assert_eq!(
            d[0].message,
            "annotation nginx.ingress.kubernetes.io/use-regex contains invalid value \"yes\""
        );
    }

    #[test]
    fn app_root_paths_only() {
        let (a, d) = parse_map(&[("nginx.ingress.kubernetes.io/app-root", "/app1")]);
        assert_eq!(a.app_root.as_deref(), Some("/app1"));
        assert!(d.is_empty());
        for value in [
            "http://approot.bar.com/app1",
            "app1",
            "//evil.example",
            "/a b",
        ] {
            let (a, d) = parse_map(&[("nginx.ingress.kubernetes.io/app-root", value)]);
            assert_eq!(a.app_root, None, "{value}");
            assert_eq!(diag(&d), vec!["InvalidAnnotation"], "{value}");
        }
    }

    #[test]
    fn ssl_redirects() {
        let (a, _) = parse_map(&[]);
        assert_eq!(a.ssl_redirect, None);
        assert!(!a.force_ssl_redirect);
        let (a, d) = parse_map(&[
            ("nginx.ingress.kubernetes.io/ssl-redirect", "false"),
            ("nginx.ingress.kubernetes.io/force-ssl-redirect", "true"),
        ]);
        assert_eq!(a.ssl_redirect, Some(false));
        assert!(a.force_ssl_redirect);
        assert!(d.is_empty());
        let (a, d) = parse_map(&[("nginx.ingress.kubernetes.io/ssl-redirect", "nope")]);
        assert_eq!(a.ssl_redirect, None);
        assert_eq!(diag(&d), vec!["InvalidAnnotation"]);
    }
}
