//! Request limits and framing: body size, header size and time, smuggling.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limits() {
    let b = backend("b").await;
    let mut small = location(
        "a.test",
        "/",
        upstream("b", &[b.addr], BackendProtocol::Http),
    );
    small.body_limit = Some(1024);
    let (_proxy, addr) = start(routes(vec![small]), Settings::default()).await;

    let (status, _, _) = request(
        addr,
        "POST",
        "a.test",
        "/",
        &[],
        Bytes::from(vec![1u8; 2048]),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "Content-Length over the limit"
    );
    assert_eq!(
        b.seen.requests.load(Ordering::SeqCst),
        0,
        "413 before the upstream"
    );

    // Chunked: no Content-Length, the limit is found while streaming.
    let chunks = futures::stream::iter(
        (0..8).map(|_| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![2u8; 512])))),
    );
    let req = Request::post("/upload")
        .header("host", "a.test")
        .body(StreamBody::new(chunks))
        .unwrap();
    let resp = send(addr, req).await;
    assert_eq!(
        resp.status(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "streamed body over the limit"
    );

    let (status, _, body) = request(
        addr,
        "POST",
        "a.test",
        "/",
        &[],
        Bytes::from(vec![1u8; 1000]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["body_len"], 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_limits_and_slow_clients() {
    let b = backend("b").await;
    let settings = Settings {
        header_read_timeout: Duration::from_millis(500),
        ..Settings::default()
    };
    let loc = location(
        "a.test",
        "/",
        upstream("b", &[b.addr], BackendProtocol::Http),
    );
    let (_proxy, addr) = start(routes(vec![loc]), settings).await;

    let big = "x".repeat(40 * 1024);
    let answer = raw(
        addr,
        format!("GET / HTTP/1.1\r\nHost: a.test\r\nX-Big: {big}\r\n\r\n").as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    // A client that trickles its header is cut off after the timeout.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n")
        .await
        .unwrap();
    let closed = async {
        let mut buf = [0u8; 64];
        loop {
            if tcp.write_all(b"X-Slow: 1\r\n").await.is_err() {
                return;
            }
            match tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "closed too early: {took:?}"
    );
    assert_eq!(b.seen.requests.load(Ordering::SeqCst), 0);

    // A connection that never sends anything is closed as well.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(n, Ok(0) | Err(_)));
}

/// What hyper does with request-smuggling shapes (documented in the
/// report): TE+CL in either order is read as chunked, CL ignored, and the
/// connection closed after the response, so the smuggled second request
/// never reaches anyone; differing duplicate CLs, a final coding other
/// than chunked and TE on HTTP/1.0 are 400 from hyper; `gzip, chunked` is
/// 400 from the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_attempts() {
    let b = backend("b").await;
    let loc = location(
        "a.test",
        "/",
        upstream("b", &[b.addr], BackendProtocol::Http),
    );
    let (_proxy, addr) = start(routes(vec![loc]), Settings::default()).await;
    let limit = Duration::from_secs(5);

    for head in [
        "Content-Length: 4\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 4",
    ] {
        let before = b.seen.requests.load(Ordering::SeqCst);
        let attack = format!(
            "POST /first HTTP/1.1\r\nHost: a.test\r\n{head}\r\n\r\n0\r\n\r\n\
             GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n"
        );
        let answer = raw(addr, attack.as_bytes(), limit).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "one response, then close: {answer}"
        );
        assert_eq!(b.seen.requests.load(Ordering::SeqCst), before + 1);
    }
    let paths = b.seen.paths.lock().unwrap().clone();
    assert!(paths.iter().all(|p| p == "/first"), "{paths:?}");

    for bad in [
        "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.0\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a.test\r\nX-A: 1\r\n folded\r\n\r\n",
        "GET /a b HTTP/1.1\r\nHost: a.test\r\n\r\n",
    ] {
        let answer = raw(addr, bad.as_bytes(), limit).await;
        assert!(
            answer.starts_with("HTTP/1.1 400") || answer.starts_with("HTTP/1.0 400"),
            "{bad:?} -> {answer}"
        );
    }
    assert_eq!(b.seen.requests.load(Ordering::SeqCst), 2);

    // Identical duplicate Content-Lengths are one length to hyper.
    let answer = raw(
        addr,
        b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nContent-Length: 3\r\n\
          Connection: close\r\n\r\nabc",
        limit,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"body_len\":3"), "{answer}");
}
