//! The whole server on loopback, without an API server: an index is
//! published by hand, as the agent would, and real UDP/TCP clients ask.
//! Forwarding goes to a stub upstream on 127.0.0.1 that counts queries.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferry_dns::model::objects::{ServiceInfo, ServiceKind, SliceInfo};
use ferry_dns::model::{Index, PodsMode, State};
use ferry_dns::wire::{self, rtype};
use hickory_proto::op::{Message, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

fn config(upstreams: Vec<SocketAddr>) -> ferry_dns::Config {
    ferry_dns::Config {
        zone: "cluster.local".into(),
        ttl: 30,
        pods: PodsMode::Insecure,
        listen: "127.0.0.1:0".parse().expect("addr"),
        threads: 2,
        forward: ferry_dns::forward::Config {
            upstreams,
            ..Default::default()
        },
        health_address: None,
        ready_address: None,
        metrics_address: None,
    }
}

/// `web.shop` (ClusterIP 10.96.0.20) and `many.shop`, headless with 100
/// ready endpoints.
fn state() -> State {
    let mut s = State::default();
    s.namespaces.insert("shop".into());
    s.services.insert(
        ("shop".into(), "web".into()),
        ServiceInfo {
            kind: ServiceKind::ClusterIp(vec!["10.96.0.20".parse().expect("ip")]),
            ports: Box::default(),
        },
    );
    s.services.insert(
        ("shop".into(), "many".into()),
        ServiceInfo {
            kind: ServiceKind::Headless,
            ports: Box::default(),
        },
    );
    let slice: k8s_openapi::api::discovery::v1::EndpointSlice =
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "many-1", "labels": {"kubernetes.io/service-name": "many"}},
            "addressType": "IPv4",
            "endpoints": (1..=100).map(|i| serde_json::json!({"addresses": [format!("10.244.7.{i}")]})).collect::<Vec<_>>()
        }))
        .expect("slice");
    s.slices.insert(
        ("shop".into(), "many-1".into()),
        SliceInfo::from_slice(&slice).expect("owned"),
    );
    s
}

fn publish(shared: &ferry_dns::Shared, synced: bool) {
    let model = ferry_dns::model::Config::default();
    shared
        .index
        .store(Arc::new(Index::build(&state(), &model, 42, synced)));
}

fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    wire::put_name(&mut p, name);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    p
}

async fn ask_udp(server: SocketAddr, name: &str, qtype: u16) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let id = rand::random::<u16>();
    socket
        .send_to(&query(id, name, qtype), server)
        .await
        .expect("send");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
        .await
        .expect("an answer within 5 s")
        .expect("recv");
    let m = Message::from_vec(&buf[..n]).expect("decodes");
    assert_eq!(m.metadata.id, id);
    m
}

async fn ask_tcp(server: SocketAddr, name: &str, qtype: u16) -> Message {
    let mut stream = tokio::net::TcpStream::connect(server)
        .await
        .expect("connect");
    let q = query(9, name, qtype);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    stream.write_all(&framed).await.expect("write");
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.expect("length");
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await.expect("message");
    Message::from_vec(&buf).expect("decodes")
}

