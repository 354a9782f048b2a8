//! The lab runtime end to end (root only): container processes started
//! through `ferry lab-run` in a test network namespace, with their own
//! hostname and `/etc/hosts`; built-in web and echo servers; exec; probes;
//! signals. The host's `/etc/hosts` and hostname must stay untouched.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod support;

use ferry_netlink::{NetNs, Netlink, netns};
use ferry_node::runtime::{
    Builtin, ContainerSpec, DEFAULT_PATH, ProbeOutcome, Process, Program, Sandbox, exec_in,
    probe_http, probe_tcp,
};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// Deletes the test namespace even when an assertion fails.
struct NsGuard(String);

impl Drop for NsGuard {
    fn drop(&mut self) {
        let _ = netns::delete(&self.0);
    }
}

/// Kills a container's process group even when an assertion fails.
struct Running(Process);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.kill();
    }
}

/// A test sandbox: a netns with lo up and 10.99.0.1/32 on lo, plus its
/// own hosts and resolv.conf files.
struct TestSandbox {
    _ns: NsGuard,
    netns: NetNs,
    sandbox: Sandbox,
    dir: tempfile::TempDir,
}

const POD_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

async fn sandbox(suffix: &str, hostname: &str) -> TestSandbox {
    let name = format!("frt-{}-{suffix}", std::process::id());
    let _ = netns::delete(&name);
    netns::create(&name).unwrap();
    let guard = NsGuard(name.clone());
    let ns = NetNs::open_named(&name).unwrap();
    let netlink = Netlink::connect_in(&ns).await.unwrap();
    netlink.set_up("lo").await.unwrap();
    let lo = netlink.require_link("lo").await.unwrap();
    netlink.add_address(lo.index, POD_IP, 32).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        format!("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n{POD_IP}\t{hostname}\n"),
    )
    .unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 10.96.0.10\nsearch default.svc.cluster.local\n",
    )
    .unwrap();
    TestSandbox {
        _ns: guard,
        netns: ns,
        sandbox: Sandbox {
            netns: Some(netns::named_path(&name).unwrap()),
            hostname: hostname.to_string(),
            hosts_file: hosts,
            resolv_conf: resolv,
        },
        dir,
    }
}

/// Starts a container without stdin, as most are.
fn spawn_container(exe: &Path, spec: &ContainerSpec) -> std::io::Result<Process> {
    Process::spawn(exe, spec, false)
}

impl TestSandbox {
    fn spec(&self, program: Program, env: &[(&str, &str)], dir: Option<&Path>) -> ContainerSpec {
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.push(("PATH".into(), DEFAULT_PATH.into()));
        ContainerSpec {
            sandbox: self.sandbox.clone(),
            program,
            env,
            working_dir: dir.map(Path::to_path_buf),
            log_path: self.log(),
            join_pid: None,
            tty: false,
            mounts: Vec::new(),
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("logs/container.log")
    }

    /// Runs `f` (blocking socket code) inside the sandbox's netns.
    fn inside<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.netns.run(f).unwrap()
    }

