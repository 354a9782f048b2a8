//! The six commands, from a parsed environment and config to the reply a
//! runtime reads on stdout.

use std::collections::HashSet;
use std::io;
use std::net::Ipv4Addr;
use std::path::Path;

use ferry_netlink::{Link, NetNs, Netlink, Route};

use crate::config::{Ipv4Cidr, NetworkConfig, reply_version};
use crate::fault::{self, Stage};
use crate::ipam::{self, Lease, Store};
use crate::network;
use crate::spec::{
    Attachment, CniError, CniResult, Command, Environment, ErrorCode, Interface, IpConfig,
    RouteEntry, Version, version_json,
};

/// What to print on stdout and the exit status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The result or error JSON; empty when a command has no output.
    pub stdout: String,
    /// 0 for success, 1 for an error.
    pub exit_code: i32,
}

impl Response {
    fn success(stdout: String) -> Response {
        Response {
            stdout,
            exit_code: 0,
        }
    }

    fn failure(error: &CniError, cni_version: &str) -> Response {
        Response {
            stdout: error.to_json(cni_version),
            exit_code: 1,
        }
    }
}

/// Runs one invocation. `lookup` reads environment variables; `stdin` is
/// the network configuration.
pub fn run(lookup: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Response {
    let environment = match Environment::from_lookup(lookup) {
        Ok(environment) => environment,
        Err(error) => return Response::failure(&error, &reply_version(stdin)),
    };
    if environment.command == Command::Version {
        return Response::success(version_json());
    }
    let config = match NetworkConfig::parse(stdin) {
        Ok(config) => config,
        Err(error) => return Response::failure(&error, &reply_version(stdin)),
    };
    let outcome = check_version(environment.command, config.version).and_then(|()| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| {
                CniError::new(
                    ErrorCode::Io,
                    format!("starting the async runtime: {error}"),
                )
            })?;
        runtime.block_on(dispatch(&environment, &config))
    });
    match outcome {
        Ok(Some(result)) => match serde_json::to_string(&result) {
            Ok(json) => Response::success(json),
            Err(error) => Response::failure(
                &CniError::new(ErrorCode::Io, format!("encoding the result: {error}")),
                &config.cni_version,
            ),
        },
        Ok(None) => Response::success(String::new()),
        Err(error) => {
            tracing::debug!(command = ?environment.command, %error, "CNI command failed");
            Response::failure(&error, &config.cni_version)
        }
    }
}

/// CHECK came with 0.4.0, GC and STATUS with 1.1.0.
fn check_version(command: Command, version: Version) -> Result<(), CniError> {
    let needed = match command {
        Command::Check => Version::CHECK,
        Command::Gc | Command::Status => Version::GC_STATUS,
        Command::Add | Command::Del | Command::Version => return Ok(()),
    };
    if version < needed {
        return Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!("config version {version} does not allow {command:?} (needs {needed})"),
        ));
    }
    Ok(())
}

async fn dispatch(
    environment: &Environment,
    config: &NetworkConfig,
) -> Result<Option<CniResult>, CniError> {
    match environment.command {
        Command::Add => add(environment, config).await.map(Some),
        Command::Del => del(environment, config).await.map(|()| None),
        Command::Check => check(environment, config).await.map(|()| None),
        Command::Gc => gc(config).await.map(|()| None),
        Command::Status => status(config).map(|()| None),
        // Answered before the config is read.
        Command::Version => Ok(None),
    }
}

fn attachment(environment: &Environment) -> Result<Attachment, CniError> {
    Ok(Attachment {
        container_id: environment.container_id()?.to_string(),
        ifname: environment.ifname()?.to_string(),
    })
}

/// Opens the container's namespace; a missing one is "unknown container".
fn open_container_netns(path: &Path) -> Result<NetNs, CniError> {
    NetNs::open(path).map_err(|error| {
        let code = match error.raw_os_error() {
            Some(libc::ENOENT) => ErrorCode::UnknownContainer,
            _ => ErrorCode::Io,
        };
        CniError::new(code, format!("container network namespace: {error}"))
    })
}

fn connect_host() -> Result<Netlink, CniError> {
    Netlink::connect().map_err(|error| {
        CniError::new(
            ErrorCode::Kernel,
            format!("host network namespace: {error}"),
        )
    })
}

