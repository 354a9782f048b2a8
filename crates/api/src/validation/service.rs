//! Service validation, after upstream's `ValidateService` and
//! `ValidateServiceUpdate` (k8s.io/kubernetes pkg/apis/core/validation).
//!
//! It runs on a Service after defaulting and after the registry has filled
//! in `clusterIPs`, so it checks the syntax of user-chosen addresses and
//! ports but not whether they are free: that is the allocator's job.
//! Checks and their order follow upstream so that multi-error messages
//! read the same.

use std::collections::HashSet;

use serde_json::Value;

use super::common::{
    child, duplicate_printed, go_string_slice, index, int, invalid_int, invalid_printed,
    is_ipv6_string, is_set, is_valid_cidr, is_valid_ip, is_valid_port_num, items, text,
    validate_non_special_ip, validate_port_num_or_name,
};
mod update;
pub(super) use update::validate_service_update;

use super::{
    FieldError, is_dns1123_label, is_dns1123_subdomain, is_qualified_name, validate_labels,
};

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const SESSION_AFFINITIES: &[&str] = &["ClientIP", "None"];
const IP_FAMILIES: &[&str] = &["IPv4", "IPv6"];
const IP_FAMILY_POLICIES: &[&str] = &["PreferDualStack", "RequireDualStack", "SingleStack"];
const TRAFFIC_POLICIES: &[&str] = &["Cluster", "Local"];
/// `core.MaxClientIPServiceAffinitySeconds`.
const MAX_CLIENT_IP_AFFINITY_SECONDS: i64 = 86400;

const TOPOLOGY_MODE_ANNOTATION: &str = "service.kubernetes.io/topology-mode";
const TOPOLOGY_HINTS_ANNOTATION: &str = "service.kubernetes.io/topology-aware-hints";
const SOURCE_RANGES_ANNOTATION: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";

/// `isHeadlessService`: `clusterIPs` is exactly `["None"]`.
fn is_headless(spec: &Value) -> bool {
    matches!(spec["clusterIPs"].as_array().map(Vec::as_slice), Some([ip]) if ip == "None")
}

/// `ExternallyAccessible`: NodePort, LoadBalancer, or ClusterIP with
/// external IPs.
fn externally_accessible(spec: &Value) -> bool {
    match text(&spec["type"]) {
        "NodePort" | "LoadBalancer" => true,
        "ClusterIP" => !items(&spec["externalIPs"]).is_empty(),
        _ => false,
    }
}

/// `NeedsHealthCheck`: a LoadBalancer that keeps traffic on the node.
fn needs_health_check(spec: &Value) -> bool {
    text(&spec["type"]) == "LoadBalancer" && text(&spec["externalTrafficPolicy"]) == "Local"
}

/// The `%#v` of the `core.ServicePort{Protocol, Port}` key upstream uses to
/// report a duplicate port.
fn go_service_port_key(protocol: &str, port: i64) -> String {
    format!(
        "core.ServicePort{{Name:\"\", Protocol:{}, AppProtocol:(*string)(nil), Port:{port}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
        super::go_quote(protocol)
    )
}

/// `%#v` of a dereferenced optional string (`null` when unset).
fn go_optional_string(v: &Value) -> String {
    match v.as_str() {
        Some(s) => super::go_quote(s),
        None => "null".to_string(),
    }
}

