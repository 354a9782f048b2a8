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
    /// Start the lab. For now this runs the API server alone and prints
    /// how to reach it; the simulated nodes and the pod network are not
    /// built yet.
    Up(ApiserverArgs),
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
    #[arg(long = "service-cluster-ip-range", alias = "service-cidr", default_value = "10.96.0.0/12")]
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
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match cli.command {
        Command::Apiserver(args) => runtime.block_on(apiserver(args)),
        Command::Up(args) => {
            eprintln!("ferry up: starting the API server (lab nodes are not implemented yet)");
            runtime.block_on(apiserver(args))
        }
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