/// ADD: address, bridge, veth, container setup. On failure everything done
/// so far is undone in reverse order, so nothing is left behind.
async fn add(environment: &Environment, config: &NetworkConfig) -> Result<CniResult, CniError> {
    let attachment = attachment(environment)?;
    let netns_path = environment.netns()?;
    let ranges = config.ranges()?;
    let pod_netns = open_container_netns(netns_path)?;
    let store = Store::new(config.store_dir());

    let lease = ipam::allocate(&store, ranges, &attachment)?;
    fault::pause_point(Stage::IpamReserved);
    match attach(config, &attachment, &pod_netns, &lease).await {
        Ok(result) => {
            tracing::debug!(
                container = %attachment.container_id, ip = %lease.ip, "attached container"
            );
            Ok(result)
        }
        Err(error) => {
            let mut undo_failures = Vec::new();
            match connect_host() {
                Ok(host) => {
                    if let Err(undo) =
                        network::remove_veth(&host, None, &config.name, &attachment).await
                    {
                        undo_failures.push(undo.msg);
                    }
                }
                Err(undo) => undo_failures.push(undo.msg),
            }
            if let Err(undo) = ipam::release(&store, &attachment) {
                undo_failures.push(undo.msg);
            }
            Err(if undo_failures.is_empty() {
                error.with_details(format!(
                    "rolled back: released {} and removed the veth",
                    lease.ip
                ))
            } else {
                error.with_details(format!("rollback incomplete: {}", undo_failures.join("; ")))
            })
        }
    }
}

async fn attach(
    config: &NetworkConfig,
    attachment: &Attachment,
    pod_netns: &NetNs,
    lease: &Lease,
) -> Result<CniResult, CniError> {
    let host = connect_host()?;
    // Opening the container-side socket needs a thread; overlap it with
    // the bridge work.
    let (pod, bridge) = tokio::join!(
        Netlink::connect_in(pod_netns),
        network::ensure_bridge(&host, config, lease)
    );
    let pod = pod.map_err(|error| {
        CniError::new(
            ErrorCode::Kernel,
            format!("container network namespace: {error}"),
        )
    })?;
    let bridge = bridge?;
    let host_veth = network::create_veth(&host, config, &bridge, pod_netns, attachment).await?;
    fault::pause_point(Stage::VethCreated);
    let routes = network::container_routes(config, lease);
    let container = network::configure_container(&pod, &attachment.ifname, lease, &routes).await?;
    Ok(add_result(
        config,
        pod_netns.path(),
        lease,
        &routes,
        [&bridge, &host_veth, &container],
    ))
}

fn add_result(
    config: &NetworkConfig,
    sandbox: &Path,
    lease: &Lease,
    routes: &[Route],
    [bridge, host_veth, container]: [&Link; 3],
) -> CniResult {
    let mtu = |link: &Link| {
        (config.version >= Version::GC_STATUS && config.mtu.is_some()).then_some(link.mtu)
    };
    let interface = |link: &Link, sandbox: String| Interface {
        name: link.name.clone(),
        mac: link.mac.map(|mac| mac.to_string()).unwrap_or_default(),
        mtu: mtu(link),
        sandbox,
    };
    CniResult {
        cni_version: config.cni_version.clone(),
        interfaces: vec![
            interface(bridge, String::new()),
            interface(host_veth, String::new()),
            interface(container, sandbox.display().to_string()),
        ],
        ips: vec![IpConfig {
            version: (config.version < Version::UNVERSIONED_IPS).then(|| "4".to_string()),
            address: format!("{}/{}", lease.ip, lease.range.subnet.prefix_len()),
            gateway: Some(lease.range.gateway.to_string()),
            interface: Some(2),
        }],
        routes: routes
            .iter()
            .map(|route| RouteEntry {
                dst: format!("{}/{}", route.destination, route.prefix_len),
                gw: route.gateway.map(|gw| gw.to_string()),
            })
            .collect(),
        dns: config.dns.clone(),
    }
}

