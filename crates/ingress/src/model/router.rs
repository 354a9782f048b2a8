//! Host then path: which backend a request goes to. Hosts are exact
//! (`foo.bar.com`), wildcard (`*.bar.com`: exactly one more label) or
//! absent (any host). As in ingress-nginx, each host is its own server: a
//! request for a host that has rules never falls through to another
//! host's rules; with no matching path it gets the default backend.

use std::collections::HashMap;

use super::paths::{PathRule, PathTable};

/// A rule's `host`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostRule {
    /// No host: every request whose host has no rules of its own.
    Any,
    /// Lowercase.
    Exact(String),
    /// `*.<suffix>`, the suffix lowercase.
    Wildcard(String),
}

impl HostRule {
    pub fn parse(host: Option<&str>) -> HostRule {
        match host.map(str::trim).filter(|h| !h.is_empty()) {
            None => HostRule::Any,
            Some(h) => {
                let h = h.to_ascii_lowercase();
                match h.strip_prefix("*.") {
                    Some(suffix) => HostRule::Wildcard(suffix.to_string()),
                    None => HostRule::Exact(h),
                }
            }
        }
    }

    /// The naive definition (the router must agree with it).
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostRule::Any => true,
            HostRule::Exact(h) => h == host,
            HostRule::Wildcard(suffix) => host
                .strip_suffix(suffix.as_str())
                .and_then(|label| label.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        }
    }
}

