//! The Kubernetes DNS-Based Service Discovery spec (kubernetes/dns,
//! docs/specification.md), one test per section, with the spec's own
//! examples as input. Every response is decoded by hickory-proto, an
//! independent implementation, so an encoder bug cannot hide behind our own
//! parser. Where the spec leaves a choice open, the test names CoreDNS's
//! behaviour, which Ferry follows.

use std::net::IpAddr;

use ferry_dns::model::objects::{ServiceInfo, SliceInfo};
use ferry_dns::model::{Answered, Config, Index, PodsMode, State, answer};
use ferry_dns::wire::{self, rtype};
use hickory_proto::op::{Message, ResponseCode};
use proptest::prelude::*;

fn service(ns: &str, name: &str, spec: serde_json::Value) -> ((String, String), ServiceInfo) {
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(
        serde_json::json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}),
    )
    .expect("service");
    (
        (ns.to_string(), name.to_string()),
        ServiceInfo::from_service(&svc).expect("served"),
    )
}

/// An EndpointSlice of `svc`: (address, hostname, ready) per endpoint.
fn slice(
    ns: &str,
    svc: &str,
    ports: serde_json::Value,
    endpoints: &[(&str, Option<&str>, bool)],
) -> ((String, String), SliceInfo) {
    let eps: Vec<serde_json::Value> = endpoints
        .iter()
        .map(|(ip, host, ready)| {
            let mut e = serde_json::json!({"addresses": [ip], "conditions": {"ready": ready}});
            if let Some(h) = host {
                e["hostname"] = serde_json::json!(h);
            }
            e
        })
        .collect();
    let family = if endpoints.first().is_some_and(|e| e.0.contains(':')) {
        "IPv6"
    } else {
        "IPv4"
    };
    let s: k8s_openapi::api::discovery::v1::EndpointSlice =
        serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("{svc}-{}", endpoints.len()), "namespace": ns,
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": family, "ports": ports, "endpoints": eps}))
        .expect("slice");
    (
        (ns.to_string(), format!("{svc}-{}", endpoints.len())),
        SliceInfo::from_slice(&s).expect("owned"),
    )
}

/// The spec's example cluster: zone cluster.local, Services in `default`.
fn spec_state() -> State {
    let mut s = State::default();
    s.namespaces
        .extend(["default".into(), "kube-system".into(), "empty".into()]);
    s.services.extend([
        service(
            "default",
            "kubernetes",
            serde_json::json!({"clusterIP": "10.3.0.1", "ports": [
                {"name": "https", "port": 443}, {"port": 8443}]}),
        ),
        service("default", "headless", serde_json::json!({"clusterIP": "None"})),
        service("default", "nobody", serde_json::json!({"clusterIP": "None"})),
        service(
            "default",
            "foo",
            serde_json::json!({"type": "ExternalName", "externalName": "www.example.com"}),
        ),
        service(
            "default",
            "alias",
            serde_json::json!({"type": "ExternalName", "externalName": "kubernetes.default.svc.cluster.local"}),
        ),
        service(
            "default",
            "dual",
            serde_json::json!({"clusterIP": "10.3.0.9", "clusterIPs": ["10.3.0.9", "2001:db8::9"]}),
        ),
    ]);
    s.slices.extend([
        slice(
            "default",
            "headless",
            serde_json::json!([{"name": "https", "port": 443}, {"name": "dns", "port": 53, "protocol": "UDP"}]),
            &[
                ("10.3.0.100", Some("my-pet"), true),
                ("10.3.0.101", None, true),
                ("10.3.0.102", Some("sick"), false),
            ],
        ),
        slice(
            "default",
            "nobody",
            serde_json::json!([{"name": "https", "port": 443}]),
            &[("10.3.0.110", None, false)],
        ),
    ]);
    s
}

fn index_of(state: &State, pods: PodsMode, synced: bool) -> Index {
    let config = Config {
        zone: "cluster.local".into(),
        ttl: 30,
        pods,
    };
    Index::build(state, &config, 1_700_000_000, synced)
}

