//! The two servers under test: `ferry dns` against the loaded API server,
//! and unbound with the same names as local data. Both forward `example.`
//! to the loopback stub and nothing else anywhere.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::api::{NAMESPACE, service_name};
use crate::proc::{self, Child};
use crate::wire;

/// A running server.
pub struct Server {
    pub name: &'static str,
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
    /// Command line, for the report.
    pub command: String,
}

impl Server {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

/// One HTTP GET on loopback; returns the status code and body.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

pub struct FerrySettings<'a> {
    pub bin: &'a Path,
    pub cpus: Option<&'a str>,
    pub kubeconfig: &'a Path,
    pub port: u16,
    pub threads: usize,
    pub upstream: SocketAddr,
    pub ready: SocketAddr,
    pub metrics: SocketAddr,
}

/// Starts `ferry dns` and waits for `/ready` to say 200; returns it and
/// the time from spawn to that answer.
pub fn start_ferry(s: &FerrySettings<'_>, dir: &Path) -> anyhow::Result<(Server, Duration)> {
    let log = dir.join("ferry-dns.log");
    let args: Vec<String> = vec![
        "dns".into(),
        "--kubeconfig".into(),
        s.kubeconfig.to_string_lossy().into_owned(),
        "--listen".into(),
        format!("127.0.0.1:{}", s.port),
        "--threads".into(),
        s.threads.to_string(),
        "--upstream".into(),
        s.upstream.to_string(),
        "--health-address".into(),
        String::new(),
        "--ready-address".into(),
        s.ready.to_string(),
        "--metrics-address".into(),
        s.metrics.to_string(),
    ];
    let mut cmd = proc::pinned(s.cpus, s.bin);
    cmd.args(&args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("ferry-dns.out"))?)
        .stderr(std::fs::File::create(&log)?);
    let command = format!(
        "{}{} {}",
        s.cpus.map_or(String::new(), |c| format!("taskset -c {c} ")),
        s.bin.display(),
        args.iter()
            .map(|a| if a.is_empty() {
                "\"\"".into()
            } else {
                a.clone()
            })
            .collect::<Vec<_>>()
            .join(" ")
    );
    let start = Instant::now();
    let mut child = Child::spawn(cmd, "ferry dns")?;
    let deadline = start + Duration::from_secs(300);
    loop {
        if let Ok((200, _)) = http_get(s.ready, "/ready") {
            break;
        }
        if let Some(status) = child.exited() {
            bail!("ferry dns exited ({status}):\n{}", proc::tail(&log, 20));
        }
        if Instant::now() > deadline {
            bail!("ferry dns not ready after 300 s:\n{}", proc::tail(&log, 20));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let ready = start.elapsed();
    Ok((
        Server {
            name: "ferry dns",
            child,
            port: s.port,
            log,
            command,
        },
        ready,
    ))
}

pub struct UnboundSettings<'a> {
    pub cpus: Option<&'a str>,
    pub port: u16,
    pub upstream: SocketAddr,
    pub ttl: u32,
}

/// unbound's configuration: one thread, loopback only, `cluster.local.`
/// static with the Services' A and PTR records, `example.` forwarded to
/// the stub, every other name refused (so it never recurses).
pub fn unbound_config(
    s: &UnboundSettings<'_>,
    dir: &Path,
    cluster_ips: &[Ipv4Addr],
) -> anyhow::Result<PathBuf> {
    let mut records = String::with_capacity(cluster_ips.len() * 120);
    for (i, ip) in cluster_ips.iter().enumerate() {
        let name = format!("{}.{NAMESPACE}.svc.cluster.local", service_name(i));
        let _ = writeln!(
            records,
            "local-data: \"{name}. {} IN A {ip}\"\nlocal-data-ptr: \"{ip} {} {name}\"",
            s.ttl, s.ttl
        );
    }
    let records_path = dir.join("unbound-records.conf");
    std::fs::write(&records_path, records)?;
    let conf = format!(
        r#"server:
  interface: 127.0.0.1
  port: {port}
  num-threads: 1
  do-daemonize: no
  username: ""
  chroot: ""
  pidfile: ""
  directory: "{dir}"
  logfile: ""
  use-syslog: no
  verbosity: 1
  access-control: 127.0.0.0/8 allow
  do-ip4: yes
  do-ip6: no
  do-udp: yes
  do-tcp: yes
  # The same receive buffer as ferry dns asks for.
  so-rcvbuf: 4m
  module-config: "iterator"
  minimal-responses: yes
  qname-minimisation: no
  prefetch: no
  # The forward below is on 127.0.0.1.
  do-not-query-localhost: no
  # Nothing beyond the zones below: no root hints are ever used.
  local-zone: "." refuse
  local-zone: "example." transparent
  local-zone: "cluster.local." static
  local-data: "cluster.local. {ttl} IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 {ttl}"
  include: "{records}"

forward-zone:
  name: "example."
  forward-addr: {upstream_ip}@{upstream_port}
"#,
        port = s.port,
        dir = dir.display(),
        ttl = s.ttl,
        records = records_path.display(),
        upstream_ip = s.upstream.ip(),
        upstream_port = s.upstream.port(),
    );
    let path = dir.join("unbound.conf");
    std::fs::write(&path, conf)?;
    let path_str = path.to_string_lossy().into_owned();
    proc::run("unbound-checkconf", &[&path_str]).context("unbound-checkconf")?;
    Ok(path)
}

/// Starts unbound on `config` and waits until it answers the first
/// Service's name; returns it and the time from spawn to that answer.
pub fn start_unbound(
    s: &UnboundSettings<'_>,
    config: &Path,
    dir: &Path,
) -> anyhow::Result<(Server, Duration)> {
    let log = dir.join("unbound.log");
    let mut cmd = proc::pinned(s.cpus, "unbound");
    cmd.arg("-d")
        .arg("-c")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("unbound.out"))?)
        .stderr(std::fs::File::create(&log)?);
    let command = format!(
        "{}unbound -d -c {}",
        s.cpus.map_or(String::new(), |c| format!("taskset -c {c} ")),
        config.display()
    );
    let start = Instant::now();
    let mut child = Child::spawn(cmd, "unbound")?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, s.port));
    let name = format!("{}.{NAMESPACE}.svc.cluster.local", service_name(0));
    let deadline = start + Duration::from_secs(120);
    loop {
        // Until it listens, the client's tries time out.
        if let Ok(mut client) = wire::Client::new(addr)
            && let Ok(r) = client.ask(&name, wire::TYPE_A)
            && r.rcode == 0
        {
            break;
        }
        if let Some(status) = child.exited() {
            bail!("unbound exited ({status}):\n{}", proc::tail(&log, 20));
        }
        if Instant::now() > deadline {
            bail!(
                "unbound not answering after 120 s:\n{}",
                proc::tail(&log, 20)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let ready = start.elapsed();
    Ok((
        Server {
            name: "unbound",
            child,
            port: s.port,
            log,
            command,
        },
        ready,
    ))
}

/// The version line of `unbound -V`.
pub fn unbound_version() -> String {
    match proc::run("unbound", &["-V"]) {
        Ok(text) => text
            .lines()
            .find_map(|l| l.strip_prefix("Version "))
            .map(|v| format!("unbound {v}"))
            .unwrap_or_else(|| "unbound (version not printed)".into()),
        Err(e) => format!("unavailable ({e})"),
    }
}
