//! The DNS wire format (RFC 1035, RFC 6891), as much of it as a cluster DNS
//! server needs: parse one query, write a response from precomputed record
//! bytes, cut it to the client's size with TC, and read the parts of an
//! upstream reply the forwarder caches by. Pure functions over byte slices:
//! no allocation on the query path (names go to a stack buffer, responses
//! to a caller-owned, reused `Vec`).

use thiserror::Error;

/// Size of the fixed header.
pub const HEADER_LEN: usize = 12;
/// The most a UDP answer may be without EDNS (RFC 1035 4.2.1).
pub const UDP_MIN: usize = 512;
/// What Ferry offers over UDP with EDNS: the DNS flag day 2020 size, which
/// avoids IP fragmentation on every common path.
pub const UDP_EDNS_MAX: u16 = 1232;
/// Longest name on the wire (RFC 1035 3.1).
pub const MAX_NAME: usize = 255;

/// Record types Ferry answers or names in metrics.
pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const PTR: u16 = 12;
    pub const HINFO: u16 = 13;
    pub const MX: u16 = 15;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const OPT: u16 = 41;
    pub const DS: u16 = 43;
    pub const RRSIG: u16 = 46;
    pub const NSEC: u16 = 47;
    pub const DNSKEY: u16 = 48;
    pub const NSEC3: u16 = 50;
    pub const HTTPS: u16 = 65;
    pub const IXFR: u16 = 251;
    pub const AXFR: u16 = 252;
    pub const ANY: u16 = 255;

    /// The name CoreDNS's metrics use for a type ("other" outside its list).
    pub fn metric_name(t: u16) -> &'static str {
        match t {
            A => "A",
            AAAA => "AAAA",
            MX => "MX",
            SOA => "SOA",
            CNAME => "CNAME",
            PTR => "PTR",
            TXT => "TXT",
            NS => "NS",
            SRV => "SRV",
            DS => "DS",
            DNSKEY => "DNSKEY",
            RRSIG => "RRSIG",
            NSEC => "NSEC",
            NSEC3 => "NSEC3",
            HTTPS => "HTTPS",
            IXFR => "IXFR",
            AXFR => "AXFR",
            ANY => "ANY",
            _ => "other",
        }
    }
}

/// Response codes (the low 4 bits; BADVERS needs the OPT's extended bits).
pub mod rcode {
    pub const NOERROR: u16 = 0;
    pub const FORMERR: u16 = 1;
    pub const SERVFAIL: u16 = 2;
    pub const NXDOMAIN: u16 = 3;
    pub const NOTIMP: u16 = 4;
    pub const REFUSED: u16 = 5;
    /// RFC 6891: 16, carried as 1 in the OPT's extended-rcode byte.
    pub const BADVERS: u16 = 16;

    pub fn name(code: u16) -> &'static str {
        match code {
            NOERROR => "NOERROR",
            FORMERR => "FORMERR",
            SERVFAIL => "SERVFAIL",
            NXDOMAIN => "NXDOMAIN",
            NOTIMP => "NOTIMP",
            REFUSED => "REFUSED",
            BADVERS => "BADVERS",
            _ => "other",
        }
    }
}

pub const CLASS_IN: u16 = 1;
const FLAG_QR: u16 = 0x8000;
const FLAG_AA: u16 = 0x0400;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;
const OPCODE_MASK: u16 = 0x7800;
const EDNS_DO: u32 = 0x8000;

/// Why a packet is not a query Ferry can answer.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    /// Too short for a header, or a response: no reply is possible or
    /// wanted (answering responses invites reflection loops).
    #[error("not a DNS query")]
    Drop,
    /// Malformed after the header: answer FORMERR with this id.
    #[error("malformed query")]
    FormErr { id: u16, flags: u16 },
    /// An opcode other than QUERY: answer NOTIMP.
    #[error("opcode not implemented")]
    NotImp { id: u16, flags: u16 },
}

/// EDNS0 of a query (its OPT record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edns {
    pub udp_size: u16,
    pub version: u8,
    pub dnssec_ok: bool,
}

/// A query name, lowercased and dotted without the final dot (the root is
/// ""), in a stack buffer.
#[derive(Clone, Copy)]
pub struct NameBuf {
    bytes: [u8; MAX_NAME],
    len: u8,
    /// A label holds a '.' byte: the dotted form is ambiguous, so the name
    /// can never equal a cluster name.
    pub escaped: bool,
}

