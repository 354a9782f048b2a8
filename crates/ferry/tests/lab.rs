//! The lab end to end (issue 5, points 1-4, 6 and 7), as root: `ferry up`
//! builds three nodes, real kubectl drives it, traffic is checked from
//! inside pod namespaces, then `ferry down` must leave nothing behind.
//! The lab uses fixed names (ferry0, lab-node-*, 127.0.0.1:6443), so the
//! scenarios run one after the other in one test, under a file lock that
//! also keeps other lab users of this machine out.
#![allow(clippy::unwrap_used)]

mod support;

use support::lab::*;

use std::net::TcpListener;
use std::path::Path;

fn agent_pid_opt(dir: &Path, node: &str) -> Option<i32> {
    agent_pid_of(dir, "node", node)
}

fn agent_pid(dir: &Path, node: &str) -> i32 {
    agent_pid_opt(dir, node).unwrap_or_else(|| panic!("no ferry node for {node}"))
}

fn lab_leftovers(dir: &Path) -> Vec<String> {
    let mut left = Vec::new();
    let netns = sh_ok(&["ip", "netns", "list"]);
    left.extend(
        netns
            .lines()
            .filter(|l| l.starts_with("lab-node-"))
            .map(|l| format!("netns {l}")),
    );
    let links = sh_ok(&["ip", "-o", "link"]);
    left.extend(
        links
            .lines()
            .filter(|l| l.contains(" ferry0") || l.contains(" ferry-n"))
            .map(|l| format!("link {l}")),
    );
    let tables = sh_ok(&["nft", "list", "tables"]);
    left.extend(
        tables
            .lines()
            .filter(|l| l.contains("ferry"))
            .map(|l| format!("nft {l}")),
    );
    let marker = dir.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmd.contains(&marker) || cmd.contains("lab-run") {
            left.push(format!("process {pid}: {cmd}"));
        }
    }
    left
}

#[test]
fn the_lab_end_to_end() {
    if !support::can_use_netns("the_lab_end_to_end") || !support::kubectl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::up(dir.path(), 3);

    // Point 1: three Ready nodes with InternalIPs and distinct podCIDRs.
    let out = lab.output();
    assert!(out.contains("Cluster ready"), "{out}");
    assert!(out.contains("export KUBECONFIG="), "{out}");
    let wide = lab.kubectl_ok(&["get", "nodes", "-o", "wide"]);
    eprintln!("{wide}");
    for i in 1..=3 {
        let line = wide
            .lines()
            .find(|l| l.starts_with(&format!("lab-node-{i} ")))
            .unwrap_or_else(|| panic!("lab-node-{i} missing:\n{wide}"));
        assert!(line.contains(" Ready "), "{line}");
        assert!(line.contains(&format!("172.30.0.1{i}")), "{line}");
    }
    let cidrs = lab.kubectl_ok(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.spec.podCIDR}{\"\\n\"}{end}",
    ]);
    let cidrs: std::collections::BTreeMap<String, String> = cidrs
        .lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        })
        .collect();
    let distinct: std::collections::BTreeSet<&String> = cidrs.values().collect();
    assert_eq!(distinct.len(), 3, "{cidrs:?}");

    // Point 2: nginx Deployment, pod IPs in their node's subnet, pages and
    // client IPs seen without NAT on the same node and across nodes.
    lab.apply(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: nginx, image: "nginx:alpine", ports: [{containerPort: 80}]}
---
apiVersion: v1
kind: Pod
metadata: {name: echo-1, labels: {app: echo}}
spec:
  nodeName: lab-node-1
  containers:
  - {name: echo, image: ferry/echo, args: ["netexec", "--http-port=8080", "--udp-port=8081"]}
---
apiVersion: v1
kind: Pod
metadata: {name: client-1, labels: {app: client}}
spec:
  nodeName: lab-node-1
  containers:
  - name: sh
    image: busybox
    workingDir: /tmp
    command: ["sh", "-c", "echo started $(POD_NAME) at $(POD_IP) in $(pwd) as $(hostname); grep client-1 /etc/hosts; grep nameserver /etc/resolv.conf; sleep 3600"]
    env:
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
---
apiVersion: v1
kind: Pod
metadata: {name: client-2, labels: {app: client}}
spec:
  nodeName: lab-node-2
  containers:
  - {name: sh, image: busybox, command: ["sleep", "3600"]}
