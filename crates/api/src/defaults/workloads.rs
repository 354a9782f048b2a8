//! Defaults of Pods and of the pod templates in workloads: upstream's
//! `SetDefaults_Pod`, `SetDefaults_PodSpec`, `SetDefaults_Container`,
//! probe, handler and volume defaults, and the apps/v1 Deployment and
//! DaemonSet defaults.

use serde_json::{Map, Value, json};

use super::{
    default_int, default_string, default_value, object_at, object_at_map, objects_in, str_of,
};

/// Defaults of a Pod: its spec, plus what only Pods (not templates) get.
pub(super) fn pod(obj: &mut Value) {
    let Some(spec) = object_at(obj, "spec") else {
        return;
    };
    pod_spec(spec);
    default_value(spec, "enableServiceLinks", json!(true));
    let host_network = spec.get("hostNetwork") == Some(&json!(true));
    for list in ["containers", "initContainers"] {
        for container in objects_in(spec, list) {
            requests_from_limits(container);
            if host_network {
                for port in objects_in(container, "ports") {
                    let container_port = port.get("containerPort").cloned().unwrap_or(json!(0));
                    let slot = port.entry("hostPort").or_insert(Value::Null);
                    if slot.is_null() || *slot == 0 {
                        *slot = container_port;
                    }
                }
            }
        }
    }
}

/// A container with limits but no request for a resource requests its
/// limit.
fn requests_from_limits(container: &mut Map<String, Value>) {
    let Some(resources) = container
        .get_mut("resources")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let Some(limits) = resources
        .get("limits")
        .and_then(Value::as_object)
        .filter(|limits| !limits.is_empty())
        .cloned()
    else {
        return;
    };
    let Some(requests) = object_at_map(resources, "requests") else {
        return;
    };
    for (name, quantity) in limits {
        requests.entry(name).or_insert(quantity);
    }
}

/// `spec.template.spec` of a workload.
pub(super) fn pod_template(obj: &mut Value) {
    if let Some(template) = object_at(obj, "spec").and_then(|spec| object_at_map(spec, "template"))
        && let Some(spec) = object_at_map(template, "spec")
    {
        pod_spec(spec);
    }
}

/// `SetDefaults_PodSpec` and the defaults of everything a PodSpec holds.
fn pod_spec(spec: &mut Map<String, Value>) {
    default_string(spec, "dnsPolicy", "ClusterFirst");
    default_string(spec, "restartPolicy", "Always");
    default_value(spec, "securityContext", json!({}));
    default_value(spec, "terminationGracePeriodSeconds", json!(30));
    default_string(spec, "schedulerName", "default-scheduler");
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for container in objects_in(spec, list) {
            container_defaults(container);
        }
    }
    for volume in objects_in(spec, "volumes") {
        volume_defaults(volume);
    }
}

/// `SetDefaults_Container`, container ports, probes, hooks and env.
fn container_defaults(container: &mut Map<String, Value>) {
    let image = str_of(container, "image").to_string();
    let policy = if image_tag(&image) == Some("latest") {
        "Always"
    } else {
        "IfNotPresent"
    };
    default_string(container, "imagePullPolicy", policy);
    default_string(container, "terminationMessagePath", "/dev/termination-log");
    default_string(container, "terminationMessagePolicy", "File");
    for port in objects_in(container, "ports") {
        default_string(port, "protocol", "TCP");
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(probe) = container.get_mut(probe).and_then(Value::as_object_mut) {
            default_int(probe, "timeoutSeconds", 1);
            default_int(probe, "periodSeconds", 10);
            default_int(probe, "successThreshold", 1);
            default_int(probe, "failureThreshold", 3);
            http_get_defaults(probe);
        }
    }
    if let Some(lifecycle) = container
        .get_mut("lifecycle")
        .and_then(Value::as_object_mut)
    {
        for hook in ["postStart", "preStop"] {
            if let Some(hook) = lifecycle.get_mut(hook).and_then(Value::as_object_mut) {
                http_get_defaults(hook);
            }
        }
    }
    for var in objects_in(container, "env") {
        if let Some(field_ref) = var
            .get_mut("valueFrom")
            .and_then(|v| v.get_mut("fieldRef"))
            .and_then(Value::as_object_mut)
        {
            default_string(field_ref, "apiVersion", "v1");
        }
    }
}

