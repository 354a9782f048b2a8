use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use proptest::prelude::*;

use super::*;
use crate::model::paths::{PathRule, PathType};
use crate::model::route::{Balance, Canary, CookieAffinity, Location, ObjectRef, Upstream};

fn ep(i: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 8080))
}

fn eps(n: u16) -> Vec<SocketAddr> {
    (1..=n).map(ep).collect()
}

fn upstream(name: &str, endpoints: Vec<SocketAddr>, balance: Balance) -> Arc<Upstream> {
    Arc::new(Upstream {
        name: name.into(),
        endpoints,
        balance,
        ..Upstream::default()
    })
}

fn obj(name: &str) -> ObjectRef {
    ObjectRef {
        namespace: "default".into(),
        name: name.into(),
    }
}

fn location(up: Arc<Upstream>) -> Location {
    let path = PathRule::new("/app", PathType::Prefix, false).expect("path");
    Location::new(obj("web"), "example.com".into(), path, up)
}

fn req<'a>(headers: &'a HeaderMap, uri: &'a str) -> RequestInfo<'a> {
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (uri, None),
    };
    RequestInfo {
        client: "192.0.2.10".parse().expect("ip"),
        host: "example.com",
        uri,
        path,
        query,
        headers,
        https: false,
    }
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, v.parse().expect("value"));
    }
    h
}

/// Endpoint chosen for one request, the guard dropped at once.
fn pick(b: &Balancers, loc: &Location, h: &HeaderMap, uri: &str) -> SocketAddr {
    b.choose(loc, &req(h, uri), &[]).expect("endpoint").endpoint
}

#[test]
fn round_robin_alternates_across_swaps() {
    let b = Balancers::new();
    let h = HeaderMap::new();
    let loc = location(upstream("ns-svc-80", eps(2), Balance::RoundRobin));
    let got: Vec<_> = (0..3).map(|_| pick(&b, &loc, &h, "/")).collect();
    assert_eq!(got, [ep(1), ep(2), ep(1)]);
    // A router swap: new values, same upstream name.
    let swapped = location(upstream("ns-svc-80", eps(2), Balance::RoundRobin));
    let got: Vec<_> = (0..3).map(|_| pick(&b, &swapped, &h, "/")).collect();
    assert_eq!(got, [ep(2), ep(1), ep(2)]);
    // Forgotten upstreams start over.
    b.retain(&HashSet::from(["other".to_string()]));
    assert_eq!(pick(&b, &swapped, &h, "/"), ep(1));
}

#[test]
fn exclude_skips_failed_endpoints() {
    let h = HeaderMap::new();
    for balance in [
        Balance::RoundRobin,
        Balance::LeastConn,
        Balance::Ewma,
        Balance::Hash("$request_uri".into()),
    ] {
        let b = Balancers::new();
        let loc = location(upstream("u", eps(3), balance.clone()));
        for i in 0..30 {
            let uri = format!("/k{i}");
            let c = b
                .choose(&loc, &req(&h, &uri), &[ep(1), ep(3)])
                .expect("one left");
            assert_eq!(c.endpoint, ep(2), "{balance:?}");
        }
        assert!(
            b.choose(&loc, &req(&h, "/"), &eps(3)).is_none(),
            "{balance:?}"
        );
    }
}

#[test]
fn no_endpoints_is_none() {
    let b = Balancers::new();
    let h = HeaderMap::new();
    let loc = location(upstream("empty", vec![], Balance::RoundRobin));
    assert!(b.choose(&loc, &req(&h, "/"), &[]).is_none());
}

#[test]
fn least_conn_prefers_idle_endpoint() {
    let b = Balancers::new();
    let h = HeaderMap::new();
    let loc = location(upstream("u", eps(2), Balance::LeastConn));
    let held = b.choose(&loc, &req(&h, "/"), &[]).expect("endpoint");
    let other = if held.endpoint == ep(1) { ep(2) } else { ep(1) };
    for _ in 0..10 {
        assert_eq!(pick(&b, &loc, &h, "/"), other);
    }
    // The count survives a swap that adds an endpoint.
    let mut grown = eps(2);
    grown.push(ep(3));
    let loc = location(upstream("u", grown, Balance::LeastConn));
    let second = b.choose(&loc, &req(&h, "/"), &[]).expect("endpoint");
    assert_ne!(second.endpoint, held.endpoint);
    let third = b.choose(&loc, &req(&h, "/"), &[]).expect("endpoint");
    assert!(third.endpoint != held.endpoint && third.endpoint != second.endpoint);
    drop((held, second, third));
    // All idle again: ties go round robin.
    let got: HashSet<_> = (0..3).map(|_| pick(&b, &loc, &h, "/")).collect();
    assert_eq!(got.len(), 3);
}

