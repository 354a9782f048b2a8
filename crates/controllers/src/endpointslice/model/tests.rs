#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::endpointslice::pod::{ContainerPort, PodInfo};

fn service(v: serde_json::Value) -> Service {
    let mut svc: Service = serde_json::from_value(v).unwrap();
    svc.metadata.name.get_or_insert_with(|| "web".into());
    svc.metadata
        .namespace
        .get_or_insert_with(|| "default".into());
    svc.metadata.uid.get_or_insert_with(|| "svc-uid".into());
    svc
}

fn web() -> Service {
    service(json!({
        "metadata": {"labels": {"team": "a"}},
        "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.10",
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }))
}

fn pod(i: usize) -> PodInfo {
    PodInfo {
        namespace: "default".into(),
        name: format!("web-{i}"),
        uid: format!("uid-{i}"),
        labels: BTreeMap::from([("app".into(), "web".into())]),
        ips: vec![format!("10.244.{}.{}", i / 200, i % 200 + 2)],
        node_name: format!("node-{}", i % 3),
        ready: true,
        ..PodInfo::default()
    }
}

fn zones(node: &str) -> Option<Option<String>> {
    node.strip_prefix("node-")
        .map(|n| Some(format!("zone-{n}")))
}

fn desired_v4(svc: &Service, pods: &[PodInfo]) -> Desired {
    desired(svc, pods, &zones, "IPv4")
}

fn plan(svc: &Service, slices: &[Arc<EndpointSlice>], pods: &[PodInfo], max: usize) -> Plan {
    reconcile(svc, slices, vec![("IPv4", desired_v4(svc, pods))], max)
}

/// Applies a plan the way the API server would: names new slices and
/// bumps resourceVersions.
fn apply(slices: &mut Vec<Arc<EndpointSlice>>, plan: Plan, counter: &mut u64) {
    for gone in &plan.delete {
        slices.retain(|s| s.metadata.name != gone.metadata.name);
    }
    for mut slice in plan.update {
        assert!(slice.metadata.name.is_some(), "updates name their slice");
        let at = slices
            .iter()
            .position(|s| s.metadata.name == slice.metadata.name)
            .expect("updates target an existing slice");
        assert_eq!(
            slice.metadata.resource_version, slices[at].metadata.resource_version,
            "updates carry the resourceVersion they were computed from"
        );
        *counter += 1;
        slice.metadata.resource_version = Some(counter.to_string());
        slices[at] = Arc::new(slice);
    }
    for mut slice in plan.create {
        assert!(slice.metadata.name.is_none());
        *counter += 1;
        let prefix = slice.metadata.generate_name.take().unwrap();
        slice.metadata.name = Some(format!("{prefix}{counter}"));
        slice.metadata.resource_version = Some(counter.to_string());
        slices.push(Arc::new(slice));
    }
}

fn converge(svc: &Service, pods: &[PodInfo], max: usize) -> Vec<Arc<EndpointSlice>> {
    let mut slices = Vec::new();
    let mut counter = 0;
    let p = plan(svc, &slices, pods, max);
    apply(&mut slices, p, &mut counter);
    assert!(plan(svc, &slices, pods, max).is_empty());
    slices
}

fn all_endpoints(slices: &[Arc<EndpointSlice>]) -> Vec<&Endpoint> {
    slices.iter().flat_map(|s| s.endpoints.iter()).collect()
}

fn ips(slice: &EndpointSlice) -> Vec<&str> {
    let mut ips: Vec<&str> = slice
        .endpoints
        .iter()
        .map(|e| e.addresses[0].as_str())
        .collect();
    ips.sort();
    ips
}

fn conditions(e: &Endpoint) -> (bool, bool, bool) {
    let c = e.conditions.clone().unwrap();
    (c.ready.unwrap(), c.serving.unwrap(), c.terminating.unwrap())
}

