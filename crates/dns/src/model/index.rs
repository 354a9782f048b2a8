//! The answer index: every name of the cluster zone (and the reverse names
//! of its addresses) mapped to the wire bytes of its records, computed once
//! per change instead of once per query. A query is one hash lookup on the
//! lowercased name and a copy of precomputed bytes.
//!
//! Records owned by the queried name start with a pointer to the question
//! (`0xC00C`), so the client gets its own letter case back (0x20 encoding)
//! and the bytes do not depend on who asks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use super::names::{dashed, reverse_name};
use super::objects::{NamedPort, ServiceInfo, ServiceKind, SliceInfo};
use crate::wire::{self, QNAME_POINTER, rtype};

/// The `dns-version` TXT answer: the spec schema Ferry follows (1.1.0 adds
/// AAAA and ip6.arpa, as CoreDNS answers).
pub const SCHEMA_VERSION: &str = "1.1.0";
/// TTL of the `dns-version` record (CoreDNS's).
const VERSION_TTL: u32 = 28800;

/// How `<a-b-c-d>.<ns>.pod.<zone>` is answered (CoreDNS's `pods` option).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodsMode {
    /// NXDOMAIN for every pod name (CoreDNS's default).
    Disabled,
    /// The address the name spells, if the namespace exists, without
    /// checking that such a pod exists (kubeadm's setting).
    Insecure,
}

/// What the index is built with.
#[derive(Clone, Debug)]
pub struct Config {
    /// The cluster zone, lowercase, without the final dot.
    pub zone: String,
    /// TTL of cluster answers (kubeadm's Corefile: 30).
    pub ttl: u32,
    pub pods: PodsMode,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            zone: "cluster.local".into(),
            ttl: 30,
            pods: PodsMode::Insecure,
        }
    }
}

/// The watched objects, in compact form, keyed by (namespace, name).
#[derive(Clone, Debug, Default)]
pub struct State {
    pub services: HashMap<(String, String), ServiceInfo>,
    /// Keyed by (namespace, slice name).
    pub slices: HashMap<(String, String), SliceInfo>,
    pub namespaces: HashSet<String>,
}

/// Records in wire form, back to back, with the end offset of each.
#[derive(Clone, Debug, Default)]
pub struct Records {
    bytes: Vec<u8>,
    ends: Vec<u32>,
}

impl Records {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The bytes of record `i`.
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.bytes[start..self.ends[i] as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Appends `record` unless an identical one is there.
    fn push_unique(&mut self, record: &[u8]) {
        if self.iter().any(|r| r == record) {
            return;
        }
        self.bytes.extend_from_slice(record);
        self.ends.push(self.bytes.len() as u32);
    }

    fn shrink(&mut self) {
        self.bytes.shrink_to_fit();
        self.ends.shrink_to_fit();
    }
}

/// The records of one type at one name, in wire form.
#[derive(Clone, Debug)]
pub struct RrSet {
    pub rtype: u16,
    /// Records owned by the queried name (their owner points at the
    /// question).
    records: Records,
    /// Additional-section records (the addresses of SRV targets), with
    /// their owner names written out; most sets have none.
    additional: Option<Box<Records>>,
}

impl RrSet {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The bytes of record `i`.
    pub fn record(&self, i: usize) -> &[u8] {
        self.records.get(i)
    }

