//! `ferry proxy` end to end in the lab (issue 6, points 1-8), as root with
//! real kubectl: ClusterIP spread, NodePorts under both external traffic
//! policies with health-check node ports, LoadBalancer IPs and source
//! ranges, rejection, scale-up latency, UDP recovery, affinity, hairpin,
//! internalTrafficPolicy, churn and a proxy restart under load.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::lab::*;

/// One HTTP/1.0 GET on a new connection; the body.
fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    match out.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.") => Ok(body.to_string()),
        _ => Err(std::io::Error::other(format!(
            "not an HTTP answer: {out:?}"
        ))),
    }
}

/// Runs `f` on a thread inside network namespace `name`.
fn in_netns<R: Send>(name: &str, f: impl FnOnce() -> R + Send) -> R {
    ferry_netlink::netns::NetNs::open_named(name)
        .unwrap()
        .run(f)
        .unwrap()
}

/// Which pod answered each of `n` requests (web pages name their pod).
fn spread(from: &str, addr: SocketAddr, n: usize, names: &[String]) -> BTreeMap<String, usize> {
    let names = names.to_vec();
    in_netns(from, move || {
        let mut seen = BTreeMap::new();
        for _ in 0..n {
            let page = http_get(addr, "/", Duration::from_secs(3))
                .unwrap_or_else(|e| panic!("GET {addr}: {e}"));
            let who = names
                .iter()
                .find(|n| page.contains(n.as_str()))
                .cloned()
                .unwrap_or_else(|| format!("unknown: {page}"));
            *seen.entry(who).or_insert(0) += 1;
        }
        seen
    })
}

fn svc_field(lab: &Lab, name: &str, path: &str) -> String {
    lab.kubectl_ok(&["get", "svc", name, "-o", &format!("jsonpath={path}")])
}

fn addr(ip: &str, port: &str) -> SocketAddr {
    format!("{ip}:{port}").parse().unwrap()
}

/// The IPv4 addresses of a network namespace.
fn netns_addresses(netns: &str) -> Vec<String> {
    sh_ok(&["ip", "-n", netns, "-4", "-o", "addr", "show"])
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let i = f.iter().position(|x| *x == "inet")?;
            Some(f.get(i + 1)?.split('/').next()?.to_string())
        })
        .collect()
}

/// A connection attempt's outcome from the host, without curl.
#[derive(Debug, PartialEq)]
enum Outcome {
    Answered(String),
    Refused,
    TimedOut,
    Other(String),
}

fn try_get(addr: SocketAddr, path: &str, timeout: Duration) -> Outcome {
    match http_get(addr, path, timeout) {
        Ok(body) => Outcome::Answered(body),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) =>
        {
            Outcome::TimedOut
        }
        Err(e) => Outcome::Other(e.to_string()),
    }
}