/// `ValidateService` without the metadata checks.
pub(super) fn validate_service(svc: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let annotations = &svc["metadata"]["annotations"];
    if let (Some(mode), Some(hints)) = (
        annotations[TOPOLOGY_MODE_ANNOTATION].as_str(),
        annotations[TOPOLOGY_HINTS_ANNOTATION].as_str(),
    ) && mode != hints
    {
        errs.push(FieldError::invalid(
            format!("metadata.annotations[{TOPOLOGY_MODE_ANNOTATION}]"),
            mode,
            format!("must match annotations[{TOPOLOGY_HINTS_ANNOTATION}] when both are specified"),
        ));
    }

    let spec = &svc["spec"];
    let service_type = text(&spec["type"]);
    let ports = items(&spec["ports"]);
    let headless = is_headless(spec);
    if ports.is_empty() && !headless && service_type != "ExternalName" {
        errs.push(FieldError::required("spec.ports", ""));
    }
    match service_type {
        "LoadBalancer" | "NodePort" if headless => errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            "None",
            format!("may not be set to 'None' for {service_type} services"),
        )),
        "ExternalName" => errs.extend(validate_external_name(spec)),
        _ => {}
    }

    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        errs.extend(validate_service_port(
            port,
            ports.len() > 1,
            &mut names,
            &index("spec.ports", i),
        ));
    }

    if is_set(&spec["selector"]) {
        errs.extend(validate_labels(&spec["selector"], "spec.selector"));
    }

    errs.extend(validate_session_affinity(spec));
    errs.extend(validate_cluster_ips_related_fields(spec));

    for (i, ip) in items(&spec["externalIPs"]).iter().enumerate() {
        let path = index("spec.externalIPs", i);
        let ip = text(ip);
        let ip_errs = is_valid_ip(&path, ip);
        if ip_errs.is_empty() {
            errs.extend(validate_non_special_ip(ip, &path));
        } else {
            errs.extend(ip_errs);
        }
    }

    if service_type.is_empty() {
        errs.push(FieldError::required("spec.type", ""));
    } else if !TYPES.contains(&service_type) {
        errs.push(FieldError::not_supported("spec.type", service_type, TYPES));
    }

    if service_type == "ClusterIP" {
        for (i, port) in ports.iter().enumerate() {
            if int(&port["nodePort"]) != 0 {
                errs.push(FieldError::forbidden(
                    child(&index("spec.ports", i), "nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }

    let mut node_ports = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let node_port = int(&port["nodePort"]);
        if node_port != 0 && !node_ports.insert((text(&port["protocol"]), node_port)) {
            errs.push(duplicate_printed(
                child(&index("spec.ports", i), "nodePort"),
                &node_port.to_string(),
            ));
        }
    }
    let mut seen_ports = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let key = (text(&port["protocol"]), int(&port["port"]));
        if !seen_ports.insert(key) {
            errs.push(duplicate_printed(
                index("spec.ports", i),
                &go_service_port_key(key.0, key.1),
            ));
        }
    }

    errs.extend(validate_source_ranges(svc));

    let is_load_balancer = service_type == "LoadBalancer";
    if is_set(&spec["allocateLoadBalancerNodePorts"]) && !is_load_balancer {
        errs.push(FieldError::forbidden(
            "spec.allocateLoadBalancerNodePorts",
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    if is_load_balancer && !is_set(&spec["allocateLoadBalancerNodePorts"]) {
        // Upstream reports this one without the `spec.` prefix.
        errs.push(FieldError::required("allocateLoadBalancerNodePorts", ""));
    }
    errs.extend(validate_load_balancer_class(None, spec));
    errs.extend(validate_external_traffic_policy(spec));
    errs.extend(validate_internal_traffic_policy(spec));

    if is_set(&spec["trafficDistribution"]) {
        let value = text(&spec["trafficDistribution"]);
        if value != "PreferClose" {
            errs.push(FieldError::not_supported(
                "spec.trafficDistribution",
                value,
                &["PreferClose"],
            ));
        }
    }
    errs
}

fn validate_external_name(spec: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if !items(&spec["clusterIPs"]).is_empty() {
        errs.push(FieldError::forbidden(
            "spec.clusterIPs",
            "may not be set for ExternalName services",
        ));
    }
    if !items(&spec["ipFamilies"]).is_empty() {
        errs.push(FieldError::forbidden(
            "spec.ipFamilies",
            "may not be set for ExternalName services",
        ));
    }
    if is_set(&spec["ipFamilyPolicy"]) {
        errs.push(FieldError::forbidden(
            "spec.ipFamilyPolicy",
            "may not be set for ExternalName services",
        ));
    }
    // A CNAME may end in a dot to mark it fully qualified.
    let external_name = text(&spec["externalName"]);
    let cname = external_name.strip_suffix('.').unwrap_or(external_name);
    if cname.is_empty() {
        errs.push(FieldError::required("spec.externalName", ""));
    } else {
        for msg in is_dns1123_subdomain(cname) {
            errs.push(FieldError::invalid("spec.externalName", cname, msg));
        }
    }
    errs
}

/// `validateServicePort`, plus a syntax check of a user-chosen `nodePort`
/// (upstream leaves that to the allocator's range check).
fn validate_service_port(
    port: &Value,
    require_name: bool,
    names: &mut HashSet<String>,
    path: &str,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = text(&port["name"]);
    let name_path = child(path, "name");
    if require_name && name.is_empty() {
        errs.push(FieldError::required(name_path, ""));
    } else if !name.is_empty() {
        for msg in is_dns1123_label(name) {
            errs.push(FieldError::invalid(&name_path, name, msg));
        }
        if !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(name_path, name));
        }
    }

    let number = int(&port["port"]);
    for msg in is_valid_port_num(number) {
        errs.push(invalid_int(child(path, "port"), number, &msg));
    }

    let protocol = text(&port["protocol"]);
    if protocol.is_empty() {
        errs.push(FieldError::required(child(path, "protocol"), ""));
    } else if !PROTOCOLS.contains(&protocol) {
        errs.push(FieldError::not_supported(
            child(path, "protocol"),
            protocol,
            PROTOCOLS,
        ));
    }

    errs.extend(validate_port_num_or_name(
        &port["targetPort"],
        &child(path, "targetPort"),
    ));

    if let Some(app_protocol) = port["appProtocol"].as_str() {
        for msg in is_qualified_name(app_protocol) {
            errs.push(FieldError::invalid(
                child(path, "appProtocol"),
                app_protocol,
                msg,
            ));
        }
    }

    let node_port = int(&port["nodePort"]);
    if node_port != 0 {
        for msg in is_valid_port_num(node_port) {
            errs.push(invalid_int(child(path, "nodePort"), node_port, &msg));
        }
    }
    errs
}

fn validate_session_affinity(spec: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let affinity = text(&spec["sessionAffinity"]);
    if affinity.is_empty() {
        errs.push(FieldError::required("spec.sessionAffinity", ""));
    } else if !SESSION_AFFINITIES.contains(&affinity) {
        errs.push(FieldError::not_supported(
            "spec.sessionAffinity",
            affinity,
            SESSION_AFFINITIES,
        ));
    }
    let config = &spec["sessionAffinityConfig"];
    match affinity {
        "ClientIP" => {
            let detail = "when session affinity type is ClientIP";
            let timeout = &config["clientIP"]["timeoutSeconds"];
            if !is_set(config) {
                errs.push(FieldError::required("spec.sessionAffinityConfig", detail));
            } else if !is_set(&config["clientIP"]) {
                errs.push(FieldError::required(
                    "spec.sessionAffinityConfig.clientIP",
                    detail,
                ));
            } else if !is_set(timeout) {
                errs.push(FieldError::required(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    detail,
                ));
            } else {
                let seconds = int(timeout);
                if seconds <= 0 || seconds > MAX_CLIENT_IP_AFFINITY_SECONDS {
                    errs.push(invalid_int(
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                        seconds,
                        &format!(
                            "must be greater than 0 and less than {MAX_CLIENT_IP_AFFINITY_SECONDS}"
                        ),
                    ));
                }
            }
        }
        "None" if is_set(config) => errs.push(FieldError::forbidden(
            "spec.sessionAffinityConfig",
            "must not be set when session affinity is None",
        )),
        _ => {}
    }
    errs
}

/// `ValidateServiceClusterIPsRelatedFields`: `clusterIP`/`clusterIPs`
/// agreement, the syntax of each address, and `ipFamilies` and
/// `ipFamilyPolicy`.
fn validate_cluster_ips_related_fields(spec: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if text(&spec["type"]) == "ExternalName" {
        return errs;
    }
    let cluster_ip = text(&spec["clusterIP"]);
    let cluster_ips_value = &spec["clusterIPs"];
    let cluster_ips: Vec<&str> = items(cluster_ips_value).iter().map(text).collect();
    let printed_ips = go_string_slice(cluster_ips_value);
    if !cluster_ip.is_empty() {
        match cluster_ips.first() {
            None => errs.push(FieldError::required("spec.clusterIPs", "")),
            Some(first) if *first != cluster_ip => errs.push(invalid_printed(
                "spec.clusterIPs",
                &printed_ips,
                "first value must match `clusterIP`",
            )),
            Some(_) => {}
        }
    } else if !cluster_ips.is_empty() {
        errs.push(invalid_printed(
            "spec.clusterIPs",
            &printed_ips,
            "must be empty when `clusterIP` is not specified",
        ));
    }

    let families: Vec<&str> = items(&spec["ipFamilies"]).iter().map(text).collect();
    let mut seen = HashSet::new();
    for (i, family) in families.iter().enumerate() {
        let path = index("spec.ipFamilies", i);
        if !IP_FAMILIES.contains(family) {
            errs.push(FieldError::not_supported(&path, *family, IP_FAMILIES));
        }
        if !seen.insert(*family) {
            errs.push(FieldError::duplicate(path, *family));
        }
    }
    if is_set(&spec["ipFamilyPolicy"]) {
        let policy = text(&spec["ipFamilyPolicy"]);
        if !IP_FAMILY_POLICIES.contains(&policy) {
            errs.push(FieldError::not_supported(
                "spec.ipFamilyPolicy",
                policy,
                IP_FAMILY_POLICIES,
            ));
        }
    }

    let mut has_invalid_ips = false;
    for (i, ip) in cluster_ips.iter().enumerate() {
        if i == 0 && *ip == "None" {
            if cluster_ips.len() > 1 {
                has_invalid_ips = true;
                errs.push(invalid_printed(
                    "spec.clusterIPs",
                    &printed_ips,
                    "'None' must be the first and only value",
                ));
            }
            continue;
        }
        let ip_errs = is_valid_ip(&index("spec.clusterIPs", i), ip);
        has_invalid_ips |= !ip_errs.is_empty();
        errs.extend(ip_errs);
    }
    if cluster_ips.len() > 2 {
        errs.push(invalid_printed(
            "spec.clusterIPs",
            &printed_ips,
            "may only hold up to 2 values",
        ));
    }
    if has_invalid_ips {
        return errs;
    }
    if cluster_ips.len() > 1 {
        let v6 = cluster_ips.iter().filter(|ip| is_ipv6_string(ip)).count();
        if v6 == 0 || v6 == cluster_ips.len() {
            errs.push(invalid_printed(
                "spec.clusterIPs",
                &printed_ips,
                "may specify no more than one IP for each IP family",
            ));
        }
    }
    if !is_headless(spec) && !cluster_ips.is_empty() {
        for (i, (ip, family)) in cluster_ips.iter().zip(&families).enumerate() {
            let expected = match *family {
                "IPv4" if is_ipv6_string(ip) => "IPv4",
                "IPv6" if !is_ipv6_string(ip) => "IPv6",
                _ => continue,
            };
            errs.push(FieldError::invalid(
                index("spec.clusterIPs", i),
                *ip,
                format!("expected an {expected} value as indicated by `ipFamilies[{i}]`"),
            ));
        }
    }
    errs
}

/// `loadBalancerSourceRanges` (and its older annotation) only for
/// LoadBalancers, and only CIDRs.
fn validate_source_ranges(svc: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &svc["spec"];
    let is_load_balancer = text(&spec["type"]) == "LoadBalancer";
    let ranges = items(&spec["loadBalancerSourceRanges"]);
    let only_for_lb = "may only be used when `type` is 'LoadBalancer'";
    if !ranges.is_empty() {
        // Upstream spells this path with a capital L.
        let path = "spec.LoadBalancerSourceRanges";
        if !is_load_balancer {
            errs.push(FieldError::forbidden(path, only_for_lb));
        }
        for (i, range) in ranges.iter().enumerate() {
            errs.extend(is_valid_cidr(&index(path, i), text(range).trim()));
        }
    } else if let Some(value) = svc["metadata"]["annotations"][SOURCE_RANGES_ANNOTATION].as_str() {
        let path = format!("metadata.annotations[{SOURCE_RANGES_ANNOTATION}]");
        if !is_load_balancer {
            errs.push(FieldError::forbidden(&path, only_for_lb));
        }
        let value = value.trim();
        if !value.is_empty() {
            for cidr in value.split(',') {
                errs.extend(is_valid_cidr(&path, cidr.trim()));
            }
        }
    }
    errs
}

fn validate_load_balancer_class(old: Option<&Value>, spec: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let class = &spec["loadBalancerClass"];
    let is_load_balancer = text(&spec["type"]) == "LoadBalancer";
    if let Some(old) = old
        && text(&old["type"]) == "LoadBalancer"
        && is_load_balancer
        && old["loadBalancerClass"].as_str() != class.as_str()
    {
        errs.push(invalid_printed(
            "spec.loadBalancerClass",
            &go_optional_string(class),
            "may not change once set",
        ));
    }
    if is_load_balancer {
        if let Some(class) = class.as_str() {
            for msg in is_qualified_name(class) {
                errs.push(FieldError::invalid("spec.loadBalancerClass", class, msg));
            }
        }
    } else if is_set(class) {
        errs.push(FieldError::forbidden(
            "spec.loadBalancerClass",
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    errs
}

fn validate_external_traffic_policy(spec: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let policy = text(&spec["externalTrafficPolicy"]);
    if !externally_accessible(spec) {
        if !policy.is_empty() {
            errs.push(FieldError::invalid(
                "spec.externalTrafficPolicy",
                policy,
                "may only be set for externally-accessible services",
            ));
        }
    } else if policy.is_empty() {
        errs.push(FieldError::required("spec.externalTrafficPolicy", ""));
    } else if !TRAFFIC_POLICIES.contains(&policy) {
        errs.push(FieldError::not_supported(
            "spec.externalTrafficPolicy",
            policy,
            TRAFFIC_POLICIES,
        ));
    }

    let health_check_port = int(&spec["healthCheckNodePort"]);
    if !needs_health_check(spec) {
        if health_check_port != 0 {
            errs.push(invalid_int(
                "spec.healthCheckNodePort",
                health_check_port,
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            ));
        }
    } else if health_check_port == 0 {
        errs.push(FieldError::required("spec.healthCheckNodePort", ""));
    } else {
        for msg in is_valid_port_num(health_check_port) {
            errs.push(invalid_int(
                "spec.healthCheckNodePort",
                health_check_port,
                &msg,
            ));
        }
    }
    errs
}

fn validate_internal_traffic_policy(spec: &Value) -> Vec<FieldError> {
    let policy = &spec["internalTrafficPolicy"];
    if !is_set(policy) {
        // Not required for ExternalName, for historical reasons.
        if matches!(
            text(&spec["type"]),
            "ClusterIP" | "NodePort" | "LoadBalancer"
        ) {
            return vec![FieldError::required("spec.internalTrafficPolicy", "")];
        }
        return Vec::new();
    }
    let policy = text(policy);
    if TRAFFIC_POLICIES.contains(&policy) {
        Vec::new()
    } else {
        vec![FieldError::not_supported(
            "spec.internalTrafficPolicy",
            policy,
            TRAFFIC_POLICIES,
        )]
    }
}
