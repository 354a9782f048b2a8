//! The `ferry` binary: one subcommand per component, wiring only.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "The Kubernetes networking stack, in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the embedded Kubernetes-compatible API server.
    Apiserver(ApiserverArgs),
    /// Start the lab: an underlay bridge, N node namespaces, the API
    /// server, the controllers and each node's agents. Runs until Ctrl-C
    /// or `ferry down`, then removes everything it created.
    Up(UpArgs),
    /// Stop the running lab and remove everything it created (also after
    /// a crash).
    Down(DownArgs),
    /// Run the controllers (endpoint slices, workloads, GC, scheduler,
    /// node and LoadBalancer IPAM) against an API server.
    Controllers(ControllersArgs),
    /// Run as the CNI plugin (spec 1.1): CNI_* environment, network config
    /// on stdin, result on stdout. Runtimes may also execute the binary
    /// with no arguments (as `$CNI_PATH/ferry`) or named `ferry-cni`.
    Cni,
    /// Run the lab node agent: registers the Node, renews its heartbeat
    /// Lease and runs the pod sandboxes bound to it.
    Node(NodeArgs),
    /// Run the flannel-style VXLAN overlay agent (flannel.1) for one node.
    Overlay(OverlayArgs),
    /// Run the service proxy for one node: Services and EndpointSlices to
    /// nf_tables (kube-proxy's job).
    Proxy(ProxyArgs),
    /// Run the cluster DNS server: the Kubernetes DNS spec from Services and
    /// EndpointSlices, other names forwarded upstream (CoreDNS's job).
    Dns(DnsArgs),
    /// Run the Ingress controller: networking.k8s.io/v1 Ingresses with
    /// ingress-nginx's annotations, on :80 and :443 (ingress-nginx's job).
    Ingress(IngressArgs),
    /// Show how one Service is implemented on a node: the live nf_tables
    /// elements and rules, next to kube-proxy's iptables equivalent.
    Explain(ExplainArgs),
    /// Show the hop-by-hop path a new connection takes in the lab (routes,
    /// veths, bridges, Service rules, NAT, flannel.1), read live from each
    /// namespace; --probe sends one and shows the endpoint that answered.
    Trace(TraceArgs),
}

#[derive(clap::Args)]
struct TraceArgs {
    /// Where the connection starts: `pod/<name>` (or `<name>`),
    /// `node/<name>`, or `host`.
    from: String,
    /// Where it goes: `pod/<name>[:port]`, `svc/<name>[:port]`,
    /// `<node>:<nodePort>` (a node name or address), or `<ip>:<port>`.
    to: String,
    /// Namespace of pods and Services named without one.
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// Also open one real connection from the source and show its
    /// conntrack entry (the endpoint chosen) and the echo server's answer.
    #[arg(long)]
    probe: bool,
    /// Kubeconfig to reach the API server (default: $KUBECONFIG, else the
    /// running lab's).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ExplainArgs {
    /// `svc/<namespace>/<name>`, or `svc/<name>` with --namespace.
    target: String,
    /// Namespace when the target does not name one.
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// The node whose rules to show; its network namespace is
    /// /run/netns/<node> when that exists (the lab), else the current one.
    #[arg(long)]
    node: Option<String>,
    /// The pod network, for the masquerade rules of the kube-proxy view.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    /// Kubeconfig to reach the API server.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
}

#[derive(clap::Args)]
struct UpArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Pod network, split into one subnet per node.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    /// CIDR Service ClusterIPs are allocated from (the DNS Service gets
    /// its 10th address).
    #[arg(
        long,
        alias = "service-cluster-ip-range",
        default_value = "10.96.0.0/12"
    )]
    service_cidr: String,
    /// Prefix length of each node's pod subnet.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// Where the lab keeps its API server data, kubeconfig, logs and node state.
    #[arg(long, env = "FERRY_LAB_DIR", default_value = "/var/lib/ferry/lab")]
    data_dir: PathBuf,
    /// Where the cluster DNS forwards names outside the cluster
    /// (repeatable, `ip` or `ip:port`; `none` forwards nothing). Default:
    /// the nameservers of the host's /etc/resolv.conf that pods can reach
    /// (not loopback), else none.
    #[arg(long = "dns-upstream", value_name = "IP[:PORT]")]
    dns_upstreams: Vec<String>,
}

