//! `rewrite-target` expansion, as ingress-nginx renders it: the location
//! gets `rewrite "(?i)<path>" <target> break;`, so nginx replaces the
//! **whole** request path with the target, in which `$1`..`$9` are the
//! path regex's capture groups. This is done by hand, not with
//! `regex::Captures::expand`, because nginx reads `$1a` as group 1 then
//! `a` while the regex crate reads it as a group named `1a`.

use super::paths::PathRule;

/// The path sent upstream for `rewrite-target` `target`, given the rule
/// that matched and the request path (without query; the caller re-appends
/// it, as nginx keeps the arguments).
///
/// * A regex rule (`use-regex`, or any path of a host in regex mode):
///   `$N` is capture group N of the rule's regex on the request path; a
///   group that does not exist or did not participate is empty.
/// * An Exact or Prefix rule has no groups: every `$N` is empty and the
///   path is replaced by the rest of the target (nginx's `(?i)/foo` has no
///   groups either).
/// * A target equal to the rule's path, an empty target, or a rule that
///   does not match: the path is unchanged (no rewrite).
///
/// `$` not followed by `1`..`9` is kept as is (the annotation parser
/// refuses such targets). The result always starts with `/`.
pub fn rewrite(rule: &PathRule, target: &str, request_path: &str) -> String {
    if target.is_empty() || is_identity(rule, target) {
        return request_path.to_string();
    }
    let expanded = match rule {
        PathRule::Regex { regex, .. } => match regex.captures(request_path) {
            Some(caps) => expand(target, |n| caps.get(n).map(|m| m.as_str())),
            None => return request_path.to_string(),
        },
        PathRule::Exact(_) | PathRule::Prefix(_) => {
            if !rule.matches(request_path) {
                return request_path.to_string();
            }
            expand(target, |_| None)
        }
    };
    if expanded.starts_with('/') {
        expanded
    } else {
        format!("/{expanded}")
    }
}

/// Whether `target` is the rule's own path, which ingress-nginx treats as
/// "no rewrite" (`if path == location.Rewrite.Target`). Prefix rules are
/// stored without the trailing `/`, so both spellings count.
pub fn is_identity(rule: &PathRule, target: &str) -> bool {
    match rule {
        PathRule::Regex { source, .. } => source == target,
        PathRule::Exact(p) => p == target,
        PathRule::Prefix(p) => p == target || target.strip_suffix('/') == Some(p.as_str()),
    }
}

