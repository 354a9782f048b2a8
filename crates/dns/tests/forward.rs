//! The forwarder against stub upstreams on 127.0.0.1 (UDP and TCP on one
//! port): caching, TCP on truncation, health and fail-fast, the concurrency
//! limit, and malformed upstream replies. Loopback only.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferry_dns::forward::{Config, Forwarder};
use ferry_dns::wire::{
    CLASS_IN, HEADER_LEN, QNAME_POINTER, parse_query, put_name, put_record, rcode, read_u16,
    read_u32, rtype, skip_name, skip_record,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

// What a stub does with a query (its mode); 0, the default, answers.
/// Never answers (a black-holed upstream: queries time out).
const SILENT: u8 = 1;
/// Answers the id followed by garbage.
const GARBAGE: u8 = 2;
/// Answers a right header and question, then records that are cut short.
const BROKEN: u8 = 3;

#[derive(Default)]
struct Counters {
    /// Queries other than health probes (`.`), over UDP and TCP.
    queries: AtomicUsize,
    tcp: AtomicUsize,
    mode: AtomicU8,
}

/// A stub upstream: `*.example.` A → 192.0.2.1 TTL 300, `nx.example.`
/// NXDOMAIN with an SOA (TTL 60), `big.example.` 100 records (TC over UDP),
/// `slow.example.` answered after 1 s.
struct Stub {
    addr: SocketAddr,
    counters: Arc<Counters>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Stub {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Stub {
    async fn start() -> Stub {
        for _ in 0..20 {
            if let Ok(stub) = Stub::start_on(0).await {
                return stub;
            }
        }
        panic!("no free loopback port for UDP and TCP");
    }

    async fn start_on(port: u16) -> std::io::Result<Stub> {
        let udp = Arc::new(UdpSocket::bind((LOOPBACK, port)).await?);
        let addr = udp.local_addr()?;
        let tcp = TcpSocket::new_v4()?;
        tcp.set_reuseaddr(true)?;
        tcp.bind(addr)?;
        let listener = tcp.listen(16)?;
        let counters = Arc::new(Counters::default());
        let c = Arc::clone(&counters);
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65535];
            loop {
                let Ok((n, from)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                let Some((delay, reply)) = respond(&c, &buf[..n], false) else {
                    continue;
                };
                let udp = Arc::clone(&udp);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = udp.send_to(&reply, from).await;
                });
            }
        });
        let c = Arc::clone(&counters);
        let tcp_task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_tcp(Arc::clone(&c), stream));
            }
        });
        Ok(Stub {
            addr,
            counters,
            tasks: vec![udp_task, tcp_task],
        })
    }

    fn queries(&self) -> usize {
        self.counters.queries.load(Ordering::SeqCst)
    }

    fn set_mode(&self, mode: u8) {
        self.counters.mode.store(mode, Ordering::SeqCst);
    }
}

async fn serve_tcp(c: Arc<Counters>, mut stream: TcpStream) {
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut msg).await.is_err() {
            return;
        }
        if let Some((delay, reply)) = respond(&c, &msg, true) {
            tokio::time::sleep(delay).await;
            let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&reply);
            if stream.write_all(&framed).await.is_err() {
                return;
            }
        }
    }
}

/// The stub's answer to `msg`, and how long to hold it.
fn respond(c: &Counters, msg: &[u8], tcp: bool) -> Option<(Duration, Vec<u8>)> {
    let q = parse_query(msg).ok()?;
    let name = q.name.as_str();
    if !name.is_empty() {
        c.queries.fetch_add(1, Ordering::SeqCst);
        if tcp {
            c.tcp.fetch_add(1, Ordering::SeqCst);
        }
    }
    let mut r = msg[..2].to_vec();
    match c.mode.load(Ordering::SeqCst) {
        SILENT => return None,
        GARBAGE => {
            r.extend((0..40u32).map(|i| (i * 37 + 11) as u8));
            return Some((Duration::ZERO, r));
        }
        BROKEN => {
            r.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 5, 0, 0, 0, 0]);
            r.extend_from_slice(q.question);
            r.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0]);
            return Some((Duration::ZERO, r));
        }
        _ => {}
    }
    let mut flags = 0x8080 | (q.flags & 0x0100);
    let (mut an, mut ns) = (0u16, 0u16);
    let mut records = Vec::new();
    let mut delay = Duration::ZERO;
    let soa = |records: &mut Vec<u8>| {
        let mut owner = Vec::new();
        put_name(&mut owner, "example");
        let mut rdata = Vec::new();
        put_name(&mut rdata, "ns.example");
        put_name(&mut rdata, "hostmaster.example");
        for v in [1u32, 3600, 600, 86400, 60] {
            rdata.extend_from_slice(&v.to_be_bytes());
        }
        put_record(records, &owner, rtype::SOA, 60, &rdata);
    };
    match name {
        "" => {}
        "nx.example" => {
            flags |= rcode::NXDOMAIN;
            soa(&mut records);
            ns = 1;
        }
        "big.example" if !tcp => flags |= 0x0200,
        "big.example" => {
            for i in 0..100u8 {
                put_record(&mut records, &QNAME_POINTER, rtype::A, 300, &[192, 0, 2, i]);
            }
            an = 100;
        }
        n if n.ends_with(".example") && q.qtype == rtype::A => {
            if n == "slow.example" {
                delay = Duration::from_secs(1);
            }
            put_record(&mut records, &QNAME_POINTER, rtype::A, 300, &[192, 0, 2, 1]);
            an = 1;
        }
        n if n.ends_with(".example") => {
            soa(&mut records);
            ns = 1;
        }
        _ => flags |= rcode::REFUSED,
    }
    r.extend_from_slice(&flags.to_be_bytes());
    r.extend_from_slice(&[0, 1]);
    r.extend_from_slice(&an.to_be_bytes());
    r.extend_from_slice(&ns.to_be_bytes());
    r.extend_from_slice(&u16::from(q.edns.is_some()).to_be_bytes());
    r.extend_from_slice(q.question);
    r.extend_from_slice(&records);
    if q.edns.is_some() {
        r.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0]);
    }
    Some((delay, r))
}

