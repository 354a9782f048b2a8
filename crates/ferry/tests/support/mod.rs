//! Shared harness for the end-to-end tests: runs `ferry apiserver` as a
//! real process in a temporary data directory, and drives it with the real
//! `kubectl` binary or with kube-rs.
#![allow(dead_code, clippy::unwrap_used)]

pub mod lab;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running `ferry apiserver` process.
pub struct Apiserver {
    child: Child,
    pub data_dir: PathBuf,
    pub port: u16,
    pub kubeconfig: PathBuf,
    /// Keeps the temporary directory alive (None when the caller owns it).
    _tmp: Option<tempfile::TempDir>,
}

/// A free loopback port (the kernel picks it; it is released at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Apiserver {
    /// Starts a server with a fresh data directory.
    pub fn start() -> Apiserver {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Apiserver {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut s = Self::start_in(&dir, free_port(), extra);
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server on `data_dir` and `port` (used to restart one).
    pub fn start_in(data_dir: &Path, port: u16, extra: &[&str]) -> Apiserver {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("apiserver")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--bind-address")
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ferry binary runs");
        // The server prints its address once it is ready to serve.
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("listening on") => break,
                Some(Ok(_)) => {}
                _ => panic!("ferry apiserver exited before it was ready"),
            }
            assert!(Instant::now() < deadline, "ferry apiserver did not start");
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Apiserver {
            child,
            data_dir: data_dir.to_path_buf(),
            port,
            kubeconfig: data_dir.join("kubeconfig"),
            _tmp: None,
        }
    }

    /// Runs kubectl against this server.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut cmd = Command::new("kubectl");
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            // Keep kubectl's discovery cache inside the test directory.
            .env("HOME", &self.data_dir)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl runs");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Runs kubectl and returns stdout, failing the test on a non-zero exit.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A kube-rs client for this server, from its kubeconfig.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// Kills the server with SIGKILL (no chance to flush anything).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Apiserver {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether kubectl is available. Under CI it must be: a missing kubectl
/// fails the test instead of skipping it.
pub fn kubectl_available() -> bool {
    let found = Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "kubectl is required under CI=true"
        );
        eprintln!("skipping: kubectl is not on PATH");
    }
    found
}

/// A running `ferry controllers` process.
pub struct Controllers {
    child: Child,
}

impl Controllers {
    /// Starts the controllers against `server` with extra flags.
    pub fn start(server: &Apiserver, extra: &[&str]) -> Controllers {
        let child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("controllers")
            .arg("--kubeconfig")
            .arg(&server.kubeconfig)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ferry binary runs");
        Controllers { child }
    }

    /// Kills the process with SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Controllers {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` every 50 ms until it returns Some, or panics after
/// `seconds` with `what`.
pub async fn eventually<T, F, Fut>(seconds: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether this process can create network namespaces (root). Outside CI a
/// test without it prints why and skips; under `CI=true` it fails.
pub fn can_use_netns(test: &str) -> bool {
    ferry_netlink::netns::usable_by_test(test)
}
