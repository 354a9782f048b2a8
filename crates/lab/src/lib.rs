//! `ferry up` and `ferry down`: the lab.
//!
//! `ferry up` builds the underlay ([`underlay`]), starts the API server and
//! the controllers in this process and, per node, `ferry node` and
//! `ferry overlay` as child processes, waits until every node is Ready with
//! its podCIDR and overlay, deploys the cluster DNS ([`dns`]: Service
//! `kube-system/kube-dns` and Deployment `ferry-dns`) and waits for it,
//! prints how to use the cluster and runs until Ctrl-C or SIGTERM. Then, as with `ferry down` or the next `ferry up`
//! after a crash, [`cleanup::cleanup`] removes everything the lab created.
//! [`trace`] (`ferry trace`) follows a new connection through the running
//! lab's namespaces, hop by hop, as the kernel state there routes it.

pub mod cleanup;
pub mod dns;
pub mod ingress;
pub mod trace;
pub mod underlay;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The underlay bridge in the root namespace.
pub const BRIDGE: &str = "ferry0";
/// Host ends of the nodes' veth pairs: `ferry-n<i>`.
pub const VETH_PREFIX: &str = "ferry-n";
/// Node namespaces (`lab-node-<i>`) and pod sandboxes
/// (`lab-node-<i>-<ns>-<pod>`) start with this.
pub const NODE_PREFIX: &str = "lab-node-";
/// The bridge's address: the API server and "the host" as nodes see it.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 1);
/// MTU of the underlay (flannel.1 gets 50 less).
pub const UNDERLAY_MTU: u32 = 1500;
/// Names the running `ferry up` (pid, then data directory).
pub const PID_FILE: &str = "/run/ferry/lab.pid";
/// The `ferry` subcommands the lab runs per node, as child processes.
pub const AGENTS: [&str; 3] = ["node", "overlay", "proxy"];
/// API server port, on 127.0.0.1 and on the gateway.
pub const API_PORT: u16 = 6443;
/// LoadBalancer addresses the lab hands out. The host routes them to
/// lab-node-1, as a layer-2 load balancer (MetalLB, ServiceLB) would
/// attract them to one node; that node's proxy takes it from there.
pub const LOAD_BALANCER_POOL: (Ipv4Addr, u8) = (Ipv4Addr::new(172, 30, 1, 0), 24);

/// Settings of `ferry up`.
#[derive(Clone, Debug)]
pub struct Config {
    pub nodes: usize,
    pub cluster_cidr: String,
    pub service_cidr: String,
    pub node_cidr_mask_size: u8,
    pub data_dir: PathBuf,
    /// `--upstream` of the DNS pods (`ip[:port]`, or `none`); empty: the
    /// host's nameservers that pods can reach (see [`dns::upstreams`]).
    pub dns_upstreams: Vec<String>,
}

/// The 10th address of the service CIDR: the cluster DNS Service's IP.
pub fn cluster_dns_ip(service_cidr: &str) -> anyhow::Result<Ipv4Addr> {
    let (ip, len) = service_cidr
        .split_once('/')
        .context("service CIDR must be <ip>/<prefix>")?;
    let ip: Ipv4Addr = ip.parse().context("service CIDR address")?;
    let len: u32 = len.parse().context("service CIDR prefix")?;
    anyhow::ensure!(len <= 28, "service CIDR {service_cidr} is too small");
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    Ok(Ipv4Addr::from((u32::from(ip) & mask) + 10))
}

/// The running lab's pid and data directory, if its `ferry up` is alive.
fn running_lab() -> Option<(i32, PathBuf)> {
    let text = std::fs::read_to_string(PID_FILE).ok()?;
    let mut lines = text.lines();
    let pid: i32 = lines.next()?.trim().parse().ok()?;
    let dir = PathBuf::from(lines.next().unwrap_or_default());
    let alive = kill(Pid::from_raw(pid), None).is_ok()
        && std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| c.split('\0').nth(1) == Some("up"));
    alive.then_some((pid, dir))
}

fn require_root() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the lab needs root (network namespaces, links, nf_tables): run it with sudo");
    }
    Ok(())
}

