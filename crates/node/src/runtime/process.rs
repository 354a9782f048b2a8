//! Container processes: `ferry lab-run` children, each in its own process
//! group so signals reach everything a shell command started.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::{ContainerSpec, ExecOutput, Exit, Program, Sandbox};

/// A running container process (its own process group).
#[derive(Debug)]
pub struct Process {
    child: tokio::process::Child,
    pid: u32,
    exit: Option<Exit>,
}

fn to_exit(status: std::process::ExitStatus) -> Exit {
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit { code, signal: None },
        (None, Some(sig)) => Exit {
            code: 128 + sig,
            signal: Some(sig),
        },
        (None, None) => Exit {
            code: 128,
            signal: None,
        },
    }
}

fn command(ferry_exe: &Path, spec: &ContainerSpec) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(ferry_exe);
    cmd.arg("lab-run")
        .arg(super::lab_run::encode(spec))
        .env_clear()
        .stdin(Stdio::null())
        .process_group(0);
    cmd
}

impl Process {
    /// Starts the container through `ferry lab-run`; stdout and stderr are
    /// appended to the spec's log file.
    pub fn spawn(ferry_exe: &Path, spec: &ContainerSpec) -> std::io::Result<Process> {
        if let Some(dir) = spec.log_path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_path)?;
        let child = command(ferry_exe, spec)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let pid = child.id().unwrap_or_default();
        Ok(Process {
            child,
            pid,
            exit: None,
        })
    }

    /// Process id (the process-group id too).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn signal(&self, signal: Signal) {
        if self.exit.is_none()
            && let Ok(pid) = i32::try_from(self.pid)
        {
            let _ = killpg(Pid::from_raw(pid), signal);
        }
    }

    /// Sends SIGTERM to the process group.
    pub fn terminate(&self) {
        self.signal(Signal::SIGTERM);
    }

    /// Sends SIGKILL to the process group.
    pub fn kill(&self) {
        self.signal(Signal::SIGKILL);
    }

    /// Waits for the process to end (cancel-safe).
    pub async fn wait(&mut self) -> Exit {
        if let Some(exit) = self.exit {
            return exit;
        }
        let exit = match self.child.wait().await {
            Ok(status) => to_exit(status),
            Err(_) => Exit {
                code: 128,
                signal: None,
            },
        };
        self.exit = Some(exit);
        exit
    }
}

/// Runs `argv` inside the sandbox (same namespaces and environment rules
/// as a container), for exec probes and `kubectl exec`; killed at
/// `timeout`, then `code` is -1 and stderr says so.
pub async fn exec_in(
    ferry_exe: &Path,
    sandbox: &Sandbox,
    argv: &[String],
    env: &[(String, String)],
    timeout: Duration,
) -> std::io::Result<ExecOutput> {
    let spec = ContainerSpec {
        sandbox: sandbox.clone(),
        program: Program::Exec {
            argv: argv.to_vec(),
        },
        env: env.to_vec(),
        working_dir: None,
        log_path: std::path::PathBuf::new(),
    };
    let child = command(ferry_exe, &spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(out) => {
            let out = out?;
            Ok(ExecOutput {
                code: to_exit(out.status).code,
                stdout: out.stdout,
                stderr: out.stderr,
            })
        }
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            Ok(ExecOutput {
                code: -1,
                stdout: Vec::new(),
                stderr: format!("command timed out after {}s", timeout.as_secs_f64()).into_bytes(),
            })
        }
    }
}
