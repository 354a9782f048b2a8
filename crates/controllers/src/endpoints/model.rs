//! The Endpoints model: a Service and the Pods of its namespace in, the
//! legacy `Endpoints` object (`kubectl get ep`) out, as
//! kube-controller-manager's endpoint controller builds it.
//!
//! Each Pod contributes one address per resolved port; the addresses are
//! then repacked into the canonical layout (`RepackSubsets`): ports served
//! by the same set of addresses share a subset, ready addresses go to
//! `addresses` and unready ones to `notReadyAddresses`. Terminating Pods
//! are left out unless the Service publishes not-ready addresses. Beyond
//! 1000 addresses the object is truncated and annotated
//! `endpoints.kubernetes.io/over-capacity: truncated`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::endpointslice::pod::{self, PodInfo};

/// Marks Endpoints this controller manages (Kubernetes 1.33 and later).
pub const LABEL_MANAGED_BY: &str = "endpoints.kubernetes.io/managed-by";
pub const CONTROLLER_NAME: &str = "endpoint-controller";
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
pub const ANNOTATION_OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
pub const TRUNCATED: &str = "truncated";
/// Most addresses (ready and not) one Endpoints object holds.
pub const MAX_CAPACITY: usize = 1000;

/// A port as it appears in a subset: name, number, protocol, appProtocol.
type PortTuple = (String, i32, String, Option<String>);
/// Identifies an address: its IP and the Pod's UID (`addressKey`).
type AddressKey = (String, String);

/// Whether the Endpoints of this Service and Pod use the IPv6 address:
/// the Service's first IP family, else its cluster IP's family, else
/// (headless, no families) the Pod's own first IP.
fn wants_ipv6(service: &Service, pod: &PodInfo) -> bool {
    let spec = service.spec.as_ref();
    if let Some(first) = spec
        .and_then(|s| s.ip_families.as_ref())
        .and_then(|f| f.first())
    {
        return first == "IPv6";
    }
    let ip = if pod::is_ip_set(service) {
        spec.and_then(|s| s.cluster_ip.clone())
    } else {
        pod.ips.first().cloned()
    };
    ip.and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
        .is_some_and(|ip| ip.is_ipv6())
}

fn address(service: &Service, pod: &PodInfo) -> Option<EndpointAddress> {
    let ip = pod.addresses(wants_ipv6(service, pod)).into_iter().next()?;
    Some(EndpointAddress {
        ip,
        node_name: Some(pod.node_name.clone()).filter(|n| !n.is_empty()),
        hostname: pod::should_set_hostname(pod, service).then(|| pod.hostname.clone()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some(pod.namespace.clone()),
            name: Some(pod.name.clone()),
            uid: Some(pod.uid.clone()).filter(|u| !u.is_empty()),
            ..ObjectReference::default()
        }),
    })
}

fn address_key(a: &EndpointAddress) -> AddressKey {
    let uid = a
        .target_ref
        .as_ref()
        .and_then(|t| t.uid.clone())
        .unwrap_or_default();
    (a.ip.clone(), uid)
}

