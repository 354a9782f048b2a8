//! networking.k8s.io/v1 Ingress validation, after upstream's
//! `ValidateIngressCreate`, `ValidateIngressUpdate` and `ValidateIngressSpec`
//! (k8s.io/kubernetes pkg/apis/networking/validation), with the defaults of
//! Kubernetes 1.33 (Service names are DNS-1035 labels).
//!
//! An Ingress needs rules or a default backend; hosts are DNS subdomains or
//! `*.` wildcards; every path has a `pathType`, and Exact and Prefix paths
//! are absolute and free of `//`, `/./`, `/../` and encoded slashes; a
//! backend names a Service and one port (by name or number) or a resource.
//!
//! Legacy (`extensions`/`networking.k8s.io` v1beta1) objects are validated
//! after their conversion to v1.

use serde_json::Value;

use super::common::{
    check_name, child, index, int, invalid_int, invalid_printed, is_set, is_valid_port_name,
    is_valid_port_num, is_wildcard_dns1123_subdomain, items, parse_ip_sloppy, text,
};
use super::{FieldError, is_dns1035_label, is_dns1123_subdomain, is_valid_path_segment_name};

const PATH_TYPES: &[&str] = &["Exact", "ImplementationSpecific", "Prefix"];
const INVALID_PATH_SEQUENCES: &[&str] = &["//", "/./", "/../", "%2f", "%2F"];
const INVALID_PATH_SUFFIXES: &[&str] = &["/..", "/."];
const INGRESS_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// Upstream tolerates, on update, values the object already held before
/// the rules were tightened.
#[derive(Default, Clone, Copy)]
struct Options {
    allow_invalid_secret_name: bool,
    allow_invalid_wildcard_host_rule: bool,
}

/// `ValidateIngressCreate` without the metadata checks.
pub(super) fn validate_ingress(ingress: &Value) -> Vec<FieldError> {
    let mut errs = validate_ingress_spec(&ingress["spec"], Options::default());
    let annotation = ingress["metadata"]["annotations"][INGRESS_CLASS_ANNOTATION].as_str();
    let class_name = ingress["spec"]["ingressClassName"].as_str();
    if let (Some(annotation), Some(class_name)) = (annotation, class_name)
        && annotation != class_name
    {
        errs.push(FieldError::invalid(
            format!("annotations.{INGRESS_CLASS_ANNOTATION}"),
            annotation,
            "must match `ingressClassName` when both are specified",
        ));
    }
    errs
}

/// `ValidateIngressUpdate` without the metadata checks.
pub(super) fn validate_ingress_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let old_spec = &old["spec"];
    let opts = Options {
        allow_invalid_secret_name: items(&old_spec["tls"])
            .iter()
            .any(|tls| !tls_secret_name_errors(text(&tls["secretName"])).is_empty()),
        allow_invalid_wildcard_host_rule: items(&old_spec["rules"]).iter().any(|rule| {
            text(&rule["host"]).contains('*') && !validate_rule_value(rule, "").is_empty()
        }),
    };
    validate_ingress_spec(&new["spec"], opts)
}

fn tls_secret_name_errors(name: &str) -> Vec<String> {
    if name.is_empty() {
        Vec::new()
    } else {
        is_dns1123_subdomain(name)
    }
}