#[test]
fn ewma_prefers_fast_endpoint() {
    let latency = |e: SocketAddr| {
        if e == ep(1) {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(100)
        }
    };
    let h = HeaderMap::new();
    for n in [2, 4] {
        let b = Balancers::new();
        let loc = location(upstream("u", eps(n), Balance::Ewma));
        let mut fast = 0;
        for round in 0..400 {
            let c = b.choose(&loc, &req(&h, "/"), &[]).expect("endpoint");
            c.guard.observe_latency(latency(c.endpoint));
            if round >= 200 && c.endpoint == ep(1) {
                fast += 1;
            }
        }
        // Two endpoints: always compared, the fast one always wins. Four:
        // it wins whenever drawn (half the pairs), the slow ones split the
        // rest.
        let want = if n == 2 { 200 } else { 65 };
        assert!(fast >= want, "n={n}: fast endpoint chosen {fast}/200");
    }
}

#[test]
fn ewma_avoids_busy_unmeasured_endpoint() {
    let b = Balancers::new();
    let h = HeaderMap::new();
    let loc = location(upstream("u", eps(2), Balance::Ewma));
    let held = b.choose(&loc, &req(&h, "/"), &[]).expect("endpoint");
    for _ in 0..10 {
        assert_ne!(pick(&b, &loc, &h, "/"), held.endpoint);
    }
}

#[test]
fn hash_is_sticky_and_even() {
    let b = Balancers::new();
    let h = HeaderMap::new();
    let loc = location(upstream("u", eps(3), Balance::Hash("$request_uri".into())));
    let first = pick(&b, &loc, &h, "/a?x=1");
    for _ in 0..10 {
        assert_eq!(pick(&b, &loc, &h, "/a?x=1"), first);
    }
    let mut counts: HashMap<SocketAddr, usize> = HashMap::new();
    for i in 0..3000 {
        *counts
            .entry(pick(&b, &loc, &h, &format!("/k/{i}")))
            .or_default() += 1;
    }
    assert_eq!(counts.len(), 3);
    for (e, n) in &counts {
        assert!((800..=1200).contains(n), "{e}: {n} of 3000");
    }
}

#[test]
fn hash_by_header_and_cookie() {
    let b = Balancers::new();
    let loc = location(upstream(
        "u",
        eps(8),
        Balance::Hash("$http_x_user$cookie_team".into()),
    ));
    let mut seen = HashSet::new();
    for i in 0..50 {
        let user = format!("user{i}");
        let h = headers(&[("x-user", &user), ("cookie", "team=blue")]);
        let first = pick(&b, &loc, &h, "/one");
        assert_eq!(pick(&b, &loc, &h, "/two?other=1"), first);
        seen.insert(first);
    }
    assert!(seen.len() > 4, "keys spread over {} endpoints", seen.len());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn hash_removal_moves_only_removed_keys(n in 2u16..12, removed in 0u16..12, seed in any::<u32>()) {
        let removed = ep(1 + removed % n);
        let b = Balancers::new();
        let h = HeaderMap::new();
        let expr = Balance::Hash("$uri".into());
        let before = location(upstream("u", eps(n), expr.clone()));
        let kept: Vec<_> = eps(n).into_iter().filter(|e| *e != removed).collect();
        let after = location(upstream("u", kept, expr));
        let keys = 400;
        let mut moved = 0;
        for i in 0..keys {
            let uri = format!("/{seed}/{i}");
            let old = pick(&b, &before, &h, &uri);
            let new = pick(&b, &after, &h, &uri);
            if old != new {
                prop_assert_eq!(old, removed, "key {} moved off a kept endpoint", uri);
                moved += 1;
            }
        }
        // Only the removed endpoint's share moves: about 1/n.
        let expected = keys / usize::from(n);
        prop_assert!(moved <= expected * 2 + 20, "moved {} of {} (n={})", moved, keys, n);
    }
}

fn sticky(loc: &mut Location, max_age: Option<i64>) {
    loc.affinity = Some(CookieAffinity {
        name: "INGRESSCOOKIE".into(),
        path: None,
        expires: None,
        max_age,
    });
}