/// The subsets of the Service's Endpoints, in canonical order, before
/// truncation.
pub fn subsets<'p>(
    service: &Service,
    pods: impl IntoIterator<Item = &'p PodInfo>,
) -> Vec<EndpointSubset> {
    let publish_not_ready = pod::publish_not_ready_addresses(service);
    // Port (None: a headless Service without ports) → addresses serving
    // it, with readiness.
    let mut by_port: BTreeMap<Option<PortTuple>, BTreeMap<AddressKey, (EndpointAddress, bool)>> =
        BTreeMap::new();
    for pod in pods {
        if !pod::selects(service, pod) || !pod.in_endpoints(publish_not_ready) {
            continue;
        }
        let Some(address) = address(service, pod) else {
            continue;
        };
        let ready = publish_not_ready || pod.ready;
        let mut add = |port: Option<PortTuple>| {
            let entry = by_port
                .entry(port)
                .or_default()
                .entry(address_key(&address))
                .or_insert_with(|| (address.clone(), ready));
            entry.1 |= ready;
        };
        let service_ports = pod::ports(service);
        if service_ports.is_empty() {
            if pod::is_headless(service) {
                add(None);
            }
            continue;
        }
        for sp in service_ports {
            if let Some(number) = pod::find_port(pod, sp) {
                add(Some((
                    sp.name.clone().unwrap_or_default(),
                    number,
                    pod::protocol(sp).to_string(),
                    sp.app_protocol.clone(),
                )));
            }
        }
    }

    // Ports served by the same addresses (with the same readiness) share
    // a subset.
    type Signature = Vec<(AddressKey, bool)>;
    let mut groups: BTreeMap<Signature, (Vec<EndpointAddress>, Vec<PortTuple>)> = BTreeMap::new();
    for (port, addresses) in by_port {
        let signature: Signature = addresses
            .iter()
            .map(|(k, (_, r))| (k.clone(), *r))
            .collect();
        let group = groups.entry(signature).or_insert_with(|| {
            (
                addresses.into_values().map(|(a, _)| a).collect(),
                Vec::new(),
            )
        });
        group.1.extend(port);
    }
    groups
        .into_iter()
        .map(|(signature, (addresses, ports))| {
            let mut ready = Vec::new();
            let mut not_ready = Vec::new();
            for ((_, is_ready), address) in signature.iter().zip(addresses) {
                if *is_ready {
                    ready.push(address);
                } else {
                    not_ready.push(address);
                }
            }
            EndpointSubset {
                addresses: non_empty(ready),
                not_ready_addresses: non_empty(not_ready),
                ports: non_empty(
                    ports
                        .into_iter()
                        .map(|(name, port, protocol, app_protocol)| EndpointPort {
                            name: Some(name).filter(|n| !n.is_empty()),
                            port,
                            protocol: Some(protocol),
                            app_protocol,
                        })
                        .collect(),
                ),
            }
        })
        .collect()
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

/// `truncateEndpoints`: keeps at most [`MAX_CAPACITY`] addresses, ready
/// ones first, spreading the cut over the subsets in proportion to their
/// size. Returns whether anything was cut.
pub fn truncate(subsets: &mut [EndpointSubset]) -> bool {
    let count = |v: &Option<Vec<EndpointAddress>>| v.as_ref().map_or(0, Vec::len);
    let total_ready: usize = subsets.iter().map(|s| count(&s.addresses)).sum();
    let total_not_ready: usize = subsets.iter().map(|s| count(&s.not_ready_addresses)).sum();
    if total_ready + total_not_ready <= MAX_CAPACITY {
        return false;
    }
    let truncate_ready = total_ready > MAX_CAPACITY;
    let (max, num_total) = if truncate_ready {
        (MAX_CAPACITY, total_ready)
    } else {
        (MAX_CAPACITY - total_ready, total_not_ready)
    };
    let mut can_be_added = max;
    for subset in subsets.iter_mut() {
        let in_subset = if truncate_ready {
            count(&subset.addresses)
        } else {
            count(&subset.not_ready_addresses)
        };
        // The subset's share of `max`, rounded up (so the last subsets may
        // get less than their share).
        let to_be_added = (in_subset * max).div_ceil(num_total).min(can_be_added);
        if truncate_ready {
            if let Some(a) = subset.addresses.as_mut() {
                a.truncate(to_be_added);
            }
            can_be_added -= count(&subset.addresses);
            subset.not_ready_addresses = None;
        } else {
            if let Some(a) = subset.not_ready_addresses.as_mut() {
                a.truncate(to_be_added);
            }
            can_be_added -= count(&subset.not_ready_addresses);
        }
        if subset.addresses.as_ref().is_some_and(Vec::is_empty) {
            subset.addresses = None;
        }
        if subset
            .not_ready_addresses
            .as_ref()
            .is_some_and(Vec::is_empty)
        {
            subset.not_ready_addresses = None;
        }
    }
    true
}

/// Drops subsets truncation left without any address.
fn drop_empty(subsets: &mut Vec<EndpointSubset>) {
    subsets.retain(|s| s.addresses.is_some() || s.not_ready_addresses.is_some());
}

/// The labels of the Service's Endpoints: the Service's labels, the
/// headless marker for headless Services, and this controller as manager.
pub fn labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    if pod::is_ip_set(service) {
        labels.remove(LABEL_HEADLESS);
    } else {
        labels.insert(LABEL_HEADLESS.into(), String::new());
    }
    labels.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    labels
}

