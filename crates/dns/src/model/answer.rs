//! One query against the index: the record answer, NODATA or NXDOMAIN
//! (with the zone's SOA in the authority section), or "forward it". The
//! rules are the spec's, and CoreDNS's where the spec is silent (see
//! docs/design/dns-brief.md for the table this follows).

use super::index::{Entry, Index, PodsMode};
use super::names::pod_label_ip;
use crate::wire::{self, CLASS_IN, Query, ResponseWriter, Section, rcode, rtype};

/// What became of a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answered {
    /// A response with this rcode is in the output buffer.
    Local { rcode: u16 },
    /// Not ours: the forwarder answers it.
    Forward,
}

/// Answers `q` from `index` into `out`, at most `limit` bytes. `rotation`
/// picks where multi-address answers start, so successive clients get the
/// endpoints in turn (CoreDNS's `loadbalance`).
pub fn answer(
    index: &Index,
    q: &Query<'_>,
    limit: usize,
    rotation: usize,
    out: &mut Vec<u8>,
) -> Answered {
    let name = q.name.as_bytes();
    let zone = index.config.zone.as_bytes();
    let in_zone = name == zone
        || (name.len() > zone.len()
            && name.ends_with(zone)
            && name[name.len() - zone.len() - 1] == b'.');
    let reverse = name.ends_with(b"in-addr.arpa") || name.ends_with(b"ip6.arpa");
    if !in_zone && !reverse {
        return Answered::Forward;
    }
    if let Some(e) = q.edns
        && e.version > 0
    {
        return finish(out, q, rcode::BADVERS, false, limit, |_| {});
    }
    let entry = if q.name.escaped {
        None
    } else {
        index.get(name)
    };
    if !in_zone {
        // Reverse names of cluster addresses are ours; any other falls
        // through to the upstream (kubeadm: `fallthrough in-addr.arpa ip6.arpa`).
        return match entry {
            Some(e) if q.qclass == CLASS_IN => positive(index, q, e, limit, rotation, out, false),
            _ => Answered::Forward,
        };
    }
    if q.qclass != CLASS_IN || matches!(q.qtype, rtype::AXFR | rtype::IXFR) {
        return finish(out, q, rcode::REFUSED, false, limit, |_| {});
    }
    if let Some(e) = entry {
        return positive(index, q, e, limit, rotation, out, true);
    }
    if let Some(answered) = pod(index, q, limit, out) {
        return answered;
    }
    negative(index, q, rcode::NXDOMAIN, limit, out)
}

/// The name exists: its records of the asked type, a CNAME to follow, or
/// NODATA.
fn positive(
    index: &Index,
    q: &Query<'_>,
    e: &Entry,
    limit: usize,
    rotation: usize,
    out: &mut Vec<u8>,
    in_zone: bool,
) -> Answered {
    if q.qtype == rtype::ANY {
        if e.rrsets.is_empty() {
            return negative(index, q, rcode::NOERROR, limit, out);
        }
        // RFC 8482 4.2: a synthesized HINFO instead of every record.
        return finish(out, q, rcode::NOERROR, true, limit, |w| {
            w.push_owned(Section::Answer, &wire::QNAME_POINTER, &index.hinfo_rest);
        });
    }
    if let Some(set) = e.rrset(q.qtype) {
        return finish(out, q, rcode::NOERROR, true, limit, |w| {
            let n = set.len();
            let rotate = matches!(set.rtype, rtype::A | rtype::AAAA) && n > 1;
            let start = if rotate { rotation % n } else { 0 };
            for i in 0..n {
                if !w.push(Section::Answer, set.record((start + i) % n)) {
                    return;
                }
            }
            for rr in set.additional_records() {
                if !w.push(Section::Additional, rr) {
                    return;
                }
            }
        });
    }
    if let (Some(cname), Some(target)) = (e.rrset(rtype::CNAME), e.cname_target.as_deref())
        && q.qtype != rtype::SRV
    {
        return finish(out, q, rcode::NOERROR, true, limit, |w| {
            // The target's name starts 12 bytes into the CNAME record that
            // is written next, so its records can point there.
            let target_at = w.len() + 12;
            if !w.push(Section::Answer, cname.record(0)) {
                return;
            }
            let Some(set) = index.get(target.as_bytes()).and_then(|t| t.rrset(q.qtype)) else {
                // Outside the zone, or no such records: the client's resolver
                // follows the CNAME itself.
                return;
            };
            if target_at >= 0x3FFF {
                return;
            }
            let pointer = [0xC0 | (target_at >> 8) as u8, target_at as u8];
            let mut rr = Vec::new();
            for i in 0..set.len() {
                rr.clear();
                rr.extend_from_slice(&pointer);
                rr.extend_from_slice(&set.record(i)[2..]);
                if !w.push(Section::Answer, &rr) {
                    return;
                }
            }
        });
    }
    if !in_zone {
        return Answered::Forward;
    }
    negative(index, q, rcode::NOERROR, limit, out)
}

