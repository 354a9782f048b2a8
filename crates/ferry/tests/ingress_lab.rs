//! `ferry ingress` end to end in the lab (the Ingress issue, point 1 and
//! the TLS smoke of point 3), as root with real kubectl, curl and openssl
//! from the host against the node addresses 172.30.0.11..13, where the
//! `kube-system/ferry-ingress` DaemonSet listens with host networking:
//! a host routed to a 2-pod Service in round robin, a fanout by path, the
//! default 404, a `defaultBackend`, a legacy `extensions/v1beta1` Ingress,
//! the ADDRESS and PORTS columns, TLS from a Secret with the HTTPS
//! redirect and the fake certificate for unknown names, and the warning
//! Events for a missing Secret and a snippet annotation.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use support::lab::*;

const NS: &str = "yuchaoit";
const NODE_IPS: [&str; 3] = ["172.30.0.11", "172.30.0.12", "172.30.0.13"];
const ALL_NODES: &str = "172.30.0.11,172.30.0.12,172.30.0.13";

/// An HTTP answer as curl saw it.
#[derive(Debug)]
struct Reply {
    status: u16,
    /// Lowercase names.
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The status and the first line of the body, for the log.
    fn summary(&self) -> String {
        format!(
            "HTTP {} {:?}",
            self.status,
            self.body
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
        )
    }
}

/// `curl -sS -i` from the host; Err: curl failed (refused, timed out,
/// TLS error...) or the answer is not HTTP.
fn try_curl(args: &[&str]) -> Result<Reply, String> {
    let out = Command::new("curl")
        .args(["-sS", "-i", "-m", "5", "--noproxy", "*"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(format!(
            "curl exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP answer: {text:?}"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line: {text:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Reply {
        status,
        headers,
        body: body.to_string(),
    })
}

/// A plain HTTP GET of `path` on node `ip` with `Host: host`.
fn get(ip: &str, host: &str, path: &str) -> Result<Reply, String> {
    try_curl(&[
        "-H",
        &format!("Host: {host}"),
        &format!("http://{ip}{path}"),
    ])
}

/// Like [`get`], printing the command and the answer.
fn get_logged(ip: &str, host: &str, path: &str) -> Reply {
    let reply = get(ip, host, path)
        .unwrap_or_else(|e| panic!("curl -H 'Host: {host}' http://{ip}{path}: {e}"));
    println!(
        "$ curl -i -H 'Host: {host}' http://{ip}{path} -> {}",
        reply.summary()
    );
    reply
}

/// Polls until GET `host``path` on `ip` passes `check`.
fn get_until(secs: u64, ip: &str, host: &str, path: &str, check: impl Fn(&Reply) -> bool) -> Reply {
    let (reply, took) = poll(secs, &format!("http://{ip}{path} (Host {host})"), || {
        let r = get(ip, host, path)?;
        if check(&r) {
            Ok(r)
        } else {
            Err(format!("{r:?}"))
        }
    });
    println!(
        "$ curl -i -H 'Host: {host}' http://{ip}{path} -> {} (after {took:.2?})",
        reply.summary()
    );
    reply
}

/// The pod a built-in nginx page names, from `names`.
fn page_pod<'a>(body: &str, names: &'a [String]) -> Option<&'a str> {
    names
        .iter()
        .find(|n| body.contains(&format!("Served by pod <b>{n}</b>")))
        .map(String::as_str)
}

/// What the test's `s1`/`s2` backends answer: `pod <name> path <path>`.
fn backend_says(pod: &str, path: &str) -> String {
    format!("pod {pod} path {path}")
}

/// The pods of `selector` in the test namespace: (name, node).
fn pods_in(lab: &Lab, selector: &str) -> Vec<(String, String)> {
    lab.kubectl_ok(&[
        "-n",
        NS,
        "get",
        "pods",
        "-l",
        selector,
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName}{\"\\n\"}{end}",
    ])
    .lines()
    .filter_map(|l| {
        let mut f = l.split_whitespace();
        Some((f.next()?.into(), f.next()?.into()))
    })
    .collect()
}

/// `lab-node-<i>` → `172.30.0.<10+i>`.
fn node_ip(node: &str) -> String {
    let i: u8 = node.strip_prefix("lab-node-").unwrap().parse().unwrap();
    format!("172.30.0.{}", 10 + i)
}

/// A backend for the fanout: answers every request with its pod name
/// (the hostname: the lab runtime gives each pod a UTS namespace named
/// after it) and the path it received, so the test sees which pod got
/// which path. The built-in nginx and echo only answer a few fixed paths.
/// Perl runs in the lab as a host process (perl-base is essential on
/// Debian); in a real cluster the `perl` image has it.
const BACKEND: &str = r#"use IO::Socket::INET; use Sys::Hostname; $SIG{PIPE} = "IGNORE";
my $l = IO::Socket::INET->new(LocalPort => 8080, Listen => 64, ReuseAddr => 1) or die "listen: $!";
while (my $c = $l->accept) {
  my $r = <$c>; next unless defined $r;
  my (undef, $p) = split / /, $r;
  while (my $h = <$c>) { last if $h =~ /^\r?$/ }
  my $b = "pod " . hostname() . " path $p\n";
  print $c "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " . length($b) . "\r\nConnection: close\r\n\r\n" . $b;
  close $c;
}"#;

fn manifest() -> String {
    let backend = |name: &str| {
        format!(
            r#"
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {NS}, labels: {{app: {name}}}}}
spec:
  containers:
  - name: web
    image: perl
    command: ["perl", "-e", {script}]
    ports: [{{containerPort: 8080}}]
    readinessProbe:
      tcpSocket: {{port: 8080}}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {NS}}}
spec:
  selector: {{app: {name}}}
  ports: [{{port: 80, targetPort: 8080}}]
"#,
            script = serde_json::to_string(BACKEND).unwrap()
        )
    };
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: nginx, namespace: {NS}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: nginx}}}}
  template:
    metadata: {{labels: {{app: nginx}}}}
    spec:
      containers:
      - name: nginx
        image: nginx
        ports: [{{containerPort: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: nginx, namespace: {NS}}}
spec:
  selector: {{app: nginx}}
  ports: [{{port: 80, targetPort: 80}}]
{s1}{s2}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: fanout, namespace: {NS}}}
spec:
  rules:
  - host: foo.bar.com
    http:
      paths:
      - {{path: /foo, pathType: Prefix, backend: {{service: {{name: s1, port: {{number: 80}}}}}}}}
      - {{path: /bar, pathType: Prefix, backend: {{service: {{name: s2, port: {{number: 80}}}}}}}}
