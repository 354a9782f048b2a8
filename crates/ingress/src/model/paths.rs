//! Path matching of networking.k8s.io/v1 Ingress rules: `Exact`,
//! element-wise `Prefix`, and regular expressions (ImplementationSpecific
//! under `use-regex`). A [`PathTable`] answers "which rule wins for this
//! request path" with hash lookups, one per path element, instead of
//! trying every rule.

use std::collections::HashMap;

/// One rule's path, as it matches.
#[derive(Clone, Debug)]
pub enum PathRule {
    /// The whole path, byte for byte (case-sensitive).
    Exact(String),
    /// A path prefix split by `/`, compared element by element; stored
    /// without trailing slashes, so `/` is the empty string.
    Prefix(String),
    /// `use-regex`: a case-insensitive regular expression anchored at the
    /// start of the path, as ingress-nginx writes `location ~* "^<path>"`.
    Regex { source: String, regex: regex::Regex },
}

/// A path in a rule that cannot be used.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("path {0:?} must be an absolute path (start with \"/\")")]
    NotAbsolute(String),
    #[error("path {path:?} is not a valid regular expression: {reason}")]
    BadRegex { path: String, reason: String },
}

/// How a rule's path was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathType {
    Exact,
    Prefix,
    /// ImplementationSpecific: a prefix, or a regex with `use-regex`.
    ImplementationSpecific,
}

impl PathRule {
    /// The rule for `path` of `kind`; `regex` is the host's `use-regex`.
    pub fn new(path: &str, kind: PathType, regex: bool) -> Result<PathRule, PathError> {
        if regex {
            // ingress-nginx: every path of a host in regex mode becomes a
            // case-insensitive regex location anchored at the start.
            let source = if path.is_empty() { "/" } else { path };
            let anchored = match kind {
                PathType::Exact => format!("(?i)^(?:{source})$"),
                _ => format!("(?i)^(?:{source})"),
            };
            return regex::Regex::new(&anchored)
                .map(|regex| PathRule::Regex {
                    source: source.to_string(),
                    regex,
                })
                .map_err(|e| PathError::BadRegex {
                    path: path.to_string(),
                    reason: e.to_string(),
                });
        }
        // An empty path in an old Ingress means "/".
        let path = if path.is_empty() { "/" } else { path };
        if !path.starts_with('/') {
            return Err(PathError::NotAbsolute(path.to_string()));
        }
        Ok(match kind {
            PathType::Exact => PathRule::Exact(path.to_string()),
            PathType::Prefix | PathType::ImplementationSpecific => {
                PathRule::Prefix(path.trim_end_matches('/').to_string())
            }
        })
    }

