//! Connection tracking over ctnetlink: list the kernel's IPv4 conntrack
//! entries and delete the ones that match a [`Filter`].
//!
//! The service proxy needs this for UDP, as kube-proxy does: a client that
//! keeps sending to a Service (DNS above all) keeps its conntrack entry
//! alive, so packets sent while the Service had no endpoints, or to an
//! endpoint that is gone, would keep going nowhere. Deleting the entries
//! whose original destination is the Service address and port (it just
//! got endpoints), or whose reply source is a removed endpoint, makes the
//! next packet go through the NAT rules again.
//!
//! ```no_run
//! use ferry_netlink::conntrack::{Conntrack, Filter, UDP};
//! # fn main() -> ferry_netlink::Result<()> {
//! let mut conntrack = Conntrack::open_in_netns("/run/netns/lab-node-1")?;
//! let deleted = conntrack.delete(&Filter {
//!     protocol: Some(UDP),
//!     original_dst: Some([10, 96, 0, 10].into()),
//!     original_dst_port: Some(53),
//!     ..Filter::default()
//! })?;
//! # let _ = deleted; Ok(()) }
//! ```
//!
//! Calls block (a dump, then one request per deleted entry), so async
//! callers should use `spawn_blocking`. Nothing here runs the `conntrack`
//! program. Messages are framed by hand (`nfnetlink_conntrack.h`), like the
//! nf_tables encoder, and parsing never panics: an entry the decoder does
//! not understand is skipped.

use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use crate::error::{Error, Result};
use crate::netns::NetNs;

/// `IPPROTO_TCP`, for [`Filter::protocol`] and [`Tuple::protocol`].
pub const TCP: u8 = 6;
/// `IPPROTO_UDP`.
pub const UDP: u8 = 17;
/// `IPPROTO_SCTP`.
pub const SCTP: u8 = 132;

// netlink(7)
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLM_F_DUMP: u16 = 0x300;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

// nfnetlink.h, nfnetlink_conntrack.h
const NFNETLINK_V0: u8 = 0;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u8 = 0;
const IPCTNL_MSG_CT_GET: u8 = 1;
const IPCTNL_MSG_CT_DELETE: u8 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

const AF_INET: u8 = libc::AF_INET as u8;
/// How often a dump is retried when the kernel flags it as interrupted.
const DUMP_ATTEMPTS: usize = 10;

/// One direction of a connection. Protocols without ports (ICMP, GRE)
/// have `src_port` and `dst_port` 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// IP protocol number ([`TCP`], [`UDP`], [`SCTP`], 1 for ICMP).
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
}

impl fmt::Display for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.protocol {
            TCP => f.write_str("tcp")?,
            UDP => f.write_str("udp")?,
            SCTP => f.write_str("sctp")?,
            1 => f.write_str("icmp")?,
            other => write!(f, "protocol {other}")?,
        }
        write!(
            f,
            " {}:{} -> {}:{}",
            self.src, self.src_port, self.dst, self.dst_port
        )
    }
}

/// A conntrack entry: the tuple of the first packet, and the tuple replies
/// are expected with (after NAT: a DNATed connection's reply source is the
/// endpoint, not the Service address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entry {
    pub original: Tuple,
    pub reply: Tuple,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reply = &self.reply;
        write!(
            f,
            "{} (reply {}:{} -> {}:{})",
            self.original, reply.src, reply.src_port, reply.dst, reply.dst_port
        )
    }
}

/// Which entries to delete: every condition that is set must hold, so
/// the default filter (no condition) would match every entry and
/// [`Conntrack::delete`] refuses it.
///
/// kube-proxy's two cases: entries to a Service port that just got
/// endpoints (`protocol`, `original_dst`, `original_dst_port`), and entries
/// DNATed to an endpoint that is gone (`protocol`, `original_dst` = the
/// Service address, `reply_src` and `reply_src_port` = the endpoint).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Filter {
    /// IP protocol of the original tuple ([`UDP`], ...).
    pub protocol: Option<u8>,
    pub original_dst: Option<Ipv4Addr>,
    pub original_dst_port: Option<u16>,
    pub reply_src: Option<Ipv4Addr>,
    pub reply_src_port: Option<u16>,
}