#[derive(clap::Args)]
struct DownArgs {
    /// The lab's data directory (the running lab's own is used if one runs).
    #[arg(long, env = "FERRY_LAB_DIR", default_value = "/var/lib/ferry/lab")]
    data_dir: PathBuf,
}

/// What every per-node agent (`node`, `overlay`, `proxy`) is told.
#[derive(clap::Args)]
struct NodeAgentArgs {
    /// Kubeconfig to reach the API server.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Name of this node's Node object.
    #[arg(long)]
    node_name: String,
    /// The node's network namespace, path or name (default: the current one).
    #[arg(long)]
    netns: Option<String>,
}

#[derive(clap::Args)]
struct ProxyArgs {
    #[command(flatten)]
    node: NodeAgentArgs,
    /// Shortest time between two syncs, in milliseconds.
    #[arg(long, default_value_t = 50)]
    min_sync_interval_ms: u64,
    /// The pod network: ClusterIP traffic from outside it is masqueraded.
    #[arg(long)]
    cluster_cidr: Option<String>,
    /// Where `/healthz` and `/livez` listen ("" turns them off).
    #[arg(long, default_value = "0.0.0.0:10256")]
    healthz_bind_address: String,
    /// Where `/metrics` listens ("" turns it off).
    #[arg(long, default_value = "127.0.0.1:10249")]
    metrics_bind_address: String,
}

#[derive(clap::Args)]
struct DnsArgs {
    /// Kubeconfig to reach the API server (default: $KUBECONFIG, then
    /// in-cluster configuration).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// TTL of cluster answers, in seconds (kubeadm's Corefile: 30).
    #[arg(long, default_value_t = 30)]
    ttl: u32,
    /// Pod names `a-b-c-d.<ns>.pod.<zone>`: `insecure` answers the address
    /// the name spells (kubeadm's setting), `disabled` gives NXDOMAIN.
    #[arg(long, default_value = "insecure")]
    pods: String,
    /// Where queries are answered, over UDP and TCP.
    #[arg(long, default_value = "0.0.0.0:53")]
    listen: SocketAddr,
    /// UDP worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Upstream servers for names outside the cluster zone (repeatable,
    /// `ip` or `ip:port`); `none` forwards nothing (SERVFAIL). Default: the
    /// nameservers of --resolv-conf.
    #[arg(long = "upstream")]
    upstreams: Vec<String>,
    /// Where the upstream servers come from when --upstream is not given.
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// Most forwarded queries in flight; more get REFUSED.
    #[arg(long, default_value_t = 1000)]
    max_concurrent: usize,
    /// Longest time a forwarded answer is cached, in seconds.
    #[arg(long, default_value_t = 30)]
    cache_ttl: u32,
    /// `/health` (liveness; "" turns it off).
    #[arg(long, default_value = "0.0.0.0:8080")]
    health_address: String,
    /// `/ready` (200 once every watch has synced; "" turns it off).
    #[arg(long, default_value = "0.0.0.0:8181")]
    ready_address: String,
    /// `/metrics` in Prometheus format ("" turns it off).
    #[arg(long, default_value = "0.0.0.0:9153")]
    metrics_address: String,
}

#[derive(clap::Args)]
struct IngressArgs {
    /// Kubeconfig to reach the API server (default: $KUBECONFIG, then
    /// in-cluster configuration).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The IngressClass this controller serves.
    #[arg(long, default_value = "ferry")]
    ingress_class: String,
    /// `spec.controller` of IngressClasses this controller serves.
    #[arg(long, default_value = "ferry.dev/ingress-controller")]
    controller_class: String,
    /// Also serve Ingresses that name no class at all.
    #[arg(long)]
    watch_ingress_without_class: bool,
    /// Plain HTTP listener.
    #[arg(long, default_value = "0.0.0.0:80")]
    http_address: SocketAddr,
    /// HTTPS listener.
    #[arg(long, default_value = "0.0.0.0:443")]
    https_address: SocketAddr,
    /// `/healthz` and `/metrics` ("" turns them off).
    #[arg(long, default_value = "0.0.0.0:10254")]
    healthz_address: String,
    /// Write the nodes' addresses into `status.loadBalancer` of served
    /// Ingresses.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    update_status: bool,
    /// Seconds a client may take to send its request headers.
    #[arg(long, default_value_t = 60)]
    client_header_timeout: u64,
    /// Seconds a client may leave a request body without sending more of
    /// it (408 after that).
    #[arg(long, default_value_t = 60)]
    client_body_timeout: u64,
    /// Proxy worker threads, each with its own event loop; 0 is one per
    /// CPU (ingress-nginx's `worker-processes: auto`).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Proxies whose X-Forwarded-For is trusted and appended to
    /// (repeatable CIDRs); from anyone else it is replaced.
    #[arg(long = "trusted-proxy")]
    trusted_proxies: Vec<String>,
}

