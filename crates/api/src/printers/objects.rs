//! Tables for cluster and configuration objects: Node, Namespace, Secret,
//! ConfigMap, ServiceAccount, Lease and Event.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde_json::Value;

use super::format::{age, entries, integer, items, name, or_none, since, text, timestamp};
use super::{AGE, Column, NAME, column, wide};

pub(super) const NODE_COLUMNS: &[Column] = &[
    NAME,
    column("Status", "string", "The status of the node"),
    column("Roles", "string", "The roles of the node"),
    AGE,
    column("Version", "string", "Kubelet Version reported by the node."),
    wide(column("Internal-IP", "string", NODE_ADDRESSES_DESCRIPTION)),
    wide(column("External-IP", "string", NODE_ADDRESSES_DESCRIPTION)),
    wide(column(
        "OS-Image",
        "string",
        "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
    )),
    wide(column(
        "Kernel-Version",
        "string",
        "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
    )),
    wide(column(
        "Container-Runtime",
        "string",
        "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
    )),
];

const NODE_ADDRESSES_DESCRIPTION: &str = "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).";

pub(super) fn node(node: &Value, now: Timestamp) -> Vec<Value> {
    let status = &node["status"];
    let info = &status["nodeInfo"];
    let or_unknown = |field: &str| match text(&info[field]) {
        "" => "<unknown>".to_string(),
        value => value.to_string(),
    };
    vec![
        name(node).into(),
        node_status(node).into(),
        or_none(&node_roles(&node["metadata"]["labels"]).join(",")).into(),
        age(node, now).into(),
        text(&info["kubeletVersion"]).into(),
        node_address(status, "InternalIP").into(),
        node_address(status, "ExternalIP").into(),
        or_unknown("osImage").into(),
        or_unknown("kernelVersion").into(),
        or_unknown("containerRuntimeVersion").into(),
    ]
}

/// `Ready`, `NotReady` or `Unknown` (no Ready condition), plus
/// `,SchedulingDisabled` for cordoned nodes.
fn node_status(node: &Value) -> String {
    // The last Ready condition wins, as in upstream's condition map.
    let ready = items(&node["status"]["conditions"])
        .iter()
        .rev()
        .find(|c| text(&c["type"]) == "Ready");
    let mut status = match ready {
        Some(condition) if text(&condition["status"]) == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }
    .to_string();
    if node["spec"]["unschedulable"].as_bool() == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    status
}

/// Roles from `node-role.kubernetes.io/<role>` label keys and the legacy
/// `kubernetes.io/role=<role>` label, sorted.
fn node_roles(labels: &Value) -> Vec<&str> {
    let roles: BTreeSet<&str> = entries(labels)
        .filter_map(
            |(key, value)| match key.strip_prefix("node-role.kubernetes.io/") {
                Some(role) => Some(role),
                None if key == "kubernetes.io/role" => value.as_str(),
                None => None,
            },
        )
        .filter(|role| !role.is_empty())
        .collect();
    roles.into_iter().collect()
}

/// The first address of `type_`, or `<none>`.
fn node_address(status: &Value, type_: &str) -> String {
    items(&status["addresses"])
        .iter()
        .find(|a| text(&a["type"]) == type_)
        .map_or_else(|| "<none>".to_string(), |a| text(&a["address"]).to_string())
}

pub(super) const NAMESPACE_COLUMNS: &[Column] = &[
    NAME,
    column("Status", "string", "The status of the namespace"),
    AGE,
];

pub(super) fn namespace(namespace: &Value, now: Timestamp) -> Vec<Value> {
    let phase = match text(&namespace["status"]["phase"]) {
        "" => "Active",
        phase => phase,
    };
    vec![
        name(namespace).into(),
        phase.into(),
        age(namespace, now).into(),
    ]
}

pub(super) const SECRET_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Type",
        "string",
        "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types",
    ),
    column(
        "Data",
        "string",
        "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4",
    ),
    AGE,
];

pub(super) fn secret(secret: &Value, now: Timestamp) -> Vec<Value> {
    let secret_type = match text(&secret["type"]) {
        "" => "Opaque",
        t => t,
    };
    // Write-only stringData is merged into data on the way in.
    let keys: BTreeSet<&str> = entries(&secret["data"])
        .chain(entries(&secret["stringData"]))
        .map(|(key, _)| key)
        .collect();
    vec![
        name(secret).into(),
        secret_type.into(),
        keys.len().into(),
        age(secret, now).into(),
    ]
}

