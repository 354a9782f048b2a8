//! `ferry ingress` end to end in the lab under configuration churn and
//! scaling (the Ingress issue, points 4 and 6), as root with real kubectl,
//! curl and openssl from the host against the node addresses
//! 172.30.0.11..13, where the `kube-system/ferry-ingress` DaemonSet
//! listens with host networking:
//!
//! * point 4: a WebSocket (over HTTPS, through `openssl s_client`) and a
//!   long chunked streaming response (over HTTPS, through `curl -N`) to
//!   one backend pod stay connected through 50 changes made with kubectl
//!   while they are open: edits of the Ingress of another host and of the
//!   same host, endpoint changes of another Service and of the same
//!   Service (an extra pod comes and goes; the serving pod stays), and 13
//!   rotations of the host's TLS Secret. The ferry-ingress pod of the node
//!   does not restart, its process and listening sockets are the same.
//! * point 6: 200 req/s over 4 keep-alive connections (a std TcpStream
//!   client) to a 3-replica nginx Deployment for 15 s, scaled to 1
//!   replica at 5 s: zero 5xx and zero connection errors (the client waits
//!   up to 65 s for an answer, so stalls end in what the ingress answers;
//!   they are printed, with a timeline of the pods, the EndpointSlice and
//!   the pods' network namespaces, but not asserted on).
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::lab::*;

const NS: &str = "churn";

fn prerequisites(test: &str) -> bool {
    support::can_use_netns(test)
        && support::kubectl_available()
        && tool_available("curl", "--version")
        && tool_available("openssl", "version")
}

/// `curl -sS -m 5` from the host with `args`: (HTTP status, body).
fn curl(args: &[&str]) -> Result<(u16, String), String> {
    let out = Command::new("curl")
        .args(["-sS", "-m", "5", "--noproxy", "*", "-w", "\n%{http_code}"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(format!(
            "curl {args:?} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    Ok((code.parse().unwrap_or(0), body.to_string()))
}

/// The backend of point 4, run by perl as a host process in the pod's
/// namespaces (perl and its core Digest::SHA and MIME::Base64 modules; in
/// a real cluster the `perl` image has them). One process per connection:
/// * `Upgrade: websocket`: the RFC 6455 handshake, then every text or
///   binary frame is echoed back (ping → pong, close → close);
/// * `/stream?n=N`: a chunked response of N lines `chunk-NNN`, one every
///   100 ms, ended by the last chunk (so a cut is visible to curl);
/// * anything else: `pod <hostname> path <path>`.
const LIVE_BACKEND: &str = r#"use IO::Socket::INET; use Sys::Hostname; use Digest::SHA qw(sha1); use MIME::Base64;
$SIG{PIPE} = "IGNORE"; $SIG{CHLD} = "IGNORE";
my $l = IO::Socket::INET->new(LocalPort => 8080, Listen => 128, ReuseAddr => 1) or die "listen: $!";
sub rd { my ($c, $n) = @_; my $b = ""; while (length($b) < $n) { my $r = read($c, $b, $n - length($b), length($b)); exit 0 unless $r } $b }
sub frame { my ($op, $p) = @_; my $n = length $p;
  my $h = $n < 126 ? pack("CC", 0x80 | $op, $n) : $n < 65536 ? pack("CCn", 0x80 | $op, 126, $n) : pack("CCNN", 0x80 | $op, 127, 0, $n);
  $h . $p }
while (1) {
  my $c = $l->accept or next;
  my $pid = fork;
  if (!defined $pid || $pid) { close $c; next }
  close $l; $c->autoflush(1);
  my $r = <$c>; exit 0 unless defined $r;
  my (undef, $p) = split / /, $r;
  my %h;
  while (my $x = <$c>) { last if $x =~ /^\r?$/; $x =~ s/\r?\n$//; my ($k, $v) = split /:\s*/, $x, 2; $h{lc $k} = $v }
  if (lc($h{upgrade} // "") eq "websocket") {
    my $a = encode_base64(sha1($h{"sec-websocket-key"} . "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"), "");
    print $c "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: $a\r\n\r\n";
    while (1) {
      my ($b0, $b1) = unpack "CC", rd($c, 2);
      my $op = $b0 & 15; my $n = $b1 & 127;
      if ($n == 126) { $n = unpack "n", rd($c, 2) } elsif ($n == 127) { my ($hi, $lo) = unpack "NN", rd($c, 8); $n = $lo }
      my @m = ($b1 & 128) ? unpack("C4", rd($c, 4)) : (0, 0, 0, 0);
      my @d = unpack "C*", ($n ? rd($c, $n) : "");
      my $d = pack "C*", map { $d[$_] ^ $m[$_ % 4] } 0 .. $#d;
      if ($op == 8) { print $c frame(8, $d); exit 0 }
      elsif ($op == 9) { print $c frame(10, $d) }
      elsif ($op == 1 || $op == 2) { print $c frame($op, $d) }
    }
  } elsif ($p =~ m{^/stream}) {
    my ($n) = $p =~ /n=(\d+)/; $n ||= 150;
    print $c "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    for my $i (0 .. $n - 1) { my $d = sprintf("chunk-%03d\n", $i); printf $c "%x\r\n%s\r\n", length($d), $d; select(undef, undef, undef, 0.1) }
    print $c "0\r\n\r\n";
  } else {
    my $b = "pod " . hostname() . " path $p\n";
    print $c "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " . length($b) . "\r\nConnection: close\r\n\r\n" . $b;
  }
  close $c; exit 0;
}"#;

/// Point 4's objects: pod `live` (the serving pod, `role: main`) and
/// Deployment `live-extra` (0 replicas at first, `role: extra`) behind
/// Service `live`; Deployment and Service `other` (built-in nginx).
fn churn_manifest() -> String {
    let script = serde_json::to_string(LIVE_BACKEND).unwrap();
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: live, namespace: {NS}, labels: {{app: live, role: main}}}}
spec:
  containers:
  - name: web
    image: perl
    command: ["perl", "-e", {script}]
    ports: [{{containerPort: 8080}}]
    readinessProbe:
      tcpSocket: {{port: 8080}}
      periodSeconds: 1
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: live-extra, namespace: {NS}}}
spec:
  replicas: 0
  selector: {{matchLabels: {{app: live, role: extra}}}}
  template:
    metadata: {{labels: {{app: live, role: extra}}}}
    spec:
      containers:
      - name: web
        image: perl
        command: ["perl", "-e", {script}]
        ports: [{{containerPort: 8080}}]
        readinessProbe:
          tcpSocket: {{port: 8080}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {{name: live, namespace: {NS}}}
spec:
  selector: {{app: live}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: other, namespace: {NS}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: other}}}}
  template:
    metadata: {{labels: {{app: other}}}}
    spec:
      containers:
      - name: nginx
        image: nginx
        ports: [{{containerPort: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: other, namespace: {NS}}}
spec:
  selector: {{app: other}}
  ports: [{{port: 80, targetPort: 80}}]
"#
    )
}

