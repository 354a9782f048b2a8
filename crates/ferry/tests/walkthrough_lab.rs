//! `docs/walkthrough.md`, generated and checked (issue 9, point 5): the
//! classic Kubernetes networking tutorial run step by step in a `ferry up`
//! lab with real kubectl, curl and `ferry trace`/`ferry explain`. Every
//! command runs, and its output must show what the text says it shows
//! (each command carries a check). Then:
//! - with `FERRY_WRITE_WALKTHROUGH=1`, the run's commands and real output
//!   become `docs/walkthrough.md`;
//! - otherwise the committed file must match this script: the same text
//!   and commands (names, addresses and ports that differ from run to run
//!   masked), and every recorded output must pass the same check as the
//!   live one. A changed command or behaviour fails until the page is
//!   regenerated.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use regex::Regex;
use support::lab::*;

const NS: &str = "yuchaoit";
const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/walkthrough.md");

type Check = fn(&str) -> Result<(), String>;

/// One command as the page shows it, with its output and check.
struct Ran {
    command: String,
    output: String,
    check: Check,
}

/// The page being written, and the commands run so far.
struct Page {
    markdown: String,
    ran: Vec<Ran>,
    /// Commands run since the last text: one console block.
    block: Vec<usize>,
    kubeconfig: PathBuf,
    workdir: PathBuf,
}

fn contains_all(out: &str, needles: &[&str]) -> Result<(), String> {
    for n in needles {
        if !out.contains(n) {
            return Err(format!("missing {n:?}"));
        }
    }
    Ok(())
}

fn matches(out: &str, pattern: &str, at_least: usize) -> Result<(), String> {
    let n = Regex::new(pattern).unwrap().find_iter(out).count();
    if n >= at_least {
        Ok(())
    } else {
        Err(format!("{n} matches of {pattern:?}, wanted {at_least}"))
    }
}