impl Filter {
    /// Whether `entry` meets every condition that is set.
    pub fn matches(&self, entry: &Entry) -> bool {
        fn holds<T: PartialEq>(condition: Option<T>, value: T) -> bool {
            condition.is_none_or(|wanted| wanted == value)
        }
        holds(self.protocol, entry.original.protocol)
            && holds(self.original_dst, entry.original.dst)
            && holds(self.original_dst_port, entry.original.dst_port)
            && holds(self.reply_src, entry.reply.src)
            && holds(self.reply_src_port, entry.reply.src_port)
    }

    /// Whether no condition is set (the filter matches everything).
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }
}

/// A ctnetlink socket in one network namespace.
#[derive(Debug)]
pub struct Conntrack {
    socket: Socket,
    seq: u32,
    /// For error messages (`None`: the caller's own namespace).
    netns: Option<PathBuf>,
}

impl Conntrack {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Self> {
        Conntrack::open_with(None)
    }

    /// Opens a socket in the network namespace at `path` (`/run/netns/NAME`
    /// or `/proc/PID/ns/net`). The socket stays in that namespace; the
    /// calling thread does not move.
    pub fn open_in_netns(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        NetNs::open(path)?.run(|| Conntrack::open_with(Some(path.to_owned())))?
    }

    fn open_with(netns: Option<PathBuf>) -> Result<Self> {
        let opening = |error| Error::Netlink {
            action: "opening",
            object: "a ctnetlink socket".into(),
            netns: netns.clone(),
            error,
        };
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(opening)?;
        socket.bind_auto().map_err(opening)?;
        // Errors then echo only the request's header, not the whole request.
        if let Err(error) = socket.set_cap_ack(true) {
            tracing::debug!(%error, "ctnetlink: no capped acks");
        }
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(Conntrack { socket, seq, netns })
    }

    /// Every IPv4 entry (`IPCTNL_MSG_CT_GET` dump for `AF_INET`).
    pub fn list_ipv4(&mut self) -> Result<Vec<Entry>> {
        Ok(self.dump()?.into_iter().map(|l| l.entry).collect())
    }

