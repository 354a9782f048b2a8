//! The table-driven validation suite: each case is an object (defaulted
//! first, as the API server does) and the exact field paths and reasons
//! upstream reports for it, in order. A few cases also pin the full text.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::FieldErrorReason;
use super::{FieldError, validate_create, validate_update};
use crate::defaults::{apply_defaults, drop_type_dependent_fields};

fn kind_of(obj: &Value) -> (&'static str, &'static str) {
    match obj["kind"].as_str().unwrap_or("") {
        "Service" => ("", "Service"),
        "Pod" => ("", "Pod"),
        "Deployment" => ("apps", "Deployment"),
        "ReplicaSet" => ("apps", "ReplicaSet"),
        "DaemonSet" => ("apps", "DaemonSet"),
        "Ingress" => ("networking.k8s.io", "Ingress"),
        "EndpointSlice" => ("discovery.k8s.io", "EndpointSlice"),
        other => panic!("no kind {other}"),
    }
}

fn defaulted(mut obj: Value) -> Value {
    let (group, kind) = kind_of(&obj);
    apply_defaults(group, kind, &mut obj);
    obj
}

fn create(obj: Value) -> Vec<FieldError> {
    let obj = defaulted(obj);
    let (group, kind) = kind_of(&obj);
    validate_create(group, kind, &obj)
}

fn update(old: Value, new: Value) -> Vec<FieldError> {
    let (old, new) = (defaulted(old), defaulted(new));
    let (group, kind) = kind_of(&new);
    validate_update(group, kind, &new, &old)
}

fn service(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
}

fn web_service() -> Value {
    service(json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}))
}

/// `obj` with the field at JSON `pointer` set (created if absent).
fn with(mut obj: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("a JSON pointer");
    match obj.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.insert(key.to_string(), value);
        }
        Some(Value::Array(items)) => items[key.parse::<usize>().expect("an index")] = value,
        _ => panic!("no object or list at {parent}"),
    }
    obj
}

fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "spec": spec})
}

fn web_pod() -> Value {
    pod(
        json!({"containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]}),
    )
}

fn deployment() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"}, "spec": {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}},
    }})
}

fn with_kind(obj: Value, api_version: &str, kind: &str) -> Value {
    let obj = with(obj, "/kind", json!(kind));
    with(obj, "/apiVersion", json!(api_version))
}

fn ingress(rules: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web", "namespace": "default"}, "spec": {"rules": rules}})
}

fn rule(path: Value) -> Value {
    json!([{"host": "web.example.com", "http": {"paths": [path]}}])
}

fn web_path() -> Value {
    json!({"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}})
}

fn slice(address_type: &str, addresses: Value) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "web-abc", "namespace": "default"},
        "addressType": address_type, "endpoints": [{"addresses": addresses}], "ports": [{"name": "http", "port": 8080}]})
}

type Expected = &'static [(&'static str, FieldErrorReason)];

mod other_cases;
mod service_cases;

fn create_cases() -> Vec<(&'static str, Value, Expected)> {
    let mut cases = service_cases::service_cases();
    cases.extend(other_cases::pod_cases());
    cases.extend(other_cases::workload_cases());
    cases.extend(other_cases::networking_cases());
    cases
}

fn paths_and_reasons(errs: &[FieldError]) -> Vec<(String, FieldErrorReason)> {
    errs.iter().map(|e| (e.field.clone(), e.reason)).collect()
}

fn expected(e: Expected) -> Vec<(String, FieldErrorReason)> {
    e.iter().map(|(f, r)| (f.to_string(), *r)).collect()
}

#[test]
fn create_table() {
    let cases = create_cases();
    for (name, obj, want) in &cases {
        let errs = create(obj.clone());
        assert_eq!(
            paths_and_reasons(&errs),
            expected(want),
            "case {name:?}: {errs:#?}"
        );
    }
    assert!(cases.len() >= 40);
}

#[test]
fn update_table() {
    for (name, old, new, want) in service_cases::update_cases() {
        let errs = update(old, new);
        assert_eq!(
            paths_and_reasons(&errs),
            expected(want),
            "case {name:?}: {errs:#?}"
        );
    }
}

fn texts(errs: &[FieldError]) -> Vec<String> {
    errs.iter().map(ToString::to_string).collect()
}

