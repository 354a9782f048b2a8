//! The EndpointSlice model: a Service, the Pods in its namespace and the
//! Nodes' zones in; the endpoints the Service should have (grouped by port
//! list) and the slice writes that get there from the existing slices out.
//!
//! It follows kube-controller-manager's reconciler
//! (k8s.io/endpointslice): endpoints are matched to existing slices by
//! identity (addresses, hostname, Pod), changed endpoints are replaced in
//! place, removed ones dropped, new ones fill the slices being written
//! anyway before an unchanged slice is touched or a new one created, and a
//! slice that would be deleted while another is created is reused. So a
//! readiness flip rewrites one slice and nothing else.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::pod::{self, PodInfo};

/// `endpointslice.kubernetes.io/managed-by` value of this controller.
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// Set (empty) on the slices of headless Services.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";

/// A port list in canonical order (name, port, protocol, appProtocol):
/// slices and Pods with equal keys share a slice.
pub type PortKey = Vec<(String, i32, String, Option<String>)>;

pub fn port_key(ports: Option<&[EndpointPort]>) -> PortKey {
    let mut key: PortKey = ports
        .unwrap_or(&[])
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or(0),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.app_protocol.clone(),
            )
        })
        .collect();
    key.sort();
    key
}

/// What identifies an endpoint across updates (upstream's endpoint hash):
/// its addresses, hostname and target. Everything else (conditions,
/// topology) may change in place.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointKey {
    addresses: Vec<String>,
    hostname: String,
    namespace: String,
    name: String,
}

pub fn endpoint_key(endpoint: &Endpoint) -> EndpointKey {
    let mut addresses = endpoint.addresses.clone();
    addresses.sort();
    let target = endpoint.target_ref.as_ref();
    EndpointKey {
        addresses,
        hostname: endpoint.hostname.clone().unwrap_or_default(),
        namespace: target.and_then(|t| t.namespace.clone()).unwrap_or_default(),
        name: target.and_then(|t| t.name.clone()).unwrap_or_default(),
    }
}

/// Equal apart from what [`endpoint_key`] covers (and the target's
/// resourceVersion, which changes with every Pod update).
pub fn endpoints_equal_beyond_key(a: &Endpoint, b: &Endpoint) -> bool {
    fn target(e: &Endpoint) -> Option<ObjectReference> {
        e.target_ref.clone().map(|mut t| {
            t.resource_version = None;
            t
        })
    }
    let conditions = |e: &Endpoint| {
        let c = e.conditions.clone().unwrap_or_default();
        (c.ready, c.serving, c.terminating)
    };
    a.node_name == b.node_name
        && a.zone == b.zone
        && conditions(a) == conditions(b)
        && target(a) == target(b)
        && a.hints == b.hints
        && a.deprecated_topology == b.deprecated_topology
}

/// The endpoints one group of Pods (equal port lists) should have.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredGroup {
    /// The ports in Service order.
    pub ports: Vec<EndpointPort>,
    pub endpoints: BTreeMap<EndpointKey, Endpoint>,
}

/// Desired endpoints of one address type, by port list.
pub type Desired = BTreeMap<PortKey, DesiredGroup>;

/// The Service's ports as one Pod resolves them (`getEndpointPorts`). A
/// port whose named `targetPort` the Pod lacks is left out, so that Pod
/// lands in a group of its own.
pub fn endpoint_ports(service: &Service, pod: &PodInfo) -> Vec<EndpointPort> {
    pod::ports(service)
        .iter()
        .filter_map(|sp| {
            Some(EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(pod::find_port(pod, sp)?),
                protocol: Some(pod::protocol(sp).to_string()),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect()
}

/// What the model needs to know about a Pod's Node: None when the Node
/// does not exist, else its zone.
pub type NodeZone<'a> = &'a dyn Fn(&str) -> Option<Option<String>>;

/// The endpoints of `service` for one address type (`IPv4`/`IPv6`), from
/// the Pods of its namespace (others are ignored).
///
/// Pods without an IP and terminal Pods are left out; unready and
/// terminating Pods are in with the matching conditions. As upstream, a
/// Pod whose Node is unknown is left out (unless the Service publishes
/// not-ready addresses) until the Node appears.
pub fn desired<'p>(
    service: &Service,
    pods: impl IntoIterator<Item = &'p PodInfo>,
    node_zone: NodeZone<'_>,
    address_type: &str,
) -> Desired {
    let publish_not_ready = pod::publish_not_ready_addresses(service);
    let mut groups = Desired::new();
    for pod in pods {
        if !pod::selects(service, pod) || !pod.in_endpoints(true) {
            continue;
        }
        let ports = endpoint_ports(service, pod);
        let group = groups
            .entry(port_key(Some(&ports)))
            .or_insert_with(|| DesiredGroup {
                ports,
                endpoints: BTreeMap::new(),
            });
        let zone = match node_zone(&pod.node_name) {
            Some(zone) => zone,
            None if publish_not_ready => None,
            None => continue,
        };
        let endpoint = pod_to_endpoint(service, pod, zone, address_type == "IPv6");
        if !endpoint.addresses.is_empty() {
            group.endpoints.insert(endpoint_key(&endpoint), endpoint);
        }
    }
    groups
}

/// `podToEndpoint`: `serving` is the Pod's readiness; `ready` is that
/// minus termination, or always true with `publishNotReadyAddresses`.
pub fn pod_to_endpoint(
    service: &Service,
    pod: &PodInfo,
    zone: Option<String>,
    ipv6: bool,
) -> Endpoint {
    let serving = pod.ready;
    let terminating = pod.terminating;
    let ready = pod::publish_not_ready_addresses(service) || (serving && !terminating);
    Endpoint {
        addresses: pod.addresses(ipv6),
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some(pod.namespace.clone()),
            name: Some(pod.name.clone()),
            uid: Some(pod.uid.clone()).filter(|u| !u.is_empty()),
            ..ObjectReference::default()
        }),
        node_name: Some(pod.node_name.clone()).filter(|n| !n.is_empty()),
        zone,
        hostname: pod::should_set_hostname(pod, service).then(|| pod.hostname.clone()),
        ..Endpoint::default()
    }
}