impl NameBuf {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    pub fn as_str(&self) -> &str {
        // Labels are kept only when they are ASCII (see parse_query).
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl std::fmt::Debug for NameBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// One parsed query. Borrowed from the packet: the question bytes are
/// echoed as they came, so the client's 0x20 case survives.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    pub id: u16,
    pub flags: u16,
    /// The question section as sent (name, type, class).
    pub question: &'a [u8],
    pub qtype: u16,
    pub qclass: u16,
    pub name: NameBuf,
    pub edns: Option<Edns>,
}

impl Query<'_> {
    pub fn recursion_desired(&self) -> bool {
        self.flags & FLAG_RD != 0
    }

    /// The most bytes a UDP answer may take (RFC 6891 6.2.5: the client's
    /// size, at least 512; Ferry offers at most 1232).
    pub fn udp_limit(&self) -> usize {
        match self.edns {
            Some(e) => usize::from(e.udp_size.clamp(UDP_MIN as u16, UDP_EDNS_MAX)),
            None => UDP_MIN,
        }
    }
}

pub fn read_u16(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

pub fn read_u32(p: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *p.get(at)?,
        *p.get(at + 1)?,
        *p.get(at + 2)?,
        *p.get(at + 3)?,
    ]))
}

/// Skips a possibly compressed name at `at`; returns the offset after it.
/// A pointer ends the name, so no loop can follow from skipping.
pub fn skip_name(p: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *p.get(at)?;
        match len & 0xC0 {
            0x00 if len == 0 => return Some(at + 1),
            0x00 => {
                at += 1 + usize::from(len);
                if at > p.len() {
                    return None;
                }
            }
            0xC0 => return (at + 2 <= p.len()).then_some(at + 2),
            _ => return None,
        }
    }
}

/// Skips one resource record; returns (type, offset of its TTL, end).
pub fn skip_record(p: &[u8], at: usize) -> Option<(u16, usize, usize)> {
    let at = skip_name(p, at)?;
    let rtype = read_u16(p, at)?;
    let rdlen = usize::from(read_u16(p, at + 8)?);
    let end = at + 10 + rdlen;
    (end <= p.len()).then_some((rtype, at + 4, end))
}

/// Parses a query. The question name must be uncompressed (it is the first
/// name in the message, so a pointer could only point into the header).
pub fn parse_query(p: &[u8]) -> Result<Query<'_>, ParseError> {
    if p.len() < HEADER_LEN {
        return Err(ParseError::Drop);
    }
    let id = u16::from_be_bytes([p[0], p[1]]);
    let flags = u16::from_be_bytes([p[2], p[3]]);
    if flags & FLAG_QR != 0 {
        return Err(ParseError::Drop);
    }
    let formerr = ParseError::FormErr { id, flags };
    if flags & OPCODE_MASK != 0 {
        return Err(ParseError::NotImp { id, flags });
    }
    let count = |i: usize| u16::from_be_bytes([p[4 + 2 * i], p[5 + 2 * i]]);
    let (qd, an, ns, ar) = (count(0), count(1), count(2), count(3));
    if qd != 1 {
        return Err(formerr);
    }
    let mut name = NameBuf {
        bytes: [0; MAX_NAME],
        len: 0,
        escaped: false,
    };
    let mut at = HEADER_LEN;
    let mut wire_len = 1usize;
    loop {
        let len = usize::from(*p.get(at).ok_or(formerr)?);
        if len == 0 {
            at += 1;
            break;
        }
        if len > 63 {
            // A pointer (or a reserved label type) in the question.
            return Err(formerr);
        }
        let label = p.get(at + 1..at + 1 + len).ok_or(formerr)?;
        wire_len += 1 + len;
        if wire_len > MAX_NAME {
            return Err(formerr);
        }
        let start = usize::from(name.len);
        let dot = usize::from(start != 0);
        if start + dot + len > MAX_NAME {
            return Err(formerr);
        }
        if dot == 1 {
            name.bytes[start] = b'.';
        }
        for (i, &b) in label.iter().enumerate() {
            if b == b'.' || !b.is_ascii() || b.is_ascii_control() {
                name.escaped = true;
            }
            name.bytes[start + dot + i] = b.to_ascii_lowercase();
        }
        name.len = (start + dot + len) as u8;
        at += 1 + len;
    }
    if name.escaped {
        // Keep the stored form ASCII so as_str is exact for what matches.
        for b in &mut name.bytes[..usize::from(name.len)] {
            if !b.is_ascii() || b.is_ascii_control() {
                *b = b'?';
            }
        }
    }
    let qtype = read_u16(p, at).ok_or(formerr)?;
    let qclass = read_u16(p, at + 2).ok_or(formerr)?;
    at += 4;
    let question = &p[HEADER_LEN..at];
    // Answer and authority records have no business in a query, but are
    // legal; skip them to find the OPT.
    let mut edns = None;
    for i in 0..(u32::from(an) + u32::from(ns) + u32::from(ar)) {
        let (rtype, ttl_at, end) = skip_record(p, at).ok_or(formerr)?;
        if rtype == rtype::OPT && i >= u32::from(an) + u32::from(ns) {
            if edns.is_some() || p[at] != 0 {
                // Two OPTs, or an OPT not owned by the root (RFC 6891 6.1.1).
                return Err(formerr);
            }
            let class = read_u16(p, ttl_at - 2).ok_or(formerr)?;
            let ttl = read_u32(p, ttl_at).ok_or(formerr)?;
            edns = Some(Edns {
                udp_size: class,
                version: (ttl >> 16) as u8,
                dnssec_ok: ttl & EDNS_DO != 0,
            });
        }
        at = end;
    }
    Ok(Query {
        id,
        flags,
        question,
        qtype,
        qclass,
        name,
        edns,
    })
}

