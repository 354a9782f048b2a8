//! The mirroring model: a hand-written Endpoints object in, the
//! EndpointSlices that mirror it out, as kube-controller-manager's
//! endpointslicemirroring controller builds them.
//!
//! Each subset's ports (with the address type) select a slice; its
//! addresses become endpoints, `ready` for `addresses` and not ready for
//! `notReadyAddresses`, at most 1000 per subset. Invalid IPs are skipped.
//! The slices carry the Endpoints' labels and annotations and are owned
//! by the Endpoints object.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::endpointslice::model::{
    DesiredGroup, EndpointKey, LABEL_MANAGED_BY, LABEL_SERVICE_NAME, Plan, PortKey, endpoint_key,
    endpoints_equal_beyond_key, port_key,
};

/// `endpointslice.kubernetes.io/managed-by` value of mirrored slices.
pub const CONTROLLER_NAME: &str = "endpointslicemirroring-controller.k8s.io";
/// Endpoints labelled `"true"` are not mirrored.
pub const LABEL_SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
/// Endpoints used as leader-election locks are not mirrored.
const ANNOTATION_LEADER: &str = "control-plane.alpha.kubernetes.io/leader";
const ANNOTATION_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
const ANNOTATION_LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Addresses mirrored per subset (`--mirroring-max-endpoints-per-subset`).
pub const MAX_ENDPOINTS_PER_SUBSET: usize = 1000;

/// Whether the Endpoints may be mirrored at all (the Service must exist
/// and have no selector too; the controller checks that).
pub fn should_mirror(endpoints: &Endpoints) -> bool {
    let meta = &endpoints.metadata;
    let skip = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_SKIP_MIRROR))
        .is_some_and(|v| v == "true");
    let leader = meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANNOTATION_LEADER));
    !skip && !leader
}

/// Desired endpoints by (address type, ports).
#[derive(Debug, Default)]
pub struct Desired {
    pub groups: BTreeMap<(String, PortKey), DesiredGroup>,
    /// Addresses not mirrored: invalid IPs, or beyond the per-subset cap.
    pub skipped: usize,
}

fn to_endpoint(address: &EndpointAddress, ready: bool) -> Option<(&'static str, Endpoint)> {
    let ip: IpAddr = address.ip.parse().ok()?;
    let address_type = if ip.is_ipv6() { "IPv6" } else { "IPv4" };
    Some((
        address_type,
        Endpoint {
            addresses: vec![ip.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                ..EndpointConditions::default()
            }),
            target_ref: address.target_ref.clone(),
            node_name: address.node_name.clone(),
            hostname: address.hostname.clone().filter(|h| !h.is_empty()),
            ..Endpoint::default()
        },
    ))
}

pub fn desired(endpoints: &Endpoints) -> Desired {
    let mut d = Desired::default();
    for subset in endpoints.subsets.iter().flatten() {
        let ports: Vec<EndpointPort> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(p.port),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        let key = port_key(Some(&ports));
        for t in ["IPv4", "IPv6"] {
            d.groups
                .entry((t.to_string(), key.clone()))
                .or_insert_with(|| DesiredGroup {
                    ports: ports.clone(),
                    endpoints: BTreeMap::new(),
                });
        }
        let addresses = subset.addresses.iter().flatten().map(|a| (a, true));
        let not_ready = subset
            .not_ready_addresses
            .iter()
            .flatten()
            .map(|a| (a, false));
        let mut added = 0;
        for (address, ready) in addresses.chain(not_ready) {
            if added >= MAX_ENDPOINTS_PER_SUBSET {
                d.skipped += 1;
                continue;
            }
            let Some((address_type, endpoint)) = to_endpoint(address, ready) else {
                d.skipped += 1;
                continue;
            };
            added += 1;
            if let Some(group) = d.groups.get_mut(&(address_type.to_string(), key.clone())) {
                group.endpoints.insert(endpoint_key(&endpoint), endpoint);
            }
        }
    }
    d
}

/// The labels of a mirrored slice: the Endpoints' labels, the Service's
/// name and this controller as manager.
fn labels(endpoints: &Endpoints) -> BTreeMap<String, String> {
    let mut labels = endpoints.metadata.labels.clone().unwrap_or_default();
    labels.insert(
        LABEL_SERVICE_NAME.into(),
        endpoints.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    labels
}

/// The Endpoints' annotations, minus the ones that only make sense there.
fn annotations(endpoints: &Endpoints) -> BTreeMap<String, String> {
    let mut annotations = endpoints.metadata.annotations.clone().unwrap_or_default();
    annotations.remove(ANNOTATION_TRIGGER_TIME);
    annotations.remove(ANNOTATION_LAST_APPLIED);
    annotations
}

fn owner_reference(endpoints: &Endpoints) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Endpoints".into(),
        name: endpoints.metadata.name.clone().unwrap_or_default(),
        uid: endpoints.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn new_slice(endpoints: &Endpoints, ports: &[EndpointPort], address_type: &str) -> EndpointSlice {
    let annotations = annotations(endpoints);
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!(
                "{}-",
                endpoints
                    .metadata
                    .name
                    .as_deref()
                    .unwrap_or("endpointslice")
            )),
            namespace: endpoints.metadata.namespace.clone(),
            labels: Some(labels(endpoints)),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![owner_reference(endpoints)]),
            ..ObjectMeta::default()
        },
        address_type: address_type.into(),
        endpoints: Vec::new(),
        ports: (!ports.is_empty()).then(|| ports.to_vec()),
    }
}

