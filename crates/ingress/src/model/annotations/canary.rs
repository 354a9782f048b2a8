//! The `canary` group: `canary: "true"` marks an Ingress whose backends take
//! a share of another Ingress's traffic for the same host and path, by
//! header, cookie or weight. Only parsed here; the router builder attaches
//! the canary to the primary location.

use super::reader::{INVALID, Raw, Reader};
use super::{CanarySpec, IngressAnnotations};

pub(super) const KEYS: &[&str] = &[
    "canary",
    "canary-weight",
    "canary-weight-total",
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-cookie",
];

const DEFAULT_TOTAL: u32 = 100;

pub(super) fn parse(r: &mut Reader, a: &mut IngressAnnotations) {
    let enabled = r.bool("canary").unwrap_or(false);
    let header = r.string("canary-by-header").and_then(|raw| {
        let ok = http::HeaderName::from_bytes(raw.value.as_bytes()).is_ok();
        check(r, raw, ok, "not a valid header name")
    });
    let header_value = r.string("canary-by-header-value").and_then(|raw| {
        let ok = http::HeaderValue::from_str(&raw.value).is_ok();
        check(r, raw, ok, "not a valid header value")
    });
    let cookie = r.string("canary-by-cookie").and_then(|raw| {
        let ok = super::reader::is_token(&raw.value);
        check(r, raw, ok, "not a valid cookie name")
    });
    let weight = r.string("canary-weight").and_then(|raw| {
        let w = raw.value.parse::<u32>().ok();
        if w.is_none() {
            r.invalid(&raw, Some("must be a number from 0 to the weight total"));
        }
        w
    });
    // balancer.lua: the total is honoured only above 100.
    let weight_total = r
        .int::<i64>("canary-weight-total")
        .filter(|t| *t > i64::from(DEFAULT_TOTAL))
        .map_or(DEFAULT_TOTAL, |t| u32::try_from(t).unwrap_or(u32::MAX));

    if !enabled {
        // ingress-nginx: "configured but not enabled" when any of these
        // is set (a zero weight does not count).
        let set: Vec<String> = [
            "canary-by-header",
            "canary-by-header-value",
            "canary-by-cookie",
            "canary-weight",
        ]
        .iter()
        .filter_map(|name| r.raw(name))
        .filter(|raw| !(raw.key.ends_with("canary-weight") && weight == Some(0)))
        .map(|raw| raw.key)
        .collect();
        if !set.is_empty() {
            let canary_key = set[0]
                .rsplit_once('/')
                .map_or_else(String::new, |(prefix, _)| format!("{prefix}/canary"));
            r.warn(
                INVALID,
                format!(
                    "the annotation {canary_key} does not contain a valid configuration: \
                     configured but not enabled ({} set without {canary_key}: \"true\"); ignored",
                    set.join(", ")
                ),
            );
        }
        return;
    }
    a.canary = Some(CanarySpec {
        header,
        header_value,
        cookie,
        weight: weight.unwrap_or(0).min(weight_total),
        weight_total,
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

#[cfg(test)]
mod tests {
    use super::super::tests::{diag, parse_map};
    use super::*;

    fn spec(weight: u32, weight_total: u32) -> CanarySpec {
        CanarySpec {
            header: None,
            header_value: None,
            cookie: None,
            weight,
            weight_total,
        }
    }

    #[test]
    fn canary_by_weight() {
        let (a, d) = parse_map(&[
            ("nginx.ingress.kubernetes.io/canary", "true"),
            ("nginx.ingress.kubernetes.io/canary-weight", "30"),
        ]);
        assert!(d.is_empty());
        assert_eq!(a.canary, Some(spec(30, 100)));
    }

    #[test]
    fn canary_weight_total_only_above_100() {
        let (a, _) = parse_map(&[
            ("nginx.ingress.kubernetes.io/canary", "true"),
            ("nginx.ingress.kubernetes.io/canary-weight", "30"),
            ("nginx.ingress.kubernetes.io/canary-weight-total", "1000"),
        ]);
        assert_eq!(a.canary, Some(spec(30, 1000)));
        let (a, d) = parse_map(&[
            ("nginx.ingress.kubernetes.io/canary", "true"),
            ("nginx.ingress.kubernetes.io/canary-weight", "80"),
            ("nginx.ingress.kubernetes.io/canary-weight-total", "50"),
        ]);
        assert!(d.is_empty());
        assert_eq!(a.canary, Some(spec(80, 100)));
        // Clamped to the total.
        let (a, _) = parse_map(&[
            ("nginx.ingress.kubernetes.io/canary", "true"),
            ("nginx.ingress.kubernetes.io/canary-weight", "150"),
        ]);
        assert_eq!(a.canary, Some(spec(100, 100)));
    }

    #[test]
    fn canary_by_header_and_cookie() {
        let (a, d) = parse_map(&[
            ("nginx.ingress.kubernetes.io/canary", "true"),
            ("nginx.ingress.kubernetes.io/canary-by-header", "X-Canary"),
            (
                "nginx.ingress.kubernetes.io/canary-by-header-value",
                "us-east",
            ),
            ("nginx.ingress.kubernetes.io/canary-by-cookie", "canary"),
        ]);
        assert!(d.is_empty());
        assert_eq!(
            a.canary,
            Some(CanarySpec {
                header: Some("X-Canary".into()),
                header_value: Some("us-east".into()),
                cookie: Some("canary".into()),
                weight: 0,
                weight_total: 100,
            })
        );
    }

    #[test]
    fn canary_invalid_values() {
        let (a, d) = parse_map(&[
            ("nginx.ingress.kubernetes.io/canary", "true"),
            ("nginx.ingress.kubernetes.io/canary-by-header", "X Canary"),
            ("nginx.ingress.kubernetes.io/canary-by-cookie", "a=b"),
            ("nginx.ingress.kubernetes.io/canary-weight", "-5"),
        ]);
        assert_eq!(a.canary, Some(spec(0, 100)));
        assert_eq!(diag(&d), vec!["InvalidAnnotation"; 3]);
    }

    #[test]
    fn canary_settings_without_canary_true() {
        let (a, d) = parse_map(&[
            ("nginx.ingress.kubernetes.io/canary-by-header", "X-Canary"),
            ("nginx.ingress.kubernetes.io/canary-weight", "10"),
        ]);
        assert_eq!(a.canary, None);
        assert_eq!(diag(&d), vec!["InvalidAnnotation"]);
        assert!(
            d[0].message.contains("configured but not enabled"),
            "{}",
            d[0].message
        );
        assert!(
            d[0].message
                .contains("nginx.ingress.kubernetes.io/canary-by-header")
        );
        let (a, d) = parse_map(&[
            ("nginx.ingress.kubernetes.io/canary", "false"),
            ("nginx.ingress.kubernetes.io/canary-weight", "0"),
        ]);
        assert_eq!(a.canary, None);
        assert!(d.is_empty());
    }
}