"#,
    );
    lab.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    lab.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod",
        "-l",
        "app in (web,echo,client)",
        "--timeout=90s",
    ]);
    let web = pods(&lab, "app=web");
    assert_eq!(web.len(), 3);
    let clients = pods(&lab, "app=client");
    let client1 = clients.iter().find(|p| p.name == "client-1").unwrap();
    let client2 = clients.iter().find(|p| p.name == "client-2").unwrap();
    for pod in &web {
        assert!(
            in_cidr(&pod.ip, &cidrs[&pod.node]),
            "{} has {} outside {}'s {}",
            pod.name,
            pod.ip,
            pod.node,
            cidrs[&pod.node]
        );
        let page = curl_from(&client1.sandbox(), &format!("http://{}/", pod.ip));
        assert!(page.contains(&pod.name), "page of {}: {page}", pod.name);
    }
    let echo = &pods(&lab, "app=echo")[0];
    for client in [client1, client2] {
        let seen = curl_from(
            &client.sandbox(),
            &format!("http://{}:8080/clientip", echo.ip),
        );
        assert_eq!(
            seen.split(':').next(),
            Some(client.ip.as_str()),
            "{} (on {}) seen as {seen}",
            client.name,
            client.node
        );
    }
    let hostname = curl_from(
        &client2.sandbox(),
        &format!("http://{}:8080/hostname", echo.ip),
    );
    assert_eq!(hostname, "echo-1");
    // The command ran with the downward API and its log is kept.
    let log = wait_for(20, "client-1's log line", || {
        let dir = dir.path().join("nodes/lab-node-1/pods");
        std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
            // The first run of container `sh` writes `sh-1.log`.
            let text = std::fs::read_to_string(e.path().join("sh-1.log")).ok()?;
            text.contains("nameserver").then_some(text)
        })
    });
    assert!(
        log.contains(&format!(
            "started client-1 at {} in /tmp as client-1",
            client1.ip
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("{}\tclient-1", client1.ip)),
        "own /etc/hosts: {log}"
    );
    assert!(
        log.contains("nameserver 10.96.0.10"),
        "own resolv.conf: {log}"
    );
    // The host's files and hostname are untouched.
    let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    assert!(!host_hosts.contains("client-1"), "{host_hosts}");

    // `ferry proxy` (issue 6, first slice): the web ClusterIP answers from
    // pods on two nodes and from a node namespace, spread over all three
    // endpoints; a ClusterIP without endpoints refuses at once.
    lab.kubectl_ok(&["expose", "deployment", "web", "--port", "80"]);
    lab.kubectl_ok(&["create", "service", "clusterip", "empty", "--tcp=80"]);
    let cluster_ip = lab.kubectl_ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let empty_ip = lab.kubectl_ok(&["get", "svc", "empty", "-o", "jsonpath={.spec.clusterIP}"]);
    let url = format!("http://{cluster_ip}/");
    wait_for(30, "the ClusterIP to answer", || {
        sh(&[
            "ip",
            "netns",
            "exec",
            &client1.sandbox(),
            "curl",
            "-s",
            "-m",
            "2",
            &url,
        ])
        .status
        .success()
        .then_some(())
    });
    for from in [
        client1.sandbox(),
        client2.sandbox(),
        "lab-node-3".to_string(),
    ] {
        let mut served = std::collections::BTreeMap::<String, u32>::new();
        for _ in 0..60 {
            let page = curl_from(&from, &url);
            let pod = web
                .iter()
                .find(|p| page.contains(&p.name))
                .unwrap_or_else(|| panic!("{page}"));
            *served.entry(pod.name.clone()).or_default() += 1;
        }
        assert_eq!(served.len(), 3, "from {from}: {served:?}");
        assert!(served.values().all(|n| *n >= 9), "from {from}: {served:?}");
    }
    wait_for(30, "the empty ClusterIP to be rejected", || {
        let out = sh(&[
            "ip",
            "netns",
            "exec",
            &client1.sandbox(),
            "curl",
            "-s",
            "-m",
            "3",
            &format!("http://{empty_ip}/"),
        ]);
        // curl exit 7: connection refused (a reset), not 28 (a timeout).
        (out.status.code() == Some(7)).then_some(())
    });

    // NodePort: from the host, every node's IP answers (lab-node-3 has a
    // web pod too, but any backend may be picked, so most requests cross
    // nodes and come back through masquerade); never on loopback.
    lab.kubectl_ok(&[
        "expose",
        "deployment",
        "web",
        "--name",
        "web-np",
        "--type",
        "NodePort",
        "--port",
        "80",
    ]);
    let node_port = lab.kubectl_ok(&[
        "get",
        "svc",
        "web-np",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    for i in 1..=3 {
        let url = format!("http://172.30.0.1{i}:{node_port}/");
        wait_for(30, "the NodePort to answer", || {
            let out = sh(&["curl", "-s", "-m", "2", &url]);
            let page = String::from_utf8_lossy(&out.stdout).into_owned();
            web.iter().any(|p| page.contains(&p.name)).then_some(())
        });
        for _ in 0..10 {
            let page = sh_ok(&["curl", "-s", "-m", "2", &url]);
            assert!(web.iter().any(|p| page.contains(&p.name)), "{url}: {page}");
        }
    }
    let loopback = sh(&[
        "ip",
        "netns",
        "exec",
        "lab-node-1",
        "curl",
        "-s",
        "-m",
        "2",
        &format!("http://127.0.0.1:{node_port}/"),
    ]);
    assert!(
        !loopback.status.success(),
        "NodePorts never answer on loopback"
    );

    // A node agent that dies is restarted by `ferry up`; its pods keep
    // their sandboxes and IPs, and their containers restart.
    let agent = agent_pid(dir.path(), "lab-node-1");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for(60, "client-1 restarted by the new agent", || {
        let out = lab.kubectl_ok(&[
            "get",
            "pod",
            "client-1",
            "-o",
            "jsonpath={.status.podIP} {.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].ready}",
        ]);
        (agent_pid_opt(dir.path(), "lab-node-1").is_some_and(|p| p != agent)
            && out == format!("{} 1 true", client1.ip))
        .then_some(())
    });
    let page = curl_from(&client1.sandbox(), &format!("http://{}/", web[0].ip));
    assert!(
        page.contains(&web[0].name),
        "after the agent restart: {page}"
    );

    // Point 4: to the host through masquerade; pod to node keeps the pod IP.
    let listener = TcpListener::bind("172.30.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accept = std::thread::spawn(move || {
        let (mut stream, peer) = listener.accept().unwrap();
        use std::io::Write;
        let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
        peer.ip().to_string()
    });
    curl_from(&client1.sandbox(), &format!("http://172.30.0.1:{port}/"));
    assert_eq!(
        accept.join().unwrap(),
        "172.30.0.11",
        "pod to host is masqueraded"
    );
    lab.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: host-echo, labels: {app: host-echo}}
spec:
  nodeName: lab-node-2
  hostNetwork: true
  containers:
  - {name: echo, image: ferry/echo, args: ["netexec", "--http-port=18080", "--udp-port=18081"]}
"#,
    );
    lab.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/host-echo",
        "--timeout=60s",
    ]);
    let seen = curl_from(&client1.sandbox(), "http://172.30.0.12:18080/clientip");
    assert_eq!(
        seen.split(':').next(),
        Some(client1.ip.as_str()),
        "pod to node is not NATed"
    );
    let host_pod = &pods(&lab, "app=host-echo")[0];
    assert_eq!(
        host_pod.ip, "172.30.0.12",
        "hostNetwork pods have the node's IP"
    );

    // Point 6: readiness failure keeps the Pod not Ready; liveness failure
    // restarts the container.
    lab.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: never-ready, labels: {app: probes}}
