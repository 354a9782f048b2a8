//! Pod, workload, Ingress and EndpointSlice creates.

use serde_json::{Value, json};

use super::super::FieldErrorReason::{
    Duplicate, Forbidden, Invalid, NotFound, NotSupported, Required, TooMany,
};
use super::*;

pub(super) fn pod_cases() -> Vec<(&'static str, Value, Expected)> {
    vec![
        ("valid pod", web_pod(), &[]),
        (
            "containers required",
            pod(json!({"containers": []})),
            &[("spec.containers", Required)],
        ),
        (
            "container name not a DNS label",
            with(web_pod(), "/spec/containers/0/name", json!("Web")),
            &[("spec.containers[0].name", Invalid)],
        ),
        (
            "container names unique",
            pod(json!({"containers": [{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]})),
            &[("spec.containers[1].name", Duplicate)],
        ),
        (
            "image required",
            with(web_pod(), "/spec/containers/0/image", json!("")),
            &[("spec.containers[0].image", Required)],
        ),
        (
            "image with whitespace",
            with(web_pod(), "/spec/containers/0/image", json!("nginx ")),
            &[("spec.containers[0].image", Invalid)],
        ),
        (
            "containerPort required",
            with(
                web_pod(),
                "/spec/containers/0/ports/0",
                json!({"name": "http"}),
            ),
            &[("spec.containers[0].ports[0].containerPort", Required)],
        ),
        (
            "containerPort out of range",
            with(
                web_pod(),
                "/spec/containers/0/ports/0/containerPort",
                json!(70000),
            ),
            &[("spec.containers[0].ports[0].containerPort", Invalid)],
        ),
        (
            "port name too long",
            with(
                web_pod(),
                "/spec/containers/0/ports/0/name",
                json!("a-very-long-port-name"),
            ),
            &[("spec.containers[0].ports[0].name", Invalid)],
        ),
        (
            "container port protocol",
            with(
                web_pod(),
                "/spec/containers/0/ports/0/protocol",
                json!("HTTP"),
            ),
            &[("spec.containers[0].ports[0].protocol", NotSupported)],
        ),
        (
            "unknown restartPolicy",
            with(web_pod(), "/spec/restartPolicy", json!("Sometimes")),
            &[("spec.restartPolicy", NotSupported)],
        ),
        (
            "unknown dnsPolicy",
            with(web_pod(), "/spec/dnsPolicy", json!("Custom")),
            &[("spec.dnsPolicy", NotSupported)],
        ),
        (
            "dnsPolicy None needs dnsConfig",
            with(web_pod(), "/spec/dnsPolicy", json!("None")),
            &[("spec.dnsConfig", Required)],
        ),
        (
            "unknown imagePullPolicy",
            with(
                web_pod(),
                "/spec/containers/0/imagePullPolicy",
                json!("Sometimes"),
            ),
            &[("spec.containers[0].imagePullPolicy", NotSupported)],
        ),
        (
            "host port conflict",
            pod(json!({"containers": [
                {"name": "a", "image": "x", "ports": [{"containerPort": 80, "hostPort": 8080}]},
                {"name": "b", "image": "x", "ports": [{"containerPort": 81, "hostPort": 8080}]},
            ]})),
            &[("spec.containers[1].ports[0].hostPort", Duplicate)],
        ),
        (
            "mount of an unknown volume",
            with(
                web_pod(),
                "/spec/containers/0/volumeMounts",
                json!([{"name": "data", "mountPath": "/data"}]),
            ),
            &[("spec.containers[0].volumeMounts[0].name", NotFound)],
        ),
    ]
}

pub(super) fn workload_cases() -> Vec<(&'static str, Value, Expected)> {
    vec![
        ("valid deployment", deployment(), &[]),
        (
            "selector does not match template",
            with(
                deployment(),
                "/spec/template/metadata/labels",
                json!({"app": "x"}),
            ),
            &[("spec.template.metadata.labels", Invalid)],
        ),
        (
            "selector required",
            with(deployment(), "/spec/selector", Value::Null),
            &[
                ("spec.selector", Required),
                ("spec.template.metadata.labels", Invalid),
            ],
        ),
        (
            "empty selector",
            with(deployment(), "/spec/selector", json!({})),
            &[("spec.selector", Invalid)],
        ),
        (
            "selector operator",
            with(
                deployment(),
                "/spec/selector",
                json!({"matchExpressions": [{"key": "app", "operator": "Is", "values": ["web"]}]}),
            ),
            &[
                ("spec.selector.matchExpressions[0].operator", Invalid),
                ("spec.selector", Invalid),
            ],
        ),
        (
            "negative replicas",
            with(deployment(), "/spec/replicas", json!(-1)),
            &[("spec.replicas", Invalid)],
        ),
        (
            "unknown strategy",
            with(deployment(), "/spec/strategy", json!({"type": "BlueGreen"})),
            &[("spec.strategy", NotSupported)],
        ),
        (
            "Recreate with rollingUpdate",
            with(
                deployment(),
                "/spec/strategy",
                json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}),
            ),
            &[("spec.strategy.rollingUpdate", Forbidden)],
        ),
        (
            "maxSurge and maxUnavailable both 0",
            with(
                deployment(),
                "/spec/strategy",
                json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}),
            ),
            &[("spec.strategy.rollingUpdate.maxUnavailable", Invalid)],
        ),
        (
            "maxUnavailable over 100%",
            with(
                deployment(),
                "/spec/strategy",
                json!({"rollingUpdate": {"maxUnavailable": "150%"}}),
            ),
            &[("spec.strategy.rollingUpdate.maxUnavailable", Invalid)],
        ),
        (
            "maxSurge not a percentage",
            with(
                deployment(),
                "/spec/strategy",
                json!({"rollingUpdate": {"maxSurge": "half"}}),
            ),
            &[("spec.strategy.rollingUpdate.maxSurge", Invalid)],
        ),
        (
            "progress deadline not after minReadySeconds",
            with(
                with(deployment(), "/spec/minReadySeconds", json!(600)),
                "/spec/progressDeadlineSeconds",
                json!(600),
            ),
            &[("spec.progressDeadlineSeconds", Invalid)],
        ),
        (
            "template restartPolicy",
            with(
                deployment(),
                "/spec/template/spec/restartPolicy",
                json!("Never"),
            ),
            &[("spec.template.spec.restartPolicy", NotSupported)],
        ),
        (
            "template container image",
            with(
                deployment(),
                "/spec/template/spec/containers/0/image",
                json!(""),
            ),
            &[("spec.template.spec.containers[0].image", Required)],
        ),
        (
            "template label key",
            with(
                deployment(),
                "/spec/template/metadata/labels/bad key",
                json!("x"),
            ),
            &[("spec.template.labels", Invalid)],
        ),
        (
            "ReplicaSet selector mismatch",
            with(
                with_kind(deployment(), "apps/v1", "ReplicaSet"),
                "/spec/template/metadata/labels",
                json!({"app": "x"}),
            ),
            &[("spec.template.metadata.labels", Invalid)],
        ),
        (
            "DaemonSet surge and unavailable",
            with(
                with_kind(deployment(), "apps/v1", "DaemonSet"),
                "/spec/updateStrategy",
                json!({"rollingUpdate": {"maxSurge": 1}}),
            ),
            &[("spec.updateStrategy.rollingUpdate.maxSurge", Invalid)],
        ),
    ]
}

