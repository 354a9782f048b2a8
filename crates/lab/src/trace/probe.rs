//! `--probe`: one real connection from the source's namespace to the
//! destination, and the conntrack entry of the node that NATed it. The
//! entry's reply direction starts at the endpoint the kernel chose. When
//! every possible endpoint is a built-in echo server (`ferry/echo`,
//! agnhost netexec) on that port, the probe asks it `/hostname` (UDP:
//! `hostname`), so the answer names the pod that really served it.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::time::Duration;

use anyhow::Context;
use ferry_netlink::conntrack::{Conntrack, Entry};
use ferry_netlink::netns::NetNs;
use k8s_openapi::api::core::v1::Container;

use super::ingress::Url;
use super::nat::Packet;
use super::path::{End, Path, Place};
use super::render::protocol_name;
use super::{Cluster, key};

/// How long the probe waits to connect and for an answer.
const TIMEOUT: Duration = Duration::from_secs(3);

/// The HTTP and UDP ports of a container that runs the built-in echo
/// server, if it does.
pub fn echo_ports(container: &Container) -> Option<(u16, u16)> {
    use ferry_node::runtime::{Builtin, Program, program_for};
    match program_for(container, "", &[]) {
        Ok(Program::Builtin(Builtin::Echo {
            http_port,
            udp_port,
        })) => Some((http_port, udp_port)),
        _ => None,
    }
}

/// What the probe says once connected.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Speak {
    /// Connect and close (TCP), or send one datagram (UDP).
    Nothing,
    /// `GET <path>` over HTTP/1.0 with this Host header.
    Http { host: String, path: String },
    /// The datagram `hostname` (netexec's UDP protocol).
    UdpHostname,
}

/// What the probe did and saw.
#[derive(Clone, Debug, Default)]
pub struct ProbeResult {
    pub sent: String,
    /// Connected, refused, timed out, or why nothing was sent.
    pub outcome: String,
    /// The request and the answer's first line or body.
    pub answer: Option<String>,
    /// The node whose conntrack table was read, and the entry.
    pub conntrack: Option<(String, Entry)>,
    pub conntrack_note: Option<String>,
    /// The reply direction's source: the endpoint that was chosen.
    pub chosen: Option<(Ipv4Addr, u16)>,
    pub chosen_pod: Option<String>,
    /// How the endpoint is known, when not from the conntrack entry.
    pub chosen_by: Option<String>,
}

impl ProbeResult {
    pub fn render(&self) -> String {
        let mut out = format!("probe: {}: {}\n", self.sent, self.outcome);
        if let Some(a) = &self.answer {
            out.push_str(&format!("      {a}\n"));
        }
        match (&self.conntrack, &self.conntrack_note) {
            (Some((node, e)), _) => out.push_str(&format!("      conntrack on {node}: {e}\n")),
            (None, Some(note)) => out.push_str(&format!("      {note}\n")),
            (None, None) => {}
        }
        if let Some((ip, port)) = self.chosen {
            out.push_str(&format!(
                "      chosen endpoint: {ip}:{port}, {}\n",
                self.chosen_pod
                    .as_deref()
                    .unwrap_or("no pod has this address")
            ));
        }
        if let Some(by) = &self.chosen_by {
            out.push_str(&format!("      {by}\n"));
        }
        out
    }
}

/// Whether every way the path ends is inside the lab; why not, if not.
fn stays_in_lab(path: &Path) -> Result<(), &'static str> {
    for end in path.ends() {
        match end {
            End::LeavesLab => return Err("the path leaves the lab"),
            End::Unknown => return Err("the trace could not follow every path"),
            _ => {}
        }
    }
    Ok(())
}

fn speak(cluster: &Cluster, path: &Path, p: &Packet) -> Speak {
    let protocol = p.protocol;
    let destinations = path.destinations();
    if destinations.is_empty() {
        return Speak::Nothing;
    }
    let all_echo = |udp: bool| {
        destinations.iter().all(|(pod, port)| {
            cluster
                .pods
                .iter()
                .find(|p| {
                    p.metadata.namespace.as_deref() == Some(pod.namespace.as_str())
                        && p.metadata.name.as_deref() == Some(pod.name.as_str())
                })
                .and_then(|p| p.spec.as_ref())
                .is_some_and(|s| {
                    s.containers
                        .iter()
                        .filter_map(echo_ports)
                        .any(|(http, u)| if udp { u == *port } else { http == *port })
                })
        })
    };
    match protocol {
        6 if all_echo(false) => Speak::Http {
            host: format!("{}:{}", p.dst, p.dport),
            path: "/hostname".into(),
        },
        17 if all_echo(true) => Speak::UdpHostname,
        _ => Speak::Nothing,
    }
}