fn spec_index() -> Index {
    index_of(&spec_state(), PodsMode::Insecure, true)
}

/// A query as `dig` sends it (RD, optional EDNS0 OPT).
fn query(name: &str, qtype: u16, edns: Option<(u16, u8, bool)>) -> Vec<u8> {
    let mut p = vec![
        0x12,
        0x34,
        0x01,
        0x00,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        u8::from(edns.is_some()),
    ];
    wire::put_name(&mut p, name);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    if let Some((size, version, dnssec_ok)) = edns {
        p.extend_from_slice(&[0, 0, 41]);
        p.extend_from_slice(&size.to_be_bytes());
        p.extend_from_slice(&[0, version, if dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
    }
    p
}

/// Asks `index` and decodes the reply with hickory; `None` when the query
/// is not the index's to answer (forwarded).
fn ask_with(
    index: &Index,
    name: &str,
    qtype: u16,
    edns: Option<(u16, u8, bool)>,
    limit: Option<usize>,
) -> Option<Message> {
    let packet = query(name, qtype, edns);
    let q = wire::parse_query(&packet).expect("query parses");
    let limit = limit.unwrap_or_else(|| q.udp_limit());
    let mut out = Vec::new();
    match answer(index, &q, limit, 0, &mut out) {
        Answered::Forward => None,
        Answered::Local { rcode } => {
            assert!(
                out.len() <= limit,
                "{} bytes over the {limit} limit",
                out.len()
            );
            let m = Message::from_vec(&out).expect("hickory decodes the reply");
            assert_eq!(u16::from(m.metadata.response_code), rcode);
            assert_eq!(m.metadata.id, 0x1234);
            assert_eq!(m.queries.len(), 1);
            Some(m)
        }
    }
}

fn ask(index: &Index, name: &str, qtype: u16) -> Message {
    ask_with(index, name, qtype, None, None).expect("answered from the cluster zone")
}

fn answers(m: &Message) -> Vec<String> {
    m.answers.iter().map(ToString::to_string).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

const SOA: &str = "cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1700000000 7200 1800 86400 30";

/// NXDOMAIN or NODATA, authoritative, with the zone's SOA in authority.
fn assert_negative(m: &Message, code: ResponseCode) {
    assert_eq!(m.metadata.response_code, code);
    assert!(m.answers.is_empty(), "{:?}", answers(m));
    assert!(m.metadata.authoritative);
    let authority: Vec<String> = m.authorities.iter().map(ToString::to_string).collect();
    assert_eq!(authority, [SOA.to_string()]);
}

#[test]
fn spec_2_2_schema_version_txt() {
    let m = ask(&spec_index(), "dns-version.cluster.local", rtype::TXT);
    assert_eq!(
        answers(&m),
        ["dns-version.cluster.local. 28800 IN TXT 1.1.0"]
    );
    // The name exists, so other types are NODATA (CoreDNS says NXDOMAIN).
    assert_negative(
        &ask(&spec_index(), "dns-version.cluster.local", rtype::A),
        ResponseCode::NoError,
    );
}

#[test]
fn spec_2_3_1_cluster_ip_a_record_any_case() {
    let index = spec_index();
    let m = ask(&index, "kubernetes.default.svc.cluster.local", rtype::A);
    assert_eq!(
        answers(&m),
        ["kubernetes.default.svc.cluster.local. 30 IN A 10.3.0.1"]
    );
    assert!(m.metadata.authoritative);
    // "All comparisons ... are case-insensitive"; the answer keeps the
    // client's case (0x20 encoding).
    let m = ask(&index, "KuberNetes.Default.SVC.Cluster.Local", rtype::A);
    assert_eq!(
        answers(&m),
        ["KuberNetes.Default.SVC.Cluster.Local. 30 IN A 10.3.0.1"]
    );
    // Dual-stack (schema 1.1.0): AAAA from the IPv6 ClusterIP.
    let m = ask(&index, "dual.default.svc.cluster.local", rtype::AAAA);
    assert_eq!(
        answers(&m),
        ["dual.default.svc.cluster.local. 30 IN AAAA 2001:db8::9"]
    );
    // An IPv4-only Service asked for AAAA: NOERROR, no answer, SOA.
    assert_negative(
        &ask(&index, "kubernetes.default.svc.cluster.local", rtype::AAAA),
        ResponseCode::NoError,
    );
}

#[test]
fn spec_2_3_2_cluster_ip_srv_for_named_ports_only() {
    let index = spec_index();
    let m = ask(
        &index,
        "_https._tcp.kubernetes.default.svc.cluster.local",
        rtype::SRV,
    );
    // Priority 0, weight 100/N as CoreDNS writes them.
    assert_eq!(
        answers(&m),
        [
            "_https._tcp.kubernetes.default.svc.cluster.local. 30 IN SRV 0 100 443 kubernetes.default.svc.cluster.local."
        ]
    );
    // "The Additional section ... may include the Service A record".
    let additional: Vec<String> = m.additionals.iter().map(ToString::to_string).collect();
    assert_eq!(
        additional,
        ["kubernetes.default.svc.cluster.local. 30 IN A 10.3.0.1"]
    );
    // Port 8443 has no name, so no SRV; a wrong protocol is no name either.
    assert_negative(
        &ask(
            &index,
            "_https._udp.kubernetes.default.svc.cluster.local",
            rtype::SRV,
        ),
        ResponseCode::NXDomain,
    );
}

#[test]
fn spec_2_3_3_cluster_ip_ptr() {
    let index = spec_index();
    let m = ask(&index, "1.0.3.10.in-addr.arpa", rtype::PTR);
    assert_eq!(
        answers(&m),
        ["1.0.3.10.in-addr.arpa. 30 IN PTR kubernetes.default.svc.cluster.local."]
    );
    let m = ask(
        &index,
        "9.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
        rtype::PTR,
    );
    assert_eq!(m.answers.len(), 1);
    assert!(answers(&m)[0].ends_with("PTR dual.default.svc.cluster.local."));
    // An address no Service has falls through to the upstream (kubeadm's
    // `fallthrough in-addr.arpa ip6.arpa`).
    assert!(ask_with(&index, "5.5.5.10.in-addr.arpa", rtype::PTR, None, None).is_none());
}

#[test]
fn spec_2_4_1_headless_a_records_of_ready_endpoints() {
    let index = spec_index();
    let m = ask(&index, "headless.default.svc.cluster.local", rtype::A);
    assert_eq!(
        sorted(answers(&m)),
        [
            "headless.default.svc.cluster.local. 30 IN A 10.3.0.100",
            "headless.default.svc.cluster.local. 30 IN A 10.3.0.101",
        ],
        "the unready endpoint is left out"
    );
    let m = ask(
        &index,
        "my-pet.headless.default.svc.cluster.local",
        rtype::A,
    );
    assert_eq!(
        answers(&m),
        ["my-pet.headless.default.svc.cluster.local. 30 IN A 10.3.0.100"]
    );
    // No hostname: a system-assigned name (CoreDNS: the dashed IP).
    let m = ask(
        &index,
        "10-3-0-101.headless.default.svc.cluster.local",
        rtype::A,
    );
    assert_eq!(answers(&m).len(), 1);
    // Unready endpoints have no name.
    assert_negative(
        &ask(&index, "sick.headless.default.svc.cluster.local", rtype::A),
        ResponseCode::NXDomain,
    );
    // "If there are no ready endpoints ... the answer should be NXDOMAIN."
    assert_negative(
        &ask(&index, "nobody.default.svc.cluster.local", rtype::A),
        ResponseCode::NXDomain,
    );
}

#[test]
fn spec_2_4_2_headless_srv_per_endpoint_and_port() {
    let index = spec_index();
    let m = ask(
        &index,
        "_https._tcp.headless.default.svc.cluster.local",
        rtype::SRV,
    );
    assert_eq!(
        sorted(answers(&m)),
        [
            "_https._tcp.headless.default.svc.cluster.local. 30 IN SRV 0 50 443 10-3-0-101.headless.default.svc.cluster.local.",
            "_https._tcp.headless.default.svc.cluster.local. 30 IN SRV 0 50 443 my-pet.headless.default.svc.cluster.local.",
        ]
    );
    assert_eq!(m.additionals.len(), 2, "the targets' addresses");
    let m = ask(
        &index,
        "_dns._udp.headless.default.svc.cluster.local",
        rtype::SRV,
    );
    assert_eq!(m.answers.len(), 2, "N endpoints x M ports: 2 per port");
}

#[test]
fn spec_2_4_3_headless_ptr() {
    let m = ask(&spec_index(), "100.0.3.10.in-addr.arpa", rtype::PTR);
    assert_eq!(
        answers(&m),
        ["100.0.3.10.in-addr.arpa. 30 IN PTR my-pet.headless.default.svc.cluster.local."]
    );
}

#[test]
fn spec_2_5_external_name_cname() {
    let index = spec_index();
    let m = ask(&index, "foo.default.svc.cluster.local", rtype::A);
    assert_eq!(
        answers(&m),
        ["foo.default.svc.cluster.local. 30 IN CNAME www.example.com."]
    );
    let m = ask(&index, "foo.default.svc.cluster.local", rtype::CNAME);
    assert_eq!(
        answers(&m),
        ["foo.default.svc.cluster.local. 30 IN CNAME www.example.com."]
    );
    // A target inside the zone is followed in the same answer.
    let m = ask(&index, "alias.default.svc.cluster.local", rtype::A);
    assert_eq!(
        answers(&m),
        [
            "alias.default.svc.cluster.local. 30 IN CNAME kubernetes.default.svc.cluster.local.",
            "kubernetes.default.svc.cluster.local. 30 IN A 10.3.0.1",
        ]
    );
    // SRV of an ExternalName is NODATA (CoreDNS drops the CNAME for SRV).
    assert_negative(
        &ask(&index, "foo.default.svc.cluster.local", rtype::SRV),
        ResponseCode::NoError,
    );
}

#[test]
fn spec_2_6_pod_records_per_mode() {
    let state = spec_state();
    let insecure = index_of(&state, PodsMode::Insecure, true);
    let m = ask(&insecure, "10-244-1-5.default.pod.cluster.local", rtype::A);
    assert_eq!(
        answers(&m),
        ["10-244-1-5.default.pod.cluster.local. 30 IN A 10.244.1.5"]
    );
    let m = ask(&insecure, "fd00--5.default.pod.cluster.local", rtype::AAAA);
    assert_eq!(
        answers(&m),
        ["fd00--5.default.pod.cluster.local. 30 IN AAAA fd00::5"]
    );
    assert_negative(
        &ask(
            &insecure,
            "10-244-1-5.default.pod.cluster.local",
            rtype::AAAA,
        ),
        ResponseCode::NoError,
    );
    // The namespace must exist; the label must spell an address.
    assert_negative(
        &ask(&insecure, "10-244-1-5.nowhere.pod.cluster.local", rtype::A),
        ResponseCode::NXDomain,
    );
    assert_negative(
        &ask(&insecure, "web.default.pod.cluster.local", rtype::A),
        ResponseCode::NXDomain,
    );
    let disabled = index_of(&state, PodsMode::Disabled, true);
    assert_negative(
        &ask(&disabled, "10-244-1-5.default.pod.cluster.local", rtype::A),
        ResponseCode::NXDomain,
    );
}

#[test]
fn nxdomain_and_nodata_follow_the_name_tree() {
    let index = spec_index();
    // Names that exist without records of the type: NODATA.
    for name in [
        "cluster.local",
        "svc.cluster.local",
        "pod.cluster.local",
        "default.svc.cluster.local",
        "empty.svc.cluster.local",
    ] {
        assert_negative(&ask(&index, name, rtype::A), ResponseCode::NoError);
    }
    for name in [
        "nope.default.svc.cluster.local",
        "default.cluster.local",
        "kubernetes.nowhere.svc.cluster.local",
        "nowhere.svc.cluster.local",
        "x.kubernetes.default.svc.cluster.local",
    ] {
        assert_negative(&ask(&index, name, rtype::A), ResponseCode::NXDomain);
    }
    // The apex answers SOA and NS.
    let m = ask(&index, "cluster.local", rtype::SOA);
    assert_eq!(answers(&m), [SOA]);
    let m = ask(&index, "cluster.local", rtype::NS);
    assert_eq!(
        answers(&m),
        ["cluster.local. 30 IN NS ns.dns.cluster.local."]
    );
    // The SOA owner keeps the question's case.
    let m = ask(&index, "NOPE.default.svc.CLUSTER.local", rtype::A);
    assert_eq!(m.authorities[0].name.to_string(), "CLUSTER.local.");
}

#[test]
fn before_the_first_sync_missing_names_are_servfail() {
    let index = index_of(&spec_state(), PodsMode::Insecure, false);
    let m = ask(&index, "nope.default.svc.cluster.local", rtype::A);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    // What is known already answers.
    let m = ask(&index, "kubernetes.default.svc.cluster.local", rtype::A);
    assert_eq!(m.answers.len(), 1);
}

#[test]
fn any_gets_the_rfc_8482_hinfo() {
    let index = spec_index();
    let m = ask(&index, "kubernetes.default.svc.cluster.local", rtype::ANY);
    assert_eq!(
        answers(&m),
        ["kubernetes.default.svc.cluster.local. 30 IN HINFO RFC8482 "]
    );
    assert_negative(
        &ask(&index, "nope.default.svc.cluster.local", rtype::ANY),
        ResponseCode::NXDomain,
    );
}

fn big_headless(n: u8) -> Index {
    let mut state = spec_state();
    state.services.extend([service(
        "default",
        "big",
        serde_json::json!({"clusterIP": "None"}),
    )]);
    let ips: Vec<String> = (1..=n).map(|i| format!("10.9.0.{i}")).collect();
    let eps: Vec<(&str, Option<&str>, bool)> =
        ips.iter().map(|ip| (ip.as_str(), None, true)).collect();
    state
        .slices
        .extend([slice("default", "big", serde_json::json!([]), &eps)]);
    index_of(&state, PodsMode::Insecure, true)
}

#[test]
fn large_answers_truncate_over_udp_and_fit_over_tcp() {
    let index = big_headless(100);
    let name = "big.default.svc.cluster.local";
    let udp = ask_with(&index, name, rtype::A, None, None).expect("answered");
    assert!(udp.metadata.truncation, "TC over UDP without EDNS");
    assert!(!udp.answers.is_empty() && udp.answers.len() < 100);
    let edns = ask_with(&index, name, rtype::A, Some((4096, 0, false)), None).expect("answered");
    assert!(edns.metadata.truncation);
    assert!(
        edns.answers.len() > udp.answers.len(),
        "EDNS0 makes room (1232 bytes)"
    );
    assert!(edns.edns.is_some(), "OPT echoed");
    let tcp = ask_with(&index, name, rtype::A, None, Some(65535)).expect("answered");
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 100);
}

#[test]
fn edns_version_and_do_bit() {
    let index = spec_index();
    let m = ask_with(
        &index,
        "kubernetes.default.svc.cluster.local",
        rtype::A,
        Some((1232, 1, false)),
        None,
    )
    .expect("answered");
    // 16 is BADVERS in an OPT context (hickory names it BADSIG, the TSIG
    // meaning of the same number).
    assert_eq!(u16::from(m.metadata.response_code), 16);
    assert!(m.edns.is_some(), "BADVERS comes with an OPT");
    let m = ask_with(
        &index,
        "kubernetes.default.svc.cluster.local",
        rtype::A,
        Some((1232, 0, true)),
        None,
    )
    .expect("answered");
    let opt = m.edns.expect("OPT echoed");
    assert!(opt.flags().dnssec_ok, "DO copied back");
    assert_eq!(opt.max_payload(), 1232);
}

#[test]
fn names_outside_the_zone_are_forwarded() {
    let index = spec_index();
    assert!(ask_with(&index, "www.example.com", rtype::A, None, None).is_none());
    assert!(ask_with(&index, "cluster.local.example.com", rtype::A, None, None).is_none());
    assert!(ask_with(&index, "notcluster.local", rtype::A, None, None).is_none());
}

#[test]
fn multi_address_answers_rotate() {
    let index = big_headless(3);
    let packet = query("big.default.svc.cluster.local", rtype::A, None);
    let q = wire::parse_query(&packet).expect("query");
    let mut firsts = std::collections::BTreeSet::new();
    for rotation in 0..3 {
        let mut out = Vec::new();
        answer(&index, &q, 512, rotation, &mut out);
        let m = Message::from_vec(&out).expect("decodes");
        assert_eq!(m.answers.len(), 3);
        firsts.insert(m.answers[0].to_string());
    }
    assert_eq!(firsts.len(), 3, "each endpoint comes first in turn");
}

/// Anything that parses as a query gets a reply hickory can decode; error
/// replies too. Nothing panics.
fn check_packet(index: &Index, packet: &[u8]) {
    let mut out = Vec::new();
    match wire::parse_query(packet) {
        Ok(q) => {
            let limit = q.udp_limit();
            if let Answered::Local { .. } = answer(index, &q, limit, 7, &mut out) {
                assert!(out.len() <= limit);
                Message::from_vec(&out).expect("hickory decodes our reply");
            }
        }
        Err(wire::ParseError::FormErr { id, flags })
        | Err(wire::ParseError::NotImp { id, flags }) => {
            wire::error_reply(&mut out, id, flags, 1);
            Message::from_vec(&out).expect("hickory decodes our error reply");
        }
        Err(wire::ParseError::Drop) => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn random_bytes_never_panic(packet in proptest::collection::vec(any::<u8>(), 0..600)) {
        check_packet(&spec_index_cached(), &packet);
    }

    #[test]
    fn mutated_queries_never_panic(
        which in 0usize..6,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
    ) {
        let names = [
            "kubernetes.default.svc.cluster.local",
            "_https._tcp.headless.default.svc.cluster.local",
            "1.0.3.10.in-addr.arpa",
            "10-244-1-5.default.pod.cluster.local",
            "foo.default.svc.cluster.local",
            "nope.default.svc.cluster.local",
        ];
        let mut packet = query(names[which], rtype::A, Some((1232, 0, true)));
        for (at, byte) in flips {
            let i = at % packet.len();
            packet[i] = byte;
        }
        let keep = packet.len() - cut % 8;
        packet.truncate(keep);
        check_packet(&spec_index_cached(), &packet);
    }
}

fn spec_index_cached() -> std::sync::Arc<Index> {
    static INDEX: std::sync::OnceLock<std::sync::Arc<Index>> = std::sync::OnceLock::new();
    INDEX
        .get_or_init(|| std::sync::Arc::new(spec_index()))
        .clone()
}

#[test]
fn compression_loops_and_oversized_names_are_formerr() {
    // A question whose name is a pointer to itself.
    let mut p = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1];
    assert!(matches!(
        wire::parse_query(&p),
        Err(wire::ParseError::FormErr { .. })
    ));
    // 300 bytes of labels.
    p.truncate(12);
    for _ in 0..5 {
        p.push(60);
        p.extend_from_slice(&[b'a'; 60]);
    }
    p.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert!(matches!(
        wire::parse_query(&p),
        Err(wire::ParseError::FormErr { .. })
    ));
    let _ = IpAddr::from([0, 0, 0, 0]);
}