/// The Ingress of `live.example.com`: TLS from Secret `live-tls`, `/` to
/// Service `live`, and with `extra` also `/extra` to Service `other`.
fn live_ingress(extra: bool) -> String {
    let extra = if extra {
        "      - {path: /extra, pathType: Prefix, backend: {service: {name: other, port: {number: 80}}}}\n"
    } else {
        ""
    };
    format!(
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: live, namespace: {NS}}}
spec:
  tls: [{{hosts: [live.example.com], secretName: live-tls}}]
  rules:
  - host: live.example.com
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: live, port: {{number: 80}}}}}}}}
{extra}"#
    )
}

/// The Ingress of `other.example.com`, version `v`: `/` and `/v<v>` to
/// Service `other`.
fn other_ingress(v: usize) -> String {
    format!(
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: other, namespace: {NS}, annotations: {{churn/version: "{v}"}}}}
spec:
  rules:
  - host: other.example.com
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: other, port: {{number: 80}}}}}}}}
      - {{path: /v{v}, pathType: Exact, backend: {{service: {{name: live, port: {{number: 80}}}}}}}}
"#
    )
}

/// A self-signed certificate for `live.example.com` in `dir`: (cert, key).
fn make_cert(dir: &Path, n: usize) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("live-{n}.crt"));
    let key = dir.join(format!("live-{n}.key"));
    sh_ok(&[
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN=live.example.com/O=rotation {n}"),
        "-addext",
        "subjectAltName=DNS:live.example.com",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    (cert, key)
}

/// `kubectl create secret tls live-tls` from a certificate, as YAML.
fn secret_yaml(lab: &Lab, (cert, key): &(PathBuf, PathBuf)) -> String {
    lab.kubectl_ok(&[
        "-n",
        NS,
        "create",
        "secret",
        "tls",
        "live-tls",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--dry-run=client",
        "-o",
        "yaml",
    ])
}

/// Bytes from a child's stdout, read by a thread, with deadlines.
struct Pipe {
    rx: mpsc::Receiver<Vec<u8>>,
    buf: VecDeque<u8>,
}

impl Pipe {
    fn new(mut out: impl Read + Send + 'static) -> Pipe {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut b = [0u8; 4096];
            loop {
                match out.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(b[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Pipe {
            rx,
            buf: VecDeque::new(),
        }
    }

    fn read_exact(&mut self, n: usize, timeout: Duration) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + timeout;
        while self.buf.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(b) => self.buf.extend(b),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("timed out with {:?}", self.buf));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!("connection closed with {:?}", self.buf));
                }
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Up to and including the first `\r\n\r\n`.
    fn read_head(&mut self, timeout: Duration) -> Result<String, String> {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.extend(self.read_exact(1, timeout)?);
        }
        Ok(String::from_utf8_lossy(&head).into_owned())
    }
}