---
{www}"#,
        s1 = backend("s1"),
        s2 = backend("s2"),
        www = www_ingress(false),
    )
}

/// The Ingress of `www.example.com` (no class: `ferry` is the default),
/// with TLS from Secret `www-tls` or without.
fn www_ingress(tls: bool) -> String {
    let tls = if tls {
        "  tls: [{hosts: [www.example.com], secretName: www-tls}]\n"
    } else {
        ""
    };
    format!(
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: www, namespace: {NS}}}
spec:
{tls}  rules:
  - host: www.example.com
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: nginx, port: {{number: 80}}}}}}}}
"#
    )
}

const LEGACY: &str = r#"apiVersion: extensions/v1beta1
kind: Ingress
metadata: {name: legacy, namespace: yuchaoit}
spec:
  rules:
  - host: legacy.example.com
    http:
      paths:
      - path: /
        backend: {serviceName: nginx, servicePort: 80}
"#;

const FALLBACK: &str = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: fallback, namespace: yuchaoit}
spec:
  defaultBackend: {service: {name: s2, port: {number: 80}}}
"#;

const WARNED: &str = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: snippet
  namespace: yuchaoit
  annotations:
    nginx.ingress.kubernetes.io/configuration-snippet: |
      more_set_headers "X-Snippet: yes";
spec:
  rules:
  - host: snippet.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: s1, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: tls-missing, namespace: yuchaoit}
