//! The rendered ruleset in a real kernel (root, a scratch network
//! namespace): a ClusterIP spreads connections over its endpoints, and a
//! ClusterIP without endpoints refuses at once.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use ferry_netlink::Netlink;
use ferry_netlink::netns::NetNs;
use ferry_netlink::nftables::Connection;
use ferry_netlink::route::Route;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

fn is_root() -> bool {
    let root = nix_euid_is_root();
    if !root {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "root is required under CI=true"
        );
        eprintln!("skipping: needs root (network namespaces, nf_tables)");
    }
    root
}

fn nix_euid_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

struct Guard(String);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = ferry_netlink::netns::delete(&self.0);
    }
}

#[test]
fn cluster_ip_spreads_and_rejects_without_endpoints() {
    if !is_root() {
        return;
    }
    let name = format!("fpx-{}", std::process::id());
    let _guard = Guard(name.clone());
    let netns = ferry_netlink::netns::create(&name).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let nl = Netlink::connect_in(&netns).await.unwrap();
        nl.set_up("lo").await.unwrap();
        let lo = nl.require_link("lo").await.unwrap();
        for last in [2, 3, 4] {
            nl.add_address(lo.index, Ipv4Addr::new(10, 244, 9, last), 32)
                .await
                .unwrap();
        }
        // Service IPs need a route before the output hook can DNAT them.
        nl.add_route(&Route::to(Ipv4Addr::new(10, 96, 0, 0), 12).dev(lo.index))
            .await
            .unwrap();
    });

    let service = |name: &str, ip: &str| -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"name": "http", "port": 80}]}
        }))
        .unwrap()
    };
    let web = service("web", "10.96.7.7");
    let empty = service("empty", "10.96.7.8");
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "web-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.244.9.2"], "conditions": {"ready": true}},
            {"addresses": ["10.244.9.3"], "conditions": {"ready": true}},
            {"addresses": ["10.244.9.4"], "conditions": {"ready": true}},
            {"addresses": ["10.244.9.9"], "conditions": {"ready": false}},
        ]
    }))
    .unwrap();
    let plan = ferry_proxy::model::plan(&[&web, &empty], &[&slice], "n1");
    let options = ferry_proxy::nftables::Options {
        node_ips: vec![Ipv4Addr::new(10, 244, 9, 2)],
        cluster_cidr: None,
    };
    let ruleset =
        ferry_proxy::nftables::render(&plan, &mut ferry_proxy::nftables::Ids::default(), &options);
    Connection::open_in_netns(format!("/run/netns/{name}"))
        .unwrap()
        .apply(&ruleset.diff(None))
        .unwrap();
    // Applying the same desired state again changes nothing.
    let mut conn = Connection::open_in_netns(format!("/run/netns/{name}")).unwrap();
    let live = ferry_netlink::nftables::Ruleset::list(&mut conn, &ruleset.table)
        .unwrap()
        .unwrap();
    assert!(
        ruleset.diff(Some(&live)).is_empty(),
        "a second sync is empty"
    );

    let counts = netns_run(&netns, move || {
        let listeners: Vec<TcpListener> = [2u8, 3, 4]
            .iter()
            .map(|l| TcpListener::bind((Ipv4Addr::new(10, 244, 9, *l), 8080)).unwrap())
            .collect();
        for l in listeners {
            std::thread::spawn(move || {
                let me = l.local_addr().unwrap().ip().to_string();
                for stream in l.incoming() {
                    let Ok(mut s) = stream else { continue };
                    let _ = s.write_all(me.as_bytes());
                }
            });
        }
        let mut counts = std::collections::BTreeMap::<String, u32>::new();
        for _ in 0..300 {
            let addr = SocketAddr::from(([10, 96, 7, 7], 80));
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
            let mut who = String::new();
            s.read_to_string(&mut who).unwrap();
            *counts.entry(who).or_default() += 1;
        }
        let refused = TcpStream::connect_timeout(
            &SocketAddr::from(([10, 96, 7, 8], 80)),
            Duration::from_secs(2),
        )
        .expect_err("no endpoints");
        (counts, refused.kind())
    });
    let (counts, refused) = counts;
    assert_eq!(counts.len(), 3, "{counts:?}");
    for (who, n) in &counts {
        assert!(*n >= 45, "{who} got {n} of 300: {counts:?}");
    }
    assert!(
        !counts.contains_key("10.244.9.9"),
        "not-ready endpoint unused"
    );
    assert_eq!(refused, std::io::ErrorKind::ConnectionRefused);
}

fn netns_run<R: Send>(netns: &NetNs, f: impl FnOnce() -> R + Send) -> R {
    netns.run(f).unwrap()
}
