//! `ferry` as a CNI plugin, driven exactly as a container runtime drives
//! one: the binary is executed with no arguments, `CNI_*` variables in an
//! otherwise empty environment and the network config on stdin; the reply
//! is read from stdout and the exit status.
//!
//! Each test builds its own "node": a network namespace the plugin runs in
//! (through `nsenter --net`, the way the lab's node agent runs it), plus
//! one namespace per pod. All of them, and the store directory, are removed
//! when the test ends, pass or fail. Tests need root and network
//! namespaces; without them they are skipped with a reason, except under
//! `CI=true`, where that is a failure.

mod support;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferry_netlink::{Link, NetNs, Netlink, netns};
use serde_json::{Value, json};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
const NETWORK: &str = "lab";

/// Whether this process can run the tests (root, network namespaces,
/// nsenter); skips, or fails under CI.
fn capable(test: &str) -> bool {
    if !Path::new("/usr/bin/nsenter").exists() && which("nsenter").is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test} needs nsenter (util-linux) under CI=true"
        );
        eprintln!("skipping {test}: nsenter (util-linux) is not installed");
        return false;
    }
    support::can_use_netns(test)
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.exists())
    })
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// The plugin's answer.
#[derive(Debug)]
struct Reply {
    status: i32,
    stdout: String,
    stderr: String,
}

impl Reply {
    fn from_output(output: Output) -> Reply {
        Reply {
            status: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("stdout is not JSON ({error}): {self:?}"))
    }

    /// Asserts success and returns the result JSON (if any).
    fn ok(self) -> Value {
        assert_eq!(
            self.status, 0,
            "plugin failed: {} (stderr: {})",
            self.stdout, self.stderr
        );
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts failure with the error JSON's `code`.
    fn error_code(&self) -> u64 {
        assert_eq!(
            self.status, 1,
            "plugin did not fail: {} (stderr: {})",
            self.stdout, self.stderr
        );
        let error = self.json();
        assert!(error["msg"].is_string(), "{error}");
        assert!(error["cniVersion"].is_string(), "{error}");
        error["code"].as_u64().expect("numeric code")
    }
}

/// A child plugin process, killed if the test ends before it does.
struct Running(Option<Child>);

impl Running {
    fn wait(mut self) -> Reply {
        let child = self.0.take().expect("running");
        Reply::from_output(child.wait_with_output().expect("plugin exits"))
    }

