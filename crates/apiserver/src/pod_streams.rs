//! The Pod subresources that stream: `log`, `exec`, `attach` and
//! `portforward`. As kube-apiserver does, the server checks the request
//! against the Pod (container names, phase, node), then proxies it to the
//! node's kubelet endpoint (`status.daemonEndpoints.kubeletEndpoint` on
//! the Node's InternalIP): logs as a streamed body, the others as an HTTP
//! upgrade (WebSocket or SPDY) spliced through byte for byte.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::handlers::ServerState;
use crate::http::Body;
use crate::registry::ObjectRef;
use crate::status::{ApiError, ApiResult};

/// The kubelet's port, when a Node does not report one.
const DEFAULT_KUBELET_PORT: i64 = 10250;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Headers of an upgrade that pass through in both directions.
const UPGRADE_HEADERS: [&str; 7] = [
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-accept",
    "x-stream-protocol-version",
];

pub fn is_stream_subresource(sub: &str) -> bool {
    matches!(sub, "log" | "exec" | "attach" | "portforward")
}

fn encode_query(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                ferry_api::url::percent_encode(k),
                ferry_api::url::percent_encode(v)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

/// The container a request names, checked against the Pod (kube-apiserver's
/// messages).
fn container_for(pod: &Value, name: &str, asked: Option<&str>) -> ApiResult<String> {
    let containers = names(&pod["spec"]["containers"]);
    let init = names(&pod["spec"]["initContainers"]);
    let ephemeral = names(&pod["spec"]["ephemeralContainers"]);
    match asked {
        Some(c) => {
            if containers
                .iter()
                .chain(&init)
                .chain(&ephemeral)
                .any(|n| n == c)
            {
                Ok(c.to_string())
            } else {
                Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )))
            }
        }
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => {
            let mut message = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !init.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            Err(ApiError::bad_request(message))
        }
    }
}

/// `https://<InternalIP>:<kubelet port>` of the Pod's node.
fn node_endpoint(state: &ServerState, pod: &Value, name: &str) -> ApiResult<(String, u16)> {
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let nodes = ferry_api::resources::find("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("the nodes resource is not served"))?;
    let (_, node) = state.registry.get_value(ObjectRef {
        rt: nodes,
        namespace: None,
        name: node_name,
    })?;
    let addresses = node["status"]["addresses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let address = ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|t| {
            addresses
                .iter()
                .find(|a| a["type"] == *t)
                .and_then(|a| a["address"].as_str())
        })
        .ok_or_else(|| ApiError::unavailable(format!("node {node_name:?} reports no address")))?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_i64()
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    let port = u16::try_from(port)
        .map_err(|_| ApiError::internal(format!("node {node_name:?} reports port {port}")))?;
    Ok((address.to_string(), port))
}