/// Appends `name` (dotted, no final dot) in uncompressed wire form.
pub fn put_name(out: &mut Vec<u8>, name: &str) {
    for label in name.split('.').filter(|l| !l.is_empty()) {
        let label = &label.as_bytes()[..label.len().min(63)];
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
}

/// Wire length of a dotted name.
pub fn name_wire_len(name: &str) -> usize {
    name.split('.')
        .filter(|l| !l.is_empty())
        .map(|l| 1 + l.len())
        .sum::<usize>()
        + 1
}

/// Appends one resource record. `owner` is wire bytes (a pointer such as
/// [`QNAME_POINTER`], or a name written by [`put_name`]).
pub fn put_record(out: &mut Vec<u8>, owner: &[u8], rtype: u16, ttl: u32, rdata: &[u8]) {
    out.extend_from_slice(owner);
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(rdata);
}

/// A compression pointer to the question name (offset 12): a record owned
/// by the queried name costs 2 bytes of owner and comes back in the case
/// the client used.
pub const QNAME_POINTER: [u8; 2] = [0xC0, 0x0C];

/// Which section a record goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Answer,
    Authority,
    Additional,
}

/// Writes one response into a reused buffer. Records are appended whole;
/// one that does not fit in `limit` is left out, and if it was an answer
/// the response gets TC (RFC 2181 9: only a cut answer section needs it).
pub struct ResponseWriter<'b> {
    out: &'b mut Vec<u8>,
    limit: usize,
    counts: [u16; 3],
    truncated: bool,
    edns: Option<Edns>,
    rcode: u16,
}

