//! Routing, forwarded headers, redirects, access lists, rewrites.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_round_robin_default_backend_and_metrics() {
    let (a1, a2, def) = (
        backend("a1").await,
        backend("a2").await,
        backend("def").await,
    );
    let web = upstream("web", &[a1.addr, a2.addr], BackendProtocol::Http);
    let mut r = routes(vec![
        location("a.test", "/", web),
        location(
            "b.test",
            "/foo",
            upstream("b", &[a1.addr], BackendProtocol::Http),
        ),
    ]);
    let (proxy, addr) = start(r.clone(), Settings::default()).await;

    let mut names = Vec::new();
    for _ in 0..4 {
        let (status, _, body) = get(addr, "a.test", "/x", &[]).await;
        assert_eq!(status, StatusCode::OK);
        names.push(json(&body)["name"].as_str().unwrap().to_string());
    }
    assert_ne!(names[0], names[1], "round robin alternates: {names:?}");
    assert_eq!(names[0], names[2]);
    assert_eq!(names[1], names[3]);

    for (host, path) in [("unknown.test", "/"), ("b.test", "/bar")] {
        let (status, headers, body) = get(addr, host, path, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{host}{path}");
        assert_eq!(headers["content-type"], "text/html");
        assert!(headers.get("server").is_none());
        assert_eq!(body, NOT_FOUND_PAGE);
    }

    // An Ingress defaultBackend takes what no rule matches.
    let def_up = upstream("def", &[def.addr], BackendProtocol::Http);
    r.router.default_backend = Some(Arc::new(location("", "/", def_up)));
    proxy.swap(r);
    for (host, path) in [("unknown.test", "/"), ("b.test", "/bar")] {
        let (status, _, body) = get(addr, host, path, &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json(&body)["name"], "def");
    }

    let metrics = metrics_with(
        &proxy,
        "nginx_ingress_controller_requests{ingress=\"web\",namespace=\"default\",service=\"web\",status=\"200\",method=\"GET\",host=\"a.test\",path=\"/\",canary=\"\"} 4",
    )
    .await;
    assert!(metrics.contains("status=\"404\",method=\"GET\",host=\"\",path=\"\""));
    assert!(metrics.contains("# TYPE nginx_ingress_controller_request_duration_seconds histogram"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers() {
    let b = backend("b").await;
    let up = upstream("b", &[b.addr], BackendProtocol::Http);
    let mut vhost = location("v.test", "/", up.clone());
    vhost.upstream_vhost = Some("internal.svc".into());
    let (_proxy, addr) = start(
        routes(vec![location("a.test", "/", up), vhost]),
        Settings::default(),
    )
    .await;

    let (status, _, body) = get(
        addr,
        "a.test:8080",
        "/p?q=1",
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("proxy", "http://evil"),
            ("connection", "x-drop"),
            ("x-drop", "1"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seen = json(&body);
    let h = &seen["headers"];
    assert_eq!(seen["uri"], "/p?q=1");
    assert_eq!(h["host"], "a.test:8080");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-original-forwarded-for"], "203.0.113.7");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-scheme"], "http");
    assert_eq!(h["x-scheme"], "http");
    assert_eq!(h["x-forwarded-host"], "a.test:8080");
    assert_eq!(h["x-forwarded-port"], addr.port().to_string());
    assert!(h.get("proxy").is_none());
    assert!(h.get("x-drop").is_none());
    let id = h["x-request-id"].as_str().unwrap();
    assert_eq!(id.len(), 32);
    assert!(
        id.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    );

    let (_, _, body) = get(addr, "a.test", "/", &[("x-request-id", "given-id")]).await;
    let seen = json(&body);
    assert_eq!(seen["headers"]["x-request-id"], "given-id");
    assert!(seen["headers"].get("x-original-forwarded-for").is_none());

    let (_, _, body) = get(addr, "v.test", "/", &[]).await;
    let seen = json(&body);
    assert_eq!(seen["headers"]["host"], "internal.svc");
    assert_eq!(seen["headers"]["x-forwarded-host"], "v.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_append_forwarded_for() {
    let b = backend("b").await;
    let up = upstream("b", &[b.addr], BackendProtocol::Http);
    let settings = Settings {
        trusted_proxies: vec![Cidr::parse("127.0.0.0/8").unwrap()],
        ..Settings::default()
    };
    let mut only = location("a.test", "/", up);
    only.access = Access::Rules {
        allow: vec![Cidr::parse("203.0.113.0/24").unwrap()],
        deny: vec![],
    };
    let (_proxy, addr) = start(routes(vec![only]), settings).await;
    let (status, _, body) = get(addr, "a.test", "/", &[("x-forwarded-for", "203.0.113.7")]).await;
    assert_eq!(status, StatusCode::OK);
    let seen = json(&body);
    assert_eq!(seen["headers"]["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen["headers"]["x-real-ip"], "203.0.113.7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_redirects() {
    let b = backend("b").await;
    let up = upstream("b", &[b.addr], BackendProtocol::Http);
    let mut forced = location("force.test", "/", up.clone());
    forced.force_ssl_redirect = true;
    let mut r = routes(vec![
        location("secure.test", "/", up.clone()),
        location("plain.test", "/", up.clone()),
        forced,
    ]);
    r.tls_hosts.insert("secure.test".into());
    let (_proxy, addr) = start(r, Settings::default()).await;

    for (host, path, location) in [
        ("secure.test:80", "/a/b?x=1", "https://secure.test/a/b?x=1"),
        ("Secure.test", "/dir/", "https://secure.test/dir"),
        ("secure.test", "/", "https://secure.test"),
        ("force.test", "/x", "https://force.test/x"),
    ] {
        let (status, headers, _) = get(addr, host, path, &[]).await;
        assert_eq!(status, StatusCode::PERMANENT_REDIRECT, "{host}{path}");
        assert_eq!(headers["location"], location);
    }
    let (status, _, _) = get(addr, "secure.test", "/.well-known/acme-challenge/tok", &[]).await;
    assert_eq!(status, StatusCode::OK, "ACME challenges are exempt");
    let (status, _, _) = get(addr, "plain.test", "/x", &[]).await;
    assert_eq!(status, StatusCode::OK, "no certificate, no ssl-redirect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_and_app_root() {
    let b = backend("b").await;
    let up = upstream("b", &[b.addr], BackendProtocol::Http);
    let mut moved = location("moved.test", "/", up.clone());
    moved.redirect = Some((308, "https://elsewhere.test/new".into()));
    let mut app = location("app.test", "/", up);
    app.app_root = Some("/app1".into());
    let (_proxy, addr) = start(routes(vec![moved, app]), Settings::default()).await;
    let (status, headers, _) = get(addr, "moved.test", "/any", &[]).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(headers["location"], "https://elsewhere.test/new");
    let (status, headers, _) = get(addr, "app.test:8080", "/", &[]).await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(headers["location"], "http://app.test:8080/app1");
    let (status, _, _) = get(addr, "app.test", "/other", &[]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lists() {
    let b = backend("b").await;
    let up = upstream("b", &[b.addr], BackendProtocol::Http);
    let with = |host: &str, access: Access| {
        let mut l = location(host, "/", up.clone());
        l.access = access;
        l
    };
    let cidr = |s: &str| Cidr::parse(s).unwrap();
    let r = routes(vec![
        with(
            "allow-other.test",
            Access::Rules {
                allow: vec![cidr("10.0.0.0/8")],
                deny: vec![],
            },
        ),
        with(
            "deny-me.test",
            Access::Rules {
                allow: vec![],
                deny: vec![cidr("127.0.0.1")],
            },
        ),
        with(
            "deny-first.test",
            Access::Rules {
                allow: vec![cidr("127.0.0.0/8")],
                deny: vec![cidr("127.0.0.1/32")],
            },
        ),
        with(
            "allow-me.test",
            Access::Rules {
                allow: vec![cidr("127.0.0.0/8")],
                deny: vec![],
            },
        ),
        with("denied.test", Access::Denied("no usable entry".into())),
    ]);
    let (_proxy, addr) = start(r, Settings::default()).await;
    for (host, expected) in [
        ("allow-other.test", StatusCode::FORBIDDEN),
        ("deny-me.test", StatusCode::FORBIDDEN),
        ("deny-first.test", StatusCode::FORBIDDEN),
        ("allow-me.test", StatusCode::OK),
        ("denied.test", StatusCode::SERVICE_UNAVAILABLE),
    ] {
        assert_eq!(get(addr, host, "/", &[]).await.0, expected, "{host}");
    }
    assert_eq!(b.seen.requests.load(Ordering::SeqCst), 1);

    // Rules see the normalized path (as nginx's `$uri`), so encodings and
    // dot segments do not get around a location's allow list.
    let mut admin = location("paths.test", "/admin", up.clone());
    admin.access = Access::Rules {
        allow: vec![cidr("10.0.0.0/8")],
        deny: vec![],
    };
    let (_proxy, addr) = start(
        routes(vec![location("paths.test", "/", up.clone()), admin]),
        Settings::default(),
    )
    .await;
    for path in [
        "/admin",
        "/%61dmin/x",
        "/public/../admin",
        "//admin",
        "/./admin",
    ] {
        assert_eq!(
            get(addr, "paths.test", path, &[]).await.0,
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    assert_eq!(
        get(addr, "paths.test", "/%2e%2e/x", &[]).await.0,
        StatusCode::BAD_REQUEST
    );
    let (status, _, body) = get(addr, "paths.test", "/a%20b/./c?q=%20", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        json(&body)["uri"],
        "/a%20b/./c?q=%20",
        "the original URI goes upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite_target_keeps_the_query() {
    let b = backend("b").await;
    let mut api = location(
        "a.test",
        "/",
        upstream("b", &[b.addr], BackendProtocol::Http),
    );
    api.path = PathRule::new("/api(/|$)(.*)", PathType::ImplementationSpecific, true).unwrap();
    api.rewrite_target = Some("/$2".into());
    let (_proxy, addr) = start(routes(vec![api]), Settings::default()).await;
    for (path, upstream_uri) in [
        ("/api/v1/x?q=1", "/v1/x?q=1"),
        ("/api", "/"),
        ("/API/a%20b", "/a%20b"),
    ] {
        let (status, _, body) = get(addr, "a.test", path, &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(json(&body)["uri"], upstream_uri, "{path}");
    }
}