/// DEL: interfaces (the container's if its namespace still exists, then
/// the host end by name), then the address. Idempotent.
async fn del(environment: &Environment, config: &NetworkConfig) -> Result<(), CniError> {
    let attachment = attachment(environment)?;
    let host = connect_host()?;
    let pod = match environment.netns.as_deref() {
        Some(path) => match NetNs::open(path) {
            Ok(netns) => match Netlink::connect_in(&netns).await {
                Ok(pod) => Some(pod),
                // A path that is no longer a namespace: nothing to clean there.
                Err(error) => {
                    tracing::debug!(%error, "skipping the container side");
                    None
                }
            },
            Err(error) => {
                tracing::debug!(%error, "container namespace is gone");
                None
            }
        },
        None => None,
    };
    network::remove_veth(&host, pod.as_ref(), &config.name, &attachment).await?;
    let released = ipam::release(&Store::new(config.store_dir()), &attachment)?;
    tracing::debug!(container = %attachment.container_id, ?released, "detached container");
    Ok(())
}

/// CHECK: the container interface, its addresses and routes are as the
/// previous result says, the host end is on the bridge, and the address is
/// still reserved.
async fn check(environment: &Environment, config: &NetworkConfig) -> Result<(), CniError> {
    let attachment = attachment(environment)?;
    let failed = |msg: String| CniError::new(ErrorCode::CheckFailed, msg);
    let previous: CniResult = serde_json::from_value(
        config
            .prev_result
            .clone()
            .ok_or_else(|| CniError::config("CHECK needs prevResult in the config"))?,
    )
    .map_err(|error| CniError::config(format!("prevResult is not a CNI result: {error}")))?;
    let (index, expected) = previous
        .interfaces
        .iter()
        .enumerate()
        .find(|(_, interface)| interface.name == attachment.ifname && !interface.sandbox.is_empty())
        .ok_or_else(|| {
            CniError::config(format!(
                "prevResult lists no container interface {}",
                attachment.ifname
            ))
        })?;
    let expected_ips: Vec<(Ipv4Addr, u8)> = previous
        .ips
        .iter()
        .filter(|ip| ip.interface.is_none_or(|i| i == index))
        .map(|ip| parse_address(&ip.address))
        .collect::<Result<_, _>>()?;

    let pod_netns = open_container_netns(environment.netns()?)?;
    let pod = Netlink::connect_in(&pod_netns).await?;
    let ifname = &attachment.ifname;
    let link = pod
        .link(ifname)
        .await?
        .ok_or_else(|| failed(format!("interface {ifname} is missing in the container")))?;
    if !link.up {
        return Err(failed(format!("interface {ifname} is down")));
    }
    if !expected.mac.is_empty()
        && link.mac.map(|mac| mac.to_string()) != Some(expected.mac.to_ascii_lowercase())
    {
        return Err(failed(format!(
            "interface {ifname} has MAC {}, not {}",
            link.mac.map(|mac| mac.to_string()).unwrap_or_default(),
            expected.mac
        )));
    }
    if let Some(mtu) = expected.mtu
        && link.mtu != mtu
    {
        return Err(failed(format!(
            "interface {ifname} has MTU {}, not {mtu}",
            link.mtu
        )));
    }
    let addresses = pod.addresses(Some(link.index)).await?;
    for (ip, prefix_len) in &expected_ips {
        if !addresses
            .iter()
            .any(|a| a.address == *ip && a.prefix_len == *prefix_len)
        {
            return Err(failed(format!(
                "address {ip}/{prefix_len} is missing on {ifname}"
            )));
        }
    }
    let routes = pod.routes().await?;
    for entry in &previous.routes {
        let destination = entry
            .dst
            .parse::<Ipv4Cidr>()
            .map_err(|error| CniError::config(format!("prevResult route: {error}")))?;
        let gateway = entry
            .gw
            .as_deref()
            .map(|gw| {
                gw.parse::<Ipv4Addr>().map_err(|_| {
                    CniError::config(format!("prevResult route gateway {gw:?} is not IPv4"))
                })
            })
            .transpose()?;
        let present = routes.iter().any(|route| {
            route.destination == destination.network()
                && route.prefix_len == destination.prefix_len()
                && gateway.is_none_or(|gw| route.gateway == Some(gw))
        });
        if !present {
            return Err(failed(format!(
                "route {} is missing in the container",
                entry.dst
            )));
        }
    }

    let host = connect_host()?;
    let bridge = host
        .link(&config.bridge)
        .await?
        .ok_or_else(|| failed(format!("bridge {} is missing", config.bridge)))?;
    let host_veth_name = network::host_veth_name(&config.name, &attachment);
    let host_veth = host
        .link(&host_veth_name)
        .await?
        .ok_or_else(|| failed(format!("host veth {host_veth_name} is missing")))?;
    if host_veth.controller != Some(bridge.index) {
        return Err(failed(format!(
            "host veth {host_veth_name} is not a port of bridge {}",
            config.bridge
        )));
    }

    let leases = ipam::leases_of(&Store::new(config.store_dir()), &attachment)?;
    for (ip, _) in &expected_ips {
        if !leases.iter().any(|lease| lease.ip == *ip) {
            return Err(failed(format!("{ip} is not reserved for this container")));
        }
    }
    Ok(())
}