    pub fn additional_records(&self) -> impl Iterator<Item = &[u8]> {
        self.additional.iter().flat_map(|a| a.iter())
    }
}

/// One name. No record sets means the name exists without data: NODATA,
/// not NXDOMAIN (a namespace, the `svc` and `pod` apexes).
#[derive(Clone, Debug, Default)]
pub struct Entry {
    pub rrsets: Vec<RrSet>,
    /// For an ExternalName: where the CNAME points (its record is in
    /// `rrsets`), so the answer can follow it.
    pub cname_target: Option<Box<str>>,
}

impl Entry {
    pub fn rrset(&self, rtype: u16) -> Option<&RrSet> {
        self.rrsets.iter().find(|r| r.rtype == rtype)
    }
}

/// Everything a query needs; immutable once built, swapped whole.
#[derive(Debug)]
pub struct Index {
    pub config: Config,
    names: HashMap<Box<[u8]>, Entry>,
    namespaces: HashSet<Box<str>>,
    /// Wire length of the zone name (to point at the zone inside a query).
    pub zone_wire_len: usize,
    /// The zone's SOA record without its owner (RFC 1035 3.3.13), its
    /// serial the time of the last change.
    pub soa_rest: Box<[u8]>,
    /// The RFC 8482 HINFO answer to ANY, without its owner.
    pub hinfo_rest: Box<[u8]>,
    /// False until every watch has listed once: negative answers are
    /// SERVFAIL until then, as CoreDNS answers before its first sync.
    pub synced: bool,
}

impl Index {
    pub fn get(&self, name: &[u8]) -> Option<&Entry> {
        self.names.get(name)
    }

    pub fn has_namespace(&self, ns: &str) -> bool {
        self.namespaces.contains(ns)
    }