fn cookie_of(c: &Choice) -> String {
    let v = c.set_cookie.as_ref().expect("set-cookie");
    let v = v.to_str().expect("ascii");
    v.split(';').next().expect("pair").to_string()
}

#[test]
fn affinity_cookie_sticks_and_reissues() {
    let b = Balancers::new();
    let mut loc = location(upstream("u", eps(3), Balance::RoundRobin));
    sticky(&mut loc, Some(60));
    let none = HeaderMap::new();
    let mut info = req(&none, "/app/x");
    info.https = true;
    let first = b.choose(&loc, &info, &[]).expect("endpoint");
    let set = first
        .set_cookie
        .as_ref()
        .expect("cookie")
        .to_str()
        .expect("ascii");
    assert!(set.starts_with("INGRESSCOOKIE="), "{set}");
    assert!(
        set.ends_with("; Path=/app; HttpOnly; Secure; Max-Age=60"),
        "{set}"
    );
    assert!(!set.contains("10.0.0."), "cookie leaks the address: {set}");
    let pair = cookie_of(&first);
    let with = headers(&[("cookie", &format!("a=b; {pair}"))]);
    for _ in 0..10 {
        let c = b
            .choose(&loc, &req(&with, "/app/x"), &[])
            .expect("endpoint");
        assert_eq!(c.endpoint, first.endpoint);
        assert!(c.set_cookie.is_none());
    }
    // The endpoint failed to connect: another one, and a new cookie.
    let retry = b
        .choose(&loc, &req(&with, "/app/x"), &[first.endpoint])
        .expect("endpoint");
    assert_ne!(retry.endpoint, first.endpoint);
    assert_ne!(cookie_of(&retry), pair);
    // The endpoint is gone: re-chosen, new cookie, which then sticks.
    let rest: Vec<_> = eps(3)
        .into_iter()
        .filter(|e| *e != first.endpoint)
        .collect();
    let mut shrunk = location(upstream("u", rest, Balance::RoundRobin));
    sticky(&mut shrunk, None);
    let c = b
        .choose(&shrunk, &req(&with, "/app/x"), &[])
        .expect("endpoint");
    assert_ne!(c.endpoint, first.endpoint);
    let new_pair = cookie_of(&c);
    assert_ne!(new_pair, pair);
    let with_new = headers(&[("cookie", &new_pair)]);
    for _ in 0..5 {
        assert_eq!(pick(&b, &shrunk, &with_new, "/app/x"), c.endpoint);
    }
    // Garbage cookie values are just ignored.
    let junk = headers(&[("cookie", "INGRESSCOOKIE=10.0.0.1:8080")]);
    assert!(
        b.choose(&shrunk, &req(&junk, "/"), &[])
            .expect("endpoint")
            .set_cookie
            .is_some()
    );
}

fn canary_loc(configure: impl FnOnce(&mut Canary)) -> Location {
    let mut loc = location(upstream("primary", vec![ep(1)], Balance::RoundRobin));
    let mut canary = Canary {
        upstream: upstream("canary", vec![ep(2)], Balance::RoundRobin),
        ingress: obj("web-canary"),
        header: None,
        header_value: None,
        cookie: None,
        weight: 0,
        weight_total: 100,
    };
    configure(&mut canary);
    loc.canary = Some(canary);
    loc
}

fn to_canary(b: &Balancers, loc: &Location, h: &HeaderMap) -> bool {
    let c = b.choose(loc, &req(h, "/"), &[]).expect("endpoint");
    assert_eq!(c.canary, c.endpoint == ep(2));
    assert_eq!(c.upstream.name, if c.canary { "canary" } else { "primary" });
    c.canary
}

#[test]
fn canary_by_header() {
    let b = Balancers::new();
    let loc = canary_loc(|c| {
        c.header = Some("X-Canary".into());
        c.weight = 100;
    });
    assert!(to_canary(&b, &loc, &headers(&[("x-canary", "always")])));
    assert!(!to_canary(&b, &loc, &headers(&[("x-canary", "never")])));
    // Anything else falls through to the weight (100: canary).
    assert!(to_canary(&b, &loc, &headers(&[("x-canary", "maybe")])));
    assert!(to_canary(&b, &loc, &HeaderMap::new()));

    let loc = canary_loc(|c| {
        c.header = Some("X-Canary".into());
        c.header_value = Some("beta".into());
    });
    assert!(to_canary(&b, &loc, &headers(&[("x-canary", "beta")])));
    assert!(!to_canary(&b, &loc, &headers(&[("x-canary", "Beta")])));
    // With a value, `always` is just another value.
    assert!(!to_canary(&b, &loc, &headers(&[("x-canary", "always")])));
    let loc = canary_loc(|c| {
        c.header = Some("X-Canary".into());
        c.header_value = Some("beta".into());
        c.weight = 100;
    });
    assert!(to_canary(&b, &loc, &headers(&[("x-canary", "never")])));
}