fn parse_address(text: &str) -> Result<(Ipv4Addr, u8), CniError> {
    let invalid = || CniError::config(format!("prevResult address {text:?} is not IPv4 CIDR"));
    let (ip, prefix) = text.split_once('/').ok_or_else(invalid)?;
    Ok((
        ip.parse().map_err(|_| invalid())?,
        prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(invalid)?,
    ))
}

/// GC: host veths and reservations of attachments not in
/// `cni.dev/valid-attachments` are removed. Both sweeps run even if one
/// fails; the first error is reported.
async fn gc(config: &NetworkConfig) -> Result<(), CniError> {
    let valid: HashSet<Attachment> = config
        .valid_attachments
        .clone()
        .ok_or_else(|| CniError::config("GC needs cni.dev/valid-attachments in the config"))?
        .into_iter()
        .collect();
    let veths = match connect_host() {
        Ok(host) => {
            network::remove_stale_veths(&host, &config.name, |attachment| {
                valid.contains(attachment)
            })
            .await
        }
        Err(error) => Err(error),
    };
    let addresses = ipam::collect_garbage(&Store::new(config.store_dir()), &valid);
    if let Ok(removed) = &veths {
        tracing::debug!(?removed, "GC removed host veths");
    }
    if let Ok(released) = &addresses {
        tracing::debug!(released = released.len(), "GC released addresses");
    }
    veths?;
    addresses?;
    Ok(())
}

/// STATUS: ADD can succeed when a subnet is configured and the store is
/// writable and has a free address.
fn status(config: &NetworkConfig) -> Result<(), CniError> {
    let ranges = config.ranges().map_err(|error| {
        CniError::new(ErrorCode::NotAvailable, format!("not ready: {}", error.msg))
    })?;
    ipam::check_available(&Store::new(config.store_dir()), ranges)
}