spec:
  tls: [{hosts: [missing.example.com], secretName: no-such-secret}]
  rules:
  - host: missing.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: s1, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: bad-regex
  namespace: yuchaoit
  annotations:
    nginx.ingress.kubernetes.io/use-regex: "true"
spec:
  rules:
  - host: regex.example.com
    http:
      paths:
      - {path: "/(unclosed", pathType: ImplementationSpecific, backend: {service: {name: s1, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bad-backend, namespace: yuchaoit}
spec:
  rules:
  - host: bad.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: no-such-service, port: {number: 80}}}}
      - {path: /port, pathType: Prefix, backend: {service: {name: s1, port: {number: 9999}}}}
"#;

/// `kubectl apply -f <file>` with the manifest in a file; the output.
fn apply_file(lab: &Lab, dir: &Path, name: &str, manifest: &str) -> std::process::Output {
    let file = dir.join(name);
    std::fs::write(&file, manifest).unwrap();
    lab.kubectl(&["apply", "-f", file.to_str().unwrap()])
}

/// Polls `kubectl get events -n yuchaoit` for a Warning `reason` on
/// Ingress `ingress`; the event's line.
fn wait_for_warning(lab: &Lab, ingress: &str, reason: &str) -> String {
    let object = format!("ingress/{ingress}");
    let (line, took) = poll(20, &format!("a {reason} warning on {object}"), || {
        let out = lab.kubectl_ok(&["get", "events", "-n", NS]);
        out.lines()
            .find(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.contains(&"Warning") && f.contains(&reason) && f.contains(&object.as_str())
            })
            .map(|l| l.trim_end().to_string())
            .ok_or_else(|| format!("no such event in:\n{out}"))
    });
    println!("$ kubectl get events -n {NS}  ({took:.2?})\n{line}");
    line
}

