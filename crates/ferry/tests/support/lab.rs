//! `ferry up` as a test fixture: the lab as a child process, real kubectl
//! against it, and helpers to look inside pod and node namespaces. The lab
//! uses fixed names (ferry0, lab-node-*, 127.0.0.1:6443), so every lab test
//! holds a file lock that keeps the others (and other lab users) out.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// A running `ferry up`; `ferry down` on drop.
pub struct Lab {
    pub child: Option<Child>,
    pub dir: PathBuf,
    output: std::sync::Arc<std::sync::Mutex<String>>,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl Lab {
    pub fn up(dir: &Path, nodes: usize) -> Lab {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/run/ferry-lab-test.lock")
            .unwrap();
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .unwrap();
        // Tests never send DNS queries off this machine: the cluster DNS
        // forwards nothing.
        let mut child = Command::new(FERRY)
            .args([
                "up",
                "--nodes",
                &nodes.to_string(),
                "--dns-upstream",
                "none",
            ])
            .arg("--data-dir")
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let out = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                out.lock().unwrap().push_str(&format!("{line}\n"));
                // The last line of the ready message (the whole message,
                // with the export line, is in `output` by then).
                if line.starts_with("Logs in ") {
                    let _ = tx.send(());
                }
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let err = output.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            err.lock().unwrap().push_str(&s);
        });
        let lab = Lab {
            child: Some(child),
            dir: dir.to_path_buf(),
            output,
            _lock: lock,
        };
        if rx.recv_timeout(Duration::from_secs(120)).is_err() {
            // The agents' own logs say why (the data dir goes with the test).
            let mut logs = String::new();
            if let Ok(entries) = std::fs::read_dir(dir.join("logs")) {
                for e in entries.flatten() {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(15).collect();
                    logs.push_str(&format!("--- {}\n", e.path().display()));
                    for l in tail.iter().rev() {
                        logs.push_str(l);
                        logs.push('\n');
                    }
                }
            }
            panic!("ferry up did not get ready:\n{}\n{logs}", lab.output());
        }
        lab
    }

    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", self.dir.join("kubeconfig"))
            .output()
            .unwrap()
    }

    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn apply(&self, manifest: &str) {
        let mut child = Command::new("kubectl")
            .args(["apply", "-f", "-"])
            .env("KUBECONFIG", self.dir.join("kubeconfig"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(manifest.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `ferry down`, checking it succeeds and `ferry up` exits.
    pub fn down(&mut self) {
        // `ferry down` waits for `ferry up` to be gone; as its parent we
        // must reap it meanwhile, or it stays a zombie that looks alive.
        let down = Command::new(FERRY)
            .args(["down", "--data-dir"])
            .arg(&self.dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let up = self.child.take().map(|mut child| child.wait().unwrap());
        let out = down.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ferry down: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(status) = up {
            assert!(
                status.success(),
                "ferry up exited with {status}:\n{}",
                self.output()
            );
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = Command::new(FERRY)
                .args(["down", "--data-dir"])
                .arg(&self.dir)
                .output();
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Whether `tool` runs. Under CI it must: missing, the test fails instead
/// of skipping.
pub fn tool_available(tool: &str, arg: &str) -> bool {
    let found = Command::new(tool)
        .arg(arg)
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} is required under CI=true (scripts/test installs it)"
        );
        eprintln!("skipping: {tool} is not on PATH");
    }
    found
}

/// Polls `f` every 100 ms until it returns Ok, for at most `secs`; the
/// value and how long it took. The panic shows the last error.
pub fn poll<T>(secs: u64, what: &str, mut f: impl FnMut() -> Result<T, String>) -> (T, Duration) {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return (v, start.elapsed()),
            Err(e) => assert!(
                start.elapsed() < Duration::from_secs(secs),
                "timed out after {secs}s waiting for {what}; last: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Retries `f` every 250 ms until it returns Some, for at most `secs`.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

pub fn sh(args: &[&str]) -> Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap()
}

pub fn sh_ok(args: &[&str]) -> String {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `curl` from inside a pod's network namespace.
pub fn curl_from(sandbox: &str, url: &str) -> String {
    sh_ok(&["ip", "netns", "exec", sandbox, "curl", "-s", "-m", "5", url])
}

pub struct PodInfo {
    pub name: String,
    pub ip: String,
    pub node: String,
}

impl PodInfo {
    pub fn sandbox(&self) -> String {
        format!("{}-default-{}", self.node, self.name)
    }
}

pub fn pods(lab: &Lab, selector: &str) -> Vec<PodInfo> {
    let out = lab.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        selector,
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.spec.nodeName}{\"\\n\"}{end}",
    ]);
    out.lines()
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

pub fn in_cidr(ip: &str, cidr: &str) -> bool {
    let (net, len) = cidr.split_once('/').unwrap();
    let ip: std::net::Ipv4Addr = ip.parse().unwrap();
    let net: std::net::Ipv4Addr = net.parse().unwrap();
    let len: u32 = len.parse().unwrap();
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

/// The pid of agent `agent` (`node`, `overlay`, `proxy`) for `node` in
/// the lab at `dir`, if running.
pub fn agent_pid_of(dir: &Path, agent: &str, node: &str) -> Option<i32> {
    let marker = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_string_lossy().parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            (args.get(1).map(String::as_str) == Some(agent)
                && args.iter().any(|a| a == node)
                && args.iter().any(|a| a.contains(&marker)))
            .then_some(pid)
        })
}

/// A command running on a pseudo-terminal, as in a user's shell: kubectl
/// sees a TTY on stdin and stdout. Output is collected as it comes.
pub struct OnTerminal {
    child: Child,
    master: std::fs::File,
    output: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl OnTerminal {
    pub fn spawn(kubeconfig: &std::path::Path, args: &[&str]) -> OnTerminal {
        // The agent's own pty code: a terminal of 132x40, which the remote
        // side must see.
        let (master, slave) = ferry_node::runtime::pty::open().unwrap();
        ferry_node::runtime::pty::resize(&master, 132, 40).unwrap();
        let child = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .spawn()
            .unwrap();
        let master = std::fs::File::from(master);
        let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        OnTerminal {
            child,
            master,
            output,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    pub fn wait_for(&self, token: &str, secs: u64) -> String {
        poll(secs, &format!("{token:?} on the terminal"), || {
            let t = self.text();
            if t.contains(token) { Ok(t) } else { Err(t) }
        })
        .0
    }

    pub fn type_line(&mut self, line: &str) {
        self.master.write_all(line.as_bytes()).unwrap();
        self.master.write_all(b"\r").unwrap();
    }

    pub fn exit_code(&mut self, secs: u64) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "kubectl did not end; terminal: {}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for OnTerminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
