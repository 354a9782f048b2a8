//! The response cache, with CoreDNS `cache` plugin semantics: one entry per
//! (lowercased question, DO, CD), "success" and "denial" entries, TTLs
//! capped and aged. Sharded maps behind plain mutexes keep the blocking UDP
//! threads that look up every forwarded query from meeting on one lock.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::wire::{self, Edns, HEADER_LEN, rcode, read_u16, read_u32, rtype};

pub(super) const FLAG_QR: u16 = 0x8000;
pub(super) const FLAG_TC: u16 = 0x0200;
pub(super) const FLAG_RD: u16 = 0x0100;
pub(super) const FLAG_RA: u16 = 0x0080;
const FLAG_CD: u16 = 0x0010;
/// What an OPT record without options takes.
const OPT_LEN: usize = 11;
/// Longest question: a 255-byte name plus type and class.
const MAX_QUESTION: usize = wire::MAX_NAME + 4;
/// CoreDNS keeps upstream SERVFAIL/REFUSED, and replies without records to
/// take a TTL from, for 5 seconds.
pub(super) const SHORT_TTL: u32 = 5;
/// At most this many shards; small caches get fewer, so capacity holds.
const MAX_SHARDS: usize = 64;

/// The two entry types CoreDNS's cache metrics tell apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// NOERROR with answers.
    Success = 0,
    /// NXDOMAIN, NOERROR without answers, upstream SERVFAIL/REFUSED.
    Denial = 1,
}

impl Kind {
    pub(super) const ALL: [Kind; 2] = [Kind::Success, Kind::Denial];

    pub(super) fn label(self) -> &'static str {
        match self {
            Kind::Success => "success",
            Kind::Denial => "denial",
        }
    }
}

/// An upstream reply taken apart for reuse: the records after the
/// question, without the OPT (the client's own EDNS decides whether one
/// comes back), and where their TTLs are.
pub(super) struct Stored {
    flags: u16,
    /// Answer, authority and additional counts, the OPT not counted.
    counts: [u16; 3],
    body: Box<[u8]>,
    /// TTL positions within `body`.
    ttls: Box<[u32]>,
    /// How long the entry may be served, already capped.
    pub(super) ttl: u32,
    pub(super) kind: Kind,
}

impl Stored {
    /// Takes a well-formed reply apart. `None` when it should go to the
    /// client as it is, uncached: truncated, an rcode the cache does not
    /// keep, an extended rcode, or an OPT that is not the last record.
    pub(super) fn from_reply(p: &[u8], ttl_cap: u32) -> Option<Stored> {
        let flags = read_u16(p, 2)?;
        if flags & FLAG_TC != 0 || read_u16(p, 4)? != 1 {
            return None;
        }
        let qend = wire::skip_name(p, HEADER_LEN)? + 4;
        let mut counts = [read_u16(p, 6)?, read_u16(p, 8)?, read_u16(p, 10)?];
        let (an, ns) = (usize::from(counts[0]), usize::from(counts[1]));
        let total = an + ns + usize::from(counts[2]);
        let mut at = qend;
        let mut ttls = Vec::with_capacity(total);
        let (mut min, mut soa_min): (Option<u32>, Option<u32>) = (None, None);
        let mut opt_start = None;
        for i in 0..total {
            let (t, ttl_at, end) = wire::skip_record(p, at)?;
            if opt_start.is_some() {
                // Removing the OPT would move this record's names.
                return None;
            }
            if t == rtype::OPT {
                if i < an + ns || *p.get(ttl_at)? != 0 {
                    return None;
                }
                opt_start = Some(at);
            } else {
                // RFC 2181 8: a TTL with the top bit set means zero.
                let ttl = read_u32(p, ttl_at).map(|t| if t > i32::MAX as u32 { 0 } else { t })?;
                min = Some(min.map_or(ttl, |m| m.min(ttl)));
                if t == rtype::SOA && (an..an + ns).contains(&i) && end >= ttl_at + 6 + 22 {
                    let minimum = read_u32(p, end - 4)?;
                    soa_min = Some(soa_min.map_or(minimum, |m| m.min(minimum)));
                }
                ttls.push(u32::try_from(ttl_at - qend).ok()?);
            }
            at = end;
        }
        let (kind, ttl) = match flags & 0x000F {
            rcode::NOERROR if an > 0 => (Kind::Success, min.unwrap_or(SHORT_TTL)),
            rcode::NOERROR | rcode::NXDOMAIN => {
                // RFC 2308 5: a denial lives as long as the SOA's minimum.
                let ttl = match (min, soa_min) {
                    (Some(a), Some(b)) => a.min(b),
                    (a, b) => a.or(b).unwrap_or(SHORT_TTL),
                };
                (Kind::Denial, ttl)
            }
            rcode::SERVFAIL | rcode::REFUSED => (Kind::Denial, SHORT_TTL),
            _ => return None,
        };
        if opt_start.is_some() {
            counts[2] -= 1;
        }
        Some(Stored {
            flags,
            counts,
            body: p.get(qend..opt_start.unwrap_or(at))?.into(),
            ttls: ttls.into(),
            ttl: ttl.min(ttl_cap),
            kind,
        })
    }