/// Serves one of the streaming subresources of Pod `namespace/name`.
pub async fn handle(
    state: &ServerState,
    mut req: Request<Incoming>,
    namespace: &str,
    name: &str,
    sub: &str,
) -> ApiResult<Response<Body>> {
    let method = req.method().clone();
    let allowed = match sub {
        "log" => method == Method::GET,
        _ => method == Method::GET || method == Method::POST,
    };
    if !allowed {
        return Err(ApiError::method_not_allowed(method.as_str()));
    }
    let pods = ferry_api::resources::find("", "v1", "pods")
        .ok_or_else(|| ApiError::internal("the pods resource is not served"))?;
    let (_, pod) = state.registry.get_value(ObjectRef {
        rt: pods,
        namespace: Some(namespace),
        name,
    })?;
    let mut query = ferry_api::url::query_pairs(req.uri().query());
    let asked = query
        .iter()
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty());
    query.retain(|(k, _)| k != "container");
    let phase = pod["status"]["phase"].as_str().unwrap_or_default();
    let path = match sub {
        "log" => {
            let c = container_for(&pod, name, asked.as_deref())?;
            format!("/containerLogs/{namespace}/{name}/{c}")
        }
        "exec" | "attach" => {
            let c = container_for(&pod, name, asked.as_deref())?;
            if phase == "Succeeded" || phase == "Failed" {
                let verb = if sub == "exec" {
                    "exec into"
                } else {
                    "attach to"
                };
                return Err(ApiError::bad_request(format!(
                    "cannot {verb} a container in a completed pod; current phase is {phase}"
                )));
            }
            format!("/{sub}/{namespace}/{name}/{c}")
        }
        _ => format!("/portForward/{namespace}/{name}"),
    };
    let (host, port) = node_endpoint(state, &pod, name)?;
    let query = encode_query(&query);
    let uri = if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    };
    let mut upstream = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, format!("{host}:{port}"))
        .header(header::AUTHORIZATION, format!("Bearer {}", state.token));
    for (k, v) in req.headers() {
        if UPGRADE_HEADERS.contains(&k.as_str()) {
            upstream = upstream.header(k, v);
        }
    }
    let upstream = upstream
        .body(Empty::<Bytes>::new())
        .map_err(|e| ApiError::internal(format!("building the kubelet request: {e}")))?;
    let client_upgrade = hyper::upgrade::on(&mut req);
    let mut resp = send(&host, port, upstream).await?;
    let status = resp.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let node_upgrade = hyper::upgrade::on(&mut resp);
        let mut answer = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
        for (k, v) in resp.headers() {
            if UPGRADE_HEADERS.contains(&k.as_str()) {
                answer = answer.header(k, v);
            }
        }
        tokio::spawn(async move {
            let (client, node) = match tokio::join!(client_upgrade, node_upgrade) {
                (Ok(c), Ok(n)) => (c, n),
                (c, n) => {
                    tracing::debug!(client = ?c.err(), node = ?n.err(), "stream upgrade failed");
                    return;
                }
            };
            let (mut client, mut node) = (TokioIo::new(client), TokioIo::new(node));
            let _ = tokio::io::copy_bidirectional(&mut client, &mut node).await;
        });
        return answer
            .body(crate::http::full(Bytes::new()))
            .map_err(|e| ApiError::internal(e.to_string()));
    }
    if status.is_success() {
        let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
        let body = resp.into_body().map_err(std::io::Error::other).boxed();
        let mut answer = Response::builder().status(status);
        if let Some(ct) = content_type {
            answer = answer.header(header::CONTENT_TYPE, ct);
        }
        return answer
            .body(body)
            .map_err(|e| ApiError::internal(e.to_string()));
    }
    // The kubelet's errors are plain text: pass them on as a Status.
    let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .ok()
        .and_then(Result::ok)
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let message = String::from_utf8_lossy(&body).trim().to_string();
    Err(match status.as_u16() {
        400 => ApiError::bad_request(message),
        404 => ApiError::unavailable(format!("the node does not know the pod: {message}")),
        code => {
            let mut e = ApiError::internal(format!("kubelet answered {code}: {message}"));
            e.code = if code >= 500 { 500 } else { code };
            e
        }
    })
}

/// Sends one request to a node's kubelet endpoint over TLS.
async fn send(host: &str, port: u16, req: Request<Empty<Bytes>>) -> ApiResult<Response<Incoming>> {
    let unreachable = |e: String| {
        ApiError::unavailable(format!("cannot reach the kubelet at {host}:{port}: {e}"))
    };
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    .map_err(|_| unreachable("connect timed out".into()))?
    .map_err(|e| unreachable(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let server_name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| unreachable(e.to_string()))?;
    let tls = kubelet_tls()
        .connect(server_name, tcp)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| unreachable(e.to_string()))
}

/// TLS to kubelets: like kube-apiserver without
/// `--kubelet-certificate-authority`, the serving certificate is not
/// checked against a CA (kubelets serve self-signed ones); the handshake
/// signature still is. TLS 1.2 or newer.
fn kubelet_tls() -> tokio_rustls::TlsConnector {
    use std::sync::OnceLock;
    static CONNECTOR: OnceLock<tokio_rustls::TlsConnector> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let verifier = Arc::new(UncheckedKubeletCert(provider.clone()));
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .expect("the ring provider supports TLS 1.2 and 1.3")
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            tokio_rustls::TlsConnector::from(Arc::new(config))
        })
        .clone()
}

#[derive(Debug)]
struct UncheckedKubeletCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for UncheckedKubeletCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn containers_are_checked_like_kube_apiserver() {
        let pod = serde_json::json!({"spec": {
            "containers": [{"name": "a"}, {"name": "b"}],
            "initContainers": [{"name": "init"}]}});
        let err = container_for(&pod, "web", None).unwrap_err();
        assert_eq!(
            err.message,
            "a container name must be specified for pod web, choose one of: [a b] or one of the init containers: [init]"
        );
        assert_eq!(container_for(&pod, "web", Some("init")).unwrap(), "init");
        let err = container_for(&pod, "web", Some("c")).unwrap_err();
        assert_eq!(err.message, "container c is not valid for pod web");
        let one = serde_json::json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(container_for(&one, "p", None).unwrap(), "only");
    }

    #[test]
    fn query_round_trips_repeated_keys() {
        let q = ferry_api::url::query_pairs(Some(
            "command=sh&command=-c&command=echo%20a%26b&tty=true",
        ));
        assert_eq!(q.len(), 4);
        assert_eq!(q[2].1, "echo a&b");
        assert_eq!(ferry_api::url::query_pairs(Some(&encode_query(&q))), q);
    }
}