/// Distinct pod names in answers like `hello from nginx-...`.
fn distinct_pods(out: &str) -> usize {
    let re = Regex::new(r"hello from (nginx-[a-z0-9]+-[a-z0-9]+)").unwrap();
    let mut names: Vec<&str> = re
        .captures_iter(out)
        .map(|c| c.get(1).unwrap().as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    names.len()
}

impl Page {
    fn text(&mut self, text: &str) {
        self.close_block();
        self.markdown.push_str(text.trim_matches('\n'));
        self.markdown.push_str("\n\n");
    }

    fn close_block(&mut self) {
        if self.block.is_empty() {
            return;
        }
        self.markdown.push_str("```console\n");
        for &i in &self.block {
            let r = &self.ran[i];
            self.markdown.push_str(&format!("$ {}\n", r.command));
            self.markdown.push_str(&r.output);
            if !r.output.is_empty() && !r.output.ends_with('\n') {
                self.markdown.push('\n');
            }
        }
        self.markdown.push_str("```\n\n");
        self.block.clear();
    }

    fn record(&mut self, command: &str, output: String, check: Check) -> String {
        if let Err(e) = check(&output) {
            panic!("`{command}`: {e}\noutput:\n{output}");
        }
        self.ran.push(Ran {
            command: command.to_string(),
            output: output.clone(),
            check,
        });
        self.block.push(self.ran.len() - 1);
        output
    }

    /// Runs `command` with `sh` (stdout and stderr together, as a terminal
    /// shows them), checks and records it.
    fn run(&mut self, command: &str, check: Check) -> String {
        let ferry_dir = Path::new(FERRY).parent().unwrap();
        let path = format!(
            "{}:{}",
            ferry_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("exec 2>&1\n{command}"))
            .env("KUBECONFIG", &self.kubeconfig)
            .env("PATH", path)
            .current_dir(&self.workdir)
            .output()
            .unwrap();
        let output = String::from_utf8_lossy(&out.stdout).into_owned();
        self.record(command, output, check)
    }

    /// Runs a kubectl command on a terminal (`-it`), as a user types it.
    fn run_on_terminal(&mut self, args: &[&str], check: Check) -> String {
        let mut term = OnTerminal::spawn(&self.kubeconfig, args);
        let code = term.exit_code(120);
        let output = term.text().replace("\r\n", "\n").replace('\r', "");
        assert_eq!(code, 0, "kubectl {args:?}: {output}");
        let command = format!("kubectl {}", shell_words(args));
        self.record(&command, output, check)
    }
}

fn shell_words(args: &[&str]) -> String {
    args.iter()
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_=./:,".contains(c))
            {
                a.to_string()
            } else {
                format!("'{a}'")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What differs from run to run, masked: temporary paths, generated pod
/// names, addresses, NodePorts.
fn mask(s: &str) -> String {
    let rules = [
        (r"/tmp/\.tmp[A-Za-z0-9]+", "<dir>"),
        (r"\b([a-z0-9-]+)-[a-z0-9]{8,10}-[a-z0-9]{5}\b", "$1-<hash>"),
        (r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b", "<ip>"),
        (r"\b3[0-2]\d{3}\b", "<nodeport>"),
    ];
    let mut out = s.to_string();
    for (pattern, with) in rules {
        out = Regex::new(pattern)
            .unwrap()
            .replace_all(&out, with)
            .into_owned();
    }
    out
}

/// The page split into its text and its commands with their outputs.
fn parse(markdown: &str) -> (String, Vec<(String, String)>) {
    let mut text = String::new();
    let mut commands: Vec<(String, String)> = Vec::new();
    let mut in_block = false;
    let mut heredoc: Option<String> = None;
    for line in markdown.lines() {
        if line == "```console" {
            in_block = true;
            continue;
        }
        if in_block && line == "```" {
            in_block = false;
            continue;
        }
        if !in_block {
            text.push_str(line);
            text.push('\n');
            continue;
        }
        if let Some(end) = &heredoc {
            let last = commands.last_mut().unwrap();
            last.0.push('\n');
            last.0.push_str(line);
            if line == end {
                heredoc = None;
            }
            continue;
        }
        if let Some(cmd) = line.strip_prefix("$ ") {
            if let Some(i) = cmd.find("<<'") {
                heredoc = cmd[i + 3..].split('\'').next().map(str::to_string);
            }
            commands.push((cmd.to_string(), String::new()));
        } else if let Some(last) = commands.last_mut() {
            last.1.push_str(line);
            last.1.push('\n');
        }
    }
    (text, commands)
}

const INGRESS: &str = r#"kubectl apply -f - <<'EOF'
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: yuchaoit}
spec:
  rules:
  - host: www.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: nginx, port: {number: 80}}}}
  - host: foo.bar.com
    http:
      paths:
      - {path: /nginx, pathType: Prefix, backend: {service: {name: nginx, port: {number: 80}}}}
      - {path: /echo, pathType: Prefix, backend: {service: {name: echo, port: {number: 8080}}}}
EOF"#;

const INGRESS_TLS: &str = r#"kubectl patch ingress web -n yuchaoit --type merge -p '{"spec":{"tls":[{"hosts":["www.example.com"],"secretName":"www-tls"}]}}'"#;

