//! Pod and pod-template validation, after upstream's `ValidatePodSpec`,
//! `ValidatePodTemplateSpec`, `ValidatePodCreate` and `ValidatePodUpdate`
//! (k8s.io/kubernetes pkg/apis/core/validation).
//!
//! This covers what a networking stack relies on and what users trip over:
//! containers (names, images, ports, pull and termination-message
//! policies, environment names, volume mounts), volume names, restart and
//! DNS policies, host and node names, and the immutability of a Pod's spec.
//! Resources, probes' contents, security contexts, affinity, tolerations
//! and topology spread are not checked.

use std::collections::HashSet;

use serde_json::Value;

use super::common::{
    check_name, child, index, int, invalid_int, invalid_printed, is_set, is_valid_ip,
    is_valid_port_name, is_valid_port_num, items, len_of, semantically_equal, text,
};
use super::{
    FieldError, is_dns1123_label, is_dns1123_subdomain, is_qualified_name, validate_annotations,
    validate_labels,
};

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const TERMINATION_MESSAGE_POLICIES: &[&str] = &["File", "FallbackToLogsOnError"];
const PREEMPTION_POLICIES: &[&str] = &["PreemptLowerPriority", "Never"];
/// `MaxDNSNameservers`.
const MAX_DNS_NAMESERVERS: usize = 3;

const POD_UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// `ValidatePodCreate` without the metadata checks.
pub(super) fn validate_pod(pod: &Value) -> Vec<FieldError> {
    let spec = &pod["spec"];
    let mut errs = validate_pod_common(spec);
    if len_of(&spec["ephemeralContainers"]) > 0 {
        errs.push(FieldError::forbidden(
            "spec.ephemeralContainers",
            "cannot be set on create",
        ));
    }
    errs
}

/// The spec checks a Pod gets on create and on update.
fn validate_pod_common(spec: &Value) -> Vec<FieldError> {
    let mut errs = validate_pod_spec(spec, "spec");
    // `validateContainersOnlyForPod`: templates tolerate a blank image, Pods
    // do not.
    for list in ["containers", "initContainers"] {
        let list_path = child("spec", list);
        for (i, container) in items(&spec[list]).iter().enumerate() {
            let image = text(&container["image"]);
            if image.len() != image.trim().len() {
                errs.push(FieldError::invalid(
                    child(&index(&list_path, i), "image"),
                    image,
                    "must not have leading or trailing whitespace",
                ));
            }
        }
    }
    errs
}

/// `ValidatePodUpdate` without the metadata checks: only images,
/// `activeDeadlineSeconds`, tolerations and a negative grace period may
/// change. (Upstream appends a diff of the two specs to the message; this
/// does not.)
pub(super) fn validate_pod_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = validate_pod_common(&new["spec"]);
    let mut munged = new["spec"].clone();
    let old_spec = &old["spec"];
    if let Some(spec) = munged.as_object_mut() {
        for list in ["containers", "initContainers"] {
            if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
                for (i, container) in containers.iter_mut().enumerate() {
                    if let Some(c) = container.as_object_mut() {
                        match old_spec[list][i].get("image") {
                            Some(image) => c.insert("image".into(), image.clone()),
                            None => c.remove("image"),
                        };
                    }
                }
            }
        }
        for key in ["activeDeadlineSeconds", "tolerations"] {
            match old_spec.get(key) {
                Some(v) => spec.insert(key.into(), v.clone()),
                None => spec.remove(key),
            };
        }
        let old_grace = old_spec["terminationGracePeriodSeconds"].as_i64();
        if old_grace.is_some_and(|g| g < 0) && spec["terminationGracePeriodSeconds"] == 1 {
            spec.insert(
                "terminationGracePeriodSeconds".into(),
                old_spec["terminationGracePeriodSeconds"].clone(),
            );
        }
    }
    if !semantically_equal(&munged, old_spec) {
        errs.push(FieldError::forbidden("spec", POD_UPDATE_FORBIDDEN));
    }
    errs
}

/// `ValidatePodTemplateSpec` on `template` at `path` (e.g.
/// `spec.template`). Upstream reports template labels and annotations at
/// `<path>.labels`, without `metadata`.
pub(super) fn validate_pod_template_spec(template: &Value, path: &str) -> Vec<FieldError> {
    let metadata = &template["metadata"];
    let mut errs = validate_labels(&metadata["labels"], &child(path, "labels"));
    errs.extend(validate_annotations(
        &metadata["annotations"],
        &child(path, "annotations"),
    ));
    let spec_path = child(path, "spec");
    errs.extend(validate_pod_spec(&template["spec"], &spec_path));
    if len_of(&template["spec"]["ephemeralContainers"]) > 0 {
        errs.push(FieldError::forbidden(
            child(&spec_path, "ephemeralContainers"),
            "ephemeral containers not allowed in pod template",
        ));
    }
    errs
}

