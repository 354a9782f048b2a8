#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{EndpointSubset, Endpoints, Service};
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
        ips: vec![format!(
            "10.{}.{}.{}",
            i / 40000,
            (i / 200) % 200,
            i % 200 + 2
        )],
        node_name: "node-1".into(),
        ready: true,
        ..PodInfo::default()
    }
}

fn ips(list: &Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>) -> Vec<String> {
    list.iter().flatten().map(|a| a.ip.clone()).collect()
}

fn ports(s: &EndpointSubset) -> Vec<(String, i32)> {
    s.ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap_or_default(), p.port))
        .collect()
}

#[test]
fn ready_pods_become_addresses() {
    let pods: Vec<PodInfo> = (0..3).map(pod).collect();
    let got = subsets(&web(), &pods);
    assert_eq!(got.len(), 1);
    assert_eq!(ips(&got[0].addresses), ["10.0.0.2", "10.0.0.3", "10.0.0.4"]);
    assert_eq!(got[0].not_ready_addresses, None);
    assert_eq!(ports(&got[0]), [("http".to_string(), 8080)]);
    assert_eq!(
        got[0].ports.as_ref().unwrap()[0].protocol.as_deref(),
        Some("TCP")
    );
    let a = &got[0].addresses.as_ref().unwrap()[1];
    assert_eq!(a.node_name.as_deref(), Some("node-1"));
    let target = a.target_ref.clone().unwrap();
    assert_eq!(
        (
            target.kind.unwrap(),
            target.name.unwrap(),
            target.uid.unwrap()
        ),
        ("Pod".into(), "web-1".into(), "uid-1".into())
    );
}

#[test]
fn unready_pods_are_not_ready_addresses_and_terminating_ones_leave() {
    let mut pods: Vec<PodInfo> = (0..4).map(pod).collect();
    pods[1].ready = false;
    pods[2].terminating = true;
    pods[3].ips.clear();
    let got = subsets(&web(), &pods);
    assert_eq!(got.len(), 1);
    assert_eq!(ips(&got[0].addresses), ["10.0.0.2"]);
    assert_eq!(ips(&got[0].not_ready_addresses), ["10.0.0.3"]);

    let mut publish = web();
    publish.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    let got = subsets(&publish, &pods);
    assert_eq!(ips(&got[0].addresses), ["10.0.0.2", "10.0.0.3", "10.0.0.4"]);
    assert_eq!(got[0].not_ready_addresses, None);
}

#[test]
fn named_ports_and_multiple_ports_repack_by_address_set() {
    let svc = service(json!({
        "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.10", "ports": [
            {"name": "http", "port": 80, "targetPort": "web"},
            {"name": "metrics", "port": 9100, "targetPort": "metrics"}
        ]}
    }));
    let with = |i, web: i32, metrics: bool| {
        let mut p = pod(i);
        p.ports.push(ContainerPort {
            name: "web".into(),
            port: web,
            protocol: "TCP".into(),
        });
        if metrics {
            p.ports.push(ContainerPort {
                name: "metrics".into(),
                port: 9100,
                protocol: "TCP".into(),
            });
        }
        p
    };
    let pods = [
        with(0, 8080, true),
        with(1, 8081, true),
        with(2, 8080, false),
    ];
    type Layout = BTreeSet<(Vec<String>, Vec<(String, i32)>)>;
    let got: Layout = subsets(&svc, &pods)
        .iter()
        .map(|s| (ips(&s.addresses), ports(s)))
        .collect();
    let want: Layout = [
        (
            vec!["10.0.0.2".to_string(), "10.0.0.4".to_string()],
            vec![("http".to_string(), 8080)],
        ),
        (
            vec!["10.0.0.3".to_string()],
            vec![("http".to_string(), 8081)],
        ),
        (
            vec!["10.0.0.2".to_string(), "10.0.0.3".to_string()],
            vec![("metrics".to_string(), 9100)],
        ),
    ]
    .into();
    assert_eq!(got, want);

    // Two pods with the same two ports share one subset with both ports.
    let pods = [with(0, 8080, true), with(1, 8080, true)];
    let got = subsets(&svc, &pods);
    assert_eq!(got.len(), 1);
    assert_eq!(
        ports(&got[0]),
        [("http".to_string(), 8080), ("metrics".to_string(), 9100)]
    );
}

#[test]
fn headless_services_without_ports_and_hostnames() {
    let svc = service(json!({
        "metadata": {"name": "db"},
        "spec": {"selector": {"app": "web"}, "clusterIP": "None"}
    }));
    let mut pods: Vec<PodInfo> = (0..2).map(pod).collect();
    pods[0].hostname = "db-0".into();
    pods[0].subdomain = "db".into();
    let got = subsets(&svc, &pods);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].ports, None);
    let hostnames: Vec<Option<String>> = got[0]
        .addresses
        .iter()
        .flatten()
        .map(|a| a.hostname.clone())
        .collect();
    assert_eq!(hostnames, [Some("db-0".to_string()), None]);
    let ep = reconcile(&svc, &pods, None).unwrap();
    assert_eq!(ep.metadata.labels.as_ref().unwrap()[LABEL_HEADLESS], "");
}

