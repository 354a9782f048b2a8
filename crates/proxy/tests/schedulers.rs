//! Schedulers and session affinity in a real kernel (root, a scratch
//! network namespace): `rr` walks the endpoints in order, `wrr` follows
//! the weights, `sh` keeps a client address on one endpoint, and
//! `sessionAffinity: ClientIP` pins a client until its timeout passes.
#![allow(clippy::unwrap_used)]

mod scratch;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use ferry_proxy::model::{SCHEDULER_ANNOTATION, WEIGHTS_ANNOTATION, plan};
use ferry_proxy::nftables::{Ids, Options, render};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

fn service(
    name: &str,
    ip: &str,
    annotations: serde_json::Value,
    extra: serde_json::Value,
) -> Service {
    let mut spec =
        json!({"clusterIP": ip, "clusterIPs": [ip], "ports": [{"name": "http", "port": 80}]});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": spec,
    }))
    .unwrap()
}

fn slice(name: &str, eps: &[(&str, &str)]) -> EndpointSlice {
    let endpoints: Vec<_> = eps
        .iter()
        .map(|(ip, pod)| {
            json!({"addresses": [ip], "conditions": {"ready": true},
                                "targetRef": {"kind": "Pod", "name": pod}})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default",
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .unwrap()
}

#[test]
fn schedulers_and_affinity() {
    if !scratch::is_root() {
        return;
    }
    let eps: Vec<Ipv4Addr> = (2..=4).map(|l| Ipv4Addr::new(10, 244, 9, l)).collect();
    let clients: Vec<Ipv4Addr> = (20..=23).map(|l| Ipv4Addr::new(10, 244, 8, l)).collect();
    let mut all = eps.clone();
    all.extend(&clients);
    let mut ns = scratch::Scratch::new("sched", &all);
    ns.serve(&eps, 8080);

    let three = [
        ("10.244.9.2", "a"),
        ("10.244.9.3", "b"),
        ("10.244.9.4", "c"),
    ];
    let rr = service(
        "rr",
        "10.96.7.1",
        json!({SCHEDULER_ANNOTATION: "rr"}),
        json!({}),
    );
    let wrr = service(
        "wrr",
        "10.96.7.2",
        json!({SCHEDULER_ANNOTATION: "wrr", WEIGHTS_ANNOTATION: "a=4,b=1,10.244.9.4=1"}),
        json!({}),
    );
    let sh = service(
        "sh",
        "10.96.7.3",
        json!({SCHEDULER_ANNOTATION: "sh"}),
        json!({}),
    );
    let sticky = service(
        "sticky",
        "10.96.7.4",
        json!({}),
        json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 2}}}),
    );
    let slices: Vec<EndpointSlice> = ["rr", "wrr", "sh", "sticky"]
        .iter()
        .map(|n| slice(n, &three))
        .collect();
    let slice_refs: Vec<&EndpointSlice> = slices.iter().collect();
    let p = plan(&[&rr, &wrr, &sh, &sticky], &slice_refs, "n1");
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    let mut ids = Ids::default();
    ns.apply(render(&p, &mut ids, &Options::default()));

    let to = |last: u8| SocketAddr::from(([10, 96, 7, last], 80));
    // rr: a, b, c, a, b, c ... (whatever the start).
    let seq: Vec<String> = ns.run(|| (0..9).map(|_| scratch::who(to(1), None).unwrap()).collect());
    for w in seq.windows(4) {
        assert_eq!(w[0], w[3], "round robin repeats every 3: {seq:?}");
        assert_ne!(w[0], w[1], "{seq:?}");
    }
    // wrr 4:1:1 over 60 connections (one full bucket cycle).
    let counts: BTreeMap<String, usize> = ns.run(|| {
        let mut m = BTreeMap::new();
        for _ in 0..60 {
            *m.entry(scratch::who(to(2), None).unwrap()).or_insert(0) += 1;
        }
        m
    });
    assert_eq!(counts["10.244.9.2"], 40, "{counts:?}");
    assert_eq!(counts["10.244.9.3"], 10, "{counts:?}");
    assert_eq!(counts["10.244.9.4"], 10, "{counts:?}");
    // sh: each client address always lands on the same endpoint.
    let by_client: Vec<Vec<String>> = ns.run(|| {
        clients
            .iter()
            .map(|c| {
                (0..5)
                    .map(|_| scratch::who(to(3), Some(*c)).unwrap())
                    .collect()
            })
            .collect()
    });
    for seen in &by_client {
        assert!(seen.iter().all(|s| s == &seen[0]), "{by_client:?}");
    }
    // ClientIP affinity: pinned while used; the entry expires after 2 s idle.
    let pinned: Vec<String> = ns.run(|| {
        (0..20)
            .map(|_| scratch::who(to(4), Some(clients[0])).unwrap())
            .collect()
    });
    assert!(pinned.iter().all(|s| s == &pinned[0]), "{pinned:?}");
    let live = || {
        let mut conn = ferry_netlink::nftables::Connection::open_in_netns(ns.path()).unwrap();
        let table = ferry_netlink::nftables::Table::new(
            ferry_netlink::nftables::Family::Ip,
            ferry_proxy::nftables::TABLE,
        );
        ferry_netlink::nftables::Ruleset::list(&mut conn, &table)
            .unwrap()
            .unwrap()
    };
    let affinity_entries = |r: &ferry_netlink::nftables::Ruleset| -> usize {
        r.sets
            .iter()
            .filter(|s| s.set.name.starts_with("affinity-") && s.set.name != "affinity-endpoints")
            .map(|s| s.elements.len())
            .sum()
    };
    assert_eq!(affinity_entries(&live()), 1);
    // A resync with the same plan keeps the live affinity entries.
    let again = render(&p, &mut ids, &Options::default());
    assert!(again.diff(Some(&live())).is_empty(), "nothing to change");
    std::thread::sleep(Duration::from_millis(2600));
    assert_eq!(affinity_entries(&live()), 0, "expired after timeoutSeconds");
}