    /// Number of names (for the metrics).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Builds the index of `state`. `serial` is the SOA serial (the Unix
    /// time of the last change, as CoreDNS uses).
    pub fn build(state: &State, config: &Config, serial: u32, synced: bool) -> Index {
        let zone = config.zone.as_str();
        let ttl = config.ttl;
        let mut b = Builder {
            names: HashMap::with_capacity(estimate_names(state)),
            record: Vec::new(),
        };

        let mut soa_rdata = Vec::with_capacity(64);
        wire::put_name(&mut soa_rdata, &format!("ns.dns.{zone}"));
        wire::put_name(&mut soa_rdata, &format!("hostmaster.{zone}"));
        for v in [serial, 7200, 1800, 86400, ttl] {
            soa_rdata.extend_from_slice(&v.to_be_bytes());
        }
        b.record(zone, rtype::SOA, ttl, &soa_rdata);
        let mut ns_rdata = Vec::new();
        wire::put_name(&mut ns_rdata, &format!("ns.dns.{zone}"));
        b.record(zone, rtype::NS, ttl, &ns_rdata);
        b.exists(&format!("svc.{zone}"));
        b.exists(&format!("pod.{zone}"));
        let mut txt = vec![SCHEMA_VERSION.len() as u8];
        txt.extend_from_slice(SCHEMA_VERSION.as_bytes());
        b.record(
            &format!("dns-version.{zone}"),
            rtype::TXT,
            VERSION_TTL,
            &txt,
        );

        let mut namespaces: HashSet<Box<str>> =
            state.namespaces.iter().map(|n| n.as_str().into()).collect();
        namespaces.extend(state.services.keys().map(|(ns, _)| ns.as_str().into()));
        for ns in &namespaces {
            b.exists(&format!("{ns}.svc.{zone}"));
            b.exists(&format!("{ns}.pod.{zone}"));
        }

        // Slices by the Service they belong to.
        let mut slices: HashMap<(&str, &str), Vec<&SliceInfo>> = HashMap::new();
        for ((ns, _), slice) in &state.slices {
            slices
                .entry((ns.as_str(), slice.service.as_str()))
                .or_default()
                .push(slice);
        }
        for ((ns, name), svc) in &state.services {
            let base = format!("{name}.{ns}.svc.{zone}");
            let own = slices
                .get(&(ns.as_str(), name.as_str()))
                .map(Vec::as_slice)
                .unwrap_or_default();
            match &svc.kind {
                ServiceKind::ClusterIp(ips) => {
                    for ip in ips {
                        b.address(&base, *ip, ttl);
                        b.record(&reverse_name(*ip), rtype::PTR, ttl, &name_rdata(&base));
                    }
                    // Spec 2.3.2: one SRV per named port, to the Service.
                    for port in &svc.ports {
                        let srv = srv_name(port, &base);
                        b.record(&srv, rtype::SRV, ttl, &srv_rdata(100, port.port, &base));
                        for ip in ips {
                            b.additional(&srv, rtype::SRV, &base, *ip, ttl);
                        }
                    }
                }
                ServiceKind::Headless => headless(&mut b, &base, own, ttl),
                ServiceKind::ExternalName(target) => {
                    b.record(&base, rtype::CNAME, ttl, &name_rdata(target));
                    b.entry(&base).cname_target = Some(target.as_str().into());
                }
            }
        }
        if let Some(ServiceInfo {
            kind: ServiceKind::ClusterIp(ips),
            ..
        }) = state
            .services
            .get(&("kube-system".to_string(), "kube-dns".to_string()))
        {
            for ip in ips {
                b.address(&format!("ns.dns.{zone}"), *ip, ttl);
            }
        }

        Index {
            config: config.clone(),
            names: b.finish(),
            namespaces,
            zone_wire_len: wire::name_wire_len(zone),
            soa_rest: record_rest(rtype::SOA, ttl, &soa_rdata),
            hinfo_rest: record_rest(rtype::HINFO, ttl, b"\x07RFC8482\x00"),
            synced,
        }
    }
}

/// About how many names `state` gives, so the table is sized once instead
/// of growing (a growth holds the old and the new table at once).
fn estimate_names(state: &State) -> usize {
    let headless: HashSet<(&str, &str)> = state
        .services
        .iter()
        .filter(|(_, s)| s.kind == ServiceKind::Headless)
        .map(|((ns, name), _)| (ns.as_str(), name.as_str()))
        .collect();
    let services: usize = state
        .services
        .values()
        .map(|s| {
            1 + s.ports.len()
                + match &s.kind {
                    ServiceKind::ClusterIp(ips) => ips.len(),
                    _ => 0,
                }
        })
        .sum();
    // A headless endpoint has a name and a reverse name.
    let endpoints: usize = state
        .slices
        .iter()
        .filter(|((ns, _), s)| headless.contains(&(ns.as_str(), s.service.as_str())))
        .map(|(_, s)| 2 * s.endpoints.len() + s.ports.len())
        .sum();
    8 + 2 * state.namespaces.len() + services + endpoints
}

/// Spec 2.4: one A/AAAA per ready endpoint at the Service name and at
/// `<hostname>.<service>`, SRV per (ready endpoint, named port), PTR per
/// ready address. No ready endpoint: the names do not exist (NXDOMAIN).
fn headless(b: &mut Builder, base: &str, slices: &[&SliceInfo], ttl: u32) {
    // Endpoints that appear in two slices (during a slice rewrite) count once.
    let mut seen = HashSet::new();
    let ready: Vec<(&SliceInfo, &super::objects::EndpointInfo)> = slices
        .iter()
        .flat_map(|s| s.endpoints.iter().map(move |e| (*s, e)))
        .filter(|(_, e)| e.ready && seen.insert(e.address))
        .collect();
    for (_, e) in &ready {
        let host = e
            .hostname
            .as_deref()
            .map_or_else(|| dashed(e.address), str::to_string);
        let target = format!("{host}.{base}");
        b.address(base, e.address, ttl);
        b.address(&target, e.address, ttl);
        b.record(
            &reverse_name(e.address),
            rtype::PTR,
            ttl,
            &name_rdata(&target),
        );
    }
    // SRV weights share 100 among the records of one name (CoreDNS).
    let mut srv: BTreeMap<String, Vec<(u16, String, &super::objects::EndpointInfo)>> =
        BTreeMap::new();
    for (slice, e) in &ready {
        let host = e
            .hostname
            .as_deref()
            .map_or_else(|| dashed(e.address), str::to_string);
        for port in slice.ports.iter() {
            srv.entry(srv_name(port, base)).or_default().push((
                port.port,
                format!("{host}.{base}"),
                e,
            ));
        }
    }
    for (name, targets) in srv {
        let weight = (100 / targets.len()).max(1) as u16;
        for (port, target, e) in targets {
            b.record(&name, rtype::SRV, ttl, &srv_rdata(weight, port, &target));
            b.additional(&name, rtype::SRV, &target, e.address, ttl);
        }
    }
}

fn record_rest(rtype: u16, ttl: u32, rdata: &[u8]) -> Box<[u8]> {
    let mut out = Vec::with_capacity(10 + rdata.len());
    wire::put_record(&mut out, &[], rtype, ttl, rdata);
    out.into()
}

fn srv_name(port: &NamedPort, base: &str) -> String {
    format!("_{}.{}.{base}", port.name, port.protocol.label())
}

fn name_rdata(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    wire::put_name(&mut out, name);
    out
}

/// Priority 0, `weight`, `port`, target (RFC 2782; targets are never
/// compressed).
fn srv_rdata(weight: u16, port: u16, target: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(target.len() + 8);
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&port.to_be_bytes());
    wire::put_name(&mut out, target);
    out
}