#[test]
fn over_capacity_keeps_ready_addresses_first() {
    let svc = web();
    let pods: Vec<PodInfo> = (0..1200).map(pod).collect();
    let ep = reconcile(&svc, &pods, None).unwrap();
    let subsets = ep.subsets.clone().unwrap();
    assert_eq!(ips(&subsets[0].addresses).len(), MAX_CAPACITY);
    assert_eq!(
        ep.metadata.annotations.as_ref().unwrap()[ANNOTATION_OVER_CAPACITY],
        TRUNCATED
    );
    // Applying the same again writes nothing.
    assert!(reconcile(&svc, &pods, Some(&ep)).is_none());

    let mut pods: Vec<PodInfo> = (0..1200).map(pod).collect();
    for p in &mut pods[900..] {
        p.ready = false;
    }
    let ep = reconcile(&svc, &pods, Some(&ep)).unwrap();
    let subsets = ep.subsets.clone().unwrap();
    assert_eq!(ips(&subsets[0].addresses).len(), 900);
    assert_eq!(ips(&subsets[0].not_ready_addresses).len(), 100);

    // Back under the limit, the annotation goes.
    let ep = reconcile(&svc, &pods[..10], Some(&ep)).unwrap();
    assert!(
        ep.metadata
            .annotations
            .as_ref()
            .is_none_or(|a| !a.contains_key(ANNOTATION_OVER_CAPACITY))
    );
}

#[test]
fn truncation_is_proportional_across_subsets() {
    let addresses = |n: usize, from: usize| {
        Some(
            (from..from + n)
                .map(|i| k8s_openapi::api::core::v1::EndpointAddress {
                    ip: format!("10.0.{}.{}", i / 250, i % 250),
                    ..Default::default()
                })
                .collect(),
        )
    };
    let mut subsets = vec![
        EndpointSubset {
            addresses: addresses(900, 0),
            ..Default::default()
        },
        EndpointSubset {
            addresses: addresses(300, 900),
            not_ready_addresses: addresses(10, 1200),
            ..Default::default()
        },
    ];
    assert!(truncate(&mut subsets));
    assert_eq!(ips(&subsets[0].addresses).len(), 750);
    assert_eq!(ips(&subsets[1].addresses).len(), 250);
    assert_eq!(subsets[1].not_ready_addresses, None);
}

#[test]
fn updates_keep_metadata_and_only_happen_on_change() {
    let mut svc = web();
    let pods: Vec<PodInfo> = (0..3).map(pod).collect();
    let mut ep = reconcile(&svc, &pods, None).unwrap();
    assert_eq!(ep.metadata.name.as_deref(), Some("web"));
    assert_eq!(ep.metadata.namespace.as_deref(), Some("default"));
    let labels = ep.metadata.labels.clone().unwrap();
    assert_eq!(labels["team"], "a");
    assert_eq!(labels[LABEL_MANAGED_BY], CONTROLLER_NAME);
    assert!(!labels.contains_key(LABEL_HEADLESS));
    assert!(is_managed(&ep));
    ep.metadata.resource_version = Some("7".into());
    // The server fills in defaults and adds resourceVersions to targets.
    for a in ep.subsets.as_mut().unwrap()[0].addresses.as_mut().unwrap() {
        a.target_ref.as_mut().unwrap().resource_version = Some("3".into());
    }
    assert!(reconcile(&svc, &pods, Some(&ep)).is_none());
    assert!(!is_managed(&Endpoints::default()));

    svc.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("team".into(), "b".into());
    let updated = reconcile(&svc, &pods, Some(&ep)).unwrap();
    assert_eq!(updated.metadata.resource_version.as_deref(), Some("7"));
    assert_eq!(updated.metadata.labels.unwrap()["team"], "b");
}

proptest! {
    /// Whatever the Pods, every eligible Pod appears exactly once per
    /// resolved port (ready or not, as its readiness says), nothing else
    /// does, and a second reconcile writes nothing.
    #[test]
    fn every_eligible_pod_is_listed_once(
        specs in prop::collection::vec((any::<bool>(), any::<bool>(), prop::bool::weighted(0.2),
                                        prop::bool::weighted(0.8), 0..3i32), 0..30),
        publish in any::<bool>(),
    ) {
        let mut svc = service(json!({
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.10", "ports": [
                {"name": "http", "port": 80, "targetPort": "web"},
                {"name": "admin", "port": 81, "targetPort": 9000}
            ]}
        }));
        svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(publish);
        let pods: Vec<PodInfo> = specs
            .iter()
            .enumerate()
            .map(|(i, (selected, ready, terminating, has_ip, web))| {
                let mut p = pod(i);
                if !selected {
                    p.labels.insert("app".into(), "other".into());
                }
                p.ready = *ready;
                p.terminating = *terminating;
                if !has_ip {
                    p.ips.clear();
                }
                if *web > 0 {
                    p.ports.push(ContainerPort { name: "web".into(), port: 8000 + web, protocol: "TCP".into() });
                }
                p
            })
            .collect();
        let got = subsets(&svc, &pods);
        let mut seen: BTreeMap<(String, String), bool> = BTreeMap::new();
        for s in &got {
            for p in s.ports.iter().flatten() {
                for (list, ready) in [(&s.addresses, true), (&s.not_ready_addresses, false)] {
                    for a in list.iter().flatten() {
                        let name = p.name.clone().unwrap_or_default();
                        prop_assert!(seen.insert((a.ip.clone(), name), ready).is_none());
                    }
                }
            }
        }
        let mut want = BTreeMap::new();
        for p in &pods {
            if !pod::selects(&svc, p) || !p.in_endpoints(publish) {
                continue;
            }
            let ready = publish || p.ready;
            want.insert((p.ips[0].clone(), "admin".to_string()), ready);
            if !p.ports.is_empty() {
                want.insert((p.ips[0].clone(), "http".to_string()), ready);
            }
        }
        prop_assert_eq!(seen, want);
        let ep = reconcile(&svc, &pods, None).unwrap();
        prop_assert!(reconcile(&svc, &pods, Some(&ep)).is_none());
    }
}