    async fn exec(&self, argv: &[&str], timeout: Duration) -> ferry_node::runtime::ExecOutput {
        let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
        exec_in(
            Path::new(FERRY),
            &self.sandbox,
            &argv,
            &[("PATH".into(), DEFAULT_PATH.into())],
            timeout,
        )
        .await
        .unwrap()
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns (status, head, body).
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect((POD_IP, port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nX-Test: yes\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, head.to_string(), body.to_string()))
}

/// Waits until a TCP port in the sandbox accepts connections.
fn wait_port(sb: &TestSandbox, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if sb.inside(|| TcpStream::connect((POD_IP, port)).is_ok()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "port {port} never opened; log:\n{}",
            std::fs::read_to_string(sb.log()).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn host_state() -> (String, String) {
    (
        std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
        nix::unistd::gethostname()
            .unwrap()
            .to_string_lossy()
            .into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtins_exec_env_signals_and_probes() {
    if !support::can_use_netns("builtins_exec_env_signals_and_probes") {
        return;
    }
    let before = host_state();
    let sb = sandbox("a", "web-7f9c").await;

    // --- Web built-in: the page names the pod, 404 elsewhere, keep-alive.
    // Its document root is the pod's own directory, mounted where the
    // nginx image has it, as the node agent sets it up.
    let html = sb.dir.path().join("html");
    std::fs::create_dir_all(&html).unwrap();
    std::fs::write(
        html.join("index.html"),
        ferry_node::runtime::web_page("web-7f9c"),
    )
    .unwrap();
    let mut web_spec = sb.spec(
        Program::Builtin(Builtin::Web {
            pod_name: "web-7f9c".into(),
            ports: vec![80, 8088],
            root: ferry_node::runtime::NGINX_HTML.into(),
        }),
        &[],
        None,
    );
    web_spec
        .mounts
        .push((html.clone(), ferry_node::runtime::NGINX_HTML.into()));
    let web = spawn_container(Path::new(FERRY), &web_spec).unwrap();
    let mut web = Running(web);
    wait_port(&sb, 80);
    wait_port(&sb, 8088);
    let (status, head, body) = sb.inside(|| http_get(80, "/")).unwrap();
    assert_eq!(status, 200, "{head}");
    assert!(body.contains("<b>web-7f9c</b>"), "{body}");
    assert!(
        head.to_ascii_lowercase().contains("server: ferry-lab"),
        "{head}"
    );
    assert!(head.contains("text/html"), "{head}");
    let (status, _, body) = sb.inside(|| http_get(8088, "/index.html")).unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("web-7f9c"));
    let (status, _, _) = sb.inside(|| http_get(80, "/nope")).unwrap();
    assert_eq!(status, 404);
    // Two requests on one connection (keep-alive).
    let two = sb.inside(|| {
        let mut s = TcpStream::connect((POD_IP, 80)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /index.html HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        raw.matches("HTTP/1.1 200 OK").count()
    });
    assert_eq!(two, 2);

    // --- Probes from the netns (the agent's point of view).
    let timeout = Duration::from_secs(2);
    let ip = POD_IP.to_string();
    let (ok, missing, refused, tcp_ok, tcp_refused) = sb.inside(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            (
                probe_http("HTTP", &ip, 80, "/", &[], timeout).await,
                probe_http("HTTP", &ip, 80, "/healthz", &[], timeout).await,
                probe_http("HTTP", &ip, 81, "/healthz", &[], timeout).await,
                probe_tcp(&ip, 8088, timeout).await,
                probe_tcp(&ip, 81, timeout).await,
            )
        })
    });
    assert_eq!(ok, ProbeOutcome::Success);
    assert_eq!(
        missing,
        ProbeOutcome::Failure("HTTP probe failed with statuscode: 404".into())
    );
    assert_eq!(
        refused,
        ProbeOutcome::Failure(format!(
            "Get \"http://{ip}:81/healthz\": dial tcp {ip}:81: connect: connection refused"
        ))
    );
    assert_eq!(tcp_ok, ProbeOutcome::Success);
    assert_eq!(
        tcp_refused,
        ProbeOutcome::Failure(format!("dial tcp {ip}:81: connect: connection refused"))
    );

    // A built-in exits 0 promptly on SIGTERM.
    web.0.terminate();
    let exit = tokio::time::timeout(Duration::from_secs(5), web.0.wait())
        .await
        .expect("web built-in exits on SIGTERM");
    assert_eq!(exit.code, 0, "{exit:?}");
    assert_eq!(exit.signal, None);

    // --- Echo built-in (agnhost netexec).
    let echo = spawn_container(
        Path::new(FERRY),
        &sb.spec(
            Program::Builtin(Builtin::Echo {
                http_port: 8080,
                udp_port: 8081,
            }),
            &[],
            None,
        ),
    )
    .unwrap();
    let mut echo = Running(echo);
    wait_port(&sb, 8080);
    let (_, _, hostname) = sb.inside(|| http_get(8080, "/hostname")).unwrap();
    assert_eq!(hostname, "web-7f9c");
    let (_, _, msg) = sb
        .inside(|| http_get(8080, "/echo?msg=hello%20there"))
        .unwrap();
    assert_eq!(msg, "hello there");
    let (_, _, client) = sb.inside(|| http_get(8080, "/clientip")).unwrap();
    assert!(client.starts_with(&format!("{POD_IP}:")), "{client}");
    let (_, _, now) = sb.inside(|| http_get(8080, "/")).unwrap();
    assert!(now.starts_with("NOW: "), "{now}");
    let (status, _, _) = sb.inside(|| http_get(8080, "/healthz")).unwrap();
    assert_eq!(status, 200);
    let (_, _, header) = sb.inside(|| http_get(8080, "/header?key=X-Test")).unwrap();
    assert_eq!(header, "yes");
    let (udp_echo, udp_host) = sb.inside(|| {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 512];
        s.send_to(b"echo hi", (POD_IP, 8081)).unwrap();
        let n = s.recv(&mut buf).unwrap();
        let e = String::from_utf8_lossy(&buf[..n]).into_owned();
        s.send_to(b"hostname", (POD_IP, 8081)).unwrap();
        let n = s.recv(&mut buf).unwrap();
        (e, String::from_utf8_lossy(&buf[..n]).into_owned())
    });
    assert_eq!(udp_echo, "hi");
    assert_eq!(udp_host, "web-7f9c");
    // /exit?code=3 replies, then the process exits with 3.
    let (status, _, _) = sb.inside(|| http_get(8080, "/exit?code=3")).unwrap();
    assert!((200..300).contains(&status), "{status}");
    let exit = tokio::time::timeout(Duration::from_secs(5), echo.0.wait())
        .await
        .expect("echo exits after /exit");
    assert_eq!(exit.code, 3, "{exit:?}");

    // --- exec_in: the sandbox's hosts file and hostname.
    let out = sb
        .exec(&["cat", "/etc/hosts", "/etc/resolv.conf"], timeout)
        .await;
    assert_eq!(out.code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Kubernetes-managed hosts file"), "{text}");
    assert!(text.contains("nameserver 10.96.0.10"), "{text}");
    let out = sb.exec(&["hostname"], timeout).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "web-7f9c");
    // A `ferry` image runs the Ferry binary through /proc/self/exe, which
    // resolves inside the container's mount namespace.
    let out = sb
        .exec(&[ferry_node::runtime::SELF_EXE, "--version"], timeout)
        .await;
    assert_eq!(out.code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("ferry {}", env!("CARGO_PKG_VERSION"))
    );
    let out = sb.exec(&["no-such-command-xyz"], timeout).await;
    assert_eq!(out.code, 127);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no-such-command-xyz"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let start = Instant::now();
    let out = sb.exec(&["sleep", "30"], Duration::from_millis(500)).await;
    assert_eq!(out.code, -1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out"));
    assert!(start.elapsed() < Duration::from_secs(5));

    // --- env and workingDir reach a command; output goes to the log.
    let _ = std::fs::remove_file(sb.log());
    let mut shell = Running(
        spawn_container(
            Path::new(FERRY),
            &sb.spec(
                Program::Exec {
                    argv: vec![
                        "sh".into(),
                        "-c".into(),
                        "echo $FOO; pwd; echo $HOME".into(),
                    ],
                },
                &[("FOO", "bar baz")],
                Some(Path::new("/tmp")),
            ),
        )
        .unwrap(),
    );
    let exit = tokio::time::timeout(Duration::from_secs(5), shell.0.wait())
        .await
        .unwrap();
    assert_eq!(exit.code, 0);
    let log = std::fs::read_to_string(sb.log()).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.first(), Some(&"bar baz"), "{log}");
    assert_eq!(lines.get(1), Some(&"/tmp"), "{log}");
    // Only the given environment: the test's HOME does not leak in.
    assert_eq!(lines.get(2), Some(&""), "{log}");

    // --- SIGTERM to `sleep 100`: killed by signal 15, code 143.
    let mut sleep = Running(
        spawn_container(
            Path::new(FERRY),
            &sb.spec(
                Program::Exec {
                    argv: vec!["sleep".into(), "100".into()],
                },
                &[],
                None,
            ),
        )
        .unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    sleep.0.terminate();
    let exit = tokio::time::timeout(Duration::from_secs(5), sleep.0.wait())
        .await
        .unwrap();
    assert_eq!(exit.signal, Some(15), "{exit:?}");
    assert_eq!(exit.code, 143);
    // Signalling an ended process is harmless.
    sleep.0.terminate();
    sleep.0.kill();

    // Missing program: exit 127 and a clear message in the log.
    let _ = std::fs::remove_file(sb.log());
    let mut missing = Running(
        spawn_container(
            Path::new(FERRY),
            &sb.spec(
                Program::Exec {
                    argv: vec!["/does/not/exist".into()],
                },
                &[],
                None,
            ),
        )
        .unwrap(),
    );
    let exit = tokio::time::timeout(Duration::from_secs(5), missing.0.wait())
        .await
        .unwrap();
    assert_eq!(exit.code, 127);
    assert!(
        std::fs::read_to_string(sb.log())
            .unwrap()
            .contains("/does/not/exist")
    );

    // The host is untouched.
    assert_eq!(host_state(), before);
}

/// HTTP probe timeouts carry kubelet's message.
#[tokio::test]
async fn probe_timeout_message() {
    // A listener that accepts but never answers (loopback, no root needed).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let outcome = probe_http(
        "HTTP",
        "127.0.0.1",
        port,
        "/healthz",
        &[],
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(
        outcome,
        ProbeOutcome::Failure(format!(
            "Get \"http://127.0.0.1:{port}/healthz\": context deadline exceeded \
             (Client.Timeout exceeded while awaiting headers)"
        ))
    );
    drop(listener);
}