    /// Deletes the IPv4 entries that match `filter`, each by its original
    /// tuple, and returns how many were deleted. An entry that went away
    /// between the dump and its deletion is not counted and not an error.
    /// An empty filter is refused (it would delete every entry).
    pub fn delete(&mut self, filter: &Filter) -> Result<usize> {
        if filter.is_empty() {
            return Err(Error::Invalid {
                what: "conntrack filter".into(),
                reason: "it has no condition and would delete every entry",
            });
        }
        let mut deleted = 0;
        for listed in self.dump()? {
            if filter.matches(&listed.entry) && self.delete_one(&listed)? {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Deletes the entries matching any of `filters`, from one dump;
    /// returns how many were deleted. Empty filters are refused.
    pub fn delete_any(&mut self, filters: &[Filter]) -> Result<usize> {
        if filters.is_empty() {
            return Ok(0);
        }
        if filters.iter().any(Filter::is_empty) {
            return Err(Error::Invalid {
                what: "conntrack filter".into(),
                reason: "it has no condition and would delete every entry",
            });
        }
        let mut deleted = 0;
        for listed in self.dump()? {
            if filters.iter().any(|f| f.matches(&listed.entry)) && self.delete_one(&listed)? {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Deletes one entry; `false` if it was already gone.
    fn delete_one(&mut self, listed: &Listed) -> Result<bool> {
        let seq = self.next_seq();
        let error = |error| Error::Netlink {
            action: "deleting conntrack entry",
            object: listed.entry.to_string(),
            netns: self.netns.clone(),
            error,
        };
        self.send(&delete_request(seq, listed)).map_err(error)?;
        loop {
            let data = self.receive().map_err(error)?;
            for message in messages(&data) {
                if message.seq != seq || message.msg_type != NLMSG_ERROR {
                    continue;
                }
                return match error_code(message.payload) {
                    Some(0) => Ok(true),
                    Some(libc::ENOENT) => Ok(false),
                    Some(errno) => Err(error(io::Error::from_raw_os_error(errno))),
                    None => Err(error(malformed("a truncated acknowledgement"))),
                };
            }
        }
    }

    /// Dumps every IPv4 entry, retrying when the kernel says the dump was
    /// interrupted or replies were lost.
    fn dump(&mut self) -> Result<Vec<Listed>> {
        let netns = self.netns.clone();
        let error = |error| Error::Netlink {
            action: "listing",
            object: "IPv4 conntrack entries".into(),
            netns: netns.clone(),
            error,
        };
        for _ in 0..DUMP_ATTEMPTS {
            let seq = self.next_seq();
            self.send(&dump_request(seq)).map_err(error)?;
            let mut listed = Vec::new();
            let mut skipped = 0usize;
            let mut incomplete = false;
            'reading: loop {
                let data = match self.receive() {
                    Ok(data) => data,
                    // The socket overflowed: some replies are lost, but the
                    // dump goes on; read it to its end, then start again.
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        incomplete = true;
                        continue;
                    }
                    Err(e) => return Err(error(e)),
                };
                for message in messages(&data) {
                    if message.seq != seq {
                        continue;
                    }
                    incomplete |= message.flags & NLM_F_DUMP_INTR != 0;
                    match message.msg_type {
                        NLMSG_DONE | NLMSG_ERROR => match error_code(message.payload) {
                            Some(0) | None => break 'reading,
                            Some(libc::EINTR) => {
                                incomplete = true;
                                break 'reading;
                            }
                            Some(errno) => {
                                return Err(error(io::Error::from_raw_os_error(errno)));
                            }
                        },
                        t if t == message_type(IPCTNL_MSG_CT_NEW) => {
                            match decode_entry(message.payload) {
                                Some(entry) => listed.push(entry),
                                None => skipped += 1,
                            }
                        }
                        _ => {}
                    }
                }
            }
            if skipped > 0 {
                tracing::debug!(
                    skipped,
                    "ctnetlink: skipped entries that could not be decoded"
                );
            }
            if !incomplete {
                return Ok(listed);
            }
        }
        Err(error(io::Error::from_raw_os_error(libc::EINTR)))
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, request: &[u8]) -> io::Result<()> {
        let sent = self.socket.send_to(request, &SocketAddr::new(0, 0), 0)?;
        if sent != request.len() {
            return Err(io::Error::other(format!(
                "sent {sent} of {} bytes",
                request.len()
            )));
        }
        Ok(())
    }

    fn receive(&self) -> io::Result<Vec<u8>> {
        loop {
            match self.socket.recv_from_full() {
                Ok((data, _)) => return Ok(data),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("ctnetlink: {what}"))
}

/// A dumped entry and what its deletion must send back: the kernel's own
/// `CTA_TUPLE_ORIG` (so protocols whose tuple is not ports, like ICMP's
/// id/type/code, are deleted too) and the entry's zone.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    entry: Entry,
    original_attr: Vec<u8>,
    zone: Option<u16>,
}

// ---- encoding ----

fn message_type(msg: u8) -> u16 {
    (NFNL_SUBSYS_CTNETLINK << 8) | msg as u16
}

/// An nfnetlink message for `AF_INET`: `nlmsghdr`, `nfgenmsg`, then what
/// `attrs` appends.
fn request(msg: u8, flags: u16, seq: u32, attrs: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut buf = Vec::with_capacity(128);
    buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched below
    buf.extend_from_slice(&message_type(msg).to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
    buf.extend_from_slice(&[AF_INET, NFNETLINK_V0, 0, 0]); // res_id 0
    attrs(&mut buf);
    let len = u32::try_from(buf.len()).expect("a ctnetlink request is small");
    buf[..4].copy_from_slice(&len.to_ne_bytes());
    buf
}

fn dump_request(seq: u32) -> Vec<u8> {
    request(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, |_| {})
}

/// Deletes by original tuple. The tuple attribute is always present: a
/// delete without a tuple would flush the whole table.
fn delete_request(seq: u32, listed: &Listed) -> Vec<u8> {
    request(
        IPCTNL_MSG_CT_DELETE,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        |buf| {
            put_attr(buf, CTA_TUPLE_ORIG | NLA_F_NESTED, &listed.original_attr);
            if let Some(zone) = listed.zone {
                put_attr(buf, CTA_ZONE, &zone.to_be_bytes());
            }
        },
    )
}

fn put_attr(buf: &mut Vec<u8>, attr_type: u16, payload: &[u8]) {
    // `original_attr` came out of a u16-sized attribute, so it fits one.
    let len = u16::try_from(4 + payload.len()).expect("attribute came from a u16-sized one");
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&attr_type.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align(buf.len()), 0);
}

// ---- decoding ----

const fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// One received netlink message.
#[derive(Debug, Clone, Copy)]
struct Message<'a> {
    msg_type: u16,
    flags: u16,
    seq: u32,
    /// Everything after the 16-byte header.
    payload: &'a [u8],
}

/// Splits a datagram into messages; stops at the first malformed one.
fn messages(mut data: &[u8]) -> impl Iterator<Item = Message<'_>> {
    std::iter::from_fn(move || {
        let header = data.get(..NLMSG_HDRLEN)?;
        let len = u32::from_ne_bytes(header[0..4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || len > data.len() {
            return None;
        }
        let message = Message {
            msg_type: u16::from_ne_bytes(header[4..6].try_into().ok()?),
            flags: u16::from_ne_bytes(header[6..8].try_into().ok()?),
            seq: u32::from_ne_bytes(header[8..12].try_into().ok()?),
            payload: &data[NLMSG_HDRLEN..len],
        };
        data = &data[align(len).min(data.len())..];
        Some(message)
    })
}

/// Iterates attributes as (type without flags, payload); stops at the
/// first malformed one.
fn attrs(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let header = data.get(..4)?;
        let len = u16::from_ne_bytes([header[0], header[1]]) as usize;
        let attr_type = u16::from_ne_bytes([header[2], header[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > data.len() {
            return None;
        }
        let payload = &data[4..len];
        data = &data[align(len).min(data.len())..];
        Some((attr_type, payload))
    })
}

fn attr(data: &[u8], wanted: u16) -> Option<&[u8]> {
    attrs(data).find_map(|(t, payload)| (t == wanted).then_some(payload))
}

fn be_u16(payload: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(payload.get(..2)?.try_into().ok()?))
}

fn ipv4(payload: &[u8]) -> Option<Ipv4Addr> {
    Some(Ipv4Addr::from(<[u8; 4]>::try_from(payload.get(..4)?).ok()?))
}

/// The errno of an `NLMSG_ERROR` (0: an acknowledgement) or `NLMSG_DONE`.
fn error_code(payload: &[u8]) -> Option<i32> {
    let code = i32::from_ne_bytes(payload.get(..4)?.try_into().ok()?);
    code.checked_neg()
}

/// Decodes an `IPCTNL_MSG_CT_NEW` payload (`nfgenmsg` and attributes);
/// `None` for anything but a complete IPv4 entry.
fn decode_entry(payload: &[u8]) -> Option<Listed> {
    if *payload.first()? != AF_INET {
        return None;
    }
    let attributes = payload.get(4..)?;
    let original_attr = attr(attributes, CTA_TUPLE_ORIG)?;
    let reply = decode_tuple(attr(attributes, CTA_TUPLE_REPLY)?)?;
    Some(Listed {
        entry: Entry {
            original: decode_tuple(original_attr)?,
            reply,
        },
        original_attr: original_attr.to_vec(),
        zone: attr(attributes, CTA_ZONE).and_then(be_u16),
    })
}

/// A `CTA_TUPLE_*` nest. Ports stay 0 when the protocol has none.
fn decode_tuple(nest: &[u8]) -> Option<Tuple> {
    let ip = attr(nest, CTA_TUPLE_IP)?;
    let proto = attr(nest, CTA_TUPLE_PROTO)?;
    let port = |t| attr(proto, t).and_then(be_u16).unwrap_or(0);
    Some(Tuple {
        src: ipv4(attr(ip, CTA_IP_V4_SRC)?)?,
        dst: ipv4(attr(ip, CTA_IP_V4_DST)?)?,
        protocol: *attr(proto, CTA_PROTO_NUM)?.first()?,
        src_port: port(CTA_PROTO_SRC_PORT),
        dst_port: port(CTA_PROTO_DST_PORT),
    })
}

#[cfg(test)]
mod tests;
