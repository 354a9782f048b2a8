//! The upstream servers: one exchange (UDP from a fresh socket and random
//! id, TCP when the reply is truncated) that accepts only the reply to what
//! was sent, health by consecutive failures as CoreDNS's `max_fails 2`, and
//! the background probe that brings a down upstream back.

use std::fmt::Write as _;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, timeout_at};

use super::cache::FLAG_TC;
use crate::wire::{self, HEADER_LEN, read_u16};

/// Failures in a row that mark an upstream down (CoreDNS `max_fails`).
pub(super) const MAX_FAILS: u32 = 2;
/// How often a down upstream is probed (CoreDNS `health_check`).
const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// A probe waits at most this long, less when the query timeout is less.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// `. IN NS` with RD, the id filled in per probe.
const PROBE: [u8; 17] = [0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1];
/// Buckets of the request duration histogram: 0.25 ms doubling 16 times.
const BUCKETS: usize = 16;

/// Why one exchange with an upstream did not give a usable reply; every
/// kind counts against the upstream's health.
#[derive(Debug, Error)]
pub(super) enum Failure {
    #[error("timed out")]
    Timeout,
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("malformed reply")]
    Malformed,
}

/// Request durations of one (upstream, rcode).
struct Histogram {
    rcode: u16,
    buckets: [u64; BUCKETS],
    count: u64,
    sum: f64,
}

fn bucket_bound(i: usize) -> f64 {
    0.00025 * f64::from(1u32 << i)
}

/// One upstream server and its health.
pub(super) struct Upstream {
    pub(super) addr: SocketAddr,
    label: String,
    fails: AtomicU32,
    down: AtomicBool,
    probe_failures: AtomicU64,
    durations: Mutex<Vec<Histogram>>,
}

impl Upstream {
    fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// Counts a failure; true when it marked the upstream down.
    fn fail(&self) -> bool {
        let fails = self.fails.fetch_add(1, Ordering::SeqCst).saturating_add(1);
        fails >= MAX_FAILS && !self.down.swap(true, Ordering::SeqCst)
    }

    fn succeed(&self) {
        self.fails.store(0, Ordering::SeqCst);
    }

    fn observe(&self, rcode: u16, took: Duration) {
        let secs = took.as_secs_f64();
        let mut all = self
            .durations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let h = match all.iter().position(|h| h.rcode == rcode) {
            Some(i) => &mut all[i],
            None => {
                all.push(Histogram {
                    rcode,
                    buckets: [0; BUCKETS],
                    count: 0,
                    sum: 0.0,
                });
                let last = all.len() - 1;
                &mut all[last]
            }
        };
        for (i, b) in h.buckets.iter_mut().enumerate() {
            if secs <= bucket_bound(i) {
                *b += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Sends `. IN NS`; any well-formed reply, whatever its rcode, brings
    /// the upstream back.
    async fn probe(&self, timeout: Duration) {
        match udp(
            self.addr,
            &PROBE,
            &PROBE[HEADER_LEN..],
            Instant::now() + timeout,
        )
        .await
        {
            Ok(_) => {
                self.fails.store(0, Ordering::SeqCst);
                self.down.store(false, Ordering::SeqCst);
                tracing::info!(upstream = %self.addr, "upstream DNS server is back");
            }
            Err(e) => {
                self.probe_failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(upstream = %self.addr, "health probe: {e}");
            }
        }
    }
}

/// The configured upstreams, in order, and the state of their prober.
pub(super) struct Upstreams {
    list: Box<[Upstream]>,
    timeout: Duration,
    /// A probe task is running (or about to).
    probing: AtomicBool,
    /// Queries that found every upstream down.
    broken: AtomicU64,
}

impl Upstreams {
    pub(super) fn new(addrs: &[SocketAddr], timeout: Duration) -> Arc<Upstreams> {
        let list = addrs
            .iter()
            .map(|&addr| Upstream {
                addr,
                label: addr.to_string(),
                fails: AtomicU32::new(0),
                down: AtomicBool::new(false),
                probe_failures: AtomicU64::new(0),
                durations: Mutex::new(Vec::new()),
            })
            .collect();
        Arc::new(Upstreams {
            list,
            timeout,
            probing: AtomicBool::new(false),
            broken: AtomicU64::new(0),
        })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Asks the healthy upstreams in order until one gives a well-formed
    /// reply to `packet` (the client's query; only its id is replaced).
    /// `None` when all failed or all were down: SERVFAIL, at once in the
    /// latter case (CoreDNS `failfast_all_unhealthy_upstreams`).
    pub(super) async fn query(self: &Arc<Self>, packet: &[u8], question: &[u8]) -> Option<Vec<u8>> {
        let mut tried = false;
        for up in self.list.iter().filter(|u| !u.is_down()) {
            tried = true;
            let start = Instant::now();
            match exchange(up.addr, packet, question, self.timeout).await {
                Ok(reply) => {
                    up.succeed();
                    up.observe(wire::response_rcode(&reply).unwrap_or(0), start.elapsed());
                    return Some(reply);
                }
                Err(e) => {
                    tracing::debug!(upstream = %up.addr, "forwarding: {e}");
                    if up.fail() {
                        tracing::warn!(upstream = %up.addr, "upstream DNS server is down: {e}");
                        self.start_prober();
                    }
                }
            }
        }
        if !tried {
            self.broken.fetch_add(1, Ordering::Relaxed);
        }
        None
    }

    /// Starts the probe task unless one runs. It ends once nothing is
    /// down, so a healthy forwarder has no timer running.
    fn start_prober(self: &Arc<Self>) {
        if self.probing.swap(true, Ordering::SeqCst) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(probe_loop(Arc::downgrade(self)));
            }
            Err(_) => self.probing.store(false, Ordering::SeqCst),
        }
    }

    /// Appends the forward plugin's metric families.
    pub(super) fn write_metrics(&self, out: &mut String) {
        let name = "coredns_proxy_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Histogram of the time each request took.\n# TYPE {name} histogram"
        );
        for up in self.list.iter() {
            let all = up.durations.lock().unwrap_or_else(PoisonError::into_inner);
            for h in all.iter() {
                let labels = format!(
                    "proxy_name=\"forward\",to=\"{}\",rcode=\"{}\"",
                    up.label,
                    wire::rcode::name(h.rcode)
                );
                for (i, n) in h.buckets.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{{labels},le=\"{}\"}} {n}",
                        bucket_bound(i)
                    );
                }
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
                let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
            }
        }
        let name = "coredns_proxy_healthcheck_failures_total";
        let _ = writeln!(
            out,
            "# HELP {name} Counter of the number of failed healthchecks.\n# TYPE {name} counter"
        );
        for up in self.list.iter() {
            let n = up.probe_failures.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}{{proxy_name=\"forward\",to=\"{}\"}} {n}",
                up.label
            );
        }
        let name = "coredns_forward_healthcheck_broken_total";
        let _ = writeln!(
            out,
            "# HELP {name} Counter of the number of complete failures of the healthchecks.\n# TYPE {name} counter\n{name} {}",
            self.broken.load(Ordering::Relaxed)
        );
    }
}

