//! The lab runtime: runs a Pod's containers as host processes inside the
//! pod's network namespace, with a UTS namespace of their own (hostname =
//! pod name) and a mount namespace in which the pod's own `/etc/hosts` and
//! `/etc/resolv.conf` are bind-mounted over the host's.
//!
//! A container process is started through `ferry lab-run` (see
//! [`lab_run_main`]): a short-lived, single-threaded step that enters the
//! namespaces and then `exec`s the command, or runs a built-in program
//! (images without a command: nginx/httpd → [`Builtin::Web`],
//! `ferry/echo` → [`Builtin::Echo`]).
//!
//! INTERFACE CONTRACT (agent ↔ runtime). The agent (crate root) only uses
//! what is declared here.

use std::path::PathBuf;
use std::time::Duration;

/// Where a container runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sandbox {
    /// Network namespace file (`/run/netns/<sandbox>`); `None`: the agent's
    /// own namespace (`hostNetwork: true`).
    pub netns: Option<PathBuf>,
    /// Hostname in the container's UTS namespace (the pod name; for
    /// hostNetwork pods the node name).
    pub hostname: String,
    /// File bind-mounted over `/etc/hosts`.
    pub hosts_file: PathBuf,
    /// File bind-mounted over `/etc/resolv.conf`.
    pub resolv_conf: PathBuf,
}

/// What a container runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Program {
    /// `command` + `args` (after `$(VAR)` expansion); argv[0] is looked up
    /// in PATH.
    Exec { argv: Vec<String> },
    /// A program built into `ferry`.
    Builtin(Builtin),
}

/// Built-in programs for images that have no command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Builtin {
    /// nginx/httpd: HTTP on every port, a page naming the pod.
    Web { pod_name: String, ports: Vec<u16> },
    /// `ferry/echo`, like agnhost netexec: HTTP `/hostname`, `/clientip`,
    /// `/echo?msg=`, `/healthz`, `/shell`-less; UDP `hostname`, `echo <msg>`,
    /// `clientip`.
    Echo { http_port: u16, udp_port: u16 },
}

/// An image the runtime cannot run (no command and no built-in program).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported {
    /// Container status `waiting.reason`.
    pub reason: String,
    /// Container status `waiting.message`.
    pub message: String,
}

/// Everything needed to start one container process.
#[derive(Clone, Debug)]
pub struct ContainerSpec {
    pub sandbox: Sandbox,
    pub program: Program,
    /// Final environment (already resolved and expanded).
    pub env: Vec<(String, String)>,
    /// `workingDir`; `None`: `/`.
    pub working_dir: Option<PathBuf>,
    /// stdout and stderr are appended here (kubectl logs reads it).
    pub log_path: PathBuf,
}

/// How a container process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    /// Exit code; 128 + signal number when killed by a signal.
    pub code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
}

/// Result of one probe attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    Success,
    /// Failure with kubelet-style message (e.g. `HTTP probe failed with
    /// statuscode: 500`, `dial tcp 10.244.1.5:81: connect: connection refused`).
    Failure(String),
}

/// Output of a command run in a sandbox ([`exec_in`]).
#[derive(Clone, Debug)]
pub struct ExecOutput {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Maps a container to what the runtime runs: its `command`/`args` with
/// `$(VAR)` expanded against `env` (Kubernetes rules: `$$` escapes,
/// unknown references stay as written), else a built-in program for the
/// image, else [`Unsupported`]. `args` without `command` on a built-in image
/// are the built-in's arguments (e.g. `netexec --http-port=8080`).
pub fn program_for(
    container: &k8s_openapi::api::core::v1::Container,
    pod_name: &str,
    env: &[(String, String)],
) -> Result<Program, Unsupported> {
    let _ = (container, pod_name, env);
    unimplemented!("runtime::program_for")
}

/// The container's environment: `env` entries in order (value, or
/// `valueFrom.fieldRef` for metadata.name/namespace/uid/labels['k']/
/// annotations['k'], spec.nodeName, spec.serviceAccountName, status.podIP,
/// status.podIPs, status.hostIP, status.hostIPs), each value `$(VAR)`-expanded
/// against the entries before it; plus `HOSTNAME` and a default `PATH`.
/// `configMapKeyRef`/`secretKeyRef`/`resourceFieldRef` are resolved by the
/// caller and passed in `resolved` (by env var name).
pub fn container_env(
    pod: &k8s_openapi::api::core::v1::Pod,
    container: &k8s_openapi::api::core::v1::Container,
    pod_ip: Option<&str>,
    host_ip: Option<&str>,
    resolved: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, String> {
    let _ = (pod, container, pod_ip, host_ip, resolved);
    unimplemented!("runtime::container_env")
}

/// A running container process (its own process group).
#[derive(Debug)]
pub struct Process {
    _private: (),
}

impl Process {
    /// Starts the container through `ferry lab-run` (`ferry_exe` is the
    /// path of the ferry binary).
    pub fn spawn(ferry_exe: &std::path::Path, spec: &ContainerSpec) -> std::io::Result<Process> {
        let _ = (ferry_exe, spec);
        unimplemented!("runtime::Process::spawn")
    }

    /// Process id (the process-group id too).
    pub fn pid(&self) -> u32 {
        unimplemented!("runtime::Process::pid")
    }

    /// Sends SIGTERM to the process group.
    pub fn terminate(&self) {
        unimplemented!("runtime::Process::terminate")
    }

    /// Sends SIGKILL to the process group.
    pub fn kill(&self) {
        unimplemented!("runtime::Process::kill")
    }

    /// Waits for the process to end (cancel-safe).
    pub async fn wait(&mut self) -> Exit {
        unimplemented!("runtime::Process::wait")
    }
}

/// Runs `argv` inside the sandbox (same namespaces and environment rules as
/// a container), for exec probes and `kubectl exec`; killed at `timeout`
/// (then `code` is -1 and stderr says so).
pub async fn exec_in(
    ferry_exe: &std::path::Path,
    sandbox: &Sandbox,
    argv: &[String],
    env: &[(String, String)],
    timeout: Duration,
) -> std::io::Result<ExecOutput> {
    let _ = (ferry_exe, sandbox, argv, env, timeout);
    unimplemented!("runtime::exec_in")
}

/// One httpGet probe attempt against `host:port` (from the agent's
/// namespace). 200–399 is success, as kubelet; redirects are not followed
/// off-host.
pub async fn probe_http(
    scheme: &str,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> ProbeOutcome {
    let _ = (scheme, host, port, path, headers, timeout);
    unimplemented!("runtime::probe_http")
}

/// One tcpSocket probe attempt: success when a connection is accepted.
pub async fn probe_tcp(host: &str, port: u16, timeout: Duration) -> ProbeOutcome {
    let _ = (host, port, timeout);
    unimplemented!("runtime::probe_tcp")
}

/// Entry point of the hidden `ferry lab-run` subcommand. Called from
/// `main` before any thread is started (`setns`/`unshare` need a
/// single-threaded process). Never returns on success (exec), or runs the
/// built-in program until killed; returns an exit code on failure.
pub fn lab_run_main(args: Vec<std::ffi::OsString>) -> i32 {
    let _ = args;
    unimplemented!("runtime::lab_run_main")
}
