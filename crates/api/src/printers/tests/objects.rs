//! Node, Namespace, Secret, ConfigMap, ServiceAccount, Lease and Event rows.

use serde_json::json;

use super::{CREATED_5M_AGO, CREATED_10D_AGO, meta, row};

#[test]
fn node_ready_control_plane() {
    let node = json!({
        "metadata": {
            "name": "kind-control-plane",
            "creationTimestamp": CREATED_10D_AGO,
            "labels": {
                "kubernetes.io/hostname": "kind-control-plane",
                "node-role.kubernetes.io/control-plane": "",
                "node.kubernetes.io/exclude-from-external-load-balancers": "",
            },
        },
        "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "True", "reason": "KubeletReady"},
            ],
            "addresses": [
                {"type": "InternalIP", "address": "172.18.0.2"},
                {"type": "Hostname", "address": "kind-control-plane"},
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.32.0",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "kernelVersion": "6.1.0-18-amd64",
                "containerRuntimeVersion": "containerd://1.7.24",
            },
        },
    });
    assert_eq!(
        row("", "Node", &node),
        json!([
            "kind-control-plane",
            "Ready",
            "control-plane",
            "10d",
            "v1.32.0",
            "172.18.0.2",
            "<none>",
            "Debian GNU/Linux 12 (bookworm)",
            "6.1.0-18-amd64",
            "containerd://1.7.24"
        ])
    );
}

#[test]
fn node_not_ready_cordoned_and_unknown() {
    let node = json!({
        "metadata": {"name": "worker-2", "creationTimestamp": CREATED_10D_AGO, "labels": {
            "kubernetes.io/role": "worker",
            "node-role.kubernetes.io/ingress": "true",
            "node-role.kubernetes.io/": "",
        }},
        "spec": {"unschedulable": true},
        "status": {
            "conditions": [{"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown"}],
            "addresses": [{"type": "ExternalIP", "address": "203.0.113.4"}, {"type": "InternalIP", "address": "10.0.0.4"}],
        },
    });
    assert_eq!(
        row("", "Node", &node),
        json!([
            "worker-2",
            "NotReady,SchedulingDisabled",
            "ingress,worker",
            "10d",
            "",
            "10.0.0.4",
            "203.0.113.4",
            "<unknown>",
            "<unknown>",
            "<unknown>"
        ])
    );
    let bare = json!({"metadata": {"name": "new"}});
    assert_eq!(row("", "Node", &bare)[1], "Unknown");
    assert_eq!(row("", "Node", &bare)[2], "<none>");
}

#[test]
fn namespace_rows() {
    let ns = json!({"metadata": meta("default", CREATED_10D_AGO), "status": {"phase": "Active"}});
    assert_eq!(
        row("", "Namespace", &ns),
        json!(["default", "Active", "10d"])
    );
    let terminating =
        json!({"metadata": meta("old", CREATED_10D_AGO), "status": {"phase": "Terminating"}});
    assert_eq!(row("", "Namespace", &terminating)[1], "Terminating");
    let undefaulted = json!({"metadata": meta("new", CREATED_5M_AGO)});
    assert_eq!(row("", "Namespace", &undefaulted)[1], "Active");
}

#[test]
fn secret_rows_count_keys() {
    let tls = json!({"metadata": meta("web-tls", CREATED_5M_AGO), "type": "kubernetes.io/tls",
                     "data": {"tls.crt": "LS0t", "tls.key": "LS0t"}});
    assert_eq!(
        row("", "Secret", &tls),
        json!(["web-tls", "kubernetes.io/tls", 2, "5m"])
    );
    let merged = json!({"metadata": meta("creds", CREATED_5M_AGO),
                        "data": {"user": "YQ=="}, "stringData": {"user": "a", "password": "b"}});
    assert_eq!(
        row("", "Secret", &merged),
        json!(["creds", "Opaque", 2, "5m"])
    );
}