fn validate_ingress_spec(spec: &Value, opts: Options) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let rules = items(&spec["rules"]);
    let default_backend = &spec["defaultBackend"];
    if rules.is_empty() && !is_set(default_backend) {
        let printed = if spec["rules"].is_array() {
            "[]networking.IngressRule{}"
        } else {
            "[]networking.IngressRule(nil)"
        };
        errs.push(invalid_printed(
            "spec",
            printed,
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if is_set(default_backend) {
        errs.extend(validate_backend(default_backend, "spec.defaultBackend"));
    }
    for (i, rule) in rules.iter().enumerate() {
        let rule_path = index("spec.rules", i);
        let host = text(&rule["host"]);
        let host_path = child(&rule_path, "host");
        let mut wildcard = false;
        if !host.is_empty() {
            if parse_ip_sloppy(host).is_some() {
                errs.push(FieldError::invalid(
                    &host_path,
                    host,
                    "must be a DNS name, not an IP address",
                ));
            }
            if host.contains('*') {
                wildcard = true;
                errs.extend(check_name(&host_path, host, is_wildcard_dns1123_subdomain));
            } else {
                errs.extend(check_name(&host_path, host, is_dns1123_subdomain));
            }
        }
        if !wildcard || !opts.allow_invalid_wildcard_host_rule {
            errs.extend(validate_rule_value(rule, &rule_path));
        }
    }
    for (i, tls) in items(&spec["tls"]).iter().enumerate() {
        let tls_path = index("spec.tls", i);
        let hosts_path = child(&tls_path, "hosts");
        for (j, host) in items(&tls["hosts"]).iter().enumerate() {
            let host = text(host);
            let rule: fn(&str) -> Vec<String> = if host.contains('*') {
                is_wildcard_dns1123_subdomain
            } else {
                is_dns1123_subdomain
            };
            errs.extend(check_name(&index(&hosts_path, j), host, rule));
        }
        if !opts.allow_invalid_secret_name {
            let secret = text(&tls["secretName"]);
            for msg in tls_secret_name_errors(secret) {
                errs.push(FieldError::invalid(
                    child(&tls_path, "secretName"),
                    secret,
                    msg,
                ));
            }
        }
    }
    if let Some(class_name) = spec["ingressClassName"].as_str() {
        errs.extend(check_name(
            "spec.ingressClassName",
            class_name,
            is_dns1123_subdomain,
        ));
    }
    errs
}

/// The `http` part of a rule: at least one path, each valid.
fn validate_rule_value(rule: &Value, rule_path: &str) -> Vec<FieldError> {
    let http = &rule["http"];
    if !is_set(http) {
        return Vec::new();
    }
    let mut errs = Vec::new();
    let http_path = child(rule_path, "http");
    let paths_path = child(&http_path, "paths");
    let paths = items(&http["paths"]);
    if paths.is_empty() {
        errs.push(FieldError::required(&paths_path, ""));
    }
    for (i, path) in paths.iter().enumerate() {
        errs.extend(validate_http_path(path, &index(&paths_path, i)));
    }
    errs
}

fn validate_http_path(http_path: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if !is_set(&http_path["pathType"]) {
        return vec![FieldError::required(
            child(path, "pathType"),
            "pathType must be specified",
        )];
    }
    let value = text(&http_path["path"]);
    let value_path = child(path, "path");
    match text(&http_path["pathType"]) {
        "Exact" | "Prefix" => {
            if !value.starts_with('/') {
                errs.push(FieldError::invalid(
                    &value_path,
                    value,
                    "must be an absolute path",
                ));
            }
            if !value.is_empty() {
                for sequence in INVALID_PATH_SEQUENCES {
                    if value.contains(sequence) {
                        errs.push(FieldError::invalid(
                            &value_path,
                            value,
                            format!("must not contain '{sequence}'"),
                        ));
                    }
                }
                for suffix in INVALID_PATH_SUFFIXES {
                    if value.ends_with(suffix) {
                        errs.push(FieldError::invalid(
                            &value_path,
                            value,
                            format!("cannot end with '{suffix}'"),
                        ));
                    }
                }
            }
        }
        "ImplementationSpecific" => {
            if !value.is_empty() && !value.starts_with('/') {
                errs.push(FieldError::invalid(
                    &value_path,
                    value,
                    "must be an absolute path",
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            child(path, "pathType"),
            other,
            PATH_TYPES,
        )),
    }
    errs.extend(validate_backend(
        &http_path["backend"],
        &child(path, "backend"),
    ));
    errs
}

/// `validateIngressBackend`: exactly one of a Service (with a port name or
/// number) or a typed resource reference.
fn validate_backend(backend: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let resource = &backend["resource"];
    let service = &backend["service"];
    match (is_set(resource), is_set(service)) {
        (true, true) => {
            return vec![FieldError::invalid(
                path,
                "",
                "cannot set both resource and service backends",
            )];
        }
        (true, false) => errs.extend(validate_resource_reference(
            resource,
            &child(path, "resource"),
        )),
        (false, true) => {
            let name = text(&service["name"]);
            let name_path = child(path, "service.name");
            if name.is_empty() {
                errs.push(FieldError::required(name_path, ""));
            } else {
                errs.extend(check_name(&name_path, name, is_dns1035_label));
            }
            let port = &service["port"];
            let port_name = text(&port["name"]);
            let port_number = int(&port["number"]);
            match (!port_name.is_empty(), port_number != 0) {
                (true, true) => errs.push(FieldError::invalid(
                    path,
                    "",
                    "cannot set both port name & port number",
                )),
                (true, false) => errs.extend(check_name(
                    &child(path, "service.port.name"),
                    port_name,
                    is_valid_port_name,
                )),
                (false, true) => {
                    for msg in is_valid_port_num(port_number) {
                        errs.push(invalid_int(
                            child(path, "service.port.number"),
                            port_number,
                            &msg,
                        ));
                    }
                }
                (false, false) => errs.push(FieldError::required(
                    path,
                    "port name or number is required",
                )),
            }
        }
        (false, false) => errs.push(FieldError::invalid(
            path,
            "",
            "resource or service backend is required",
        )),
    }
    errs
}

/// `validateIngressTypedLocalObjectReference`.
fn validate_resource_reference(resource: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(group) = resource["apiGroup"].as_str() {
        errs.extend(check_name(
            &child(path, "apiGroup"),
            group,
            is_dns1123_subdomain,
        ));
    }
    for field in ["kind", "name"] {
        let value = text(&resource[field]);
        let field_path = child(path, field);
        if value.is_empty() {
            errs.push(FieldError::required(field_path, ""));
        } else {
            errs.extend(check_name(&field_path, value, is_valid_path_segment_name));
        }
    }
    errs
}