/// A WebSocket over TLS: `openssl s_client` carries the bytes.
struct WebSocket {
    child: Child,
    pipe: Pipe,
}

impl WebSocket {
    /// The handshake for `host` on `ip:443`, trusting only `ca`.
    fn connect(ip: &str, host: &str, ca: &Path) -> WebSocket {
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-verify_return_error", "-connect"])
            .arg(format!("{ip}:443"))
            .args(["-servername", host, "-verify_hostname", host, "-CAfile"])
            .arg(ca)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pipe = Pipe::new(child.stdout.take().unwrap());
        let mut ws = WebSocket { child, pipe };
        ws.write(
            format!(
                "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            .as_bytes(),
        );
        let head = ws
            .pipe
            .read_head(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("WebSocket handshake: {e}"));
        println!(
            "WebSocket wss://{host}/ws via {ip}:443 (openssl s_client):\n  {}",
            head.trim_end().replace("\r\n", "\n  ")
        );
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        // The RFC 6455 example key's answer.
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        ws
    }

    fn write(&mut self, b: &[u8]) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b).unwrap();
        stdin.flush().unwrap();
    }

    /// Sends a masked text frame and reads the echo: Err on a timeout,
    /// a closed connection or a different answer.
    fn echo(&mut self, msg: &str) -> Result<Duration, String> {
        let sent = Instant::now();
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        assert!(msg.len() < 126);
        let mut f = vec![0x81, 0x80 | msg.len() as u8];
        f.extend(mask);
        f.extend(msg.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.write(&f);
        let t = Duration::from_secs(5);
        let h = self.pipe.read_exact(2, t)?;
        if h[0] != 0x81 || h[1] as usize != msg.len() {
            return Err(format!("unexpected frame header {h:?}"));
        }
        let payload = self.pipe.read_exact(msg.len(), t)?;
        if payload != msg.as_bytes() {
            return Err(format!(
                "echo {:?} for {msg:?}",
                String::from_utf8_lossy(&payload)
            ));
        }
        Ok(sent.elapsed())
    }

    fn close(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `curl -N` of a streaming response: every line with its arrival time,
/// then curl's exit status and stderr.
struct Stream {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
}

impl Stream {
    fn open(args: &[&str]) -> Stream {
        let mut child = Command::new("curl")
            .args(["-sS", "-N", "--noproxy", "*", "--max-time", "120"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send((Instant::now(), line));
            }
        });
        Stream { child, lines }
    }
}

/// The ferry-ingress pods: node → (pod name, restartCount, ready).
fn ingress_pods(lab: &Lab) -> BTreeMap<String, (String, String, String)> {
    lab.kubectl_ok(&[
        "-n",
        "kube-system",
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=ferry-ingress",
        "-o",
        "jsonpath={range .items[*]}{.spec.nodeName} {.metadata.name} {.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].ready}{\"\\n\"}{end}",
    ])
    .lines()
    .filter_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        Some((
            f.first()?.to_string(),
            (f.get(1)?.to_string(), f.get(2)?.to_string(), f.get(3)?.to_string()),
        ))
    })
    .collect()
}