/// What happened on the wire (runs inside the source's namespace).
struct Exchange {
    local_port: Option<u16>,
    outcome: String,
    answer: Option<String>,
    /// An HTTP answer's body.
    body: Option<String>,
    entries: Result<Vec<Entry>, String>,
}

fn exchange(p: Packet, speak: &Speak, mut conntrack: Option<Conntrack>) -> Exchange {
    let target = SocketAddr::V4(SocketAddrV4::new(p.dst, p.dport));
    let mut answer = None;
    let mut body = None;
    let (local_port, outcome, _keep) = if p.protocol == 17 {
        match udp(target, speak) {
            Ok((port, a)) => {
                answer = a;
                (Some(port), "sent".to_string(), None)
            }
            Err((port, e)) => (port, e, None),
        }
    } else {
        match tcp(target) {
            Ok((port, mut stream)) => {
                if let Speak::Http { host, path } = speak {
                    answer = Some(match http_get(&mut stream, host, path) {
                        Ok((status, b)) => {
                            let line = format!("HTTP GET {path} -> {status}, body \"{b}\"");
                            body = Some(b);
                            line
                        }
                        Err(e) => format!("HTTP GET {path} failed: {e}"),
                    });
                }
                (Some(port), "connected".to_string(), Some(stream))
            }
            Err((port, e)) => (port, e, None),
        }
    };
    // Read while the connection is still open.
    let entries = match conntrack.as_mut() {
        Some(c) => c.list_ipv4().map_err(|e| e.to_string()),
        None => Ok(Vec::new()),
    };
    Exchange {
        local_port,
        outcome,
        answer,
        body,
        entries,
    }
}

type Failure = (Option<u16>, String);

fn describe(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "refused (connection reset)".into(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            format!("no answer within {}s", TIMEOUT.as_secs())
        }
        _ => e.to_string(),
    }
}

fn tcp(target: SocketAddr) -> Result<(u16, TcpStream), Failure> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| (None, e.to_string()))?;
    // Bound first, so the port is known even if the connect fails.
    socket
        .bind(&SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0))))
        .map_err(|e| (None, e.to_string()))?;
    let port = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map(|a| a.port());
    socket
        .connect_timeout(&SockAddr::from(target), TIMEOUT)
        .map_err(|e| (port, describe(&e)))?;
    Ok((port.unwrap_or(0), socket.into()))
}

/// The answer's status line and body (trimmed, at most 200 bytes).
fn http_get(stream: &mut TcpStream, host: &str, path: &str) -> std::io::Result<(String, String)> {
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    stream.write_all(
        format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: ferry-trace\r\n\r\n")
            .as_bytes(),
    )?;
    let mut raw = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or("").trim();
    let mut body = body.trim().to_string();
    if body.len() > 200 {
        let mut cut = 200;
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        body.truncate(cut);
        body.push_str("...");
    }
    Ok((status.to_string(), body))
}

fn udp(target: SocketAddr, speak: &Speak) -> Result<(u16, Option<String>), Failure> {
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| (None, e.to_string()))?;
    let port = socket.local_addr().map(|a| a.port()).ok();
    let fail = |e: std::io::Error| (port, describe(&e));
    socket.connect(target).map_err(fail)?;
    let request: &[u8] = if *speak == Speak::UdpHostname {
        b"hostname"
    } else {
        b"ferry-trace"
    };
    socket.send(request).map_err(fail)?;
    if *speak != Speak::UdpHostname {
        return Ok((port.unwrap_or(0), None));
    }
    socket.set_read_timeout(Some(TIMEOUT)).map_err(fail)?;
    let mut buf = [0u8; 2048];
    let n = socket.recv(&mut buf).map_err(fail)?;
    Ok((
        port.unwrap_or(0),
        Some(format!(
            "UDP \"hostname\" -> \"{}\"",
            String::from_utf8_lossy(&buf[..n]).trim()
        )),
    ))
}

/// What to probe.
pub struct Input<'a> {
    /// Where the connection starts.
    pub place: &'a Place,
    /// The traced path (its ends say where it may go).
    pub path: &'a Path,
    /// The first packet, as it left the source.
    pub packet: Option<Packet>,
    /// The node whose conntrack table sees the connection first.
    pub conntrack_at: Option<&'a str>,
    /// An Ingress URL: that request is sent, and the endpoint is known by
    /// the pod that answers (the controller's upstream connections are its
    /// own, pooled: no conntrack entry ties them to this request).
    pub url: Option<&'a Url>,
}