fn address_record(ip: IpAddr) -> (u16, Vec<u8>) {
    match ip {
        IpAddr::V4(v4) => (rtype::A, v4.octets().to_vec()),
        IpAddr::V6(v6) => (rtype::AAAA, v6.octets().to_vec()),
    }
}

/// Collects records per name and type, without duplicates, directly in
/// the index's own form (one copy: the build never holds the index twice).
#[derive(Default)]
struct Builder {
    names: HashMap<Box<[u8]>, Entry>,
    /// Scratch for one record.
    record: Vec<u8>,
}

impl Builder {
    fn entry(&mut self, name: &str) -> &mut Entry {
        if !self.names.contains_key(name.as_bytes()) {
            self.names.insert(name.as_bytes().into(), Entry::default());
        }
        self.names
            .get_mut(name.as_bytes())
            .expect("inserted just above")
    }

    fn exists(&mut self, name: &str) {
        self.entry(name);
    }

    fn rrset(&mut self, name: &str, rtype: u16) -> &mut RrSet {
        let entry = self.entry(name);
        let at = match entry.rrsets.iter().position(|r| r.rtype == rtype) {
            Some(at) => at,
            None => {
                // Most names have one set: no room for four (Vec's first
                // growth), which at 100,000 names is megabytes.
                entry.rrsets.reserve_exact(1);
                entry.rrsets.push(RrSet {
                    rtype,
                    records: Records::default(),
                    additional: None,
                });
                entry.rrsets.len() - 1
            }
        };
        &mut entry.rrsets[at]
    }

    fn record(&mut self, name: &str, rtype: u16, ttl: u32, rdata: &[u8]) {
        let mut record = std::mem::take(&mut self.record);
        record.clear();
        wire::put_record(&mut record, &QNAME_POINTER, rtype, ttl, rdata);
        self.rrset(name, rtype).records.push_unique(&record);
        self.record = record;
    }

    fn address(&mut self, name: &str, ip: IpAddr, ttl: u32) {
        let (rtype, rdata) = address_record(ip);
        self.record(name, rtype, ttl, &rdata);
    }

    /// An address record of `owner` for the additional section of the
    /// `rtype` answer at `name`.
    fn additional(&mut self, name: &str, rtype: u16, owner: &str, ip: IpAddr, ttl: u32) {
        let (t, rdata) = address_record(ip);
        let mut record = std::mem::take(&mut self.record);
        record.clear();
        let mut owner_wire = Vec::with_capacity(owner.len() + 2);
        wire::put_name(&mut owner_wire, owner);
        wire::put_record(&mut record, &owner_wire, t, ttl, &rdata);
        self.rrset(name, rtype)
            .additional
            .get_or_insert_with(Default::default)
            .push_unique(&record);
        self.record = record;
    }

    fn finish(mut self) -> HashMap<Box<[u8]>, Entry> {
        for entry in self.names.values_mut() {
            // Names that only exist have no data; set without records are
            // never created, so nothing to filter.
            entry.rrsets.shrink_to_fit();
            for set in &mut entry.rrsets {
                set.records.shrink();
                if let Some(a) = &mut set.additional {
                    a.shrink();
                }
            }
        }
        self.names.shrink_to_fit();
        self.names
    }
}
