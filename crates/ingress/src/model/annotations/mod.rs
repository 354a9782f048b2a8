//! ingress-nginx annotations, typed. Migrated Ingresses keep their
//! annotations, so Ferry reads them with ingress-nginx's names, prefixes,
//! defaults and validation; a value that fails validation falls back to the
//! default and becomes a [`Diagnostic`] (an Event on the Ingress) instead of
//! failing the Ingress. One submodule per ingress-nginx annotation group;
//! [`reader`] holds the prefix and value rules they share.

mod access;
mod affinity;
pub mod backend;
mod canary;
mod cors;
mod hsts;
mod proxy;
mod reader;
mod redirect;
mod rewrite;
mod snippets;

use std::collections::BTreeMap;
use std::time::Duration;

pub use backend::{HashExprError, HashPart, parse_hash_expr};

use super::route::{Access, BackendProtocol, Balance, CookieAffinity, Cors, Hsts, Location};
use reader::{LEGACY, NGINX, Reader};

/// One problem found in an Ingress's annotations; becomes an Event on the
/// Ingress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub warning: bool,
    /// `InvalidAnnotation`, `UnsupportedAnnotationValue` or
    /// `SnippetRefused`.
    pub reason: &'static str,
    pub message: String,
}

/// The annotations of one Ingress, typed. Absent or invalid values are
/// `None`/defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngressAnnotations {
    /// `rewrite-target`, validated (`$1`..`$9` only); see
    /// [`crate::model::rewrite`].
    pub rewrite_target: Option<String>,
    pub use_regex: bool,
    pub app_root: Option<String>,
    /// `permanent-redirect` with `permanent-redirect-code` (300..=308,
    /// else 301).
    pub permanent_redirect: Option<(u16, String)>,
    /// `temporal-redirect` (302); wins over `permanent_redirect`.
    pub temporal_redirect: Option<String>,
    /// `None` is the default (true).
    pub ssl_redirect: Option<bool>,
    pub force_ssl_redirect: bool,
    pub backend_protocol: BackendProtocol,
    pub upstream_vhost: Option<String>,
    /// `load-balance`, replaced by `upstream-hash-by` when that is set.
    pub balance: Balance,
    /// `affinity: cookie` and `session-cookie-*`.
    pub affinity: Option<CookieAffinity>,
    /// `None` is the default (1m); `Some(None)` is unlimited (`0`).
    pub body_limit: Option<Option<u64>>,
    pub connect_timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
    pub send_timeout: Option<Duration>,
    /// `allowlist-`/`whitelist-source-range` and `denylist-source-range`.
    pub access: Access,
    /// `canary: "true"` and its rules.
    pub canary: Option<CanarySpec>,
    /// `enable-cors: "true"` and its settings.
    pub cors: Option<Cors>,
    /// `ferry.dev/hsts: "true"` and its settings.
    pub hsts: Option<Hsts>,
}

/// A canary Ingress's rules, before the builder finds its primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanarySpec {
    pub header: Option<String>,
    pub header_value: Option<String>,
    pub cookie: Option<String>,
    /// Already clamped to `weight_total`.
    pub weight: u32,
    /// 100 unless `canary-weight-total` is above 100.
    pub weight_total: u32,
}

/// Parses the annotations of the Ingress `object` (`namespace/name`, for
/// logs; the Diagnostics go on that Ingress, so their messages do not
/// repeat it).
pub fn parse(
    object: &str,
    annotations: &BTreeMap<String, String>,
) -> (IngressAnnotations, Vec<Diagnostic>) {
    let mut r = Reader::new(object, annotations);
    snippets::refuse(&mut r);
    log_unknown(&r);
    let mut a = IngressAnnotations::default();
    rewrite::parse(&mut r, &mut a);
    redirect::parse(&mut r, &mut a);
    backend::parse(&mut r, &mut a);
    affinity::parse(&mut r, &mut a);
    proxy::parse(&mut r, &mut a);
    access::parse(&mut r, &mut a);
    canary::parse(&mut r, &mut a);
    cors::parse(&mut r, &mut a);
    hsts::parse(&mut r, &mut a);
    (a, r.diagnostics)
}

