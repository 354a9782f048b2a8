//! kubectl's generator commands (`kubectl create configmap|secret|
//! deployment|service|ingress`, `kubectl expose`) against `ferry
//! apiserver`. Their typed clients send Kubernetes protobuf bodies, not
//! JSON; these tests check that the objects are stored with the right
//! fields.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};
use support::Apiserver;

fn get_json(server: &Apiserver, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&server.kubectl_ok(&all)).unwrap()
}

/// The fields every created object gets from the server.
fn assert_stored(obj: &Value, name: &str) {
    assert_eq!(obj["metadata"]["name"], name, "{obj:#}");
    assert_eq!(obj["metadata"]["namespace"], "default", "{obj:#}");
    assert!(
        obj["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty()),
        "{obj:#}"
    );
    assert!(obj["metadata"]["creationTimestamp"].is_string(), "{obj:#}");
}

#[test]
fn generators_send_protobuf() {
    if !support::kubectl_available() {
        return;
    }
    let server = Apiserver::start();
    // -v=9 logs the request headers: make sure this really is protobuf.
    let out = server.kubectl(&["create", "configmap", "app", "--from-literal=a=1", "-v=9"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("Content-Type: application/vnd.kubernetes.protobuf"),
        "kubectl did not send protobuf: {log}"
    );
}

#[test]
fn create_configmap_and_secret() {
    if !support::kubectl_available() {
        return;
    }
    let server = Apiserver::start();
    server.kubectl_ok(&[
        "create",
        "configmap",
        "app",
        "--from-literal=a=1",
        "--from-literal=b=two words",
    ]);
    let cm = get_json(&server, &["configmap", "app"]);
    assert_stored(&cm, "app");
    assert_eq!(cm["data"], json!({"a": "1", "b": "two words"}));

    server.kubectl_ok(&["create", "secret", "generic", "s", "--from-literal=p=x"]);
    let secret = get_json(&server, &["secret", "s"]);
    assert_stored(&secret, "s");
    assert_eq!(secret["data"], json!({"p": "eA=="}));
}

#[test]
fn create_deployment_and_expose_it() {
    if !support::kubectl_available() {
        return;
    }
    let server = Apiserver::start();
    server.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=2",
        "--port=80",
    ]);
    let deploy = get_json(&server, &["deployment", "web"]);
    assert_stored(&deploy, "web");
    let spec = &deploy["spec"];
    assert_eq!(spec["replicas"], 2);
    assert_eq!(spec["selector"], json!({"matchLabels": {"app": "web"}}));
    assert_eq!(
        spec["template"]["metadata"]["labels"],
        json!({"app": "web"})
    );
    let container = &spec["template"]["spec"]["containers"][0];
    assert_eq!(container["name"], "nginx");
    assert_eq!(container["image"], "nginx");
    assert_eq!(container["ports"][0]["containerPort"], 80);

    server.kubectl_ok(&[
        "expose",
        "deployment",
        "web",
        "--name=web-exposed",
        "--port=80",
        "--target-port=8080",
    ]);
    let svc = get_json(&server, &["service", "web-exposed"]);
    assert_stored(&svc, "web-exposed");
    assert_eq!(svc["spec"]["selector"], json!({"app": "web"}));
    let port = &svc["spec"]["ports"][0];
    assert_eq!(port["port"], 80);
    assert_eq!(port["targetPort"], 8080);
    assert_eq!(port["protocol"], "TCP");
}

#[test]
fn create_services() {
    if !support::kubectl_available() {
        return;
    }
    let server = Apiserver::start();
    server.kubectl_ok(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    let svc = get_json(&server, &["service", "web"]);
    assert_stored(&svc, "web");
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(svc["spec"]["selector"], json!({"app": "web"}));
    assert_eq!(
        svc["spec"]["ports"][0],
        json!({"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080})
    );

    server.kubectl_ok(&[
        "create",
        "service",
        "nodeport",
        "np",
        "--tcp=5678:8080",
        "--node-port=30080",
    ]);
    let svc = get_json(&server, &["service", "np"]);
    assert_eq!(svc["spec"]["type"], "NodePort");
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30080);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
}

#[test]
fn create_ingress_namespace_and_service_account() {
    if !support::kubectl_available() {
        return;
    }
    let server = Apiserver::start();
    server.kubectl_ok(&[
        "create",
        "ingress",
        "site",
        "--class=nginx",
        "--rule=foo.com/bar*=svc1:8080,tls=my-cert",
    ]);
    let ing = get_json(&server, &["ingress", "site"]);
    assert_stored(&ing, "site");
    assert_eq!(ing["spec"]["ingressClassName"], "nginx");
    assert_eq!(
        ing["spec"]["rules"][0],
        json!({"host": "foo.com", "http": {"paths": [{
            "path": "/bar",
            "pathType": "Prefix",
            "backend": {"service": {"name": "svc1", "port": {"number": 8080}}}
        }]}})
    );
    assert_eq!(
        ing["spec"]["tls"],
        json!([{"hosts": ["foo.com"], "secretName": "my-cert"}])
    );

    server.kubectl_ok(&["create", "namespace", "team-a"]);
    let ns = get_json(&server, &["namespace", "team-a"]);
    assert_eq!(ns["metadata"]["name"], "team-a");

    server.kubectl_ok(&["create", "serviceaccount", "robot", "-n", "team-a"]);
    let sa = get_json(&server, &["serviceaccount", "robot", "-n", "team-a"]);
    assert_eq!(sa["metadata"]["namespace"], "team-a");
}