/// Whether this controller manages the Endpoints (and may delete it with
/// its Service). Hand-written Endpoints of selectorless Services are not.
pub fn is_managed(endpoints: &Endpoints) -> bool {
    endpoints
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_MANAGED_BY))
        .is_some_and(|v| v == CONTROLLER_NAME)
}

/// Subsets in a form where "absent" and "empty" compare equal and Pod
/// resourceVersions are ignored.
fn canonical(subsets: Option<&[EndpointSubset]>) -> Vec<EndpointSubset> {
    let addresses = |v: &Option<Vec<EndpointAddress>>| {
        non_empty(
            v.iter()
                .flatten()
                .map(|a| {
                    let mut a = a.clone();
                    if let Some(t) = a.target_ref.as_mut() {
                        t.resource_version = None;
                    }
                    if a.node_name.as_deref() == Some("") {
                        a.node_name = None;
                    }
                    if a.hostname.as_deref() == Some("") {
                        a.hostname = None;
                    }
                    a
                })
                .collect(),
        )
    };
    subsets
        .unwrap_or(&[])
        .iter()
        .map(|s| EndpointSubset {
            addresses: addresses(&s.addresses),
            not_ready_addresses: addresses(&s.not_ready_addresses),
            ports: non_empty(
                s.ports
                    .iter()
                    .flatten()
                    .map(|p| EndpointPort {
                        name: p.name.clone().filter(|n| !n.is_empty()),
                        port: p.port,
                        protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                        app_protocol: p.app_protocol.clone(),
                    })
                    .collect(),
            ),
        })
        .collect()
}

/// The Endpoints object the Service should have, or None when `current`
/// already is that (nothing to write). A new object has no
/// resourceVersion; an update carries the current one.
pub fn reconcile<'p>(
    service: &Service,
    pods: impl IntoIterator<Item = &'p PodInfo>,
    current: Option<&Endpoints>,
) -> Option<Endpoints> {
    let mut subsets = subsets(service, pods);
    let truncated = truncate(&mut subsets);
    drop_empty(&mut subsets);
    let labels = labels(service);
    let mut annotations = current
        .and_then(|c| c.metadata.annotations.clone())
        .unwrap_or_default();
    if truncated {
        annotations.insert(ANNOTATION_OVER_CAPACITY.into(), TRUNCATED.into());
    } else {
        annotations.remove(ANNOTATION_OVER_CAPACITY);
    }
    if let Some(current) = current
        && canonical(current.subsets.as_deref()) == subsets
        && current.metadata.labels.clone().unwrap_or_default() == labels
        && current.metadata.annotations.clone().unwrap_or_default() == annotations
    {
        return None;
    }
    let mut metadata = match current {
        Some(c) => c.metadata.clone(),
        None => ObjectMeta {
            name: service.metadata.name.clone(),
            namespace: service.metadata.namespace.clone(),
            ..ObjectMeta::default()
        },
    };
    metadata.labels = Some(labels);
    metadata.annotations = (!annotations.is_empty()).then_some(annotations);
    Some(Endpoints {
        metadata,
        subsets: non_empty(subsets),
    })
}

#[cfg(test)]
mod tests;