#[test]
fn walkthrough() {
    if !(support::can_use_netns("walkthrough")
        && support::kubectl_available()
        && tool_available("curl", "--version")
        && tool_available("dig", "-v")
        && tool_available("openssl", "version"))
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let workdir = tempfile::tempdir().unwrap();
    let lab = Lab::up(dir.path(), 3);
    let mut page = Page {
        markdown: String::new(),
        ran: Vec::new(),
        block: Vec::new(),
        kubeconfig: dir.path().join("kubeconfig"),
        workdir: workdir.path().to_path_buf(),
    };
    page.text(
        "# Walkthrough: Kubernetes networking, hands on, in the Ferry lab

The classic networking tutorial — pods and their IPs, `kubectl exec`, a
throwaway client pod, a Service with DNS, NodePort, LoadBalancer, scaling,
Ingress by host and path, TLS — on a `ferry up` cluster with real
`kubectl`. At each stage `ferry trace` draws the path a packet takes
through *this* cluster, naming the real devices and nftables rules, and
`ferry explain` shows how a Service is implemented.

This page is generated: `crates/ferry/tests/walkthrough_lab.rs` runs every
command below in a fresh lab and checks its output (it runs in the test
suite, and fails when this page no longer matches what the commands do).
Regenerate it with
`FERRY_WRITE_WALKTHROUGH=1 cargo test -p ferry --test walkthrough_lab`.
Names, addresses and ports differ from run to run.

**The lab's honest limits.** Containers are host processes in the pod's
network, UTS and mount namespaces; images are not pulled. `nginx`/`httpd`
images run Ferry's built-in web server, which serves the pod's own
`/usr/share/nginx/html`; the tools you run with `kubectl exec` (`sh`,
`curl`, `dig`, `ip`) are the host's.",
    );

    page.text(
        "## 1. Start the lab

As root, `ferry up` (here with a temporary `--data-dir` and no upstream
DNS) builds an underlay bridge `ferry0`, one network namespace per node,
the API server, the controllers, and on each node the agent (the lab's
kubelet), the overlay (`flannel.1`) and the service proxy.",
    );
    let up = lab.output();
    page.record(
        &format!(
            "ferry up --nodes 3 --dns-upstream none --data-dir {}",
            dir.path().display()
        ),
        up,
        |o| contains_all(o, &["Cluster ready", "lab-node-3"]),
    );
    page.run("kubectl get nodes -o wide", |o| {
        matches(o, r"lab-node-\d\s+Ready", 3)
    });

    page.text(
        "## 2. Pods and their IPs

Each node has its own pod subnet out of `10.244.0.0/16`; each pod gets an
address from its node's subnet.",
    );
    page.run(&format!("kubectl create namespace {NS}"), |o| {
        contains_all(o, &["namespace/yuchaoit created"])
    });
    page.run(
        &format!("kubectl create deployment nginx --image=nginx:alpine --replicas=3 -n {NS}"),
        |o| contains_all(o, &["deployment.apps/nginx created"]),
    );
    page.run(
        &format!("kubectl rollout status deployment/nginx -n {NS} --timeout=120s"),
        |o| contains_all(o, &["successfully rolled out"]),
    );
    let wide = page.run(&format!("kubectl get pods -n {NS} -o wide"), |o| {
        matches(
            o,
            r"nginx-\S+\s+1/1\s+Running\s+0\s+\S+\s+10\.244\.\d+\.\d+\s+lab-node-\d",
            3,
        )
    });
    let pods: Vec<(String, String)> = wide
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[5].to_string())
        })
        .collect();
    let (pod0, ip0) = pods[0].clone();

    page.text(
        "## 3. `kubectl exec`: change each pod's page

`kubectl exec` runs a command inside the pod: its network namespace (its
own `eth0` and routes), its hostname, and its files. Each pod gets a page
naming it, so we can see later who answered.",
    );
    for (pod, _) in &pods {
        page.run(
            &format!(
                "kubectl exec -n {NS} {pod} -- sh -c 'echo \"hello from $(hostname)\" > /usr/share/nginx/html/index.html'"
            ),
            |o| if o.is_empty() { Ok(()) } else { Err("expected no output".into()) },
        );
    }
    page.run(
        &format!("kubectl exec -n {NS} {pod0} -- ip -4 -o addr show dev eth0"),
        |o| matches(o, r"^\d+: eth0\s+inet 10\.244\.\d+\.\d+/24", 1),
    );
    page.run(&format!("kubectl exec -n {NS} {pod0} -- ip route"), |o| {
        matches(o, r"default via 10\.244\.\d+\.1 dev eth0", 1)
    });
    page.text("From the node, the pod answers on its own IP:");
    page.run(
        &format!("ip netns exec lab-node-1 curl -s http://{ip0}/"),
        |o| matches(o, r"^hello from nginx-", 1),
    );

    page.text(
        "## 4. A Service, DNS, and a throwaway client

`kubectl expose` puts a stable virtual IP in front of the pods. From a
throwaway pod (`kubectl run -it --rm`), the Service's name resolves
through the cluster DNS and requests spread over the pods.",
    );
    page.run(
        &format!("kubectl expose deployment nginx -n {NS} --port 80"),
        |o| contains_all(o, &["service/nginx exposed"]),
    );
    page.run(
        &format!("kubectl get service,endpointslices -n {NS}"),
        |o| {
            matches(
                o,
                r"service/nginx\s+ClusterIP\s+10\.(9[6-9]|10\d|11[01])\.\d+\.\d+",
                1,
            )?;
            matches(
                o,
                r"endpointslice\.discovery\.k8s\.io/nginx-\S+\s+IPv4\s+80\s+10\.244",
                1,
            )
        },
    );
    page.run_on_terminal(
        &[
            "run",
            "-it",
            "--rm",
            "--image=nginx:alpine",
            "test",
            "--restart=Never",
            "--",
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9; do curl -s nginx.yuchaoit; done",
        ],
        |o| {
            if distinct_pods(o) < 2 {
                return Err(format!("answers from {} pod(s)", distinct_pods(o)));
            }
            contains_all(o, &["pod \"test\" deleted"])
        },
    );
    page.run(
        &format!("kubectl exec -n {NS} {pod0} -- cat /etc/resolv.conf"),
        |o| {
            contains_all(
                o,
                &[
                    "search yuchaoit.svc.cluster.local svc.cluster.local cluster.local",
                    "nameserver 10.96.0.10",
                ],
            )
        },
    );
    page.run(
        &format!("kubectl exec -n {NS} {pod0} -- dig +search +short nginx"),
        |o| matches(o, r"^10\.(9[6-9]|10\d|11[01])\.\d+\.\d+\n$", 1),
    );

    page.text(
        "### The packet's path

The tutorials draw it: pod → veth → `cni0` → the service rules → (another
node: `flannel.1`) → pod. `ferry trace` draws it for this cluster, from
the live kernel state of each namespace the connection crosses; with
`--probe` it sends one real connection and reads the conntrack entry that
shows which endpoint the service rules chose.",
    );
    page.run(
        &format!("ferry trace -n {NS} {pod0} svc/nginx --probe"),
        |o| contains_all(o, &["eth0", "cni0", "DNAT", "conntrack"]),
    );
    page.text(
        "`ferry explain` shows the Service's rules next to kube-proxy's iptables equivalent:",
    );
    page.run(
        &format!("ferry explain svc/{NS}/nginx --node lab-node-1"),
        |o| contains_all(o, &["nginx"]),
    );

    page.text(
        "## 5. NodePort: from outside the cluster

A NodePort Service answers on every node's address. The host reaches
the nodes over the underlay bridge `ferry0`.",
    );
    page.run(
        &format!("kubectl expose deployment nginx -n {NS} --name nginx-nodeport --type NodePort --port 80"),
        |o| contains_all(o, &["service/nginx-nodeport exposed"]),
    );
    let port = page.run(
        &format!(
            "kubectl get service nginx-nodeport -n {NS} -o jsonpath='{{.spec.ports[0].nodePort}}'"
        ),
        |o| matches(o, r"^3\d{4}\n?$", 1),
    );
    page.run(&format!("curl -s http://172.30.0.12:{port}/"), |o| {
        matches(o, r"^hello from nginx-", 1)
    });
    page.run(
        &format!("ferry trace host 172.30.0.12:{port} --probe"),
        |o| contains_all(o, &["ferry0", "DNAT", "conntrack"]),
    );

    page.text(
        "## 6. LoadBalancer

The lab's LoadBalancer IPAM hands out addresses from its pool; the host
routes the pool to a node.",
    );
    page.run(
        &format!(
            "kubectl expose deployment nginx -n {NS} --name nginx-lb --type LoadBalancer --port 80"
        ),
        |o| contains_all(o, &["service/nginx-lb exposed"]),
    );
    let lb = poll(60, "a LoadBalancer address", || {
        let out = lab.kubectl_ok(&[
            "get",
            "service",
            "nginx-lb",
            "-n",
            NS,
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ]);
        if out.is_empty() {
            Err("none yet".into())
        } else {
            Ok(out)
        }
    })
    .0;
    page.run(&format!("kubectl get service nginx-lb -n {NS}"), |o| {
        matches(
            o,
            r"nginx-lb\s+LoadBalancer\s+\S+\s+\d+\.\d+\.\d+\.\d+\s+80:3\d{4}/TCP",
            1,
        )
    });
    page.run(&format!("curl -s http://{lb}/"), |o| {
        matches(o, r"^hello from nginx-", 1)
    });

    page.text(
        "## 7. Scaling

New pods become endpoints as soon as they are ready; the Service's rules
follow.",
    );
    page.run(
        &format!("kubectl scale deployment nginx -n {NS} --replicas=5"),
        |o| contains_all(o, &["deployment.apps/nginx scaled"]),
    );
    page.run(
        &format!("kubectl rollout status deployment/nginx -n {NS} --timeout=120s"),
        |o| contains_all(o, &["successfully rolled out"]),
    );
    page.run(
        &format!("kubectl get endpointslices -n {NS} -l kubernetes.io/service-name=nginx"),
        // Five endpoints: kubectl shows three and counts the rest.
        |o| {
            matches(
                o,
                r"IPv4\s+80\s+10\.244\.\d+\.\d+,10\.244\.\d+\.\d+,10\.244\.\d+\.\d+ \+ 2 more",
                1,
            )
        },
    );

    page.text(
        "## 8. Ingress by host and by path

Ferry's Ingress controller runs on every node (ports 80 and 443 of the
node addresses). One Ingress routes `www.example.com` to nginx and splits
`foo.bar.com` by path between nginx and an echo server.",
    );
    page.run(
        &format!("kubectl create deployment echo --image=ferry/echo -n {NS} && kubectl expose deployment echo -n {NS} --port 8080"),
        |o| contains_all(o, &["deployment.apps/echo created", "service/echo exposed"]),
    );
    page.run(
        &format!("kubectl rollout status deployment/echo -n {NS} --timeout=120s"),
        |o| contains_all(o, &["successfully rolled out"]),
    );
    page.run(INGRESS, |o| {
        contains_all(o, &["ingress.networking.k8s.io/web created"])
    });
    poll(30, "the Ingress to serve", || {
        let out = sh(&[
            "curl",
            "-s",
            "-m",
            "5",
            "-H",
            "Host: www.example.com",
            "http://172.30.0.11/",
        ]);
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        if body.starts_with("hello from") || body.contains("Welcome to nginx") {
            Ok(())
        } else {
            Err(body)
        }
    });
    page.run(
        "curl -s -H 'Host: www.example.com' http://172.30.0.11/",
        |o| matches(o, r"(hello from nginx-|Welcome to nginx)", 1),
    );
    page.run(
        "curl -s -H 'Host: foo.bar.com' 'http://172.30.0.12/echo?msg=routed-by-path'",
        |o| contains_all(o, &["routed-by-path"]),
    );
    page.run(
        "curl -s -o /dev/null -w '%{http_code}\\n' -H 'Host: nope.example.com' http://172.30.0.13/",
        |o| contains_all(o, &["404"]),
    );
    page.text(
        "The two pods the scale-up added still serve the image's default page.
`ferry trace` follows an Ingress URL too: to the controller on the node,
then to the endpoints of the backend Service.",
    );
    page.run("ferry trace host http://www.example.com/", |o| {
        contains_all(o, &["www.example.com", "ferry0", "nginx"])
    });
    page.run(&format!("kubectl get ingress -n {NS}"), |o| {
        matches(o, r"web\s+\S*\s+www\.example\.com,foo\.bar\.com\s+172\.30\.0\.11,172\.30\.0\.12,172\.30\.0\.13\s+80", 1)
    });

    page.text(
        "## 9. TLS

A `kubernetes.io/tls` Secret and a `tls` entry: HTTPS with that
certificate, and plain HTTP redirected.",
    );
    page.run(
        "openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=www.example.com -addext subjectAltName=DNS:www.example.com -keyout tls.key -out tls.crt 2>/dev/null && ls tls.*",
        |o| contains_all(o, &["tls.crt", "tls.key"]),
    );
    page.run(
        &format!("kubectl create secret tls www-tls -n {NS} --cert=tls.crt --key=tls.key"),
        |o| contains_all(o, &["secret/www-tls created"]),
    );
    page.run(INGRESS_TLS, |o| {
        contains_all(o, &["ingress.networking.k8s.io/web patched"])
    });
    poll(30, "HTTPS with the new certificate", || {
        let out = sh(&[
            "curl",
            "-s",
            "-m",
            "5",
            "--cacert",
            &workdir.path().join("tls.crt").display().to_string(),
            "--resolve",
            "www.example.com:443:172.30.0.11",
            "https://www.example.com/",
        ]);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{out:?}"))
        }
    });
    page.run(
        "curl -s --cacert tls.crt --resolve www.example.com:443:172.30.0.11 https://www.example.com/",
        |o| matches(o, r"(hello from nginx-|Welcome to nginx)", 1),
    );
    page.run(
        "curl -s -o /dev/null -w '%{http_code} %{redirect_url}\\n' -H 'Host: www.example.com' http://172.30.0.11/",
        |o| contains_all(o, &["308 https://www.example.com/"]),
    );

    page.text(
        "## 10. Logs, port-forward, clean up

`kubectl logs` reads what a container wrote; `kubectl port-forward`
tunnels a local port to a pod through the API server.",
    );
    page.run(
        &format!("kubectl logs -n {NS} deployment/echo --tail=3"),
        |o| contains_all(o, &["echo server"]),
    );
    page.run(
        &format!(
            "(kubectl port-forward -n {NS} pod/{pod0} 18080:80 & timeout 30 sh -c 'until curl -s http://localhost:18080/; do sleep 0.5; done'; kill $!)"
        ),
        |o| {
            contains_all(o, &["Forwarding from 127.0.0.1:18080 -> 80"])?;
            matches(o, r"hello from nginx-", 1)
        },
    );
    page.run(&format!("kubectl delete namespace {NS}"), |o| {
        contains_all(o, &["namespace \"yuchaoit\" deleted"])
    });
    page.close_block();

    let generated = page.markdown.clone();
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("walkthrough.md");
    std::fs::write(&target, &generated).unwrap();
    if std::env::var("FERRY_WRITE_WALKTHROUGH").as_deref() == Ok("1") {
        std::fs::write(DOC, &generated).unwrap();
        println!("wrote {DOC}");
        return;
    }
    let committed = std::fs::read_to_string(DOC)
        .unwrap_or_else(|e| panic!("{DOC}: {e}; generate it with FERRY_WRITE_WALKTHROUGH=1"));
    let (doc_text, doc_commands) = parse(&committed);
    let (live_text, live_commands) = parse(&generated);
    assert_eq!(
        mask(&doc_text),
        mask(&live_text),
        "docs/walkthrough.md's text differs from the script (this run's page: {})",
        target.display()
    );
    assert_eq!(doc_commands.len(), page.ran.len(), "number of commands");
    assert_eq!(live_commands.len(), page.ran.len());
    for ((command, output), ran) in doc_commands.iter().zip(&page.ran) {
        assert_eq!(
            mask(command),
            mask(&ran.command),
            "docs/walkthrough.md runs another command (this run's page: {})",
            target.display()
        );
        if let Err(e) = (ran.check)(output) {
            panic!("docs/walkthrough.md: the output recorded for `{command}` fails its check: {e}");
        }
    }
    println!(
        "docs/walkthrough.md: {} commands, text and recorded outputs match this run",
        page.ran.len()
    );
}