pub(super) const CONFIG_MAP_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Data",
        "string",
        "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.",
    ),
    AGE,
];

pub(super) fn config_map(config_map: &Value, now: Timestamp) -> Vec<Value> {
    let keys = entries(&config_map["data"]).count() + entries(&config_map["binaryData"]).count();
    vec![
        name(config_map).into(),
        keys.into(),
        age(config_map, now).into(),
    ]
}

pub(super) const SERVICE_ACCOUNT_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Secrets",
        "string",
        "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use. Pods are only limited to this list if this service account has a \"kubernetes.io/enforce-mountable-secrets\" annotation set to \"true\". The \"kubernetes.io/enforce-mountable-secrets\" annotation is deprecated since v1.32. Prefer separate namespaces to isolate access to mounted secrets. This field should not be used to find auto-generated service account token secrets for use outside of pods. Instead, tokens can be requested directly using the TokenRequest API, or service account token secrets can be manually created. More info: https://kubernetes.io/docs/concepts/configuration/secret",
    ),
    AGE,
];

pub(super) fn service_account(account: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(account).into(),
        items(&account["secrets"]).len().into(),
        age(account, now).into(),
    ]
}

pub(super) const LEASE_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Holder",
        "string",
        "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field.",
    ),
    AGE,
];

pub(super) fn lease(lease: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(lease).into(),
        text(&lease["spec"]["holderIdentity"]).into(),
        age(lease, now).into(),
    ]
}

pub(super) const EVENT_COLUMNS: &[Column] = &[
    column(
        "Last Seen",
        "string",
        "The time at which the most recent occurrence of this event was recorded.",
    ),
    column(
        "Type",
        "string",
        "Type of this event (Normal, Warning), new types could be added in the future",
    ),
    column(
        "Reason",
        "string",
        "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
    ),
    column("Object", "string", "The object that this event is about."),
    wide(column(
        "Subobject",
        "string",
        "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object.",
    )),
    wide(column(
        "Source",
        "string",
        "The component reporting this event. Should be a short machine understandable string.",
    )),
    column(
        "Message",
        "string",
        "A human-readable description of the status of this operation.",
    ),
    wide(column(
        "First Seen",
        "string",
        "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
    )),
    wide(column(
        "Count",
        "string",
        "The number of times this event has occurred.",
    )),
    wide(NAME),
];

pub(super) fn event(event: &Value, now: Timestamp) -> Vec<Value> {
    // Events from the events.k8s.io API carry eventTime and series instead
    // of first/last timestamps and count.
    let first_seen = if timestamp(&event["firstTimestamp"]).is_some() {
        since(&event["firstTimestamp"], now)
    } else {
        since(&event["eventTime"], now)
    };
    let mut last_seen = if timestamp(&event["lastTimestamp"]).is_some() {
        since(&event["lastTimestamp"], now)
    } else {
        first_seen.clone()
    };
    let series = &event["series"];
    let count = if series.is_object() {
        last_seen = since(&series["lastObservedTime"], now);
        integer(&series["count"])
    } else {
        match integer(&event["count"]) {
            0 => 1,
            count => count,
        }
    };
    let involved = &event["involvedObject"];
    let kind = text(&involved["kind"]).to_lowercase();
    let object = match text(&involved["name"]) {
        "" => kind,
        involved_name => format!("{kind}/{involved_name}"),
    };
    vec![
        last_seen.into(),
        text(&event["type"]).into(),
        text(&event["reason"]).into(),
        object.into(),
        text(&involved["fieldPath"]).into(),
        event_source(event).into(),
        text(&event["message"]).trim().into(),
        first_seen.into(),
        count.into(),
        name(event).into(),
    ]
}

/// `kubelet, node-1`: the source component and host, falling back to the
/// reporting controller and instance of newer events.
fn event_source(event: &Value) -> String {
    let first_non_empty = |a: &'static str, b: &'static str| match text(&event["source"][a]) {
        "" => text(&event[b]),
        value => value,
    };
    let component = first_non_empty("component", "reportingComponent");
    match first_non_empty("host", "reportingInstance") {
        "" => component.to_string(),
        instance => format!("{component}, {instance}"),
    }
}
