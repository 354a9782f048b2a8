//! Built-in programs for images that have no command: a web server for
//! nginx/httpd images and `ferry/echo` (agnhost netexec's endpoints).
//! They run inside `ferry lab-run`, already in the pod's namespaces.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::Builtin;

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        hyper::header::SERVER,
        hyper::header::HeaderValue::from_static("ferry-lab"),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        h.insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// The nginx/httpd page: names the pod, so clients see who answered.
pub fn web_page(pod_name: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html>\n<head><title>Welcome to nginx!</title></head>\n<body>\n\
         <h1>Welcome to nginx!</h1>\n<p>Served by pod <b>{pod_name}</b> (Ferry lab runtime).</p>\n\
         </body>\n</html>\n"
    )
}

/// Runs the built-in until SIGTERM/SIGINT; returns the exit code.
pub async fn run(builtin: Builtin, hostname: String) -> i32 {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("signal handler: {e}");
            return 128;
        }
    };
    let served = async {
        match builtin {
            Builtin::Web {
                pod_name,
                ports,
                root,
            } => {
                let root = std::sync::Arc::new(root);
                let mut tasks = Vec::new();
                for port in ports {
                    let listener = bind(port).await?;
                    let root = root.clone();
                    tasks.push(tokio::spawn(serve_http(listener, move |req, _peer| {
                        web(&req, &root)
                    })));
                }
                eprintln!("ferry lab runtime: web server for pod {pod_name} ready");
                for t in tasks {
                    let _ = t.await;
                }
                Ok::<i32, std::io::Error>(0)
            }
            Builtin::Echo {
                http_port,
                udp_port,
            } => {
                let listener = bind(http_port).await?;
                let udp = tokio::net::UdpSocket::bind(("0.0.0.0", udp_port)).await?;
                let host = hostname.clone();
                let (exit_tx, mut exit_rx) = tokio::sync::mpsc::unbounded_channel::<i32>();
                let http = tokio::spawn(serve_http(listener, move |req, peer| {
                    echo(&req, peer, &host, &exit_tx)
                }));
                let udp_task = tokio::spawn(serve_udp(udp, hostname.clone()));
                eprintln!("ferry lab runtime: echo server on HTTP {http_port}, UDP {udp_port}");
                let code = exit_rx.recv().await.unwrap_or(0);
                http.abort();
                udp_task.abort();
                Ok(code)
            }
        }
    };
    tokio::select! {
        r = served => match r {
            Ok(code) => code,
            Err(e) => { eprintln!("ferry lab runtime: {e}"); 1 }
        },
        _ = term.recv() => 0,
        _ = tokio::signal::ctrl_c() => 0,
    }
}

async fn bind(port: u16) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("listening on port {port}: {e}")))
}

async fn serve_http<F>(listener: tokio::net::TcpListener, handler: F)
where
    F: Fn(Request<hyper::body::Incoming>, SocketAddr) -> Reply + Clone + Send + Sync + 'static,
{
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let r = handler(req, peer);
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The file a request path names under `root`: `None` for paths that
/// climb out of it (`..`) or hold a NUL.
fn file_for(root: &Path, request_path: &str) -> Option<PathBuf> {
    let decoded = ferry_api::url::percent_decode(request_path);
    let mut file = root.to_path_buf();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => return None,
            s if s.contains('\0') => return None,
            s => file.push(s),
        }
    }
    Some(file)
}

fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()) {
        Some("html" | "htm") => "text/html",
        Some("css") => "text/css",
        Some("js") => "application/javascript",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("txt") => "text/plain",
        _ => "application/octet-stream",
    }
}

/// nginx's static file serving, reduced: the file under the document root
/// (as this pod's mount namespace shows it, so `kubectl exec` writes are
/// served at once), `index.html` for directories, nginx's 404/403/405.
fn web(req: &Request<hyper::body::Incoming>, root: &Path) -> Reply {
    let status_page = |status: StatusCode| {
        let text = format!(
            "<html>\r\n<head><title>{status}</title></head>\r\n<body>\r\n<center><h1>{status}</h1></center>\r\n\
             <hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
        );
        reply(status, "text/html", text)
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return status_page(StatusCode::METHOD_NOT_ALLOWED);
    }
    let Some(mut file) = file_for(root, req.uri().path()) else {
        return status_page(StatusCode::BAD_REQUEST);
    };
    if file.is_dir() {
        file.push("index.html");
    }
    match std::fs::read(&file) {
        Ok(body) => {
            let mut r = reply(StatusCode::OK, content_type(&file), body);
            if req.method() == Method::HEAD {
                *r.body_mut() = Full::new(Bytes::new());
            }
            r
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            status_page(StatusCode::FORBIDDEN)
        }
        Err(_) => status_page(StatusCode::NOT_FOUND),
    }
}

fn query_param(req: &Request<hyper::body::Incoming>, name: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| ferry_api::url::percent_decode(v))
    })
}

fn echo(
    req: &Request<hyper::body::Incoming>,
    peer: SocketAddr,
    hostname: &str,
    exit: &tokio::sync::mpsc::UnboundedSender<i32>,
) -> Reply {
    let text = |s: String| reply(StatusCode::OK, "text/plain; charset=utf-8", s);
    match req.uri().path() {
        "/" => text(format!("NOW: {}", jiff::Timestamp::now())),
        "/hostname" => text(hostname.to_string()),
        "/clientip" => text(peer.to_string()),
        "/echo" => text(query_param(req, "msg").unwrap_or_default()),
        "/healthz" => text(String::new()),
        "/header" => {
            let key = query_param(req, "key").unwrap_or_default();
            let value = req
                .headers()
                .get(key.as_str())
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            text(value.to_string())
        }
        "/exit" => {
            let code = query_param(req, "code")
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let exit = exit.clone();
            // Reply first, then exit, as netexec does.
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                let _ = exit.send(code);
            });
            reply(StatusCode::NO_CONTENT, "text/plain", "")
        }
        "/shutdown" => {
            let _ = exit.send(0);
            text(String::new())
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "404 page not found\n"),
    }
}

/// UDP side of netexec: `hostname`, `echo <msg>`, `clientip`.
async fn serve_udp(socket: tokio::net::UdpSocket, hostname: String) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let request = String::from_utf8_lossy(&buf[..n]).trim().to_string();
        let answer = if request == "hostname" {
            hostname.clone()
        } else if request == "clientip" {
            peer.to_string()
        } else if let Some(msg) = request.strip_prefix("echo ") {
            msg.to_string()
        } else {
            format!("unknown command {request:?}")
        };
        let _ = socket.send_to(answer.as_bytes(), peer).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_names_the_pod_and_decoding_works() {
        assert!(web_page("web-7").contains("<b>web-7</b>"));
        let root = Path::new("/srv/html");
        assert_eq!(
            file_for(root, "/a/./b%20c.html"),
            Some(PathBuf::from("/srv/html/a/b c.html"))
        );
        assert_eq!(file_for(root, "/"), Some(PathBuf::from("/srv/html")));
        assert_eq!(file_for(root, "/a/../../etc/passwd"), None);
        assert_eq!(file_for(root, "/%2e%2e/etc/passwd"), None);
        assert_eq!(file_for(root, "/a%00b"), None);
        assert_eq!(ferry_api::url::percent_decode("a%20b+c%2"), "a b c%2");
        assert_eq!(ferry_api::url::percent_decode("%41%zz"), "A%zz");
    }
}