/// The `ferry ingress` process of the lab at `dir` listening on
/// `ip:port` (TCP, hex in /proc/net/tcp): (pid, socket inode).
fn ingress_listener(dir: &Path, ip: &str, port: u16) -> Option<(i32, u64)> {
    let marker = dir.to_string_lossy().into_owned();
    let octets: Vec<u8> = ip.split('.').map(|o| o.parse().unwrap()).collect();
    let local = format!(
        "{:02X}{:02X}{:02X}{:02X}:{port:04X}",
        octets[3], octets[2], octets[1], octets[0]
    );
    let any = format!("00000000:{port:04X}");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.get(1).map(String::as_str) != Some("ingress")
            || !args.iter().any(|a| a.contains(&marker))
        {
            continue;
        }
        let Ok(tcp) = std::fs::read_to_string(entry.path().join("net/tcp")) else {
            continue;
        };
        // In the network namespace of the node with `ip`.
        let trie = std::fs::read_to_string(entry.path().join("net/fib_trie")).unwrap_or_default();
        let lines: Vec<&str> = trie.lines().collect();
        if !lines.windows(2).any(|w| {
            w[0].trim_end().ends_with(&format!(" {ip}")) && w[1].contains("/32 host LOCAL")
        }) {
            continue;
        }
        let fds: Vec<String> = std::fs::read_dir(entry.path().join("fd"))
            .map(|d| {
                d.flatten()
                    .filter_map(|f| std::fs::read_link(f.path()).ok())
                    .map(|l| l.to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        for l in tcp.lines().skip(1) {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() > 9 && (f[1] == local || f[1] == any) && f[3] == "0A" {
                let inode: u64 = f[9].parse().unwrap_or(0);
                if fds.iter().any(|s| *s == format!("socket:[{inode}]")) {
                    return Some((pid, inode));
                }
            }
        }
    }
    None
}

/// Point 4.
#[test]
fn websocket_and_stream_survive_50_changes() {
    if !prerequisites("websocket_and_stream_survive_50_changes") {
        return;
    }
    const ROTATIONS: usize = 13;
    const CHANGES: usize = 50;
    const CHUNKS: usize = 400;
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    // The certificates first: openssl takes a while on a busy machine.
    let certs: Vec<(PathBuf, PathBuf)> =
        (0..=ROTATIONS).map(|n| make_cert(dir.path(), n)).collect();
    let mut lab = Lab::up(dir.path(), 3);
    println!("lab up in {:.1?}", started.elapsed());

    lab.apply(&churn_manifest());
    lab.apply(&secret_yaml(&lab, &certs[0]));
    lab.apply(&live_ingress(false));
    lab.apply(&other_ingress(0));
    lab.kubectl_ok(&[
        "-n",
        NS,
        "wait",
        "--for=condition=Ready",
        "pod/live",
        "--timeout=60s",
    ]);
    lab.kubectl_ok(&[
        "-n",
        NS,
        "rollout",
        "status",
        "deployment/other",
        "--timeout=90s",
    ]);

    let ip = "172.30.0.11";
    let node = "lab-node-1";
    let resolve = format!("live.example.com:443:{ip}");
    let https = |ca: &Path, path: &str| {
        curl(&[
            "--resolve",
            &resolve,
            "--cacert",
            ca.to_str().unwrap(),
            &format!("https://live.example.com{path}"),
        ])
    };
    let (r, took) = poll(30, "https://live.example.com/ with certificate 0", || {
        https(&certs[0].0, "/").and_then(|r| {
            if r.0 == 200 {
                Ok(r)
            } else {
                Err(format!("{r:?}"))
            }
        })
    });
    println!("https://live.example.com/ via {ip}: {r:?} ({took:.2?})");
    assert_eq!(r.1.trim(), "pod live path /");
    poll(30, "http://other.example.com/", || {
        match curl(&["-H", "Host: other.example.com", &format!("http://{ip}/")])? {
            (200, _) => Ok(()),
            r => Err(format!("{r:?}")),
        }
    });

    let pods_before = ingress_pods(&lab);
    println!("ferry-ingress pods before: {pods_before:?}");
    let listeners_before = [80, 443].map(|port| {
        ingress_listener(dir.path(), ip, port)
            .unwrap_or_else(|| panic!("no ferry ingress process listening on {ip}:{port}"))
    });
    println!(
        "ferry ingress on {node}: (pid, listening socket inode) for :80, :443 = {listeners_before:?}"
    );

    // The two long-lived connections, both to pod `live`.
    let mut ws = WebSocket::connect(ip, "live.example.com", &certs[0].0);
    ws.echo("before the changes").unwrap();
    let stream_url = format!("https://live.example.com/stream?n={CHUNKS}");
    let stream = Stream::open(&[
        "--resolve",
        &resolve,
        "--cacert",
        certs[0].0.to_str().unwrap(),
        &stream_url,
    ]);
    let (first_at, first) = stream
        .lines
        .recv_timeout(Duration::from_secs(10))
        .expect("the first chunk of the stream");
    assert_eq!(first, "chunk-000");
    let mut chunks = vec![(first_at, first)];
    println!("stream {stream_url} via {ip}: chunk-000 arrived; making {CHANGES} changes");

    // The 50 changes: every 4th a certificate rotation (the rest in turn:
    // the other host's Ingress, this host's Ingress, the other Service's
    // endpoints, this Service's endpoints), a WebSocket echo after each.
    let mut rotation = 0;
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut echo_max = Duration::ZERO;
    let (mut extra_path, mut other_replicas, mut extra_replicas) = (false, 1, 0);
    let changes_started = Instant::now();
    for i in 0..CHANGES {
        let t = Instant::now();
        let what = if i % 4 == 0 {
            rotation += 1;
            let yaml = secret_yaml(&lab, &certs[rotation]);
            if rotation % 2 == 0 {
                // Recreated: deleted, then created with the new pair.
                lab.kubectl_ok(&["-n", NS, "delete", "secret", "live-tls"]);
                lab.apply(&yaml);
                format!("secret live-tls deleted and recreated with certificate {rotation}")
            } else {
                lab.apply(&yaml);
                format!("secret live-tls replaced by certificate {rotation}")
            }
        } else {
            match (i / 4 + i % 4) % 4 {
                0 => {
                    lab.apply(&other_ingress(i));
                    format!("ingress other: path /v{i}")
                }
                1 => {
                    extra_path = !extra_path;
                    lab.apply(&live_ingress(extra_path));
                    format!(
                        "ingress live: /extra {}",
                        if extra_path { "added" } else { "removed" }
                    )
                }
                2 => {
                    other_replicas = 3 - other_replicas;
                    lab.kubectl_ok(&[
                        "-n",
                        NS,
                        "scale",
                        "deployment/other",
                        &format!("--replicas={other_replicas}"),
                    ]);
                    format!("deployment other scaled to {other_replicas}")
                }
                _ => {
                    extra_replicas = 1 - extra_replicas;
                    lab.kubectl_ok(&[
                        "-n",
                        NS,
                        "scale",
                        "deployment/live-extra",
                        &format!("--replicas={extra_replicas}"),
                    ]);
                    format!("deployment live-extra (Service live) scaled to {extra_replicas}")
                }
            }
        };
        let kind = what
            .split(':')
            .next()
            .unwrap()
            .split(" scaled")
            .next()
            .unwrap();
        let kind = if kind.starts_with("secret") {
            "secret live-tls"
        } else {
            kind
        };
        *kinds.entry(kind.to_string()).or_default() += 1;
        let echoed = ws
            .echo(&format!("after change {i}"))
            .unwrap_or_else(|e| panic!("WebSocket after change {i} ({what}): {e}"));
        echo_max = echo_max.max(echoed);
        while let Ok(c) = stream.lines.try_recv() {
            chunks.push(c);
        }
        println!(
            "change {:2} at {:5.2?}: {what} ({:.0?}); echo {echoed:.1?}; {} chunks so far",
            i + 1,
            changes_started.elapsed(),
            t.elapsed(),
            chunks.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let changes_took = changes_started.elapsed();
    println!("{CHANGES} changes in {changes_took:.1?}: {kinds:?}; slowest echo {echo_max:.1?}");

    // Both connections are still up: the stream must not have ended yet.
    while let Ok(c) = stream.lines.try_recv() {
        chunks.push(c);
    }
    assert!(
        chunks.len() < CHUNKS,
        "the stream ended before the changes did ({} chunks): make it longer",
        chunks.len()
    );
    ws.echo("after all changes").unwrap();
    let Stream { mut child, lines } = stream;
    for c in lines.iter() {
        chunks.push(c);
    }
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let max_gap = chunks.windows(2).map(|w| w[1].0 - w[0].0).max().unwrap();
    println!(
        "stream: {} chunks, curl {status} {:?}, largest gap between chunks {max_gap:.2?}",
        chunks.len(),
        stderr.trim()
    );
    assert!(status.success(), "curl of the stream: {status}: {stderr}");
    let got: Vec<String> = chunks.into_iter().map(|(_, l)| l).collect();
    let want: Vec<String> = (0..CHUNKS).map(|i| format!("chunk-{i:03}")).collect();
    assert_eq!(got, want, "the stream's chunks");
    ws.echo("after the stream").unwrap();
    println!("WebSocket: echoed after each of the {CHANGES} changes and after the stream ended");
    ws.close();

    // The changes took effect: the last certificate for new connections,
    // this host's /extra as last set, the other host's last path.
    let last = &certs[ROTATIONS];
    let (r, took) = poll(10, "the last certificate on new connections", || {
        https(&last.0, "/")
    });
    println!("https://live.example.com/ trusting only certificate {ROTATIONS}: {r:?} ({took:.2?})");
    assert_eq!(r.0, 200);
    let (r, took) = poll(10, "/extra as last set", || {
        let r = https(&last.0, "/extra")?;
        if r.1.contains("Welcome to nginx") == extra_path {
            Ok(r)
        } else {
            Err(format!("{r:?}"))
        }
    });
    println!(
        "https://live.example.com/extra (extra path {extra_path}): HTTP {} {:?} ({took:.2?})",
        r.0,
        r.1.lines().next().unwrap_or("")
    );
    let last_other = (0..CHANGES)
        .rev()
        .find(|i| i % 4 != 0 && (i / 4 + i % 4) % 4 == 0)
        .unwrap();
    let want_path = format!("path /v{last_other}");
    let (r, took) = poll(10, "the other host's last path", || {
        let r = curl(&[
            "-H",
            "Host: other.example.com",
            &format!("http://{ip}/v{last_other}"),
        ])?;
        if r.1.starts_with("pod live") && r.1.trim().ends_with(&want_path) {
            Ok(r)
        } else {
            Err(format!("{r:?}"))
        }
    });
    println!("http://other.example.com/v{last_other}: {r:?} ({took:.2?})");

    // The controller on the node was never restarted.
    let pods_after = ingress_pods(&lab);
    println!("ferry-ingress pods after: {pods_after:?}");
    assert_eq!(pods_after, pods_before);
    let listeners_after = [80, 443].map(|port| ingress_listener(dir.path(), ip, port).unwrap());
    println!("ferry ingress on {node}: (pid, listening socket inode) after = {listeners_after:?}");
    assert_eq!(listeners_after, listeners_before);

    println!("done in {:.1?}", started.elapsed());
    lab.down();
}

/// One keep-alive HTTP/1.1 connection of the load generator.
struct Conn {
    reader: BufReader<TcpStream>,
}

/// The answer to one request: status and body.
fn request(conn: &mut Option<Conn>, addr: SocketAddr, host: &str) -> Result<(u16, String), String> {
    if conn.is_none() {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| format!("connect: {e}"))?;
        // Longer than the ingress's default proxy-read-timeout (60 s): a
        // stall ends in whatever the ingress answers, not in a client
        // timeout.
        s.set_read_timeout(Some(Duration::from_secs(65))).unwrap();
        s.set_nodelay(true).unwrap();
        *conn = Some(Conn {
            reader: BufReader::new(s),
        });
    }
    let c = conn.as_mut().unwrap();
    let result = (|| {
        c.reader
            .get_mut()
            .write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        let mut line = String::new();
        let n = c
            .reader
            .read_line(&mut line)
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before the status line".to_string());
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            let mut h = String::new();
            c.reader
                .read_line(&mut h)
                .map_err(|e| format!("read: {e}"))?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (name, value) = h.split_once(':').unwrap_or((h, ""));
            let (name, value) = (name.to_ascii_lowercase(), value.trim().to_ascii_lowercase());
            match name.as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.contains("chunked"),
                "connection" => close = value.contains("close"),
                _ => {}
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                c.reader
                    .read_line(&mut size)
                    .map_err(|e| format!("read: {e}"))?;
                let size = usize::from_str_radix(size.trim().split(';').next().unwrap(), 16)
                    .map_err(|e| format!("chunk size {size:?}: {e}"))?;
                let mut chunk = vec![0; size + 2];
                c.reader
                    .read_exact(&mut chunk)
                    .map_err(|e| format!("read: {e}"))?;
                if size == 0 {
                    break;
                }
                body.extend(&chunk[..size]);
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            c.reader
                .read_exact(&mut body)
                .map_err(|e| format!("read: {e}"))?;
        } else {
            c.reader
                .read_to_end(&mut body)
                .map_err(|e| format!("read: {e}"))?;
            close = true;
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned(), close))
    })();
    match result {
        Ok((status, body, close)) => {
            if close {
                *conn = None;
            }
            Ok((status, body))
        }
        Err(e) => {
            *conn = None;
            Err(e)
        }
    }
}

/// The pod a built-in nginx page names.
fn served_by(body: &str) -> Option<String> {
    let rest = body.split("Served by pod <b>").nth(1)?;
    Some(rest.split("</b>").next()?.to_string())
}

/// What one request of the load saw, `at` from the start, in `took`.
struct Outcome {
    at: Duration,
    took: Duration,
    result: Result<(u16, Option<String>), String>,
}

const SCALE_MANIFEST: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: churn}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: churn}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx
        ports: [{containerPort: 80}]
        readinessProbe:
          httpGet: {path: /, port: 80}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: churn}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 80}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: churn}