#[derive(clap::Args)]
struct OverlayArgs {
    #[command(flatten)]
    node: NodeAgentArgs,
    /// Underlay device.
    #[arg(long, default_value = "eth0")]
    iface: String,
    /// Public (underlay) IP (default: the first IPv4 of --iface).
    #[arg(long)]
    public_ip: Option<std::net::Ipv4Addr>,
    /// Masquerade pod traffic that leaves the cluster CIDR (not to nodes).
    #[arg(long)]
    ip_masq: bool,
    /// The cluster's pod network, for --ip-masq.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
}

#[derive(clap::Args)]
struct NodeArgs {
    #[command(flatten)]
    node: NodeAgentArgs,
    /// The node's InternalIP address.
    #[arg(long)]
    internal_ip: Option<String>,
    /// Pods advertised in the node's capacity.
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// Where pod files (hosts, resolv.conf, logs) and the IPAM store live.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Nameserver written into pods' resolv.conf (dnsPolicy ClusterFirst).
    #[arg(long, default_value = "10.96.0.10")]
    cluster_dns: String,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// MTU of pod interfaces (default: the underlay's minus 50, for VXLAN).
    #[arg(long)]
    pod_mtu: Option<u32>,
    /// Port of the streaming endpoint (kubectl logs/exec/attach/port-forward
    /// through the API server) on the InternalIP: the kubelet's port.
    #[arg(long, default_value_t = ferry_node::streaming::server::DEFAULT_PORT)]
    streaming_port: u16,
}

#[derive(clap::Args)]
struct ControllersArgs {
    /// Kubeconfig to reach the API server (default: $KUBECONFIG, then
    /// in-cluster configuration).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Elect a leader through a Lease so several instances can run.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Seconds a leader lease stays valid without renewal.
    #[arg(long, default_value_t = 15)]
    leader_elect_lease_duration: u64,
    /// Pod network, split into one subnet per node.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    /// Prefix length of each node's pod subnet.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// Addresses for `type: LoadBalancer` Services (repeatable; single IPs
    /// or CIDRs).
    #[arg(long = "load-balancer-pool")]
    load_balancer_pool: Vec<String>,
    /// Only serve LoadBalancer Services of this `loadBalancerClass`.
    #[arg(long)]
    load_balancer_class: Option<String>,
    /// Most endpoints in one EndpointSlice.
    #[arg(long, default_value_t = 100)]
    max_endpoints_per_slice: usize,
    /// Seconds a node may miss heartbeats before it is marked NotReady.
    #[arg(long, default_value_t = 40)]
    node_monitor_grace_period: u64,
}

#[derive(clap::Args)]
struct ApiserverArgs {
    /// Where objects, certificates, the token and the kubeconfig live.
    #[arg(long, env = "FERRY_DATA_DIR", default_value = "/var/lib/ferry")]
    data_dir: PathBuf,
    /// Address to listen on (repeatable). Port 0 picks a free port.
    #[arg(long = "bind-address", default_value = "127.0.0.1:6443")]
    bind_addresses: Vec<SocketAddr>,
    /// Extra DNS names or IPs for the serving certificate (repeatable).
    #[arg(long = "tls-san")]
    tls_sans: Vec<String>,
    /// Largest accepted object, in bytes (kube-apiserver's is 3 MiB).
    #[arg(long, default_value_t = 3 * 1024 * 1024)]
    max_object_bytes: usize,
    /// Watch events kept so watches can resume; older starts get 410 Gone.
    #[arg(long, default_value_t = 10_000)]
    watch_history: usize,
    /// CIDR Service ClusterIPs are allocated from.
    #[arg(
        long = "service-cluster-ip-range",
        alias = "service-cidr",
        default_value = "10.96.0.0/12"
    )]
    service_cidr: String,
    /// Range NodePorts are allocated from.
    #[arg(long, default_value = "30000-32767")]
    service_node_port_range: String,
    /// Address the `kubernetes` Service points at (defaults to the first
    /// bind address).
    #[arg(long)]
    advertise_address: Option<SocketAddr>,
}