fn print_removed(what: &str, removed: &cleanup::Removed) {
    if removed.is_empty() {
        return;
    }
    println!(
        "{what}: {} process(es), {} namespace(s) ({}), {} link(s) ({})",
        removed.processes,
        removed.namespaces.len(),
        removed.namespaces.join(", "),
        removed.links.len(),
        removed.links.join(", ")
    );
}

/// `ferry up`: runs the lab until Ctrl-C or SIGTERM, then tears it down.
pub async fn up(config: Config) -> anyhow::Result<()> {
    require_root()?;
    anyhow::ensure!(
        (1..=200).contains(&config.nodes),
        "--nodes must be between 1 and 200"
    );
    let dns_upstreams = dns::upstreams(
        &config.dns_upstreams,
        &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    )?;
    if let Some((pid, dir)) = running_lab() {
        bail!(
            "a lab is already running (pid {pid}, data in {}); stop it with `ferry down`",
            dir.display()
        );
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let data_dir = config.data_dir.canonicalize()?;
    let config = Config {
        data_dir: data_dir.clone(),
        dns_upstreams,
        ..config
    };
    let removed = cleanup::cleanup(&data_dir).await?;
    print_removed("Cleaned up a previous lab", &removed);
    if let Some(parent) = Path::new(PID_FILE).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(
        PID_FILE,
        format!("{}\n{}\n", std::process::id(), data_dir.display()),
    )?;

    // Orphans of the agents (container processes) come to us, so they
    // are reaped at teardown instead of lingering as zombies.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!("cannot become a child subreaper: {e}");
    }
    let mut lab = Running::default();
    let result = run(&config, &mut lab).await;
    if let Err(e) = &result {
        eprintln!("ferry up failed: {e:#}");
    }
    println!("Stopping the lab...");
    lab.stop().await;
    let removed = cleanup::cleanup(&data_dir).await?;
    cleanup::reap_orphans();
    print_removed("Removed", &removed);
    let _ = std::fs::remove_file(PID_FILE);
    println!("Lab stopped.");
    result
}

/// What `ferry up` started, so it can stop it.
#[derive(Default)]
struct Running {
    apiserver: Option<ferry_apiserver::RunningServer>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    async fn stop(&mut self) {
        // Aborting a supervisor drops its child, which kills it.
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
        if let Some(server) = self.apiserver.take() {
            server.shutdown();
        }
    }
}

