//! New-connection rate through a ruleset: inside one namespace, clients
//! connect to ClusterIP:80 (locally generated, so the OUTPUT nat hook
//! DNATs them), listeners on the endpoint addresses accept and close.
//!
//! Clients set SO_LINGER 0, so their close sends a reset and leaves no
//! TIME_WAIT socket on either side (the listener's FIN comes first or is
//! answered by the reset): the rate measures the ruleset, not port
//! exhaustion.
//! The namespace's ephemeral port range is widened too; conntrack reopens
//! an entry whose source port comes round again (it is closed by then).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use ferry_netlink::NetNs;
use nix::sys::socket::{setsockopt, sockopt};

use crate::cluster::{CLIENT_IP, SERVICE_CIDR, TARGET_PORT};
use crate::util::Netns;

/// Closing sends a reset, not a FIN: no TIME_WAIT on either side.
fn linger_zero(fd: &impl AsFd) {
    let _ = setsockopt(
        fd,
        sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    );
}

/// Prepares `ns` (already holding a ruleset) for the test: the endpoint
/// addresses and the client's on `lo`, the Service CIDR routed via `lo`
/// from the client's address, a wide ephemeral port range.
pub fn prepare(ns: &Netns, endpoints: &[Ipv4Addr]) -> anyhow::Result<()> {
    for ip in endpoints.iter().chain([&CLIENT_IP]) {
        ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "lo"])?;
    }
    ns.ip(&[
        "route",
        "add",
        SERVICE_CIDR,
        "dev",
        "lo",
        "src",
        &CLIENT_IP.to_string(),
    ])?;
    // /proc/sys/net is the opening thread's namespace's.
    let handle = ns.open()?;
    handle.run(|| {
        std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "1024 65535")
            .context("widening the ephemeral port range")
    })??;
    Ok(())
}

/// TCP listeners on the endpoints that accept and close at once.
pub struct Listeners {
    ns: NetNs,
    addrs: Vec<SocketAddrV4>,
    stop: Arc<AtomicBool>,
    /// Connections accepted, per listener.
    accepted: Vec<Arc<AtomicU64>>,
    threads: Vec<JoinHandle<()>>,
}

impl Listeners {
    pub fn start(ns: &Netns, endpoints: &[Ipv4Addr]) -> anyhow::Result<Listeners> {
        let handle = ns.open()?;
        let addrs: Vec<SocketAddrV4> = endpoints
            .iter()
            .map(|ip| SocketAddrV4::new(*ip, TARGET_PORT))
            .collect();
        // Sockets belong to the namespace they were created in.
        let sockets = handle.run(|| {
            addrs
                .iter()
                .map(|a| TcpListener::bind(a).with_context(|| format!("listening on {a}")))
                .collect::<anyhow::Result<Vec<_>>>()
        })??;
        let stop = Arc::new(AtomicBool::new(false));
        let mut accepted = Vec::new();
        let mut threads = Vec::new();
        for socket in sockets {
            let count = Arc::new(AtomicU64::new(0));
            accepted.push(count.clone());
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                loop {
                    let result = socket.accept();
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // Closed at once with a FIN; the client's reset then
                    // ends it (a reset here could fail the client's
                    // connect() before it saw the connection up).
                    if result.is_ok() {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        Ok(Listeners {
            ns: handle,
            addrs,
            stop,
            accepted,
            threads,
        })
    }

    /// Accepted so far, per listener.
    pub fn accepted(&self) -> Vec<u64> {
        self.accepted
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // One connection to each wakes its blocked accept().
        let addrs = self.addrs.clone();
        let _ = self.ns.run(move || {
            for a in addrs {
                let _ = TcpStream::connect_timeout(&SocketAddr::V4(a), Duration::from_secs(1));
            }
        });
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What one measurement counted.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rate {
    pub attempts: u64,
    pub ok: u64,
    pub elapsed: Duration,
}

impl Rate {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn add(&mut self, other: Rate) {
        self.attempts += other.attempts;
        self.ok += other.ok;
        self.elapsed += other.elapsed;
    }
}

/// `threads` clients connect to `target` (and close) in a loop for
/// `duration`, inside `ns`.
pub fn measure(
    ns: &Netns,
    target: SocketAddrV4,
    duration: Duration,
    threads: usize,
) -> anyhow::Result<Rate> {
    let handle = ns.open()?;
    let result = handle.run(|| {
        // Threads started here inherit this thread's namespace.
        let start = Instant::now();
        let deadline = start + duration;
        let per_thread = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| scope.spawn(move || client(target, deadline)))
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().map_err(|_| anyhow!("a client thread panicked")))
                .collect::<anyhow::Result<Vec<_>>>()
        });
        let elapsed = start.elapsed();
        per_thread.map(|v| (v, elapsed))
    })?;
    let (per_thread, elapsed) = result?;
    let mut rate = Rate {
        elapsed,
        ..Rate::default()
    };
    let mut first_error = None;
    for (attempts, ok, error) in per_thread {
        rate.attempts += attempts;
        rate.ok += ok;
        first_error = first_error.or(error);
    }
    if rate.ok == 0 {
        bail!(
            "no connection to {target} succeeded: {}",
            first_error.unwrap_or_default()
        );
    }
    Ok(rate)
}

/// One client: (attempts, connected, first error).
fn client(target: SocketAddrV4, deadline: Instant) -> (u64, u64, Option<String>) {
    let (mut attempts, mut ok, mut first_error) = (0, 0, None);
    let target = SocketAddr::V4(target);
    while Instant::now() < deadline {
        attempts += 1;
        match TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
            Ok(stream) => {
                linger_zero(&stream);
                ok += 1;
            }
            Err(e) => {
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    (attempts, ok, first_error)
}
