//! Container logs (`GET /containerLogs/<ns>/<pod>/<container>`): the
//! kubelet's query parameters `follow`, `previous`, `tailLines` and
//! `limitBytes`.

use std::io::SeekFrom;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::Registry;

/// How often a follow looks for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(50);
/// At most this much of a file is read to find the last lines.
const TAIL_WINDOW: u64 = 8 * 1024 * 1024;
/// Logs are sent in chunks of at most this size.
const CHUNK: usize = 64 * 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub tail_lines: Option<usize>,
    pub limit_bytes: Option<u64>,
}

impl LogOptions {
    /// From the query string (`follow=true&tailLines=10`).
    pub fn parse(query: &[(String, String)]) -> Result<LogOptions, String> {
        let mut o = LogOptions::default();
        for (k, v) in query {
            let flag = || matches!(v.as_str(), "true" | "1" | "");
            match k.as_str() {
                "follow" => o.follow = flag(),
                "previous" => o.previous = flag(),
                "tailLines" => {
                    let n: i64 = v
                        .parse()
                        .map_err(|_| format!("tailLines: invalid value {v:?}"))?;
                    // kubectl sends -1 for "all".
                    o.tail_lines = usize::try_from(n).ok();
                }
                "limitBytes" => {
                    let n: u64 =
                        v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                            format!("limitBytes: must be greater than 0, got {v:?}")
                        })?;
                    o.limit_bytes = Some(n);
                }
                _ => {}
            }
        }
        Ok(o)
    }
}

/// Where the last `lines` lines of `data` start.
fn tail_start(data: &[u8], lines: usize) -> usize {
    if lines == 0 {
        return data.len();
    }
    // A final newline ends the last line; it does not start another.
    let end = if data.last() == Some(&b'\n') {
        data.len() - 1
    } else {
        data.len()
    };
    let mut seen = 0;
    for (i, b) in data[..end].iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == lines {
                return i + 1;
            }
        }
    }
    0
}

/// The offset a read of the last `lines` lines starts at (from the last
/// 8 MiB of the file at most).
async fn tail_offset(path: &Path, lines: usize) -> std::io::Result<u64> {
    let mut f = tokio::fs::File::open(path).await?;
    let size = f.metadata().await?.len();
    if lines == 0 {
        // From the end: what is written from now on (attach).
        return Ok(size);
    }
    let from = size.saturating_sub(TAIL_WINDOW);
    f.seek(SeekFrom::Start(from)).await?;
    let mut data = Vec::new();
    f.read_to_end(&mut data).await?;
    Ok(from + tail_start(&data, lines) as u64)
}

/// A request that cannot be served: HTTP status and message.
pub type Refusal = (u16, String);

