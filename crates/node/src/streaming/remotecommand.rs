//! `exec` and `attach` over the WebSocket remote-command protocol
//! (`v5.channel.k8s.io`, and `v4` for older clients): every binary message
//! starts with its channel — 0 stdin, 1 stdout, 2 stderr, 3 the final
//! `Status`, 4 terminal resize (`{"Width":80,"Height":24}`); in v5,
//! `[255, channel]` closes a channel (stdin EOF).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::logs::LogOptions;
use super::websocket::{self, Message};
use super::{Registry, RunningEntry};
use crate::runtime::{self, ContainerSpec, Program, Sandbox};

pub const V5: &str = "v5.channel.k8s.io";
pub const V4: &str = "v4.channel.k8s.io";

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// How long output may still drain after the process ended (a background
/// child can hold the terminal open).
const DRAIN: Duration = Duration::from_secs(2);

/// The protocol to answer with, from the client's offer.
pub fn choose_protocol(offered: &[String]) -> Option<&'static str> {
    [V5, V4]
        .into_iter()
        .find(|p| offered.iter().any(|o| o == p))
}

/// Which streams a request asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Streams {
    pub fn parse(query: &[(String, String)]) -> Streams {
        let flag = |name: &str| {
            query
                .iter()
                .any(|(k, v)| k == name && matches!(v.as_str(), "true" | "1"))
        };
        let tty = flag("tty");
        Streams {
            stdin: flag("stdin"),
            stdout: flag("stdout"),
            // With a terminal, stderr is the terminal too.
            stderr: flag("stderr") && !tty,
            tty,
        }
    }
}

/// The `command` parameters, in order.
pub fn command(query: &[(String, String)]) -> Vec<String> {
    query
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect()
}

/// What the client sent, decoded.
enum Input {
    Stdin(Vec<u8>),
    StdinEnd,
    Resize(u16, u16),
    /// The client closed the connection (or broke the protocol).
    Gone,
}

enum Out {
    Frame(Vec<u8>),
    /// Send the final close frame and stop.
    Close,
}

/// Frames waiting for the client, and input waiting for the program: both
/// bounded, so a fast producer waits for a slow consumer (never the
/// agent's memory).
const QUEUE: usize = 64;

/// The two halves of a session: frames out, decoded input in.
struct Session {
    out: mpsc::Sender<Out>,
    input: mpsc::Receiver<Input>,
    writer: tokio::task::JoinHandle<()>,
    reader: tokio::task::JoinHandle<()>,
}

impl Session {
    fn start<IO>(io: IO) -> Session
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, mut wr) = tokio::io::split(io);
        let mut rd = websocket::Reader::new(rd);
        let (out, mut out_rx) = mpsc::channel::<Out>(QUEUE);
        let (in_tx, input) = mpsc::channel(QUEUE);
        let writer = tokio::spawn(async move {
            while let Some(o) = out_rx.recv().await {
                let (bytes, last) = match o {
                    Out::Frame(f) => (f, false),
                    Out::Close => (websocket::close_frame(1000), true),
                };
                if wr.write_all(&bytes).await.is_err() {
                    return;
                }
                if last {
                    let _ = wr.flush().await;
                    let _ = wr.shutdown().await;
                    return;
                }
            }
        });
        let pong = out.clone();
        let reader = tokio::spawn(async move {
            loop {
                let msg = match rd.next().await {
                    Ok(m) => m,
                    Err(_) => {
                        let _ = in_tx.send(Input::Gone).await;
                        return;
                    }
                };
                let input = match msg {
                    Message::Ping(p) => {
                        let frame = websocket::frame(websocket::OP_PONG, &p);
                        if pong.send(Out::Frame(frame)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Message::Pong | Message::Text(_) => continue,
                    Message::Close => {
                        let _ = in_tx.send(Input::Gone).await;
                        return;
                    }
                    Message::Binary(data) => match data.split_first() {
                        Some((&STDIN, rest)) => Input::Stdin(rest.to_vec()),
                        Some((&RESIZE, rest)) => match parse_resize(rest) {
                            Some((w, h)) => Input::Resize(w, h),
                            None => continue,
                        },
                        Some((&CLOSE, [STDIN])) => Input::StdinEnd,
                        _ => continue,
                    },
                };
                if in_tx.send(input).await.is_err() {
                    return;
                }
            }
        });
        Session {
            out,
            input,
            writer,
            reader,
        }
    }

    async fn send(&self, channel: u8, data: &[u8]) {
        let _ = self
            .out
            .send(Out::Frame(websocket::channel_message(channel, data)))
            .await;
    }

    /// Sends the final status and closes the connection.
    async fn finish(self, status: serde_json::Value) {
        self.send(ERROR, status.to_string().as_bytes()).await;
        let _ = self.out.send(Out::Close).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.writer).await;
        self.reader.abort();
    }

    /// The client went away: stop both halves.
    fn abort(self) {
        self.writer.abort();
        self.reader.abort();
    }
}

