//! Just enough DNS for the benchmark's own checks: a client that asks one
//! question over UDP and reads the rcode and A records of the reply, and
//! the loopback upstream stub both servers forward `example.` to.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};

pub const TYPE_A: u16 = 1;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;

/// Response codes by number, as dnsperf names them.
pub fn rcode_name(rcode: u8) -> String {
    match rcode {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => format!("RCODE{n}"),
    }
}

/// `name` (dotted, with or without the final dot) in wire form.
fn encode_name(name: &str, out: &mut Vec<u8>) -> anyhow::Result<()> {
    for label in name.trim_end_matches('.').split('.') {
        anyhow::ensure!(
            !label.is_empty() && label.len() < 64,
            "bad label in {name:?}"
        );
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    Ok(())
}

/// A query with RD set and an EDNS OPT of 1232 bytes, as a stub
/// resolver sends it.
pub fn query(id: u16, name: &str, qtype: u16) -> anyhow::Result<Vec<u8>> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]);
    encode_name(name, &mut q)?;
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    Ok(q)
}

/// Skips a (possibly compressed) name at `pos`; returns the position after
/// it.
fn skip_name(msg: &[u8], mut pos: usize) -> anyhow::Result<usize> {
    loop {
        let len = *msg.get(pos).context("name runs past the message")? as usize;
        if len & 0xc0 == 0xc0 {
            return Ok(pos + 2);
        }
        pos += 1;
        if len == 0 {
            return Ok(pos);
        }
        pos += len;
    }
}

/// Reads an uncompressed name at `pos`, lowercased, without the final dot.
fn read_name(msg: &[u8], mut pos: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    loop {
        let len = *msg.get(pos)? as usize;
        pos += 1;
        if len == 0 {
            return Some((name, pos));
        }
        if len & 0xc0 != 0 {
            return None;
        }
        let label = msg.get(pos..pos + len)?;
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(&String::from_utf8_lossy(label).to_ascii_lowercase());
        pos += len;
    }
}

fn u16_at(msg: &[u8], pos: usize) -> anyhow::Result<u16> {
    let b = msg.get(pos..pos + 2).context("message too short")?;
    Ok(u16::from_be_bytes([b[0], b[1]]))
}

/// What the benchmark checks in a reply.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reply {
    pub rcode: u8,
    pub authoritative: bool,
    pub answers: usize,
    pub a: Vec<Ipv4Addr>,
    /// Records of other types in the answer section.
    pub other_answers: usize,
    /// An SOA in the authority section (negative answers).
    pub soa: bool,
}

pub fn parse_reply(msg: &[u8], id: u16) -> anyhow::Result<Reply> {
    anyhow::ensure!(msg.len() >= 12, "reply of {} bytes", msg.len());
    anyhow::ensure!(u16_at(msg, 0)? == id, "reply id does not match");
    let flags = u16_at(msg, 2)?;
    anyhow::ensure!(flags & 0x8000 != 0, "QR not set");
    let (qd, an, ns) = (u16_at(msg, 4)?, u16_at(msg, 6)?, u16_at(msg, 8)?);
    let mut pos = 12;
    for _ in 0..qd {
        pos = skip_name(msg, pos)? + 4;
    }
    let mut reply = Reply {
        rcode: (flags & 0x000f) as u8,
        authoritative: flags & 0x0400 != 0,
        answers: an as usize,
        ..Reply::default()
    };
    for (section, count) in [an, ns].into_iter().enumerate() {
        for _ in 0..count {
            pos = skip_name(msg, pos)?;
            let rtype = u16_at(msg, pos)?;
            let rdlen = u16_at(msg, pos + 8)? as usize;
            let rdata = msg
                .get(pos + 10..pos + 10 + rdlen)
                .context("record runs past the message")?;
            if section == 0 {
                if rtype == TYPE_A && rdlen == 4 {
                    reply
                        .a
                        .push(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]));
                } else {
                    reply.other_answers += 1;
                }
            } else if rtype == TYPE_SOA {
                reply.soa = true;
            }
            pos += 10 + rdlen;
        }
    }
    Ok(reply)
}

/// A UDP client for one server, one question at a time.
pub struct Client {
    socket: UdpSocket,
    next_id: u16,
}

impl Client {
    pub fn new(server: SocketAddr) -> anyhow::Result<Client> {
        let socket = UdpSocket::bind("127.0.0.1:0").context("binding a UDP socket")?;
        socket.connect(server)?;
        socket.set_read_timeout(Some(Duration::from_millis(1000)))?;
        Ok(Client { socket, next_id: 1 })
    }

