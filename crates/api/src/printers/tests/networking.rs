//! Service, Endpoints, EndpointSlice, Ingress and IngressClass rows.

use serde_json::{Value, json};

use super::{CREATED_5M_AGO, CREATED_10D_AGO, meta, row};

fn service(spec: Value, status: Value) -> Value {
    json!({"metadata": meta("nginx", CREATED_5M_AGO), "spec": spec, "status": status})
}

#[test]
fn service_node_port() {
    let svc = service(
        json!({
            "type": "NodePort",
            "clusterIP": "10.96.3.4",
            "clusterIPs": ["10.96.3.4"],
            "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30120, "protocol": "TCP"}],
            "selector": {"app": "nginx"},
        }),
        json!({"loadBalancer": {}}),
    );
    assert_eq!(
        row("", "Service", &svc),
        json!([
            "nginx",
            "NodePort",
            "10.96.3.4",
            "<none>",
            "80:30120/TCP",
            "5m",
            "app=nginx"
        ])
    );
}

#[test]
fn service_cluster_ip_and_headless() {
    let kubernetes = service(
        json!({"type": "ClusterIP", "clusterIP": "10.96.0.1",
               "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}),
        json!({}),
    );
    assert_eq!(
        row("", "Service", &kubernetes),
        json!([
            "nginx",
            "ClusterIP",
            "10.96.0.1",
            "<none>",
            "443/TCP",
            "5m",
            "<none>"
        ])
    );

    let headless = service(
        json!({"clusterIP": "None", "externalIPs": ["192.0.2.1", "192.0.2.2"],
               "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53}, {"port": 9153, "protocol": "TCP"}],
               "selector": {"k8s-app": "kube-dns", "app.kubernetes.io/name": "coredns"}}),
        json!({}),
    );
    assert_eq!(
        row("", "Service", &headless),
        json!([
            "nginx",
            "ClusterIP",
            "None",
            "192.0.2.1,192.0.2.2",
            "53/UDP,53/TCP,9153/TCP",
            "5m",
            "app.kubernetes.io/name=coredns,k8s-app=kube-dns"
        ])
    );
}

#[test]
fn service_load_balancer() {
    let spec = json!({"type": "LoadBalancer", "clusterIPs": ["10.96.8.8"],
                      "ports": [{"port": 443, "nodePort": 31443, "protocol": "TCP"}]});
    let pending = service(spec.clone(), json!({"loadBalancer": {}}));
    assert_eq!(
        row("", "Service", &pending),
        json!([
            "nginx",
            "LoadBalancer",
            "10.96.8.8",
            "<pending>",
            "443:31443/TCP",
            "5m",
            "<none>"
        ])
    );

    let mut with_ips = spec;
    with_ips["externalIPs"] = json!(["198.51.100.7"]);
    let ready = service(
        with_ips,
        json!({"loadBalancer": {"ingress": [
            {"hostname": "lb.example.com"}, {"ip": "203.0.113.10"}, {"ip": "203.0.113.10"}]}}),
    );
    assert_eq!(
        row("", "Service", &ready)[3],
        "203.0.113.10,lb.example.com,198.51.100.7"
    );
}

#[test]
fn service_external_name() {
    let svc = service(
        json!({"type": "ExternalName", "externalName": "db.example.com"}),
        json!({}),
    );
    assert_eq!(
        row("", "Service", &svc),
        json!([
            "nginx",
            "ExternalName",
            "<none>",
            "db.example.com",
            "<none>",
            "5m",
            "<none>"
        ])
    );
    let odd = service(json!({"type": "Tunnel"}), json!({}));
    assert_eq!(row("", "Service", &odd)[3], "<unknown>");
}

#[test]
fn endpoints_abbreviate_after_three() {
    let endpoints = json!({
        "metadata": meta("nginx", CREATED_5M_AGO),
        "subsets": [
            {"addresses": [{"ip": "10.244.1.5"}, {"ip": "10.244.2.3"}], "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
            {"addresses": [{"ip": "10.244.3.7"}, {"ip": "10.244.3.8"}], "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
        ],
    });
    assert_eq!(
        row("", "Endpoints", &endpoints),
        json!([
            "nginx",
            "10.244.1.5:80,10.244.2.3:80,10.244.3.7:80 + 1 more...",
            "5m"
        ])
    );
}

#[test]
fn endpoints_formats() {
    let format = |subsets: Value| {
        let endpoints = json!({"metadata": meta("svc", CREATED_5M_AGO), "subsets": subsets});
        row("", "Endpoints", &endpoints)[1].clone()
    };
    assert_eq!(format(json!(null)), "<none>");
    assert_eq!(format(json!([])), "<none>");
    assert_eq!(
        format(json!([{"addresses": [{"ip": "10.244.1.5"}, {"ip": "10.244.1.6"}]}])),
        "10.244.1.5,10.244.1.6"
    );
    assert_eq!(
        format(
            json!([{"addresses": [{"ip": "10.244.1.5"}], "ports": [{"port": 80}, {"port": 443}]}])
        ),
        "10.244.1.5:80,10.244.1.5:443"
    );
    assert_eq!(
        format(json!([{"addresses": [{"ip": "fd00:10:244::5"}], "ports": [{"port": 8080}]}])),
        "[fd00:10:244::5]:8080"
    );
    // Only not-ready addresses: nothing listed, and no "<none>" either.
    assert_eq!(
        format(json!([{"notReadyAddresses": [{"ip": "10.244.1.5"}], "ports": [{"port": 80}]}])),
        ""
    );
    // Exactly three is not "more".
    assert_eq!(
        format(
            json!([{"addresses": [{"ip": "a"}, {"ip": "b"}, {"ip": "c"}], "ports": [{"port": 1}]}])
        ),
        "a:1,b:1,c:1"
    );
}

#[test]
fn endpoint_slice_rows() {
    let slice = json!({
        "metadata": meta("nginx-7xkqp", CREATED_5M_AGO),
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.244.1.5"], "conditions": {"ready": true}},
            {"addresses": ["10.244.2.3"], "conditions": {"ready": false}},
            {"addresses": ["10.244.3.7", "10.244.3.8"]},
        ],
    });
    assert_eq!(
        row("discovery.k8s.io", "EndpointSlice", &slice),
        json!([
            "nginx-7xkqp",
            "IPv4",
            "80",
            "10.244.1.5,10.244.2.3,10.244.3.7 + 1 more...",
            "5m"
        ])
    );

    let odd = json!({
        "metadata": meta("custom", CREATED_5M_AGO),
        "addressType": "FQDN",
        "ports": [{"name": "http"}, {}, {"port": 443}, {"port": 8443}],
    });
    assert_eq!(
        row("discovery.k8s.io", "EndpointSlice", &odd),
        json!(["custom", "FQDN", "http,*,443 + 1 more...", "<unset>", "5m"])
    );
    let empty =
        json!({"metadata": meta("empty", CREATED_5M_AGO), "addressType": "IPv6", "endpoints": []});
    assert_eq!(
        row("discovery.k8s.io", "EndpointSlice", &empty),
        json!(["empty", "IPv6", "<unset>", "<unset>", "5m"])
    );
}

#[test]
fn ingress_rows() {
    let web = json!({
        "metadata": meta("web", CREATED_5M_AGO),
        "spec": {
            "ingressClassName": "nginx",
            "tls": [{"hosts": ["foo.example.com"], "secretName": "web-tls"}],
            "rules": [
                {"host": "foo.example.com", "http": {"paths": []}},
                {"host": "bar.example.com", "http": {"paths": []}},
            ],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "172.18.0.5"}]}},
    });
    assert_eq!(
        row("networking.k8s.io", "Ingress", &web),
        json!([
            "web",
            "nginx",
            "foo.example.com,bar.example.com",
            "172.18.0.5",
            "80, 443",
            "5m"
        ])
    );

    let catch_all = json!({
        "metadata": meta("default-backend", CREATED_5M_AGO),
        "spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}, "rules": [{"http": {}}]},
    });
    assert_eq!(
        row("networking.k8s.io", "Ingress", &catch_all),
        json!(["default-backend", "<none>", "*", "", "80", "5m"])
    );

    let many = json!({
        "metadata": meta("many", CREATED_5M_AGO),
        "spec": {"rules": [{"host": "a"}, {"host": "b"}, {}, {"host": "c"}, {"host": "d"}, {"host": "e"}]},
    });
    assert_eq!(
        row("networking.k8s.io", "Ingress", &many)[2],
        "a,b,c + 3 more..."
    );
}

#[test]
fn ingress_class_rows() {
    let class = json!({"metadata": meta("nginx", CREATED_10D_AGO), "spec": {"controller": "k8s.io/ingress-nginx"}});
    assert_eq!(
        row("networking.k8s.io", "IngressClass", &class),
        json!(["nginx", "k8s.io/ingress-nginx", "<none>", "10d"])
    );
    let with_parameters = json!({
        "metadata": meta("external-lb", CREATED_10D_AGO),
        "spec": {"controller": "example.com/ingress-controller", "parameters": {
            "apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "external-lb"}},
    });
    assert_eq!(
        row("networking.k8s.io", "IngressClass", &with_parameters)[2],
        "IngressParameters.k8s.example.com/external-lb"
    );
}