/// Streams one container's log into the returned channel in chunks; with
/// `follow`, until the run ends (or the reader goes away).
pub fn open(
    registry: Arc<Registry>,
    namespace: &str,
    pod: &str,
    container: &str,
    opts: LogOptions,
) -> Result<tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>, Refusal> {
    let entry = registry
        .pod(namespace, pod)
        .ok_or_else(|| (404, format!("pod {namespace}/{pod} is not on this node")))?;
    let waiting = || {
        (
            400,
            format!("container {container:?} in pod {pod:?} is waiting to start: no logs yet"),
        )
    };
    let state = entry.containers.get(container).ok_or_else(waiting)?;
    let path = if opts.previous {
        state.previous_log.clone().ok_or_else(|| {
            (
                400,
                format!("previous terminated container {container:?} in pod {pod:?} not found"),
            )
        })?
    } else {
        state.log.clone().ok_or_else(waiting)?
    };
    let generation = state.generation;
    // Only the current run can grow.
    let follow = opts.follow && !opts.previous && state.running.is_some();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let (ns, pod, container) = (
        namespace.to_string(),
        pod.to_string(),
        container.to_string(),
    );
    tokio::spawn(async move {
        let mut offset = match opts.tail_lines {
            // Not written yet: nothing to show.
            Some(n) => tail_offset(&path, n).await.unwrap_or_default(),
            None => 0,
        };
        let mut budget = opts.limit_bytes.unwrap_or(u64::MAX);
        let mut buf = vec![0u8; CHUNK];
        let mut file: Option<tokio::fs::File> = None;
        loop {
            let over =
                !follow || registry.run_state(&ns, &pod, &container) != Some((generation, true));
            // Everything up to the end of the file, a chunk at a time.
            loop {
                if budget == 0 {
                    return;
                }
                if file.is_none() {
                    match tokio::fs::File::open(&path).await {
                        Ok(mut f) => {
                            if f.seek(SeekFrom::Start(offset)).await.is_err() {
                                return;
                            }
                            file = Some(f);
                        }
                        Err(_) => break,
                    }
                }
                let Some(f) = file.as_mut() else { break };
                let want = usize::try_from(budget).unwrap_or(CHUNK).min(CHUNK);
                let n = match f.read(&mut buf[..want]).await {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                offset += n as u64;
                budget -= n as u64;
                if tx
                    .send(Ok(Bytes::copy_from_slice(&buf[..n])))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if over {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(FOLLOW_POLL) => {}
                () = tx.closed() => return,
            }
        }
    });
    Ok(rx)
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
    fn options_parse_like_the_kubelet() {
        let o = LogOptions::parse(&q(&[
            ("follow", "true"),
            ("tailLines", "3"),
            ("previous", "false"),
        ]))
        .unwrap();
        assert_eq!(
            o,
            LogOptions {
                follow: true,
                previous: false,
                tail_lines: Some(3),
                limit_bytes: None
            }
        );
        assert_eq!(
            LogOptions::parse(&q(&[("tailLines", "-1")]))
                .unwrap()
                .tail_lines,
            None
        );
        assert!(LogOptions::parse(&q(&[("tailLines", "x")])).is_err());
        assert!(LogOptions::parse(&q(&[("limitBytes", "0")])).is_err());
    }

    #[test]
    fn tail_counts_lines_from_the_end() {
        let data = b"a\nb\nc\n";
        assert_eq!(&data[tail_start(data, 2)..], b"b\nc\n");
        assert_eq!(&data[tail_start(data, 5)..], b"a\nb\nc\n");
        assert_eq!(&data[tail_start(data, 0)..], b"");
        let partial = b"a\nb\nc";
        assert_eq!(&partial[tail_start(partial, 1)..], b"c");
    }

    #[tokio::test]
    async fn follow_ends_when_the_run_ends() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Arc::new(Registry::default());
        registry.pod_ready("ns", "p", "u1", None, dir.path().to_path_buf());
        let log = super::super::log_path(dir.path(), "c", 1);
        registry.started(
            "ns",
            "p",
            "c",
            false,
            log.clone(),
            super::super::RunningEntry {
                pid: 1,
                env: Vec::new(),
                working_dir: None,
                console: None,
                attached: Default::default(),
                execs: Default::default(),
            },
        );
        std::fs::write(&log, "one\ntwo\n").unwrap();
        let opts = LogOptions {
            follow: true,
            tail_lines: Some(1),
            ..LogOptions::default()
        };
        let mut rx = open(registry.clone(), "ns", "p", "c", opts).unwrap();
        assert_eq!(rx.recv().await.unwrap().unwrap(), Bytes::from("two\n"));
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            f.write_all(b"three\n").unwrap();
        }
        assert_eq!(rx.recv().await.unwrap().unwrap(), Bytes::from("three\n"));
        registry.exited("ns", "p", "c", false);
        assert!(rx.recv().await.is_none(), "follow ends with the run");
        let err = open(
            registry,
            "ns",
            "p",
            "c",
            LogOptions {
                previous: true,
                ..LogOptions::default()
            },
        )
        .unwrap_err();
        assert_eq!(err.0, 400);
        assert!(err.1.contains("previous terminated container"), "{}", err.1);
    }

    async fn read_all(mut rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>) -> String {
        let mut out = Vec::new();
        while let Some(chunk) = rx.recv().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn previous_is_the_last_ended_run_as_on_a_kubelet() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Arc::new(Registry::default());
        registry.pod_ready("ns", "p", "u1", None, dir.path().to_path_buf());
        let run = || super::super::RunningEntry {
            pid: 1,
            env: Vec::new(),
            working_dir: None,
            console: None,
            attached: Default::default(),
            execs: Default::default(),
        };
        let previous = LogOptions {
            previous: true,
            ..LogOptions::default()
        };
        for n in 1..=3u64 {
            let log = super::super::log_path(dir.path(), "c", n);
            std::fs::write(&log, format!("run {n}\n")).unwrap();
            registry.started("ns", "p", "c", false, log, run());
            // Running: logs show this run, --previous the one before.
            let current = open(registry.clone(), "ns", "p", "c", LogOptions::default()).unwrap();
            assert_eq!(read_all(current).await, format!("run {n}\n"));
            if n > 1 {
                let prev = open(registry.clone(), "ns", "p", "c", previous.clone()).unwrap();
                assert_eq!(read_all(prev).await, format!("run {}\n", n - 1));
            }
            // Crashed, restarting (back-off): both show the crashed run.
            registry.exited("ns", "p", "c", true);
            let current = open(registry.clone(), "ns", "p", "c", LogOptions::default()).unwrap();
            assert_eq!(read_all(current).await, format!("run {n}\n"));
            let prev = open(registry.clone(), "ns", "p", "c", previous.clone()).unwrap();
            assert_eq!(read_all(prev).await, format!("run {n}\n"));
        }
        // Only the logs that can still be asked for are kept: run 3 is
        // both the latest and the previous one now.
        assert!(!super::super::log_path(dir.path(), "c", 1).exists());
        assert!(!super::super::log_path(dir.path(), "c", 2).exists());
        assert!(super::super::log_path(dir.path(), "c", 3).exists());
    }
}