/// Sends the probe from `place` and reads the conntrack entry on
/// `conntrack_at`.
pub async fn run(cluster: &Cluster, input: Input<'_>) -> anyhow::Result<ProbeResult> {
    let Input {
        place,
        path,
        packet,
        conntrack_at,
        url,
    } = input;
    let packet = packet.context("the trace has no first packet")?;
    let from = match place.netns() {
        Some(n) => format!("netns {n}"),
        None => "the host namespace".into(),
    };
    let mut result = ProbeResult {
        sent: format!(
            "{} {} -> {}:{} from {from}",
            protocol_name(packet.protocol),
            packet.src,
            packet.dst,
            packet.dport
        ),
        ..ProbeResult::default()
    };
    if !matches!(packet.protocol, 6 | 17) {
        result.outcome = "not sent: the probe speaks TCP and UDP only".into();
        return Ok(result);
    }
    if let Err(why) = stays_in_lab(path) {
        result.outcome = format!("not sent: {why}");
        return Ok(result);
    }
    let speak = match url {
        Some(u) if u.https => {
            result.outcome = "not sent: the probe speaks plain HTTP, not TLS".into();
            return Ok(result);
        }
        Some(u) => Speak::Http {
            host: if u.port == 80 {
                u.host.clone()
            } else {
                format!("{}:{}", u.host, u.port)
            },
            path: u.path.clone(),
        },
        None => speak(cluster, path, &packet),
    };
    let conntrack = match conntrack_at {
        Some(node) => Some(
            Conntrack::open_in_netns(ferry_netlink::netns::named_path(node)?)
                .with_context(|| format!("opening conntrack on {node}"))?,
        ),
        None => None,
    };
    let netns = place.netns().map(NetNs::open_named).transpose()?;
    let done = tokio::task::spawn_blocking(move || match netns {
        Some(ns) => ns.run(move || exchange(packet, &speak, conntrack)),
        None => Ok(exchange(packet, &speak, conntrack)),
    })
    .await
    .context("the probe thread failed")??;

    result.outcome = done.outcome;
    result.answer = done.answer;
    if let Some(port) = done.local_port {
        result.sent = format!(
            "{} {}:{port} -> {}:{} from {from}",
            protocol_name(packet.protocol),
            packet.src,
            packet.dst,
            packet.dport
        );
    }
    let Some(node) = conntrack_at else {
        result.conntrack_note =
            Some("no conntrack entry to read: the path crosses no node's NAT tables".into());
        return Ok(result);
    };
    match done.entries {
        Err(e) => result.conntrack_note = Some(format!("conntrack on {node}: {e}")),
        Ok(entries) => {
            let entry = entries.into_iter().find(|e| {
                e.original.protocol == packet.protocol
                    && e.original.dst == packet.dst
                    && e.original.dst_port == packet.dport
                    && Some(e.original.src_port) == done.local_port
            });
            match entry {
                None => {
                    result.conntrack_note =
                        Some(format!("conntrack on {node}: no entry for this connection"))
                }
                Some(e) => {
                    result.chosen = Some((e.reply.src, e.reply.src_port));
                    result.chosen_pod = Some(match cluster.pod_with_ip(e.reply.src) {
                        Some(p) => format!("pod {}", key(&p.metadata)),
                        None => match cluster.node_with_ip(e.reply.src) {
                            Some(n) => format!("node {n}"),
                            None => "no pod has this address".into(),
                        },
                    });
                    result.conntrack = Some((node.to_string(), e));
                }
            }
        }
    }
    if url.is_some() {
        // The entry above is the client's connection to the controller;
        // the endpoint is the pod that says its name, if one does.
        let named = done.body.as_deref().map(str::trim).and_then(|body| {
            path.destinations()
                .into_iter()
                .find(|(p, _)| p.name == body)
        });
        result.chosen = None;
        result.chosen_pod = None;
        result.chosen_by = Some(match named {
            Some((pod, port)) => {
                if let Some(ip) = cluster
                    .pods
                    .iter()
                    .find(|p| p.metadata.uid.as_deref() == Some(pod.uid.as_str()))
                    .and_then(|p| p.status.as_ref()?.pod_ip.as_deref()?.parse().ok())
                {
                    result.chosen = Some((ip, port));
                    result.chosen_pod = Some(format!("pod {}/{}", pod.namespace, pod.name));
                }
                "(the answer names the endpoint: the controller's upstream connections are its own, so no conntrack entry ties this request to one)".to_string()
            }
            None => "the answer names no endpoint pod: the controller's upstream connections are its own, so conntrack cannot tell which endpoint served the request".to_string(),
        });
    }
    Ok(result)
}
