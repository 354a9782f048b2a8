//! Source-address access control: `allowlist-source-range` (alias
//! `whitelist-source-range`) and `denylist-source-range`. Kept apart
//! because it is the one group where a bad value must fail closed: an
//! allow list with nothing usable denies the location instead of opening it.

use super::IngressAnnotations;
use super::reader::{Raw, Reader};
use crate::model::route::{Access, Cidr};

pub(super) const KEYS: &[&str] = &[
    "allowlist-source-range",
    "whitelist-source-range",
    "denylist-source-range",
];

pub(super) fn parse(r: &mut Reader, a: &mut IngressAnnotations) {
    let allow = r
        .string_aliased("allowlist-source-range", "whitelist-source-range")
        .map(|raw| (cidrs(r, &raw), raw));
    let deny = r
        .string("denylist-source-range")
        .map(|raw| cidrs(r, &raw))
        .unwrap_or_default();
    a.access = match allow {
        Some((allow, raw)) if allow.is_empty() => Access::Denied(format!(
            "annotation {} does not contain a valid IP address or network",
            raw.key
        )),
        Some((allow, _)) => Access::Rules { allow, deny },
        None if deny.is_empty() => Access::All,
        // Everyone but the denied: an explicit allow-all keeps the
        // meaning of `Rules` ("only these") unambiguous.
        None => Access::Rules {
            allow: vec![
                Cidr {
                    addr: std::net::Ipv4Addr::UNSPECIFIED.into(),
                    prefix: 0,
                },
                Cidr {
                    addr: std::net::Ipv6Addr::UNSPECIFIED.into(),
                    prefix: 0,
                },
            ],
            deny,
        },
    };
}

/// The comma-separated entries that parse; the others are reported.
fn cidrs(r: &mut Reader, raw: &Raw) -> Vec<Cidr> {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for entry in raw
        .value
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        match Cidr::parse(entry) {
            Some(c) => good.push(c),
            None => bad.push(format!("{entry:?}")),
        }
    }
    if !bad.is_empty() {
        let why = format!("not an IP address or network, skipped: {}", bad.join(", "));
        r.invalid(raw, Some(&why));
    }
    good
}

#[cfg(test)]
mod tests {
    use super::super::tests::{diag, location, parse_map};
    use super::*;

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).expect("cidr")
    }

    #[test]
    fn allowlist() {
        let (a, d) = parse_map(&[(
            "nginx.ingress.kubernetes.io/allowlist-source-range",
            "10.0.0.0/24, 172.10.0.1,2001:db8::/32",
        )]);
        assert!(d.is_empty());
        let expected = Access::Rules {
            allow: vec![
                cidr("10.0.0.0/24"),
                cidr("172.10.0.1"),
                cidr("2001:db8::/32"),
            ],
            deny: vec![],
        };
        assert_eq!(a.access, expected);
        let mut loc = location();
        a.apply(&mut loc);
        assert_eq!(loc.access, expected);
    }

    #[test]
    fn whitelist_is_an_alias_and_allowlist_wins() {
        let (a, _) = parse_map(&[(
            "nginx.ingress.kubernetes.io/whitelist-source-range",
            "10.0.0.1",
        )]);
        assert_eq!(
            a.access,
            Access::Rules {
                allow: vec![cidr("10.0.0.1")],
                deny: vec![]
            }
        );
        let (a, _) = parse_map(&[
            (
                "nginx.ingress.kubernetes.io/whitelist-source-range",
                "10.0.0.1",
            ),
            (
                "nginx.ingress.kubernetes.io/allowlist-source-range",
                "10.0.0.2",
            ),
        ]);
        assert_eq!(
            a.access,
            Access::Rules {
                allow: vec![cidr("10.0.0.2")],
                deny: vec![]
            }
        );
    }

    #[test]
    fn allowlist_without_usable_entry_denies() {
        let (a, d) = parse_map(&[(
            "nginx.ingress.kubernetes.io/allowlist-source-range",
            "nonsense, 10.0.0.0/33",
        )]);
        assert!(matches!(a.access, Access::Denied(_)), "{:?}", a.access);
        assert_eq!(diag(&d), vec!["InvalidAnnotation"]);
        let mut loc = location();
        a.apply(&mut loc);
        assert!(matches!(loc.access, Access::Denied(_)));
    }

    #[test]
    fn allowlist_bad_entries_skipped() {
        let (a, d) = parse_map(&[(
            "nginx.ingress.kubernetes.io/allowlist-source-range",
            "10.0.0.1,bogus,",
        )]);
        assert_eq!(
            a.access,
            Access::Rules {
                allow: vec![cidr("10.0.0.1")],
                deny: vec![]
            }
        );
        assert_eq!(
            d[0].message,
            "annotation nginx.ingress.kubernetes.io/allowlist-source-range contains invalid value \
             \"10.0.0.1,bogus,\": not an IP address or network, skipped: \"bogus\""
        );
    }

    #[test]
    fn denylist() {
        let (a, d) = parse_map(&[(
            "nginx.ingress.kubernetes.io/denylist-source-range",
            "192.0.2.0/24,bad",
        )]);
        assert_eq!(diag(&d), vec!["InvalidAnnotation"]);
        let Access::Rules { allow, deny } = &a.access else {
            panic!("rules expected, got {:?}", a.access);
        };
        assert_eq!(deny, &vec![cidr("192.0.2.0/24")]);
        // Everyone else is allowed, v4 and v6.
        assert!(
            allow
                .iter()
                .any(|c| c.contains("8.8.8.8".parse().expect("ip")))
        );
        assert!(
            allow
                .iter()
                .any(|c| c.contains("2001:db8::1".parse().expect("ip")))
        );
        // Deny with allow.
        let (a, _) = parse_map(&[
            (
                "nginx.ingress.kubernetes.io/denylist-source-range",
                "10.0.0.5",
            ),
            (
                "nginx.ingress.kubernetes.io/allowlist-source-range",
                "10.0.0.0/8",
            ),
        ]);
        assert_eq!(
            a.access,
            Access::Rules {
                allow: vec![cidr("10.0.0.0/8")],
                deny: vec![cidr("10.0.0.5")]
            }
        );
        // A deny list with nothing usable changes nothing.
        let (a, d) = parse_map(&[("nginx.ingress.kubernetes.io/denylist-source-range", "x")]);
        assert_eq!(a.access, Access::All);
        assert_eq!(diag(&d), vec!["InvalidAnnotation"]);
    }
}