    /// Writes the reply for one client: its id, RD and question bytes (so
    /// its letter case comes back), every TTL set to `ttl`, and a minimal
    /// OPT when it sent one. Over `limit`, a header and question with TC.
    pub(super) fn render(
        &self,
        query: &wire::Query<'_>,
        ttl: u32,
        limit: usize,
        out: &mut Vec<u8>,
    ) {
        let flags = (self.flags & !(FLAG_RD | FLAG_TC)) | (query.flags & FLAG_RD);
        let opt = if query.edns.is_some() { OPT_LEN } else { 0 };
        if HEADER_LEN + query.question.len() + self.body.len() + opt > limit {
            short_reply(out, query.id, flags | FLAG_TC, query.question, query.edns);
            return;
        }
        out.clear();
        out.extend_from_slice(&query.id.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&[0, 1]);
        out.extend_from_slice(&self.counts[0].to_be_bytes());
        out.extend_from_slice(&self.counts[1].to_be_bytes());
        let additional = self.counts[2] + u16::from(query.edns.is_some());
        out.extend_from_slice(&additional.to_be_bytes());
        out.extend_from_slice(query.question);
        let base = out.len();
        out.extend_from_slice(&self.body);
        for &offset in self.ttls.iter() {
            let at = base + offset as usize;
            if let Some(field) = out.get_mut(at..at + 4) {
                field.copy_from_slice(&ttl.to_be_bytes());
            }
        }
        push_opt(out, query.edns);
    }
}

/// A reply of header and question only (SERVFAIL, REFUSED, or a TC that
/// sends the client to TCP), with a minimal OPT when the client sent one.
pub(super) fn short_reply(
    out: &mut Vec<u8>,
    id: u16,
    flags: u16,
    question: &[u8],
    edns: Option<Edns>,
) {
    out.clear();
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    out.extend_from_slice(question);
    push_opt(out, edns);
}