#[test]
fn ready_pods_fill_one_slice() {
    let svc = web();
    let pods: Vec<PodInfo> = (0..3).map(pod).collect();
    let slices = converge(&svc, &pods, 100);
    assert_eq!(slices.len(), 1);
    let slice = &slices[0];
    assert_eq!(slice.address_type, "IPv4");
    assert_eq!(ips(slice), ["10.244.0.2", "10.244.0.3", "10.244.0.4"]);
    let ports = slice.ports.clone().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].name.as_deref(), Some("http"));
    assert_eq!(ports[0].port, Some(8080));
    assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
    let labels = slice.metadata.labels.clone().unwrap();
    assert_eq!(labels[LABEL_SERVICE_NAME], "web");
    assert_eq!(labels[LABEL_MANAGED_BY], CONTROLLER_NAME);
    assert_eq!(labels["team"], "a");
    assert!(!labels.contains_key(LABEL_HEADLESS));
    let owner = &slice.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("Service", "web", "svc-uid")
    );
    assert_eq!(owner.controller, Some(true));
    let e = slice
        .endpoints
        .iter()
        .find(|e| e.addresses == ["10.244.0.3"])
        .unwrap();
    assert_eq!(conditions(e), (true, true, false));
    assert_eq!(e.node_name.as_deref(), Some("node-1"));
    assert_eq!(e.zone.as_deref(), Some("zone-1"));
    let target = e.target_ref.clone().unwrap();
    assert_eq!(target.kind.as_deref(), Some("Pod"));
    assert_eq!(target.name.as_deref(), Some("web-1"));
    assert_eq!(target.namespace.as_deref(), Some("default"));
    assert_eq!(target.uid.as_deref(), Some("uid-1"));
    assert_eq!(e.hostname, None);
}

#[test]
fn conditions_follow_readiness_termination_and_publish_not_ready() {
    let mut pods: Vec<PodInfo> = (0..4).map(pod).collect();
    pods[1].ready = false;
    pods[2].terminating = true;
    pods[3].terminating = true;
    pods[3].ready = false;
    let by_name = |slices: &[Arc<EndpointSlice>]| -> BTreeMap<String, (bool, bool, bool)> {
        all_endpoints(slices)
            .into_iter()
            .map(|e| (e.target_ref.clone().unwrap().name.unwrap(), conditions(e)))
            .collect()
    };
    let got = by_name(&converge(&web(), &pods, 100));
    assert_eq!(got["web-0"], (true, true, false));
    assert_eq!(got["web-1"], (false, false, false));
    assert_eq!(got["web-2"], (false, true, true));
    assert_eq!(got["web-3"], (false, false, true));

    let mut publish = web();
    publish.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    let got = by_name(&converge(&publish, &pods, 100));
    assert_eq!(got["web-1"], (true, false, false));
    assert_eq!(got["web-3"], (true, false, true));
}

#[test]
fn pods_without_ip_terminal_or_unselected_are_left_out() {
    let mut pods: Vec<PodInfo> = (0..4).map(pod).collect();
    pods[0].ips.clear();
    pods[1].terminal = true;
    pods[2].labels.insert("app".into(), "other".into());
    pods[3].namespace = "elsewhere".into();
    let slices = converge(&web(), &pods, 100);
    assert_eq!(slices.len(), 1, "only the placeholder");
    assert!(slices[0].endpoints.is_empty());
    assert!(slices[0].ports.is_none());
}

#[test]
fn unknown_nodes_hold_pods_back_unless_not_ready_addresses_are_published() {
    let mut pods: Vec<PodInfo> = (0..2).map(pod).collect();
    pods[1].node_name = "gone".into();
    let slices = converge(&web(), &pods, 100);
    assert_eq!(all_endpoints(&slices).len(), 1);
    let mut publish = web();
    publish.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    let slices = converge(&publish, &pods, 100);
    let endpoints = all_endpoints(&slices);
    assert_eq!(endpoints.len(), 2);
    let held = endpoints
        .iter()
        .find(|e| e.node_name.as_deref() == Some("gone"))
        .unwrap();
    assert_eq!(held.zone, None);
}

