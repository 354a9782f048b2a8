//! Partial syncs in a real kernel (root, a scratch network namespace):
//! applying per-Service updates to a loaded table must leave exactly the
//! table a full render of the new state describes, for every kind of
//! change (endpoints, policies, schedulers, affinity, new and deleted
//! Services, shared endpoint addresses and endpoint counts).
#![allow(clippy::unwrap_used)]

mod scratch;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ferry_netlink::nftables::{Batch, Connection, Family, Ruleset, Table};
use ferry_proxy::model::{Cidr, SCHEDULER_ANNOTATION, plan};
use ferry_proxy::nftables::{Ids, Options, TABLE, Tables, render};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

type World = BTreeMap<String, (Service, EndpointSlice)>;

fn object(
    name: &str,
    i: u8,
    spec: serde_json::Value,
    eps: &[(&str, &str)],
) -> (Service, EndpointSlice) {
    let mut s = json!({"clusterIP": format!("10.96.3.{i}"), "clusterIPs": [format!("10.96.3.{i}")],
                       "ports": [{"name": "http", "port": 80, "nodePort": 30000 + u16::from(i)}],
                       "type": "NodePort"});
    for (k, v) in spec.as_object().unwrap() {
        s[k] = v.clone();
    }
    let annotations = s
        .as_object_mut()
        .unwrap()
        .remove("annotations")
        .unwrap_or(json!({}));
    let svc = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": s,
    }))
    .unwrap();
    let endpoints: Vec<_> = eps
        .iter()
        .map(|(ip, node)| json!({"addresses": [ip], "nodeName": node, "conditions": {"ready": true}}))
        .collect();
    let slice = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default",
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .unwrap();
    (svc, slice)
}

fn whole_plan(world: &World) -> ferry_proxy::model::Plan {
    let svcs: Vec<&Service> = world.values().map(|(s, _)| s).collect();
    let slices: Vec<&EndpointSlice> = world.values().map(|(_, e)| e).collect();
    plan(&svcs, &slices, "n1")
}

fn live(path: &str) -> Ruleset {
    let mut conn = Connection::open_in_netns(path).unwrap();
    Ruleset::list(&mut conn, &Table::new(Family::Ip, TABLE))
        .unwrap()
        .unwrap()
}

#[test]
fn partial_updates_match_a_full_render() {
    if !scratch::is_root() {
        return;
    }
    let ns = scratch::Scratch::new("incr", &[Ipv4Addr::new(172, 30, 0, 11)]);
    let options = Options {
        node_ips: vec![Ipv4Addr::new(172, 30, 0, 11)],
        cluster_cidr: Cidr::parse("10.244.0.0/16"),
        node_name: Some("n1".into()),
    };
    let mut world = World::new();
    for i in 1..=12u8 {
        let name = format!("s{i:02}");
        let eps = [("10.244.1.5", "n1"), ("10.244.2.5", "n2")];
        world.insert(
            name.clone(),
            object(&name, i, json!({}), &eps[..(1 + usize::from(i % 2))]),
        );
    }
    let mut ids = Ids::default();
    let (ruleset, mut tables) = Tables::build(&whole_plan(&world), &mut ids, &options);
    Connection::open_in_netns(ns.path())
        .unwrap()
        .apply(&ruleset.diff(None))
        .unwrap();

    // One change per step, each applied as its own partial batch.
    let changes: Vec<(&str, Option<(Service, EndpointSlice)>)> = vec![
        (
            "s01",
            Some(object(
                "s01",
                1,
                json!({}),
                &[
                    ("10.244.1.9", "n1"),
                    ("10.244.2.9", "n2"),
                    ("10.244.3.9", "n3"),
                ],
            )),
        ),
        ("s02", None),
        (
            "s13",
            Some(object(
                "s13",
                13,
                json!({"sessionAffinity": "ClientIP"}),
                &[("10.244.1.5", "n1")],
            )),
        ),
        (
            "s03",
            Some(object(
                "s03",
                3,
                json!({"annotations": {SCHEDULER_ANNOTATION: "rr"}}),
                &[("10.244.1.5", "n1"), ("10.244.2.5", "n2")],
            )),
        ),
        (
            "s03",
            Some(object(
                "s03",
                3,
                json!({"annotations": {SCHEDULER_ANNOTATION: "rr"}}),
                &[("10.244.1.5", "n1")],
            )),
        ),
        (
            "s03",
            Some(object("s03", 3, json!({}), &[("10.244.1.5", "n1")])),
        ),
        (
            "s04",
            Some(object(
                "s04",
                4,
                json!({"externalTrafficPolicy": "Local"}),
                &[("10.244.2.5", "n2")],
            )),
        ),
        ("s05", Some(object("s05", 5, json!({}), &[]))),
        (
            "s13",
            Some(object(
                "s13",
                13,
                json!({"sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}),
                &[("10.244.1.5", "n1")],
            )),
        ),
        ("s13", None),
        (
            "s06",
            Some(object(
                "s06",
                6,
                json!({"externalIPs": ["203.0.113.6"], "internalTrafficPolicy": "Local"}),
                &[("10.244.1.6", "n1")],
            )),
        ),
    ];
    for (name, next) in changes {
        match next {
            Some(objects) => {
                world.insert(name.to_string(), objects);
            }
            None => {
                world.remove(name);
            }
        }
        let mini = match world.get(name) {
            Some((s, e)) => plan(&[s], &[e], "n1"),
            None => ferry_proxy::model::Plan::default(),
        };
        let mut batch = Batch::new();
        tables.update(
            &("default".into(), name.into()),
            &mini.ports,
            &mut ids,
            &mut batch,
        );
        Connection::open_in_netns(ns.path())
            .unwrap()
            .apply(&batch)
            .unwrap_or_else(|e| panic!("step {name}: {e}"));
        let want = render(&whole_plan(&world), &mut ids.clone(), &options);
        let diff = want.diff(Some(&live(&ns.path())));
        assert!(
            diff.is_empty(),
            "after changing {name}, the live table differs from a full render by {} changes",
            diff.len()
        );
    }
}
