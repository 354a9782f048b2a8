//! Long-lived traffic: WebSockets and streams across route swaps, big bodies, drain.

use super::*;

/// Acceptance point 4: a WebSocket and a long streaming response stay
/// intact while the routes are swapped 50 times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_and_stream_survive_route_swaps() {
    let b = backend("b").await;
    let routes_v = |n: usize| {
        let mut locs = vec![location(
            "a.test",
            "/",
            upstream("b", &[b.addr], BackendProtocol::Http),
        )];
        for i in 0..n % 5 {
            locs.push(location(
                &format!("other-{i}.test"),
                "/",
                upstream("o", &[b.addr], BackendProtocol::Http),
            ));
        }
        routes(locs)
    };
    let (proxy, addr) = start(routes_v(0), Settings::default()).await;

    let mut ws = ws_connect(addr, "a.test").await;

    // The stream: 40 chunks, one every 50 ms.
    let req = Request::get("/stream")
        .header("host", "a.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send(addr, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let reader = tokio::spawn(async move {
        let mut body = resp.into_body();
        let mut text = String::new();
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame.unwrap().data_ref() {
                text.push_str(std::str::from_utf8(data).unwrap());
            }
        }
        text
    });

    for i in 0..50 {
        proxy.swap(routes_v(i + 1));
        let msg = format!("message {i}");
        ws.write_all(&frame(1, msg.as_bytes(), Some([1, 2, 3, 4])))
            .await
            .unwrap();
        let (opcode, payload) = tokio::time::timeout(Duration::from_secs(2), read_frame(&mut ws))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((opcode, payload), (1, msg.into_bytes()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap();
    let expected: String = (0..STREAM_CHUNKS)
        .map(|i| format!("chunk-{i:02}\n"))
        .collect();
    assert_eq!(text, expected);
    ws.write_all(&frame(1, b"after", Some([9, 9, 9, 9])))
        .await
        .unwrap();
    assert_eq!(read_frame(&mut ws).await.unwrap().1, b"after");
    // The stream's connection closes; the tunnel is still counted.
    let deadline = Instant::now() + Duration::from_secs(2);
    while proxy.open_connections() != 1 {
        assert!(
            Instant::now() < deadline,
            "{} open",
            proxy.open_connections()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Upgrades to a TLS upstream go over an HTTP/1.1-only connection (ALPN
/// http/1.1), since HTTP/2 cannot carry them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_through_a_tls_upstream() {
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
    tokio::spawn(inner_proxy.serve_https(listener, server_config(resolver.clone()), resolver));
    let outer = routes(vec![location(
        "a.test",
        "/",
        upstream("tls", &[tls_backend], BackendProtocol::Https),
    )]);
    let (_proxy, addr) = start(outer, Settings::default()).await;

    let mut ws = ws_connect(addr, "a.test").await;
    for i in 0..3 {
        let msg = format!("over tls {i}");
        ws.write_all(&frame(1, msg.as_bytes(), Some([5, 6, 7, 8])))
            .await
            .unwrap();
        assert_eq!(read_frame(&mut ws).await.unwrap(), (1, msg.into_bytes()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways() {
    let b = backend("b").await;
    let mut loc = location(
        "a.test",
        "/",
        upstream("b", &[b.addr], BackendProtocol::Http),
    );
    loc.body_limit = None;
    let (_proxy, addr) = start(routes(vec![loc]), Settings::default()).await;

    // Upload 10 MiB; the rest is sent only after the backend saw the first
    // megabyte, so the proxy cannot be buffering the whole body.
    let seen = b.seen.clone();
    let chunks = futures::stream::unfold(0usize, move |i| {
        let seen = seen.clone();
        async move {
            if i == 10 {
                return None;
            }
            if i == 1 {
                let deadline = Instant::now() + Duration::from_secs(5);
                while !seen.upload_started.load(Ordering::SeqCst) {
                    assert!(
                        Instant::now() < deadline,
                        "backend never saw the first bytes"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            let frame = Frame::data(Bytes::from(vec![7u8; 1024 * 1024]));
            Some((Ok::<_, std::convert::Infallible>(frame), i + 1))
        }
    });
    let req = Request::post("/upload")
        .header("host", "a.test")
        .body(StreamBody::new(chunks))
        .unwrap();
    let resp = send(addr, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, (10 * 1024 * 1024).to_string());

    let req = Request::get("/download")
        .header("host", "a.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send(addr, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut total = 0;
    while let Some(frame) = body.frame().await {
        total += frame.unwrap().data_ref().map_or(0, |d| d.len());
    }
    assert_eq!(total, DOWNLOAD_BYTES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_finishes_in_flight_requests() {
    let b = backend("b").await;
    let loc = location(
        "a.test",
        "/",
        upstream("b", &[b.addr], BackendProtocol::Http),
    );
    let (proxy, addr) = start(routes(vec![loc]), Settings::default()).await;
    let req = Request::get("/stream")
        .header("host", "a.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send(addr, req).await;
    let reader = tokio::spawn(async move { resp.into_body().collect().await.unwrap().to_bytes() });
    let started = Instant::now();
    proxy.drain(Duration::from_secs(10)).await;
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "drain returned once the stream ended"
    );
    let body = reader.await.unwrap();
    assert_eq!(body.len(), STREAM_CHUNKS * "chunk-00\n".len());
    assert_eq!(proxy.open_connections(), 0);
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}
