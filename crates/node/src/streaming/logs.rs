//! Container logs (`GET /containerLogs/<ns>/<pod>/<container>`): the
//! kubelet's query parameters `follow`, `previous`, `tailLines` and
//! `limitBytes`.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::Registry;

/// How often a follow looks for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(50);
/// At most this much of a file is read to find the last lines.
const TAIL_WINDOW: u64 = 8 * 1024 * 1024;

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

/// The offset a log read starts at, and the bytes up to the end.
fn initial(path: &PathBuf, tail: Option<usize>) -> std::io::Result<(Vec<u8>, u64)> {
    let mut f = std::fs::File::open(path)?;
    let size = f.metadata()?.len();
    let from = match tail {
        Some(_) => size.saturating_sub(TAIL_WINDOW),
        None => 0,
    };
    f.seek(SeekFrom::Start(from))?;
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    let end = from + data.len() as u64;
    if let Some(n) = tail {
        let start = tail_start(&data, n);
        data.drain(..start);
    }
    Ok((data, end))
}

fn read_from(path: &PathBuf, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    Ok(data)
}

/// A request that cannot be served: HTTP status and message.
pub type Refusal = (u16, String);

/// Streams one container's log into `tx`; with `follow`, until the run
/// ends (or the reader goes away).
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
    let Some(state) = entry.containers.get(container) else {
        return Err((
            400,
            format!("container {container:?} in pod {pod:?} is waiting to start: no logs yet"),
        ));
    };
    let path = if opts.previous {
        let p = super::previous_log_path(&entry.dir, container);
        if !p.exists() {
            return Err((
                400,
                format!("previous terminated container {container:?} in pod {pod:?} not found"),
            ));
        }
        p
    } else {
        super::log_path(&entry.dir, container)
    };
    let (data, offset) = initial(&path, opts.tail_lines).map_err(|e| {
        (
            500,
            format!("reading the log of container {container:?}: {e}"),
        )
    })?;
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
        let mut budget = opts.limit_bytes.unwrap_or(u64::MAX);
        let send = |budget: &mut u64, mut chunk: Vec<u8>| {
            let allowed = usize::try_from(*budget).unwrap_or(usize::MAX);
            chunk.truncate(allowed);
            *budget -= chunk.len() as u64;
            chunk
        };
        let first = send(&mut budget, data);
        if !first.is_empty() && tx.send(Ok(Bytes::from(first))).await.is_err() {
            return;
        }
        let mut offset = offset;
        while follow && budget > 0 {
            let state = registry.run_state(&ns, &pod, &container);
            let over = state != Some((generation, true));
            let more = match read_from(&path, offset) {
                Ok(m) => m,
                Err(_) => break,
            };
            offset += more.len() as u64;
            if !more.is_empty() {
                let chunk = send(&mut budget, more);
                if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                    return;
                }
            }
            if over {
                break;
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
        registry.started(
            "ns",
            "p",
            "c",
            false,
            super::super::RunningEntry {
                pid: 1,
                env: Vec::new(),
                working_dir: None,
                console: None,
                attached: Default::default(),
            },
        );
        let log = super::super::log_path(dir.path(), "c");
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
        registry.exited("ns", "p", "c");
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
}