fn query(id: u16, name: &str, qtype: u16, edns: bool) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)]);
    put_name(&mut p, name);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&CLASS_IN.to_be_bytes());
    if edns {
        p.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0]);
    }
    p
}

/// A reply taken apart for assertions.
#[derive(Debug)]
struct Reply {
    id: u16,
    flags: u16,
    question: Vec<u8>,
    /// (type, TTL, rdata) of the answer section.
    answers: Vec<(u16, u32, Vec<u8>)>,
    authority: Vec<u16>,
    additional: u16,
    len: usize,
}

impl Reply {
    fn rcode(&self) -> u16 {
        self.flags & 0x000F
    }

    fn truncated(&self) -> bool {
        self.flags & 0x0200 != 0
    }
}

fn parse_reply(p: &[u8]) -> Reply {
    let count = |at| read_u16(p, at).expect("header");
    let qend = skip_name(p, HEADER_LEN).expect("question") + 4;
    let mut at = qend;
    let mut answers = Vec::new();
    for _ in 0..count(6) {
        let (t, ttl_at, end) = skip_record(p, at).expect("answer");
        let ttl = read_u32(p, ttl_at).expect("ttl");
        answers.push((t, ttl, p[ttl_at + 6..end].to_vec()));
        at = end;
    }
    let mut authority = Vec::new();
    for _ in 0..count(8) {
        let (t, _, end) = skip_record(p, at).expect("authority");
        authority.push(t);
        at = end;
    }
    for _ in 0..count(10) {
        at = skip_record(p, at).expect("additional").2;
    }
    assert_eq!(at, p.len(), "no trailing bytes");
    Reply {
        id: count(0),
        flags: count(2),
        question: p[HEADER_LEN..qend].to_vec(),
        answers,
        authority,
        additional: count(10),
        len: p.len(),
    }
}

/// What a server does with a forwarded query: the cache, else upstream.
/// Returns the reply and whether it came from the cache.
async fn ask(fwd: &Forwarder, packet: &[u8], limit: usize) -> (Reply, bool) {
    let q = parse_query(packet).expect("query");
    let mut out = Vec::new();
    if fwd.cached(&q, packet, limit, &mut out) {
        return (parse_reply(&out), true);
    }
    (parse_reply(&fwd.resolve(packet, limit).await), false)
}

fn question_of(packet: &[u8]) -> Vec<u8> {
    parse_query(packet).expect("query").question.to_vec()
}

fn metrics(fwd: &Forwarder) -> String {
    let mut out = String::new();
    fwd.write_metrics("dns://:53", &mut out);
    out
}

fn forwarder(upstreams: Vec<SocketAddr>) -> Arc<Forwarder> {
    Forwarder::new(Config {
        upstreams,
        ..Config::default()
    })
}

#[test]
fn forwarder_is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<Forwarder>();
}

