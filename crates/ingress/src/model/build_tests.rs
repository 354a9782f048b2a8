//! The builder over small, hand-made clusters.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::build::{Classes, State, build};
use crate::model::objects::{IngressClassInfo, IngressInfo, ServiceInfo, SliceInfo};
use crate::model::route::ObjectRef;
use crate::model::router::Routed;
use crate::model::tls::{TlsError, default_certificate};

fn key(ns: &str, name: &str) -> ObjectRef {
    ObjectRef {
        namespace: ns.into(),
        name: name.into(),
    }
}

fn ingress(v: serde_json::Value) -> IngressInfo {
    let ing: k8s_openapi::api::networking::v1::Ingress =
        serde_json::from_value(v).expect("ingress");
    IngressInfo::from_ingress(&ing)
}

/// Service `name` in `shop` with port 80 (named http) and `ips` ready on 8080.
fn add_service(state: &mut State, name: &str, ips: &[&str]) {
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }))
    .expect("service");
    state
        .services
        .insert(key("shop", name), ServiceInfo::from_service(&svc));
    let slice: k8s_openapi::api::discovery::v1::EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("{name}-1"), "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": ips.iter().map(|ip| serde_json::json!({"addresses": [ip]})).collect::<Vec<_>>()
    }))
    .expect("slice");
    state.slices.insert(
        key("shop", &format!("{name}-1")),
        SliceInfo::from_slice(&slice).expect("owned"),
    );
}

fn add_ingress(
    state: &mut State,
    name: &str,
    created: &str,
    annotations: serde_json::Value,
    spec: serde_json::Value,
) {
    let ing = ingress(serde_json::json!({
        "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                     "creationTimestamp": created, "annotations": annotations},
        "spec": spec
    }));
    state.ingresses.insert(ing.key.clone(), ing);
}

fn rule(host: &str, path: &str, kind: &str, service: &str) -> serde_json::Value {
    serde_json::json!({"host": host, "http": {"paths": [
        {"path": path, "pathType": kind, "backend": {"service": {"name": service, "port": {"number": 80}}}}]}})
}

fn routed_service(routed: Routed<'_, Arc<crate::model::route::Location>>) -> Option<String> {
    match routed {
        Routed::Rule(l) | Routed::Default(l) => l.upstream.service.as_ref().map(|s| s.name.clone()),
        Routed::NotFound => None,
    }
}

fn ours() -> serde_json::Value {
    serde_json::json!({"ingressClassName": "ferry"})
}

fn with(mut spec: serde_json::Value, field: &str, value: serde_json::Value) -> serde_json::Value {
    spec[field] = value;
    spec
}