/// The labels a slice of `service` carries: the Service's own labels
/// (except the reserved ones), the headless marker, the service name and
/// this controller as manager.
pub fn slice_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = service
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                LABEL_SERVICE_NAME | LABEL_MANAGED_BY | LABEL_HEADLESS
            )
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !pod::is_ip_set(service) {
        labels.insert(LABEL_HEADLESS.into(), String::new());
    }
    labels.insert(
        LABEL_SERVICE_NAME.into(),
        service.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    labels
}

/// The controller reference from a slice to its Service.
pub fn owner_reference(service: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: service.metadata.name.clone().unwrap_or_default(),
        uid: service.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The slice belongs to this Service object (not to an earlier Service of
/// the same name).
pub fn owned_by(slice: &EndpointSlice, service: &Service) -> bool {
    let uid = service.metadata.uid.as_deref().unwrap_or("");
    slice
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.kind == "Service" && o.api_version == "v1")
}

/// A new, unnamed slice (the API server names it `<service>-<random>`).
pub fn new_slice(service: &Service, ports: &[EndpointPort], address_type: &str) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!(
                "{}-",
                service.metadata.name.as_deref().unwrap_or("endpointslice")
            )),
            namespace: service.metadata.namespace.clone(),
            labels: Some(slice_labels(service)),
            owner_references: Some(vec![owner_reference(service)]),
            ..ObjectMeta::default()
        },
        address_type: address_type.into(),
        endpoints: Vec::new(),
        ports: (!ports.is_empty()).then(|| ports.to_vec()),
    }
}

/// The writes that bring a Service's slices to the desired state. Updates
/// carry the existing slice's resourceVersion, so a stale view fails with
/// a conflict instead of overwriting someone's change.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub create: Vec<EndpointSlice>,
    pub update: Vec<EndpointSlice>,
    pub delete: Vec<Arc<EndpointSlice>>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// Compares a Service's existing slices (those this controller manages)
/// with the desired endpoints and returns the writes to make.
/// `desired_by_type` holds the desired endpoints of each address type the
/// Service serves; slices of other address types are deleted.
pub fn reconcile(
    service: &Service,
    existing: &[Arc<EndpointSlice>],
    desired_by_type: Vec<(&str, Desired)>,
    max_endpoints_per_slice: usize,
) -> Plan {
    // The API allows at most 1000 endpoints in a slice.
    let max = max_endpoints_per_slice.clamp(1, 1000);
    let mut plan = Plan::default();
    for slice in existing {
        if !desired_by_type
            .iter()
            .any(|(t, _)| *t == slice.address_type)
        {
            plan.delete.push(slice.clone());
        }
    }
    for (address_type, desired) in desired_by_type {
        let of_type: Vec<&Arc<EndpointSlice>> = existing
            .iter()
            .filter(|s| s.address_type == address_type)
            .collect();
        let part = reconcile_address_type(service, &of_type, desired, address_type, max);
        plan.create.extend(part.create);
        plan.update.extend(part.update);
        plan.delete.extend(part.delete);
    }
    if service.metadata.deletion_timestamp.is_some() {
        // Creating slices for a Service on its way out would race its
        // cleanup.
        plan.create.clear();
    }
    plan
}