fn main() -> anyhow::Result<()> {
    if ferry_cni::invoked_as_plugin() {
        std::process::exit(ferry_cni::plugin_main());
    }
    // `ferry lab-run` (internal: how the lab runtime starts a container)
    // must run before any thread exists, so it bypasses clap and tokio.
    let mut argv = std::env::args_os();
    if argv.nth(1).is_some_and(|a| a == "lab-run") {
        std::process::exit(ferry_node::runtime::lab_run_main(argv.collect()));
    }
    let cli = Cli::parse();
    // The node agent lives in its node's network namespace: enter it while
    // this is the only thread, so every runtime thread and child inherits it.
    if let Command::Node(args) = &cli.command
        && let Some(netns) = &args.node.netns
    {
        let path = if netns.contains('/') {
            PathBuf::from(netns)
        } else {
            ferry_netlink::netns::named_path(netns)?
        };
        let file = std::fs::File::open(&path)
            .with_context(|| format!("opening network namespace {netns}"))?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering network namespace {netns}"))?;
    }
    // `ferry up` talks to the user on stdout; its components only warn.
    let default_filter = if matches!(cli.command, Command::Up(_)) {
        "warn"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match cli.command {
        Command::Apiserver(args) => runtime.block_on(apiserver(args)),
        Command::Controllers(args) => runtime.block_on(controllers(args)),
        Command::Cni => std::process::exit(ferry_cni::plugin_main()),
        Command::Node(args) => runtime.block_on(node(args)),
        Command::Overlay(args) => runtime.block_on(async move {
            let client = client(args.node.kubeconfig.as_ref()).await?;
            let config = ferry_overlay::agent::Config {
                node_name: args.node.node_name,
                netns: args.node.netns,
                iface: args.iface,
                public_ip: args.public_ip,
                ip_masq: args.ip_masq.then_some(args.cluster_cidr),
            };
            tokio::select! {
                result = ferry_overlay::agent::run(client, config) => result,
                _ = tokio::signal::ctrl_c() => Ok(()),
            }
        }),
        Command::Proxy(args) => runtime.block_on(async move {
            let client = client(args.node.kubeconfig.as_ref()).await?;
            let address =
                |flag: &str, value: &str| -> anyhow::Result<Option<std::net::SocketAddr>> {
                    if value.is_empty() {
                        return Ok(None);
                    }
                    value
                        .parse()
                        .map(Some)
                        .map_err(|_| anyhow::anyhow!("--{flag} {value:?}: expected address:port"))
                };
            let cluster_cidr = match &args.cluster_cidr {
                None => None,
                Some(c) => Some(ferry_proxy::model::Cidr::parse(c).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--cluster-cidr {c:?}: expected an IPv4 prefix such as 10.244.0.0/16"
                    )
                })?),
            };
            let config = ferry_proxy::agent::Config {
                node_name: args.node.node_name,
                netns: args.node.netns,
                min_sync_interval: std::time::Duration::from_millis(args.min_sync_interval_ms),
                cluster_cidr,
                healthz_address: address("healthz-bind-address", &args.healthz_bind_address)?,
                metrics_address: address("metrics-bind-address", &args.metrics_bind_address)?,
            };
            tokio::select! {
                result = ferry_proxy::agent::run(client, config) => result,
                _ = tokio::signal::ctrl_c() => Ok(()),
            }
        }),
        Command::Dns(args) => runtime.block_on(dns(args)),
        Command::Ingress(args) => runtime.block_on(ingress(args)),
        Command::Explain(args) => runtime.block_on(explain(args)),
        Command::Trace(args) => runtime.block_on(trace(args)),
        Command::Up(args) => runtime.block_on(ferry_lab::up(ferry_lab::Config {
            nodes: args.nodes,
            cluster_cidr: args.cluster_cidr,
            service_cidr: args.service_cidr,
            node_cidr_mask_size: args.node_cidr_mask_size,
            data_dir: args.data_dir,
            dns_upstreams: args.dns_upstreams,
        })),
        Command::Down(args) => runtime.block_on(ferry_lab::down(&args.data_dir)),
    }
}