#[test]
fn named_target_ports_resolve_per_pod_and_split_slices() {
    let svc = service(json!({
        "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.10", "ports": [
            {"name": "http", "port": 80, "targetPort": "web", "appProtocol": "http"},
            {"name": "metrics", "port": 9100, "targetPort": "metrics"}
        ]}
    }));
    let with_ports = |i: usize, web: i32, metrics: Option<i32>| {
        let mut p = pod(i);
        p.ports.push(ContainerPort {
            name: "web".into(),
            port: web,
            protocol: "TCP".into(),
        });
        if let Some(m) = metrics {
            p.ports.push(ContainerPort {
                name: "metrics".into(),
                port: m,
                protocol: "TCP".into(),
            });
        }
        p
    };
    let pods = vec![
        with_ports(0, 8080, Some(9100)),
        with_ports(1, 8080, Some(9100)),
        with_ports(2, 8081, Some(9100)),
        with_ports(3, 8080, None),
    ];
    let slices = converge(&svc, &pods, 100);
    assert_eq!(slices.len(), 3);
    let mut layout: Vec<(PortKey, Vec<&str>)> = slices
        .iter()
        .map(|s| (port_key(s.ports.as_deref()), ips(s)))
        .collect();
    layout.sort();
    let http = |port| {
        (
            "http".to_string(),
            port,
            "TCP".to_string(),
            Some("http".to_string()),
        )
    };
    let metrics = ("metrics".to_string(), 9100, "TCP".to_string(), None);
    assert_eq!(
        layout,
        vec![
            (vec![http(8080)], vec!["10.244.0.5"]),
            (
                vec![http(8080), metrics.clone()],
                vec!["10.244.0.2", "10.244.0.3"]
            ),
            (vec![http(8081), metrics], vec!["10.244.0.4"]),
        ]
    );
    // Ports keep the Service's order.
    let two = slices
        .iter()
        .find(|s| s.ports.as_ref().unwrap().len() == 2)
        .unwrap();
    let names: Vec<_> = two
        .ports
        .iter()
        .flatten()
        .map(|p| p.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["http", "metrics"]);
}

#[test]
fn headless_services_get_hostnames_and_the_headless_label() {
    let svc = service(json!({
        "metadata": {"name": "db"},
        "spec": {"selector": {"app": "web"}, "clusterIP": "None"}
    }));
    let mut pods: Vec<PodInfo> = (0..2).map(pod).collect();
    pods[0].hostname = "db-0".into();
    pods[0].subdomain = "db".into();
    pods[1].hostname = "db-1".into();
    pods[1].subdomain = "other".into();
    let slices = converge(&svc, &pods, 100);
    assert_eq!(slices.len(), 1);
    assert!(
        slices[0].ports.is_none(),
        "a headless Service may have no ports"
    );
    assert_eq!(
        slices[0].metadata.labels.as_ref().unwrap()[LABEL_HEADLESS],
        ""
    );
    let hostnames: BTreeMap<String, Option<String>> = slices[0]
        .endpoints
        .iter()
        .map(|e| {
            (
                e.target_ref.clone().unwrap().name.unwrap(),
                e.hostname.clone(),
            )
        })
        .collect();
    assert_eq!(hostnames["web-0"].as_deref(), Some("db-0"));
    assert_eq!(hostnames["web-1"], None);
}

#[test]
fn slices_hold_at_most_max_endpoints() {
    let pods: Vec<PodInfo> = (0..250).map(pod).collect();
    let slices = converge(&web(), &pods, 100);
    let mut sizes: Vec<usize> = slices.iter().map(|s| s.endpoints.len()).collect();
    sizes.sort();
    assert_eq!(sizes, [50, 100, 100]);
}

#[test]
fn a_readiness_flip_updates_one_slice_in_place() {
    let svc = web();
    let mut pods: Vec<PodInfo> = (0..250).map(pod).collect();
    let mut slices = converge(&svc, &pods, 100);
    let names: BTreeSet<_> = slices.iter().map(|s| s.metadata.name.clone()).collect();
    pods[17].ready = false;
    let p = plan(&svc, &slices, &pods, 100);
    assert!(p.create.is_empty() && p.delete.is_empty());
    assert_eq!(p.update.len(), 1);
    let mut counter = 100;
    apply(&mut slices, p, &mut counter);
    let after: BTreeSet<_> = slices.iter().map(|s| s.metadata.name.clone()).collect();
    assert_eq!(names, after, "no slice was recreated");
    assert!(plan(&svc, &slices, &pods, 100).is_empty());
}

