//! `ferry trace` in the lab (issue 9, point 4), as root with real kubectl:
//! echo pods on two nodes behind a ClusterIP + NodePort Service; the trace
//! names the kernel objects of each path (same node: cni0 and no
//! flannel.1; across nodes: flannel.1 and the peer's VTEP; to the Service:
//! its nf_tables elements, endpoint set and DNAT; host to NodePort: the
//! node-port map and the masquerade), and `--probe` reports the endpoint
//! that really answered: the conntrack entry's endpoint is the pod whose
//! name `/hostname` returned.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::process::Output;

use support::lab::*;

const MANIFEST: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: echo-a, labels: {app: echo}}
spec:
  nodeName: lab-node-1
  containers: [{name: echo, image: ferry/echo}]
---
apiVersion: v1
kind: Pod
metadata: {name: echo-b, labels: {app: echo}}
spec:
  nodeName: lab-node-2
  containers: [{name: echo, image: ferry/echo}]
---
apiVersion: v1
kind: Pod
metadata: {name: client-1}
spec:
  nodeName: lab-node-1
  containers: [{name: sh, image: busybox, command: ["sleep", "3600"]}]
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  type: NodePort
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: echo}
spec:
  rules:
  - host: www.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: echo, port: {number: 80}}}}
"#;

/// A pod that never gets scheduled, so it never gets an IP.
const PENDING: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: pending}
spec:
  nodeSelector: {ferry.dev/no-such-node: "true"}
  containers: [{name: echo, image: ferry/echo}]
"#;

fn run_trace(lab: &Lab, args: &[&str]) -> Output {
    let kubeconfig = lab.dir.join("kubeconfig");
    std::process::Command::new(FERRY)
        .arg("trace")
        .args(args)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .output()
        .unwrap()
}