spec:
  containers:
  - name: web
    image: nginx
    readinessProbe:
      httpGet: {path: /healthz, port: 80}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {name: not-alive, labels: {app: probes}}
spec:
  containers:
  - name: web
    image: nginx
    livenessProbe:
      tcpSocket: {port: 8081}
      periodSeconds: 1
      failureThreshold: 2
"#,
    );
    let restarts = wait_for(60, "a liveness restart", || {
        let n: i32 = lab
            .kubectl_ok(&[
                "get",
                "pod",
                "not-alive",
                "-o",
                "jsonpath={.status.containerStatuses[0].restartCount}",
            ])
            .trim()
            .parse()
            .ok()?;
        (n >= 1).then_some(n)
    });
    assert!(restarts >= 1);
    let events = lab.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=not-alive",
    ]);
    assert!(events.contains("Liveness probe failed"), "{events}");
    assert!(
        events.contains("failed liveness probe, will be restarted"),
        "{events}"
    );
    let ready = lab.kubectl_ok(&[
        "get",
        "pod",
        "never-ready",
        "-o",
        "jsonpath={.status.phase} {.status.conditions[?(@.type==\"Ready\")].status} {.status.containerStatuses[0].ready}",
    ]);
    assert_eq!(ready, "Running False false");
    wait_for(30, "the readiness failure event", || {
        lab.kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=never-ready",
        ])
        .contains("Readiness probe failed: HTTP probe failed with statuscode: 404")
        .then_some(())
    });

    // Graceful deletion: SIGTERM, CNI DEL, netns gone, Pod gone.
    let sandbox = client2.sandbox();
    lab.kubectl_ok(&["delete", "pod", "client-2", "--wait=true", "--timeout=60s"]);
    assert!(!ferry_netlink::netns::exists(&sandbox), "{sandbox} removed");

    // Point 3: the overlay, then a node leaves.
    let link = sh_ok(&["ip", "-n", "lab-node-1", "-d", "link", "show", "flannel.1"]);
    for want in ["vxlan id 1 ", "dstport 8472", "mtu 1450"] {
        assert!(link.contains(want), "flannel.1 lacks {want:?}: {link}");
    }
    let node3_cidr = cidrs["lab-node-3"].clone();
    let holds_node3 = |node: &str| {
        let routes = sh_ok(&["ip", "-n", node, "route"]);
        let fdb = sh_ok(&["bridge", "-n", node, "fdb", "show", "dev", "flannel.1"]);
        routes.contains(&node3_cidr) || fdb.contains("172.30.0.13")
    };
    for node in ["lab-node-1", "lab-node-2"] {
        assert!(
            holds_node3(node),
            "{node} has lab-node-3's route and FDB entry"
        );
        let neigh = sh_ok(&["ip", "-n", node, "neigh", "show", "dev", "flannel.1"]);
        assert_eq!(neigh.lines().count(), 2, "{node} neighbours: {neigh}");
    }
    lab.kubectl_ok(&["delete", "node", "lab-node-3"]);
    wait_for(30, "lab-node-3's entries to go", || {
        (!holds_node3("lab-node-1") && !holds_node3("lab-node-2")).then_some(())
    });

    // Point 7: nothing left after `ferry down`.
    lab.down();
    let left = lab_leftovers(dir.path());
    assert!(left.is_empty(), "left behind: {left:#?}");

    // A crashed `ferry up` is cleaned up by the next one.
    let dir2 = tempfile::tempdir().unwrap();
    drop(lab);
    let mut crashed = Lab::up(dir2.path(), 1);
    crashed.kubectl_ok(&["run", "orphan", "--image=nginx"]);
    crashed.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/orphan",
        "--timeout=60s",
    ]);
    let mut child = crashed.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    drop(crashed);
    let mut again = Lab::up(dir2.path(), 1);
    assert!(
        again.output().contains("Cleaned up a previous lab"),
        "{}",
        again.output()
    );
    again.down();
    let left = lab_leftovers(dir2.path());
    assert!(left.is_empty(), "left behind: {left:#?}");
}
