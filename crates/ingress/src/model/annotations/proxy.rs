//! The `proxy` group settings Ferry implements: `proxy-body-size` and the
//! three upstream timeouts. They are plain numbers in nginx syntax; the
//! parsing lives here so the units are decided in one place.

use std::time::Duration;

use super::IngressAnnotations;
use super::reader::Reader;

pub(super) const KEYS: &[&str] = &[
    "proxy-body-size",
    "proxy-connect-timeout",
    "proxy-read-timeout",
    "proxy-send-timeout",
];

pub(super) fn parse(r: &mut Reader, a: &mut IngressAnnotations) {
    a.body_limit = r.string("proxy-body-size").and_then(|raw| {
        let size = body_size(&raw.value);
        if size.is_none() {
            r.invalid(&raw, Some("must be a size like 8m, 512k or 0"));
        }
        size
    });
    a.connect_timeout = timeout(r, "proxy-connect-timeout");
    a.read_timeout = timeout(r, "proxy-read-timeout");
    a.send_timeout = timeout(r, "proxy-send-timeout");
}

/// nginx's `client_max_body_size` syntax as ingress-nginx validates it
/// (`^(?i)\d+[bkmg]?$`); `Some(None)` is `0`, unlimited.
fn body_size(v: &str) -> Option<Option<u64>> {
    let (digits, unit) = match v.as_bytes().last()? {
        b'0'..=b'9' => (v, 1),
        b'b' | b'B' => (&v[..v.len() - 1], 1),
        b'k' | b'K' => (&v[..v.len() - 1], 1 << 10),
        b'm' | b'M' => (&v[..v.len() - 1], 1 << 20),
        b'g' | b'G' => (&v[..v.len() - 1], 1 << 30),
        _ => return None,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = digits.parse::<u64>().ok()?.checked_mul(unit)?;
    Some((n != 0).then_some(n))
}

/// Unitless seconds ("All timeout values are unitless and in seconds");
/// a trailing `s` is accepted too. Zero would fail every request, so it
/// is refused.
fn timeout(r: &mut Reader, name: &str) -> Option<Duration> {
    let raw = r.string(name)?;
    let digits = raw.value.strip_suffix('s').unwrap_or(&raw.value);
    let secs = digits
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| digits.parse::<u64>().ok())
        .flatten()
        .filter(|s| *s > 0);
    if secs.is_none() {
        r.invalid(&raw, Some("must be a positive number of seconds"));
    }
    secs.map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{diag, location, parse_map};
    use super::*;

    #[test]
    fn body_sizes() {
        for (value, expected) in [
            ("0", None),
            ("100", Some(100)),
            ("8b", Some(8)),
            ("8k", Some(8 << 10)),
            ("8M", Some(8 << 20)),
            ("2g", Some(2 << 30)),
        ] {
            let (a, d) = parse_map(&[("nginx.ingress.kubernetes.io/proxy-body-size", value)]);
            assert_eq!(a.body_limit, Some(expected), "{value}");
            assert!(d.is_empty(), "{value}");
        }
    }

    #[test]
    fn body_size_apply() {
        let mut loc = location();
        assert_eq!(loc.body_limit, Some(1024 * 1024));
        let (a, _) = parse_map(&[]);
        a.apply(&mut loc);
        assert_eq!(loc.body_limit, Some(1024 * 1024));
        let (a, _) = parse_map(&[("nginx.ingress.kubernetes.io/proxy-body-size", "0")]);
        a.apply(&mut loc);
        assert_eq!(loc.body_limit, None);
        let (a, _) = parse_map(&[("nginx.ingress.kubernetes.io/proxy-body-size", "5m")]);
        a.apply(&mut loc);
        assert_eq!(loc.body_limit, Some(5 << 20));
    }

    #[test]
    fn body_size_invalid() {
        for value in [
            "12x",
            "m",
            "-1",
            "1.5m",
            "99999999999999999999",
            "20000000000000g",
        ] {
            let (a, d) = parse_map(&[("nginx.ingress.kubernetes.io/proxy-body-size", value)]);
            assert_eq!(a.body_limit, None, "{value}");
            assert_eq!(diag(&d), vec!["InvalidAnnotation"], "{value}");
        }
        let (_, d) = parse_map(&[("nginx.ingress.kubernetes.io/proxy-body-size", "12x")]);
        assert_eq!(
            d[0].message,
            "annotation nginx.ingress.kubernetes.io/proxy-body-size contains invalid value \"12x\": \
             must be a size like 8m, 512k or 0"
        );
    }

    #[test]
    fn timeouts() {
        let (a, d) = parse_map(&[
            ("nginx.ingress.kubernetes.io/proxy-connect-timeout", "10"),
            ("nginx.ingress.kubernetes.io/proxy-read-timeout", "120s"),
            ("nginx.ingress.kubernetes.io/proxy-send-timeout", "30"),
        ]);
        assert!(d.is_empty());
        let mut loc = location();
        a.apply(&mut loc);
        assert_eq!(loc.connect_timeout, Duration::from_secs(10));
        assert_eq!(loc.read_timeout, Duration::from_secs(120));
        assert_eq!(loc.send_timeout, Duration::from_secs(30));
    }

    #[test]
    fn timeouts_invalid_keep_defaults() {
        let (a, d) = parse_map(&[
            ("nginx.ingress.kubernetes.io/proxy-connect-timeout", "5m"),
            ("nginx.ingress.kubernetes.io/proxy-read-timeout", "0"),
            ("nginx.ingress.kubernetes.io/proxy-send-timeout", "-3"),
        ]);
        assert_eq!(diag(&d), vec!["InvalidAnnotation"; 3]);
        let mut loc = location();
        a.apply(&mut loc);
        assert_eq!(loc.connect_timeout, Duration::from_secs(5));
        assert_eq!(loc.read_timeout, Duration::from_secs(60));
        assert_eq!(loc.send_timeout, Duration::from_secs(60));
    }
}