/// `ValidatePodSpec` on `spec` at `path`.
pub(super) fn validate_pod_spec(spec: &Value, path: &str) -> Vec<FieldError> {
    let (mut errs, volumes) = validate_volumes(&spec["volumes"], &child(path, "volumes"));
    errs.extend(validate_containers(
        &spec["containers"],
        &volumes,
        &child(path, "containers"),
    ));
    errs.extend(validate_init_containers(
        &spec["initContainers"],
        &spec["containers"],
        &volumes,
        &child(path, "initContainers"),
    ));
    errs.extend(one_of(
        &spec["restartPolicy"],
        &child(path, "restartPolicy"),
        RESTART_POLICIES,
    ));
    let dns_policy_path = child(path, "dnsPolicy");
    errs.extend(one_of(&spec["dnsPolicy"], &dns_policy_path, DNS_POLICIES));
    errs.extend(validate_labels(
        &spec["nodeSelector"],
        &child(path, "nodeSelector"),
    ));
    errs.extend(validate_dns_config(spec, &child(path, "dnsConfig")));
    let gates_path = child(path, "readinessGates");
    for (i, gate) in items(&spec["readinessGates"]).iter().enumerate() {
        let condition = text(&gate["conditionType"]);
        errs.extend(check_name(
            &child(&index(&gates_path, i), "conditionType"),
            condition,
            is_qualified_name,
        ));
    }
    for (field, rule) in [
        (
            "serviceAccountName",
            is_dns1123_subdomain as fn(&str) -> Vec<String>,
        ),
        ("nodeName", is_dns1123_subdomain),
    ] {
        let value = text(&spec[field]);
        if !value.is_empty() {
            errs.extend(check_name(&child(path, field), value, rule));
        }
    }
    if is_set(&spec["activeDeadlineSeconds"]) {
        let value = int(&spec["activeDeadlineSeconds"]);
        if !(1..=i64::from(i32::MAX)).contains(&value) {
            errs.push(invalid_int(
                child(path, "activeDeadlineSeconds"),
                value,
                "must be between 1 and 2147483647, inclusive",
            ));
        }
    }
    for field in ["hostname", "subdomain"] {
        let value = text(&spec[field]);
        if !value.is_empty() {
            errs.extend(check_name(&child(path, field), value, is_dns1123_label));
        }
    }
    let aliases_path = child(path, "hostAliases");
    for (i, alias) in items(&spec["hostAliases"]).iter().enumerate() {
        let alias_path = index(&aliases_path, i);
        errs.extend(is_valid_ip(&child(&alias_path, "ip"), text(&alias["ip"])));
        let hostnames_path = child(&alias_path, "hostnames");
        for (j, hostname) in items(&alias["hostnames"]).iter().enumerate() {
            errs.extend(check_name(
                &index(&hostnames_path, j),
                text(hostname),
                is_dns1123_subdomain,
            ));
        }
    }
    let priority_class = text(&spec["priorityClassName"]);
    if !priority_class.is_empty() {
        errs.extend(check_name(
            &child(path, "priorityClassName"),
            priority_class,
            is_dns1123_subdomain,
        ));
    }
    if let Some(runtime_class) = spec["runtimeClassName"].as_str() {
        errs.extend(check_name(
            &child(path, "runtimeClassName"),
            runtime_class,
            is_dns1123_subdomain,
        ));
    }
    if is_set(&spec["preemptionPolicy"]) {
        errs.extend(one_of(
            &spec["preemptionPolicy"],
            &child(path, "preemptionPolicy"),
            PREEMPTION_POLICIES,
        ));
    }
    errs
}

/// A required enum field: `Required` when empty, `NotSupported` when
/// unknown (with the values in upstream's order).
fn one_of(value: &Value, path: &str, supported: &[&str]) -> Vec<FieldError> {
    let value = text(value);
    if value.is_empty() {
        vec![FieldError::required(path, "")]
    } else if supported.contains(&value) {
        Vec::new()
    } else {
        vec![FieldError::not_supported(path, value, supported)]
    }
}

