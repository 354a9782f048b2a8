//! Tables for the objects that describe traffic: Service, Endpoints,
//! EndpointSlice, Ingress and IngressClass.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde_json::Value;

use super::format::{LIST_MAX, age, format_labels, integer, items, list_with_more, name, text};
use super::{AGE, Column, NAME, column, wide};

pub(super) const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Type",
        "string",
        "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer. \"ClusterIP\" allocates a cluster-internal IP address for load-balancing to endpoints. Endpoints are determined by the selector or if that is not specified, by manual construction of an Endpoints object or EndpointSlice objects. If clusterIP is \"None\", no virtual IP is allocated and the endpoints are published as a set of endpoints rather than a virtual IP. \"NodePort\" builds on ClusterIP and allocates a port on every node which routes to the same endpoints as the clusterIP. \"LoadBalancer\" builds on NodePort and creates an external load-balancer (if supported in the current cloud) which routes to the same endpoints as the clusterIP. \"ExternalName\" aliases this service to the specified externalName. Several other fields do not apply to ExternalName services. More info: https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types",
    ),
    column(
        "Cluster-IP",
        "string",
        "clusterIP is the IP address of the service and is usually assigned randomly. If an address is specified manually, is in-range (as per system configuration), and is not in use, it will be allocated to the service; otherwise creation of the service will fail. This field may not be changed through updates unless the type field is also being changed to ExternalName (which requires this field to be blank) or the type field is being changed from ExternalName (in which case this field may optionally be specified, as describe above).  Valid values are \"None\", empty string (\"\"), or a valid IP address. Setting this to \"None\" makes a \"headless service\" (no virtual IP), which is useful when direct endpoint connections are preferred and proxying is not required.  Only applies to types ClusterIP, NodePort, and LoadBalancer. If this field is specified when creating a Service of type ExternalName, creation will fail. This field will be wiped when updating a Service to type ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies",
    ),
    column(
        "External-IP",
        "string",
        "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that traffic arrives at a node with this IP.  A common example is external load-balancers that are not part of the Kubernetes system.",
    ),
    column(
        "Port(s)",
        "string",
        "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies",
    ),
    AGE,
    wide(column(
        "Selector",
        "string",
        "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/",
    )),
];

pub(super) fn service(svc: &Value, now: Timestamp) -> Vec<Value> {
    let spec = &svc["spec"];
    let service_type = match text(&spec["type"]) {
        "" => "ClusterIP",
        t => t,
    };
    vec![
        name(svc).into(),
        service_type.into(),
        cluster_ip(spec).into(),
        external_ip(svc, service_type).into(),
        service_ports(spec).into(),
        age(svc, now).into(),
        format_labels(&spec["selector"]).into(),
    ]
}

/// The primary cluster IP (`None` for headless services), `<none>` if unset.
/// `clusterIP` wins over `clusterIPs`, as in the v1 to internal conversion.
fn cluster_ip(spec: &Value) -> String {
    let ip = match text(&spec["clusterIP"]) {
        "" => items(&spec["clusterIPs"]).first().map_or("", text),
        ip => ip,
    };
    super::format::or_none(ip)
}

