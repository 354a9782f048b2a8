//! The request path as rules see it. nginx matches locations against the
//! normalized `$uri` (percent-decoded, `//` merged, `.` and `..`
//! resolved), while the original URI goes upstream. Routing on the raw
//! path instead would let `/%61dmin` or `/x/../admin` slip past a
//! location with its own allow list; so the router, access checks,
//! app-root and rewrite-target all see the normalized path, and only a
//! rewritten path is re-encoded for the upstream.

use std::borrow::Cow;

/// The normalized path; `None` for a path nginx answers with 400 (a bad
/// `%` escape, or `..` above the root).
pub(super) fn normalize(path: &str) -> Option<Cow<'_, str>> {
    let simple = !path.contains('%') && !path.contains("//") && !path.contains("/.");
    if simple {
        return Some(Cow::Borrowed(path));
    }
    let mut decoded = Vec::with_capacity(path.len());
    let mut bytes = path.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = hex(bytes.next()?)?;
            let lo = hex(bytes.next()?)?;
            // `%00` would route on one path while a C backend cuts the
            // string at the NUL and sees another (nginx answers 400).
            if hi == 0 && lo == 0 {
                return None;
            }
            decoded.push(hi << 4 | lo);
        } else {
            decoded.push(b);
        }
    }
    let decoded = String::from_utf8_lossy(&decoded).into_owned();
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing = false;
    for segment in decoded.split('/') {
        trailing = false;
        match segment {
            "" => trailing = true,
            "." => trailing = true,
            ".." => {
                segments.pop()?;
                trailing = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    Some(Cow::Owned(out))
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-encodes what may not appear in a request path (a rewritten,
/// decoded path going upstream); `%` itself is encoded too, as the input
/// is decoded.
pub(super) fn encode_path(path: &str) -> Cow<'_, str> {
    let keep = |b: u8| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'/' | b'-'
                    | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
            )
    };
    if path.bytes().all(keep) {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len() + 8);
    for b in path.bytes() {
        if keep(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_nginx() {
        let n = |p| normalize(p).map(|c| c.into_owned());
        assert_eq!(n("/a/b").as_deref(), Some("/a/b"));
        assert!(matches!(normalize("/a/b"), Some(Cow::Borrowed(_))));
        assert_eq!(n("/%61dmin").as_deref(), Some("/admin"));
        assert_eq!(n("/x/../admin/").as_deref(), Some("/admin/"));
        assert_eq!(n("//a///b").as_deref(), Some("/a/b"));
        assert_eq!(n("/a/./b/.").as_deref(), Some("/a/b/"));
        assert_eq!(n("/a/..").as_deref(), Some("/"));
        assert_eq!(n("/a%2Fb").as_deref(), Some("/a/b"));
        assert_eq!(n("/.hidden").as_deref(), Some("/.hidden"));
        assert_eq!(n("/../etc"), None);
        assert_eq!(n("/bad%zz"), None);
        assert_eq!(n("/admin%00.html"), None);
        assert_eq!(n("/short%4"), None);
    }

    #[test]
    fn encodes_unsafe_bytes() {
        assert_eq!(encode_path("/a b/ü"), "/a%20b/%C3%BC");
        assert!(matches!(encode_path("/plain/path"), Cow::Borrowed(_)));
        assert_eq!(encode_path("/100%"), "/100%25");
    }
}