/// The plugin as a process: environment from `std::env`, config from
/// stdin, reply on stdout. Returns the exit status.
pub fn main() -> i32 {
    let mut stdin = Vec::new();
    if let Err(error) = io::Read::read_to_end(&mut io::stdin(), &mut stdin) {
        let error = CniError::new(ErrorCode::Io, format!("reading stdin: {error}"));
        println!("{}", error.to_json(crate::spec::LATEST_VERSION));
        return 1;
    }
    let response = run(|key| std::env::var(key).ok(), &stdin);
    if !response.stdout.is_empty() {
        println!("{}", response.stdout);
    }
    response.exit_code
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |key| vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    fn json(response: &Response) -> serde_json::Value {
        serde_json::from_str(&response.stdout).expect("stdout is JSON")
    }

    #[test]
    fn version_needs_no_config() {
        let response = run(env(&[("CNI_COMMAND", "VERSION")]), b"");
        assert_eq!(response.exit_code, 0);
        assert_eq!(json(&response)["cniVersion"], "1.1.0");
    }

    #[test]
    fn missing_command_is_code_4() {
        let response = run(env(&[]), br#"{"cniVersion":"1.0.0"}"#);
        assert_eq!(response.exit_code, 1);
        assert_eq!(json(&response)["code"], 4);
        assert_eq!(json(&response)["cniVersion"], "1.0.0");
    }

    #[test]
    fn add_without_subnet_is_code_7() {
        let response = run(
            env(&[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_NETNS", "/nonexistent/netns"),
                ("CNI_IFNAME", "eth0"),
            ]),
            br#"{"cniVersion":"1.1.0","name":"n","type":"ferry"}"#,
        );
        assert_eq!(response.exit_code, 1);
        assert_eq!(json(&response)["code"], 7);
    }

    #[test]
    fn add_into_missing_netns_is_code_3() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = serde_json::json!({
            "cniVersion": "1.1.0", "name": "n", "type": "ferry",
            "ipam": { "subnet": "10.0.0.0/24", "dataDir": dir.path() }
        });
        let response = run(
            env(&[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_NETNS", "/nonexistent/netns"),
                ("CNI_IFNAME", "eth0"),
            ]),
            config.to_string().as_bytes(),
        );
        assert_eq!(json(&response)["code"], 3);
        // Nothing was reserved.
        assert!(!dir.path().join("n").exists());
    }

    #[test]
    fn old_versions_cannot_gc_or_check() {
        for (command, version) in [("GC", "1.0.0"), ("STATUS", "1.0.0"), ("CHECK", "0.3.1")] {
            let config = format!(r#"{{"cniVersion":"{version}","name":"n","type":"ferry"}}"#);
            let response = run(
                env(&[
                    ("CNI_COMMAND", command),
                    ("CNI_CONTAINERID", "c1"),
                    ("CNI_NETNS", "/x"),
                    ("CNI_IFNAME", "eth0"),
                ]),
                config.as_bytes(),
            );
            assert_eq!(json(&response)["code"], 1, "{command} {version}");
        }
    }

    #[test]
    fn status_reports_missing_subnet_as_50() {
        let response = run(
            env(&[("CNI_COMMAND", "STATUS")]),
            br#"{"cniVersion":"1.1.0","name":"n","type":"ferry"}"#,
        );
        assert_eq!(json(&response)["code"], 50);
    }

    fn link(index: u32, name: &str) -> Link {
        Link {
            index,
            name: name.into(),
            kind: None,
            mac: Some(ferry_netlink::MacAddress([
                0x0a,
                0x58,
                0,
                0,
                0,
                index as u8,
            ])),
            mtu: 1450,
            up: true,
            controller: None,
            hairpin: None,
            vxlan: None,
            alias: None,
        }
    }

    fn result_for(cni_version: &str) -> Value {
        let config = NetworkConfig::parse(
            serde_json::json!({
                "cniVersion": cni_version, "name": "n", "type": "ferry", "mtu": 1450,
                "podCIDR": "10.244.1.0/24", "dns": { "nameservers": ["10.96.0.10"] }
            })
            .to_string()
            .as_bytes(),
        )
        .expect("config");
        let range = config.ranges().expect("ranges")[0];
        let lease = Lease {
            ip: "10.244.1.7".parse().expect("ip"),
            range,
            reused: false,
        };
        let routes = network::container_routes(&config, &lease);
        let result = add_result(
            &config,
            Path::new("/run/netns/p"),
            &lease,
            &routes,
            [&link(1, "cni0"), &link(2, "veth0"), &link(3, "eth0")],
        );
        serde_json::to_value(&result).expect("json")
    }

    #[test]
    fn add_result_follows_the_requested_version() {
        let current = result_for("1.1.0");
        assert_eq!(current["cniVersion"], "1.1.0");
        assert_eq!(current["ips"][0]["address"], "10.244.1.7/24");
        assert_eq!(current["ips"][0]["gateway"], "10.244.1.1");
        assert_eq!(current["ips"][0]["interface"], 2);
        assert!(current["ips"][0].get("version").is_none());
        assert_eq!(current["interfaces"][2]["sandbox"], "/run/netns/p");
        assert_eq!(current["interfaces"][2]["mtu"], 1450);
        assert!(current["interfaces"][0].get("sandbox").is_none());
        assert_eq!(
            current["routes"][0],
            serde_json::json!({ "dst": "0.0.0.0/0", "gw": "10.244.1.1" })
        );
        assert_eq!(current["dns"]["nameservers"][0], "10.96.0.10");

        let old = result_for("0.4.0");
        assert_eq!(old["ips"][0]["version"], "4");
        assert!(old["interfaces"][2].get("mtu").is_none());
    }

    #[test]
    fn gc_without_attachment_list_is_refused() {
        let response = run(
            env(&[("CNI_COMMAND", "GC")]),
            br#"{"cniVersion":"1.1.0","name":"n","type":"ferry"}"#,
        );
        assert_eq!(json(&response)["code"], 7);
    }
}