impl<'b> ResponseWriter<'b> {
    /// Starts a response to `query`: header, the question echoed as sent.
    /// `limit` is the most bytes the response may take.
    pub fn new(
        out: &'b mut Vec<u8>,
        query: &Query<'_>,
        rcode: u16,
        authoritative: bool,
        limit: usize,
    ) -> Self {
        out.clear();
        let mut flags = FLAG_QR | (query.flags & (OPCODE_MASK | FLAG_RD)) | FLAG_RA;
        if authoritative {
            flags |= FLAG_AA;
        }
        flags |= rcode & 0x000F;
        out.extend_from_slice(&query.id.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(query.question);
        // Room for the OPT that finish() appends.
        let opt = if query.edns.is_some() { 11 } else { 0 };
        ResponseWriter {
            out,
            limit: limit.saturating_sub(opt),
            counts: [0; 3],
            truncated: false,
            edns: query.edns,
            rcode,
        }
    }

    /// Appends one record's bytes (from [`put_record`]); false when it did
    /// not fit.
    pub fn push(&mut self, section: Section, record: &[u8]) -> bool {
        self.push_owned(section, &[], record)
    }

    /// Appends one record given as its owner (wire bytes, usually a
    /// pointer) and the rest (from [`put_record`] with an empty owner).
    pub fn push_owned(&mut self, section: Section, owner: &[u8], rest: &[u8]) -> bool {
        let i = section as usize;
        if self.truncated || self.out.len() + owner.len() + rest.len() > self.limit {
            if section == Section::Answer {
                self.truncated = true;
            }
            return false;
        }
        // Sections are written in order; a record for an earlier section
        // after a later one would corrupt the message.
        debug_assert!(self.counts[i + 1..].iter().all(|c| *c == 0));
        self.out.extend_from_slice(owner);
        self.out.extend_from_slice(rest);
        self.counts[i] += 1;
        true
    }

    /// Whether an answer record was left out.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// Writes the counts, TC and the OPT (echoed only when the query had
    /// one, with our size and the DO bit copied, RFC 6891 7).
    pub fn finish(self) {
        let ResponseWriter {
            out,
            counts,
            truncated,
            edns,
            rcode,
            ..
        } = self;
        if truncated {
            out[2] |= (FLAG_TC >> 8) as u8;
        }
        let mut additional = counts[2];
        if let Some(e) = edns {
            additional += 1;
            let ttl = (u32::from((rcode >> 4) as u8) << 24) | if e.dnssec_ok { EDNS_DO } else { 0 };
            out.push(0);
            out.extend_from_slice(&rtype::OPT.to_be_bytes());
            out.extend_from_slice(&UDP_EDNS_MAX.to_be_bytes());
            out.extend_from_slice(&ttl.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        }
        out[6..8].copy_from_slice(&counts[0].to_be_bytes());
        out[8..10].copy_from_slice(&counts[1].to_be_bytes());
        out[10..12].copy_from_slice(&additional.to_be_bytes());
    }
}

/// A header-only reply for a query that could not be parsed (FORMERR,
/// NOTIMP): id and opcode echoed, no question.
pub fn error_reply(out: &mut Vec<u8>, id: u16, flags: u16, rcode: u16) {
    out.clear();
    let flags = FLAG_QR | (flags & (OPCODE_MASK | FLAG_RD)) | FLAG_RA | (rcode & 0x000F);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
}

/// The rcode of a response, with the OPT's extended bits when present.
pub fn response_rcode(p: &[u8]) -> Option<u16> {
    let flags = read_u16(p, 2)?;
    Some(flags & 0x000F)
}

/// Where the TTLs of a response's records are (OPT excluded), and the
/// smallest of them; `None` when the message is malformed.
pub fn record_ttls(p: &[u8]) -> Option<(Vec<usize>, Option<u32>)> {
    let qd = read_u16(p, 4)?;
    let total =
        u32::from(read_u16(p, 6)?) + u32::from(read_u16(p, 8)?) + u32::from(read_u16(p, 10)?);
    let mut at = HEADER_LEN;
    for _ in 0..qd {
        at = skip_name(p, at)? + 4;
    }
    if at > p.len() {
        return None;
    }
    let mut offsets = Vec::new();
    let mut min: Option<u32> = None;
    for _ in 0..total {
        let (rtype, ttl_at, end) = skip_record(p, at)?;
        if rtype != rtype::OPT {
            let ttl = read_u32(p, ttl_at)?;
            min = Some(min.map_or(ttl, |m| m.min(ttl)));
            offsets.push(ttl_at);
        }
        at = end;
    }
    Some((offsets, min))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name`/`qtype`, with an OPT when `edns` is given.
    pub(crate) fn query(id: u16, name: &str, qtype: u16, edns: Option<(u16, u8, bool)>) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&FLAG_RD.to_be_bytes());
        p.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
        put_name(&mut p, name);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&CLASS_IN.to_be_bytes());
        if let Some((size, version, dnssec_ok)) = edns {
            p.push(0);
            p.extend_from_slice(&rtype::OPT.to_be_bytes());
            p.extend_from_slice(&size.to_be_bytes());
            let ttl = (u32::from(version) << 16) | if dnssec_ok { EDNS_DO } else { 0 };
            p.extend_from_slice(&ttl.to_be_bytes());
            p.extend_from_slice(&[0, 0]);
        }
        p
    }

    #[test]
    fn parses_name_lowercased_and_keeps_question_bytes() {
        let p = query(7, "NGinx.Shop.svc.cluster.local", rtype::A, None);
        let q = parse_query(&p).expect("query");
        assert_eq!(q.id, 7);
        assert_eq!(q.name.as_str(), "nginx.shop.svc.cluster.local");
        assert_eq!(q.qtype, rtype::A);
        assert!(q.question.starts_with(b"\x05NGinx"));
        assert_eq!(q.edns, None);
        assert_eq!(q.udp_limit(), 512);
    }

    #[test]
    fn edns_size_version_and_do() {
        let p = query(1, "a.b", rtype::AAAA, Some((4096, 0, true)));
        let q = parse_query(&p).expect("query");
        assert_eq!(
            q.edns,
            Some(Edns {
                udp_size: 4096,
                version: 0,
                dnssec_ok: true
            })
        );
        assert_eq!(q.udp_limit(), 1232);
        let small = query(1, "a.b", rtype::A, Some((100, 0, false)));
        assert_eq!(parse_query(&small).expect("q").udp_limit(), 512);
    }

    #[test]
    fn rejects_what_is_not_a_query() {
        assert_eq!(parse_query(&[0; 5]).err(), Some(ParseError::Drop));
        let mut response = query(1, "a", rtype::A, None);
        response[2] |= 0x80;
        assert_eq!(parse_query(&response).err(), Some(ParseError::Drop));
        let mut two = query(9, "a", rtype::A, None);
        two[5] = 2;
        assert!(matches!(
            parse_query(&two),
            Err(ParseError::FormErr { id: 9, .. })
        ));
        let mut pointer = query(9, "a", rtype::A, None);
        pointer.truncate(HEADER_LEN);
        pointer.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
        assert!(matches!(
            parse_query(&pointer),
            Err(ParseError::FormErr { .. })
        ));
        let mut notify = query(3, "a", rtype::SOA, None);
        notify[2] |= 4 << 3;
        assert!(matches!(
            parse_query(&notify),
            Err(ParseError::NotImp { id: 3, .. })
        ));
        let cut = query(3, "abc.def", rtype::A, None);
        assert!(matches!(
            parse_query(&cut[..cut.len() - 3]),
            Err(ParseError::FormErr { .. })
        ));
    }

    #[test]
    fn labels_with_dots_never_match() {
        let mut p = Vec::new();
        p.extend_from_slice(&[0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(b"\x03a.b\x01c\x00\x00\x01\x00\x01");
        let q = parse_query(&p).expect("query");
        assert!(q.name.escaped);
    }

    #[test]
    fn writer_cuts_whole_records_and_sets_tc() {
        let p = query(5, "h.s.svc.cluster.local", rtype::A, None);
        let q = parse_query(&p).expect("query");
        let mut rr = Vec::new();
        put_record(&mut rr, &QNAME_POINTER, rtype::A, 30, &[10, 0, 0, 1]);
        assert_eq!(rr.len(), 16);
        let mut out = Vec::new();
        let mut w = ResponseWriter::new(&mut out, &q, rcode::NOERROR, true, q.udp_limit());
        let mut written = 0;
        for _ in 0..100 {
            if w.push(Section::Answer, &rr) {
                written += 1;
            }
        }
        assert!(w.truncated());
        w.finish();
        assert!(out.len() <= 512);
        assert_eq!(read_u16(&out, 6), Some(written));
        assert_eq!(out[2] & 0x02, 0x02, "TC set");
        assert_eq!(out[2] & 0x04, 0x04, "AA set");
        let (ttls, min) = record_ttls(&out).expect("well formed");
        assert_eq!(ttls.len(), usize::from(written));
        assert_eq!(min, Some(30));
    }

    #[test]
    fn opt_is_echoed_with_extended_rcode() {
        let p = query(5, "x", rtype::A, Some((1232, 1, true)));
        let q = parse_query(&p).expect("query");
        let mut out = Vec::new();
        let w = ResponseWriter::new(&mut out, &q, rcode::BADVERS, false, 512);
        w.finish();
        assert_eq!(read_u16(&out, 10), Some(1));
        let opt = &out[out.len() - 11..];
        assert_eq!(opt[0], 0);
        assert_eq!(read_u16(opt, 1), Some(rtype::OPT));
        assert_eq!(opt[5], 1, "extended rcode 16 >> 4");
        assert_eq!(read_u32(opt, 5).map(|t| t & EDNS_DO), Some(EDNS_DO));
        assert_eq!(response_rcode(&out), Some(0));
    }
}
