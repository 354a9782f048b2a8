//! Cluster DNS end to end in the lab (the DNS issue, points 1, 2 and 5), as
//! root with real kubectl and dig: `ferry up` runs `ferry dns` as
//! Deployment `kube-system/ferry-dns` behind Service `kube-dns`
//! (10.96.0.10), and a pod resolves through its own resolv.conf (search
//! list, `ndots:5`, nameserver 10.96.0.10): Service A records, headless
//! pod sets, SRV, PTR, ExternalName, NXDOMAIN with the zone's SOA, empty
//! AAAA, the version TXT, TCP; a new Service resolves within 1 s and an
//! unready pod leaves the headless answer. The lab forwards nothing
//! (`--dns-upstream none`), so no query leaves this machine.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::lab::*;

const CLUSTER_DNS: &str = "10.96.0.10";
const ZONE_SOA: &str = "cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local.";

/// The pods of `selector` in `namespace`: (name, IP, node).
fn pods_in(lab: &Lab, namespace: &str, selector: &str) -> Vec<(String, String, String)> {
    lab.kubectl_ok(&[
        "-n",
        namespace,
        "get",
        "pods",
        "-l",
        selector,
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.spec.nodeName}{\"\\n\"}{end}",
    ])
    .lines()
    .filter_map(|l| {
        let mut f = l.split_whitespace();
        Some((f.next()?.into(), f.next()?.into(), f.next()?.into()))
    })
    .collect()
}

/// A process of a pod's container: in the pod's network namespace and in
/// a mount namespace of its own (where the lab runtime bind-mounted the
/// pod's resolv.conf over /etc/resolv.conf).
fn container_pid(sandbox: &str) -> Option<i32> {
    let netns = PathBuf::from(ferry_netlink::netns::NETNS_RUN_DIR).join(sandbox);
    let host_mnt = std::fs::read_link("/proc/self/ns/mnt").ok()?;
    ferry_netlink::netns::processes_in(&[netns])
        .into_iter()
        .find(|pid| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok_and(|m| m != host_mnt))
}

fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Runs commands in the namespaces of a pod's container: what the
/// container itself would see, its resolv.conf included.
struct InPod {
    pid: i32,
}

impl InPod {
    fn run(&self, argv: &[&str]) -> std::process::Output {
        Command::new("nsenter")
            .args([
                "--target",
                &self.pid.to_string(),
                "--net",
                "--mount",
                "--uts",
            ])
            .args(argv)
            .output()
            .unwrap()
    }

    /// `dig` with the pod's resolver; stdout when dig got an answer (any
    /// rcode), else None. One try, `timeout` seconds.
    fn try_dig(&self, timeout: u32, args: &[&str]) -> Option<String> {
        let time = format!("+time={timeout}");
        let mut argv = vec!["dig", "+tries=1", time.as_str()];
        argv.extend(args);
        let out = self.run(&argv);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `dig`, printed; fails the test when no answer comes.
    fn dig(&self, args: &[&str]) -> String {
        let mut argv = vec!["dig", "+tries=2", "+time=2"];
        argv.extend(args);
        let out = self.run(&argv);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        println!("$ dig {}\n{}", args.join(" "), stdout.trim_end());
        assert!(
            out.status.success(),
            "dig {args:?}: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// `dig +short` lines, sorted.
    fn short(&self, args: &[&str]) -> Vec<String> {
        let mut argv = vec!["+short"];
        argv.extend(args);
        let out = self.dig(&argv);
        let mut lines: Vec<String> = out.lines().map(|l| l.trim().to_string()).collect();
        lines.retain(|l| !l.is_empty());
        lines.sort();
        lines
    }
}

/// The pod's resolver (None: its resolv.conf) and each DNS replica.
fn resolvers(dns_ips: &[String]) -> Vec<Option<&str>> {
    let mut servers = vec![None];
    servers.extend(dns_ips.iter().map(|s| Some(s.as_str())));
    servers
}

/// Polls `dig +short [@server] name` from the pod until `done` accepts
/// the answer's lines; the time since `since` and the answer. Fails once
/// `deadline` has passed since `since`.
fn poll_dig(
    pod: &InPod,
    server: Option<&str>,
    name: &str,
    since: Instant,
    deadline: Duration,
    done: impl Fn(&[&str]) -> bool,
) -> (Duration, String) {
    let at = server.map(|s| format!("@{s}"));
    let mut args = vec!["+short"];
    args.extend(at.as_deref());
    args.push(name);
    loop {
        let out = pod.try_dig(1, &args).unwrap_or_default();
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        if done(&lines) {
            return (since.elapsed(), out);
        }
        assert!(
            since.elapsed() < deadline,
            "dig {args:?} via {}: still {out:?} after {deadline:?}",
            server.unwrap_or("the pod's resolver")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lines of a dig section with the whitespace squeezed to single spaces.
fn squeezed(dig_output: &str) -> Vec<String> {
    dig_output
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn dashed(ip: &str) -> String {
    ip.replace('.', "-")
}

fn manifest(unready_dir: &Path) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: yuchaoit}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: nginx, namespace: yuchaoit}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: nginx}}}}
  template:
    metadata: {{labels: {{app: nginx}}}}
    spec:
      containers:
      - name: nginx
        image: nginx
        ports: [{{containerPort: 80, name: http}}]
        # Ready until the test creates {dir}/<pod name>.
        readinessProbe:
          exec: {{command: ["sh", "-c", "test ! -e {dir}/$(hostname)"]}}
          periodSeconds: 1
          failureThreshold: 1
---
apiVersion: v1
kind: Service
metadata: {{name: nginx, namespace: yuchaoit}}
spec:
  selector: {{app: nginx}}
  ports: [{{name: http, port: 80, targetPort: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: nginx-headless, namespace: yuchaoit}}
spec:
  clusterIP: None
  selector: {{app: nginx}}
  ports: [{{name: http, port: 80, targetPort: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: ext, namespace: yuchaoit}}
spec:
  type: ExternalName
  externalName: www.example.com
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: yuchaoit}}
spec:
  containers: [{{name: sh, image: busybox, command: ["sleep", "3600"]}}]
"#,
        dir = unready_dir.display()
    )
}