#[tokio::test]
async fn repeated_query_is_a_cache_hit_with_the_clients_id_and_case() {
    let stub = Stub::start().await;
    let fwd = forwarder(vec![stub.addr]);
    let first = query(0x1234, "WwW.ExAmPle", rtype::A, false);
    let (r1, hit) = ask(&fwd, &first, 512).await;
    assert!(!hit);
    assert_eq!((r1.id, r1.rcode()), (0x1234, rcode::NOERROR));
    assert_eq!(r1.question, question_of(&first));
    assert_eq!(r1.answers.len(), 1);
    assert_eq!(r1.answers[0].2, [192, 0, 2, 1]);
    assert!(
        (1..=30).contains(&r1.answers[0].1),
        "TTL capped: {}",
        r1.answers[0].1
    );

    let second = query(0x4321, "wWw.eXaMpLE", rtype::A, false);
    let (r2, hit) = ask(&fwd, &second, 512).await;
    assert!(hit);
    assert_eq!(stub.queries(), 1, "answered from the cache");
    assert_eq!((r2.id, r2.rcode()), (0x4321, rcode::NOERROR));
    assert_eq!(r2.question, question_of(&second), "the client's 0x20 case");
    assert_eq!(r2.answers[0].2, [192, 0, 2, 1]);
    assert!(r2.answers[0].1 <= r1.answers[0].1, "TTL does not increase");

    let m = metrics(&fwd);
    for line in [
        "coredns_cache_hits_total{server=\"dns://:53\",type=\"success\",zones=\".\"} 1",
        "coredns_cache_misses_total{server=\"dns://:53\",zones=\".\"} 1",
        "coredns_cache_requests_total{server=\"dns://:53\",zones=\".\"} 2",
        "coredns_cache_entries{server=\"dns://:53\",type=\"success\",zones=\".\"} 1",
        "# TYPE coredns_proxy_request_duration_seconds histogram",
        "coredns_forward_max_concurrent_rejects_total 0",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} in\n{m}");
    }
    let count = format!(
        "coredns_proxy_request_duration_seconds_count{{proxy_name=\"forward\",to=\"{}\",rcode=\"NOERROR\"}} 1",
        stub.addr
    );
    assert!(m.lines().any(|l| l == count), "{count} in\n{m}");
    let buckets: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("coredns_proxy_request_duration_seconds_bucket"))
        .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(buckets.len(), 17, "16 buckets and +Inf");
    assert_eq!(
        (buckets[0], buckets[15], buckets[16]),
        ("0.00025", "8.192", "+Inf")
    );
}

#[tokio::test]
async fn nxdomain_is_cached_as_denial_with_its_soa() {
    let stub = Stub::start().await;
    let fwd = forwarder(vec![stub.addr]);
    for (id, hit) in [(1, false), (2, true)] {
        let (r, was_hit) = ask(&fwd, &query(id, "nx.example", rtype::A, true), 1232).await;
        assert_eq!(was_hit, hit);
        assert_eq!((r.id, r.rcode()), (id, rcode::NXDOMAIN));
        assert_eq!(r.authority, [rtype::SOA]);
        assert_eq!(r.additional, 1, "the client's OPT echoed");
    }
    assert_eq!(stub.queries(), 1);
    let m = metrics(&fwd);
    let line = "coredns_cache_hits_total{server=\"dns://:53\",type=\"denial\",zones=\".\"} 1";
    assert!(m.lines().any(|l| l == line), "{m}");
}

#[tokio::test]
async fn truncated_udp_reply_is_retried_over_tcp() {
    let stub = Stub::start().await;
    let fwd = forwarder(vec![stub.addr]);
    let (full, hit) = ask(&fwd, &query(5, "big.example", rtype::A, false), 65535).await;
    assert!(!hit);
    assert_eq!(full.rcode(), rcode::NOERROR);
    assert!(!full.truncated());
    assert_eq!(full.answers.len(), 100);
    assert_eq!(stub.counters.tcp.load(Ordering::SeqCst), 1);

    let (cut, hit) = ask(&fwd, &query(6, "big.example", rtype::A, false), 512).await;
    assert!(hit);
    assert!(cut.truncated() && cut.len <= 512 && cut.id == 6);

    // The same from upstream directly, not from the cache.
    let fresh = forwarder(vec![stub.addr]);
    let (cut, hit) = ask(&fresh, &query(7, "big.example", rtype::A, true), 512).await;
    assert!(!hit);
    assert!(cut.truncated() && cut.len <= 512 && cut.id == 7);
}