/// Probes every down upstream each interval; ends when none is down or the
/// forwarder is gone.
async fn probe_loop(upstreams: Weak<Upstreams>) {
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let Some(ups) = upstreams.upgrade() else {
            return;
        };
        let any_down = || ups.list.iter().any(Upstream::is_down);
        if !any_down() {
            ups.probing.store(false, Ordering::SeqCst);
            // An upstream marked down after the check saw `probing` still
            // set and left it to this task: take it back if so.
            if any_down() && !ups.probing.swap(true, Ordering::SeqCst) {
                continue;
            }
            return;
        }
        let timeout = ups.timeout.min(PROBE_TIMEOUT);
        let probes = ups
            .list
            .iter()
            .filter(|u| u.is_down())
            .map(|u| u.probe(timeout));
        futures::future::join_all(probes).await;
    }
}

/// One query to one upstream: UDP, then TCP if the UDP reply is truncated.
pub(super) async fn exchange(
    addr: SocketAddr,
    packet: &[u8],
    question: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, Failure> {
    let reply = udp(addr, packet, question, Instant::now() + timeout).await?;
    if read_u16(&reply, 2).is_some_and(|f| f & FLAG_TC != 0) {
        return tcp(addr, packet, question, Instant::now() + timeout).await;
    }
    Ok(reply)
}

/// `packet` with a fresh random id, after a TCP length when `framed`.
fn with_fresh_id(packet: &[u8], framed: bool) -> (Vec<u8>, u16) {
    let id = rand::random::<u16>();
    let mut msg = Vec::with_capacity(2 + packet.len());
    if framed {
        msg.extend_from_slice(
            &u16::try_from(packet.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
    }
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(packet.get(2..).unwrap_or_default());
    (msg, id)
}

/// Compares questions: names case-insensitively (the upstream may not
/// echo 0x20 case), type and class exactly.
pub(super) fn same_question(a: &[u8], b: &[u8]) -> bool {
    let split = a.len().saturating_sub(4);
    a.len() == b.len() && a[..split].eq_ignore_ascii_case(&b[..split]) && a[split..] == b[split..]
}

enum Verdict {
    /// Not a reply to this query (stale, spoofed, another id): wait on.
    Ignore,
    Accept,
    /// The reply to this query, but unusable.
    Malformed,
}

fn check(reply: &[u8], id: u16, question: &[u8]) -> Verdict {
    let matches = read_u16(reply, 0) == Some(id)
        && read_u16(reply, 2).is_some_and(|f| f & 0x8000 != 0)
        && read_u16(reply, 4) == Some(1)
        && reply
            .get(HEADER_LEN..HEADER_LEN + question.len())
            .is_some_and(|q| same_question(q, question));
    if !matches {
        Verdict::Ignore
    } else if wire::record_ttls(reply).is_none() {
        Verdict::Malformed
    } else {
        Verdict::Accept
    }
}

/// From a fresh socket on an ephemeral port, connected so the kernel drops
/// datagrams from other addresses and reports a refused port.
async fn udp(
    addr: SocketAddr,
    packet: &[u8],
    question: &[u8],
    deadline: Instant,
) -> Result<Vec<u8>, Failure> {
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(addr).await?;
    let (msg, id) = with_fresh_id(packet, false);
    socket.send(&msg).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = timeout_at(deadline, socket.recv(&mut buf))
            .await
            .map_err(|_| Failure::Timeout)??;
        match check(&buf[..n], id, question) {
            Verdict::Ignore => continue,
            Verdict::Malformed => return Err(Failure::Malformed),
            Verdict::Accept => {
                buf.truncate(n);
                return Ok(buf);
            }
        }
    }
}

/// Over TCP with 2-byte length framing (RFC 1035 4.2.2); anything but the
/// reply to this query on the connection is a failure.
async fn tcp(
    addr: SocketAddr,
    packet: &[u8],
    question: &[u8],
    deadline: Instant,
) -> Result<Vec<u8>, Failure> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let (msg, id) = with_fresh_id(packet, true);
        stream.write_all(&msg).await?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await?;
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut reply).await?;
        match check(&reply, id, question) {
            Verdict::Accept => Ok(reply),
            _ => Err(Failure::Malformed),
        }
    };
    timeout_at(deadline, exchange)
        .await
        .map_err(|_| Failure::Timeout)?
}
