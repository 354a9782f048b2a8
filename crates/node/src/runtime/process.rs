//! Container processes: `ferry lab-run` children, each in its own process
//! group so signals reach everything a shell command started.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
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
    console: Option<Console>,
    /// Started on a terminal, in a session of its own.
    tty: bool,
}

/// The stdin of a container started with `stdin: true`, and its terminal
/// with `tty: true`: what `kubectl attach` writes to and resizes.
#[derive(Clone, Debug)]
pub struct Console {
    /// To the thread that owns stdin's write end (the pty master, or a
    /// pipe); `None` closes it. Bounded: a container that does not read
    /// its stdin holds the writer back, never the agent.
    input: tokio::sync::mpsc::Sender<Option<Vec<u8>>>,
    /// The pty master, for resizes.
    terminal: Option<Arc<OwnedFd>>,
}

impl Console {
    fn new(mut file: std::fs::File, terminal: Option<Arc<OwnedFd>>) -> Console {
        let (input, mut rx) = tokio::sync::mpsc::channel::<Option<Vec<u8>>>(64);
        std::thread::spawn(move || {
            while let Some(Some(chunk)) = rx.blocking_recv() {
                if file.write_all(&chunk).is_err() {
                    break;
                }
            }
            // Closed, or the container is gone: the write end goes now.
        });
        Console { input, terminal }
    }

    /// Writes to the container's stdin; waits while it is not reading.
    /// Fails once stdin is closed.
    pub async fn write(&self, data: Vec<u8>) -> std::io::Result<()> {
        self.input.send(Some(data)).await.map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the container's stdin is closed",
            )
        })
    }

    /// Closes stdin (`stdinOnce` after the first attach ends). A terminal
    /// stays open: closing its master would hang up the container.
    pub fn close_input(&self) {
        if self.terminal.is_none() {
            let _ = self.input.try_send(None);
        }
    }

    /// Whether stdin is a terminal.
    pub fn is_tty(&self) -> bool {
        self.terminal.is_some()
    }

    /// Sets the terminal size (no-op without a terminal).
    pub fn resize(&self, columns: u16, rows: u16) {
        if let Some(t) = &self.terminal {
            let _ = super::pty::resize(t.as_ref(), columns, rows);
        }
    }
}

/// Kills process group `pid` and every process of session `pid`: the
/// background jobs of a terminal session run in groups of their own, and
/// would keep the terminal (and whoever reads it) alive.
pub fn kill_session(pid: u32) {
    let Ok(leader) = i32::try_from(pid) else {
        return;
    };
    if leader <= 1 {
        return;
    }
    let _ = killpg(Pid::from_raw(leader), Signal::SIGKILL);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(other) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // After the command in parentheses (which may hold anything):
        // state, ppid, pgrp, session, ...
        let session = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(3))
            .and_then(|s| s.parse::<i32>().ok());
        if session == Some(leader) {
            let _ = nix::sys::signal::kill(Pid::from_raw(other), Signal::SIGKILL);
        }
    }
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

pub(crate) fn lab_run_command(ferry_exe: &Path, spec: &ContainerSpec) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(ferry_exe);
    cmd.arg("lab-run")
        .arg(super::lab_run::encode(spec))
        .env_clear()
        .stdin(Stdio::null());
    // With a terminal, `lab-run` makes a session (and so a process group)
    // of its own; setsid would fail in a group leader.
    if !spec.tty {
        cmd.process_group(0);
    }
    cmd
}

/// Copies what the program writes to its terminal into the log file, so
/// `kubectl logs` shows a TTY container's output too; ends when the last
/// process holding the terminal exits.
fn pump_terminal(master: std::fs::File, mut log: std::fs::File) {
    std::thread::spawn(move || {
        let mut master = master;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match master.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if log.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
    });
}

impl Process {
    /// Starts the container through `ferry lab-run`; stdout and stderr are
    /// appended to the spec's log file. With `stdin`, the container reads
    /// a pipe (or, with `spec.tty`, a terminal) that [`Process::console`]
    /// writes to.
    pub fn spawn(ferry_exe: &Path, spec: &ContainerSpec, stdin: bool) -> std::io::Result<Process> {
        if let Some(dir) = spec.log_path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_path)?;
        let mut cmd = lab_run_command(ferry_exe, spec);
        let console = if spec.tty {
            let (master, slave) = super::pty::open()?;
            cmd.stdin(Stdio::from(slave.try_clone()?))
                .stdout(Stdio::from(slave.try_clone()?))
                .stderr(Stdio::from(slave));
            let reader = std::fs::File::from(master.try_clone()?);
            let writer = std::fs::File::from(master.try_clone()?);
            pump_terminal(reader, log);
            Some(Console::new(writer, Some(Arc::new(master))))
        } else {
            cmd.stdout(log.try_clone()?).stderr(log);
            if stdin {
                let (reader, writer) = std::io::pipe()?;
                cmd.stdin(Stdio::from(reader));
                Some(Console::new(
                    std::fs::File::from(OwnedFd::from(writer)),
                    None,
                ))
            } else {
                None
            }
        };
        let child = cmd.spawn()?;
        // The parent's copies of the terminal's slave side and the pipe's
        // read end went with `cmd`: the pump sees the end when the
        // container's processes are gone.
        drop(cmd);
        let pid = child.id().unwrap_or_default();
        Ok(Process {
            child,
            pid,
            exit: None,
            console,
            tty: spec.tty,
        })
    }

    /// The container's stdin, when it has one (`stdin: true`).
    pub fn console(&self) -> Option<Console> {
        self.console.clone()
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

    /// Sends SIGKILL to the process group (with a terminal, to its whole
    /// session).
    pub fn kill(&self) {
        if self.tty && self.exit.is_none() {
            kill_session(self.pid);
        }
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
        join_pid: None,
        tty: false,
        mounts: Vec::new(),
    };
    let child = lab_run_command(ferry_exe, &spec)
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