const MANIFEST: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web-a, labels: {app: web, hairpin: "yes"}}
spec:
  nodeName: lab-node-1
  containers: [{name: nginx, image: "nginx:alpine", ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-b, labels: {app: web}}
spec:
  nodeName: lab-node-2
  containers: [{name: nginx, image: "nginx:alpine", ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-c, labels: {app: web}}
spec:
  nodeName: lab-node-2
  containers: [{name: nginx, image: "nginx:alpine", ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: echo-1, labels: {app: echo}}
spec:
  nodeName: lab-node-1
  containers: [{name: echo, image: ferry/echo, args: ["netexec", "--http-port=8080", "--udp-port=8081"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: udp-1, labels: {app: udp}}
spec:
  nodeName: lab-node-2
  containers: [{name: echo, image: ferry/echo, args: ["netexec", "--http-port=8080", "--udp-port=8081"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client-1}
spec:
  nodeName: lab-node-1
  containers: [{name: sh, image: busybox, command: ["sleep", "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client-2}
spec:
  nodeName: lab-node-2
  containers: [{name: sh, image: busybox, command: ["sleep", "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client-3}
spec:
  nodeName: lab-node-3
  containers: [{name: sh, image: busybox, command: ["sleep", "3600"]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: web-np}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: echo-np}
spec:
  type: NodePort
  selector: {app: echo}
  ports: [{port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: echo-lb}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {app: echo}
  ports: [{port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-lb}
spec:
  type: LoadBalancer
  selector: {app: web}
  loadBalancerSourceRanges: ["172.30.0.1/32"]
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: empty}
spec:
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: udp}
spec:
  selector: {app: udp}
  ports: [{port: 53, targetPort: 8081, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: sticky}
spec:
  selector: {app: web}
  sessionAffinity: ClientIP
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: hairpin}
spec:
  selector: {hairpin: "yes"}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: web-itp}
spec:
  selector: {app: web}
  internalTrafficPolicy: Local
  ports: [{port: 80}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: scale}
spec:
  replicas: 0
  selector: {matchLabels: {app: scale}}
  template:
    metadata: {labels: {app: scale}}
    spec:
      containers: [{name: nginx, image: "nginx:alpine"}]
---
apiVersion: v1
kind: Service
metadata: {name: scale}
spec:
  selector: {app: scale}
  ports: [{port: 80}]
"#;

#[test]
fn service_proxy_end_to_end() {
    if !support::can_use_netns("service_proxy_end_to_end") || !support::kubectl_available() {
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
    let web_names: Vec<String> = ["web-a", "web-b", "web-c"].map(String::from).to_vec();
    let sandbox = |pod: &str, node: u8| format!("lab-node-{node}-default-{pod}");
    let web_ip = svc_field(&lab, "web", "{.spec.clusterIP}");
    let web = addr(&web_ip, "80");

    // Point 1: the ClusterIP from a pod on every node and from every node
    // namespace; 300 requests spread at least 15% on each endpoint.
    // Endpoints arrive one by one: wait until every pod is in rotation.
    wait_for(30, "the web ClusterIP to reach all three pods", || {
        let seen = spread(&sandbox("client-1", 1), web, 30, &web_names);
        (seen.len() == 3).then_some(())
    });
    let from_pod = spread(&sandbox("client-1", 1), web, 300, &web_names);
    eprintln!("300 requests from client-1: {from_pod:?}");
    assert_eq!(from_pod.len(), 3, "{from_pod:?}");
    assert!(from_pod.values().all(|n| *n >= 45), "{from_pod:?}");
    for from in [
        sandbox("client-2", 2),
        sandbox("client-3", 3),
        "lab-node-1".into(),
        "lab-node-2".into(),
        "lab-node-3".into(),
    ] {
        let seen = spread(&from, web, 30, &web_names);
        assert!(
            seen.keys().all(|k| web_names.contains(k)) && seen.len() >= 2,
            "from {from}: {seen:?}"
        );
    }

    // Point 2: NodePorts from the host on every node, also lab-node-3
    // without a local web endpoint.
    let web_np = svc_field(&lab, "web-np", "{.spec.ports[0].nodePort}");
    for i in 1..=3 {
        let a = addr(&format!("172.30.0.1{i}"), &web_np);
        let page = wait_for(30, "the web NodePort", || {
            http_get(a, "/", Duration::from_secs(1)).ok()
        });
        assert!(
            web_names.iter().any(|n| page.contains(n.as_str())),
            "{page}"
        );
    }
    // `ferry explain`: the live elements next to kube-proxy's chains.
    let kubeconfig = lab.dir.join("kubeconfig").display().to_string();
    let explained = sh_ok(&[
        FERRY,
        "explain",
        "svc/default/web-np",
        "--node",
        "lab-node-1",
        "--kubeconfig",
        &kubeconfig,
    ]);
    eprintln!("{explained}");
    for needle in [
        "service-ids",
        "node-port-ids",
        "masq-node-ports",
        "backends",
        "-j KUBE-SVC-",
        "--probability 0.3333333333",
        "-j DNAT --to-destination",
    ] {
        assert!(explained.contains(needle), "{needle} missing:\n{explained}");
    }
    // Under Cluster the pod sees an address of the node it came through;
    // under Local it sees the host's own address.
    let echo_np = svc_field(&lab, "echo-np", "{.spec.ports[0].nodePort}");
    for i in 1..=3 {
        let node = format!("lab-node-{i}");
        let seen = wait_for(30, "the echo NodePort", || {
            http_get(
                addr(&format!("172.30.0.1{i}"), &echo_np),
                "/clientip",
                Duration::from_secs(1),
            )
            .ok()
        });
        let ip = seen.rsplit_once(':').unwrap().0.to_string();
        assert!(
            netns_addresses(&node).contains(&ip),
            "Cluster policy through {node}: the pod saw {ip}, not one of {node}'s addresses"
        );
    }
    let echo_lb_np = svc_field(&lab, "echo-lb", "{.spec.ports[0].nodePort}");
    let seen = wait_for(30, "the Local NodePort on lab-node-1", || {
        http_get(
            addr("172.30.0.11", &echo_lb_np),
            "/clientip",
            Duration::from_secs(1),
        )
        .ok()
    });
    assert!(
        seen.starts_with("172.30.0.1:"),
        "Local keeps the client IP: {seen}"
    );
    // lab-node-2 has no echo endpoint: dropped, not refused.
    assert_eq!(
        try_get(
            addr("172.30.0.12", &echo_lb_np),
            "/clientip",
            Duration::from_secs(2)
        ),
        Outcome::TimedOut,
        "a Local NodePort without a local endpoint drops"
    );
    let hc = svc_field(&lab, "echo-lb", "{.spec.healthCheckNodePort}");
    let health = |ip: &str| -> String {
        sh_ok(&[
            "curl",
            "-s",
            "-m",
            "3",
            "-w",
            " %{http_code}",
            &format!("http://{ip}:{hc}/"),
        ])
    };
    let ok = wait_for(30, "the health-check node port", || {
        let h = health("172.30.0.11");
        h.ends_with(" 200").then_some(h)
    });
    assert!(ok.contains(r#""localEndpoints":1"#), "{ok}");
    let unavailable = health("172.30.0.12");
    assert!(unavailable.ends_with(" 503"), "{unavailable}");
    assert!(
        unavailable.contains(r#""localEndpoints":0"#),
        "{unavailable}"
    );
    // /healthz on 10256, /metrics on loopback 10249.
    let healthz = sh_ok(&[
        "curl",
        "-s",
        "-w",
        " %{http_code}",
        "http://172.30.0.12:10256/healthz",
    ]);
    assert!(
        healthz.ends_with(" 200") && healthz.contains("lastUpdated"),
        "{healthz}"
    );
    let metrics = sh_ok(&[
        "ip",
        "netns",
        "exec",
        "lab-node-2",
        "curl",
        "-s",
        "http://127.0.0.1:10249/metrics",
    ]);
    assert!(
        metrics.contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds")
            && metrics.contains("kubeproxy_sync_partial_proxy_rules_duration_seconds_count")
            && metrics.contains("ferry_proxy_nftables_objects{kind=\"elements\"}"),
        "{metrics}"
    );

    // Point 3: LoadBalancer IPs from the host; source ranges enforced.
    let echo_lb_ip = wait_for(30, "echo-lb's LoadBalancer IP", || {
        let ip = svc_field(&lab, "echo-lb", "{.status.loadBalancer.ingress[0].ip}");
        (!ip.is_empty()).then_some(ip)
    });
    let seen = wait_for(30, "the LoadBalancer IP to answer", || {
        http_get(
            addr(&echo_lb_ip, "8080"),
            "/clientip",
            Duration::from_secs(1),
        )
        .ok()
    });
    assert!(seen.starts_with("172.30.0.1:"), "{seen}");
    // From a pod, the LoadBalancer IP has Cluster semantics even under
    // Local: client-3's node has no echo endpoint, yet it is served.
    let client3_ip = lab.kubectl_ok(&["get", "pod", "client-3", "-o", "jsonpath={.status.podIP}"]);
    let lb = addr(&echo_lb_ip, "8080");
    let seen = in_netns(&sandbox("client-3", 3), move || {
        http_get(lb, "/clientip", Duration::from_secs(2))
    })
    .expect("a pod reaches a Local LoadBalancer IP through any node");
    assert!(seen.starts_with(&format!("{client3_ip}:")), "{seen}");
    let web_lb_ip = wait_for(30, "web-lb's LoadBalancer IP", || {
        let ip = svc_field(&lab, "web-lb", "{.status.loadBalancer.ingress[0].ip}");
        (!ip.is_empty()).then_some(ip)
    });
    wait_for(30, "web-lb to answer the allowed host", || {
        http_get(addr(&web_lb_ip, "80"), "/", Duration::from_secs(1)).ok()
    });
    lab.kubectl_ok(&[
        "patch",
        "svc",
        "web-lb",
        "-p",
        r#"{"spec":{"loadBalancerSourceRanges":["192.0.2.0/24"]}}"#,
    ]);
    wait_for(10, "web-lb to drop the host", || {
        (try_get(addr(&web_lb_ip, "80"), "/", Duration::from_millis(700)) == Outcome::TimedOut)
            .then_some(())
    });

    // Point 4: no endpoints is refused at once; 0 -> 1 serves within 1 s
    // of the pod being Ready; UDP recovers within 1 s of a replacement.
    let empty = addr(&svc_field(&lab, "empty", "{.spec.clusterIP}"), "80");
    let started = Instant::now();
    let refused = in_netns(&sandbox("client-1", 1), move || {
        try_get(empty, "/", Duration::from_secs(3))
    });
    assert_eq!(refused, Outcome::Refused);
    assert!(started.elapsed() < Duration::from_millis(500));
    // A port the active ClusterIP does not serve is refused too.
    let unused = addr(&web_ip, "81");
    let refused = in_netns(&sandbox("client-1", 1), move || {
        try_get(unused, "/", Duration::from_secs(3))
    });
    assert_eq!(refused, Outcome::Refused, "unused port of a ClusterIP");
    let scale = addr(&svc_field(&lab, "scale", "{.spec.clusterIP}"), "80");
    lab.kubectl_ok(&["scale", "deployment", "scale", "--replicas=1"]);
    wait_for(60, "the scale pod to be Ready", || {
        let s = lab.kubectl_ok(&[
            "get",
            "pods",
            "-l",
            "app=scale",
            "-o",
            "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        (s == "True").then_some(())
    });
    let ready_at = Instant::now();
    let served_after = in_netns(&sandbox("client-1", 1), move || {
        loop {
            if http_get(scale, "/", Duration::from_millis(200)).is_ok() {
                return ready_at.elapsed();
            }
            assert!(ready_at.elapsed() < Duration::from_secs(10), "never served");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    eprintln!("0 -> 1: served {served_after:?} after the pod was seen Ready");
    assert!(served_after < Duration::from_secs(1), "{served_after:?}");

    udp_recovers_after_replacement(&lab, &sandbox("client-1", 1));

    // Point 5: ClientIP affinity pins, None spreads again.
    let sticky = addr(&svc_field(&lab, "sticky", "{.spec.clusterIP}"), "80");
    wait_for(30, "sticky", || {
        in_netns(&sandbox("client-1", 1), || {
            http_get(sticky, "/", Duration::from_secs(1)).ok()
        })
    });
    let pinned = spread(&sandbox("client-1", 1), sticky, 50, &web_names);
    assert_eq!(pinned.len(), 1, "affinity pins one endpoint: {pinned:?}");
    lab.kubectl_ok(&[
        "patch",
        "svc",
        "sticky",
        "-p",
        r#"{"spec":{"sessionAffinity":"None"}}"#,
    ]);
    wait_for(10, "sticky to spread again", || {
        let seen = spread(&sandbox("client-1", 1), sticky, 50, &web_names);
        (seen.len() >= 2).then_some(())
    });

    // Point 6: hairpin; internalTrafficPolicy Local.
    let hairpin = addr(&svc_field(&lab, "hairpin", "{.spec.clusterIP}"), "80");
    let page = wait_for(30, "web-a through its own Service", || {
        in_netns(&sandbox("web-a", 1), || {
            http_get(hairpin, "/", Duration::from_secs(1)).ok()
        })
    });
    assert!(page.contains("web-a"), "{page}");
    let itp = addr(&svc_field(&lab, "web-itp", "{.spec.clusterIP}"), "80");
    wait_for(30, "web-itp", || {
        in_netns(&sandbox("client-1", 1), || {
            http_get(itp, "/", Duration::from_secs(1)).ok()
        })
    });
    let local_only = spread(&sandbox("client-1", 1), itp, 20, &web_names);
    assert_eq!(
        local_only.keys().collect::<Vec<_>>(),
        ["web-a"],
        "{local_only:?}"
    );
    let local_two = spread(&sandbox("client-2", 2), itp, 20, &web_names);
    assert!(
        local_two.keys().all(|k| k == "web-b" || k == "web-c"),
        "{local_two:?}"
    );
    let none_local = in_netns(&sandbox("client-3", 3), move || {
        try_get(itp, "/", Duration::from_secs(2))
    });
    assert_eq!(
        none_local,
        Outcome::TimedOut,
        "no local endpoint on lab-node-3: dropped"
    );

    // Point 7: churn while a client keeps connecting.
    churn_keeps_connections(&lab, &sandbox("client-1", 1), web);

    // Point 8: restart ferry proxy under load.
    restart_under_load(&lab, dir.path(), &sandbox("client-1", 1), web);

    lab.down();
}

/// A client sends a datagram every 20 ms from one source port; its backend
/// pod is replaced. Answers must resume within 1 s of the new pod being
/// Ready (stale conntrack entries are flushed).
fn udp_recovers_after_replacement(lab: &Lab, from: &str) {
    let target = addr(&svc_field(lab, "udp", "{.spec.clusterIP}"), "53");
    let stop = Arc::new(AtomicBool::new(false));
    let answers: Arc<std::sync::Mutex<Vec<(Instant, String)>>> = Arc::default();
    let (s, a) = (stop.clone(), answers.clone());
    let from_ns = from.to_string();
    let client = std::thread::spawn(move || {
        in_netns(&from_ns, move || {
            let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            let mut buf = [0u8; 512];
            while !s.load(Ordering::Relaxed) {
                let _ = sock.send_to(b"hostname", target);
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    let who = String::from_utf8_lossy(&buf[..n]).into_owned();
                    a.lock().unwrap().push((Instant::now(), who));
                }
            }
        })
    });
    wait_for(30, "UDP answers from udp-1", || {
        answers
            .lock()
            .unwrap()
            .iter()
            .any(|(_, w)| w == "udp-1")
            .then_some(())
    });
    lab.kubectl_ok(&["delete", "pod", "udp-1", "--wait=false"]);
    lab.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: udp-2, labels: {app: udp}}
spec:
  nodeName: lab-node-3
  containers: [{name: echo, image: ferry/echo, args: ["netexec", "--http-port=8080", "--udp-port=8081"]}]
"#,
    );
    wait_for(60, "udp-2 Ready", || {
        let s = lab.kubectl_ok(&[
            "get",
            "pod",
            "udp-2",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        (s == "True").then_some(())
    });
    let ready_at = Instant::now();
    let first = wait_for(10, "UDP answers from udp-2", || {
        answers
            .lock()
            .unwrap()
            .iter()
            .find(|(_, w)| w == "udp-2")
            .map(|(t, _)| *t)
    });
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let after = first.saturating_duration_since(ready_at);
    eprintln!("UDP: udp-2 answered {after:?} after it was seen Ready");
    assert!(after < Duration::from_secs(1), "{after:?}");
}

/// Keeps opening connections to `target` from `from` until `stop`;
/// returns (ok, failed, first errors).
fn connect_loop(
    from: &str,
    target: SocketAddr,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u64, u64, Vec<String>)> {
    let from = from.to_string();
    std::thread::spawn(move || {
        in_netns(&from, move || {
            let (ok, failed) = (AtomicU64::new(0), AtomicU64::new(0));
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match http_get(target, "/", Duration::from_secs(3)) {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        if errors.len() < 5 {
                            errors.push(e.to_string());
                        }
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                std::thread::sleep(Duration::from_millis(5));
            }
            (ok.into_inner(), failed.into_inner(), errors)
        })
    })
}

/// 200 Service and EndpointSlice changes per second for 30 s through the
/// API while a client keeps connecting to a stable Service: no failure.
fn churn_keeps_connections(lab: &Lab, from: &str, target: SocketAddr) {
    let stop = Arc::new(AtomicBool::new(false));
    let client = connect_loop(from, target, stop.clone());
    let kubeconfig = lab.dir.join("kubeconfig");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (changes, failures) = rt.block_on(async move {
        use k8s_openapi::api::core::v1::Service;
        use k8s_openapi::api::discovery::v1::EndpointSlice;
        use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        let services: Api<Service> = Api::namespaced(client.clone(), "default");
        let slices: Api<EndpointSlice> = Api::namespaced(client, "default");
        // Up to 250 operations per second from 128 workers, each on its own
        // name in order: create the Service, create its slice, move its
        // endpoint, delete both. Every success is a change the proxy must
        // apply; at least 200/s must succeed.
        // Operation k starts at start + 4 ms * k, whichever worker is free.
        let next = Arc::new(AtomicU64::new(0));
        let start = tokio::time::Instant::now();
        let deadline = start + Duration::from_secs(30);
        let mut workers = tokio::task::JoinSet::new();
        for n in 0..128 {
            let (services, slices, next) = (services.clone(), slices.clone(), next.clone());
            workers.spawn(async move {
                let name = format!("churn-{n}");
                let (mut changes, mut failures) = (0u64, Vec::<String>::new());
                let mut step = 0u64;
                loop {
                    let at = start + Duration::from_millis(4) * next.fetch_add(1, Ordering::Relaxed) as u32;
                    if at >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(at).await;
                    let endpoint = format!("10.244.200.{}", 1 + step % 200);
                    let result = match step % 4 {
                        0 => services
                            .create(
                                &PostParams::default(),
                                &serde_json::from_value(serde_json::json!({
                                    "metadata": {"name": name},
                                    "spec": {"ports": [{"port": 80, "targetPort": 80}]}
                                }))
                                .unwrap(),
                            )
                            .await
                            .map(|_| ()),
                        1 => slices
                            .create(
                                &PostParams::default(),
                                &serde_json::from_value(serde_json::json!({
                                    "metadata": {"name": name, "labels": {
                                        "kubernetes.io/service-name": name,
                                        "endpointslice.kubernetes.io/managed-by": "churn.test"}},
                                    "addressType": "IPv4",
                                    "ports": [{"port": 80, "protocol": "TCP"}],
                                    "endpoints": [{"addresses": [endpoint], "conditions": {"ready": true}}]
                                }))
                                .unwrap(),
                            )
                            .await
                            .map(|_| ()),
                        2 => slices
                            .patch(
                                &name,
                                &PatchParams::default(),
                                &Patch::Merge(serde_json::json!({
                                    "endpoints": [{"addresses": [endpoint], "conditions": {"ready": true}}]
                                })),
                            )
                            .await
                            .map(|_| ()),
                        _ => {
                            let _ = slices.delete(&name, &DeleteParams::default()).await;
                            services
                                .delete(&name, &DeleteParams::default())
                                .await
                                .map(|_| ())
                        }
                    };
                    match result {
                        Ok(()) => changes += 1,
                        Err(e) => failures.push(e.to_string()),
                    }
                    step += 1;
                }
                (changes, failures)
            });
        }
        let (mut changes, mut failures) = (0u64, Vec::new());
        while let Some(done) = workers.join_next().await {
            let (c, f) = done.unwrap();
            changes += c;
            failures.extend(f);
        }
        (changes, failures)
    });
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, errors) = client.join().unwrap();
    eprintln!(
        "churn: {changes} API changes in 30 s ({} refused: {:?}); client: {ok} ok, {failed} failed {errors:?}",
        failures.len(),
        failures.iter().take(3).collect::<Vec<_>>()
    );
    assert!(changes >= 200 * 30, "only {changes} changes in 30 s");
    assert!(ok > 100, "{ok}");
    assert_eq!(failed, 0, "{errors:?}");
}

/// SIGKILL `ferry proxy` on the client's node (the lab restarts it) while
/// the client keeps connecting: no failure, before, during or after.
fn restart_under_load(lab: &Lab, dir: &std::path::Path, from: &str, target: SocketAddr) {
    let _ = lab;
    let stop = Arc::new(AtomicBool::new(false));
    let client = connect_loop(from, target, stop.clone());
    std::thread::sleep(Duration::from_secs(1));
    let pid = agent_pid_of(dir, "proxy", "lab-node-1").expect("ferry proxy on lab-node-1");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let restarted = wait_for(30, "ferry proxy restarted", || {
        agent_pid_of(dir, "proxy", "lab-node-1").filter(|p| *p != pid)
    });
    // Let the new proxy list, sync and serve for a while.
    let healthy = wait_for(30, "the new proxy to sync", || {
        let out = sh(&[
            "ip",
            "netns",
            "exec",
            "lab-node-1",
            "curl",
            "-s",
            "http://127.0.0.1:10249/metrics",
        ]);
        let m = String::from_utf8_lossy(&out.stdout).into_owned();
        m.lines()
            .any(|l| {
                l.starts_with("kubeproxy_sync_proxy_rules_last_timestamp_seconds ")
                    && !l.ends_with(" 0")
            })
            .then_some(m)
    });
    assert!(healthy.contains("kubeproxy_sync_full_proxy_rules_duration_seconds_count 1"));
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, errors) = client.join().unwrap();
    eprintln!("restart (pid {pid} -> {restarted}): client {ok} ok, {failed} failed {errors:?}");
    assert!(ok > 50, "{ok}");
    assert_eq!(failed, 0, "{errors:?}");
    let _ = BTreeSet::<u8>::new();
}