/// `<a-b-c-d>.<namespace>.pod.<zone>`, answered from the name itself.
fn pod(index: &Index, q: &Query<'_>, limit: usize, out: &mut Vec<u8>) -> Option<Answered> {
    if index.config.pods == PodsMode::Disabled {
        return None;
    }
    let name = q.name.as_str();
    let rest = name.strip_suffix(index.config.zone.as_str())?;
    let rest = rest.strip_suffix(".pod.")?;
    let (label, ns) = rest.split_once('.')?;
    if ns.contains('.') || !index.has_namespace(ns) {
        return None;
    }
    let ip = pod_label_ip(label)?;
    // Owner pointer, type, class, TTL, length, then the address.
    let mut rr = [0u8; 28];
    let (t, len) = match ip {
        std::net::IpAddr::V4(v4) => {
            rr[12..16].copy_from_slice(&v4.octets());
            (rtype::A, 4u16)
        }
        std::net::IpAddr::V6(v6) => {
            rr[12..28].copy_from_slice(&v6.octets());
            (rtype::AAAA, 16u16)
        }
    };
    if q.qtype != t {
        return Some(negative(index, q, rcode::NOERROR, limit, out));
    }
    rr[..2].copy_from_slice(&wire::QNAME_POINTER);
    rr[2..4].copy_from_slice(&t.to_be_bytes());
    rr[4..6].copy_from_slice(&CLASS_IN.to_be_bytes());
    rr[6..10].copy_from_slice(&index.config.ttl.to_be_bytes());
    rr[10..12].copy_from_slice(&len.to_be_bytes());
    Some(finish(out, q, rcode::NOERROR, true, limit, |w| {
        w.push(Section::Answer, &rr[..12 + usize::from(len)]);
    }))
}

/// NXDOMAIN or NODATA with the zone's SOA in the authority section; before
/// the first sync a missing name is SERVFAIL instead (it may just not have
/// been listed yet).
fn negative(index: &Index, q: &Query<'_>, code: u16, limit: usize, out: &mut Vec<u8>) -> Answered {
    let code = if code == rcode::NXDOMAIN && !index.synced {
        rcode::SERVFAIL
    } else {
        code
    };
    finish(out, q, code, true, limit, |w| {
        // The zone is the tail of the question name: point at it, so the
        // SOA owner keeps the client's case.
        let qname_len = q.question.len() - 4;
        let at = wire::HEADER_LEN + qname_len - index.zone_wire_len.min(qname_len);
        let owner = [0xC0 | (at >> 8) as u8, at as u8];
        w.push_owned(Section::Authority, &owner, &index.soa_rest);
    })
}

fn finish(
    out: &mut Vec<u8>,
    q: &Query<'_>,
    code: u16,
    authoritative: bool,
    limit: usize,
    body: impl FnOnce(&mut ResponseWriter<'_>),
) -> Answered {
    let mut w = ResponseWriter::new(out, q, code, authoritative, limit);
    body(&mut w);
    w.finish();
    Answered::Local { rcode: code }
}
