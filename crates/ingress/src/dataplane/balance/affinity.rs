//! The `affinity: cookie` cookie: its value is an endpoint's opaque id
//! (no address leaks to clients, and every replica derives the same one),
//! and its attributes follow the `session-cookie-*` annotations.

use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderValue;

use crate::model::paths::PathRule;
use crate::model::route::CookieAffinity;

/// The cookie value of the endpoint with id `id`.
pub(super) fn token(id: u64) -> String {
    format!("{id:016x}")
}

/// The endpoint id a cookie value names, if it is one of ours.
pub(super) fn parse_token(value: &str) -> Option<u64> {
    if value.len() != 16 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(value, 16).ok()
}

/// `Set-Cookie` sending the client to endpoint `id` from now on.
/// `now` is seconds since the Unix epoch (for `Expires`).
pub(super) fn set_cookie(
    aff: &CookieAffinity,
    rule: &PathRule,
    id: u64,
    https: bool,
    now: i64,
) -> Option<HeaderValue> {
    let mut s = format!(
        "{}={}; Path={}; HttpOnly",
        aff.name,
        token(id),
        cookie_path(aff, rule)
    );
    if https {
        s.push_str("; Secure");
    }
    if let Some(max_age) = aff.max_age {
        s.push_str(&format!("; Max-Age={max_age}"));
    }
    if let Some(expires) = aff.expires {
        s.push_str("; Expires=");
        s.push_str(&http_date(now.saturating_add(expires)));
    }
    HeaderValue::from_str(&s).ok()
}

pub(super) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `session-cookie-path`, else the rule's path. A regex path is no cookie
/// path (ingress-nginx would send the regex text; its docs require
/// `session-cookie-path` with `use-regex`), so it becomes `/`; so does a
/// value that would break the header.
fn cookie_path<'a>(aff: &'a CookieAffinity, rule: &'a PathRule) -> &'a str {
    let path = match (&aff.path, rule) {
        (Some(p), _) => p.as_str(),
        (None, PathRule::Exact(p) | PathRule::Prefix(p)) => p.as_str(),
        (None, PathRule::Regex { .. }) => "/",
    };
    let usable = path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b';' && b != b',');
    if usable { path } else { "/" }
}

/// An IMF-fixdate (`Wed, 21 Oct 2026 07:28:00 GMT`), clamped to years
/// 0000..=9999.
pub(super) fn http_date(secs: i64) -> String {
    const MIN: i64 = -62_167_219_200; // 0000-01-01T00:00:00Z
    const MAX: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = secs.clamp(MIN, MAX);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        tod / 3600,
        tod % 3600 / 60,
        tod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::paths::PathType;

    fn aff() -> CookieAffinity {
        CookieAffinity {
            name: "INGRESSCOOKIE".into(),
            path: None,
            expires: None,
            max_age: None,
        }
    }

    #[test]
    fn dates() {
        assert_eq!(http_date(1_792_567_680), "Wed, 21 Oct 2026 07:28:00 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(951_868_799), "Tue, 29 Feb 2000 23:59:59 GMT");
        assert_eq!(http_date(-86_400), "Wed, 31 Dec 1969 00:00:00 GMT");
        assert_eq!(http_date(i64::MAX), "Fri, 31 Dec 9999 23:59:59 GMT");
    }

    #[test]
    fn tokens_round_trip() {
        for id in [0, 1, u64::MAX, 0x0123_4567_89ab_cdef] {
            assert_eq!(parse_token(&token(id)), Some(id));
        }
        assert_eq!(token(0xab), "00000000000000ab");
        assert_eq!(parse_token("10.0.0.1:8080"), None);
        assert_eq!(parse_token("+123456789abcdef"), None);
        assert_eq!(parse_token(""), None);
    }

    #[test]
    fn cookie_attributes() {
        let prefix = PathRule::new("/app/", PathType::Prefix, false).expect("path");
        let exact = PathRule::new("/login", PathType::Exact, false).expect("path");
        let root = PathRule::new("/", PathType::Prefix, false).expect("path");
        let regex = PathRule::new("/api(/|$)(.*)", PathType::Prefix, true).expect("path");
        let sc = |a: &CookieAffinity, rule: &PathRule, https: bool| {
            let v = set_cookie(a, rule, 0xab, https, 1_792_567_680 - 3600).expect("value");
            v.to_str().expect("ascii").to_string()
        };
        assert_eq!(
            sc(&aff(), &prefix, false),
            "INGRESSCOOKIE=00000000000000ab; Path=/app; HttpOnly"
        );
        assert_eq!(
            sc(&aff(), &exact, true),
            "INGRESSCOOKIE=00000000000000ab; Path=/login; HttpOnly; Secure"
        );
        assert!(sc(&aff(), &root, false).contains("; Path=/;"));
        assert!(sc(&aff(), &regex, false).contains("; Path=/;"));
        let full = CookieAffinity {
            name: "route".into(),
            path: Some("/shop".into()),
            expires: Some(3600),
            max_age: Some(172_800),
        };
        assert_eq!(
            sc(&full, &prefix, true),
            "route=00000000000000ab; Path=/shop; HttpOnly; Secure; Max-Age=172800; \
             Expires=Wed, 21 Oct 2026 07:28:00 GMT"
        );
        let bad = CookieAffinity {
            path: Some("/x; Domain=evil".into()),
            ..aff()
        };
        assert!(sc(&bad, &prefix, false).contains("; Path=/; HttpOnly"));
    }
}