fn parse_resize(data: &[u8]) -> Option<(u16, u16)> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Size {
        width: u16,
        height: u16,
    }
    let s: Size = serde_json::from_slice(data).ok()?;
    Some((s.width, s.height))
}

fn success() -> serde_json::Value {
    serde_json::json!({"metadata": {}, "status": "Success"})
}

/// The kubelet's status for a command that ended with `code`.
pub fn exit_status(argv: &[String], code: i32) -> serde_json::Value {
    if code == 0 {
        return success();
    }
    serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command {argv:?}, exit code {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

fn failure(message: String) -> serde_json::Value {
    serde_json::json!({
        "metadata": {}, "status": "Failure", "message": message,
        "reason": "InternalError", "code": 500,
    })
}

/// Reads `file` (a terminal) on a thread into `channel` until it ends.
fn pump_file(
    mut file: std::fs::File,
    out: mpsc::Sender<Out>,
    channel: u8,
) -> tokio::sync::oneshot::Receiver<()> {
    let (done_tx, done) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match file.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let frame = websocket::channel_message(channel, &buf[..n]);
                    if out.blocking_send(Out::Frame(frame)).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = done_tx.send(());
    });
    done
}

/// Writes stdin chunks to `file` on a thread (a terminal write can block
/// while the program is not reading); bounded, like the rest.
fn stdin_writer(mut file: std::fs::File) -> mpsc::Sender<Vec<u8>> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUE);
    std::thread::spawn(move || {
        while let Some(chunk) = rx.blocking_recv() {
            if file.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    tx
}

async fn pump_async<R: AsyncRead + Unpin>(mut r: R, out: mpsc::Sender<Out>, channel: u8) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let frame = websocket::channel_message(channel, &buf[..n]);
                if out.send(Out::Frame(frame)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// An exec session's process group (and, with a terminal, its session),
/// registered with the container's run so that it ends with it.
struct ExecGuard {
    pid: Option<u32>,
    execs: Arc<std::sync::Mutex<std::collections::HashSet<u32>>>,
}

impl ExecGuard {
    /// Forgets the session; with `kill`, kills what is left of it first.
    fn end(&mut self, kill: bool) {
        if let Some(pid) = self.pid.take() {
            if kill {
                runtime::kill_session(pid);
            }
            self.execs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&pid);
        }
    }
}

impl Drop for ExecGuard {
    fn drop(&mut self) {
        self.end(false);
    }
}

/// Runs `argv` in a running container (its network, UTS and mount
/// namespaces, its environment and working directory) and streams it
/// over the upgraded connection until the command ends.
pub async fn exec<IO>(io: IO, exe: PathBuf, run: RunningEntry, argv: Vec<String>, streams: Streams)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let mut session = Session::start(io);
    let spec = ContainerSpec {
        sandbox: Sandbox {
            netns: None,
            hostname: String::new(),
            hosts_file: PathBuf::new(),
            resolv_conf: PathBuf::new(),
        },
        program: Program::Exec { argv: argv.clone() },
        env: run.env.clone(),
        working_dir: run.working_dir.clone(),
        log_path: PathBuf::new(),
        join_pid: Some(run.pid),
        tty: streams.tty,
        mounts: Vec::new(),
    };
    let mut cmd = runtime::lab_run_command(&exe, &spec);
    cmd.kill_on_drop(true);
    let mut drains = Vec::new();
    let mut stdin_tx: Option<mpsc::Sender<Vec<u8>>> = None;
    let mut async_stdin = None;
    let mut terminal = None;
    let spawned = if streams.tty {
        (|| {
            let (master, slave) = runtime::pty::open()?;
            cmd.stdin(Stdio::from(slave.try_clone()?))
                .stdout(Stdio::from(slave.try_clone()?))
                .stderr(Stdio::from(slave));
            let reader = std::fs::File::from(master.try_clone()?);
            let writer = std::fs::File::from(master.try_clone()?);
            let child = cmd.spawn()?;
            drains.push(pump_file(reader, session.out.clone(), STDOUT));
            if streams.stdin {
                stdin_tx = Some(stdin_writer(writer));
            }
            terminal = Some(master);
            Ok::<_, std::io::Error>(child)
        })()
    } else {
        let pipe = |wanted: bool| {
            if wanted {
                Stdio::piped()
            } else {
                Stdio::null()
            }
        };
        cmd.stdin(pipe(streams.stdin))
            .stdout(pipe(streams.stdout))
            .stderr(pipe(streams.stderr));
        cmd.spawn().map(|mut child| {
            let outputs: [(Option<Box<dyn AsyncRead + Send + Unpin>>, u8); 2] = [
                (child.stdout.take().map(|p| Box::new(p) as _), STDOUT),
                (child.stderr.take().map(|p| Box::new(p) as _), STDERR),
            ];
            for (pipe, channel) in outputs {
                if let Some(pipe) = pipe {
                    let (done_tx, done) = tokio::sync::oneshot::channel();
                    let out = session.out.clone();
                    tokio::spawn(async move {
                        pump_async(pipe, out, channel).await;
                        let _ = done_tx.send(());
                    });
                    drains.push(done);
                }
            }
            async_stdin = child.stdin.take();
            child
        })
    };
    // The parent's copies of the terminal's slave side went with `cmd`.
    drop(cmd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            session
                .finish(failure(format!("starting {argv:?} in the container: {e}")))
                .await;
            return;
        }
    };
    let mut guard = ExecGuard {
        pid: child.id(),
        execs: run.execs.clone(),
    };
    if let Some(pid) = guard.pid {
        run.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pid);
    }
    // Stdin for the pipe case goes through a task (ChildStdin is async).
    let (pipe_tx, mut pipe_rx) = mpsc::channel::<Vec<u8>>(QUEUE);
    let mut pipe_tx = Some(pipe_tx);
    if let Some(mut stdin) = async_stdin {
        tokio::spawn(async move {
            while let Some(chunk) = pipe_rx.recv().await {
                if stdin.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            // Sender dropped (stdin closed): EOF for the program.
        });
    }
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            input = session.input.recv() => match input {
                Some(Input::Stdin(data)) => {
                    // Waits while the program is not reading; its exit is
                    // seen as soon as the chunk is taken or refused.
                    if let Some(tx) = &stdin_tx {
                        let _ = tx.send(data).await;
                    } else if let Some(tx) = &pipe_tx {
                        let _ = tx.send(data).await;
                    }
                }
                Some(Input::StdinEnd) => {
                    if let Some(tx) = &stdin_tx {
                        // A terminal has no half-close: ^D is end of input.
                        let _ = tx.send(vec![0x04]).await;
                    } else {
                        pipe_tx = None;
                    }
                }
                Some(Input::Resize(w, h)) => {
                    if let Some(t) = &terminal {
                        let _ = runtime::pty::resize(t, w, h);
                    }
                }
                Some(Input::Gone) | None => {
                    let _ = child.start_kill();
                    guard.end(true);
                    let _ = child.wait().await;
                    session.abort();
                    return;
                }
            }
        }
    };
    drop(stdin_tx);
    drop(pipe_tx);
    for d in drains {
        let _ = tokio::time::timeout(DRAIN, d).await;
    }
    // A terminal session ends with its command, as when a terminal hangs
    // up: its background jobs would hold the terminal open. Without one,
    // what the command started in the background keeps running, as after
    // a runtime's exec (the pod's teardown ends it).
    guard.end(streams.tty);
    drop(terminal);
    let code = match status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
        }
        Err(e) => {
            session
                .finish(failure(format!("waiting for {argv:?}: {e}")))
                .await;
            return;
        }
    };
    session.finish(exit_status(&argv, code)).await;
}

