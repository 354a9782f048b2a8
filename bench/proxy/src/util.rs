//! Network namespaces, child commands and statistics.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

static PREFIX: OnceLock<String> = OnceLock::new();

/// Names of the namespaces this run creates start with `prefix` (default
/// `fbproxy-<pid>`), so a wrapper can remove what a signal left behind.
pub fn set_netns_prefix(prefix: String) {
    let _ = PREFIX.set(prefix);
}

/// A named network namespace (`ip netns`), deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// A fresh namespace; `tag` says what it is for.
    pub fn new(tag: &str) -> anyhow::Result<Netns> {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let prefix = PREFIX.get_or_init(|| format!("fbproxy-{}", std::process::id()));
        let name = format!("{prefix}-{n}-{tag}");
        run("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(ferry_netlink::netns::NETNS_RUN_DIR).join(&self.name)
    }

    pub fn open(&self) -> anyhow::Result<ferry_netlink::NetNs> {
        ferry_netlink::NetNs::open(self.path())
            .with_context(|| format!("opening network namespace {}", self.name))
    }

    /// `ip -n <ns> args...`
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all).map(drop)
    }

    /// Runs `program args [< stdin]` inside the namespace and returns how
    /// long it took, process start included (as a user would see it).
    pub fn time(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&Path>,
    ) -> anyhow::Result<Duration> {
        let input = match stdin {
            Some(path) => Stdio::from(
                File::open(path).with_context(|| format!("opening {}", path.display()))?,
            ),
            None => Stdio::null(),
        };
        let start = Instant::now();
        let output = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .stdin(input)
            .output()
            .with_context(|| format!("running {program}"))?;
        let took = start.elapsed();
        if !output.status.success() {
            bail!(
                "{program} {} in {}: {}",
                args.join(" "),
                self.name,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(took)
    }

    /// Runs `program args` inside the namespace and returns its stdout.
    pub fn output(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["netns", "exec", self.name.as_str(), program];
        all.extend_from_slice(args);
        run("ip", &all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs a command and returns its stdout; fails with its stderr.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Nearest-rank percentile (`p` in 0..=100) of `values`.
pub fn percentile(values: &[Duration], p: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn median(values: &[Duration]) -> Duration {
    percentile(values, 50.0)
}

pub fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// `a / b` as "12.3x".
pub fn ratio(a: Duration, b: Duration) -> String {
    format!("{:.1}x", a.as_secs_f64() / b.as_secs_f64().max(1e-9))
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unknown ({e})"))
}
