//! Upstream behaviour: retries and failures, HTTP/2, TLS upstreams, CORS, HSTS.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_upstream_failures() {
    let good = backend("good").await;
    let closed = closed_port();
    let mut stalled = location(
        "stall.test",
        "/",
        upstream("stall", &[good.addr], BackendProtocol::Http),
    );
    stalled.read_timeout = Duration::from_millis(300);
    let r = routes(vec![
        location(
            "retry.test",
            "/",
            upstream("mixed", &[closed, good.addr], BackendProtocol::Http),
        ),
        location(
            "dead.test",
            "/",
            upstream("dead", &[closed], BackendProtocol::Http),
        ),
        location(
            "empty.test",
            "/",
            upstream("empty", &[], BackendProtocol::Http),
        ),
        stalled,
    ]);
    let (proxy, addr) = start(r, Settings::default()).await;

    for _ in 0..4 {
        let (status, _, body) = get(addr, "retry.test", "/", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json(&body)["name"], "good");
    }
    let (status, _, _) = request(
        addr,
        "POST",
        "retry.test",
        "/",
        &[],
        Bytes::from_static(b"x"),
    )
    .await;
    assert!(status == StatusCode::OK || status == StatusCode::BAD_GATEWAY);
    let (status, _, _) = request(
        addr,
        "POST",
        "dead.test",
        "/",
        &[],
        Bytes::from_static(b"x"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "POST is not retried");
    let (status, _, _) = get(addr, "dead.test", "/", &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "every endpoint refused");
    let (status, _, _) = get(addr, "empty.test", "/", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let started = Instant::now();
    let (status, _, _) = get(addr, "stall.test", "/stall", &[]).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(3));

    let mut metrics = String::new();
    proxy.write_metrics(&mut metrics);
    assert!(
        metrics.contains("service=\"mixed\",kind=\"connect\""),
        "{metrics}"
    );
    assert!(metrics.contains("service=\"empty\",kind=\"no_endpoints\"} 1"));
    assert!(metrics.contains("service=\"stall\",kind=\"timeout\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_from_clients_and_to_h2c_upstreams() {
    let b = backend("b").await;
    let r = routes(vec![
        location(
            "a.test",
            "/",
            upstream("b", &[b.addr], BackendProtocol::Http),
        ),
        location(
            "h2.test",
            "/",
            upstream("h2", &[b.addr], BackendProtocol::H2c),
        ),
        location(
            "grpc.test",
            "/",
            upstream("g", &[b.addr], BackendProtocol::Grpc),
        ),
    ]);
    let (_proxy, addr) = start(r, Settings::default()).await;

    // h2c with prior knowledge to the plain listener.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    for (host, version) in [
        ("a.test", "HTTP/1.1"),
        ("h2.test", "HTTP/2.0"),
        ("grpc.test", "HTTP/2.0"),
    ] {
        let req = Request::get(format!("http://{host}/h2?x=1"))
            .header("te", "trailers")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = tx.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let seen = json(&resp.into_body().collect().await.unwrap().to_bytes());
        assert_eq!(seen["version"], version, "{host}: {seen}");
        assert_eq!(seen["headers"]["x-forwarded-host"], host);
        if version == "HTTP/2.0" {
            // :authority carries the client's host, not the endpoint.
            assert_eq!(seen["uri"], format!("http://{host}/h2?x=1"));
        } else {
            assert_eq!(seen["headers"]["host"], host);
            assert!(seen["headers"].get("te").is_none());
        }
    }

    // HTTP/1.1 client to an h2c upstream, with a body.
    let (status, _, body) = request(
        addr,
        "POST",
        "h2.test",
        "/p",
        &[],
        Bytes::from_static(b"hello"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seen = json(&body);
    assert_eq!(seen["version"], "HTTP/2.0");
    assert_eq!(seen["body_len"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_and_headers() {
    let b = backend("b").await;
    let mut loc = location(
        "a.test",
        "/",
        upstream("b", &[b.addr], BackendProtocol::Http),
    );
    loc.cors = Some(Cors {
        allow_origin: vec!["https://app.test".into()],
        allow_methods: "GET, PUT, POST, DELETE, PATCH, OPTIONS".into(),
        allow_headers: "DNT,Keep-Alive,User-Agent,Content-Type,Authorization".into(),
        allow_credentials: true,
        expose_headers: "X-Total".into(),
        max_age: 1728000,
    });
    let (_proxy, addr) = start(routes(vec![loc]), Settings::default()).await;

    let origin = [("origin", "https://app.test")];
    let (status, h, body) = request(addr, "OPTIONS", "a.test", "/api", &origin, Bytes::new()).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(body.is_empty());
    assert_eq!(h["access-control-allow-origin"], "https://app.test");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(
        h["access-control-allow-methods"],
        "GET, PUT, POST, DELETE, PATCH, OPTIONS"
    );
    assert_eq!(h["access-control-expose-headers"], "X-Total");
    assert_eq!(h["access-control-max-age"], "1728000");
    assert_eq!(h["content-type"], "text/plain charset=UTF-8");
    assert_eq!(
        b.seen.requests.load(Ordering::SeqCst),
        0,
        "preflight is not proxied"
    );

    let (status, h, _) = get(addr, "a.test", "/api", &origin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h["access-control-allow-origin"], "https://app.test");
    let (status, h, _) = get(addr, "a.test", "/api", &[("origin", "https://evil.test")]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(h.get("access-control-allow-origin").is_none());
    let (status, _, _) = request(
        addr,
        "OPTIONS",
        "a.test",
        "/api",
        &[("origin", "https://evil.test")],
        Bytes::new(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "unmatched preflight goes upstream");
}

/// HSTS only over HTTPS, only when enabled, only for hosts with a real
/// certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_over_https_with_a_real_certificate() {
    let b = backend("b").await;
    let up = upstream("b", &[b.addr], BackendProtocol::Http);
    let hsts = Hsts {
        max_age: 31536000,
        include_subdomains: true,
        preload: false,
    };
    let mut secure = location("secure.test", "/", up.clone());
    secure.hsts = Some(hsts.clone());
    let mut fake = location("fake.test", "/", up.clone());
    fake.hsts = Some(hsts);
    let mut r = routes(vec![secure, fake, location("off.test", "/", up)]);
    r.tls_hosts.insert("secure.test".into());

    let generated = rcgen::generate_simple_self_signed(vec!["secure.test".to_string()]).unwrap();
    let secret = BTreeMap::from([
        ("tls.crt".to_string(), generated.cert.pem().into_bytes()),
        (
            "tls.key".to_string(),
            generated.signing_key.serialize_pem().into_bytes(),
        ),
    ]);
    let cert = certificate_from_secret("default/secure", &secret).unwrap();
    let mut index = CertIndex::new(default_certificate());
    index.insert("secure.test", Arc::new(cert));
    let resolver = CertResolver::new(index);

    let listener = ferry_ingress::dataplane::proxy::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let tls_addr = listener.local_addr().unwrap();
    let (proxy, http_addr) = start(r, Settings::default()).await;
    tokio::spawn(
        proxy
            .clone()
            .serve_https(listener, server_config(resolver.clone()), resolver),
    );

    for (host, hsts) in [
        ("secure.test", Some("max-age=31536000; includeSubDomains")),
        ("fake.test", None),
        ("off.test", None),
    ] {
        let (status, h) = https_get(tls_addr, host).await;
        assert_eq!(status, StatusCode::OK, "{host}");
        assert_eq!(
            h.get("strict-transport-security")
                .map(|v| v.to_str().unwrap()),
            hsts,
            "{host}"
        );
    }
    // Plain HTTP never gets it (secure.test redirects, fake.test does not).
    let (status, h, _) = get(http_addr, "fake.test", "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(h.get("strict-transport-security").is_none());
}

async fn https_get(addr: std::net::SocketAddr, host: &str) -> (StatusCode, http::HeaderMap) {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AcceptAny))
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/")
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let seen = json(&body.collect().await.unwrap().to_bytes());
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
    assert_eq!(seen["headers"]["x-forwarded-port"], addr.port().to_string());
    (parts.status, parts.headers)
}

#[derive(Debug)]
struct AcceptAny;

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Upstream connections are pooled: sequential requests from separate
/// client connections reuse them (HTTP/1.1 keep-alive, one HTTP/2
/// connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused() {
    let (h1, h2) = (backend("h1").await, backend("h2").await);
    let r = routes(vec![
        location(
            "a.test",
            "/",
            upstream("h1", &[h1.addr], BackendProtocol::Http),
        ),
        location(
            "h2.test",
            "/",
            upstream("h2", &[h2.addr], BackendProtocol::H2c),
        ),
    ]);
    let (_proxy, addr) = start(r, Settings::default()).await;
    for _ in 0..10 {
        assert_eq!(get(addr, "a.test", "/", &[]).await.0, StatusCode::OK);
        assert_eq!(get(addr, "h2.test", "/", &[]).await.0, StatusCode::OK);
    }
    assert!(h1.seen.connections.load(Ordering::SeqCst) <= 2);
    assert_eq!(h2.seen.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams() {
    // A TLS backend: the proxy's own HTTPS listener in front of a plain
    // backend, with the default (self-signed) certificate.
    let b = backend("b").await;
    let inner = routes(vec![location(
        "a.test",
        "/",
        upstream("b", &[b.addr], BackendProtocol::Http),
    )]);
    let resolver = CertResolver::new(CertIndex::new(default_certificate()));
    let listener = ferry_ingress::dataplane::proxy::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let tls_backend = listener.local_addr().unwrap();
    let (inner_proxy, _) = start(inner, Settings::default()).await;
    tokio::spawn(inner_proxy.clone().serve_https(
        listener,
        server_config(resolver.clone()),
        resolver,
    ));

    let r = routes(vec![location(
        "a.test",
        "/",
        upstream("tls", &[tls_backend], BackendProtocol::Https),
    )]);
    let (_proxy, addr) = start(r, Settings::default()).await;
    for _ in 0..3 {
        let (status, _, body) = get(addr, "a.test", "/x", &[]).await;
        assert_eq!(status, StatusCode::OK);
        let seen = json(&body);
        assert_eq!(seen["name"], "b");
        // The inner proxy saw an HTTPS request (ALPN h2 to it).
        assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
    }
    assert_eq!(
        inner_proxy.open_connections(),
        1,
        "one multiplexed TLS connection"
    );
}