#[tokio::test]
async fn down_upstream_fails_fast_then_recovers() {
    let stub = Stub::start().await;
    let addr = stub.addr;
    let fwd = forwarder(vec![addr]);
    assert_eq!(
        ask(&fwd, &query(1, "ok.example", rtype::A, false), 512)
            .await
            .0
            .rcode(),
        rcode::NOERROR
    );

    stub.set_mode(SILENT);
    for name in ["a0.example", "a1.example"] {
        let (r, _) = ask(&fwd, &query(2, name, rtype::A, false), 512).await;
        assert_eq!((r.id, r.rcode()), (2, rcode::SERVFAIL));
    }
    let sent = stub.queries();
    for i in 2..6 {
        let start = Instant::now();
        let (r, _) = ask(
            &fwd,
            &query(3, &format!("a{i}.example"), rtype::A, false),
            512,
        )
        .await;
        assert_eq!((r.id, r.rcode()), (3, rcode::SERVFAIL));
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "fail fast, not the 2 s timeout"
        );
    }
    assert_eq!(stub.queries(), sent, "a down upstream is not asked");
    assert!(!metrics(&fwd).contains("coredns_forward_healthcheck_broken_total 0\n"));
    let probe_failed = format!(
        "coredns_proxy_healthcheck_failures_total{{proxy_name=\"forward\",to=\"{addr}\"}} 0"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while metrics(&fwd).lines().any(|l| l == probe_failed) {
        assert!(
            Instant::now() < deadline,
            "the probe of a silent upstream fails"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    drop(stub);
    let start = Instant::now();
    let (r, _) = ask(&fwd, &query(4, "b0.example", rtype::A, false), 512).await;
    assert_eq!(r.rcode(), rcode::SERVFAIL);
    assert!(start.elapsed() < Duration::from_secs(1));

    let deadline = Instant::now() + Duration::from_secs(5);
    let _stub = loop {
        match Stub::start_on(addr.port()).await {
            Ok(stub) => break stub,
            Err(e) => assert!(Instant::now() < deadline, "rebinding {addr}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // A name that got SERVFAIL before: that SERVFAIL was not cached.
        let (r, _) = ask(&fwd, &query(5, "a0.example", rtype::A, false), 512).await;
        if r.rcode() == rcode::NOERROR {
            assert_eq!(r.answers.len(), 1);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "recovers once the upstream is back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn over_max_concurrent_is_refused() {
    let stub = Stub::start().await;
    let fwd = Forwarder::new(Config {
        upstreams: vec![stub.addr],
        max_concurrent: 1,
        ..Config::default()
    });
    let slow = tokio::spawn({
        let fwd = Arc::clone(&fwd);
        async move {
            fwd.resolve(&query(1, "slow.example", rtype::A, false), 512)
                .await
        }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while stub.queries() == 0 {
        assert!(Instant::now() < deadline, "the slow query reaches the stub");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = parse_reply(
        &fwd.resolve(&query(2, "fast.example", rtype::A, false), 512)
            .await,
    );
    assert_eq!((refused.id, refused.rcode()), (2, rcode::REFUSED));
    assert!(
        metrics(&fwd)
            .lines()
            .any(|l| l == "coredns_forward_max_concurrent_rejects_total 1")
    );

    let slow = parse_reply(&slow.await.expect("slow query"));
    assert_eq!((slow.id, slow.rcode()), (1, rcode::NOERROR));
    let again = parse_reply(
        &fwd.resolve(&query(3, "fast.example", rtype::A, false), 512)
            .await,
    );
    assert_eq!(again.rcode(), rcode::NOERROR, "the slot is given back");
}

#[tokio::test]
async fn no_upstreams_is_servfail() {
    let fwd = forwarder(Vec::new());
    let packet = query(9, "Some.Where", rtype::AAAA, true);
    let (r, hit) = ask(&fwd, &packet, 1232).await;
    assert!(!hit);
    assert_eq!((r.id, r.rcode()), (9, rcode::SERVFAIL));
    assert_eq!(r.question, question_of(&packet));
    assert_eq!(r.flags & 0x8180, 0x8180, "QR, RD, RA");
}

#[tokio::test]
async fn malformed_upstream_reply_is_a_failure() {
    let bad = Stub::start().await;
    let good = Stub::start().await;
    let fwd = Forwarder::new(Config {
        upstreams: vec![bad.addr, good.addr],
        timeout: Duration::from_millis(500),
        ..Config::default()
    });
    bad.set_mode(GARBAGE);
    let (r, _) = ask(&fwd, &query(1, "g.example", rtype::A, false), 512).await;
    assert_eq!(
        (r.id, r.rcode()),
        (1, rcode::NOERROR),
        "the next upstream answered"
    );
    assert_eq!((bad.queries(), good.queries()), (1, 1));

    bad.set_mode(BROKEN);
    let (r, _) = ask(&fwd, &query(2, "h.example", rtype::A, false), 512).await;
    assert_eq!((r.id, r.rcode()), (2, rcode::NOERROR));
    assert_eq!((bad.queries(), good.queries()), (2, 2));

    // Two failures in a row: the bad upstream is down and skipped.
    let (r, _) = ask(&fwd, &query(3, "i.example", rtype::A, false), 512).await;
    assert_eq!(r.rcode(), rcode::NOERROR);
    assert_eq!((bad.queries(), good.queries()), (2, 3));

    let alone = forwarder(vec![bad.addr]);
    let (r, _) = ask(&alone, &query(4, "j.example", rtype::A, false), 512).await;
    assert_eq!((r.id, r.rcode()), (4, rcode::SERVFAIL));
}