spec:
  rules:
  - host: web.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"#;

/// `kubectl get -w` with `args`: every line with its arrival time.
fn kubectl_watch(lab: &Lab, args: &[&str]) -> (Child, mpsc::Receiver<(Instant, String)>) {
    let mut child = Command::new("kubectl")
        .args(args)
        .arg("-w")
        .env("KUBECONFIG", lab.dir.join("kubeconfig"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send((Instant::now(), line));
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx2.send((Instant::now(), format!("kubectl stderr: {line}")));
        }
    });
    (child, rx)
}

/// Point 6.
#[test]
fn scale_3_to_1_under_200_rps_has_no_5xx() {
    if !prerequisites("scale_3_to_1_under_200_rps_has_no_5xx") {
        return;
    }
    const RATE: u32 = 200;
    const WORKERS: u32 = 4;
    const SECS: u64 = 15;
    const SCALE_AT: Duration = Duration::from_secs(5);
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::up(dir.path(), 3);
    println!("lab up in {:.1?}", started.elapsed());
    lab.apply(SCALE_MANIFEST);
    lab.kubectl_ok(&[
        "-n",
        NS,
        "rollout",
        "status",
        "deployment/web",
        "--timeout=90s",
    ]);
    let ip = "172.30.0.11";
    let addr: SocketAddr = format!("{ip}:80").parse().unwrap();
    let host = "web.example.com";
    // All 3 pods behind the Ingress before the load starts.
    let (seen, took) = poll(30, "3 pods behind web.example.com", || {
        let mut conn = None;
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..9 {
            match request(&mut conn, addr, host)? {
                (200, body) => {
                    seen.extend(served_by(&body));
                }
                r => return Err(format!("{r:?}")),
            }
        }
        if seen.len() == 3 {
            Ok(seen)
        } else {
            Err(format!("only {seen:?}"))
        }
    });
    println!("web.example.com via {addr}: pods {seen:?} ({took:.2?})");

    // WORKERS keep-alive connections, each RATE / WORKERS req/s on a
    // fixed schedule (a late request goes at once).
    // For the timeline: the pods and the Service's endpoints as watched,
    // and when each pod's network namespace goes away.
    let watches = [
        kubectl_watch(
            &lab,
            &[
                "-n",
                NS,
                "get",
                "pods",
                "-l",
                "app=web",
                "-o",
                "jsonpath={.metadata.name} deleting={.metadata.deletionTimestamp} ready={.status.containerStatuses[0].ready} state={.status.containerStatuses[0].state}{\"\\n\"}",
            ],
        ),
        kubectl_watch(
            &lab,
            &[
                "-n",
                NS,
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web",
                "--no-headers",
            ],
        ),
    ];
    let sandboxes: Vec<(String, PathBuf)> = lab
        .kubectl_ok(&[
            "-n",
            NS,
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName}{\"\\n\"}{end}",
        ])
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(pod, node)| {
            (
                pod.to_string(),
                PathBuf::from(format!("/run/netns/{node}-{NS}-{pod}")),
            )
        })
        .collect();
    let netns_watch = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(SECS + 2);
        let mut gone: BTreeMap<String, Instant> = BTreeMap::new();
        let existed: Vec<bool> = sandboxes.iter().map(|(_, p)| p.exists()).collect();
        while Instant::now() < until {
            for (pod, path) in &sandboxes {
                if !gone.contains_key(pod) && !path.exists() {
                    gone.insert(pod.clone(), Instant::now());
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        (existed, gone)
    });
    let t0 = Instant::now() + Duration::from_millis(200);
    let period = Duration::from_secs(1) / RATE;
    let workers: Vec<_> = (0..WORKERS)
        .map(|k| {
            std::thread::spawn(move || {
                let mut conn = None;
                let mut out = Vec::new();
                let mut connections = 0;
                for j in 0.. {
                    let due = t0 + period * (j * WORKERS + k);
                    if due > t0 + Duration::from_secs(SECS) {
                        break;
                    }
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    if conn.is_none() {
                        connections += 1;
                    }
                    let at = Instant::now().saturating_duration_since(t0);
                    let sent = Instant::now();
                    let result = request(&mut conn, addr, host)
                        .map(|(status, body)| (status, served_by(&body)));
                    out.push(Outcome {
                        at,
                        took: sent.elapsed(),
                        result,
                    });
                }
                (out, connections)
            })
        })
        .collect();
    let wait = (t0 + SCALE_AT).saturating_duration_since(Instant::now());
    std::thread::sleep(wait);
    let scaled_at = Instant::now().saturating_duration_since(t0);
    lab.kubectl_ok(&["-n", NS, "scale", "deployment/web", "--replicas=1"]);
    println!("$ kubectl -n {NS} scale deployment/web --replicas=1  (at {scaled_at:.2?})");
    let mut outcomes = Vec::new();
    let mut connections = 0;
    for w in workers {
        let (out, c) = w.join().unwrap();
        outcomes.extend(out);
        connections += c;
    }
    outcomes.sort_by_key(|o| o.at);
    let since = |i: Instant| i.saturating_duration_since(t0);
    let mut timeline: Vec<(Duration, String)> = Vec::new();
    for ((mut child, rx), what) in watches.into_iter().zip(["pod", "endpointslice"]) {
        let _ = child.kill();
        let _ = child.wait();
        timeline.extend(
            rx.try_iter()
                .map(|(at, l)| (since(at), format!("{what} {}", l.trim_end()))),
        );
    }
    let (existed, gone) = netns_watch.join().unwrap();
    println!("pod network namespaces present at the start: {existed:?}");
    timeline.extend(
        gone.into_iter()
            .map(|(pod, at)| (since(at), format!("network namespace of {pod} gone"))),
    );
    timeline.push((scaled_at, "kubectl scale --replicas=1".to_string()));
    timeline.sort();
    println!("timeline from the start of the load (watch lines before it at 0):");
    for (at, what) in &timeline {
        println!("  {at:>9.3?} {what}");
    }
    let pods_left = lab.kubectl_ok(&["-n", NS, "get", "pods", "-l", "app=web", "-o", "wide"]);
    println!(
        "$ kubectl -n {NS} get pods -l app=web -o wide\n{}",
        pods_left.trim_end()
    );

    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut fivexx = Vec::new();
    let mut pods_before: BTreeMap<String, usize> = BTreeMap::new();
    let mut pods_after: BTreeMap<String, usize> = BTreeMap::new();
    let mut last_served: BTreeMap<String, Duration> = BTreeMap::new();
    for o in &outcomes {
        match &o.result {
            Ok((status, pod)) => {
                *by_status.entry(*status).or_default() += 1;
                if *status >= 500 {
                    fivexx.push((o.at, *status));
                }
                if let Some(pod) = pod {
                    let side = if o.at < scaled_at {
                        &mut pods_before
                    } else {
                        &mut pods_after
                    };
                    *side.entry(pod.clone()).or_default() += 1;
                    last_served.insert(pod.clone(), o.at);
                }
            }
            Err(e) => errors.push((o.at, e.clone())),
        }
    }
    let total = outcomes.len();
    let span = outcomes.last().map_or(Duration::ZERO, |o| o.at);
    println!(
        "{total} requests in {span:.2?} ({:.0} req/s) over {connections} connections",
        total as f64 / span.as_secs_f64()
    );
    println!(
        "by status: {by_status:?}; connection errors: {}",
        errors.len()
    );
    println!("by pod before the scale: {pods_before:?}");
    println!("by pod after the scale: {pods_after:?}");
    println!("last answer of each pod (from the start): {last_served:?}");
    let mut took: Vec<Duration> = outcomes.iter().map(|o| o.took).collect();
    took.sort();
    println!(
        "latency: p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        took[took.len() / 2],
        took[took.len() * 99 / 100],
        took[took.len() - 1]
    );
    for o in outcomes.iter().filter(|o| o.took > Duration::from_secs(1)) {
        let what = match &o.result {
            Ok((status, pod)) => format!("HTTP {status} from {pod:?}"),
            Err(e) => e.clone(),
        };
        println!("  slow: sent at {:.3?}, took {:.3?}: {what}", o.at, o.took);
    }
    for (at, status) in fivexx.iter().take(20) {
        println!("  5xx {status} at {at:.3?}");
    }
    for (at, e) in errors.iter().take(20) {
        println!("  error at {at:.3?}: {e}");
    }
    assert!(
        total as u64 >= u64::from(RATE) * SECS * 9 / 10,
        "the load reached only {total} requests"
    );
    assert!(
        fivexx.is_empty() && errors.is_empty(),
        "{} 5xx and {} connection errors while scaling 3 → 1",
        fivexx.len(),
        errors.len()
    );
    // The scale took effect: one pod served the last 3 s.
    let tail: std::collections::BTreeSet<&str> = outcomes
        .iter()
        .filter(|o| o.at + Duration::from_secs(3) > span)
        .filter_map(|o| o.result.as_ref().ok()?.1.as_deref())
        .collect();
    println!("pods serving the last 3 s: {tail:?}");
    assert_eq!(tail.len(), 1, "{tail:?}");
    println!("done in {:.1?}", started.elapsed());
    lab.down();
}