/// `getServiceExternalIP` with `wide` set: load-balancer addresses are not
/// clipped, since kube-apiserver always prints wide.
fn external_ip(svc: &Value, service_type: &str) -> String {
    let spec = &svc["spec"];
    let external_ips: Vec<String> = items(&spec["externalIPs"])
        .iter()
        .map(|ip| text(ip).to_string())
        .collect();
    match service_type {
        "ClusterIP" | "NodePort" if external_ips.is_empty() => "<none>".to_string(),
        "ClusterIP" | "NodePort" => external_ips.join(","),
        "LoadBalancer" => {
            let mut addresses = load_balancer_addresses(&svc["status"]["loadBalancer"]);
            if addresses.is_empty() && external_ips.is_empty() {
                return "<pending>".to_string();
            }
            addresses.extend(external_ips);
            addresses.join(",")
        }
        "ExternalName" => text(&spec["externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    }
}

/// The sorted, de-duplicated IPs (or hostnames when there is no IP) of a
/// Service or Ingress load-balancer status.
fn load_balancer_addresses(load_balancer: &Value) -> Vec<String> {
    let addresses: BTreeSet<&str> = items(&load_balancer["ingress"])
        .iter()
        .map(|ingress| match text(&ingress["ip"]) {
            "" => text(&ingress["hostname"]),
            ip => ip,
        })
        .filter(|address| !address.is_empty())
        .collect();
    addresses.into_iter().map(str::to_string).collect()
}

/// `80/TCP,443:30443/TCP`, or `<none>`.
fn service_ports(spec: &Value) -> String {
    let ports: Vec<String> = items(&spec["ports"])
        .iter()
        .map(|port| {
            let number = integer(&port["port"]);
            let protocol = match text(&port["protocol"]) {
                "" => "TCP",
                protocol => protocol,
            };
            match integer(&port["nodePort"]) {
                node_port if node_port > 0 => format!("{number}:{node_port}/{protocol}"),
                _ => format!("{number}/{protocol}"),
            }
        })
        .collect();
    super::format::or_none(&ports.join(","))
}

pub(super) const ENDPOINTS_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Endpoints",
        "string",
        "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to the IPs they share. A single address with multiple ports, some of which are ready and some of which are not (because they come from different containers) will result in the address being displayed in different subsets for the different ports. No address will appear in both Addresses and NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a service.",
    ),
    AGE,
];

pub(super) fn endpoints(endpoints: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(endpoints).into(),
        format_endpoints(&endpoints["subsets"]).into(),
        age(endpoints, now).into(),
    ]
}

/// `10.244.1.5:80,10.244.2.3:80,10.244.2.4:80 + 1 more...`: ready addresses
/// with each port of their subset (bare IPs when the subset has no ports).
fn format_endpoints(subsets: &Value) -> String {
    let subsets = items(subsets);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for subset in subsets {
        let addresses = items(&subset["addresses"]);
        let ports = items(&subset["ports"]);
        // Headless services may have no ports: list the bare IPs.
        let port_numbers: Vec<Option<i64>> = if ports.is_empty() {
            vec![None]
        } else {
            ports
                .iter()
                .map(|port| Some(integer(&port["port"])))
                .collect()
        };
        for port in port_numbers {
            count += addresses.len();
            for address in addresses {
                if list.len() == LIST_MAX {
                    more = true;
                    break;
                }
                let ip = text(&address["ip"]);
                list.push(port.map_or_else(|| ip.to_string(), |port| join_host_port(ip, port)));
            }
        }
    }
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", count.saturating_sub(LIST_MAX))
    } else {
        joined
    }
}

/// Go's `net.JoinHostPort`: IPv6 hosts get brackets.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

pub(super) const ENDPOINT_SLICE_COLUMNS: &[Column] = &[
    NAME,
    column(
        "AddressType",
        "string",
        "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type. This field is immutable after creation. The following address types are currently supported: * IPv4: Represents an IPv4 Address. * IPv6: Represents an IPv6 Address. * FQDN: Represents a Fully Qualified Domain Name. (Deprecated) The EndpointSlice controller only generates, and kube-proxy only processes, slices of addressType \"IPv4\" and \"IPv6\". No semantics are defined for the \"FQDN\" type.",
    ),
    column(
        "Ports",
        "string",
        "ports specifies the list of network ports exposed by each endpoint in this slice. Each port must have a unique name. Each slice may include a maximum of 100 ports. Services always have at least 1 port, so EndpointSlices generated by the EndpointSlice controller will likewise always have at least 1 port. EndpointSlices used for other purposes may have an empty ports list.",
    ),
    column(
        "Endpoints",
        "string",
        "endpoints is a list of unique endpoints in this slice. Each slice may include a maximum of 1000 endpoints.",
    ),
    AGE,
];