    fn kill(mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Blocks until the plugin reports it paused at a fault point.
    fn wait_for_pause(&mut self) {
        let child = self.0.as_mut().expect("running");
        let stderr = child.stderr.take().expect("stderr piped");
        let mut lines = BufReader::new(stderr).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("paused at") => return,
                Some(Ok(_)) => {}
                _ => panic!("plugin exited before pausing"),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One test's node namespace, pod namespaces and IPAM store.
struct Lab {
    prefix: String,
    node: String,
    pods: std::sync::Mutex<Vec<String>>,
    data: tempfile::TempDir,
}

impl Lab {
    fn new(tag: &str) -> Option<Lab> {
        if !capable(tag) {
            return None;
        }
        let prefix = format!("fcni-{}-{tag}", std::process::id());
        let node = format!("{prefix}-node");
        let _ = netns::delete(&node);
        netns::create(&node).expect("create node netns");
        Some(Lab {
            prefix,
            node,
            pods: std::sync::Mutex::new(Vec::new()),
            data: tempfile::tempdir().expect("tempdir"),
        })
    }

    /// Creates the pod namespace `pod-<n>` and returns its path.
    fn pod(&self, n: usize) -> String {
        let name = self.pod_name(n);
        let _ = netns::delete(&name);
        netns::create(&name).expect("create pod netns");
        self.pods.lock().expect("pods").push(name.clone());
        format!("/run/netns/{name}")
    }

    fn pod_name(&self, n: usize) -> String {
        format!("{}-pod-{n}", self.prefix)
    }

    fn config(&self) -> Value {
        json!({
            "cniVersion": "1.1.0",
            "name": NETWORK,
            "type": "ferry",
            "bridge": "cni0",
            "isGateway": true,
            "ipMasq": true,
            "mtu": 1450,
            "hairpinMode": true,
            "podCIDR": "10.244.1.0/24",
            "ipam": { "type": "host-local", "dataDir": self.data.path() },
        })
    }

    fn store(&self) -> PathBuf {
        self.data.path().join(NETWORK)
    }

    /// Starts the plugin in the node namespace, as a runtime there would.
    fn spawn(
        &self,
        command: &str,
        attachment: Option<(&str, Option<&str>, &str)>,
        config: &Value,
        extra_env: &[(&str, &str)],
    ) -> Running {
        let mut process = Command::new("nsenter");
        process
            .arg(format!("--net=/run/netns/{}", self.node))
            .arg(FERRY)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", "/opt/cni/bin")
            .envs(extra_env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((container, netns_path, ifname)) = attachment {
            process
                .env("CNI_CONTAINERID", container)
                .env("CNI_IFNAME", ifname);
            if let Some(path) = netns_path {
                process.env("CNI_NETNS", path);
            }
        }
        let mut child = process.spawn().expect("run nsenter ferry");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(config.to_string().as_bytes())
            .expect("write config");
        drop(stdin);
        Running(Some(child))
    }

    fn cni(
        &self,
        command: &str,
        attachment: Option<(&str, Option<&str>, &str)>,
        config: &Value,
    ) -> Reply {
        self.spawn(command, attachment, config, &[]).wait()
    }

    fn add(&self, container: &str, netns_path: &str) -> Value {
        self.cni(
            "ADD",
            Some((container, Some(netns_path), "eth0")),
            &self.config(),
        )
        .ok()
    }

    /// `(ip file name, content)` of every file in the store except `lock`
    /// and `last_reserved_ip.0`.
    fn store_files(&self) -> Vec<(String, String)> {
        let Ok(entries) = std::fs::read_dir(self.store()) else {
            return Vec::new();
        };
        let mut files: Vec<(String, String)> = entries
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name != "lock" && name != "last_reserved_ip.0")
            .map(|name| {
                let content = std::fs::read_to_string(self.store().join(&name)).unwrap_or_default();
                (name, content)
            })
            .collect();
        files.sort();
        files
    }

    fn node_links(&self) -> Vec<Link> {
        links_in(&format!("/run/netns/{}", self.node))
    }

    /// Host veths the plugin created (marked by their alias).
    fn host_veths(&self) -> Vec<Link> {
        self.node_links()
            .into_iter()
            .filter(|link| {
                link.alias
                    .as_deref()
                    .is_some_and(|alias| alias.starts_with("ferry-cni/"))
            })
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let pods = self.pods.lock().map(|p| p.clone()).unwrap_or_default();
        for name in pods.iter().chain(std::iter::once(&self.node)) {
            if let Err(error) = netns::delete(name) {
                eprintln!("cleanup: {error}");
            }
        }
    }
}

fn links_in(netns_path: &str) -> Vec<Link> {
    block_on(async {
        let netns = NetNs::open(netns_path).expect("open netns");
        let netlink = Netlink::connect_in(&netns).await.expect("connect");
        netlink.links().await.expect("links")
    })
}

/// `(address, prefix)` of `ifname` and the routes in a pod namespace.
fn pod_state(
    netns_path: &str,
    ifname: &str,
) -> (Option<Link>, Vec<(Ipv4Addr, u8)>, Vec<ferry_netlink::Route>) {
    block_on(async {
        let netns = NetNs::open(netns_path).expect("open netns");
        let netlink = Netlink::connect_in(&netns).await.expect("connect");
        let link = netlink.link(ifname).await.expect("link");
        let addresses = match &link {
            Some(link) => netlink
                .addresses(Some(link.index))
                .await
                .expect("addresses")
                .into_iter()
                .map(|a| (a.address, a.prefix_len))
                .collect(),
            None => Vec::new(),
        };
        (link, addresses, netlink.routes().await.expect("routes"))
    })
}

fn result_ip(result: &Value) -> Ipv4Addr {
    let address = result["ips"][0]["address"].as_str().expect("address");
    address
        .split('/')
        .next()
        .and_then(|ip| ip.parse().ok())
        .expect("IPv4 address")
}

fn with_prev_result(config: &Value, result: &Value) -> Value {
    let mut config = config.clone();
    config["prevResult"] = result.clone();
    config
}

fn with_valid_attachments(config: &Value, valid: &[(&str, &str)]) -> Value {
    let mut config = config.clone();
    config["cni.dev/valid-attachments"] = valid
        .iter()
        .map(|(id, ifname)| json!({ "containerID": id, "ifname": ifname }))
        .collect();
    config
}

#[test]
fn add_check_del_lifecycle() {
    let Some(lab) = Lab::new("life") else { return };
    let pod = lab.pod(1);
    let result = lab.add("c1", &pod);

    // The result follows the spec: three interfaces, the container's with
    // its sandbox, one address with gateway, the default route.
    assert_eq!(result["cniVersion"], "1.1.0");
    let interfaces = result["interfaces"].as_array().expect("interfaces");
    assert_eq!(interfaces.len(), 3, "{result}");
    assert_eq!(interfaces[0]["name"], "cni0");
    assert_eq!(interfaces[2]["name"], "eth0");
    assert_eq!(interfaces[2]["sandbox"], pod.as_str());
    assert_eq!(result["ips"][0]["interface"], 2);
    assert_eq!(result["ips"][0]["gateway"], "10.244.1.1");
    assert_eq!(result["routes"][0]["dst"], "0.0.0.0/0");
    let ip = result_ip(&result);
    assert!(
        ip.octets()[..3] == [10, 244, 1] && ip != Ipv4Addr::new(10, 244, 1, 1),
        "{ip}"
    );

    // The kernel agrees.
    let (eth0, addresses, routes) = pod_state(&pod, "eth0");
    let eth0 = eth0.expect("eth0 in the pod");
    assert!(eth0.up);
    assert_eq!(eth0.mtu, 1450);
    assert_eq!(addresses, vec![(ip, 24)]);
    assert!(
        routes
            .iter()
            .any(|r| r.is_default() && r.gateway == Some(Ipv4Addr::new(10, 244, 1, 1)))
    );
    let node_links = lab.node_links();
    let bridge = node_links
        .iter()
        .find(|l| l.name == "cni0")
        .expect("bridge");
    assert_eq!(bridge.kind.as_deref(), Some("bridge"));
    assert_eq!(bridge.mtu, 1450);
    let host_name = interfaces[1]["name"].as_str().expect("host veth name");
    let host_veth = node_links
        .iter()
        .find(|l| l.name == host_name)
        .expect("host veth");
    assert_eq!(host_veth.controller, Some(bridge.index));
    assert_eq!(host_veth.hairpin, Some(true));
    assert!(host_veth.up);
    assert_eq!(
        lab.store_files(),
        vec![(ip.to_string(), "c1\r\neth0".to_string())]
    );

    // CHECK passes, then fails once the address is gone.
    let check_config = with_prev_result(&lab.config(), &result);
    let reply = lab.cni("CHECK", Some(("c1", Some(&pod), "eth0")), &check_config);
    assert_eq!(reply.ok(), Value::Null);
    block_on(async {
        let netns = NetNs::open(&pod).expect("pod");
        let netlink = Netlink::connect_in(&netns).await.expect("connect");
        netlink
            .delete_address(eth0.index, ip, 24)
            .await
            .expect("remove the address");
    });
    let reply = lab.cni("CHECK", Some(("c1", Some(&pod), "eth0")), &check_config);
    assert_eq!(reply.error_code(), 102);

    // DEL removes everything, and again succeeds.
    let del = || lab.cni("DEL", Some(("c1", Some(&pod), "eth0")), &lab.config());
    assert_eq!(del().ok(), Value::Null);
    assert!(lab.store_files().is_empty());
    assert!(lab.host_veths().is_empty());
    assert!(pod_state(&pod, "eth0").0.is_none());
    assert_eq!(del().ok(), Value::Null);
}

#[test]
fn del_succeeds_when_the_netns_is_gone() {
    let Some(lab) = Lab::new("gone") else { return };
    let pod = lab.pod(1);
    lab.add("c1", &pod);
    let pod2 = lab.pod(2);
    lab.add("c2", &pod2);
    netns::delete(&lab.pod_name(1)).expect("delete pod netns");
    netns::delete(&lab.pod_name(2)).expect("delete pod netns");

    // The path no longer exists ...
    let reply = lab.cni("DEL", Some(("c1", Some(&pod), "eth0")), &lab.config());
    assert_eq!(reply.ok(), Value::Null);
    // ... or the runtime passes no CNI_NETNS at all.
    let reply = lab.cni("DEL", Some(("c2", None, "eth0")), &lab.config());
    assert_eq!(reply.ok(), Value::Null);
    assert!(lab.store_files().is_empty(), "{:?}", lab.store_files());
    assert!(lab.host_veths().is_empty());
    let reply = lab.cni("DEL", Some(("c1", Some(&pod), "eth0")), &lab.config());
    assert_eq!(reply.ok(), Value::Null);
}

#[test]
fn bad_input_gets_error_json() {
    let Some(lab) = Lab::new("bad") else { return };
    let pod = lab.pod(1);
    let attachment = Some(("c1", Some(pod.as_str()), "eth0"));

    let mut no_subnet = lab.config();
    no_subnet.as_object_mut().expect("object").remove("podCIDR");
    assert_eq!(lab.cni("ADD", attachment, &no_subnet).error_code(), 7);

    let mut bad_subnet = lab.config();
    bad_subnet["ipam"]["subnet"] = json!("10.244.1.0/99");
    assert_eq!(lab.cni("ADD", attachment, &bad_subnet).error_code(), 7);

    let mut bad_mtu = lab.config();
    bad_mtu["mtu"] = json!("large");
    assert_eq!(lab.cni("ADD", attachment, &bad_mtu).error_code(), 7);

    let mut old = lab.config();
    old["cniVersion"] = json!("0.2.0");
    assert_eq!(lab.cni("ADD", attachment, &old).error_code(), 1);

    assert_eq!(
        lab.cni("ADD", attachment, &json!("not a config"))
            .error_code(),
        6
    );
    assert_eq!(
        lab.cni("ADD", Some(("c1", None, "eth0")), &lab.config())
            .error_code(),
        4
    );
    assert_eq!(
        lab.cni(
            "ADD",
            Some(("c1", Some(pod.as_str()), "a/b")),
            &lab.config()
        )
        .error_code(),
        4
    );
    assert_eq!(lab.cni("ATTACH", attachment, &lab.config()).error_code(), 4);
    let missing = format!("{pod}-missing");
    assert_eq!(
        lab.cni(
            "ADD",
            Some(("c1", Some(missing.as_str()), "eth0")),
            &lab.config()
        )
        .error_code(),
        3
    );

    // None of this left anything behind.
    assert!(lab.store_files().is_empty());
    assert!(lab.host_veths().is_empty());
    assert!(pod_state(&pod, "eth0").0.is_none());
}

#[test]
fn version_and_status() {
    let Some(lab) = Lab::new("status") else {
        return;
    };
    let reply = lab
        .cni("VERSION", None, &json!({ "cniVersion": "1.1.0" }))
        .ok();
    assert_eq!(reply["cniVersion"], "1.1.0");
    let versions = reply["supportedVersions"].as_array().expect("list");
    assert!(versions.contains(&json!("1.1.0")) && versions.contains(&json!("0.4.0")));

    // A range with one address: STATUS is fine until it is taken.
    let mut tiny = lab.config();
    tiny["ipam"]["rangeStart"] = json!("10.244.1.10");
    tiny["ipam"]["rangeEnd"] = json!("10.244.1.10");
    assert_eq!(lab.cni("STATUS", None, &tiny).ok(), Value::Null);
    let pod1 = lab.pod(1);
    let result = lab
        .cni("ADD", Some(("c1", Some(pod1.as_str()), "eth0")), &tiny)
        .ok();
    assert_eq!(result_ip(&result), Ipv4Addr::new(10, 244, 1, 10));
    assert_eq!(lab.cni("STATUS", None, &tiny).error_code(), 50);

    // Exhausted: ADD fails cleanly.
    let pod2 = lab.pod(2);
    let reply = lab.cni("ADD", Some(("c2", Some(pod2.as_str()), "eth0")), &tiny);
    assert_eq!(reply.error_code(), 100);
    assert_eq!(lab.store_files().len(), 1);
    assert_eq!(lab.host_veths().len(), 1);

    // A store that cannot be written is not available either.
    let mut unwritable = lab.config();
    let file = lab.data.path().join("a-file");
    std::fs::write(&file, "x").expect("file");
    unwritable["ipam"]["dataDir"] = json!(file);
    assert_eq!(lab.cni("STATUS", None, &unwritable).error_code(), 50);
    let mut no_subnet = lab.config();
    no_subnet.as_object_mut().expect("object").remove("podCIDR");
    assert_eq!(lab.cni("STATUS", None, &no_subnet).error_code(), 50);
}

#[test]
fn failed_add_leaves_nothing_behind() {
    let Some(lab) = Lab::new("rollback") else {
        return;
    };
    // Fails after the veth exists: the route's gateway is unreachable.
    let pod1 = lab.pod(1);
    let mut unreachable = lab.config();
    unreachable["ipam"]["routes"] = json!([{ "dst": "10.99.0.0/16", "gw": "192.168.77.1" }]);
    let reply = lab.cni(
        "ADD",
        Some(("c1", Some(pod1.as_str()), "eth0")),
        &unreachable,
    );
    assert_eq!(reply.error_code(), 101, "{reply:?}");
    assert!(
        reply.json()["details"]
            .as_str()
            .is_some_and(|d| d.contains("rolled back"))
    );
    assert!(lab.store_files().is_empty(), "{:?}", lab.store_files());
    assert!(lab.host_veths().is_empty());
    assert!(pod_state(&pod1, "eth0").0.is_none());

    // Fails creating the veth: the name is taken inside the container.
    let pod2 = lab.pod(2);
    block_on(async {
        let netns = NetNs::open(&pod2).expect("pod");
        let netlink = Netlink::connect_in(&netns).await.expect("connect");
        netlink
            .create_veth(&ferry_netlink::VethPair {
                name: "eth0",
                peer_name: "other0",
                peer_netns: None,
                mtu: None,
                controller: None,
                up: false,
                alias: None,
            })
            .await
            .expect("squat eth0");
    });
    let reply = lab.cni(
        "ADD",
        Some(("c2", Some(pod2.as_str()), "eth0")),
        &lab.config(),
    );
    assert_eq!(reply.error_code(), 101);
    assert!(
        reply.json()["msg"]
            .as_str()
            .is_some_and(|m| m.contains("already exists"))
    );
    assert!(lab.store_files().is_empty());
    assert!(lab.host_veths().is_empty());

    // A good ADD afterwards works as usual.
    let pod3 = lab.pod(3);
    let result = lab.add("c3", &pod3);
    assert_eq!(
        lab.store_files(),
        vec![(result_ip(&result).to_string(), "c3\r\neth0".to_string())]
    );
    assert_eq!(lab.host_veths().len(), 1);
}

#[test]
fn gc_releases_attachments_that_are_not_valid() {
    let Some(lab) = Lab::new("gc") else { return };
    let mut results = HashMap::new();
    for (n, id) in ["a", "b", "c"].iter().enumerate() {
        let pod = lab.pod(n);
        results.insert(*id, (pod.clone(), lab.add(id, &pod)));
    }
    let gc = with_valid_attachments(&lab.config(), &[("a", "eth0"), ("c", "eth0")]);
    assert_eq!(lab.cni("GC", None, &gc).ok(), Value::Null);

    let owners: HashSet<String> = lab
        .store_files()
        .into_iter()
        .map(|(_, content)| content)
        .collect();
    assert_eq!(
        owners,
        HashSet::from(["a\r\neth0".to_string(), "c\r\neth0".to_string()])
    );
    let veths: HashSet<String> = lab
        .host_veths()
        .into_iter()
        .filter_map(|l| l.alias)
        .collect();
    assert_eq!(
        veths,
        HashSet::from([
            format!("ferry-cni/{NETWORK}/a/eth0"),
            format!("ferry-cni/{NETWORK}/c/eth0")
        ])
    );
    assert!(pod_state(&results["b"].0, "eth0").0.is_none());
    for id in ["a", "c"] {
        let (pod, result) = &results[id];
        let check = with_prev_result(&lab.config(), result);
        lab.cni("CHECK", Some((id, Some(pod), "eth0")), &check).ok();
    }

    // An empty list releases everything.
    let gc = with_valid_attachments(&lab.config(), &[]);
    lab.cni("GC", None, &gc).ok();
    assert!(lab.store_files().is_empty());
    assert!(lab.host_veths().is_empty());
}

#[test]
fn fifty_parallel_adds_get_unique_ips() {
    let Some(lab) = Lab::new("par") else { return };
    const PODS: usize = 50;
    let pods: Vec<String> = (0..PODS).map(|n| lab.pod(n)).collect();
    let running: Vec<Running> = pods
        .iter()
        .enumerate()
        .map(|(n, pod)| {
            let id = format!("c{n}");
            lab.spawn("ADD", Some((&id, Some(pod), "eth0")), &lab.config(), &[])
        })
        .collect();
    let ips: Vec<Ipv4Addr> = running
        .into_iter()
        .map(|r| result_ip(&r.wait().ok()))
        .collect();
    let unique: HashSet<Ipv4Addr> = ips.iter().copied().collect();
    assert_eq!(unique.len(), PODS, "{ips:?}");
    assert!(
        !unique.contains(&Ipv4Addr::new(10, 244, 1, 1)),
        "the gateway was given out"
    );
    assert_eq!(lab.store_files().len(), PODS);
    assert_eq!(lab.host_veths().len(), PODS);
    // Every pod has its own address on its eth0.
    for (pod, ip) in pods.iter().zip(&ips) {
        assert_eq!(pod_state(pod, "eth0").1, vec![(*ip, 24)]);
    }

    let running: Vec<Running> = pods
        .iter()
        .enumerate()
        .map(|(n, pod)| {
            let id = format!("c{n}");
            lab.spawn("DEL", Some((&id, Some(pod), "eth0")), &lab.config(), &[])
        })
        .collect();
    for r in running {
        r.wait().ok();
    }
    assert!(lab.store_files().is_empty());
    assert!(lab.host_veths().is_empty());
}

/// xorshift64*: enough randomness to vary kill points, no dependency.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn gc_after_killed_adds_leaves_a_consistent_store() {
    let Some(lab) = Lab::new("kill") else { return };
    let mut pod_number = 0;
    let mut next_pod = || {
        pod_number += 1;
        (format!("k{pod_number}"), lab.pod(pod_number))
    };
    let mut completed: Vec<(String, String, Value)> = Vec::new();

    // Killed exactly at each fault point.
    for stage in ["ipam-locked", "ipam-reserved", "veth-created"] {
        let (id, pod) = next_pod();
        let mut running = lab.spawn(
            "ADD",
            Some((&id, Some(&pod), "eth0")),
            &lab.config(),
            &[("FERRY_CNI_TEST_PAUSE_AT", stage)],
        );
        running.wait_for_pause();
        running.kill();
        // The kernel dropped the dead plugin's lock: ADDs keep working.
        let (id, pod) = next_pod();
        let result = lab.add(&id, &pod);
        completed.push((id, pod, result));
    }

    // Killed at random points.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    eprintln!("kill delays seeded with {seed}");
    let mut random = Random(seed);
    for _ in 0..15 {
        let (id, pod) = next_pod();
        let running = lab.spawn("ADD", Some((&id, Some(&pod), "eth0")), &lab.config(), &[]);
        let delay = Duration::from_micros(random.next() % 40_000);
        let started = Instant::now();
        while started.elapsed() < delay {
            std::thread::sleep(Duration::from_micros(200));
        }
        let mut running = running;
        let child = running.0.as_mut().expect("running");
        if let Ok(Some(_)) = child.try_wait() {
            // It finished before the kill: a runtime would record success.
            let reply = running.wait();
            if reply.status == 0 {
                completed.push((id, pod, reply.json()));
            }
        } else {
            running.kill();
        }
    }

    // The three deterministic kills each left a reservation behind, and the
    // last one a host veth too: GC has work to do.
    let before = (lab.store_files().len(), lab.host_veths().len());
    eprintln!(
        "before GC: {} reservations, {} host veths, {} completed ADDs",
        before.0,
        before.1,
        completed.len()
    );
    assert!(before.0 >= completed.len() + 3, "{before:?}");
    assert!(before.1 > completed.len(), "{before:?}");

    let valid: Vec<(&str, &str)> = completed
        .iter()
        .map(|(id, _, _)| (id.as_str(), "eth0"))
        .collect();
    let gc = with_valid_attachments(&lab.config(), &valid);
    lab.cni("GC", None, &gc).ok();

    // Consistent: exactly one reservation per valid attachment, each for
    // the address its ADD returned, no partial files, no stray veths.
    let files = lab.store_files();
    assert!(
        files
            .iter()
            .all(|(name, _)| name.parse::<Ipv4Addr>().is_ok()),
        "partial files left: {files:?}"
    );
    let mut by_owner: HashMap<String, Vec<Ipv4Addr>> = HashMap::new();
    for (name, content) in &files {
        by_owner
            .entry(content.clone())
            .or_default()
            .push(name.parse().expect("ip"));
    }
    assert_eq!(by_owner.len(), completed.len(), "{files:?}");
    for (id, pod, result) in &completed {
        let owned = &by_owner[&format!("{id}\r\neth0")];
        assert_eq!(owned, &vec![result_ip(result)], "{id}");
        let check = with_prev_result(&lab.config(), result);
        lab.cni("CHECK", Some((id, Some(pod), "eth0")), &check).ok();
    }
    let veths: HashSet<String> = lab
        .host_veths()
        .into_iter()
        .filter_map(|l| l.alias)
        .collect();
    let expected: HashSet<String> = completed
        .iter()
        .map(|(id, _, _)| format!("ferry-cni/{NETWORK}/{id}/eth0"))
        .collect();
    assert_eq!(veths, expected);
}

#[test]
fn runtime_invocation_forms() {
    let Some(lab) = Lab::new("forms") else { return };
    let version = |mut command: Command| {
        let output = command
            .env_clear()
            .env("CNI_COMMAND", "VERSION")
            .stdin(Stdio::null())
            .output()
            .expect("run");
        assert!(output.status.success(), "{output:?}");
        let reply: Value = serde_json::from_slice(&output.stdout).expect("json");
        assert_eq!(reply["cniVersion"], "1.1.0");
    };
    // `ferry cni`.
    let mut subcommand = Command::new(FERRY);
    subcommand.arg("cni");
    version(subcommand);
    // No arguments, as a runtime executes `$CNI_PATH/ferry`.
    version(Command::new(FERRY));
    // Installed under the name `ferry-cni`.
    let link = lab.data.path().join("ferry-cni");
    std::os::unix::fs::symlink(FERRY, &link).expect("symlink");
    version(Command::new(&link));
    // Without CNI_COMMAND and without arguments it is the CLI again.
    let output = Command::new(FERRY).env_clear().output().expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("Usage"));
}