/// nginx's script expansion of `$1`..`$9` (one digit, as
/// `ngx_http_script_compile` reads it).
fn expand<'a>(target: &str, group: impl Fn(usize) -> Option<&'a str>) -> String {
    let bytes = target.as_bytes();
    let mut out = String::with_capacity(target.len() + 32);
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (b'$', Some(d @ b'1'..=b'9')) => {
                out.push_str(&target[copied..i]);
                if let Some(s) = group(usize::from(d - b'0')) {
                    out.push_str(s);
                }
                i += 2;
                copied = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&target[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::paths::PathType;

    fn regex(path: &str) -> PathRule {
        PathRule::new(path, PathType::ImplementationSpecific, true).expect("regex")
    }

    fn rows(rule: &PathRule, target: &str, cases: &[(&str, &str)]) {
        for (request, expected) in cases {
            assert!(rule.matches(request), "{rule:?} must match {request}");
            assert_eq!(
                rewrite(rule, target, request),
                *expected,
                "{rule:?} {target} {request}"
            );
        }
    }

    /// docs/examples/rewrite/README.md: path `/something(/|$)(.*)`,
    /// `rewrite-target: /$2`.
    #[test]
    fn readme_example() {
        rows(
            &regex("/something(/|$)(.*)"),
            "/$2",
            &[
                ("/something", "/"),
                ("/something/", "/"),
                ("/something/new", "/new"),
            ],
        );
    }

    /// The pre-0.22 spelling quoted in the brief: `/something/?(.*)` +
    /// `/$1`.
    #[test]
    fn readme_example_single_group() {
        rows(
            &regex("/something/?(.*)"),
            "/$1",
            &[
                ("/something", "/"),
                ("/something/", "/"),
                ("/something/new", "/new"),
                ("/something/new/deeper", "/new/deeper"),
            ],
        );
    }

    /// docs/user-guide/ingress-path-matching.md: `/foo/bar/(.+)` + `/$1`.
    #[test]
    fn path_matching_guide_example() {
        rows(&regex("/foo/bar/(.+)"), "/$1", &[("/foo/bar/baz", "/baz")]);
    }

    #[test]
    fn whole_path_is_replaced() {
        // `rewrite "(?i)/pay" / break;`: everything under /pay goes to /.
        rows(&regex("/pay"), "/", &[("/pay", "/"), ("/pay/x/y", "/")]);
        // Same for a plain Prefix rule (no groups: $1 is empty).
        let prefix = PathRule::new("/foo", PathType::Prefix, false).expect("prefix");
        rows(
            &prefix,
            "/bar/$1",
            &[("/foo", "/bar/"), ("/foo/x", "/bar/")],
        );
        let exact = PathRule::new("/foo", PathType::Exact, false).expect("exact");
        rows(&exact, "/bar", &[("/foo", "/bar")]);
    }

    #[test]
    fn nginx_digit_semantics() {
        // `$1a` is group 1 then "a"; `$12` is group 1 then "2".
        rows(&regex("/(x)/(y)"), "/$1a/$12", &[("/x/y", "/xa/x2")]);
        // Missing and non-participating groups are empty.
        rows(&regex("/a(b)?"), "/$1x$5", &[("/a", "/x"), ("/ab", "/bx")]);
        // `$` not followed by 1-9 stays.
        rows(&regex("/(q)"), "/$0$$1$", &[("/q", "/$0$q$")]);
    }

    #[test]
    fn case_insensitive_and_start_anchored() {
        rows(
            &regex("/api/(.*)"),
            "/v2/$1",
            &[("/API/Users", "/v2/Users"), ("/api/x/", "/v2/x/")],
        );
        // The rule did not match: unchanged.
        assert_eq!(rewrite(&regex("/api/(.*)"), "/$1", "/x/api/y"), "/x/api/y");
        let prefix = PathRule::new("/foo", PathType::Prefix, false).expect("prefix");
        assert_eq!(rewrite(&prefix, "/bar", "/foobar"), "/foobar");
    }

    #[test]
    fn target_equal_to_path_or_empty_is_no_rewrite() {
        let prefix = PathRule::new("/foo/", PathType::Prefix, false).expect("prefix");
        assert_eq!(rewrite(&prefix, "/foo/", "/foo/x"), "/foo/x");
        assert_eq!(rewrite(&prefix, "/foo", "/foo/x"), "/foo/x");
        let root = PathRule::new("/", PathType::Prefix, false).expect("root");
        assert_eq!(rewrite(&root, "/", "/x"), "/x");
        assert_eq!(rewrite(&regex("/a(.*)"), "/a(.*)", "/abc"), "/abc");
        assert_eq!(rewrite(&regex("/a(.*)"), "", "/abc"), "/abc");
        assert!(is_identity(&regex("/x"), "/x"));
        assert!(!is_identity(&regex("/x"), "/x/"));
    }

    #[test]
    fn result_always_starts_with_slash() {
        rows(&regex("/(.*)"), "$1", &[("/a/b", "/a/b"), ("/", "/")]);
        rows(
            &regex("/app/(.*)"),
            "static/$1",
            &[("/app/x.js", "/static/x.js")],
        );
    }

    #[test]
    fn non_ascii_captures() {
        rows(&regex("/ü/(.*)"), "/$1", &[("/Ü/straße", "/straße")]);
    }
}
