//! Snippet annotations (`configuration-snippet`, `server-snippet`, ... any
//! `*-snippet`) are raw nginx configuration: ingress-nginx rates them
//! Critical and refuses them by default. Ferry has no nginx to feed them
//! to, and must not silently drop behaviour either, so each one becomes a
//! `SnippetRefused` warning with ingress-nginx's admission text.

use super::reader::{LEGACY, NGINX, Reader};

pub(super) const REASON: &str = "SnippetRefused";

pub(super) fn is_snippet(suffix: &str) -> bool {
    suffix.ends_with("-snippet")
}

pub(super) fn refuse(r: &mut Reader) {
    let keys: Vec<String> = r
        .map
        .keys()
        .filter(|k| {
            k.strip_prefix(NGINX)
                .or_else(|| k.strip_prefix(LEGACY))
                .is_some_and(is_snippet)
        })
        .cloned()
        .collect();
    for key in keys {
        r.warn(
            REASON,
            format!(
                "{key} annotation cannot be used. Snippet directives are disabled by the Ingress administrator"
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{diag, parse_map};

    #[test]
    fn snippets_refused() {
        let (a, d) = parse_map(&[
            (
                "nginx.ingress.kubernetes.io/configuration-snippet",
                "more_set_headers \"A: b\";",
            ),
            (
                "nginx.ingress.kubernetes.io/server-snippet",
                "location /x { return 200; }",
            ),
            ("ingress.kubernetes.io/auth-snippet", "x"),
            ("nginx.ingress.kubernetes.io/stream-snippet", ""),
            (
                "nginx.ingress.kubernetes.io/modsecurity-snippet",
                "SecRuleEngine On",
            ),
            ("nginx.ingress.kubernetes.io/rewrite-target", "/"),
        ]);
        assert_eq!(diag(&d), vec!["SnippetRefused"; 5]);
        assert!(d.iter().all(|d| d.warning));
        assert_eq!(
            d[1].message,
            "nginx.ingress.kubernetes.io/configuration-snippet annotation cannot be used. \
             Snippet directives are disabled by the Ingress administrator"
        );
        assert_eq!(
            d[0].message.split(' ').next(),
            Some("ingress.kubernetes.io/auth-snippet")
        );
        // The rest of the Ingress is still parsed.
        assert_eq!(a.rewrite_target.as_deref(), Some("/"));
    }

    #[test]
    fn snippet_like_keys_of_other_prefixes_ignored() {
        let (_, d) = parse_map(&[("example.com/configuration-snippet", "x")]);
        assert!(d.is_empty());
    }
}