pub(super) fn networking_cases() -> Vec<(&'static str, Value, Expected)> {
    vec![
        ("valid ingress", ingress(rule(web_path())), &[]),
        (
            "pathType required",
            ingress(rule(with(web_path(), "/pathType", Value::Null))),
            &[("spec.rules[0].http.paths[0].pathType", Required)],
        ),
        (
            "unknown pathType",
            ingress(rule(with(web_path(), "/pathType", json!("Regex")))),
            &[("spec.rules[0].http.paths[0].pathType", NotSupported)],
        ),
        (
            "Prefix path not absolute",
            ingress(rule(with(web_path(), "/path", json!("api")))),
            &[("spec.rules[0].http.paths[0].path", Invalid)],
        ),
        (
            "path with //",
            ingress(rule(with(web_path(), "/path", json!("/api//v1")))),
            &[("spec.rules[0].http.paths[0].path", Invalid)],
        ),
        (
            "ImplementationSpecific may be empty",
            ingress(rule(with(
                with(web_path(), "/pathType", json!("ImplementationSpecific")),
                "/path",
                json!(""),
            ))),
            &[],
        ),
        (
            "backend port required",
            ingress(rule(with(web_path(), "/backend/service/port", json!({})))),
            &[("spec.rules[0].http.paths[0].backend", Required)],
        ),
        (
            "backend port name and number",
            ingress(rule(with(
                web_path(),
                "/backend/service/port",
                json!({"name": "http", "number": 80}),
            ))),
            &[("spec.rules[0].http.paths[0].backend", Invalid)],
        ),
        (
            "backend port out of range",
            ingress(rule(with(
                web_path(),
                "/backend/service/port/number",
                json!(70000),
            ))),
            &[(
                "spec.rules[0].http.paths[0].backend.service.port.number",
                Invalid,
            )],
        ),
        (
            "backend service name",
            ingress(rule(with(
                web_path(),
                "/backend/service/name",
                json!("1web"),
            ))),
            &[("spec.rules[0].http.paths[0].backend.service.name", Invalid)],
        ),
        (
            "backend required",
            ingress(rule(with(web_path(), "/backend", json!({})))),
            &[("spec.rules[0].http.paths[0].backend", Invalid)],
        ),
        (
            "host is an IP",
            with(
                ingress(rule(web_path())),
                "/spec/rules/0/host",
                json!("10.0.0.1"),
            ),
            &[("spec.rules[0].host", Invalid)],
        ),
        (
            "wildcard host",
            with(
                ingress(rule(web_path())),
                "/spec/rules/0/host",
                json!("*.example.com"),
            ),
            &[],
        ),
        (
            "wildcard in the middle",
            with(
                ingress(rule(web_path())),
                "/spec/rules/0/host",
                json!("web.*.com"),
            ),
            &[("spec.rules[0].host", Invalid)],
        ),
        (
            "rules or default backend",
            ingress(json!([])),
            &[("spec", Invalid)],
        ),
        (
            "TLS host",
            with(
                ingress(rule(web_path())),
                "/spec/tls",
                json!([{"hosts": ["Web.example.com"], "secretName": "web-tls"}]),
            ),
            &[("spec.tls[0].hosts[0]", Invalid)],
        ),
        (
            "valid endpoint slice",
            slice("IPv4", json!(["10.244.1.5"])),
            &[],
        ),
        (
            "addressType required",
            slice("", json!(["10.244.1.5"])),
            &[("addressType", Required)],
        ),
        (
            "deprecated IP type on create",
            slice("IP", json!(["10.244.1.5"])),
            &[("addressType", NotSupported)],
        ),
        (
            "IPv6 address in IPv4 slice",
            slice("IPv4", json!(["fd00::5"])),
            &[("endpoints[0].addresses[0]", Invalid)],
        ),
        (
            "loopback endpoint",
            slice("IPv4", json!(["127.0.0.1"])),
            &[("endpoints[0].addresses[0]", Invalid)],
        ),
        (
            "addresses required",
            slice("IPv4", json!([])),
            &[("endpoints[0].addresses", Required)],
        ),
        (
            "FQDN endpoint",
            slice("FQDN", json!(["db.example.com"])),
            &[],
        ),
        (
            "FQDN needs two labels",
            slice("FQDN", json!(["db"])),
            &[("endpoints[0].addresses[0]", Invalid)],
        ),
        (
            "too many addresses",
            slice(
                "IPv4",
                Value::Array(
                    (0..101)
                        .map(|i| json!(format!("10.244.0.{}", i + 1)))
                        .collect(),
                ),
            ),
            &[("endpoints[0].addresses", TooMany)],
        ),
        (
            "too many endpoints",
            with(
                slice("IPv4", json!([])),
                "/endpoints",
                Value::Array(vec![json!({"addresses": ["10.244.0.1"]}); 1001]),
            ),
            &[("endpoints", TooMany)],
        ),
        (
            "endpoint port names unique",
            with(
                slice("IPv4", json!(["10.244.1.5"])),
                "/ports",
                json!([{"port": 80}, {"port": 81}]),
            ),
            &[("ports[1].name", Duplicate)],
        ),
        (
            "endpoint port protocol",
            with(
                slice("IPv4", json!(["10.244.1.5"])),
                "/ports/0/protocol",
                json!("HTTP"),
            ),
            &[("ports[0].protocol", NotSupported)],
        ),
    ]
}