fn trace(lab: &Lab, args: &[&str]) -> String {
    let out = run_trace(lab, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ferry trace {args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("$ ferry trace {}\n{stdout}", args.join(" "));
    stdout
}

fn has(text: &str, needle: &str) {
    assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
}

/// The pod the probe's conntrack entry names (through an Ingress: the
/// endpoint the answer names), checked against the name the echo server
/// answered (`/hostname`).
fn probed_pod(out: &str) -> String {
    let chosen = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("chosen endpoint: "))
        .unwrap_or_else(|| panic!("no chosen endpoint:\n{out}"));
    let pod = chosen
        .split_once(", pod default/")
        .map(|(_, pod)| pod.trim().to_string())
        .unwrap_or_else(|| panic!("the chosen endpoint is not a pod: {chosen}"));
    let answered = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("HTTP GET /hostname -> "))
        .find(|rest| rest.contains(" 200 OK, body \""))
        .and_then(|rest| rest.split_once(", body \""))
        .and_then(|(_, body)| body.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no /hostname answer:\n{out}"));
    assert_eq!(
        pod, answered,
        "conntrack chose {pod}, but {answered} answered:\n{out}"
    );
    pod
}

/// `10.244.5.0/24` for a pod address 10.244.5.x (the lab's /24 per node).
fn subnet_of(ip: &str) -> String {
    let (net, _) = ip.rsplit_once('.').unwrap();
    format!("{net}.0")
}

#[test]
fn trace_end_to_end() {
    if !support::can_use_netns("trace_end_to_end")
        || !support::kubectl_available()
        || !tool_available("curl", "--version")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::up(dir.path(), 3);
    lab.apply(MANIFEST);
    lab.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod",
        "--all",
        "--timeout=90s",
    ]);
    let echo = pods(&lab, "app=echo");
    let ip_of = |name: &str| {
        echo.iter()
            .find(|p| p.name == name)
            .map(|p| p.ip.clone())
            .unwrap()
    };
    let (a_ip, b_ip) = (ip_of("echo-a"), ip_of("echo-b"));
    let cluster_ip = lab.kubectl_ok(&["get", "svc", "echo", "-o", "jsonpath={.spec.clusterIP}"]);
    let node_port = lab.kubectl_ok(&[
        "get",
        "svc",
        "echo",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);

    // Pod to pod on the same node: the bridge, no overlay.
    let out = trace(&lab, &["client-1", "pod/echo-a", "--probe"]);
    has(&out, "route 10.244.");
    has(&out, "veth: eth0 of pod default/client-1 -> veth");
    has(&out, "master cni0");
    has(&out, "cni0 on lab-node-1 bridges the frame");
    has(&out, "bridge cni0 -> veth");
    has(
        &out,
        &format!("pod default/echo-a receives it on eth0 ({a_ip}:8080)"),
    );
    assert!(!out.contains("flannel.1"), "same node, no overlay:\n{out}");
    assert_eq!(probed_pod(&out), "echo-a");
    // The same path, outside ferry trace.
    let sandbox = "lab-node-1-default-client-1";
    assert_eq!(
        curl_from(sandbox, &format!("http://{a_ip}:8080/hostname")).trim(),
        "echo-a"
    );

    // Across nodes: flannel.1 and the VTEP of lab-node-2.
    let out = trace(&lab, &["client-1", "pod/echo-b", "--probe"]);
    let b_net = subnet_of(&b_ip);
    has(&out, "route default via 10.244.");
    has(
        &out,
        &format!("route {b_net}/24 via {b_net} dev flannel.1 onlink (netns lab-node-1)"),
    );
    has(&out, "flannel.1 -> 172.30.0.12 (VTEP of lab-node-2)");
    has(&out, &format!("neigh {b_net} lladdr "));
    has(
        &out,
        "dev flannel.1 dst 172.30.0.12 (VXLAN id 1, dstport 8472",
    );
    has(
        &out,
        "links ferry-n1 and ferry-n2 are ports of bridge ferry0",
    );
    has(&out, "rule \"pod to pod: no NAT\"");
    has(&out, "route 10.244.");
    has(
        &out,
        &format!("pod default/echo-b receives it on eth0 ({b_ip}:8080)"),
    );
    assert_eq!(probed_pod(&out), "echo-b");

    // Pod to the Service: its map element, the endpoint set, the DNAT;
    // without --probe, one branch per endpoint.
    let out = wait_for(30, "both endpoints in the proxy's tables", || {
        let out = trace(&lab, &["client-1", "svc/echo"]);
        out.contains("endpoint set").then_some(out)
    });
    let out = if out.contains("2 endpoint(s)") {
        out
    } else {
        wait_for(30, "the second endpoint", || {
            let out = trace(&lab, &["client-1", "svc/echo"]);
            out.contains("2 endpoint(s)").then_some(out)
        })
    };
    has(
        &out,
        &format!("table ip ferry-proxy map service-ids element {{ {cluster_ip} . tcp . 80 : "),
    );
    has(&out, "kube-proxy: KUBE-SERVICES -> KUBE-SVC-");
    has(&out, &format!("{a_ip}:8080 (echo-a)"));
    has(&out, &format!("{b_ip}:8080 (echo-b)"));
    has(&out, "map backends {");
    has(&out, &format!("DNAT {cluster_ip}:80 -> one of 2 endpoints"));
    has(
        &out,
        &format!("-- to endpoint {a_ip}:8080 (pod default/echo-a on lab-node-1)"),
    );
    has(
        &out,
        &format!("-- to endpoint {b_ip}:8080 (pod default/echo-b on lab-node-2)"),
    );
    // Each probe: the endpoint conntrack shows is the one that answered;
    // new connections reach both.
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        let out = trace(&lab, &["client-1", "svc/echo:http", "--probe"]);
        has(&out, "conntrack on lab-node-1: tcp ");
        has(&out, &format!(" -> {cluster_ip}:80 (reply "));
        let pod = probed_pod(&out);
        // Only the chosen endpoint's branch is left.
        assert_eq!(out.matches("-- to endpoint").count(), 1, "{out}");
        has(&out, &format!("(pod default/{pod} on lab-node-"));
        has(&out, ", chosen for the probe");
        has(&out, &format!("pod default/{pod} receives it on eth0"));
        seen.insert(pod);
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "20 probes reached only {seen:?}");

    // The host to a NodePort of lab-node-2: the underlay bridge, the
    // node-port map, the masquerade.
    for to in [
        format!("lab-node-2:{node_port}"),
        format!("172.30.0.12:{node_port}"),
    ] {
        let out = trace(&lab, &["host", &to, "--probe"]);
        has(&out, "route 172.30.0.0/24 dev ferry0 (host namespace)");
        has(
            &out,
            "bridge ferry0 -> ferry-n2 -> eth0 of lab-node-2 (172.30.0.12)",
        );
        has(
            &out,
            &format!("table ip ferry-proxy map node-port-ids element {{ tcp . {node_port} : "),
        );
        has(
            &out,
            &format!("set masq-node-ports {{ tcp . {node_port} }}"),
        );
        has(&out, "masquerade on lab-node-2: source becomes");
        has(&out, "conntrack on lab-node-2: tcp 172.30.0.1:");
        let pod = probed_pod(&out);
        if pod == "echo-a" {
            // Back across the overlay to lab-node-1.
            has(&out, "flannel.1 -> 172.30.0.11 (VTEP of lab-node-1)");
        } else {
            assert_eq!(pod, "echo-b");
        }
    }

    // From a node: nat output, the ClusterIP masquerade mark.
    let out = trace(&lab, &["node/lab-node-3", "svc/echo", "--probe"]);
    has(
        &out,
        "lab-node-3 sends from 172.30.0.13: the first route lookup, before nat output",
    );
    has(
        &out,
        &format!("marked by set cluster-ips {{ {cluster_ip} }}"),
    );
    has(&out, "masquerade on lab-node-3: source becomes");
    has(&out, "conntrack on lab-node-3: tcp 172.30.0.13:");
    probed_pod(&out);

    // An Ingress URL: to the controller on a node, then its own connection
    // to an endpoint; the answer names the endpoint.
    for from in ["client-1", "host"] {
        let out = wait_for(
            30,
            "the Ingress controller to serve www.example.com",
            || {
                let out = trace(&lab, &[from, "http://www.example.com/hostname", "--probe"]);
                out.contains(" 200 OK, body").then_some(out)
            },
        );
        has(&out, "the Ingress controller on lab-node-");
        has(
            &out,
            "Ingress default/echo rule -> upstream default-echo-80 (2 ready endpoint(s))",
        );
        has(
            &out,
            "rule host www.example.com path / (Prefix) -> service default/echo",
        );
        has(&out, "host network, listening on :80 of 172.30.0.1");
        probed_pod(&out);
    }

    // Errors: a message and a non-zero exit, no panic.
    lab.apply(PENDING);
    for (args, message) in [
        (vec!["nope", "svc/echo"], "pod default/nope not found"),
        (
            vec!["client-1", "svc/echo:81"],
            "service default/echo has no port 81",
        ),
        (
            vec!["client-1", "svc/nope"],
            "service default/nope not found",
        ),
        (
            vec!["client-1", "pending:8080"],
            "pod default/pending has no IP yet",
        ),
        (
            vec!["pending", "pod/echo-a"],
            "pod default/pending has no IP yet",
        ),
        (
            vec!["client-1", "http://nothing.example.com/"],
            "no Ingress rule serves host nothing.example.com",
        ),
    ] {
        let out = run_trace(&lab, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    lab.down();
}