fn reconcile_address_type(
    service: &Service,
    existing: &[&Arc<EndpointSlice>],
    desired: Desired,
    address_type: &str,
    max: usize,
) -> Plan {
    let mut plan = Plan::default();
    let mut by_ports: BTreeMap<PortKey, Vec<&Arc<EndpointSlice>>> = BTreeMap::new();
    for slice in existing {
        if owned_by(slice, service) {
            by_ports
                .entry(port_key(slice.ports.as_deref()))
                .or_default()
                .push(slice);
        } else {
            plan.delete.push((*slice).clone());
        }
    }
    for (key, group) in desired {
        let slices = by_ports.remove(&key).unwrap_or_default();
        let part = reconcile_port_mapping(service, &slices, group, address_type, max);
        plan.create.extend(part.create);
        plan.update.extend(part.update);
        plan.delete.extend(part.delete);
    }
    // Port lists no Pod has any more.
    plan.delete
        .extend(by_ports.into_values().flatten().map(|s| (*s).clone()));

    // A Service without endpoints keeps one empty placeholder slice, so
    // consumers can tell "no endpoints" from "not processed yet".
    if existing.len() == plan.delete.len() && plan.create.is_empty() {
        let placeholder = new_slice(service, &[], address_type);
        if plan.delete.len() == 1 && is_same_placeholder(&plan.delete[0], &placeholder) {
            plan.delete.clear();
        } else {
            plan.create.push(placeholder);
        }
    }

    // Reuse slices about to be deleted instead of creating new ones.
    let mut i = 0;
    while i < plan.delete.len() && !plan.create.is_empty() {
        let old = &plan.delete[i];
        if old.address_type == address_type && owned_by(old, service) {
            let old = plan.delete.remove(i);
            let mut slice = plan.create.pop().expect("checked non-empty");
            slice.metadata.generate_name = None;
            slice.metadata.name = old.metadata.name.clone();
            slice.metadata.resource_version = old.metadata.resource_version.clone();
            slice.metadata.uid = old.metadata.uid.clone();
            plan.update.push(slice);
        } else {
            i += 1;
        }
    }
    plan
}

fn is_same_placeholder(slice: &EndpointSlice, placeholder: &EndpointSlice) -> bool {
    slice.endpoints.is_empty()
        && port_key(slice.ports.as_deref()).is_empty()
        && slice.address_type == placeholder.address_type
        && slice.metadata.namespace == placeholder.metadata.namespace
        && slice.metadata.labels.clone().unwrap_or_default()
            == placeholder.metadata.labels.clone().unwrap_or_default()
        && slice.metadata.owner_references == placeholder.metadata.owner_references
}

/// `reconcileByPortMapping`, for the slices and desired endpoints of one
/// port list.
fn reconcile_port_mapping(
    service: &Service,
    existing: &[&Arc<EndpointSlice>],
    group: DesiredGroup,
    address_type: &str,
    max: usize,
) -> Plan {
    let mut plan = Plan::default();
    let mut desired = group.endpoints;
    let labels = slice_labels(service);
    let mut to_update: Vec<EndpointSlice> = Vec::new();
    let mut unchanged: Vec<&Arc<EndpointSlice>> = Vec::new();

    // 1. Keep the endpoints still desired (in their slices, replaced by the
    //    desired version), drop the rest.
    for slice in existing {
        let mut kept = Vec::with_capacity(slice.endpoints.len());
        let mut changed = false;
        for endpoint in &slice.endpoints {
            if let Some(want) = desired.remove(&endpoint_key(endpoint)) {
                changed |= !endpoints_equal_beyond_key(&want, endpoint);
                kept.push(want);
            }
        }
        let labels_changed = slice.metadata.labels.as_ref() != Some(&labels);
        if changed || kept.len() != slice.endpoints.len() {
            if kept.is_empty() {
                plan.delete.push((*slice).clone());
            } else {
                let mut updated = (***slice).clone();
                updated.endpoints = kept;
                updated.metadata.labels = Some(labels.clone());
                to_update.push(updated);
            }
        } else if labels_changed {
            let mut updated = (***slice).clone();
            updated.metadata.labels = Some(labels.clone());
            to_update.push(updated);
        } else {
            unchanged.push(slice);
        }
    }

    // 2. Fill the slices being written anyway, fullest first.
    if !desired.is_empty() {
        to_update.sort_by_key(|s| std::cmp::Reverse(s.endpoints.len()));
        for slice in &mut to_update {
            fill(slice, &mut desired, max);
        }
    }

    // 3. What is left goes into the unchanged slice it fits best, else
    //    into new slices.
    while !desired.is_empty() {
        let mut slice = None;
        if desired.len() < max {
            let best = unchanged
                .iter()
                .enumerate()
                .filter(|(_, s)| s.endpoints.len() + desired.len() <= max)
                .max_by_key(|(i, s)| (s.endpoints.len(), std::cmp::Reverse(*i)))
                .map(|(i, _)| i);
            if let Some(i) = best {
                slice = Some((**unchanged.remove(i)).clone());
            }
        }
        let mut slice = slice.unwrap_or_else(|| new_slice(service, &group.ports, address_type));
        fill(&mut slice, &mut desired, max);
        if slice.metadata.name.is_some() {
            to_update.push(slice);
        } else {
            plan.create.push(slice);
        }
    }
    plan.update = to_update;
    plan
}

fn fill(slice: &mut EndpointSlice, desired: &mut BTreeMap<EndpointKey, Endpoint>, max: usize) {
    while slice.endpoints.len() < max {
        let Some((_, endpoint)) = desired.pop_first() else {
            break;
        };
        slice.endpoints.push(endpoint);
    }
}

#[cfg(test)]
mod tests;