async fn apiserver(args: ApiserverArgs) -> anyhow::Result<()> {
    let mut config = ferry_apiserver::Config::new(args.data_dir);
    config.bind_addresses = args.bind_addresses;
    config.tls_sans = args.tls_sans;
    config.max_object_bytes = args.max_object_bytes;
    config.watch_history = args.watch_history;
    config.service_cidr = args.service_cidr;
    config.node_port_range = args.service_node_port_range;
    config.advertise_address = args.advertise_address;
    let server = ferry_apiserver::start(config).await?;
    let urls: Vec<String> = server
        .addresses
        .iter()
        .map(|a| format!("https://{a}"))
        .collect();
    println!("ferry apiserver listening on {}", urls.join(", "));
    println!("export KUBECONFIG={}", server.kubeconfig.display());
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    tracing::info!("interrupted, stopping");
    server.shutdown();
    Ok(())
}

async fn dns(args: DnsArgs) -> anyhow::Result<()> {
    let address = |flag: &str, value: &str| -> anyhow::Result<Option<SocketAddr>> {
        if value.is_empty() {
            return Ok(None);
        }
        value
            .parse()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("--{flag} {value:?}: expected address:port"))
    };
    let pods = match args.pods.as_str() {
        "insecure" => ferry_dns::model::PodsMode::Insecure,
        "disabled" => ferry_dns::model::PodsMode::Disabled,
        other => anyhow::bail!("--pods {other:?}: expected insecure or disabled"),
    };
    let upstreams = if args.upstreams.is_empty() {
        let text = std::fs::read_to_string(&args.resolv_conf)
            .with_context(|| format!("reading {}", args.resolv_conf.display()))?;
        ferry_dns::upstreams::nameservers(&text)
    } else if args.upstreams.iter().any(|u| u == "none") {
        Vec::new()
    } else {
        args.upstreams
            .iter()
            .map(|u| ferry_dns::upstreams::parse_upstream(u))
            .collect::<anyhow::Result<_>>()?
    };
    let client = client(args.kubeconfig.as_ref()).await?;
    let config = ferry_dns::Config {
        zone: args
            .cluster_domain
            .trim_end_matches('.')
            .to_ascii_lowercase(),
        ttl: args.ttl,
        pods,
        listen: args.listen,
        threads: args.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }),
        forward: ferry_dns::forward::Config {
            upstreams,
            max_concurrent: args.max_concurrent,
            cache_ttl: args.cache_ttl,
            ..Default::default()
        },
        health_address: address("health-address", &args.health_address)?,
        ready_address: address("ready-address", &args.ready_address)?,
        metrics_address: address("metrics-address", &args.metrics_address)?,
    };
    tokio::select! {
        result = ferry_dns::run(client, config) => result,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

async fn ingress(args: IngressArgs) -> anyhow::Result<()> {
    let healthz_address = if args.healthz_address.is_empty() {
        None
    } else {
        Some(args.healthz_address.parse().map_err(|_| {
            anyhow::anyhow!(
                "--healthz-address {:?}: expected address:port",
                args.healthz_address
            )
        })?)
    };
    let trusted_proxies = args
        .trusted_proxies
        .iter()
        .map(|c| {
            ferry_ingress::model::route::Cidr::parse(c)
                .ok_or_else(|| anyhow::anyhow!("--trusted-proxy {c:?}: expected a CIDR"))
        })
        .collect::<anyhow::Result<_>>()?;
    let client = client(args.kubeconfig.as_ref()).await?;
    let config = ferry_ingress::agent::Config {
        classes: ferry_ingress::model::build::Classes {
            class: args.ingress_class,
            controller: args.controller_class,
            without_class: args.watch_ingress_without_class,
        },
        http_address: args.http_address,
        https_address: args.https_address,
        healthz_address,
        update_status: args.update_status,
        workers: args.workers,
        settings: ferry_ingress::dataplane::proxy::Settings {
            header_read_timeout: std::time::Duration::from_secs(args.client_header_timeout),
            client_body_timeout: std::time::Duration::from_secs(args.client_body_timeout),
            trusted_proxies,
            ..Default::default()
        },
    };
    tokio::select! {
        result = ferry_ingress::agent::run(client, config) => result,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// A kube-rs client from a kubeconfig file, or the usual inference.
async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

async fn trace(args: TraceArgs) -> anyhow::Result<()> {
    let lab = PathBuf::from("/var/lib/ferry/lab/kubeconfig");
    let kubeconfig = args.kubeconfig.or_else(|| lab.exists().then_some(lab));
    let client = client(kubeconfig.as_ref()).await?;
    let request = ferry_lab::trace::Request {
        from: args.from,
        to: args.to,
        namespace: args.namespace,
        probe: args.probe,
    };
    print!("{}", ferry_lab::trace::run(client, &request).await?);
    Ok(())
}

async fn explain(args: ExplainArgs) -> anyhow::Result<()> {
    let rest = args
        .target
        .strip_prefix("svc/")
        .or_else(|| args.target.strip_prefix("service/"));
    let (namespace, name) = match rest.map(|r| r.split_once('/')) {
        Some(Some((ns, name))) => (ns.to_string(), name.to_string()),
        Some(None) => (args.namespace.clone(), rest.unwrap_or_default().to_string()),
        None => anyhow::bail!(
            "{:?}: expected svc/<namespace>/<name> or svc/<name>",
            args.target
        ),
    };
    let client = client(args.kubeconfig.as_ref()).await?;
    let node = match &args.node {
        Some(n) => n.clone(),
        None => nix::unistd::gethostname()?.to_string_lossy().into_owned(),
    };
    let cidr = ferry_proxy::model::Cidr::parse(&args.cluster_cidr);
    print!(
        "{}",
        ferry_proxy::explain::run(client, &namespace, &name, &node, cidr).await?
    );
    Ok(())
}

/// The bearer token of the kubeconfig's current user, if it has one.
fn kubeconfig_token(path: Option<&PathBuf>) -> Option<String> {
    let kc = match path {
        Some(p) => kube::config::Kubeconfig::read_from(p).ok()?,
        None => kube::config::Kubeconfig::read().ok()?,
    };
    let context_name = kc.current_context.clone()?;
    let context = kc
        .contexts
        .iter()
        .find(|c| c.name == context_name)?
        .context
        .as_ref()?;
    let user = context.user.as_deref()?;
    let auth = kc
        .auth_infos
        .iter()
        .find(|a| a.name == user)?
        .auth_info
        .as_ref()?;
    use secrecy::ExposeSecret;
    auth.token.as_ref().map(|t| t.expose_secret().to_string())
}

async fn node(args: NodeArgs) -> anyhow::Result<()> {
    let client = client(args.node.kubeconfig.as_ref()).await?;
    let config = ferry_node::Config {
        node_name: args.node.node_name.clone(),
        internal_ip: args.internal_ip,
        max_pods: args.max_pods,
        state_dir: args
            .state_dir
            .unwrap_or_else(|| PathBuf::from("/var/lib/ferry/node").join(&args.node.node_name)),
        cluster_dns: args.cluster_dns,
        cluster_domain: args.cluster_domain,
        pod_mtu: args.pod_mtu,
        streaming_port: args.streaming_port,
        // The streaming endpoint accepts the token the agent itself uses:
        // in the lab, the API server's.
        streaming_token: kubeconfig_token(args.node.kubeconfig.as_ref()),
    };
    tokio::select! {
        result = ferry_node::run(client, config) => result,
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted, stopping");
            Ok(())
        }
    }
}

async fn controllers(args: ControllersArgs) -> anyhow::Result<()> {
    let client = client(args.kubeconfig.as_ref()).await?;
    let config = ferry_controllers::Config {
        leader_elect: args.leader_elect,
        lease_duration: std::time::Duration::from_secs(args.leader_elect_lease_duration),
        // client-go's proportions: renew 10 s and retry 2 s of a 15 s lease.
        renew_deadline: std::time::Duration::from_millis(
            (args.leader_elect_lease_duration * 2000 / 3).max(1000),
        ),
        retry_period: std::time::Duration::from_millis(
            (args.leader_elect_lease_duration * 2000 / 15).max(200),
        ),
        cluster_cidr: args.cluster_cidr,
        node_cidr_mask_size: args.node_cidr_mask_size,
        load_balancer_pool: args.load_balancer_pool,
        load_balancer_class: args.load_balancer_class,
        max_endpoints_per_slice: args.max_endpoints_per_slice,
        node_monitor_grace_period: std::time::Duration::from_secs(args.node_monitor_grace_period),
        ..ferry_controllers::Config::default()
    };
    tokio::select! {
        result = ferry_controllers::run(client, config) => result,
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted, stopping");
            Ok(())
        }
    }
}