fn http_get_defaults(handler: &mut Map<String, Value>) {
    if let Some(http_get) = handler.get_mut("httpGet").and_then(Value::as_object_mut) {
        default_string(http_get, "path", "/");
        default_string(http_get, "scheme", "HTTP");
    }
}

/// The tag `parsers.ParseImageName` finds: `latest` when an image has
/// neither tag nor digest, `None` for a digest-only or unparsable reference.
pub(super) fn image_tag(image: &str) -> Option<&str> {
    if image.is_empty()
        || image
            .bytes()
            .any(|b| b.is_ascii_uppercase() || b.is_ascii_whitespace())
    {
        return None;
    }
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    let last_segment_start = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_segment_start..].rsplit_once(':') {
        Some((_, tag)) if !tag.is_empty() => Some(tag),
        Some(_) => None,
        None if digest.is_some() => None,
        None => Some("latest"),
    }
}

/// `SetDefaults_Volume` and the file-mode defaults of projected sources.
fn volume_defaults(volume: &mut Map<String, Value>) {
    if volume
        .iter()
        .all(|(key, value)| key == "name" || value.is_null())
    {
        volume.insert("emptyDir".into(), json!({}));
    }
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(source) = volume.get_mut(source).and_then(Value::as_object_mut) {
            default_value(source, "defaultMode", json!(420));
        }
    }
    if let Some(host_path) = volume.get_mut("hostPath").and_then(Value::as_object_mut) {
        default_value(host_path, "type", json!(""));
    }
    let field_refs = |source: &mut Map<String, Value>| {
        for item in objects_in(source, "items") {
            if let Some(field_ref) = item.get_mut("fieldRef").and_then(Value::as_object_mut) {
                default_string(field_ref, "apiVersion", "v1");
            }
        }
    };
    if let Some(source) = volume.get_mut("downwardAPI").and_then(Value::as_object_mut) {
        field_refs(source);
    }
    if let Some(projected) = volume.get_mut("projected").and_then(Value::as_object_mut) {
        for source in objects_in(projected, "sources") {
            if let Some(token) = source
                .get_mut("serviceAccountToken")
                .and_then(Value::as_object_mut)
            {
                default_value(token, "expirationSeconds", json!(3600));
            }
            if let Some(downward) = source.get_mut("downwardAPI").and_then(Value::as_object_mut) {
                field_refs(downward);
            }
        }
    }
}

pub(super) fn deployment(obj: &mut Value) {
    if let Some(spec) = object_at(obj, "spec") {
        default_value(spec, "replicas", json!(1));
        if let Some(strategy) = object_at_map(spec, "strategy") {
            default_string(strategy, "type", "RollingUpdate");
            if str_of(strategy, "type") == "RollingUpdate"
                && let Some(rolling) = object_at_map(strategy, "rollingUpdate")
            {
                default_value(rolling, "maxUnavailable", json!("25%"));
                default_value(rolling, "maxSurge", json!("25%"));
            }
        }
        default_value(spec, "revisionHistoryLimit", json!(10));
        default_value(spec, "progressDeadlineSeconds", json!(600));
    }
    pod_template(obj);
}

pub(super) fn daemon_set(obj: &mut Value) {
    if let Some(spec) = object_at(obj, "spec") {
        if let Some(strategy) = object_at_map(spec, "updateStrategy") {
            default_string(strategy, "type", "RollingUpdate");
            if str_of(strategy, "type") == "RollingUpdate"
                && let Some(rolling) = object_at_map(strategy, "rollingUpdate")
            {
                default_value(rolling, "maxUnavailable", json!(1));
                default_value(rolling, "maxSurge", json!(0));
            }
        }
        default_value(spec, "revisionHistoryLimit", json!(10));
    }
    pod_template(obj);
}