#[test]
fn cluster_dns_end_to_end() {
    if !support::can_use_netns("cluster_dns_end_to_end")
        || !support::kubectl_available()
        || !tool_available("dig", "-v")
        || !tool_available("nsenter", "--version")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unready_dir = dir.path().join("unready");
    std::fs::create_dir_all(&unready_dir).unwrap();
    let mut lab = Lab::up(dir.path(), 2);

    // Point 5: kube-dns where kubeadm users look for it, served by
    // ferry-dns pods that `ferry up` waited for.
    let out = lab.output();
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("dns "))
        .unwrap_or_else(|| panic!("no dns line in the startup output:\n{out}"));
    println!("ferry up: {line}");
    assert!(
        line.contains("kube-dns 10.96.0.10 (53/UDP, 53/TCP, 9153/TCP), ferry-dns 2/2 ready"),
        "{line}"
    );
    let (before, _) = out.split_once(line).unwrap();
    assert!(
        !before.contains("Cluster ready"),
        "dns line after the ready message:\n{out}"
    );
    let svc = lab.kubectl_ok(&["-n", "kube-system", "get", "svc", "kube-dns"]);
    println!(
        "$ kubectl -n kube-system get svc kube-dns\n{}",
        svc.trim_end()
    );
    assert!(svc.contains(CLUSTER_DNS), "{svc}");
    assert!(svc.contains("53/UDP,53/TCP,9153/TCP"), "{svc}");
    let dns_pods = pods_in(&lab, "kube-system", "k8s-app=kube-dns");
    assert_eq!(dns_pods.len(), 2, "{dns_pods:?}");
    for (name, ip, node) in &dns_pods {
        // The Ferry binary itself, told to forward nothing.
        let pid = container_pid(&format!("{node}-kube-system-{name}"))
            .unwrap_or_else(|| panic!("no container process for {name}"));
        let argv = cmdline(pid);
        println!("{name} ({ip} on {node}): {}", argv.join(" "));
        // (" (deleted)" follows when the binary was rebuilt meanwhile.)
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        let ferry = std::fs::canonicalize(FERRY).unwrap();
        assert!(
            exe.to_string_lossy().starts_with(&*ferry.to_string_lossy()),
            "{name} runs {}, not {}",
            exe.display(),
            ferry.display()
        );
        assert_eq!(argv[1..2], ["dns"], "{argv:?}");
        assert!(
            argv.ends_with(&["--upstream".into(), "none".into()]),
            "{argv:?}"
        );
    }
    let (dns_name, dns_ip, _) = &dns_pods[0];
    // (body, status code) of a GET from a node's namespace.
    let node_curl = |url: &str| -> (String, String) {
        let out = sh_ok(&[
            "ip",
            "netns",
            "exec",
            "lab-node-1",
            "curl",
            "-s",
            "-m",
            "5",
            "-w",
            " %{http_code}",
            url,
        ]);
        let (body, code) = out.rsplit_once(' ').unwrap();
        (body.to_string(), code.to_string())
    };
    for (port, path) in [(8181, "/ready"), (8080, "/health")] {
        let (body, code) = node_curl(&format!("http://{dns_ip}:{port}{path}"));
        println!("GET {dns_name} :{port}{path} -> {code} {body:?}");
        assert_eq!((code.as_str(), body.trim()), ("200", "OK"), "{path}");
    }
    // Metrics count queries: ask this pod one first, straight at its IP.
    let direct = sh_ok(&[
        "ip",
        "netns",
        "exec",
        "lab-node-1",
        "dig",
        "+short",
        "+time=2",
        "+tries=2",
        &format!("@{dns_ip}"),
        "kube-dns.kube-system.svc.cluster.local",
    ]);
    println!(
        "$ dig @{dns_ip} +short kube-dns.kube-system.svc.cluster.local\n{}",
        direct.trim()
    );
    assert_eq!(direct.trim(), CLUSTER_DNS);
    let (metrics, code) = node_curl(&format!("http://{dns_ip}:9153/metrics"));
    let requests: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("coredns_dns_requests_total"))
        .collect();
    println!("GET {dns_name} :9153/metrics -> {code}, {requests:#?}");
    assert_eq!(code, "200", "{metrics}");
    assert!(!requests.is_empty(), "{metrics}");

    // Point 1: names from a pod, through its own resolver.
    lab.apply(&manifest(&unready_dir));
    lab.kubectl_ok(&[
        "-n",
        "yuchaoit",
        "rollout",
        "status",
        "deployment/nginx",
        "--timeout=90s",
    ]);
    lab.kubectl_ok(&[
        "-n",
        "yuchaoit",
        "wait",
        "--for=condition=Ready",
        "pod/client",
        "--timeout=60s",
    ]);
    let client_node = lab.kubectl_ok(&[
        "-n",
        "yuchaoit",
        "get",
        "pod",
        "client",
        "-o",
        "jsonpath={.spec.nodeName}",
    ]);
    let sandbox = format!("{client_node}-yuchaoit-client");
    let pod = InPod {
        pid: wait_for(10, "the client's container process", || {
            container_pid(&sandbox)
        }),
    };
    let resolv = pod.run(&["cat", "/etc/resolv.conf"]);
    let resolv = String::from_utf8_lossy(&resolv.stdout).into_owned();
    println!("client's /etc/resolv.conf:\n{}", resolv.trim_end());
    assert_eq!(
        resolv,
        "search yuchaoit.svc.cluster.local svc.cluster.local cluster.local\n\
         nameserver 10.96.0.10\noptions ndots:5\n",
        "dig must use the pod's resolver, never the host's"
    );
    // What ferry-dns depends on: pods reach the API server on the gateway
    // (pod -> node -> underlay, masqueraded by the overlay).
    let api = pod.run(&[
        "curl",
        "-sk",
        "-m",
        "5",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "https://172.30.0.1:6443/version",
    ]);
    let code = String::from_utf8_lossy(&api.stdout).into_owned();
    println!("client -> GET https://172.30.0.1:6443/version: HTTP {code}");
    assert!(code.len() == 3 && code != "000", "{code}");

    let cluster_ip = lab.kubectl_ok(&[
        "-n",
        "yuchaoit",
        "get",
        "svc",
        "nginx",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    wait_for(20, "nginx.yuchaoit to resolve", || {
        pod.try_dig(1, &["+short", "nginx.yuchaoit.svc.cluster.local"])
            .filter(|o| o.trim() == cluster_ip)
    });
    for name in [
        "nginx",
        "nginx.yuchaoit",
        "nginx.yuchaoit.svc.cluster.local",
    ] {
        assert_eq!(
            pod.short(&["+search", name]),
            [cluster_ip.as_str()],
            "{name}"
        );
    }

    let nginx = pods_in(&lab, "yuchaoit", "app=nginx");
    assert_eq!(nginx.len(), 2, "{nginx:?}");
    let pod_ips: BTreeSet<String> = nginx.iter().map(|(_, ip, _)| ip.clone()).collect();
    let headless = "nginx-headless.yuchaoit.svc.cluster.local";
    wait_for(20, "both nginx pods in the headless answer", || {
        let out = pod.try_dig(1, &["+short", headless])?;
        let ips: BTreeSet<String> = out.lines().map(|l| l.trim().to_string()).collect();
        (ips == pod_ips).then_some(())
    });
    let answer = pod.short(&[headless]);
    assert_eq!(answer, pod_ips.iter().cloned().collect::<Vec<_>>());

    let srv = pod.short(&["SRV", "_http._tcp.nginx.yuchaoit.svc.cluster.local"]);
    assert_eq!(srv, ["0 100 80 nginx.yuchaoit.svc.cluster.local."]);
    let srv = pod.short(&["SRV", &format!("_http._tcp.{headless}")]);
    let targets: BTreeSet<String> = srv
        .iter()
        .map(|r| {
            let f: Vec<&str> = r.split_whitespace().collect();
            assert_eq!(f.len(), 4, "{r}");
            assert_eq!((f[0], f[2]), ("0", "80"), "priority and port of {r}");
            f[3].to_string()
        })
        .collect();
    let want: BTreeSet<String> = pod_ips
        .iter()
        .map(|ip| format!("{}.{headless}.", dashed(ip)))
        .collect();
    assert_eq!(targets, want, "{srv:?}");
    assert_eq!(srv.len(), 2, "one SRV record per pod: {srv:?}");

    let ptr = pod.short(&["-x", &cluster_ip]);
    assert_eq!(ptr, ["nginx.yuchaoit.svc.cluster.local."]);

    let ext = squeezed(&pod.dig(&["ext.yuchaoit.svc.cluster.local"]));
    assert!(
        ext.iter()
            .any(|l| l.starts_with("ext.yuchaoit.svc.cluster.local. ")
                && l.ends_with(" IN CNAME www.example.com.")),
        "{ext:#?}"
    );

    let nx = squeezed(&pod.dig(&["nope.yuchaoit.svc.cluster.local"]));
    assert!(nx.iter().any(|l| l.contains("status: NXDOMAIN")), "{nx:#?}");
    let authority = nx
        .iter()
        .skip_while(|l| !l.starts_with(";; AUTHORITY SECTION:"))
        .nth(1)
        .cloned()
        .unwrap_or_default();
    assert!(authority.starts_with(ZONE_SOA), "{nx:#?}");

    let aaaa = squeezed(&pod.dig(&["AAAA", "nginx.yuchaoit.svc.cluster.local"]));
    assert!(
        aaaa.iter().any(|l| l.contains("status: NOERROR")),
        "{aaaa:#?}"
    );
    assert!(aaaa.iter().any(|l| l.contains("ANSWER: 0,")), "{aaaa:#?}");

    let version = pod.short(&["TXT", "dns-version.cluster.local"]);
    assert_eq!(version, ["\"1.1.0\""]);

    let tcp = pod.short(&["+tcp", "nginx.yuchaoit.svc.cluster.local"]);
    assert_eq!(tcp, [cluster_ip.as_str()]);

    // Point 2: a new Service resolves within 1 s of its creation, through
    // the Service and from each replica.
    let dns_ips: Vec<String> = dns_pods.iter().map(|(_, ip, _)| ip.clone()).collect();
    let fresh = "fresh.yuchaoit.svc.cluster.local";
    let fresh_ip = lab.kubectl_ok(&[
        "-n",
        "yuchaoit",
        "create",
        "service",
        "clusterip",
        "fresh",
        "--tcp=80:80",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let created = Instant::now();
    for server in resolvers(&dns_ips) {
        let (after, out) = poll_dig(
            &pod,
            server,
            fresh,
            created,
            Duration::from_secs(1),
            |ips| ips == [fresh_ip.as_str()],
        );
        println!(
            "{fresh} ({fresh_ip}) resolved via {} {after:?} after kubectl create returned:\n$ dig +short {}{fresh}\n{}",
            server.unwrap_or(CLUSTER_DNS),
            server.map(|s| format!("@{s} ")).unwrap_or_default(),
            out.trim_end()
        );
    }

    // An unready pod leaves the headless answer; the other stays.
    let (gone_name, gone_ip, _) = nginx[0].clone();
    let (_, stays_ip, _) = nginx[1].clone();
    std::fs::write(unready_dir.join(&gone_name), "").unwrap();
    wait_for(30, "the nginx pod to turn unready", || {
        let ready = lab.kubectl_ok(&[
            "-n",
            "yuchaoit",
            "get",
            "pod",
            &gone_name,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        (ready == "False").then_some(())
    });
    let unready_at = Instant::now();
    println!("{gone_name} ({gone_ip}) is not Ready");
    for server in resolvers(&dns_ips) {
        let (after, out) = poll_dig(
            &pod,
            server,
            headless,
            unready_at,
            Duration::from_secs(3),
            |ips| ips == [stays_ip.as_str()],
        );
        println!(
            "{headless} via {}: only {stays_ip}, {after:?} after {gone_name} was seen unready:\n$ dig +short {}{headless}\n{}",
            server.unwrap_or(CLUSTER_DNS),
            server.map(|s| format!("@{s} ")).unwrap_or_default(),
            out.trim_end()
        );
    }
    assert_eq!(pod.short(&[headless]), [stays_ip.as_str()]);

    lab.down();
}