#[test]
fn canary_by_cookie_after_header() {
    let b = Balancers::new();
    let loc = canary_loc(|c| {
        c.header = Some("x-canary".into());
        c.cookie = Some("canary".into());
    });
    assert!(to_canary(
        &b,
        &loc,
        &headers(&[("cookie", "canary=always")])
    ));
    assert!(!to_canary(
        &b,
        &loc,
        &headers(&[("cookie", "canary=never")])
    ));
    assert!(!to_canary(&b, &loc, &headers(&[("cookie", "canary=yes")])));
    let both = headers(&[("x-canary", "never"), ("cookie", "canary=always")]);
    assert!(!to_canary(&b, &loc, &both));
    let fall = headers(&[("x-canary", "other"), ("cookie", "canary=always")]);
    assert!(to_canary(&b, &loc, &fall));
}

#[test]
fn canary_by_weight() {
    let b = Balancers::new();
    let h = HeaderMap::new();
    let never = canary_loc(|c| c.weight = 0);
    assert!((0..500).all(|_| !to_canary(&b, &never, &h)));
    let always = canary_loc(|c| c.weight = 100);
    assert!((0..500).all(|_| to_canary(&b, &always, &h)));
    let half = canary_loc(|c| {
        c.weight = 100;
        c.weight_total = 200;
    });
    let hits = (0..10_000).filter(|_| to_canary(&b, &half, &h)).count();
    assert!((4_500..=5_500).contains(&hits), "{hits} of 10000");
}

#[test]
fn canary_without_endpoints_serves_primary() {
    let b = Balancers::new();
    let mut loc = canary_loc(|c| c.weight = 100);
    if let Some(c) = &mut loc.canary {
        c.upstream = upstream("canary", vec![], Balance::RoundRobin);
    }
    assert!(!to_canary(&b, &loc, &HeaderMap::new()));
    // ... but a primary without endpoints is a 503.
    let mut loc = canary_loc(|c| c.header = Some("x-canary".into()));
    loc.upstream = upstream("primary", vec![], Balance::RoundRobin);
    assert!(b.choose(&loc, &req(&HeaderMap::new(), "/"), &[]).is_none());
    let h = headers(&[("x-canary", "always")]);
    assert_eq!(pick(&b, &loc, &h, "/"), ep(2));
}

#[test]
fn canary_affinity_wins_over_rules() {
    let b = Balancers::new();
    let mut loc = canary_loc(|c| {
        c.weight = 50;
        c.header = Some("x-canary".into());
    });
    sticky(&mut loc, None);
    let to_canary = headers(&[("x-canary", "always")]);
    let first = b
        .choose(&loc, &req(&to_canary, "/"), &[])
        .expect("endpoint");
    assert!(first.canary);
    let pair = cookie_of(&first);
    // Stuck to the canary even when the header now says never.
    let h = headers(&[("x-canary", "never"), ("cookie", &pair)]);
    for _ in 0..20 {
        assert_eq!(pick(&b, &loc, &h, "/"), ep(2));
    }
    let to_primary = headers(&[("x-canary", "never")]);
    let first = b
        .choose(&loc, &req(&to_primary, "/"), &[])
        .expect("endpoint");
    let h = headers(&[("x-canary", "always"), ("cookie", &cookie_of(&first))]);
    for _ in 0..20 {
        assert_eq!(pick(&b, &loc, &h, "/"), ep(1));
    }
}

#[test]
fn concurrent_use_balances_the_books() {
    let b = Arc::new(Balancers::new());
    let loc = Arc::new(location(upstream("u", eps(4), Balance::LeastConn)));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (b, loc) = (Arc::clone(&b), Arc::clone(&loc));
            std::thread::spawn(move || {
                let h = HeaderMap::new();
                for _ in 0..2000 {
                    let c = b.choose(&loc, &req(&h, "/"), &[]).expect("endpoint");
                    drop(c);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let state = b.state("u");
    let table = state.table(&loc.upstream);
    assert!(table.eps.iter().all(|e| e.in_flight() == 0));
}
