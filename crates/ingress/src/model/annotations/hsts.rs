//! Ferry's opt-in HSTS (`ferry.dev/hsts*`). ingress-nginx only has the
//! ConfigMap keys, and sends HSTS on every HTTPS response; Ferry makes it a
//! per-Ingress choice with conservative defaults (no includeSubDomains, no
//! preload), since both are hard to undo once browsers cache them.

use super::IngressAnnotations;
use super::reader::Reader;
use crate::model::route::Hsts;

pub(super) const DEFAULT_MAX_AGE: u64 = 31_536_000;

pub(super) fn parse(r: &mut Reader, a: &mut IngressAnnotations) {
    if r.bool("ferry.dev/hsts") != Some(true) {
        return;
    }
    a.hsts = Some(Hsts {
        max_age: r
            .int::<u64>("ferry.dev/hsts-max-age")
            .unwrap_or(DEFAULT_MAX_AGE),
        include_subdomains: r.bool("ferry.dev/hsts-include-subdomains").unwrap_or(false),
        preload: r.bool("ferry.dev/hsts-preload").unwrap_or(false),
    });
}

#[cfg(test)]
mod tests {
    use super::super::tests::{diag, location, parse_map};
    use super::*;

    #[test]
    fn hsts_opt_in_defaults() {
        let (a, d) = parse_map(&[("ferry.dev/hsts", "true")]);
        assert!(d.is_empty());
        let expected = Hsts {
            max_age: 31536000,
            include_subdomains: false,
            preload: false,
        };
        assert_eq!(a.hsts.as_ref(), Some(&expected));
        let mut loc = location();
        a.apply(&mut loc);
        assert_eq!(loc.hsts, Some(expected));
    }

    #[test]
    fn hsts_settings() {
        let (a, d) = parse_map(&[
            ("ferry.dev/hsts", "1"),
            ("ferry.dev/hsts-max-age", "600"),
            ("ferry.dev/hsts-include-subdomains", "true"),
            ("ferry.dev/hsts-preload", "True"),
        ]);
        assert!(d.is_empty());
        assert_eq!(
            a.hsts,
            Some(Hsts {
                max_age: 600,
                include_subdomains: true,
                preload: true
            })
        );
    }

    #[test]
    fn hsts_off_by_default_and_invalid_values() {
        let (a, _) = parse_map(&[("ferry.dev/hsts-max-age", "600")]);
        assert_eq!(a.hsts, None);
        // Only Ferry's prefix.
        let (a, _) = parse_map(&[("nginx.ingress.kubernetes.io/hsts", "true")]);
        assert_eq!(a.hsts, None);
        let (a, d) = parse_map(&[("ferry.dev/hsts", "true"), ("ferry.dev/hsts-max-age", "1y")]);
        assert_eq!(a.hsts.map(|h| h.max_age), Some(DEFAULT_MAX_AGE));
        assert_eq!(diag(&d), vec!["InvalidAnnotation"]);
        let (a, d) = parse_map(&[("ferry.dev/hsts", "on")]);
        assert_eq!(a.hsts, None);
        assert_eq!(diag(&d), vec!["InvalidAnnotation"]);
    }
}
