//! Service cases: creates, and the updates of every kind.

use serde_json::{Value, json};

use super::super::FieldErrorReason::{Duplicate, Forbidden, Invalid, NotSupported, Required};
use super::*;

pub(super) fn service_cases() -> Vec<(&'static str, Value, Expected)> {
    vec![
        ("valid ClusterIP service", web_service(), &[]),
        (
            "second port unnamed",
            with(
                web_service(),
                "/spec/ports",
                json!([{"name": "http", "port": 80}, {"port": 443}]),
            ),
            &[("spec.ports[1].name", Required)],
        ),
        (
            "port names unique",
            with(
                web_service(),
                "/spec/ports",
                json!([{"name": "http", "port": 80}, {"name": "http", "port": 443}]),
            ),
            &[("spec.ports[1].name", Duplicate)],
        ),
        (
            "port out of range",
            with(web_service(), "/spec/ports/0/port", json!(70000)),
            &[("spec.ports[0].port", Invalid)],
        ),
        (
            "unknown protocol",
            with(web_service(), "/spec/ports/0/protocol", json!("FOO")),
            &[("spec.ports[0].protocol", NotSupported)],
        ),
        (
            "port name not a DNS label",
            with(web_service(), "/spec/ports/0/name", json!("Web")),
            &[("spec.ports[0].name", Invalid)],
        ),
        (
            "targetPort out of range",
            with(web_service(), "/spec/ports/0/targetPort", json!(65536)),
            &[("spec.ports[0].targetPort", Invalid)],
        ),
        (
            "targetPort not an IANA_SVC_NAME",
            with(web_service(), "/spec/ports/0/targetPort", json!("http_web")),
            &[("spec.ports[0].targetPort", Invalid)],
        ),
        (
            "targetPort by name",
            with(web_service(), "/spec/ports/0/targetPort", json!("http")),
            &[],
        ),
        (
            "appProtocol not a qualified name",
            with(web_service(), "/spec/ports/0/appProtocol", json!("-h2c")),
            &[("spec.ports[0].appProtocol", Invalid)],
        ),
        (
            "nodePort out of range",
            with(
                with(web_service(), "/spec/type", json!("NodePort")),
                "/spec/ports/0/nodePort",
                json!(70000),
            ),
            &[("spec.ports[0].nodePort", Invalid)],
        ),
        (
            "nodePort on ClusterIP",
            with(web_service(), "/spec/ports/0/nodePort", json!(30080)),
            &[("spec.ports[0].nodePort", Forbidden)],
        ),
        (
            "duplicate nodePort",
            service(
                json!({"type": "NodePort", "ports": [{"name": "a", "port": 80, "nodePort": 30080}, {"name": "b", "port": 81, "nodePort": 30080}]}),
            ),
            &[("spec.ports[1].nodePort", Duplicate)],
        ),
        (
            "duplicate port and protocol",
            service(json!({"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]})),
            &[("spec.ports[1]", Duplicate)],
        ),
        (
            "same port, other protocol",
            service(
                json!({"ports": [{"name": "dns", "port": 53}, {"name": "dns-udp", "port": 53, "protocol": "UDP"}]}),
            ),
            &[],
        ),
        (
            "selector label value",
            with(web_service(), "/spec/selector", json!({"app": "-web"})),
            &[("spec.selector", Invalid)],
        ),
        (
            "unknown type",
            with(web_service(), "/spec/type", json!("Internal")),
            &[("spec.type", NotSupported)],
        ),
        (
            "ports required",
            with(web_service(), "/spec/ports", json!([])),
            &[("spec.ports", Required)],
        ),
        (
            "headless needs no ports",
            service(json!({"clusterIP": "None", "selector": {"app": "db"}})),
            &[],
        ),
        (
            "headless NodePort",
            with(
                with(web_service(), "/spec/type", json!("NodePort")),
                "/spec/clusterIP",
                json!("None"),
            ),
            &[("spec.clusterIPs[0]", Invalid)],
        ),
        (
            "headless LoadBalancer",
            with(
                with(web_service(), "/spec/type", json!("LoadBalancer")),
                "/spec/clusterIP",
                json!("None"),
            ),
            &[("spec.clusterIPs[0]", Invalid)],
        ),
        (
            "clusterIP not an IP",
            with(web_service(), "/spec/clusterIP", json!("10.96.0.300")),
            &[("spec.clusterIPs[0]", Invalid)],
        ),
        (
            "user-chosen clusterIP",
            with(web_service(), "/spec/clusterIP", json!("10.96.0.10")),
            &[],
        ),
        (
            "clusterIPs disagree with clusterIP",
            with(
                with(web_service(), "/spec/clusterIP", json!("10.96.0.10")),
                "/spec/clusterIPs",
                json!(["10.96.0.11"]),
            ),
            &[("spec.clusterIPs", Invalid)],
        ),
        (
            "clusterIP of the wrong family",
            with(
                with(web_service(), "/spec/clusterIP", json!("fd00::10")),
                "/spec/ipFamilies",
                json!(["IPv4"]),
            ),
            &[("spec.clusterIPs[0]", Invalid)],
        ),
        (
            "unknown IP family",
            with(web_service(), "/spec/ipFamilies", json!(["IPv5"])),
            &[("spec.ipFamilies[0]", NotSupported)],
        ),
        (
            "unknown IP family policy",
            with(web_service(), "/spec/ipFamilyPolicy", json!("DualStack")),
            &[("spec.ipFamilyPolicy", NotSupported)],
        ),
        (
            "ExternalName without a name",
            service(json!({"type": "ExternalName"})),
            &[("spec.externalName", Required)],
        ),
        (
            "ExternalName not a DNS name",
            service(json!({"type": "ExternalName", "externalName": "db_host"})),
            &[("spec.externalName", Invalid)],
        ),
        (
            "ExternalName with trailing dot",
            service(json!({"type": "ExternalName", "externalName": "db.example.com."})),
            &[],
        ),
        (
            "ExternalName with a clusterIP",
            service(
                json!({"type": "ExternalName", "externalName": "db.example.com", "clusterIP": "10.96.0.10"}),
            ),
            &[("spec.clusterIPs", Forbidden)],
        ),
        (
            "unknown session affinity",
            with(web_service(), "/spec/sessionAffinity", json!("Sticky")),
            &[("spec.sessionAffinity", NotSupported)],
        ),
        (
            "affinity timeout zero",
            with(
                with(web_service(), "/spec/sessionAffinity", json!("ClientIP")),
                "/spec/sessionAffinityConfig",
                json!({"clientIP": {"timeoutSeconds": 0}}),
            ),
            &[(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                Invalid,
            )],
        ),
        (
            "affinity timeout over a day",
            with(
                with(web_service(), "/spec/sessionAffinity", json!("ClientIP")),
                "/spec/sessionAffinityConfig",
                json!({"clientIP": {"timeoutSeconds": 86401}}),
            ),
            &[(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                Invalid,
            )],
        ),
        (
            "affinity timeout of a day",
            with(
                with(web_service(), "/spec/sessionAffinity", json!("ClientIP")),
                "/spec/sessionAffinityConfig",
                json!({"clientIP": {"timeoutSeconds": 86400}}),
            ),
            &[],
        ),
        (
            "externalTrafficPolicy on ClusterIP",
            with(web_service(), "/spec/externalTrafficPolicy", json!("Local")),
            &[("spec.externalTrafficPolicy", Invalid)],
        ),
        (
            "unknown externalTrafficPolicy",
            with(
                with(web_service(), "/spec/type", json!("NodePort")),
                "/spec/externalTrafficPolicy",
                json!("Nearest"),
            ),
            &[("spec.externalTrafficPolicy", NotSupported)],
        ),
        (
            "unknown internalTrafficPolicy",
            with(web_service(), "/spec/internalTrafficPolicy", json!("Node")),
            &[("spec.internalTrafficPolicy", NotSupported)],
        ),
        (
            "healthCheckNodePort without Local",
            with(
                with(web_service(), "/spec/type", json!("NodePort")),
                "/spec/healthCheckNodePort",
                json!(30500),
            ),
            &[("spec.healthCheckNodePort", Invalid)],
        ),
        (
            "external IP in loopback",
            with(web_service(), "/spec/externalIPs", json!(["127.0.0.1"])),
            &[("spec.externalIPs[0]", Invalid)],
        ),
        (
            "allocateLoadBalancerNodePorts on ClusterIP",
            with(
                web_service(),
                "/spec/allocateLoadBalancerNodePorts",
                json!(false),
            ),
            &[("spec.allocateLoadBalancerNodePorts", Forbidden)],
        ),
        (
            "source ranges on ClusterIP",
            with(
                web_service(),
                "/spec/loadBalancerSourceRanges",
                json!(["10.0.0.0/8"]),
            ),
            &[("spec.LoadBalancerSourceRanges", Forbidden)],
        ),
    ]
}

pub(super) fn update_cases() -> Vec<(&'static str, Value, Value, Expected)> {
    let assigned = with(web_service(), "/spec/clusterIP", json!("10.96.0.10"));
    let node_port = with(
        with(assigned.clone(), "/spec/type", json!("NodePort")),
        "/spec/ports/0/nodePort",
        json!(30080),
    );
    vec![
        ("service unchanged", assigned.clone(), assigned.clone(), &[]),
        (
            "clusterIP is immutable",
            assigned.clone(),
            with(assigned.clone(), "/spec/clusterIP", json!("10.96.0.20")),
            &[("spec.clusterIPs[0]", Invalid)],
        ),
        (
            "clusterIP can not be unset",
            assigned.clone(),
            with(assigned.clone(), "/spec/clusterIP", json!("")),
            &[("spec.clusterIPs[0]", Invalid)],
        ),
        (
            "IP family is immutable",
            assigned.clone(),
            with(assigned.clone(), "/spec/ipFamilies", json!(["IPv6"])),
            &[
                ("spec.ipFamilies[0]", Invalid),
                ("spec.clusterIPs[0]", Invalid),
            ],
        ),
        (
            "ClusterIP to NodePort",
            assigned.clone(),
            node_port.clone(),
            &[],
        ),
        (
            "NodePort to ClusterIP keeping node fields",
            node_port.clone(),
            with(
                defaulted(node_port.clone()),
                "/spec/type",
                json!("ClusterIP"),
            ),
            &[
                ("spec.ports[0].nodePort", Forbidden),
                ("spec.externalTrafficPolicy", Invalid),
            ],
        ),
        (
            "ClusterIP to ExternalName keeping the clusterIP",
            assigned.clone(),
            with(
                with(
                    defaulted(assigned.clone()),
                    "/spec/type",
                    json!("ExternalName"),
                ),
                "/spec/externalName",
                json!("db.example.com"),
            ),
            &[
                ("spec.clusterIPs", Forbidden),
                ("spec.ipFamilies", Forbidden),
                ("spec.ipFamilyPolicy", Forbidden),
            ],
        ),
        (
            "ExternalName to ClusterIP",
            service(json!({"type": "ExternalName", "externalName": "db.example.com"})),
            assigned.clone(),
            &[],
        ),
        (
            "pod image change",
            web_pod(),
            with(web_pod(), "/spec/containers/0/image", json!("nginx:1.28")),
            &[],
        ),
        (
            "pod port change",
            web_pod(),
            with(
                web_pod(),
                "/spec/containers/0/ports/0/containerPort",
                json!(81),
            ),
            &[("spec", Forbidden)],
        ),
        (
            "deployment scale",
            deployment(),
            with(deployment(), "/spec/replicas", json!(3)),
            &[],
        ),
        (
            "deployment selector is immutable",
            deployment(),
            with(
                with(
                    deployment(),
                    "/spec/selector/matchLabels/app",
                    json!("web2"),
                ),
                "/spec/template/metadata/labels/app",
                json!("web2"),
            ),
            &[("spec.selector", Invalid)],
        ),
        (
            "addressType is immutable",
            slice("IPv4", json!(["10.244.1.5"])),
            slice("IPv6", json!(["fd00::5"])),
            &[("addressType", Invalid)],
        ),
        (
            "ingress path change",
            ingress(rule(web_path())),
            ingress(rule(with(web_path(), "/path", json!("/v2")))),
            &[],
        ),
    ]
}