/// A stub upstream: `A 192.0.2.1` TTL 300 for every name; counts queries;
/// stops answering when `down` is set.
struct Upstream {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

async fn upstream() -> Upstream {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    let queries = Arc::new(AtomicUsize::new(0));
    let down = Arc::new(AtomicBool::new(false));
    let (q, d) = (queries.clone(), down.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            if d.load(Ordering::SeqCst) {
                continue;
            }
            q.fetch_add(1, Ordering::SeqCst);
            let Ok(parsed) = wire::parse_query(&buf[..n]) else {
                continue;
            };
            let mut out = Vec::new();
            let mut w = wire::ResponseWriter::new(&mut out, &parsed, 0, false, 4096);
            let mut rr = Vec::new();
            wire::put_record(
                &mut rr,
                &wire::QNAME_POINTER,
                rtype::A,
                300,
                &[192, 0, 2, 1],
            );
            w.push(wire::Section::Answer, &rr);
            w.finish();
            let _ = socket.send_to(&out, peer).await;
        }
    });
    Upstream {
        addr,
        queries,
        down,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_names_over_udp_and_tcp_with_truncation() {
    let (shared, server) = ferry_dns::start(&config(Vec::new())).await.expect("start");
    publish(&shared, true);
    let m = ask_udp(server, "Web.Shop.svc.cluster.local", rtype::A).await;
    assert_eq!(
        m.answers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["Web.Shop.svc.cluster.local. 30 IN A 10.96.0.20"]
    );
    // 100 addresses do not fit in 512 bytes: TC over UDP, whole over TCP
    // (the retry path a resolver takes).
    let udp = ask_udp(server, "many.shop.svc.cluster.local", rtype::A).await;
    assert!(udp.metadata.truncation);
    let tcp = ask_tcp(server, "many.shop.svc.cluster.local", rtype::A).await;
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 100);
    let m = ask_udp(server, "nope.shop.svc.cluster.local", rtype::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_and_not_ready_until_the_first_sync() {
    let (shared, server) = ferry_dns::start(&config(Vec::new())).await.expect("start");
    let ready = |shared: &ferry_dns::Shared| {
        let req = http::Request::get("/ready").body(()).expect("request");
        ferry_dns::health::respond(ferry_dns::health::Endpoint::Ready, &req, shared).status()
    };
    assert_eq!(ready(&shared), http::StatusCode::SERVICE_UNAVAILABLE);
    let m = ask_udp(server, "web.shop.svc.cluster.local", rtype::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    publish(&shared, true);
    assert_eq!(ready(&shared), http::StatusCode::OK);
    let m = ask_udp(server, "web.shop.svc.cluster.local", rtype::A).await;
    assert_eq!(m.answers.len(), 1);
    let req = http::Request::get("/metrics").body(()).expect("request");
    let metrics = ferry_dns::health::respond(ferry_dns::health::Endpoint::Metrics, &req, &shared);
    let body = http_body_util::BodyExt::collect(metrics.into_body())
        .await
        .expect("body")
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("rcode=\"SERVFAIL\",plugin=\"kubernetes\"} 1"),
        "{text}"
    );
    assert!(text.contains("coredns_dns_requests_total{"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_names_are_cached_and_fail_fast_while_cluster_names_answer() {
    let up = upstream().await;
    let (shared, server) = ferry_dns::start(&config(vec![up.addr]))
        .await
        .expect("start");
    publish(&shared, true);
    let m = ask_udp(server, "www.example.com", rtype::A).await;
    assert_eq!(m.answers.len(), 1);
    assert_eq!(up.queries.load(Ordering::SeqCst), 1);
    // Answered from the cache: the upstream is not asked again, and the TTL
    // is capped at 30 (kubeadm's `cache 30`).
    for _ in 0..5 {
        let m = ask_udp(server, "WWW.example.com", rtype::A).await;
        assert_eq!(m.answers.len(), 1);
        assert!(m.answers[0].ttl <= 30, "{}", m.answers[0]);
    }
    assert_eq!(
        up.queries.load(Ordering::SeqCst),
        1,
        "served from the cache"
    );

    up.down.store(true, Ordering::SeqCst);
    let mut last = Duration::ZERO;
    for i in 0..4 {
        let started = Instant::now();
        let m = ask_udp(server, &format!("down-{i}.example.com"), rtype::A).await;
        last = started.elapsed();
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    }
    // Once the upstream is known to be down, SERVFAIL comes at once rather
    // than after the 2 s upstream timeout.
    println!("SERVFAIL with the upstream down took {last:?}");
    assert!(last < Duration::from_secs(1), "{last:?}");
    let m = ask_udp(server, "web.shop.svc.cluster.local", rtype::A).await;
    assert_eq!(m.answers.len(), 1, "cluster names keep answering");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_do_not_stop_the_server() {
    let (shared, server) = ferry_dns::start(&config(Vec::new())).await.expect("start");
    publish(&shared, true);
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut garbage: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0xFF; 3],
        vec![0; 12],
        vec![
            0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1,
        ],
    ];
    for _ in 0..200 {
        let len = rand::random::<u16>() % 600;
        garbage.push((0..len).map(|_| rand::random::<u8>()).collect());
    }
    for g in &garbage {
        socket.send_to(g, server).await.expect("send");
    }
    // A FORMERR comes back for a header with a broken question.
    let mut buf = vec![0u8; 4096];
    let mut formerr = false;
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(300), socket.recv(&mut buf)).await
    {
        if let Ok(m) = Message::from_vec(&buf[..n]) {
            formerr |= m.metadata.response_code == ResponseCode::FormErr;
        }
    }
    assert!(formerr, "the self-pointing question got FORMERR");
    let m = ask_udp(server, "web.shop.svc.cluster.local", rtype::A).await;
    assert_eq!(m.answers.len(), 1);
}