#[test]
fn scaling_down_and_up_reuses_slices() {
    let svc = web();
    let pods: Vec<PodInfo> = (0..3).map(pod).collect();
    let mut slices = converge(&svc, &pods, 100);
    let name = slices[0].metadata.name.clone();
    let mut counter = 10;

    // Down to two: one update.
    let p = plan(&svc, &slices, &pods[..2], 100);
    assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
    apply(&mut slices, p, &mut counter);
    assert_eq!(ips(&slices[0]), ["10.244.0.2", "10.244.0.3"]);

    // Down to none: the slice turns into the placeholder.
    let p = plan(&svc, &slices, &[], 100);
    assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
    apply(&mut slices, p, &mut counter);
    assert!(slices[0].endpoints.is_empty() && slices[0].ports.is_none());
    assert!(plan(&svc, &slices, &[], 100).is_empty());

    // Up again: the placeholder is reused.
    let p = plan(&svc, &slices, &pods, 100);
    assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
    apply(&mut slices, p, &mut counter);
    assert_eq!(slices.len(), 1);
    assert_eq!(slices[0].metadata.name, name);
    assert_eq!(ips(&slices[0]).len(), 3);
}

#[test]
fn label_changes_rewrite_labels_only() {
    let mut svc = web();
    let pods: Vec<PodInfo> = (0..3).map(pod).collect();
    let slices = converge(&svc, &pods, 100);
    svc.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("team".into(), "b".into());
    let p = plan(&svc, &slices, &pods, 100);
    assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
    assert_eq!(p.update[0].metadata.labels.as_ref().unwrap()["team"], "b");
    assert_eq!(p.update[0].endpoints, slices[0].endpoints);
}

#[test]
fn foreign_and_stale_slices_are_deleted() {
    let svc = web();
    let pods: Vec<PodInfo> = (0..2).map(pod).collect();
    let mut slices = converge(&svc, &pods, 100);
    // A slice of an earlier Service with the same name, and one of an
    // address type the Service does not serve.
    let mut old = (*slices[0]).clone();
    old.metadata.name = Some("web-old".into());
    old.metadata.owner_references.as_mut().unwrap()[0].uid = "previous".into();
    let mut v6 = (*slices[0]).clone();
    v6.metadata.name = Some("web-v6".into());
    v6.address_type = "IPv6".into();
    slices.push(Arc::new(old));
    slices.push(Arc::new(v6));
    let p = plan(&svc, &slices, &pods, 100);
    let deleted: BTreeSet<_> = p
        .delete
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(deleted, BTreeSet::from(["web-old".into(), "web-v6".into()]));
    assert!(p.create.is_empty() && p.update.is_empty());
}

#[test]
fn duplicated_endpoints_are_dropped() {
    let svc = web();
    let pods: Vec<PodInfo> = (0..2).map(pod).collect();
    let mut slices = converge(&svc, &pods, 100);
    let mut copy = (*slices[0]).clone();
    copy.metadata.name = Some("web-copy".into());
    slices.push(Arc::new(copy));
    let mut counter = 50;
    let p = plan(&svc, &slices, &pods, 100);
    apply(&mut slices, p, &mut counter);
    assert_eq!(all_endpoints(&slices).len(), 2);
    assert!(plan(&svc, &slices, &pods, 100).is_empty());
}

#[test]
fn a_deleting_service_gets_no_new_slices() {
    let mut svc = web();
    svc.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-01-01T00:00:00Z".parse().unwrap(),
    ));
    let pods: Vec<PodInfo> = (0..2).map(pod).collect();
    assert!(plan(&svc, &[], &pods, 100).is_empty());
}

#[test]
fn ipv6_pods_fill_ipv6_slices() {
    let svc = service(json!({
        "spec": {"selector": {"app": "web"}, "clusterIP": "fd00::10", "ipFamilies": ["IPv6"],
                 "ports": [{"port": 80}]}
    }));
    let mut p = pod(0);
    p.ips = vec!["10.244.0.2".into(), "fd00::2".into()];
    let d = desired(&svc, [&p], &zones, "IPv6");
    let p = reconcile(&svc, &[], vec![("IPv6", d)], 100);
    assert_eq!(p.create.len(), 1);
    assert_eq!(p.create[0].address_type, "IPv6");
    assert_eq!(p.create[0].endpoints[0].addresses, ["fd00::2"]);
}

// Properties: whatever the Pods and however they change, one round of
// writes reaches the desired endpoints exactly, slices respect the limit,
// a second round writes nothing, and a single readiness flip in steady
// state rewrites exactly one slice.

#[derive(Debug, Clone)]
struct PodSpec {
    web_port: i32,
    has_metrics: bool,
    ready: bool,
    terminating: bool,
    has_ip: bool,
}

