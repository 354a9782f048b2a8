//! discovery.k8s.io/v1 EndpointSlice validation, after upstream's
//! `ValidateEndpointSliceCreate` and `ValidateEndpointSliceUpdate`
//! (k8s.io/kubernetes pkg/apis/discovery/validation).
//!
//! An EndpointSlice has an `addressType` (IPv4, IPv6 or FQDN; the deprecated
//! `IP` only on objects that already have it), at most 1000 endpoints of 1
//! to 100 addresses of that type (no loopback, link-local or unspecified
//! IPs), and at most 100 uniquely named ports. Paths have no `spec.` prefix
//! because the fields sit at the top level.

use std::collections::HashSet;

use serde_json::Value;

use super::common::{
    check_name, child, index, is_fully_qualified_domain_name, is_set, is_valid_ip,
    is_valid_ipv4_address, is_valid_ipv6_address, items, len_of, text, validate_non_special_ip,
};
use super::{
    FieldError, FieldErrorReason, is_dns1123_label, is_dns1123_subdomain, is_qualified_name,
    validate_labels,
};

const ADDRESS_TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];
/// With the deprecated `IP`, accepted on update only.
const ADDRESS_TYPES_ON_UPDATE: &[&str] = &["FQDN", "IP", "IPv4", "IPv6"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const MAX_TOPOLOGY_LABELS: usize = 16;
const MAX_ADDRESSES: usize = 100;
const MAX_PORTS: usize = 100;
const MAX_ENDPOINTS: usize = 1000;

pub(super) fn validate_endpoint_slice(slice: &Value) -> Vec<FieldError> {
    validate(slice, ADDRESS_TYPES)
}

pub(super) fn validate_endpoint_slice_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = validate(new, ADDRESS_TYPES_ON_UPDATE);
    let address_type = text(&new["addressType"]);
    if address_type != text(&old["addressType"]) {
        errs.push(FieldError::invalid(
            "addressType",
            address_type,
            "field is immutable",
        ));
    }
    errs
}

fn validate(slice: &Value, address_types: &[&str]) -> Vec<FieldError> {
    let address_type = text(&slice["addressType"]);
    let mut errs = Vec::new();
    if address_type.is_empty() {
        errs.push(FieldError::required("addressType", ""));
    } else if !address_types.contains(&address_type) {
        errs.push(FieldError::not_supported(
            "addressType",
            address_type,
            address_types,
        ));
    }
    errs.extend(validate_endpoints(&slice["endpoints"], address_type));
    errs.extend(validate_ports(&slice["ports"]));
    errs
}

fn too_many(path: impl Into<String>, count: usize, max: usize) -> FieldError {
    FieldError::new(
        path,
        FieldErrorReason::TooMany,
        Some(count.to_string()),
        format!("must have at most {max} items"),
    )
}

fn validate_endpoints(endpoints: &Value, address_type: &str) -> Vec<FieldError> {
    let endpoints = items(endpoints);
    if endpoints.len() > MAX_ENDPOINTS {
        return vec![too_many("endpoints", endpoints.len(), MAX_ENDPOINTS)];
    }
    let mut errs = Vec::new();
    for (i, endpoint) in endpoints.iter().enumerate() {
        let endpoint_path = index("endpoints", i);
        let addresses_path = child(&endpoint_path, "addresses");
        let addresses = items(&endpoint["addresses"]);
        if addresses.is_empty() {
            errs.push(FieldError::required(
                &addresses_path,
                "must contain at least 1 address",
            ));
        } else if addresses.len() > MAX_ADDRESSES {
            errs.push(too_many(&addresses_path, addresses.len(), MAX_ADDRESSES));
        }
        for (j, address) in addresses.iter().enumerate() {
            let path = index(&addresses_path, j);
            let address = text(address);
            // Unknown address types fall through unchecked, as upstream.
            match address_type {
                "IP" => errs.extend(is_valid_ip(&path, address)),
                "IPv4" => {
                    errs.extend(is_valid_ipv4_address(&path, address));
                    errs.extend(validate_non_special_ip(address, &path));
                }
                "IPv6" => {
                    errs.extend(is_valid_ipv6_address(&path, address));
                    errs.extend(validate_non_special_ip(address, &path));
                }
                "FQDN" => errs.extend(is_fully_qualified_domain_name(&path, address)),
                _ => {}
            }
        }

        let topology = &endpoint["deprecatedTopology"];
        let topology_path = child(&endpoint_path, "deprecatedTopology");
        if len_of(topology) > MAX_TOPOLOGY_LABELS {
            errs.push(too_many(
                &topology_path,
                len_of(topology),
                MAX_TOPOLOGY_LABELS,
            ));
        }
        errs.extend(validate_labels(topology, &topology_path));

        if let Some(hostname) = endpoint["hostname"].as_str() {
            errs.extend(check_name(
                &child(&endpoint_path, "hostname"),
                hostname,
                is_dns1123_label,
            ));
        }
        if let Some(node_name) = endpoint["nodeName"].as_str() {
            errs.extend(check_name(
                &child(&endpoint_path, "nodeName"),
                node_name,
                is_dns1123_subdomain,
            ));
        }
    }
    errs
}

fn validate_ports(ports: &Value) -> Vec<FieldError> {
    let ports = items(ports);
    if ports.len() > MAX_PORTS {
        return vec![too_many("ports", ports.len(), MAX_PORTS)];
    }
    let mut errs = Vec::new();
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let port_path = index("ports", i);
        let name_path = child(&port_path, "name");
        let name = text(&port["name"]);
        if !name.is_empty() {
            errs.extend(check_name(&name_path, name, is_dns1123_label));
        }
        if !names.insert(name) {
            errs.push(FieldError::duplicate(name_path, name));
        }
        let protocol_path = child(&port_path, "protocol");
        if !is_set(&port["protocol"]) {
            errs.push(FieldError::required(protocol_path, ""));
        } else {
            let protocol = text(&port["protocol"]);
            if !PROTOCOLS.contains(&protocol) {
                errs.push(FieldError::not_supported(
                    protocol_path,
                    protocol,
                    PROTOCOLS,
                ));
            }
        }
        if let Some(app_protocol) = port["appProtocol"].as_str() {
            errs.extend(check_name(
                &child(&port_path, "appProtocol"),
                app_protocol,
                is_qualified_name,
            ));
        }
    }
    errs
}