#[test]
fn messages_match_upstream() {
    let cases: Vec<(Vec<FieldError>, Vec<&str>)> = vec![
        (
            create(with(
                web_service(),
                "/spec/ports",
                json!([{"name": "http", "port": 80}, {"port": 443}]),
            )),
            vec!["spec.ports[1].name: Required value"],
        ),
        (
            create(with(
                web_service(),
                "/spec/ports",
                json!([{"name": "http", "port": 80}, {"name": "http", "port": 443}]),
            )),
            vec!["spec.ports[1].name: Duplicate value: \"http\""],
        ),
        (
            create(with(web_service(), "/spec/ports/0/port", json!(70000))),
            vec![
                "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
            ],
        ),
        (
            create(with(web_service(), "/spec/ports/0/protocol", json!("FOO"))),
            vec![
                "spec.ports[0].protocol: Unsupported value: \"FOO\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            ],
        ),
        (
            create(service(json!({"type": "ExternalName"}))),
            vec!["spec.externalName: Required value"],
        ),
        (
            create(service(
                json!({"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]}),
            )),
            vec![
                "spec.ports[1]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\", AppProtocol:(*string)(nil), Port:80, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}, NodePort:0}",
            ],
        ),
        (
            create(with(web_service(), "/spec/clusterIP", json!("abc"))),
            vec![
                "spec.clusterIPs[0]: Invalid value: \"abc\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ],
        ),
        (
            update(
                with(web_service(), "/spec/clusterIP", json!("10.96.0.10")),
                with(web_service(), "/spec/clusterIP", json!("10.96.0.20")),
            ),
            vec![
                "spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.20\"}: may not change once set",
            ],
        ),
        (
            create(with(
                deployment(),
                "/spec/template/metadata/labels",
                json!({"app": "x"}),
            )),
            vec![
                "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"x\"}: `selector` does not match template `labels`",
            ],
        ),
        (
            create(with(deployment(), "/spec/replicas", json!(-1))),
            vec!["spec.replicas: Invalid value: -1: must be greater than or equal to 0"],
        ),
        (
            update(
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
            ),
            vec![
                "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web2\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable",
            ],
        ),
        (
            create(ingress(rule(with(web_path(), "/pathType", Value::Null)))),
            vec![
                "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified",
            ],
        ),
        (
            create(with(
                slice("IPv4", json!([])),
                "/endpoints",
                Value::Array(vec![json!({"addresses": ["10.244.0.1"]}); 1001]),
            )),
            vec!["endpoints: Too many: 1001: must have at most 1000 items"],
        ),
    ];
    for (errs, want) in cases {
        assert_eq!(texts(&errs), want);
    }
}

#[test]
fn allowed_type_transitions_after_dropping_type_dependent_fields() {
    let node_port = defaulted(with(
        with(web_service(), "/spec/type", json!("NodePort")),
        "/spec/ports/0/nodePort",
        json!(30080),
    ));
    let node_port = with(node_port, "/spec/clusterIP", json!("10.96.0.10"));
    let node_port = with(node_port, "/spec/clusterIPs", json!(["10.96.0.10"]));
    for (new_type, extra) in [
        ("ClusterIP", json!({})),
        ("ExternalName", json!({"externalName": "db.example.com"})),
        ("LoadBalancer", json!({})),
    ] {
        let mut new = with(node_port.clone(), "/spec/type", json!(new_type));
        for (k, v) in extra.as_object().into_iter().flatten() {
            new["spec"][k] = v.clone();
        }
        apply_defaults("", "Service", &mut new);
        drop_type_dependent_fields(&mut new, &node_port);
        let errs = validate_update("", "Service", &new, &node_port);
        assert!(errs.is_empty(), "NodePort -> {new_type}: {errs:#?}");
    }
}

/// JSON shaped like the objects validated here: keys from their field
/// names, so that deep paths are reached, with leaves of any type.
fn arbitrary_object() -> impl Strategy<Value = Value> {
    const KEYS: &[&str] = &[
        "spec",
        "ports",
        "port",
        "name",
        "protocol",
        "targetPort",
        "nodePort",
        "type",
        "clusterIP",
        "clusterIPs",
        "ipFamilies",
        "ipFamilyPolicy",
        "selector",
        "matchLabels",
        "matchExpressions",
        "key",
        "operator",
        "values",
        "template",
        "metadata",
        "labels",
        "containers",
        "image",
        "containerPort",
        "hostPort",
        "volumes",
        "volumeMounts",
        "mountPath",
        "rules",
        "host",
        "http",
        "paths",
        "path",
        "pathType",
        "backend",
        "service",
        "number",
        "endpoints",
        "addresses",
        "addressType",
        "strategy",
        "rollingUpdate",
        "maxSurge",
        "maxUnavailable",
        "sessionAffinity",
        "sessionAffinityConfig",
        "clientIP",
        "timeoutSeconds",
        "externalName",
        "tls",
        "hosts",
        "env",
        "dnsPolicy",
        "dnsConfig",
        "nameservers",
        "updateStrategy",
        "externalIPs",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-2i64..70000).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop::sample::select(vec![
            "None",
            "TCP",
            "ClusterIP",
            "NodePort",
            "LoadBalancer",
            "ExternalName",
            "10.96.0.1",
            "::1",
            "IPv4",
            "Prefix",
            "In",
            "25%",
            "Always",
            "ClientIP"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|entries| {
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                )
            }),
        ]
    })
}

const KINDS: &[(&str, &str)] = &[
    ("", "Service"),
    ("", "Pod"),
    ("apps", "Deployment"),
    ("apps", "ReplicaSet"),
    ("apps", "DaemonSet"),
    ("networking.k8s.io", "Ingress"),
    ("discovery.k8s.io", "EndpointSlice"),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn defaulting_and_validation_never_panic(old in arbitrary_object(), new in arbitrary_object()) {
        for (group, kind) in KINDS {
            let (mut old, mut new) = (old.clone(), new.clone());
            let _ = validate_create(group, kind, &new);
            let _ = validate_update(group, kind, &new, &old);
            apply_defaults(group, kind, &mut old);
            apply_defaults(group, kind, &mut new);
            drop_type_dependent_fields(&mut new, &old);
            let _ = validate_create(group, kind, &new);
            let _ = validate_update(group, kind, &new, &old);
        }
    }

    #[test]
    fn defaulting_is_idempotent(obj in arbitrary_object()) {
        for (group, kind) in KINDS {
            let mut once = obj.clone();
            apply_defaults(group, kind, &mut once);
            let mut twice = once.clone();
            apply_defaults(group, kind, &mut twice);
            prop_assert_eq!(&once, &twice);
        }
    }
}
