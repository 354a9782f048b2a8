use std::time::Duration;

use super::*;
use crate::wire::{CLASS_IN, QNAME_POINTER, parse_query, put_name, put_record};

/// A query for `name`/A with RD, and an OPT (DO as given) when `edns` is set.
fn query(id: u16, name: &str, edns: Option<bool>) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&FLAG_RD.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    put_name(&mut p, name);
    p.extend_from_slice(&rtype::A.to_be_bytes());
    p.extend_from_slice(&CLASS_IN.to_be_bytes());
    if let Some(dnssec_ok) = edns {
        p.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0]);
        p.extend_from_slice(&[if dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
    }
    p
}

/// An upstream reply to `q`: A records with `ttls`, an SOA (TTL, minimum)
/// in authority, and an OPT when `opt`.
fn reply(q: &[u8], code: u16, ttls: &[u32], soa: Option<(u32, u32)>, opt: bool) -> Vec<u8> {
    let parsed = parse_query(q).expect("query");
    let mut p = Vec::new();
    p.extend_from_slice(&parsed.id.to_be_bytes());
    p.extend_from_slice(&(FLAG_QR | FLAG_RD | FLAG_RA | code).to_be_bytes());
    p.extend_from_slice(&[
        0,
        1,
        0,
        ttls.len() as u8,
        0,
        u8::from(soa.is_some()),
        0,
        u8::from(opt),
    ]);
    p.extend_from_slice(parsed.question);
    for (i, &ttl) in ttls.iter().enumerate() {
        put_record(&mut p, &QNAME_POINTER, rtype::A, ttl, &[192, 0, 2, i as u8]);
    }
    if let Some((ttl, minimum)) = soa {
        let mut rdata = Vec::new();
        put_name(&mut rdata, "ns.example");
        put_name(&mut rdata, "hostmaster.example");
        for v in [1u32, 3600, 600, 86400, minimum] {
            rdata.extend_from_slice(&v.to_be_bytes());
        }
        put_record(&mut p, &QNAME_POINTER, rtype::SOA, ttl, &rdata);
    }
    if opt {
        p.extend_from_slice(&[0, 0, 41, 16, 0, 0, 0, 0, 0, 0, 0]);
    }
    p
}

/// The TTLs of a rendered reply's records (OPT excluded).
fn ttls(out: &[u8]) -> Vec<u32> {
    let (offsets, _) = wire::record_ttls(out).expect("well formed");
    offsets
        .iter()
        .map(|&at| read_u32(out, at).expect("ttl"))
        .collect()
}

/// Stores `reply` to `q` at `now` in `cache`.
fn store(cache: &Cache, q: &[u8], reply: &[u8], now: Instant) {
    let parsed = parse_query(q).expect("query");
    let stored = Stored::from_reply(reply, 30).expect("cacheable");
    cache.insert(&cache.key(&parsed).expect("key"), stored, now);
}

/// Looks `q` up at `now`; the rendered reply on a hit.
fn lookup(cache: &Cache, q: &[u8], limit: usize, now: Instant) -> Option<Vec<u8>> {
    let parsed = parse_query(q).expect("query");
    let mut out = Vec::new();
    let key = cache.key(&parsed).expect("key");
    cache
        .get(&key, &parsed, limit, &mut out, now)
        .then_some(out)
}

#[test]
fn ttl_is_capped_then_ages_until_expiry() {
    let cache = Cache::new(100);
    let t0 = Instant::now();
    let q = query(1, "www.example", None);
    store(
        &cache,
        &q,
        &reply(&q, rcode::NOERROR, &[300, 120], None, false),
        t0,
    );
    let fresh = lookup(&cache, &q, 512, t0).expect("hit");
    assert_eq!(ttls(&fresh), [30, 30]);
    let aged = lookup(&cache, &q, 512, t0 + Duration::from_millis(10_500)).expect("hit");
    assert_eq!(ttls(&aged), [20, 20]);
    let last = lookup(&cache, &q, 512, t0 + Duration::from_millis(29_900)).expect("hit");
    assert_eq!(ttls(&last), [1, 1]);
    assert!(lookup(&cache, &q, 512, t0 + Duration::from_secs(30)).is_none());
    let s = cache.stats();
    assert_eq!(s.entries, [0, 0], "the expired entry is dropped");
    assert_eq!((s.hits, s.misses), ([3, 0], 1));
}

#[test]
fn full_cache_evicts_the_oldest() {
    let cache = Cache::new(8);
    let t0 = Instant::now();
    let names: Vec<String> = (0..20).map(|i| format!("n{i}.example")).collect();
    for (i, name) in names.iter().enumerate() {
        let q = query(1, name, None);
        let r = reply(&q, rcode::NOERROR, &[60], None, false);
        store(&cache, &q, &r, t0 + Duration::from_secs(i as u64));
    }
    let s = cache.stats();
    assert_eq!(s.entries, [8, 0]);
    assert_eq!(s.evictions, [12, 0]);
    let now = t0 + Duration::from_secs(20);
    for (i, name) in names.iter().enumerate() {
        let hit = lookup(&cache, &query(2, name, None), 512, now).is_some();
        assert_eq!(hit, i >= 12, "{name}");
    }
}

