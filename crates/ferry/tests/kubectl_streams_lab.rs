//! Issue 9, points 1-3, in the lab with real kubectl: `kubectl exec`
//! (output and exit code; an interactive TTY session driven through a
//! pty; writing `index.html` changes what that pod serves), `kubectl
//! logs` (`-f`, `--tail`, `--previous` after a liveness restart),
//! `kubectl port-forward`, and `kubectl run -it --rm`.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use support::lab::*;

const NS: &str = "yuchaoit";

/// A background kubectl (`logs -f`, `port-forward`) whose stdout is
/// collected as it comes.
struct Background {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Background {
    fn spawn(kubeconfig: &std::path::Path, args: &[&str]) -> Background {
        let mut child = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sink = output.clone();
            std::thread::spawn(move || {
                let mut pipe = pipe;
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        Background { child, output }
    }

    fn text(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: yuchaoit}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: nginx, namespace: yuchaoit}
spec:
  replicas: 2
  selector: {matchLabels: {app: nginx}}
  template:
    metadata: {labels: {app: nginx}}
    spec:
      containers:
      - {name: nginx, image: "nginx:alpine", ports: [{containerPort: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: nginx, namespace: yuchaoit}
spec:
  selector: {app: nginx}
  ports: [{port: 80, targetPort: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: ticker, namespace: yuchaoit}
spec:
  containers:
  - name: ticker
    image: busybox
    command: ["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"]
---
apiVersion: v1
kind: Pod
metadata: {name: console, namespace: yuchaoit}
spec:
  containers:
  - {name: sh, image: busybox, command: ["sh"], stdin: true, tty: true}
---
apiVersion: v1
kind: Pod
metadata: {name: flaky, namespace: yuchaoit}
spec:
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "echo run-$(cat /proc/sys/kernel/random/uuid); exec sleep 3600"]
    livenessProbe:
      exec: {command: ["false"]}
      initialDelaySeconds: 2
      periodSeconds: 1
      failureThreshold: 1
  - name: side
    image: busybox
    command: ["sh", "-c", "echo side-car; exec sleep 3600"]
"#;

fn prerequisites(test: &str) -> bool {
    support::can_use_netns(test)
        && support::kubectl_available()
        && tool_available("curl", "--version")
}

fn nginx_pods(lab: &Lab) -> Vec<PodInfo> {
    let out = lab.kubectl_ok(&[
        "get", "pods", "-n", NS, "-l", "app=nginx", "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.spec.nodeName} {.status.phase}{\"\\n\"}{end}",
    ]);
    out.lines()
        .filter(|l| l.ends_with(" Running"))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some(PodInfo {
                name: f.next()?.into(),
                ip: f.next()?.into(),
                node: f.next()?.into(),
            })
        })
        .collect()
}

#[test]
fn exec_logs_port_forward_and_run_in_the_lab() {
    if !prerequisites("exec_logs_port_forward_and_run_in_the_lab") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::up(dir.path(), 2);
    let kubeconfig = dir.path().join("kubeconfig");
    lab.apply(MANIFEST);
    let pods = poll(90, "two running nginx pods", || {
        let p = nginx_pods(&lab);
        if p.len() == 2 {
            Ok(p)
        } else {
            Err(format!("{} running", p.len()))
        }
    })
    .0;
    let web = &pods[0];
    let other = &pods[1];

    // 1. exec: output, stderr and the exit code.
    let out = lab.kubectl(&[
        "exec",
        "-n",
        NS,
        &web.name,
        "--",
        "sh",
        "-c",
        "echo out-$(hostname); echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("out-{}\n", web.name)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr, "err\ncommand terminated with exit code 3\n");
    println!(
        "exec: stdout {:?}, exit 3, stderr {stderr:?}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Bad requests get kube-apiserver's errors, and break nothing.
    let bad = lab.kubectl(&["exec", "-n", NS, &web.name, "-c", "nope", "--", "true"]);
    assert!(!bad.status.success());
    let msg = String::from_utf8_lossy(&bad.stderr);
    assert!(
        msg.contains(&format!("container nope is not valid for pod {}", web.name)),
        "{msg}"
    );
    let bad = lab.kubectl(&["logs", "-n", NS, "no-such-pod"]);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("pods \"no-such-pod\" not found"),
        "{bad:?}"
    );
    let missing = lab.kubectl(&["exec", "-n", NS, &web.name, "--", "no-such-command"]);
    assert_eq!(missing.status.code(), Some(127), "{missing:?}");
    println!(
        "exec of a missing command: {:?}",
        String::from_utf8_lossy(&missing.stderr)
    );

    // exec runs in the pod's network namespace: its own IP on eth0.
    let ip_out = lab.kubectl_ok(&[
        "exec", "-n", NS, &web.name, "--", "ip", "-4", "-o", "addr", "show", "eth0",
    ]);
    assert!(ip_out.contains(&format!("{}/", web.ip)), "{ip_out}");

    // An interactive TTY session.
    let mut term = OnTerminal::spawn(
        &kubeconfig,
        &["exec", "-it", "-n", NS, &web.name, "--", "sh"],
    );
    term.wait_for("# ", 30);
    term.type_line("tty; stty size; echo $((6*7))-done");
    let seen = term.wait_for("42-done", 30);
    assert!(seen.contains("/dev/pts/"), "stdin is a terminal: {seen}");
    assert!(
        seen.contains("40 132"),
        "the terminal size reached the pod: {seen}"
    );
    term.type_line("exit 7");
    assert_eq!(term.exit_code(30), 7, "{}", term.text());
    println!("exec -it: {:?}", term.text());

    // attach to a container started with stdin and a TTY: typing reaches
    // its shell, the terminal size too; exiting the shell ends the attach.
    poll(60, "console running", || {
        let phase = lab.kubectl_ok(&[
            "get",
            "pod",
            "-n",
            NS,
            "console",
            "-o",
            "jsonpath={.status.phase}",
        ]);
        if phase == "Running" {
            Ok(())
        } else {
            Err(phase)
        }
    });
    let mut attach = OnTerminal::spawn(&kubeconfig, &["attach", "-it", "-n", NS, "console"]);
    attach.wait_for("If you don't see a command prompt", 30);
    // As the hint says: enter, and the shell's prompt shows the stream is up.
    attach.type_line("");
    attach.wait_for("# ", 30);
    attach.type_line("stty size; echo attached-$((6*7))");
    let seen = attach.wait_for("attached-42", 30);
    assert!(
        seen.contains("40 132"),
        "the terminal size reached the container: {seen}"
    );
    attach.type_line("exit");
    assert_eq!(attach.exit_code(30), 0, "{}", attach.text());
    println!("attach -it: {:?}", attach.text());

    // Writing index.html through exec changes what that pod serves.
    let page = format!("hello from {}", web.name);
    lab.kubectl_ok(&[
        "exec",
        "-n",
        NS,
        &web.name,
        "--",
        "sh",
        "-c",
        &format!("echo '{page}' > /usr/share/nginx/html/index.html"),
    ]);
    let node_ns = &web.node;
    let served = sh_ok(&[
        "ip",
        "netns",
        "exec",
        node_ns,
        "curl",
        "-s",
        "-m",
        "5",
        &format!("http://{}/", web.ip),
    ]);
    assert_eq!(served.trim(), page);
    let untouched = sh_ok(&[
        "ip",
        "netns",
        "exec",
        &other.node,
        "curl",
        "-s",
        "-m",
        "5",
        &format!("http://{}/", other.ip),
    ]);
    assert!(
        untouched.contains(&other.name) && !untouched.contains("hello from"),
        "{untouched}"
    );
    println!(
        "curl {} -> {:?}; the other pod still serves its own page",
        web.ip,
        served.trim()
    );

    // 2. logs, --tail, -f.
    let logs = lab.kubectl_ok(&["logs", "-n", NS, &other.name]);
    assert!(
        logs.contains(&format!("web server for pod {}", other.name)),
        "{logs}"
    );
    let ticks = poll(60, "ticker output", || {
        let out = lab.kubectl(&["logs", "-n", NS, "ticker", "--tail=2"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && text.lines().count() == 2 {
            Ok(text)
        } else {
            Err(text)
        }
    })
    .0;
    assert!(ticks.lines().all(|l| l.starts_with("tick ")), "{ticks}");
    let last: u64 = ticks.lines().last().unwrap()[5..].parse().unwrap();
    let follow = Background::spawn(&kubeconfig, &["logs", "-f", "-n", NS, "ticker", "--tail=1"]);
    let later = format!("tick {}", last + 10);
    poll(30, "logs -f to stream new lines", || {
        let t = follow.text();
        if t.contains(&later) { Ok(()) } else { Err(t) }
    });
    println!("logs --tail=2: {ticks:?}; logs -f reached {later:?}");
    drop(follow);

    // --previous after a liveness restart.
    poll(60, "flaky restarted by its liveness probe", || {
        let n = lab.kubectl_ok(&[
            "get",
            "pod",
            "-n",
            NS,
            "flaky",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ]);
        if n.trim().parse::<u32>().unwrap_or(0) >= 1 {
            Ok(())
        } else {
            Err(n)
        }
    });
    let (previous, current) = poll(30, "previous and current runs' logs", || {
        let p = lab.kubectl(&["logs", "-n", NS, "flaky", "-c", "app", "--previous"]);
        let c = lab.kubectl(&["logs", "-n", NS, "flaky"]);
        let (p, c) = (
            String::from_utf8_lossy(&p.stdout).into_owned(),
            String::from_utf8_lossy(&c.stdout).into_owned(),
        );
        if p.starts_with("run-") && c.starts_with("run-") && p != c {
            Ok((p, c))
        } else {
            Err(format!("{p:?} {c:?}"))
        }
    })
    .0;
    assert_ne!(previous, current, "each run printed its own id");
    let side = lab.kubectl_ok(&["logs", "-n", NS, "flaky", "-c", "side"]);
    assert_eq!(side, "side-car\n");
    let events = lab.kubectl_ok(&[
        "get",
        "events",
        "-n",
        NS,
        "--field-selector",
        "involvedObject.name=flaky",
    ]);
    assert!(events.contains("Liveness probe failed"), "{events}");
    println!("logs --previous: {previous:?}, logs: {current:?}");
    let none = lab.kubectl(&["logs", "-n", NS, "ticker", "--previous"]);
    assert!(!none.status.success());
    assert!(
        String::from_utf8_lossy(&none.stderr)
            .contains("previous terminated container \"ticker\" in pod \"ticker\" not found"),
        "{none:?}"
    );

    // A client that goes away takes its exec'd command with it.
    let running = |pattern: &str| sh(&["pgrep", "-f", pattern]).status.success();
    let exec = Background::spawn(
        &kubeconfig,
        &["exec", "-n", NS, &web.name, "--", "sleep", "4242"],
    );
    poll(30, "the exec'd sleep to run", || {
        if running("^sleep 4242$") {
            Ok(())
        } else {
            Err(exec.text())
        }
    });
    drop(exec);
    poll(30, "the exec'd sleep to end with its client", || {
        if running("^sleep 4242$") {
            Err("still running".into())
        } else {
            Ok(())
        }
    });
    println!("exec: killing kubectl ended the command in the pod");

    // port-forward pod/x 18080:80, then curl localhost:18080.
    let forward = Background::spawn(
        &kubeconfig,
        &[
            "port-forward",
            "-n",
            NS,
            &format!("pod/{}", web.name),
            "18080:80",
        ],
    );
    poll(30, "port-forward to listen", || {
        let t = forward.text();
        if t.contains("Forwarding from 127.0.0.1:18080") {
            Ok(())
        } else {
            Err(t)
        }
    });
    for _ in 0..3 {
        let body = sh_ok(&["curl", "-s", "-m", "5", "http://localhost:18080/"]);
        assert_eq!(body.trim(), page);
    }
    println!("port-forward: {:?}", forward.text());
    drop(forward);

    // 3. kubectl run -it --rm: create, attach, print, delete.
    let mut run = OnTerminal::spawn(
        &kubeconfig,
        &[
            "run",
            "-it",
            "--rm",
            "--image=nginx:alpine",
            "test",
            "--",
            "sh",
            "-c",
            "curl -s nginx.yuchaoit",
        ],
    );
    let code = run.exit_code(120);
    let text = run.text();
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("hello from") || text.contains("Welcome to nginx"),
        "a page: {text}"
    );
    assert!(text.contains("pod \"test\" deleted"), "{text}");
    poll(60, "pod test to be gone", || {
        let out = lab.kubectl(&["get", "pod", "test"]);
        if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NotFound") {
            Ok(())
        } else {
            Err(format!("{out:?}"))
        }
    });
    println!("kubectl run -it --rm: {text:?}");
}