fn pod_spec() -> impl Strategy<Value = PodSpec> {
    (
        prop_oneof![Just(8080), Just(8081)],
        any::<bool>(),
        any::<bool>(),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.9),
    )
        .prop_map(
            |(web_port, has_metrics, ready, terminating, has_ip)| PodSpec {
                web_port,
                has_metrics,
                ready,
                terminating,
                has_ip,
            },
        )
}

fn build(specs: &[(usize, PodSpec)]) -> Vec<PodInfo> {
    specs
        .iter()
        .map(|(i, s)| {
            let mut p = pod(*i);
            p.ready = s.ready;
            p.terminating = s.terminating;
            if !s.has_ip {
                p.ips.clear();
            }
            p.ports.push(ContainerPort {
                name: "web".into(),
                port: s.web_port,
                protocol: "TCP".into(),
            });
            if s.has_metrics {
                p.ports.push(ContainerPort {
                    name: "metrics".into(),
                    port: 9100,
                    protocol: "TCP".into(),
                });
            }
            p
        })
        .collect()
}

fn named_ports_service() -> Service {
    service(json!({
        "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.10", "ports": [
            {"name": "http", "port": 80, "targetPort": "web"},
            {"name": "metrics", "port": 9100, "targetPort": "metrics"}
        ]}
    }))
}

fn check_matches_desired(
    svc: &Service,
    slices: &[Arc<EndpointSlice>],
    pods: &[PodInfo],
    max: usize,
) {
    let desired = desired_v4(svc, pods);
    let mut want: BTreeMap<(PortKey, EndpointKey), Endpoint> = BTreeMap::new();
    for (key, group) in &desired {
        for (ek, e) in &group.endpoints {
            want.insert((key.clone(), ek.clone()), e.clone());
        }
    }
    let mut got: BTreeMap<(PortKey, EndpointKey), Endpoint> = BTreeMap::new();
    for slice in slices {
        assert!(slice.endpoints.len() <= max, "slice over the limit");
        let key = port_key(slice.ports.as_deref());
        for e in &slice.endpoints {
            let previous = got.insert((key.clone(), endpoint_key(e)), e.clone());
            assert!(previous.is_none(), "endpoint listed twice");
        }
    }
    assert_eq!(got, want);
    if want.is_empty() {
        assert_eq!(slices.len(), 1, "exactly one placeholder");
    } else {
        assert!(
            slices.iter().all(|s| !s.endpoints.is_empty()),
            "no empty slices"
        );
    }
}

proptest! {
    #[test]
    fn converges_in_one_round_and_stays_put(
        before in prop::collection::btree_map(0usize..60, pod_spec(), 0..40),
        after in prop::collection::btree_map(0usize..60, pod_spec(), 0..40),
        max in 1usize..12,
    ) {
        let svc = named_ports_service();
        let before = build(&before.into_iter().collect::<Vec<_>>());
        let after = build(&after.into_iter().collect::<Vec<_>>());
        let mut slices = Vec::new();
        let mut counter = 0;
        for pods in [&before, &after] {
            let p = plan(&svc, &slices, pods, max);
            apply(&mut slices, p, &mut counter);
            check_matches_desired(&svc, &slices, pods, max);
            prop_assert!(plan(&svc, &slices, pods, max).is_empty());
        }
    }

    #[test]
    fn one_readiness_flip_rewrites_one_slice(
        specs in prop::collection::btree_map(0usize..60, pod_spec(), 1..40),
        pick in any::<prop::sample::Index>(),
        max in 1usize..12,
    ) {
        let svc = named_ports_service();
        let mut pods = build(&specs.into_iter().collect::<Vec<_>>());
        let mut slices = Vec::new();
        let mut counter = 0;
        let p = plan(&svc, &slices, &pods, max);
        apply(&mut slices, p, &mut counter);
        let i = pick.index(pods.len());
        let listed = pods[i].in_endpoints(true);
        pods[i].ready = !pods[i].ready;
        let p = plan(&svc, &slices, &pods, max);
        if listed {
            prop_assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
        } else {
            prop_assert!(p.is_empty());
        }
        apply(&mut slices, p, &mut counter);
        check_matches_desired(&svc, &slices, &pods, max);
    }
}