/// Keys under the ingress-nginx prefixes that Ferry does not read are
/// logged, not reported: most are tuning knobs whose absence is harmless.
fn log_unknown(r: &Reader) {
    let known = [
        rewrite::KEYS,
        redirect::KEYS,
        backend::KEYS,
        affinity::KEYS,
        proxy::KEYS,
        access::KEYS,
        canary::KEYS,
        cors::KEYS,
    ];
    for key in r.map.keys() {
        let Some(suffix) = key.strip_prefix(NGINX).or_else(|| key.strip_prefix(LEGACY)) else {
            continue;
        };
        if snippets::is_snippet(suffix) || known.iter().any(|keys| keys.contains(&suffix)) {
            continue;
        }
        tracing::debug!(
            ingress = r.object,
            annotation = %key,
            "annotation not supported by Ferry, ignored"
        );
    }
}

impl IngressAnnotations {
    /// Applies the location-level settings to `loc` (rewrite, app-root,
    /// redirects, ssl redirects, vhost, body limit, timeouts, access,
    /// affinity, cors, hsts); what is unset keeps `loc`'s value.
    /// Upstream-level ones (`backend_protocol`, `balance`) and the canary
    /// are applied by the router builder.
    pub fn apply(&self, loc: &mut Location) {
        if let Some(target) = &self.rewrite_target {
            // ingress-nginx: a target equal to the path is no rewrite.
            loc.rewrite_target =
                (!super::rewrite::is_identity(&loc.path, target)).then(|| target.clone());
        }
        if let Some(root) = &self.app_root {
            loc.app_root = Some(root.clone());
        }
        if let Some(url) = &self.temporal_redirect {
            loc.redirect = Some((302, url.clone()));
        } else if let Some(redirect) = &self.permanent_redirect {
            loc.redirect = Some(redirect.clone());
        }
        if let Some(on) = self.ssl_redirect {
            loc.ssl_redirect = on;
        }
        if self.force_ssl_redirect {
            loc.force_ssl_redirect = true;
        }
        if let Some(vhost) = &self.upstream_vhost {
            loc.upstream_vhost = Some(vhost.clone());
        }
        if let Some(limit) = self.body_limit {
            loc.body_limit = limit;
        }
        if let Some(t) = self.connect_timeout {
            loc.connect_timeout = t;
        }
        if let Some(t) = self.read_timeout {
            loc.read_timeout = t;
        }
        if let Some(t) = self.send_timeout {
            loc.send_timeout = t;
        }
        if self.access != Access::All {
            loc.access = self.access.clone();
        }
        if let Some(affinity) = &self.affinity {
            loc.affinity = Some(affinity.clone());
        }
        if let Some(cors) = &self.cors {
            loc.cors = Some(cors.clone());
        }
        if let Some(hsts) = &self.hsts {
            loc.hsts = Some(hsts.clone());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::paths::{PathRule, PathType};
    use crate::model::route::{ObjectRef, Upstream};

    pub(crate) fn parse_map(pairs: &[(&str, &str)]) -> (IngressAnnotations, Vec<Diagnostic>) {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse("default/web", &map)
    }

    pub(crate) fn diag(d: &[Diagnostic]) -> Vec<&'static str> {
        d.iter().map(|d| d.reason).collect()
    }

    pub(crate) fn location_at(path: PathRule) -> Location {
        Location::new(
            ObjectRef {
                namespace: "default".into(),
                name: "web".into(),
            },
            "example.com".into(),
            path,
            Arc::new(Upstream::default()),
        )
    }

    pub(crate) fn location() -> Location {
        location_at(PathRule::new("/", PathType::Prefix, false).expect("path"))
    }

    #[test]
    fn no_annotations_is_default() {
        let (a, d) = parse_map(&[]);
        assert_eq!(a, IngressAnnotations::default());
        assert!(d.is_empty());
        let mut loc = location();
        a.apply(&mut loc);
        let fresh = location();
        assert_eq!(loc.ssl_redirect, fresh.ssl_redirect);
        assert_eq!(loc.body_limit, fresh.body_limit);
        assert_eq!(loc.read_timeout, fresh.read_timeout);
        assert_eq!(loc.access, Access::All);
        assert_eq!(loc.redirect, None);
        assert_eq!(loc.rewrite_target, None);
    }

    #[test]
    fn legacy_prefix_is_read() {
        let (a, d) = parse_map(&[
            ("ingress.kubernetes.io/rewrite-target", "/$1"),
            ("ingress.kubernetes.io/proxy-body-size", "2m"),
        ]);
        assert!(d.is_empty());
        assert_eq!(a.rewrite_target.as_deref(), Some("/$1"));
        assert_eq!(a.body_limit, Some(Some(2 << 20)));
    }

    #[test]
    fn nginx_prefix_wins_over_legacy() {
        let (a, d) = parse_map(&[
            ("ingress.kubernetes.io/proxy-body-size", "2m"),
            ("nginx.ingress.kubernetes.io/proxy-body-size", "3m"),
            // An invalid legacy value that is not used is not reported.
            ("ingress.kubernetes.io/ssl-redirect", "maybe"),
            ("nginx.ingress.kubernetes.io/ssl-redirect", "false"),
        ]);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(a.body_limit, Some(Some(3 << 20)));
        assert_eq!(a.ssl_redirect, Some(false));
        // An empty nginx value counts as unset.
        let (a, _) = parse_map(&[
            ("ingress.kubernetes.io/proxy-body-size", "2m"),
            ("nginx.ingress.kubernetes.io/proxy-body-size", " "),
        ]);
        assert_eq!(a.body_limit, Some(Some(2 << 20)));
    }

    #[test]
    fn diagnostics_name_the_key_used() {
        let (_, d) = parse_map(&[("ingress.kubernetes.io/proxy-body-size", "12x")]);
        assert_eq!(d.len(), 1);
        assert!(d[0].warning);
        assert_eq!(d[0].reason, "InvalidAnnotation");
        assert!(
            d[0].message.starts_with(
                "annotation ingress.kubernetes.io/proxy-body-size contains invalid value \"12x\""
            ),
            "{}",
            d[0].message
        );
    }

    #[test]
    fn values_are_trimmed_and_control_characters_refused() {
        let (a, d) = parse_map(&[
            (
                "nginx.ingress.kubernetes.io/upstream-vhost",
                "  internal.example \n",
            ),
            ("nginx.ingress.kubernetes.io/app-root", "/a\n/b"),
        ]);
        assert_eq!(a.upstream_vhost.as_deref(), Some("internal.example"));
        assert_eq!(a.app_root, None);
        assert_eq!(diag(&d), vec!["InvalidAnnotation"]);
    }

    #[test]
    fn unknown_and_foreign_keys_ignored() {
        let (a, d) = parse_map(&[
            ("nginx.ingress.kubernetes.io/limit-rps", "5"),
            ("nginx.ingress.kubernetes.io/no-such-thing", "x"),
            ("ingress.kubernetes.io/auth-url", "http://auth"),
            ("kubernetes.io/ingress.class", "ferry"),
            ("example.com/rewrite-target", "/x"),
            ("ferry.dev/something-else", "x"),
        ]);
        assert_eq!(a, IngressAnnotations::default());
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn apply_location_settings() {
        let (a, d) = parse_map(&[
            ("nginx.ingress.kubernetes.io/rewrite-target", "/$2"),
            ("nginx.ingress.kubernetes.io/app-root", "/app1"),
            ("nginx.ingress.kubernetes.io/ssl-redirect", "false"),
            ("nginx.ingress.kubernetes.io/force-ssl-redirect", "true"),
            (
                "nginx.ingress.kubernetes.io/upstream-vhost",
                "backend.internal",
            ),
            ("nginx.ingress.kubernetes.io/backend-protocol", "GRPC"),
            ("nginx.ingress.kubernetes.io/load-balance", "ewma"),
        ]);
        assert!(d.is_empty());
        let rule = PathRule::new(
            "/something(/|$)(.*)",
            PathType::ImplementationSpecific,
            true,
        )
        .expect("regex");
        let mut loc = location_at(rule);
        a.apply(&mut loc);
        assert_eq!(loc.rewrite_target.as_deref(), Some("/$2"));
        assert_eq!(loc.app_root.as_deref(), Some("/app1"));
        assert!(!loc.ssl_redirect);
        assert!(loc.force_ssl_redirect);
        assert_eq!(loc.upstream_vhost.as_deref(), Some("backend.internal"));
        // Upstream-level settings are the builder's.
        assert_eq!(loc.upstream.protocol, BackendProtocol::Http);
        assert_eq!(loc.upstream.balance, Balance::RoundRobin);
    }

    #[test]
    fn apply_rewrite_target_equal_to_path_is_no_rewrite() {
        let (a, _) = parse_map(&[("nginx.ingress.kubernetes.io/rewrite-target", "/api")]);
        let mut loc = location_at(PathRule::new("/api", PathType::Prefix, false).expect("path"));
        a.apply(&mut loc);
        assert_eq!(loc.rewrite_target, None);
        let mut loc = location_at(
            PathRule::new("/api", PathType::ImplementationSpecific, true).expect("path"),
        );
        a.apply(&mut loc);
        assert_eq!(loc.rewrite_target, None);
        let mut loc = location_at(PathRule::new("/v1", PathType::Prefix, false).expect("path"));
        a.apply(&mut loc);
        assert_eq!(loc.rewrite_target.as_deref(), Some("/api"));
    }
}