#[test]
fn ingress_end_to_end() {
    if !support::can_use_netns("ingress_end_to_end")
        || !support::kubectl_available()
        || !tool_available("curl", "--version")
        || !tool_available("openssl", "version")
    {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::up(dir.path(), 3);
    let out = lab.output();
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("ingress "))
        .unwrap_or_else(|| panic!("no ingress line in the startup output:\n{out}"));
    println!("ferry up: {line}");
    assert!(
        line.contains("ferry-ingress (IngressClass ferry, default) on :80 and :443 of every node"),
        "{line}"
    );
    println!("lab up in {:.1?}", started.elapsed());

    lab.apply(&manifest());
    lab.kubectl_ok(&[
        "-n",
        NS,
        "rollout",
        "status",
        "deployment/nginx",
        "--timeout=90s",
    ]);
    lab.kubectl_ok(&[
        "-n",
        NS,
        "wait",
        "--for=condition=Ready",
        "pod/s1",
        "pod/s2",
        "--timeout=60s",
    ]);
    let nginx = pods_in(&lab, "app=nginx");
    assert_eq!(nginx.len(), 2, "{nginx:?}");
    let names: Vec<String> = nginx.iter().map(|(n, _)| n.clone()).collect();
    for (name, node) in &nginx {
        println!("nginx pod {name} on {node}");
    }

    // 1. www.example.com → the 2 nginx pods, in round robin.
    let ip = NODE_IPS[0];
    let first = get_until(30, ip, "www.example.com", "/", |r| r.status == 200);
    assert!(page_pod(&first.body, &names).is_some(), "{first:?}");
    // Endpoints arrive one by one: wait until both pods answer.
    poll(20, "both nginx pods behind www.example.com", || {
        let seen: Vec<&str> = (0..4)
            .filter_map(|_| page_pod(&get(ip, "www.example.com", "/").ok()?.body, &names))
            .collect();
        if names.iter().all(|n| seen.contains(&n.as_str())) {
            Ok(())
        } else {
            Err(format!("only {seen:?}"))
        }
    });
    let mut sequence = Vec::new();
    for _ in 0..20 {
        let r = get(ip, "www.example.com", "/").unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        sequence.push(
            page_pod(&r.body, &names)
                .unwrap_or_else(|| panic!("no nginx pod named in {r:?}"))
                .to_string(),
        );
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for who in &sequence {
        *counts.entry(who.as_str()).or_default() += 1;
    }
    println!("20 x curl -H 'Host: www.example.com' http://{ip}/: {sequence:?}\ncounts {counts:?}");
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert!(counts.values().all(|n| (9..=11).contains(n)), "{counts:?}");
    for pair in sequence.windows(2) {
        assert_ne!(
            pair[0], pair[1],
            "the same pod twice in a row: {sequence:?}"
        );
    }
    // Through every node, also one without an nginx pod.
    let with_nginx: Vec<String> = nginx.iter().map(|(_, node)| node_ip(node)).collect();
    let without: Vec<&&str> = NODE_IPS
        .iter()
        .filter(|ip| !with_nginx.iter().any(|w| w == *ip))
        .collect();
    println!("node IPs without an nginx pod: {without:?}");
    assert!(!without.is_empty());
    for ip in NODE_IPS {
        let r = get_until(10, ip, "www.example.com", "/", |r| r.status == 200);
        assert!(page_pod(&r.body, &names).is_some(), "{r:?}");
    }

    // 2. Fanout by path on foo.bar.com.
    let ip = NODE_IPS[1];
    get_until(20, ip, "foo.bar.com", "/foo", |r| r.status == 200);
    for (path, pod) in [
        ("/foo", "s1"),
        ("/foo/x", "s1"),
        ("/bar", "s2"),
        ("/bar/y", "s2"),
    ] {
        let r = get_logged(ip, "foo.bar.com", path);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(r.body.trim(), backend_says(pod, path), "{path}");
    }
    // Prefix matches whole path elements; no rule matches these.
    for path in ["/baz", "/foobar"] {
        let r = get_logged(ip, "foo.bar.com", path);
        assert_eq!(r.status, 404, "{path}: {r:?}");
        assert!(r.body.contains("404 Not Found"), "{path}: {r:?}");
    }

    // 3. An unknown host: the default backend's 404.
    let r = get_logged(NODE_IPS[2], "nope.example.com", "/");
    println!(
        "  Content-Type: {:?}\n  {:?}",
        r.header("content-type"),
        r.body
    );
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.header("content-type"), Some("text/html"), "{r:?}");
    assert!(r.body.contains("404 Not Found"), "{r:?}");

    // 5. A legacy extensions/v1beta1 Ingress (kubectl asks the server
    // for that version; the server stores it as networking.k8s.io/v1).
    let out = apply_file(&lab, dir.path(), "legacy.yaml", LEGACY);
    println!(
        "$ kubectl apply -f legacy.yaml (extensions/v1beta1) -> {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    );
    if !out.status.success() {
        // kubectl refused the version: POST it as it is.
        let file = dir.path().join("legacy.yaml");
        let raw = lab.kubectl(&[
            "create",
            "--raw",
            &format!("/apis/extensions/v1beta1/namespaces/{NS}/ingresses"),
            "-f",
            file.to_str().unwrap(),
        ]);
        println!(
            "$ kubectl create --raw /apis/extensions/v1beta1/namespaces/{NS}/ingresses -> {}\n{}\n{}",
            raw.status,
            String::from_utf8_lossy(&raw.stdout).trim_end(),
            String::from_utf8_lossy(&raw.stderr).trim_end()
        );
        assert!(raw.status.success(), "the legacy Ingress was refused twice");
    }
    let stored = lab.kubectl_ok(&[
        "-n",
        NS,
        "get",
        "ingress",
        "legacy",
        "-o",
        "jsonpath={.apiVersion} {.spec.rules[0].http.paths[0].pathType} {.spec.rules[0].http.paths[0].backend.service.name}:{.spec.rules[0].http.paths[0].backend.service.port.number}",
    ]);
    println!("legacy as stored: {stored}");
    assert_eq!(
        stored,
        "networking.k8s.io/v1 ImplementationSpecific nginx:80"
    );
    let r = get_until(20, NODE_IPS[1], "legacy.example.com", "/", |r| {
        r.status == 200
    });
    assert!(page_pod(&r.body, &names).is_some(), "{r:?}");

    // 4. A defaultBackend catches unknown hosts, and unmatched paths of
    // known hosts ("requests that don't match any of the paths").
    let out = apply_file(&lab, dir.path(), "fallback.yaml", FALLBACK);
    assert!(out.status.success(), "{out:?}");
    let r = get_until(20, NODE_IPS[2], "nope.example.com", "/", |r| {
        r.body.trim() == backend_says("s2", "/")
    });
    assert_eq!(r.status, 200, "{r:?}");
    for ip in NODE_IPS {
        let r = get_until(10, ip, "foo.bar.com", "/baz", |r| {
            r.body.trim() == backend_says("s2", "/baz")
        });
        assert_eq!(r.status, 200, "{r:?}");
    }
    // The rules still win over it.
    let r = get_logged(NODE_IPS[2], "foo.bar.com", "/foo/x");
    assert_eq!(r.body.trim(), backend_says("s1", "/foo/x"), "{r:?}");
    let r = get_logged(NODE_IPS[2], "www.example.com", "/");
    assert!(page_pod(&r.body, &names).is_some(), "{r:?}");

    // 8. A snippet is refused with a warning; the rule is served.
    // 7 (part). A tls entry naming a missing Secret: a warning.
    lab.apply(WARNED);
    wait_for_warning(&lab, "snippet", "SnippetRefused");
    let r = get_until(20, NODE_IPS[0], "snippet.example.com", "/", |r| {
        r.status == 200
    });
    assert_eq!(r.body.trim(), backend_says("s1", "/"), "{r:?}");
    assert_eq!(r.header("x-snippet"), None, "{r:?}");
    wait_for_warning(&lab, "tls-missing", "TLSSecretNotFound");
    // 7. An invalid regex and an unknown service or port: a warning on
    // that Ingress, which loses only its own rules; the others serve.
    wait_for_warning(&lab, "bad-regex", "InvalidPath");
    let line = wait_for_warning(&lab, "bad-backend", "BackendError");
    assert!(
        line.contains("no-such-service") || line.contains("9999"),
        "{line}"
    );
    let events = lab.kubectl_ok(&["get", "events", "-n", NS]);
    for needle in [
        "service yuchaoit/no-such-service does not exist",
        "has no port 9999",
    ] {
        assert!(
            events.contains(needle),
            "no BackendError saying {needle:?} in:\n{events}"
        );
    }
    // Its rule (to s1) is dropped: the defaultBackend (s2) answers.
    let r = get_logged(NODE_IPS[1], "regex.example.com", "/");
    assert_eq!(r.body.trim(), backend_says("s2", "/"), "{r:?}");
    let r = get_logged(NODE_IPS[1], "bad.example.com", "/");
    assert_eq!(r.status, 503, "an unknown service has no endpoints: {r:?}");
    let r = get_logged(NODE_IPS[1], "www.example.com", "/");
    assert!(page_pod(&r.body, &names).is_some(), "{r:?}");
    let r = get_logged(NODE_IPS[1], "snippet.example.com", "/");
    assert_eq!(r.body.trim(), backend_says("s1", "/"), "{r:?}");

    // 7. TLS for www.example.com from a Secret.
    let cert = dir.path().join("www.crt");
    let key = dir.path().join("www.key");
    let (cert_s, key_s) = (cert.to_str().unwrap(), key.to_str().unwrap());
    sh_ok(&[
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=www.example.com",
        "-addext",
        "subjectAltName=DNS:www.example.com",
        "-keyout",
        key_s,
        "-out",
        cert_s,
    ]);
    let created = lab.kubectl_ok(&[
        "-n", NS, "create", "secret", "tls", "www-tls", "--cert", cert_s, "--key", key_s,
    ]);
    println!(
        "$ kubectl create secret tls www-tls ...\n{}",
        created.trim_end()
    );
    let out = apply_file(&lab, dir.path(), "www-tls.yaml", &www_ingress(true));
    assert!(out.status.success(), "{out:?}");
    let applied = Instant::now();
    let resolve = format!("www.example.com:443:{}", NODE_IPS[0]);
    let (r, _) = poll(
        5,
        "https://www.example.com/ with the Secret's certificate",
        || {
            let r = try_curl(&[
                "--resolve",
                &resolve,
                "--cacert",
                cert_s,
                "https://www.example.com/",
            ])?;
            if r.status == 200 {
                Ok(r)
            } else {
                Err(format!("{r:?}"))
            }
        },
    );
    let took = applied.elapsed();
    println!(
        "$ curl -i --resolve {resolve} --cacert www.crt https://www.example.com/ -> {} ({took:.2?} after kubectl apply returned)",
        r.summary()
    );
    assert!(page_pod(&r.body, &names).is_some(), "{r:?}");
    for ip in &NODE_IPS[1..] {
        let resolve = format!("www.example.com:443:{ip}");
        let (r, took) = poll(10, &format!("https on {ip}"), || {
            try_curl(&[
                "--resolve",
                &resolve,
                "--cacert",
                cert_s,
                "https://www.example.com/",
            ])
            .and_then(|r| {
                if r.status == 200 {
                    Ok(r)
                } else {
                    Err(format!("{r:?}"))
                }
            })
        });
        println!(
            "$ curl -i --resolve {resolve} --cacert www.crt https://www.example.com/ -> {} ({took:.2?})",
            r.summary()
        );
    }
    // Plain HTTP for a TLS host: 308 to https.
    let r = get_until(5, NODE_IPS[0], "www.example.com", "/x", |r| r.status == 308);
    println!("  Location: {:?}", r.header("location"));
    assert_eq!(
        r.header("location"),
        Some("https://www.example.com/x"),
        "{r:?}"
    );
    // An unknown name gets the fake certificate.
    let s_client = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("{}:443", NODE_IPS[0]),
            "-servername",
            "other.example.com",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&s_client.stdout).into_owned();
    let subject = text
        .lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or_else(|| {
            panic!(
                "no certificate from openssl s_client:\n{text}{}",
                String::from_utf8_lossy(&s_client.stderr)
            )
        });
    println!(
        "$ openssl s_client -connect {}:443 -servername other.example.com\n{subject}",
        NODE_IPS[0]
    );
    assert!(
        subject.contains("CN = Kubernetes Ingress Controller Fake Certificate"),
        "{subject}"
    );

    // 6. ADDRESS and PORTS of every served Ingress.
    // Ingresses with bad rules are still ours and served (what is valid
    // of them), so they get addresses too.
    let want: BTreeMap<&str, &str> = [
        ("bad-backend", "80"),
        ("bad-regex", "80"),
        ("fallback", "80"),
        ("fanout", "80"),
        ("legacy", "80"),
        ("snippet", "80"),
        ("tls-missing", "80, 443"),
        ("www", "80, 443"),
    ]
    .into();
    let (table, took) = poll(15, "the addresses of every Ingress", || {
        let out = lab.kubectl_ok(&["get", "ing", "-n", NS]);
        let mut got = BTreeMap::new();
        for l in out.lines().skip(1) {
            // NAME CLASS HOSTS ADDRESS PORTS AGE; PORTS may be "80, 443".
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 6 {
                return Err(format!("no address yet:\n{out}"));
            }
            if f[3] != ALL_NODES {
                return Err(format!("{}: ADDRESS {}:\n{out}", f[0], f[3]));
            }
            got.insert(f[0].to_string(), f[4..f.len() - 1].join(" "));
        }
        let want: BTreeMap<String, String> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if got == want {
            Ok(out)
        } else {
            Err(format!("{got:?}:\n{out}"))
        }
    });
    println!(
        "$ kubectl get ing -n {NS}  ({took:.2?})\n{}",
        table.trim_end()
    );

    println!("done in {:.1?}", started.elapsed());
    let stopping = Instant::now();
    lab.down();
    println!("ferry down took {:.1?}", stopping.elapsed());
}