#[test]
fn key_ignores_case_and_reply_echoes_the_clients() {
    let cache = Cache::new(100);
    let now = Instant::now();
    let q = query(1, "Www.Example.COM", None);
    store(
        &cache,
        &q,
        &reply(&q, rcode::NOERROR, &[60], None, false),
        now,
    );
    let asked = query(0xBEEF, "wWW.eXAMPLE.com", None);
    let out = lookup(&cache, &asked, 512, now).expect("hit");
    assert_eq!(read_u16(&out, 0), Some(0xBEEF));
    let parsed = parse_query(&asked).expect("query");
    assert_eq!(
        &out[HEADER_LEN..HEADER_LEN + parsed.question.len()],
        parsed.question
    );
    assert_eq!(read_u16(&out, 6), Some(1));
}

#[test]
fn do_bit_separates_entries() {
    let cache = Cache::new(100);
    let now = Instant::now();
    let plain = query(1, "a.example", None);
    let edns = query(1, "a.example", Some(false));
    let dnssec = query(1, "a.example", Some(true));
    store(
        &cache,
        &plain,
        &reply(&plain, rcode::NOERROR, &[60], None, false),
        now,
    );
    assert!(lookup(&cache, &dnssec, 512, now).is_none());
    let out = lookup(&cache, &edns, 512, now).expect("EDNS without DO shares the entry");
    assert_eq!(read_u16(&out, 10), Some(1), "the client's OPT is echoed");
    store(
        &cache,
        &dnssec,
        &reply(&dnssec, rcode::NOERROR, &[60, 60], None, true),
        now,
    );
    let out = lookup(&cache, &dnssec, 512, now).expect("hit");
    assert_eq!(read_u16(&out, 6), Some(2));
    assert_eq!(
        read_u16(&out, 10),
        Some(1),
        "one OPT, not the upstream's and ours"
    );
    assert_eq!(
        read_u16(&lookup(&cache, &plain, 512, now).expect("hit"), 6),
        Some(1)
    );
    let plain_out = lookup(&cache, &plain, 512, now).expect("hit");
    assert_eq!(
        read_u16(&plain_out, 10),
        Some(0),
        "no OPT for a client without EDNS"
    );
}

#[test]
fn denial_lives_as_long_as_the_soa_minimum() {
    let q = query(1, "nx.example", None);
    let nx = Stored::from_reply(&reply(&q, rcode::NXDOMAIN, &[], Some((60, 10)), false), 30)
        .expect("denial");
    assert_eq!((nx.kind, nx.ttl), (Kind::Denial, 10));
    let nodata = Stored::from_reply(&reply(&q, rcode::NOERROR, &[], Some((20, 900)), false), 30)
        .expect("denial");
    assert_eq!((nodata.kind, nodata.ttl), (Kind::Denial, 20));
    let bare =
        Stored::from_reply(&reply(&q, rcode::NXDOMAIN, &[], None, true), 30).expect("denial");
    assert_eq!(bare.ttl, SHORT_TTL);
    let fail =
        Stored::from_reply(&reply(&q, rcode::SERVFAIL, &[], None, false), 30).expect("servfail");
    assert_eq!((fail.kind, fail.ttl), (Kind::Denial, SHORT_TTL));
    assert!(Stored::from_reply(&reply(&q, rcode::FORMERR, &[], None, false), 30).is_none());
    let mut truncated = reply(&q, rcode::NOERROR, &[60], None, false);
    truncated[2] |= (FLAG_TC >> 8) as u8;
    assert!(Stored::from_reply(&truncated, 30).is_none());
    let zero =
        Stored::from_reply(&reply(&q, rcode::NOERROR, &[0, 60], None, false), 30).expect("ok");
    let cache = Cache::new(100);
    cache.insert(
        &cache.key(&parse_query(&q).expect("q")).expect("key"),
        zero,
        Instant::now(),
    );
    assert_eq!(cache.stats().entries, [0, 0], "TTL 0 is not cached");
}

#[test]
fn too_big_for_the_limit_gives_tc() {
    let cache = Cache::new(100);
    let now = Instant::now();
    let q = query(7, "big.example", Some(false));
    store(
        &cache,
        &q,
        &reply(&q, rcode::NOERROR, &[60; 40], None, true),
        now,
    );
    let out = lookup(&cache, &q, 512, now).expect("hit");
    assert!(out.len() <= 512);
    assert_ne!(out[2] & 0x02, 0, "TC");
    assert_eq!(read_u16(&out, 6), Some(0));
    let full = lookup(&cache, &q, 65535, now).expect("hit");
    assert_eq!(read_u16(&full, 6), Some(40));
    assert_eq!(full[2] & 0x02, 0);
}

#[test]
fn malformed_replies_are_rejected_without_panic() {
    let q = query(1, "x.example", None);
    let good = reply(&q, rcode::NOERROR, &[60, 60], Some((60, 60)), true);
    for cut in 0..good.len() {
        let _ = Stored::from_reply(&good[..cut], 30);
    }
    let mut lying = good.clone();
    lying[7] = 9;
    assert!(Stored::from_reply(&lying, 30).is_none());
}