async fn run(config: &Config, lab: &mut Running) -> anyhow::Result<()> {
    let started = Instant::now();
    let data_dir = &config.data_dir;
    let dns_ip = cluster_dns_ip(&config.service_cidr)?;
    let dns_upstreams = &config.dns_upstreams;
    println!(
        "Starting the Ferry lab: {} node(s), cluster CIDR {}, service CIDR {}",
        config.nodes, config.cluster_cidr, config.service_cidr
    );

    let nl = ferry_netlink::Netlink::connect()?;
    underlay::create_bridge(&nl)
        .await
        .context("creating the underlay bridge")?;
    for i in 1..=config.nodes {
        underlay::create_node(&nl, i)
            .await
            .with_context(|| format!("creating {}", underlay::node_name(i)))?;
    }
    let (pool, pool_len) = LOAD_BALANCER_POOL;
    nl.replace_route(&ferry_netlink::route::Route::to(pool, pool_len).via(underlay::node_ip(1)))
        .await
        .context("routing the LoadBalancer pool")?;
    println!(
        "  underlay     {BRIDGE} {GATEWAY}/24; {}{} with eth0 {}..{}",
        NODE_PREFIX,
        if config.nodes == 1 {
            "1".to_string()
        } else {
            format!("{{1..{}}}", config.nodes)
        },
        underlay::node_ip(1),
        underlay::node_ip(config.nodes)
    );

    // A fresh cluster each time; the CA and token are kept so an exported
    // kubeconfig stays valid across runs.
    let api_dir = data_dir.join("apiserver");
    let store = api_dir.join("store");
    if store.exists() {
        std::fs::remove_dir_all(&store)?;
    }
    let mut api = ferry_apiserver::Config::new(&api_dir);
    api.bind_addresses = vec![
        SocketAddr::from(([127, 0, 0, 1], API_PORT)),
        SocketAddr::from((GATEWAY, API_PORT)),
    ];
    api.tls_sans = vec![GATEWAY.to_string()];
    api.service_cidr = config.service_cidr.clone();
    api.advertise_address = Some(SocketAddr::from((GATEWAY, API_PORT)));
    let server = ferry_apiserver::start(api)
        .await
        .context("starting the API server")?;
    let admin = std::fs::read_to_string(&server.kubeconfig)?;
    lab.apiserver = Some(server);
    let kubeconfig = data_dir.join("kubeconfig");
    write_private(&kubeconfig, &admin)?;
    let node_kubeconfig = data_dir.join("node-kubeconfig");
    write_private(
        &node_kubeconfig,
        &admin.replace(
            &format!("https://127.0.0.1:{API_PORT}"),
            &format!("https://{GATEWAY}:{API_PORT}"),
        ),
    )?;
    println!("  apiserver    https://127.0.0.1:{API_PORT}, https://{GATEWAY}:{API_PORT}");
    println!(
        "  LoadBalancer {pool}/{pool_len}, routed via {}",
        underlay::node_ip(1)
    );

    let client = client(&kubeconfig).await?;
    let controllers = ferry_controllers::Config {
        leader_elect: false,
        cluster_cidr: config.cluster_cidr.clone(),
        node_cidr_mask_size: config.node_cidr_mask_size,
        load_balancer_pool: vec![format!("{pool}/{pool_len}")],
        ..ferry_controllers::Config::default()
    };
    let c = client.clone();
    lab.tasks.push(tokio::spawn(async move {
        if let Err(e) = ferry_controllers::run(c, controllers).await {
            eprintln!("controllers stopped: {e:#}");
        }
    }));
    println!("  controllers  running");

    let exe = std::env::current_exe()?;
    let logs = data_dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    for i in 1..=config.nodes {
        let node = underlay::node_name(i);
        let state_dir = data_dir.join("nodes").join(&node);
        let node_ip = underlay::node_ip(i).to_string();
        let state_dir = state_dir.display().to_string();
        let dns = dns_ip.to_string();
        // What each of AGENTS gets beyond the common flags.
        let extra_args: [Vec<&str>; 3] = [
            vec![
                "--internal-ip",
                &node_ip,
                "--state-dir",
                &state_dir,
                "--cluster-dns",
                &dns,
                "--cluster-domain",
                "cluster.local",
            ],
            vec![
                "--iface",
                "eth0",
                "--ip-masq",
                "--cluster-cidr",
                &config.cluster_cidr,
            ],
            vec!["--cluster-cidr", &config.cluster_cidr],
        ];
        for (what, extra) in AGENTS.into_iter().zip(extra_args) {
            // Every agent: which API server, which Node, which namespace.
            let mut args: Vec<String> = vec![
                what.into(),
                "--kubeconfig".into(),
                node_kubeconfig.display().to_string(),
                "--node-name".into(),
                node.clone(),
                "--netns".into(),
                node.clone(),
            ];
            args.extend(extra.into_iter().map(String::from));
            let log = logs.join(format!("{node}-{what}.log"));
            lab.tasks.push(tokio::spawn(supervise(
                exe.clone(),
                args,
                log,
                format!("{node} {what}"),
            )));
        }
    }

    wait_ready(&client, config.nodes, Duration::from_secs(120)).await?;
    dns::install(&client, dns_ip, &node_kubeconfig, dns_upstreams)
        .await
        .context("deploying the cluster DNS")?;
    dns::wait_ready(&client, Duration::from_secs(60)).await?;
    println!(
        "  dns          {} {dns_ip} ({}), {} {}/{} ready, upstream {}",
        dns::SERVICE,
        dns::PORTS,
        dns::DEPLOYMENT,
        dns::REPLICAS,
        dns::REPLICAS,
        dns_upstreams.join(", ")
    );
    ingress::install(&client, &node_kubeconfig)
        .await
        .context("deploying the Ingress controller")?;
    ingress::wait_ready(&client, config.nodes, Duration::from_secs(60)).await?;
    println!(
        "  ingress      {} (IngressClass {}, default) on :80 and :443 of every node",
        ingress::DAEMONSET,
        ingress::CLASS
    );
    println!(
        "Cluster ready in {:.1}s: {} node(s).\n\n  export KUBECONFIG={}\n  kubectl get nodes -o wide\n  ip netns exec lab-node-1 ip -d link show flannel.1\n\nLogs in {}. Stop with Ctrl-C or `ferry down`.",
        started.elapsed().as_secs_f64(),
        config.nodes,
        kubeconfig.display(),
        logs.display()
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

async fn client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// Runs one agent, restarting it (1 s, doubling to 30 s) when it exits.
/// Its own process group keeps a terminal's Ctrl-C away from it: `ferry up`
/// decides when agents stop. Dropping the task kills the child.
async fn supervise(exe: PathBuf, args: Vec<String>, log: PathBuf, what: String) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let spawned = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|file| {
                tokio::process::Command::new(&exe)
                    .args(&args)
                    .env(
                        "RUST_LOG",
                        std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
                    )
                    .stdin(std::process::Stdio::null())
                    .stdout(file.try_clone()?)
                    .stderr(file)
                    .process_group(0)
                    .kill_on_drop(true)
                    .spawn()
            });
        let since = Instant::now();
        match spawned {
            Ok(mut child) => match child.wait().await {
                Ok(status) => eprintln!(
                    "{what} exited ({status}); restarting (log: {})",
                    log.display()
                ),
                Err(e) => eprintln!("{what}: {e}"),
            },
            Err(e) => eprintln!("{what} could not start: {e}"),
        }
        if since.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_secs(1);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Waits until `count` lab nodes are Ready with a podCIDR and their overlay
/// annotations, printing each node as it gets there.
async fn wait_ready(client: &kube::Client, count: usize, timeout: Duration) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + timeout;
    let mut shown = std::collections::BTreeSet::new();
    loop {
        let list = nodes.list(&Default::default()).await?;
        for node in &list.items {
            let name = node.metadata.name.clone().unwrap_or_default();
            if shown.contains(&name) || !name.starts_with(NODE_PREFIX) {
                continue;
            }
            let ready = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let cidr = node.spec.as_ref().and_then(|s| s.pod_cidr.clone());
            let overlay = node
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key("flannel.alpha.coreos.com/backend-data"));
            if let (true, Some(cidr), true) = (ready, cidr, overlay) {
                let ip = node
                    .status
                    .as_ref()
                    .and_then(|s| s.addresses.as_ref())
                    .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
                    .map(|a| a.address.clone())
                    .unwrap_or_default();
                println!("  {name:<12} Ready, InternalIP {ip}, podCIDR {cidr}, flannel.1 up");
                shown.insert(name);
            }
        }
        if shown.len() >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {count} nodes became ready within {}s; see the logs",
                shown.len(),
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `ferry down`: stops the running `ferry up` (SIGTERM, SIGKILL after 30 s)
/// and removes whatever is left, also after a crash.
pub async fn down(data_dir: &Path) -> anyhow::Result<()> {
    require_root()?;
    let mut data_dir = data_dir.to_path_buf();
    if let Some((pid, dir)) = running_lab() {
        println!("Stopping ferry up (pid {pid})...");
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while kill(Pid::from_raw(pid), None).is_ok() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if kill(Pid::from_raw(pid), None).is_ok() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if !dir.as_os_str().is_empty() {
            data_dir = dir;
        }
    }
    let removed = cleanup::cleanup(&data_dir).await?;
    if removed.is_empty() {
        println!("Nothing left to remove.");
    } else {
        print_removed("Removed", &removed);
    }
    let _ = std::fs::remove_file(PID_FILE);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_ip_is_the_tenth_address() {
        assert_eq!(
            cluster_dns_ip("10.96.0.0/12").ok(),
            Some(Ipv4Addr::new(10, 96, 0, 10))
        );
        assert_eq!(
            cluster_dns_ip("10.3.0.0/24").ok(),
            Some(Ipv4Addr::new(10, 3, 0, 10))
        );
        assert!(cluster_dns_ip("10.3.0.0/30").is_err());
        assert!(cluster_dns_ip("nonsense").is_err());
    }

    #[test]
    fn node_names_and_addresses() {
        assert_eq!(underlay::node_name(2), "lab-node-2");
        assert_eq!(underlay::node_ip(3), Ipv4Addr::new(172, 30, 0, 13));
    }
}