#[test]
fn fanout_with_endpoints_and_classes() {
    let mut state = State::default();
    add_service(&mut state, "s1", &["10.244.1.5", "10.244.2.5"]);
    add_service(&mut state, "s2", &["10.244.1.6"]);
    let spec = with(
        ours(),
        "rules",
        serde_json::json!([{"host": "foo.bar.com", "http": {"paths": [
        {"path": "/foo", "pathType": "Prefix", "backend": {"service": {"name": "s1", "port": {"name": "http"}}}},
        {"path": "/bar", "pathType": "Prefix", "backend": {"service": {"name": "s2", "port": {"number": 80}}}}]}}]),
    );
    add_ingress(
        &mut state,
        "fanout",
        "2026-01-01T00:00:00Z",
        serde_json::json!({}),
        spec,
    );
    // Another controller's Ingress, and one without a class.
    add_ingress(
        &mut state,
        "nginx",
        "2026-01-01T00:00:00Z",
        serde_json::json!({}),
        serde_json::json!({"ingressClassName": "nginx", "rules": [rule("foo.bar.com", "/x", "Prefix", "s1")]}),
    );
    add_ingress(
        &mut state,
        "classless",
        "2026-01-01T00:00:00Z",
        serde_json::json!({}),
        serde_json::json!({"rules": [rule("other.com", "/", "Prefix", "s1")]}),
    );
    let built = build(&state, &Classes::default(), default_certificate());
    assert_eq!(built.owned, vec![key("shop", "fanout")]);
    let r = &built.routes.router;
    assert_eq!(
        routed_service(r.route("foo.bar.com", "/foo/x")).as_deref(),
        Some("s1")
    );
    assert_eq!(
        routed_service(r.route("foo.bar.com", "/bar")).as_deref(),
        Some("s2")
    );
    assert_eq!(
        routed_service(r.route("foo.bar.com", "/x")),
        None,
        "the nginx-class rule is not ours"
    );
    assert_eq!(
        routed_service(r.route("other.com", "/")),
        None,
        "classless is not ours by default"
    );
    match r.route("foo.bar.com", "/foo") {
        Routed::Rule(l) => assert_eq!(
            l.upstream.endpoints,
            vec![
                "10.244.1.5:8080".parse().expect("addr"),
                "10.244.2.5:8080".parse().expect("addr")
            ],
            "ready endpoints on the target port, directly (not the ClusterIP)"
        ),
        other => panic!("{other:?}"),
    }
    assert!(built.events.is_empty(), "{:?}", built.events);

    // The default IngressClass being ours adopts classless Ingresses; the
    // legacy annotation names a class too.
    state.classes.insert(
        "ferry".into(),
        IngressClassInfo {
            controller: "ferry.dev/ingress-controller".into(),
            is_default: true,
        },
    );
    add_ingress(
        &mut state,
        "legacy",
        "2026-01-01T00:00:00Z",
        serde_json::json!({"kubernetes.io/ingress.class": "ferry"}),
        serde_json::json!({"rules": [rule("legacy.com", "/", "Prefix", "s2")]}),
    );
    let built = build(&state, &Classes::default(), default_certificate());
    assert_eq!(
        routed_service(built.routes.router.route("other.com", "/")).as_deref(),
        Some("s1")
    );
    assert_eq!(
        routed_service(built.routes.router.route("legacy.com", "/")).as_deref(),
        Some("s2")
    );
}

#[test]
fn oldest_wins_a_conflict_and_the_other_gets_an_event() {
    let mut state = State::default();
    add_service(&mut state, "old", &["10.244.1.5"]);
    add_service(&mut state, "new", &["10.244.1.6"]);
    add_ingress(
        &mut state,
        "b-new",
        "2026-02-01T00:00:00Z",
        serde_json::json!({}),
        with(
            ours(),
            "rules",
            serde_json::json!([rule("www.example.com", "/", "Prefix", "new")]),
        ),
    );
    add_ingress(
        &mut state,
        "a-old",
        "2026-01-01T00:00:00Z",
        serde_json::json!({}),
        with(
            ours(),
            "rules",
            serde_json::json!([rule("www.example.com", "/", "Prefix", "old")]),
        ),
    );
    let built = build(&state, &Classes::default(), default_certificate());
    assert_eq!(
        routed_service(built.routes.router.route("www.example.com", "/")).as_deref(),
        Some("old")
    );
    assert_eq!(built.events.len(), 1);
    assert_eq!(built.events[0].ingress, key("shop", "b-new"));
    assert_eq!(built.events[0].diagnostic.reason, "HostPathConflict");
    assert!(built.events[0].diagnostic.message.contains("shop/a-old"));
}

