//! The rendered ruleset in a real kernel (root, a scratch network
//! namespace): a ClusterIP spreads connections over its endpoints, and a
//! ClusterIP without endpoints refuses at once.
#![allow(clippy::unwrap_used)]

mod scratch;

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

#[test]
fn cluster_ip_spreads_and_rejects_without_endpoints() {
    if !scratch::is_root() {
        return;
    }
    let eps: Vec<Ipv4Addr> = (2..=4).map(|l| Ipv4Addr::new(10, 244, 9, l)).collect();
    let mut ns = scratch::Scratch::new("cip", &eps);
    ns.serve(&eps, 8080);

    let service = |name: &str, ip: &str| -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"name": "http", "port": 80}]}
        }))
        .unwrap()
    };
    let web = service("web", "10.96.7.7");
    let empty = service("empty", "10.96.7.8");
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "web-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.244.9.2"], "conditions": {"ready": true}},
            {"addresses": ["10.244.9.3"], "conditions": {"ready": true}},
            {"addresses": ["10.244.9.4"], "conditions": {"ready": true}},
            {"addresses": ["10.244.9.9"], "conditions": {"ready": false}},
        ]
    }))
    .unwrap();
    let plan = ferry_proxy::model::plan(&[&web, &empty], &[&slice], "n1");
    let options = ferry_proxy::nftables::Options {
        node_ips: vec![Ipv4Addr::new(10, 244, 9, 2)],
        cluster_cidr: None,
        node_name: None,
    };
    let mut ids = ferry_proxy::nftables::Ids::default();
    let ruleset = ferry_proxy::nftables::render(&plan, &mut ids, &options);
    ns.apply(ruleset.clone());
    // Applying the same desired state again changes nothing.
    let mut conn = ferry_netlink::nftables::Connection::open_in_netns(ns.path()).unwrap();
    let live = ferry_netlink::nftables::Ruleset::list(&mut conn, &ruleset.table)
        .unwrap()
        .unwrap();
    assert!(
        ruleset.diff(Some(&live)).is_empty(),
        "a second sync is empty"
    );

    let (counts, refused) = ns.run(|| {
        let mut counts = std::collections::BTreeMap::<String, u32>::new();
        for _ in 0..300 {
            let who = scratch::who(SocketAddr::from(([10, 96, 7, 7], 80)), None).unwrap();
            *counts.entry(who).or_default() += 1;
        }
        let refused = TcpStream::connect_timeout(
            &SocketAddr::from(([10, 96, 7, 8], 80)),
            Duration::from_secs(2),
        )
        .expect_err("no endpoints");
        (counts, refused.kind())
    });
    assert_eq!(counts.len(), 3, "{counts:?}");
    for (who, n) in &counts {
        assert!(*n >= 45, "{who} got {n} of 300: {counts:?}");
    }
    assert!(
        !counts.contains_key("10.244.9.9"),
        "not-ready endpoint unused"
    );
    assert_eq!(refused, std::io::ErrorKind::ConnectionRefused);
}