    /// Asks `name` `qtype`; up to 3 tries of 1 s.
    pub fn ask(&mut self, name: &str, qtype: u16) -> anyhow::Result<Reply> {
        let mut buf = vec![0u8; 4096];
        for _ in 0..3 {
            self.next_id = self.next_id.wrapping_add(1);
            let id = self.next_id;
            self.socket.send(&query(id, name, qtype)?)?;
            loop {
                match self.socket.recv(&mut buf) {
                    // A late reply to an earlier try: skip it.
                    Ok(n) if n >= 2 && u16_at(&buf, 0)? != id => continue,
                    Ok(n) => return parse_reply(&buf[..n], id),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        break;
                    }
                    Err(e) => return Err(e).context("receiving"),
                }
            }
        }
        bail!("no reply to {name} after 3 tries")
    }
}

/// The address the stub gives `ext-<n>.example.`
pub fn ext_ip(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, (n % 254) as u8 + 1)
}

pub fn ext_name(n: usize) -> String {
    format!("ext-{n}.example")
}

/// The upstream both servers forward `example.` to: `ext-<n>.example. A`
/// gets one A record (TTL 300); other types of those names get NODATA;
/// any other name NXDOMAIN. It counts every query it receives.
pub struct Stub {
    pub queries: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Stub {
    pub fn start(addr: SocketAddr) -> anyhow::Result<Stub> {
        let socket = UdpSocket::bind(addr)
            .with_context(|| format!("binding the upstream stub on {addr}"))?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let queries = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (q, s) = (queries.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("upstream-stub".into())
            .spawn(move || {
                let mut buf = vec![0u8; 4096];
                let mut out = Vec::with_capacity(512);
                while !s.load(Ordering::Relaxed) {
                    let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    q.fetch_add(1, Ordering::Relaxed);
                    if stub_answer(&buf[..n], &mut out) {
                        let _ = socket.send_to(&out, peer);
                    }
                }
            })
            .context("starting the stub thread")?;
        Ok(Stub {
            queries,
            stop,
            thread: Some(thread),
        })
    }

    pub fn count(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The stub's reply to `query` into `out`; false if it is no query.
fn stub_answer(query: &[u8], out: &mut Vec<u8>) -> bool {
    if query.len() < 12 || query[2] & 0x80 != 0 || query[4..6] != [0, 1] {
        return false;
    }
    let Some((name, end)) = read_name(query, 12) else {
        return false;
    };
    let Some(qtype) = query
        .get(end..end + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
    else {
        return false;
    };
    let Some(question) = query.get(12..end + 4) else {
        return false;
    };
    let edns = query[10..12] != [0, 0];
    let n = name
        .strip_suffix(".example")
        .and_then(|l| l.strip_prefix("ext-"))
        .and_then(|n| n.parse::<usize>().ok());
    let (rcode, answer) = match n {
        Some(n) if qtype == TYPE_A => (0u8, Some(ext_ip(n))),
        Some(_) => (0, None),
        None => (3, None),
    };
    out.clear();
    out.extend_from_slice(&query[0..2]);
    // QR, AA, the query's opcode and RD, RA.
    out.push(0x84 | (query[2] & 0x79));
    out.push(0x80 | rcode);
    out.extend_from_slice(&[0, 1, 0, u8::from(answer.is_some()), 0, 0, 0, u8::from(edns)]);
    out.extend_from_slice(question);
    if let Some(ip) = answer {
        out.extend_from_slice(&[0xc0, 12]);
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&[0, 1]);
        out.extend_from_slice(&300u32.to_be_bytes());
        out.extend_from_slice(&[0, 4]);
        out.extend_from_slice(&ip.octets());
    }
    if edns {
        out.push(0);
        out.extend_from_slice(&TYPE_OPT.to_be_bytes());
        out.extend_from_slice(&[0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stub_answers_ext_names() {
        let q = query(7, "EXT-42.example.", TYPE_A).expect("query");
        let mut out = Vec::new();
        assert!(stub_answer(&q, &mut out));
        let r = parse_reply(&out, 7).expect("reply");
        assert_eq!(r.rcode, 0);
        assert_eq!(r.a, vec![ext_ip(42)]);

        let q = query(8, "ext-42.example", TYPE_AAAA).expect("query");
        assert!(stub_answer(&q, &mut out));
        let r = parse_reply(&out, 8).expect("reply");
        assert_eq!((r.rcode, r.answers), (0, 0));

        let q = query(9, "www.example.org", TYPE_A).expect("query");
        assert!(stub_answer(&q, &mut out));
        assert_eq!(parse_reply(&out, 9).expect("reply").rcode, 3);
    }
}