/// The request's host as rules see it: lowercase, without port or final
/// dot.
pub fn normalize_host(host: &str) -> String {
    let host = if host.starts_with('[') {
        // An IPv6 literal keeps its colons.
        host.split(']')
            .next()
            .map_or(host, |h| &host[..h.len() + 1])
    } else {
        host.split(':').next().unwrap_or(host)
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// All rules, by host.
#[derive(Clone, Debug)]
pub struct Router<B> {
    exact: HashMap<String, PathTable<B>>,
    wildcard: HashMap<String, PathTable<B>>,
    any: PathTable<B>,
    /// The `defaultBackend` of the oldest Ingress that has one.
    pub default_backend: Option<B>,
}

impl<B> Default for Router<B> {
    fn default() -> Self {
        Router {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            any: PathTable::default(),
            default_backend: None,
        }
    }
}

/// Where a request went.
#[derive(Debug, PartialEq, Eq)]
pub enum Routed<'a, B> {
    /// A rule matched.
    Rule(&'a B),
    /// No rule: the `defaultBackend`.
    Default(&'a B),
    /// Nothing at all: the built-in 404.
    NotFound,
}

impl<B> Router<B> {
    /// Adds a rule; false when an older rule already has this host, path
    /// and type.
    pub fn insert(&mut self, host: &HostRule, path: PathRule, backend: B) -> bool {
        self.table_mut(host).insert(path, backend)
    }

    fn table_mut(&mut self, host: &HostRule) -> &mut PathTable<B> {
        match host {
            HostRule::Any => &mut self.any,
            HostRule::Exact(h) => self.exact.entry(h.clone()).or_default(),
            HostRule::Wildcard(s) => self.wildcard.entry(s.clone()).or_default(),
        }
    }

    /// The table that serves `host` (normalized): its own, else the
    /// wildcard one label up, else the host-less rules.
    pub fn table(&self, host: &str) -> &PathTable<B> {
        if let Some(t) = self.exact.get(host) {
            return t;
        }
        if let Some((label, suffix)) = host.split_once('.')
            && !label.is_empty()
            && let Some(t) = self.wildcard.get(suffix)
        {
            return t;
        }
        &self.any
    }

    /// Routes a request for `host` (normalized) and `path`.
    pub fn route(&self, host: &str, path: &str) -> Routed<'_, B> {
        match self.table(host).lookup(path) {
            Some(b) => Routed::Rule(b),
            None => match &self.default_backend {
                Some(b) => Routed::Default(b),
                None => Routed::NotFound,
            },
        }
    }

    /// Whether `host` has rules of its own (exact or wildcard).
    pub fn has_host(&self, host: &str) -> bool {
        !std::ptr::eq(self.table(host), &self.any)
    }
}

#[cfg(test)]
mod tests {
    use super::super::paths::PathType;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wildcard_hosts_match_exactly_one_label() {
        let w = HostRule::parse(Some("*.Foo.com"));
        assert_eq!(w, HostRule::Wildcard("foo.com".into()));
        assert!(w.matches("bar.foo.com"));
        assert!(!w.matches("baz.bar.foo.com"));
        assert!(!w.matches("foo.com"));
        assert!(!w.matches(".foo.com"));
        let mut r = Router::default();
        let root = || PathRule::new("/", PathType::Prefix, false).expect("valid");
        r.insert(&w, root(), "wild");
        r.insert(&HostRule::parse(Some("foo.com")), root(), "apex");
        r.insert(&HostRule::Any, root(), "any");
        assert_eq!(r.route("bar.foo.com", "/x"), Routed::Rule(&"wild"));
        assert_eq!(r.route("baz.bar.foo.com", "/x"), Routed::Rule(&"any"));
        assert_eq!(r.route("foo.com", "/"), Routed::Rule(&"apex"));
        assert_eq!(normalize_host("Bar.Foo.com:8443"), "bar.foo.com");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
    }

    #[test]
    fn a_host_with_rules_does_not_fall_through() {
        let mut r = Router::default();
        r.insert(
            &HostRule::parse(Some("foo.bar.com")),
            PathRule::new("/foo", PathType::Prefix, false).expect("valid"),
            "s1",
        );
        r.insert(
            &HostRule::Any,
            PathRule::new("/", PathType::Prefix, false).expect("valid"),
            "catch-all",
        );
        assert_eq!(r.route("foo.bar.com", "/bar"), Routed::NotFound);
        r.default_backend = Some("default");
        assert_eq!(r.route("foo.bar.com", "/bar"), Routed::Default(&"default"));
        assert_eq!(r.route("other.com", "/bar"), Routed::Rule(&"catch-all"));
    }

    /// One rule: (host choice, path, exact?).
    fn rule_strategy() -> impl Strategy<Value = (usize, String, bool)> {
        (0usize..4, path_strategy(), any::<bool>())
    }

    fn path_strategy() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop_oneof!["a", "ab", "b", ""], 0..4)
            .prop_map(|parts| format!("/{}", parts.join("/")))
    }

    const HOSTS: [Option<&str>; 4] = [
        None,
        Some("a.example"),
        Some("*.example"),
        Some("b.a.example"),
    ];

    proptest! {
        /// Over random rule sets, the router picks what a naive matcher
        /// picks: among the rules of the host that serves the request, the
        /// matching ones; Exact first, then the longest prefix, the oldest
        /// on ties.
        #[test]
        fn router_agrees_with_a_naive_matcher(
            rules in proptest::collection::vec(rule_strategy(), 0..12),
            host in 0usize..5,
            path in path_strategy(),
        ) {
            let request_host = ["a.example", "x.example", "b.a.example", "other", "example"][host];
            let mut router = Router::default();
            let mut kept = Vec::new();
            for (i, (h, p, exact)) in rules.iter().enumerate() {
                let kind = if *exact { PathType::Exact } else { PathType::Prefix };
                let hr = HostRule::parse(HOSTS[*h]);
                let rule = PathRule::new(p, kind, false).expect("valid");
                if router.insert(&hr, rule.clone(), i) {
                    kept.push((hr, rule, i));
                }
            }
            // Naive: the serving host is the exact one if any rule names it,
            // else a wildcard one, else the host-less rules.
            let serving = if kept.iter().any(|(h, _, _)| matches!(h, HostRule::Exact(e) if e == request_host)) {
                HostRule::Exact(request_host.to_string())
            } else if let Some((h, _, _)) = kept.iter().find(|(h, _, _)| matches!(h, HostRule::Wildcard(_)) && h.matches(request_host)) {
                h.clone()
            } else {
                HostRule::Any
            };
            let best = kept
                .iter()
                .filter(|(h, r, _)| *h == serving && r.matches(&path))
                .max_by(|(_, a, ia), (_, b, ib)| {
                    let rank = |r: &PathRule| (matches!(r, PathRule::Exact(_)), r.len());
                    rank(a).cmp(&rank(b)).then(ib.cmp(ia))
                })
                .map(|(_, _, i)| *i);
            let routed = match router.route(request_host, &path) {
                Routed::Rule(i) => Some(*i),
                _ => None,
            };
            prop_assert_eq!(routed, best);
        }
    }
}
