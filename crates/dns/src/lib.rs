//! `ferry dns`: cluster DNS, CoreDNS's job. It watches Services,
//! EndpointSlices and Namespaces ([`agent`]), turns them into a precomputed
//! answer index (the pure [`model`]), and serves it over UDP and TCP
//! ([`server`]) from every core. Names outside the cluster zone go to the
//! upstream servers through a cache ([`forward`]). The records follow the
//! Kubernetes DNS-Based Service Discovery spec; where the spec is silent,
//! Ferry answers as CoreDNS with kubeadm's Corefile does.

pub mod agent;
pub mod forward;
pub mod health;
pub mod metrics;
pub mod model;
pub mod server;
pub mod upstreams;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use arc_swap::ArcSwap;

/// Settings of `ferry dns`.
#[derive(Clone, Debug)]
pub struct Config {
    /// The cluster zone, lowercase, without the final dot.
    pub zone: String,
    pub ttl: u32,
    pub pods: model::PodsMode,
    /// UDP and TCP address.
    pub listen: SocketAddr,
    /// UDP worker threads.
    pub threads: usize,
    pub forward: forward::Config,
    pub health_address: Option<SocketAddr>,
    pub ready_address: Option<SocketAddr>,
    pub metrics_address: Option<SocketAddr>,
}

/// Binds every listener, then serves until the watches end. Until the
/// first sync, names the index does not have get SERVFAIL and `/ready`
/// says 503, as CoreDNS does.
pub async fn run(client: kube::Client, config: Config) -> anyhow::Result<()> {
    let (shared, _) = start(&config).await?;
    tracing::info!(
        listen = %config.listen,
        threads = config.threads,
        upstreams = ?config.forward.upstreams,
        "serving {}",
        config.zone
    );
    let model = model::Config {
        zone: config.zone.clone(),
        ttl: config.ttl,
        pods: config.pods,
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = agent::run(client, model, shared.clone()) => result,
        _ = term.recv() => {
            // CoreDNS's `health { lameduck 5s }`: /ready turns 503 so the
            // endpoint leaves the Service, while queries in flight and those
            // still routed here are answered.
            shared.stopping.store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::info!("SIGTERM: lame duck for {}s, then exit", LAMEDUCK.as_secs());
            tokio::time::sleep(LAMEDUCK).await;
            Ok(())
        }
    }
}

/// How long a terminating server keeps answering (kubeadm: lameduck 5s).
const LAMEDUCK: std::time::Duration = std::time::Duration::from_secs(5);

/// Binds the DNS and HTTP listeners and starts serving an empty, unsynced
/// index; the caller publishes real ones into the returned state. Returns
/// the DNS address (its port chosen by the system when `listen` has 0).
pub async fn start(config: &Config) -> anyhow::Result<(Arc<Shared>, SocketAddr)> {
    let model = model::Config {
        zone: config.zone.clone(),
        ttl: config.ttl,
        pods: config.pods,
    };
    let empty = model::Index::build(&model::State::default(), &model, 0, false);
    let shared = Arc::new(server::Shared {
        index: ArcSwap::from_pointee(empty),
        forwarder: forward::Forwarder::new(config.forward.clone()),
        metrics: metrics::Metrics::new(config.threads + 1),
        stopping: AtomicBool::new(false),
        server_label: format!("dns://:{}", config.listen.port()),
        builds: Default::default(),
    });
    let sockets = server::udp::bind(config.listen, config.threads)
        .with_context(|| format!("listening on {} (UDP)", config.listen))?;
    let dns_addr = sockets[0].local_addr()?;
    let tcp = tokio::net::TcpListener::bind(dns_addr)
        .await
        .with_context(|| format!("listening on {dns_addr} (TCP)"))?;
    server::udp::start(sockets, shared.clone(), tokio::runtime::Handle::current());
    tokio::spawn(server::tcp::serve(tcp, shared.clone(), config.threads));
    for (addr, what) in [
        (config.health_address, health::Endpoint::Health),
        (config.ready_address, health::Endpoint::Ready),
        (config.metrics_address, health::Endpoint::Metrics),
    ] {
        if let Some(addr) = addr {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr} ({what:?})"))?;
            tokio::spawn(health::serve(listener, what, shared.clone()));
        }
    }
    Ok((shared, dns_addr))
}

pub use server::Shared;