#[test]
fn bad_backends_and_paths_stay_local() {
    let mut state = State::default();
    add_service(&mut state, "good", &["10.244.1.5"]);
    add_ingress(
        &mut state,
        "good",
        "2026-01-01T00:00:00Z",
        serde_json::json!({}),
        with(
            ours(),
            "rules",
            serde_json::json!([rule("good.com", "/", "Prefix", "good")]),
        ),
    );
    add_ingress(
        &mut state,
        "bad",
        "2026-01-01T00:00:01Z",
        serde_json::json!({"nginx.ingress.kubernetes.io/use-regex": "true",
                           "nginx.ingress.kubernetes.io/configuration-snippet": "more_set_headers x;"}),
        with(
            ours(),
            "rules",
            serde_json::json!([
            rule("bad.com", "/(", "ImplementationSpecific", "good"),
            rule("missing.com", "/", "Prefix", "nowhere"),
            {"host": "port.com", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "good", "port": {"name": "grpc"}}}}]}}]),
        ),
    );
    let built = build(&state, &Classes::default(), default_certificate());
    let reasons: BTreeMap<&str, &str> = built
        .events
        .iter()
        .map(|e| (e.diagnostic.reason, e.diagnostic.message.as_str()))
        .collect();
    assert!(reasons.contains_key("SnippetRefused"), "{reasons:?}");
    assert!(
        reasons
            .get("InvalidPath")
            .is_some_and(|m| m.contains("regular expression")),
        "{reasons:?}"
    );
    assert!(built.events.iter().any(|e| {
        e.diagnostic
            .message
            .contains("service shop/nowhere does not exist")
    }));
    assert!(
        built
            .events
            .iter()
            .any(|e| e.diagnostic.message.contains("has no port \"grpc\""))
    );
    assert!(built.events.iter().all(|e| e.ingress == key("shop", "bad")));
    // The good Ingress serves; a bad backend answers (with no endpoints: 503).
    assert_eq!(
        routed_service(built.routes.router.route("good.com", "/")).as_deref(),
        Some("good")
    );
    match built.routes.router.route("missing.com", "/") {
        Routed::Rule(l) => assert!(l.upstream.endpoints.is_empty()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn canary_attaches_to_the_primary_rule() {
    let mut state = State::default();
    add_service(&mut state, "stable", &["10.244.1.5"]);
    add_service(&mut state, "next", &["10.244.1.9"]);
    add_ingress(
        &mut state,
        "web",
        "2026-01-01T00:00:00Z",
        serde_json::json!({}),
        with(
            ours(),
            "rules",
            serde_json::json!([rule("www.example.com", "/", "Prefix", "stable")]),
        ),
    );
    add_ingress(
        &mut state,
        "web-canary",
        "2026-01-02T00:00:00Z",
        serde_json::json!({"nginx.ingress.kubernetes.io/canary": "true",
                           "nginx.ingress.kubernetes.io/canary-weight": "30"}),
        with(
            ours(),
            "rules",
            serde_json::json!([rule("www.example.com", "/", "Prefix", "next")]),
        ),
    );
    let built = build(&state, &Classes::default(), default_certificate());
    assert!(built.events.is_empty(), "{:?}", built.events);
    match built.routes.router.route("www.example.com", "/") {
        Routed::Rule(l) => {
            assert_eq!(
                l.upstream.service.as_ref().map(|s| s.name.as_str()),
                Some("stable")
            );
            let canary = l.canary.as_ref().expect("canary attached");
            assert_eq!(canary.weight, 30);
            assert_eq!(
                canary.upstream.service.as_ref().map(|s| s.name.as_str()),
                Some("next")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn default_backend_and_tls_hosts() {
    let mut state = State::default();
    add_service(&mut state, "fallback", &["10.244.1.5"]);
    add_service(&mut state, "web", &["10.244.1.6"]);
    add_ingress(
        &mut state,
        "default",
        "2026-01-01T00:00:00Z",
        serde_json::json!({}),
        with(
            ours(),
            "defaultBackend",
            serde_json::json!({"service": {"name": "fallback", "port": {"number": 80}}}),
        ),
    );
    let spec = with(
        with(
            ours(),
            "rules",
            serde_json::json!([rule("secure.example.com", "/", "Prefix", "web")]),
        ),
        "tls",
        serde_json::json!([{"hosts": ["secure.example.com"], "secretName": "missing-tls"}]),
    );
    add_ingress(
        &mut state,
        "secure",
        "2026-01-01T00:00:01Z",
        serde_json::json!({}),
        spec,
    );
    let built = build(&state, &Classes::default(), default_certificate());
    assert_eq!(
        routed_service(built.routes.router.route("anything.com", "/x")).as_deref(),
        Some("fallback")
    );
    // No usable Secret: the host is not a TLS host (no ssl-redirect), and
    // the Ingress hears about it.
    assert!(built.routes.tls_hosts.is_empty());
    let e = built
        .events
        .iter()
        .find(|e| e.diagnostic.reason == "TLSSecretNotFound")
        .expect("event");
    assert_eq!(e.ingress, key("shop", "secure"));
    assert!(e.diagnostic.message.contains("shop/missing-tls"));
    state.secrets.insert(
        key("shop", "missing-tls"),
        Err(TlsError::BadPem {
            secret: "shop/missing-tls".into(),
            key: "tls.crt",
            reason: "garbage".into(),
        }),
    );
    let built = build(&state, &Classes::default(), default_certificate());
    assert!(
        built
            .events
            .iter()
            .any(|e| e.diagnostic.reason == "TLSSecretInvalid")
    );
}