/// The slice already mirrors exactly these endpoints, labels and
/// annotations.
fn up_to_date(
    slice: &EndpointSlice,
    want: &BTreeMap<EndpointKey, Endpoint>,
    endpoints: &Endpoints,
) -> bool {
    slice.endpoints.len() == want.len()
        && slice.endpoints.iter().all(|e| {
            want.get(&endpoint_key(e))
                .is_some_and(|w| endpoints_equal_beyond_key(w, e))
        })
        && slice.metadata.labels.clone().unwrap_or_default() == labels(endpoints)
        && slice.metadata.annotations.clone().unwrap_or_default() == annotations(endpoints)
        && slice.metadata.owner_references.clone().unwrap_or_default()
            == vec![owner_reference(endpoints)]
}

/// The writes that make the mirrored slices (`existing`) match the
/// Endpoints: one slice per address type and port list, reusing existing
/// slices where it can.
pub fn reconcile(endpoints: &Endpoints, desired: Desired, existing: &[Arc<EndpointSlice>]) -> Plan {
    let mut plan = Plan::default();
    let mut by_key: BTreeMap<(String, PortKey), Vec<&Arc<EndpointSlice>>> = BTreeMap::new();
    for slice in existing {
        by_key
            .entry((slice.address_type.clone(), port_key(slice.ports.as_deref())))
            .or_default()
            .push(slice);
    }
    for ((address_type, key), group) in desired.groups {
        let (ports, want) = (group.ports, group.endpoints);
        let slices = by_key
            .remove(&(address_type.clone(), key))
            .unwrap_or_default();
        if want.is_empty() {
            plan.delete.extend(slices.into_iter().cloned());
            continue;
        }
        let (first, rest) = match slices.split_first() {
            Some((first, rest)) => (Some(*first), rest),
            None => (None, &[][..]),
        };
        plan.delete.extend(rest.iter().map(|s| (*s).clone()));
        if first.is_some_and(|s| up_to_date(s, &want, endpoints)) {
            continue;
        }
        let mut slice = new_slice(endpoints, &ports, &address_type);
        slice.endpoints = want.into_values().collect();
        match first {
            Some(old) => {
                slice.metadata.generate_name = None;
                slice.metadata.name = old.metadata.name.clone();
                slice.metadata.resource_version = old.metadata.resource_version.clone();
                plan.update.push(slice);
            }
            None => plan.create.push(slice),
        }
    }
    plan.delete
        .extend(by_key.into_values().flatten().map(|s| (*s).clone()));

    // Reuse slices about to be deleted for the ones to create.
    let mut i = 0;
    while i < plan.create.len() {
        let address_type = plan.create[i].address_type.clone();
        match plan
            .delete
            .iter()
            .position(|d| d.address_type == address_type)
        {
            Some(j) => {
                let old = plan.delete.remove(j);
                let mut slice = plan.create.remove(i);
                slice.metadata.generate_name = None;
                slice.metadata.name = old.metadata.name.clone();
                slice.metadata.resource_version = old.metadata.resource_version.clone();
                plan.update.push(slice);
            }
            None => i += 1,
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn endpoints(v: serde_json::Value) -> Endpoints {
        let mut e: Endpoints = serde_json::from_value(v).unwrap();
        e.metadata.name.get_or_insert_with(|| "ext".into());
        e.metadata.namespace.get_or_insert_with(|| "default".into());
        e.metadata.uid.get_or_insert_with(|| "ep-uid".into());
        e
    }

    fn apply(slices: &mut Vec<Arc<EndpointSlice>>, plan: Plan, counter: &mut u64) {
        for gone in &plan.delete {
            slices.retain(|s| s.metadata.name != gone.metadata.name);
        }
        for slice in plan.update {
            let at = slices
                .iter()
                .position(|s| s.metadata.name == slice.metadata.name)
                .unwrap();
            slices[at] = Arc::new(slice);
        }
        for mut slice in plan.create {
            *counter += 1;
            slice.metadata.name = Some(format!(
                "{}{counter}",
                slice.metadata.generate_name.take().unwrap()
            ));
            slices.push(Arc::new(slice));
        }
    }

    fn ready(e: &Endpoint) -> bool {
        e.conditions.as_ref().unwrap().ready.unwrap()
    }

    #[test]
    fn subsets_become_slices_with_readiness() {
        let ep = endpoints(json!({
            "metadata": {"labels": {"team": "a"},
                         "annotations": {"note": "x", ANNOTATION_TRIGGER_TIME: "t"}},
            "subsets": [{
                "addresses": [{"ip": "192.0.2.10", "nodeName": "n1", "hostname": "h"},
                              {"ip": "not-an-ip"}],
                "notReadyAddresses": [{"ip": "192.0.2.11"}],
                "ports": [{"name": "http", "port": 8080}]
            }]
        }));
        assert!(should_mirror(&ep));
        let plan = reconcile(&ep, desired(&ep), &[]);
        assert_eq!(
            (plan.create.len(), plan.update.len(), plan.delete.len()),
            (1, 0, 0)
        );
        let slice = &plan.create[0];
        assert_eq!(slice.address_type, "IPv4");
        let labels = slice.metadata.labels.clone().unwrap();
        assert_eq!(labels[LABEL_MANAGED_BY], CONTROLLER_NAME);
        assert_eq!(labels[LABEL_SERVICE_NAME], "ext");
        assert_eq!(labels["team"], "a");
        let annotations = slice.metadata.annotations.clone().unwrap();
        assert_eq!(annotations.len(), 1);
        assert_eq!(annotations["note"], "x");
        let owner = &slice.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Endpoints", "ep-uid")
        );
        let ports = slice.ports.clone().unwrap();
        assert_eq!(
            (ports[0].name.as_deref(), ports[0].port),
            (Some("http"), Some(8080))
        );
        let by_ip: BTreeMap<&str, &Endpoint> = slice
            .endpoints
            .iter()
            .map(|e| (e.addresses[0].as_str(), e))
            .collect();
        assert_eq!(by_ip.len(), 2, "the invalid IP is skipped");
        assert!(ready(by_ip["192.0.2.10"]));
        assert_eq!(by_ip["192.0.2.10"].node_name.as_deref(), Some("n1"));
        assert_eq!(by_ip["192.0.2.10"].hostname.as_deref(), Some("h"));
        assert!(!ready(by_ip["192.0.2.11"]));
        assert_eq!(desired(&ep).skipped, 1);
    }

    #[test]
    fn changes_update_the_slice_in_place_and_nothing_when_equal() {
        let mut ep = endpoints(json!({
            "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 80}]}]
        }));
        let mut slices = Vec::new();
        let mut counter = 0;
        let plan = reconcile(&ep, desired(&ep), &slices);
        apply(&mut slices, plan, &mut counter);
        assert!(reconcile(&ep, desired(&ep), &slices).is_empty());
        let name = slices[0].metadata.name.clone();

        ep.subsets.as_mut().unwrap()[0]
            .addresses
            .as_mut()
            .unwrap()
            .push(serde_json::from_value(json!({"ip": "192.0.2.12"})).unwrap());
        let plan = reconcile(&ep, desired(&ep), &slices);
        assert_eq!(
            (plan.create.len(), plan.update.len(), plan.delete.len()),
            (0, 1, 0)
        );
        apply(&mut slices, plan, &mut counter);
        assert_eq!(slices[0].metadata.name, name);
        assert_eq!(slices[0].endpoints.len(), 2);

        // New ports: the slice is reused for them.
        ep.subsets.as_mut().unwrap()[0].ports =
            Some(vec![serde_json::from_value(json!({"port": 81})).unwrap()]);
        let plan = reconcile(&ep, desired(&ep), &slices);
        assert_eq!(
            (plan.create.len(), plan.update.len(), plan.delete.len()),
            (0, 1, 0)
        );
        apply(&mut slices, plan, &mut counter);
        assert_eq!(slices[0].metadata.name, name);

        // No addresses: no slices.
        ep.subsets = None;
        let plan = reconcile(&ep, desired(&ep), &slices);
        assert_eq!(plan.delete.len(), 1);
    }

    #[test]
    fn families_and_the_per_subset_cap() {
        let many: Vec<serde_json::Value> = (0..1100)
            .map(|i| json!({"ip": format!("10.1.{}.{}", i / 250, i % 250 + 1)}))
            .collect();
        let ep = endpoints(json!({
            "subsets": [
                {"addresses": many, "ports": [{"port": 80}]},
                {"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}
            ]
        }));
        let plan = reconcile(&ep, desired(&ep), &[]);
        let mut sizes: Vec<(String, usize)> = plan
            .create
            .iter()
            .map(|s| (s.address_type.clone(), s.endpoints.len()))
            .collect();
        sizes.sort();
        assert_eq!(sizes, [("IPv4".to_string(), 1000), ("IPv6".to_string(), 1)]);
        assert_eq!(desired(&ep).skipped, 100);
    }

    #[test]
    fn skip_mirror_and_leader_locks() {
        let skip = endpoints(json!({"metadata": {"labels": {LABEL_SKIP_MIRROR: "true"}}}));
        assert!(!should_mirror(&skip));
        let lock = endpoints(json!({"metadata": {"annotations": {ANNOTATION_LEADER: "{}"}}}));
        assert!(!should_mirror(&lock));
    }
}