pub(super) fn endpoint_slice(slice: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(slice).into(),
        text(&slice["addressType"]).into(),
        slice_ports(&slice["ports"]).into(),
        slice_endpoints(&slice["endpoints"]).into(),
        age(slice, now).into(),
    ]
}

/// Port numbers (the name when there is no number, `*` for neither).
fn slice_ports(ports: &Value) -> String {
    let ports = items(ports);
    let shown: Vec<String> = ports
        .iter()
        .take(LIST_MAX)
        .map(|port| {
            if let Some(number) = port["port"].as_i64() {
                number.to_string()
            } else if let Some(port_name) = port["name"].as_str() {
                port_name.to_string()
            } else {
                "*".to_string()
            }
        })
        .collect();
    list_with_more(&shown, ports.len() > LIST_MAX, ports.len())
}

/// Every address of every endpoint, ready or not.
fn slice_endpoints(endpoints: &Value) -> String {
    let addresses: Vec<&Value> = items(endpoints)
        .iter()
        .flat_map(|endpoint| items(&endpoint["addresses"]))
        .collect();
    let shown: Vec<String> = addresses
        .iter()
        .take(LIST_MAX)
        .map(|address| text(address).to_string())
        .collect();
    list_with_more(&shown, addresses.len() > LIST_MAX, addresses.len())
}

pub(super) const INGRESS_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Class",
        "string",
        "The name of the IngressClass resource that should be used for additional configuration",
    ),
    column(
        "Hosts",
        "string",
        "Hosts that incoming requests are matched against before the ingress rule",
    ),
    column(
        "Address",
        "string",
        "Address is a list containing ingress points for the load-balancer",
    ),
    column("Ports", "string", "Ports of TLS configurations that open"),
    AGE,
];

pub(super) fn ingress(ingress: &Value, now: Timestamp) -> Vec<Value> {
    let spec = &ingress["spec"];
    let class = spec["ingressClassName"].as_str().unwrap_or("<none>");
    let ports = if items(&spec["tls"]).is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        name(ingress).into(),
        class.into(),
        ingress_hosts(items(&spec["rules"])).into(),
        load_balancer_addresses(&ingress["status"]["loadBalancer"])
            .join(",")
            .into(),
        ports.into(),
        age(ingress, now).into(),
    ]
}

/// Rule hosts (`*` when no rule names one), abbreviated after three. The
/// "more" count is of rules, not hosts, as upstream counts it.
fn ingress_hosts(rules: &[Value]) -> String {
    let mut hosts: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        if hosts.len() == LIST_MAX {
            more = true;
            break;
        }
        let host = text(&rule["host"]);
        if !host.is_empty() {
            hosts.push(host);
        }
    }
    if hosts.is_empty() {
        return "*".to_string();
    }
    let joined = hosts.join(",");
    if more {
        format!(
            "{joined} + {} more...",
            rules.len().saturating_sub(LIST_MAX)
        )
    } else {
        joined
    }
}

pub(super) const INGRESS_CLASS_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Controller",
        "string",
        "Controller that is responsible for handling this class",
    ),
    column(
        "Parameters",
        "string",
        "A reference to a resource with additional parameters",
    ),
    AGE,
];

pub(super) fn ingress_class(class: &Value, now: Timestamp) -> Vec<Value> {
    let spec = &class["spec"];
    let parameters = &spec["parameters"];
    // `Kind.group/name`, e.g. `IngressParameters.k8s.example.com/external-lb`.
    let parameters = if parameters.is_object() {
        let group = parameters["apiGroup"]
            .as_str()
            .map(|group| format!(".{group}"))
            .unwrap_or_default();
        format!(
            "{}{group}/{}",
            text(&parameters["kind"]),
            text(&parameters["name"])
        )
    } else {
        "<none>".to_string()
    };
    vec![
        name(class).into(),
        text(&spec["controller"]).into(),
        parameters.into(),
        age(class, now).into(),
    ]
}
