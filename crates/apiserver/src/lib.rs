//! Ferry's embedded Kubernetes-compatible API server.
//!
//! Every Ferry component is a Kubernetes API client; on a single machine
//! (the lab) this server is the API they talk to. It serves the kinds in
//! `ferry_api::resources` over HTTPS with bearer-token auth: discovery,
//! CRUD, list/watch, the three patch types, `/status` and `/scale`,
//! server-side Tables and field validation, so that unmodified `kubectl`
//! and kube-rs work against it. Objects live in `ferry_store`.

mod allocator;
mod discovery;
mod fields;
mod handlers;
mod http;
mod kubernetes_service;
mod namespaces;
mod patch;
mod pki;
mod pod_streams;
mod protobuf;
mod registry;
mod routes;
mod schema;
mod services;
mod status;
mod strategy;
mod tables;
mod versions;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use ferry_store::{Store, StoreConfig};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// Server settings; the defaults are kube-apiserver's where it has one.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// Addresses to listen on; port 0 picks a free port.
    pub bind_addresses: Vec<SocketAddr>,
    /// Extra names or IPs for the serving certificate.
    pub tls_sans: Vec<String>,
    /// Largest accepted object or request body, in bytes.
    pub max_object_bytes: usize,
    /// Watch events kept for resuming watches.
    pub watch_history: usize,
    /// Range Service ClusterIPs come from; its first address goes to the
    /// `kubernetes` Service.
    pub service_cidr: String,
    /// Range NodePorts come from, `first-last`.
    pub node_port_range: String,
    /// Address the `kubernetes` Service's endpoints point at; defaults to
    /// the first bind address.
    pub advertise_address: Option<SocketAddr>,
}

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            bind_addresses: vec![SocketAddr::from(([127, 0, 0, 1], 6443))],
            tls_sans: Vec::new(),
            max_object_bytes: 3 * 1024 * 1024,
            watch_history: StoreConfig::default().watch_history,
            service_cidr: "10.96.0.0/12".into(),
            node_port_range: "30000-32767".into(),
            advertise_address: None,
        }
    }
}

/// A started server.
pub struct RunningServer {
    pub addresses: Vec<SocketAddr>,
    pub kubeconfig: PathBuf,
    pub store: Store,
    stop: Arc<Notify>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningServer {
    /// Stops accepting connections.
    pub fn shutdown(&self) {
        self.stop.notify_waiters();
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Waits until the server stops (it normally runs until the process
    /// ends).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

fn tls_config(pki: &pki::Pki) -> anyhow::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = vec![
        CertificateDer::from_pem_slice(pki.server_cert_pem.as_bytes())
            .context("parsing the serving certificate")?,
    ];
    let key = PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes())
        .context("parsing the serving key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // TLS 1.2 and 1.3 only; rustls offers nothing older.
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("choosing TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("loading the serving certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Opens the store, prepares TLS and credentials, binds and serves.
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    let store = Store::open(
        &config.data_dir.join("store"),
        StoreConfig {
            watch_history: config.watch_history,
            ..StoreConfig::default()
        },
    )
    .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;

    let mut listeners = Vec::new();
    for addr in &config.bind_addresses {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        listeners.push(l);
    }
    let addresses: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<_, _>>()?;

    let mut sans = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    for a in &addresses {
        if !a.ip().is_unspecified() {
            sans.push(a.ip().to_string());
        }
    }
    sans.extend(config.tls_sans.iter().cloned());
    sans.dedup();
    let pki = pki::load_or_create(&config.data_dir, &sans)?;
    let token = pki::load_or_create_token(&config.data_dir)?;
    let primary = addresses[0];
    let server_url = format!("https://{primary}");
    let kubeconfig = pki::write_kubeconfig(
        &config.data_dir.join("kubeconfig"),
        &server_url,
        &pki.ca_cert_pem,
        &token,
    )?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(&pki)?));

    let services = services::ServiceAllocator::new(&config.service_cidr, &config.node_port_range)
        .map_err(|e| anyhow::anyhow!(e))?;
    let stored_services = store.list("services/", None, None, |_| true);
    let problems = services.repair(stored_services.items.iter().filter_map(|(key, s)| {
        serde_json::from_slice(&s.data)
            .ok()
            .map(|v| (key.as_str(), v))
    }));
    for p in problems {
        tracing::warn!(problem = %p, "service allocation repair");
    }
    let registry = Arc::new(registry::Registry {
        store: store.clone(),
        services,
        max_object_bytes: config.max_object_bytes,
        namespace_deleted: Arc::new(Notify::new()),
    });
    namespaces::bootstrap(&registry)
        .await
        .map_err(|e| anyhow::anyhow!("creating the initial namespaces: {}", e.message))?;
    let advertise = config.advertise_address.unwrap_or(primary);
    kubernetes_service::reconcile(&registry, advertise)
        .await
        .map_err(|e| anyhow::anyhow!("reconciling the kubernetes Service: {}", e.message))?;
    let state = Arc::new(handlers::ServerState {
        registry: registry.clone(),
        token,
        server_address: primary.to_string(),
    });

    let stop = Arc::new(Notify::new());
    let mut tasks = vec![tokio::spawn(namespaces::run_finalizer(registry))];
    for listener in listeners {
        tasks.push(tokio::spawn(serve(
            listener,
            acceptor.clone(),
            state.clone(),
            stop.clone(),
        )));
    }
    tracing::info!(?addresses, kubeconfig = %kubeconfig.display(), "API server ready");
    Ok(RunningServer {
        addresses,
        kubeconfig,
        store,
        stop,
        tasks,
    })
}

async fn serve(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<handlers::ServerState>,
    stop: Arc<Notify>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = stop.notified() => return,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handlers::handle(state, req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