/// Attaches to a running container: its output from now on (read from
/// its log, where the runtime writes it), its stdin and terminal size.
#[allow(clippy::too_many_arguments)]
pub async fn attach<IO>(
    io: IO,
    registry: Arc<Registry>,
    namespace: String,
    pod: String,
    container: String,
    run: RunningEntry,
    stdin_once: bool,
    streams: Streams,
) where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let mut session = Session::start(io);
    // Output is the container's log, followed until the run ends: from now
    // on; but the first attach to a `stdinOnce` run (what `kubectl run -it`
    // makes) gets the run's output from its start: the container starts
    // before kubectl can attach, and a short command would otherwise have
    // printed everything already. Each run has its own log file.
    let first = stdin_once && !run.attached.swap(true, std::sync::atomic::Ordering::SeqCst);
    let follow = LogOptions {
        follow: true,
        tail_lines: if first { None } else { Some(0) },
        ..LogOptions::default()
    };
    let mut output = match super::logs::open(registry, &namespace, &pod, &container, follow) {
        Ok(rx) => rx,
        Err((_, message)) => {
            session.finish(failure(message)).await;
            return;
        }
    };
    let show = streams.stdout || streams.tty;
    let console = run.console.clone().filter(|_| streams.stdin || streams.tty);
    let ended = loop {
        tokio::select! {
            chunk = output.recv() => match chunk {
                Some(Ok(data)) => {
                    if show {
                        session.send(STDOUT, &data).await;
                    }
                }
                // The run ended (or its log cannot be read any more).
                Some(Err(_)) | None => break true,
            },
            input = session.input.recv() => match input {
                Some(Input::Stdin(data)) => {
                    if let Some(c) = &console {
                        let _ = c.write(data).await;
                    }
                }
                Some(Input::StdinEnd) => {
                    if stdin_once && let Some(c) = &console {
                        c.close_input();
                    }
                }
                Some(Input::Resize(w, h)) => {
                    if let Some(c) = &console {
                        c.resize(w, h);
                    }
                }
                Some(Input::Gone) | None => break false,
            }
        }
    };
    if stdin_once && let Some(c) = &console {
        c.close_input();
    }
    if ended {
        session.finish(success()).await;
    } else {
        session.abort();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn query_and_protocol() {
        let query = q(&[
            ("command", "sh"),
            ("command", "-c"),
            ("command", "echo hi"),
            ("stdin", "true"),
            ("stdout", "true"),
            ("stderr", "true"),
            ("tty", "true"),
        ]);
        assert_eq!(command(&query), vec!["sh", "-c", "echo hi"]);
        assert_eq!(
            Streams::parse(&query),
            Streams {
                stdin: true,
                stdout: true,
                stderr: false,
                tty: true
            }
        );
        assert_eq!(choose_protocol(&[V4.into(), V5.into()]), Some(V5));
        assert_eq!(choose_protocol(&["channel.k8s.io".into()]), None);
        assert_eq!(
            parse_resize(br#"{"Width":120,"Height":40}"#),
            Some((120, 40))
        );
        let failed = exit_status(&["sh".into()], 3);
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
        assert_eq!(exit_status(&[], 0)["status"], "Success");
    }
}