    /// Whether a request for `path` matches (the naive definition; the
    /// table below must agree with it).
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathRule::Exact(p) => p == path,
            PathRule::Prefix(p) => {
                p.is_empty()
                    || path
                        .strip_prefix(p.as_str())
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
            PathRule::Regex { regex, .. } => regex.is_match(path),
        }
    }

    /// The length that ranks matching rules: longer wins.
    pub fn len(&self) -> usize {
        match self {
            PathRule::Exact(p) | PathRule::Prefix(p) => p.len(),
            PathRule::Regex { source, .. } => source.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The rules of one host, indexed for lookup. `B` is what a rule routes
/// to.
#[derive(Clone, Debug)]
pub struct PathTable<B> {
    exact: HashMap<String, B>,
    prefix: HashMap<String, B>,
    /// Longest source first; the first match wins (ingress-nginx orders a
    /// host's regex locations so).
    regex: Vec<(PathRule, B)>,
}

impl<B> Default for PathTable<B> {
    fn default() -> Self {
        PathTable {
            exact: HashMap::new(),
            prefix: HashMap::new(),
            regex: Vec::new(),
        }
    }
}

impl<B> PathTable<B> {
    /// Adds a rule unless an earlier one has the same path and type (the
    /// caller adds rules oldest Ingress first, and the oldest wins);
    /// returns false when it was taken.
    pub fn insert(&mut self, rule: PathRule, backend: B) -> bool {
        match rule {
            PathRule::Exact(p) => insert_new(&mut self.exact, p, backend),
            PathRule::Prefix(p) => insert_new(&mut self.prefix, p, backend),
            PathRule::Regex { ref source, .. } => {
                if self.regex.iter().any(|(r, _)| match r {
                    PathRule::Regex { source: s, .. } => s == source,
                    _ => false,
                }) {
                    return false;
                }
                // Stable: equal lengths keep the order they came in.
                let at = self
                    .regex
                    .iter()
                    .position(|(r, _)| r.len() < rule.len())
                    .unwrap_or(self.regex.len());
                self.regex.insert(at, (rule, backend));
                true
            }
        }
    }

    /// The winning rule for `path`: the longest match, Exact before
    /// Prefix. An Exact match is the whole path, so no Prefix can be
    /// longer; prefixes are tried from the whole path down to `/`, one
    /// element at a time.
    pub fn lookup(&self, path: &str) -> Option<&B> {
        if !self.regex.is_empty() {
            return self
                .regex
                .iter()
                .find(|(r, _)| r.matches(path))
                .map(|(_, b)| b);
        }
        if let Some(b) = self.exact.get(path) {
            return Some(b);
        }
        if self.prefix.is_empty() {
            return None;
        }
        let mut candidate = path.trim_end_matches('/');
        loop {
            if let Some(b) = self.prefix.get(candidate) {
                return Some(b);
            }
            match candidate.rfind('/') {
                Some(i) => candidate = &candidate[..i],
                None => return None,
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefix.is_empty() && self.regex.is_empty()
    }
}

fn insert_new<B>(map: &mut HashMap<String, B>, key: String, backend: B) -> bool {
    if map.contains_key(&key) {
        return false;
    }
    map.insert(key, backend);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rules: &[(&str, PathType)]) -> PathTable<String> {
        let mut t = PathTable::default();
        for (path, kind) in rules {
            let tag = format!("{kind:?}:{path}");
            assert!(t.insert(PathRule::new(path, *kind, false).expect("valid"), tag));
        }
        t
    }

    use PathType::{Exact, Prefix};

    /// Rules, the request path, the rule that serves it.
    type Row = (
        &'static [(&'static str, PathType)],
        &'static str,
        Option<&'static str>,
    );

    /// Every row of the "Examples" table in the Kubernetes Ingress docs
    /// (concepts/services-networking/ingress.md): rules, request, and
    /// which rule (if any) serves it.
    #[test]
    fn kubernetes_docs_examples() {
        let rows: &[Row] = &[
            (&[("/", Prefix)], "/anything/at/all", Some("Prefix:/")),
            (&[("/foo", Exact)], "/foo", Some("Exact:/foo")),
            (&[("/foo", Exact)], "/bar", None),
            (&[("/foo", Exact)], "/foo/", None),
            (&[("/foo/", Exact)], "/foo", None),
            (&[("/foo", Prefix)], "/foo", Some("Prefix:/foo")),
            (&[("/foo", Prefix)], "/foo/", Some("Prefix:/foo")),
            (&[("/foo/", Prefix)], "/foo", Some("Prefix:/foo/")),
            (&[("/foo/", Prefix)], "/foo/", Some("Prefix:/foo/")),
            (&[("/aaa/bb", Prefix)], "/aaa/bbb", None),
            (&[("/aaa/bbb", Prefix)], "/aaa/bbb", Some("Prefix:/aaa/bbb")),
            // "Yes, ignores trailing slash"
            (
                &[("/aaa/bbb/", Prefix)],
                "/aaa/bbb",
                Some("Prefix:/aaa/bbb/"),
            ),
            // "Yes, matches trailing slash"
            (
                &[("/aaa/bbb", Prefix)],
                "/aaa/bbb/",
                Some("Prefix:/aaa/bbb"),
            ),
            // "Yes, matches subpath"
            (
                &[("/aaa/bbb", Prefix)],
                "/aaa/bbb/ccc",
                Some("Prefix:/aaa/bbb"),
            ),
            // "No, does not match string prefix"
            (&[("/aaa/bbb", Prefix)], "/aaa/bbbxyz", None),
            // "Yes, matches /aaa prefix"
            (
                &[("/", Prefix), ("/aaa", Prefix)],
                "/aaa/ccc",
                Some("Prefix:/aaa"),
            ),
            // "Yes, matches /aaa/bbb prefix"
            (
                &[("/", Prefix), ("/aaa", Prefix), ("/aaa/bbb", Prefix)],
                "/aaa/bbb",
                Some("Prefix:/aaa/bbb"),
            ),
            // "Yes, matches / prefix"
            (
                &[("/", Prefix), ("/aaa", Prefix), ("/aaa/bbb", Prefix)],
                "/ccc",
                Some("Prefix:/"),
            ),
            // "No, uses default backend"
            (&[("/aaa", Prefix)], "/ccc", None),
            // Mixed: "Yes, prefers Exact"
            (
                &[("/foo", Prefix), ("/foo", Exact)],
                "/foo",
                Some("Exact:/foo"),
            ),
        ];
        for (rules, request, expected) in rows {
            let t = table(rules);
            assert_eq!(
                t.lookup(request).map(String::as_str),
                *expected,
                "rules {rules:?}, request {request}"
            );
            // The naive definition agrees on whether anything matches.
            let any = rules
                .iter()
                .any(|(p, k)| PathRule::new(p, *k, false).expect("valid").matches(request));
            assert_eq!(
                any,
                expected.is_some(),
                "rules {rules:?}, request {request}"
            );
        }
    }

    #[test]
    fn oldest_rule_keeps_a_taken_path() {
        let mut t = PathTable::default();
        assert!(t.insert(PathRule::new("/a", Prefix, false).expect("v"), 1));
        assert!(!t.insert(PathRule::new("/a/", Prefix, false).expect("v"), 2));
        assert!(t.insert(PathRule::new("/a", Exact, false).expect("v"), 3));
        assert_eq!(t.lookup("/a/x"), Some(&1));
    }

    #[test]
    fn regex_paths_longest_first_case_insensitive() {
        let mut t = PathTable::default();
        let rule =
            |p: &str| PathRule::new(p, PathType::ImplementationSpecific, true).expect("valid");
        assert!(t.insert(rule("/"), "root"));
        assert!(t.insert(rule("/api(/|$)(.*)"), "api"));
        assert_eq!(t.lookup("/API/v1"), Some(&"api"));
        assert_eq!(t.lookup("/apix"), Some(&"root"));
        assert!(matches!(
            PathRule::new("/(", PathType::ImplementationSpecific, true),
            Err(PathError::BadRegex { .. })
        ));
        assert_eq!(
            PathRule::new("foo", Prefix, false).err(),
            Some(PathError::NotAbsolute("foo".into()))
        );
    }
}