#[test]
fn config_map_and_service_account_rows() {
    let cm = json!({"metadata": meta("kube-root-ca.crt", CREATED_10D_AGO), "data": {"ca.crt": "-----BEGIN"}});
    assert_eq!(
        row("", "ConfigMap", &cm),
        json!(["kube-root-ca.crt", 1, "10d"])
    );
    let binary = json!({"metadata": meta("blobs", CREATED_10D_AGO), "data": {"a": "1"}, "binaryData": {"b": "AA=="}});
    assert_eq!(row("", "ConfigMap", &binary)[1], 2);

    let sa = json!({"metadata": meta("default", CREATED_10D_AGO)});
    assert_eq!(row("", "ServiceAccount", &sa), json!(["default", 0, "10d"]));
    let with_secret = json!({"metadata": meta("builder", CREATED_10D_AGO), "secrets": [{"name": "builder-token"}]});
    assert_eq!(row("", "ServiceAccount", &with_secret)[1], 1);
}

#[test]
fn lease_rows() {
    let lease = json!({
        "metadata": meta("kube-controller-manager", CREATED_10D_AGO),
        "spec": {"holderIdentity": "kind-control-plane_0f1c2d3e", "leaseDurationSeconds": 15},
    });
    assert_eq!(
        row("coordination.k8s.io", "Lease", &lease),
        json!([
            "kube-controller-manager",
            "kind-control-plane_0f1c2d3e",
            "10d"
        ])
    );
    let free = json!({"metadata": meta("free", CREATED_10D_AGO), "spec": {}});
    assert_eq!(row("coordination.k8s.io", "Lease", &free)[1], "");
}

#[test]
fn event_from_kubelet() {
    let event = json!({
        "metadata": meta("nginx-7c5b8d6f9-x2x4q.17c8e3f1a2b3c4d5", CREATED_10D_AGO),
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "nginx-7c5b8d6f9-x2x4q",
                           "fieldPath": "spec.containers{nginx}"},
        "reason": "Pulled",
        "message": "Successfully pulled image \"nginx:1.27\" in 1.2s\n",
        "source": {"component": "kubelet", "host": "worker-1"},
        "firstTimestamp": "2024-05-01T11:50:00Z",
        "lastTimestamp": "2024-05-01T11:55:00Z",
        "count": 3,
        "type": "Normal",
    });
    assert_eq!(
        row("", "Event", &event),
        json!([
            "5m",
            "Normal",
            "Pulled",
            "pod/nginx-7c5b8d6f9-x2x4q",
            "spec.containers{nginx}",
            "kubelet, worker-1",
            "Successfully pulled image \"nginx:1.27\" in 1.2s",
            "10m",
            3,
            "nginx-7c5b8d6f9-x2x4q.17c8e3f1a2b3c4d5"
        ])
    );
}

#[test]
fn event_from_events_api() {
    let event = json!({
        "metadata": meta("web.17c8e3f1a2b3c4d5", CREATED_5M_AGO),
        "involvedObject": {"kind": "Node", "name": ""},
        "reason": "Scheduled",
        "message": "Successfully assigned default/web to worker-1",
        "source": {},
        "firstTimestamp": null,
        "lastTimestamp": null,
        "eventTime": "2024-05-01T11:57:59.500000Z",
        "reportingComponent": "default-scheduler",
        "reportingInstance": "default-scheduler-kind-control-plane",
        "type": "Normal",
    });
    assert_eq!(
        row("", "Event", &event),
        json!([
            "2m",
            "Normal",
            "Scheduled",
            "node",
            "",
            "default-scheduler, default-scheduler-kind-control-plane",
            "Successfully assigned default/web to worker-1",
            "2m",
            1,
            "web.17c8e3f1a2b3c4d5"
        ])
    );

    let mut series = event;
    series["series"] = json!({"count": 7, "lastObservedTime": "2024-05-01T11:59:30.000000Z"});
    series["reportingInstance"] = json!("");
    let cells = row("", "Event", &series);
    assert_eq!(cells[0], "30s");
    assert_eq!(cells[5], "default-scheduler");
    assert_eq!(cells[8], 7);
}