/// An OPT with Ferry's UDP size and the client's DO bit (RFC 6891 7).
fn push_opt(out: &mut Vec<u8>, edns: Option<Edns>) {
    if let Some(e) = edns {
        out.push(0);
        out.extend_from_slice(&rtype::OPT.to_be_bytes());
        out.extend_from_slice(&wire::UDP_EDNS_MAX.to_be_bytes());
        out.extend_from_slice(&(if e.dnssec_ok { 0x8000u32 } else { 0 }).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
    }
}

/// A cache key on the stack: the question with its name lowercased, then
/// the DO and CD bits (a DNSSEC answer must not reach a client that did not
/// ask for one, nor an unvalidated one a client that did).
pub(super) struct Key {
    buf: [u8; MAX_QUESTION + 1],
    len: usize,
    hash: u64,
}

impl Key {
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

struct Entry {
    key: Box<[u8]>,
    stored: Stored,
    inserted: Instant,
}

impl Entry {
    /// Whole seconds left, as CoreDNS counts them; 0 is expired.
    fn remaining(&self, now: Instant) -> u32 {
        let age = now.saturating_duration_since(self.inserted).as_secs();
        u32::try_from(u64::from(self.stored.ttl).saturating_sub(age)).unwrap_or(0)
    }
}

/// One shard, aligned so its counters do not share a cache line with its
/// neighbours'.
#[repr(align(128))]
#[derive(Default)]
struct Shard {
    map: Mutex<HashMap<u64, Entry>>,
    hits: [AtomicU64; 2],
    misses: AtomicU64,
    evictions: [AtomicU64; 2],
}

/// Counters for the metrics, summed over the shards.
#[derive(Debug, Default)]
pub(super) struct Stats {
    pub(super) entries: [u64; 2],
    pub(super) hits: [u64; 2],
    pub(super) misses: u64,
    pub(super) evictions: [u64; 2],
}

/// The cache: up to `capacity` entries over at most 64 shards.
pub(super) struct Cache {
    shards: Box<[Shard]>,
    shard_capacity: usize,
    hasher: RandomState,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Cache {
    pub(super) fn new(capacity: usize) -> Cache {
        let shards = (capacity / MAX_SHARDS)
            .clamp(1, MAX_SHARDS)
            .next_power_of_two()
            .min(MAX_SHARDS);
        Cache {
            shards: (0..shards).map(|_| Shard::default()).collect(),
            shard_capacity: capacity / shards,
            hasher: RandomState::new(),
        }
    }

    /// The key of a query; `None` only for a question too long to be real.
    pub(super) fn key(&self, query: &wire::Query<'_>) -> Option<Key> {
        let q = query.question;
        if q.len() > MAX_QUESTION || q.len() < 5 {
            return None;
        }
        let mut buf = [0u8; MAX_QUESTION + 1];
        let name_len = q.len() - 4;
        for (b, &c) in buf.iter_mut().zip(&q[..name_len]) {
            *b = c.to_ascii_lowercase();
        }
        buf[name_len..q.len()].copy_from_slice(&q[name_len..]);
        let dnssec_ok = query.edns.is_some_and(|e| e.dnssec_ok);
        buf[q.len()] = u8::from(dnssec_ok) | (u8::from(query.flags & FLAG_CD != 0) << 1);
        let len = q.len() + 1;
        let hash = self.hasher.hash_one(&buf[..len]);
        Some(Key { buf, len, hash })
    }

    fn shard(&self, key: &Key) -> &Shard {
        &self.shards[(key.hash as usize) & (self.shards.len() - 1)]
    }

    /// Renders a live entry for `query` into `out` (see [`Stored::render`]);
    /// false on a miss. An expired entry is dropped on the way.
    pub(super) fn get(
        &self,
        key: &Key,
        query: &wire::Query<'_>,
        limit: usize,
        out: &mut Vec<u8>,
        now: Instant,
    ) -> bool {
        let shard = self.shard(key);
        let kind = {
            let mut map = lock(&shard.map);
            match map.get(&key.hash) {
                Some(e) if *e.key == *key.bytes() => {
                    let remaining = e.remaining(now);
                    if remaining == 0 {
                        map.remove(&key.hash);
                        None
                    } else {
                        e.stored.render(query, remaining, limit, out);
                        Some(e.stored.kind)
                    }
                }
                _ => None,
            }
        };
        match kind {
            Some(k) => shard.hits[k as usize].fetch_add(1, Relaxed),
            None => shard.misses.fetch_add(1, Relaxed),
        };
        kind.is_some()
    }

    /// Keeps `stored` under `key` unless its TTL is 0. A full shard first
    /// drops the entry that expires soonest (an expired one, if any).
    pub(super) fn insert(&self, key: &Key, stored: Stored, now: Instant) {
        if stored.ttl == 0 || self.shard_capacity == 0 {
            return;
        }
        let shard = self.shard(key);
        let mut map = lock(&shard.map);
        if !map.contains_key(&key.hash) && map.len() >= self.shard_capacity {
            let victim = map
                .iter()
                .min_by_key(|(_, e)| e.remaining(now))
                .map(|(h, _)| *h);
            if let Some(e) = victim.and_then(|h| map.remove(&h)) {
                shard.evictions[e.stored.kind as usize].fetch_add(1, Relaxed);
            }
        }
        let entry = Entry {
            key: key.bytes().into(),
            stored,
            inserted: now,
        };
        map.insert(key.hash, entry);
    }

    pub(super) fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for shard in self.shards.iter() {
            for e in lock(&shard.map).values() {
                s.entries[e.stored.kind as usize] += 1;
            }
            for (sum, n) in s.hits.iter_mut().zip(&shard.hits) {
                *sum += n.load(Relaxed);
            }
            for (sum, n) in s.evictions.iter_mut().zip(&shard.evictions) {
                *sum += n.load(Relaxed);
            }
            s.misses += shard.misses.load(Relaxed);
        }
        s
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
