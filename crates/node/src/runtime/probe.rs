//! One probe attempt, from the agent's (the node's) network namespace,
//! with kubelet's success rules and failure messages.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ProbeOutcome;

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn dial_error(target: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            format!("dial tcp {target}: connect: connection refused")
        }
        _ => format!("dial tcp {target}: {e}"),
    }
}

/// One httpGet attempt: 200–399 is success, as kubelet. HTTPS is not
/// supported by the lab runtime and reported as a failure.
pub async fn probe_http(
    scheme: &str,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> ProbeOutcome {
    let target = host_port(host, port);
    let path = if path.is_empty() { "/" } else { path };
    let url = format!("{}://{target}{path}", scheme.to_ascii_lowercase());
    if !scheme.eq_ignore_ascii_case("http") {
        return ProbeOutcome::Failure(format!(
            "Get {url:?}: HTTPS probes are not supported by the ferry lab runtime"
        ));
    }
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(&target)
            .await
            .map_err(|e| format!("Get {url:?}: {}", dial_error(&target, &e)))?;
        let mut request = format!("GET {path} HTTP/1.1\r\n");
        let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
        if !has("host") {
            request.push_str(&format!("Host: {target}\r\n"));
        }
        if !has("user-agent") {
            request.push_str("User-Agent: kube-probe/1.33\r\n");
        }
        if !has("accept") {
            request.push_str("Accept: */*\r\n");
        }
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("Connection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("Get {url:?}: {e}"))?;
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(2).any(|w| w == b"\r\n") {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("Get {url:?}: {e}"))?;
            if n == 0 {
                return Err(format!("Get {url:?}: EOF"));
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("Get {url:?}: malformed HTTP response"))?;
        Ok(code)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(code)) if (200..400).contains(&code) => ProbeOutcome::Success,
        Ok(Ok(code)) => ProbeOutcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
        Ok(Err(message)) => ProbeOutcome::Failure(message),
        Err(_) => ProbeOutcome::Failure(format!(
            "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
    }
}

/// One tcpSocket attempt: success when a connection is accepted.
pub async fn probe_tcp(host: &str, port: u16, timeout: Duration) -> ProbeOutcome {
    let target = host_port(host, port);
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&target)).await {
        Ok(Ok(_)) => ProbeOutcome::Success,
        Ok(Err(e)) => ProbeOutcome::Failure(dial_error(&target, &e)),
        Err(_) => ProbeOutcome::Failure(format!("dial tcp {target}: i/o timeout")),
    }
}