/// Volume names: required, DNS labels and unique. Returns the names of the
/// valid volumes, which mounts may refer to.
fn validate_volumes(volumes: &Value, path: &str) -> (Vec<FieldError>, HashSet<String>) {
    let mut errs = Vec::new();
    let mut names = HashSet::new();
    for (i, volume) in items(volumes).iter().enumerate() {
        let name_path = child(&index(path, i), "name");
        let name = text(&volume["name"]);
        let mut volume_errs = if name.is_empty() {
            vec![FieldError::required(&name_path, "")]
        } else {
            check_name(&name_path, name, is_dns1123_label)
        };
        if names.contains(name) {
            volume_errs.push(FieldError::duplicate(&name_path, name));
        }
        if volume_errs.is_empty() {
            names.insert(name.to_string());
        }
        errs.extend(volume_errs);
    }
    (errs, names)
}

fn validate_containers(
    containers: &Value,
    volumes: &HashSet<String>,
    path: &str,
) -> Vec<FieldError> {
    let list = items(containers);
    if list.is_empty() {
        return vec![FieldError::required(path, "")];
    }
    let mut errs = Vec::new();
    let mut names = HashSet::new();
    for (i, container) in list.iter().enumerate() {
        let container_path = index(path, i);
        errs.extend(validate_container_common(
            container,
            volumes,
            &container_path,
        ));
        let name = text(&container["name"]);
        if !names.insert(name) {
            errs.push(FieldError::duplicate(child(&container_path, "name"), name));
        }
        if is_set(&container["restartPolicy"]) {
            errs.push(FieldError::forbidden(
                child(&container_path, "restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
    }
    errs.extend(host_port_conflicts(list, path));
    errs
}

fn validate_init_containers(
    containers: &Value,
    regular: &Value,
    volumes: &HashSet<String>,
    path: &str,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut names: HashSet<&str> = items(regular).iter().map(|c| text(&c["name"])).collect();
    for (i, container) in items(containers).iter().enumerate() {
        let container_path = index(path, i);
        errs.extend(validate_container_common(
            container,
            volumes,
            &container_path,
        ));
        let restart_policy = &container["restartPolicy"];
        let restart_always = text(restart_policy) == "Always";
        if is_set(restart_policy) && !restart_always {
            errs.push(FieldError::not_supported(
                child(&container_path, "restartPolicy"),
                text(restart_policy),
                &["Always"],
            ));
        }
        let name = text(&container["name"]);
        if names.contains(name) {
            errs.push(FieldError::duplicate(child(&container_path, "name"), name));
        } else if !name.is_empty() {
            names.insert(name);
        }
        // Init containers run one at a time, so only a container's own
        // ports can conflict (upstream reports them at index 0).
        errs.extend(host_port_conflicts(std::slice::from_ref(container), path));
        if !restart_always {
            for field in [
                "lifecycle",
                "livenessProbe",
                "readinessProbe",
                "startupProbe",
            ] {
                if is_set(&container[field]) {
                    errs.push(FieldError::forbidden(
                        child(&container_path, field),
                        "may not be set for init containers without restartPolicy=Always",
                    ));
                }
            }
        }
    }
    errs
}

/// `validateContainerCommon`.
fn validate_container_common(
    container: &Value,
    volumes: &HashSet<String>,
    path: &str,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = text(&container["name"]);
    let name_path = child(path, "name");
    if name.is_empty() {
        errs.push(FieldError::required(name_path, ""));
    } else {
        errs.extend(check_name(&name_path, name, is_dns1123_label));
    }
    if text(&container["image"]).is_empty() {
        errs.push(FieldError::required(child(path, "image"), ""));
    }
    errs.extend(one_of(
        &container["terminationMessagePolicy"],
        &child(path, "terminationMessagePolicy"),
        TERMINATION_MESSAGE_POLICIES,
    ));
    errs.extend(validate_container_ports(
        &container["ports"],
        &child(path, "ports"),
    ));
    errs.extend(validate_env(&container["env"], &child(path, "env")));
    errs.extend(validate_volume_mounts(
        &container["volumeMounts"],
        volumes,
        &child(path, "volumeMounts"),
    ));
    errs.extend(one_of(
        &container["imagePullPolicy"],
        &child(path, "imagePullPolicy"),
        PULL_POLICIES,
    ));
    errs
}

/// `validateContainerPorts`.
fn validate_container_ports(ports: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut names = HashSet::new();
    for (i, port) in items(ports).iter().enumerate() {
        let port_path = index(path, i);
        let name = text(&port["name"]);
        if !name.is_empty() {
            let msgs = is_valid_port_name(name);
            if !msgs.is_empty() {
                for msg in msgs {
                    errs.push(FieldError::invalid(child(&port_path, "name"), name, msg));
                }
            } else if !names.insert(name) {
                errs.push(FieldError::duplicate(child(&port_path, "name"), name));
            }
        }
        let container_port = int(&port["containerPort"]);
        if container_port == 0 {
            errs.push(FieldError::required(child(&port_path, "containerPort"), ""));
        } else {
            for msg in is_valid_port_num(container_port) {
                errs.push(invalid_int(
                    child(&port_path, "containerPort"),
                    container_port,
                    &msg,
                ));
            }
        }
        let host_port = int(&port["hostPort"]);
        if host_port != 0 {
            for msg in is_valid_port_num(host_port) {
                errs.push(invalid_int(child(&port_path, "hostPort"), host_port, &msg));
            }
        }
        let protocol = text(&port["protocol"]);
        if protocol.is_empty() {
            errs.push(FieldError::required(child(&port_path, "protocol"), ""));
        } else if !PROTOCOLS.contains(&protocol) {
            errs.push(FieldError::not_supported(
                child(&port_path, "protocol"),
                protocol,
                PROTOCOLS,
            ));
        }
    }
    errs
}

/// `AccumulateUniqueHostPorts`: one `protocol/hostIP/hostPort` per Pod.
fn host_port_conflicts(containers: &[Value], path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut seen = HashSet::new();
    for (ci, container) in containers.iter().enumerate() {
        let ports_path = child(&index(path, ci), "ports");
        for (pi, port) in items(&container["ports"]).iter().enumerate() {
            let host_port = int(&port["hostPort"]);
            if host_port == 0 {
                continue;
            }
            let key = format!(
                "{}/{}/{host_port}",
                text(&port["protocol"]),
                text(&port["hostIP"])
            );
            if seen.contains(&key) {
                errs.push(FieldError::duplicate(
                    child(&index(&ports_path, pi), "hostPort"),
                    key,
                ));
            } else {
                seen.insert(key);
            }
        }
    }
    errs
}

/// `ValidateEnv` names, with the relaxed rule that is on by default since
/// Kubernetes 1.32 (any printable ASCII but '=').
fn validate_env(env: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, var) in items(env).iter().enumerate() {
        let name_path = child(&index(path, i), "name");
        let name = text(&var["name"]);
        if name.is_empty() {
            errs.push(FieldError::required(name_path, ""));
        } else if name.chars().any(|c| !(' '..='~').contains(&c) || c == '=') {
            errs.push(FieldError::invalid(
                name_path,
                name,
                "a valid environment variable name must consist only of printable ASCII characters other than '='",
            ));
        }
    }
    errs
}

/// `ValidateVolumeMounts`: a mount names a volume of the Pod and has a
/// unique, non-empty path.
fn validate_volume_mounts(
    mounts: &Value,
    volumes: &HashSet<String>,
    path: &str,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut mount_points = HashSet::new();
    for (i, mount) in items(mounts).iter().enumerate() {
        let mount_path = index(path, i);
        let name = text(&mount["name"]);
        if name.is_empty() {
            errs.push(FieldError::required(child(&mount_path, "name"), ""));
        }
        if !volumes.contains(name) {
            errs.push(FieldError::not_found(child(&mount_path, "name"), name));
        }
        let target = text(&mount["mountPath"]);
        if target.is_empty() {
            errs.push(FieldError::required(child(&mount_path, "mountPath"), ""));
        }
        if !mount_points.insert(target) {
            errs.push(FieldError::invalid(
                child(&mount_path, "mountPath"),
                target,
                "must be unique",
            ));
        }
    }
    errs
}

/// `validatePodDNSConfig`: `dnsPolicy: None` needs nameservers, and at most
/// three valid ones.
fn validate_dns_config(spec: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let config = &spec["dnsConfig"];
    if text(&spec["dnsPolicy"]) == "None" {
        if !is_set(config) {
            return vec![FieldError::required(
                path,
                "must provide `dnsConfig` when `dnsPolicy` is None",
            )];
        }
        if len_of(&config["nameservers"]) == 0 {
            return vec![FieldError::required(
                child(path, "nameservers"),
                "must provide at least one DNS nameserver when `dnsPolicy` is None",
            )];
        }
    }
    let nameservers_path = child(path, "nameservers");
    let nameservers = items(&config["nameservers"]);
    if nameservers.len() > MAX_DNS_NAMESERVERS {
        errs.push(invalid_printed(
            &nameservers_path,
            &super::common::go_string_slice(&config["nameservers"]),
            &format!("must not have more than {MAX_DNS_NAMESERVERS} nameservers"),
        ));
    }
    for (i, nameserver) in nameservers.iter().enumerate() {
        errs.extend(is_valid_ip(&index(&nameservers_path, i), text(nameserver)));
    }
    errs
}
