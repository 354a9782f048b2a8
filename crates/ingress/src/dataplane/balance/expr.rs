//! `upstream-hash-by` expressions (nginx variables and literal text),
//! evaluated straight into a hash without building the string, plus the
//! cookie and query-argument lookups they and affinity share.

use std::fmt::Write as _;

use http::HeaderMap;

use super::RequestInfo;

/// The consistent-hashing key of a request: FNV-1a over the evaluated
/// expression, then a finalizer so every bit depends on every byte.
pub(super) fn hash_key(expr: &str, req: &RequestInfo<'_>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    eval(expr, req, &mut |bytes| {
        for b in bytes {
            hash = (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    });
    fmix64(hash)
}

/// MurmurHash3's 64-bit finalizer.
pub(super) fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// Feeds the value of `expr` for `req` to `out`, piece by piece. Unknown
/// variables are empty (the model reports them when it builds routes).
pub(super) fn eval(expr: &str, req: &RequestInfo<'_>, out: &mut dyn FnMut(&[u8])) {
    let mut rest = expr;
    while let Some(dollar) = rest.find('$') {
        out(&rest.as_bytes()[..dollar]);
        let after = &rest[dollar + 1..];
        let (name, next) = if let Some(braced) = after.strip_prefix('{') {
            match braced.split_once('}') {
                Some((name, next)) => (name, next),
                None => ("", after),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if name.is_empty() {
            out(b"$");
        } else {
            variable(name, req, out);
        }
        rest = next;
    }
    out(rest.as_bytes());
}

fn variable(name: &str, req: &RequestInfo<'_>, out: &mut dyn FnMut(&[u8])) {
    match name {
        "request_uri" => out(req.uri.as_bytes()),
        "uri" => out(req.path.as_bytes()),
        "host" => out(req.host.as_bytes()),
        "args" | "query_string" => out(req.query.unwrap_or("").as_bytes()),
        "scheme" => out(if req.https { b"https" } else { b"http" }),
        "remote_addr" => {
            let mut buf = StackStr::default();
            let _ = write!(buf, "{}", req.client);
            out(buf.as_bytes());
        }
        _ => {
            if let Some(h) = name.strip_prefix("http_") {
                header(req.headers, h, out);
            } else if let Some(c) = name.strip_prefix("cookie_") {
                out(cookie(req.headers, c).unwrap_or("").as_bytes());
            } else if let Some(a) = name.strip_prefix("arg_") {
                out(arg(req.query, a).unwrap_or("").as_bytes());
            }
        }
    }
}

/// `$http_<var>`: the header whose lowercase name, with `-` for `_`, is
/// `var`; several values are joined by `, `.
fn header(headers: &HeaderMap, var: &str, out: &mut dyn FnMut(&[u8])) {
    let wanted = |name: &str| {
        name.len() == var.len()
            && name.bytes().zip(var.bytes()).all(|(n, v)| {
                let v = if v == b'_' {
                    b'-'
                } else {
                    v.to_ascii_lowercase()
                };
                n == v
            })
    };
    let mut first = true;
    for (name, value) in headers {
        if wanted(name.as_str()) {
            if !first {
                out(b", ");
            }
            out(value.as_bytes());
            first = false;
        }
    }
}

/// The first cookie called `name` (case-sensitive, quotes removed).
pub(super) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k.trim() == name).then(|| {
                let v = v.trim();
                v.strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v)
            })
        })
}

/// `$arg_<name>`: the first query argument called `name` (ASCII
/// case-insensitive, as nginx), raw; empty for `?name`.
fn arg<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        k.eq_ignore_ascii_case(name).then_some(v)
    })
}

/// Enough room for any IP address, without allocating.
struct StackStr {
    buf: [u8; 64],
    len: usize,
}

impl Default for StackStr {
    fn default() -> Self {
        StackStr {
            buf: [0; 64],
            len: 0,
        }
    }
}

impl StackStr {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Write for StackStr {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval_string(expr: &str, req: &RequestInfo<'_>) -> String {
        let mut out = Vec::new();
        eval(expr, req, &mut |b| out.extend_from_slice(b));
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn expressions() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user-id", "42".parse().expect("value"));
        headers.append("cookie", "a=1; sess=\"abc\"".parse().expect("value"));
        headers.append("cookie", "sess=later; b=2".parse().expect("value"));
        let req = RequestInfo {
            client: "2001:db8::7".parse().expect("ip"),
            host: "example.com",
            uri: "/p/q?Id=9&flag&x=1",
            path: "/p/q",
            query: Some("Id=9&flag&x=1"),
            headers: &headers,
            https: true,
        };
        let cases = [
            ("$request_uri", "/p/q?Id=9&flag&x=1"),
            ("$uri", "/p/q"),
            ("$request_uri$host", "/p/q?Id=9&flag&x=1example.com"),
            ("${request_uri}-text-value", "/p/q?Id=9&flag&x=1-text-value"),
            ("$remote_addr", "2001:db8::7"),
            ("$http_x_user_id", "42"),
            ("$http_X_User_Id", "42"),
            ("$cookie_sess", "abc"),
            ("$cookie_b", "2"),
            ("$cookie_missing", ""),
            ("$arg_id|$arg_flag|$arg_x|$arg_y", "9||1|"),
            ("$args", "Id=9&flag&x=1"),
            ("$scheme://$host", "https://example.com"),
            ("literal", "literal"),
            ("cost: $", "cost: $"),
            ("$$host", "$example.com"),
            ("${host", "${host"),
            ("$nosuchvar.", "."),
        ];
        for (expr, want) in cases {
            assert_eq!(eval_string(expr, &req), want, "{expr}");
        }
        let v4 = RequestInfo {
            client: "192.0.2.1".parse().expect("ip"),
            ..req
        };
        assert_eq!(eval_string("$remote_addr", &v4), "192.0.2.1");
        assert_eq!(hash_key("$uri", &v4), hash_key("${uri}", &req));
        assert_ne!(hash_key("$uri", &req), hash_key("$request_uri", &req));
    }
}
