//! Links, addresses, routes, neighbours, FDB entries, sysctls and
//! namespaces against the real kernel, in namespaces this test creates.
//!
//! Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN). Without it the tests are
//! skipped with a message, except under `CI=true`, where they fail.

use std::net::Ipv4Addr;

use ferry_netlink::netns::usable_by_test as capable;
use ferry_netlink::{MacAddress, NetNs, Netlink, Route, VethPair, Vxlan, netns, sysctl};

/// Named namespaces that are deleted when the test ends, pass or fail.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn create(&mut self, suffix: &str) -> NetNs {
        let name = format!("fnl-{}-{suffix}", std::process::id());
        let _ = netns::delete(&name);
        let ns = netns::create(&name).expect("create netns");
        self.0.push(name);
        ns
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            if let Err(error) = netns::delete(name) {
                eprintln!("cleanup: {error}");
            }
        }
    }
}

#[tokio::test]
async fn bridge_veth_addresses_and_routes() {
    if !capable("bridge_veth_addresses_and_routes") {
        return;
    }
    let mut namespaces = Namespaces(Vec::new());
    let node = namespaces.create("node");
    let pod = namespaces.create("pod");
    let host = Netlink::connect_in(&node).await.expect("connect node");
    let inside = Netlink::connect_in(&pod).await.expect("connect pod");

    let bridge_mac = MacAddress::from_ipv4(Ipv4Addr::new(10, 99, 0, 1));
    let bridge = host
        .create_bridge("br-test", Some(1400), Some(bridge_mac))
        .await
        .expect("create bridge");
    assert_eq!(bridge.kind.as_deref(), Some("bridge"));
    assert_eq!(bridge.mtu, 1400);
    assert!(bridge.up);
    assert_eq!(bridge.mac, Some(bridge_mac));
    let again = host.create_bridge("br-test", None, None).await;
    let error = again.expect_err("duplicate bridge");
    assert!(error.is_exists(), "{error}");

    let pair = VethPair {
        name: "veth-test",
        peer_name: "eth0",
        peer_netns: Some(&pod),
        mtu: Some(1400),
        controller: Some(bridge.index),
        up: true,
        alias: Some("owner/test"),
    };
    let veth = host.create_veth(&pair).await.expect("create veth");
    assert_eq!(veth.kind.as_deref(), Some("veth"));
    assert_eq!(veth.controller, Some(bridge.index));
    assert!(veth.up);
    assert_eq!(veth.alias.as_deref(), Some("owner/test"));
    let error = host.create_veth(&pair).await.expect_err("duplicate veth");
    assert!(error.is_exists(), "{error}");
    let message = error.to_string();
    assert!(
        message.starts_with("creating veth veth-test in netns /run/netns/fnl-"),
        "{message}"
    );

    host.set_hairpin("veth-test", true)
        .await
        .expect("hairpin on");
    let veth = host.require_link("veth-test").await.expect("veth");
    assert_eq!(veth.hairpin, Some(true));
    host.set_hairpin("veth-test", false)
        .await
        .expect("hairpin off");
    let veth = host.require_link("veth-test").await.expect("veth");
    assert_eq!(veth.hairpin, Some(false));

    // The peer was created directly in the pod namespace under its name.
    assert!(host.link("eth0").await.expect("lookup").is_none());
    let eth0 = inside.require_link("eth0").await.expect("eth0 in pod");
    assert_eq!(eth0.mtu, 1400);
    assert!(!eth0.up);
    inside.set_up("eth0").await.expect("eth0 up");
    inside.set_up("lo").await.expect("lo up");

    host.add_address(bridge.index, Ipv4Addr::new(10, 99, 0, 1), 24)
        .await
        .expect("bridge address");
    inside
        .add_address(eth0.index, Ipv4Addr::new(10, 99, 0, 2), 24)
        .await
        .expect("pod address");
    let error = inside
        .add_address(eth0.index, Ipv4Addr::new(10, 99, 0, 2), 24)
        .await
        .expect_err("duplicate address");
    assert!(error.is_exists(), "{error}");
    let addresses = inside.addresses(Some(eth0.index)).await.expect("addresses");
    assert_eq!(addresses.len(), 1);
    assert_eq!(addresses[0].address, Ipv4Addr::new(10, 99, 0, 2));
    assert_eq!(addresses[0].prefix_len, 24);

    let default = Route::default_via(Ipv4Addr::new(10, 99, 0, 1));
    inside.add_route(&default).await.expect("default route");
    inside.replace_route(&default).await.expect("replace route");
    let onlink = Route::to(Ipv4Addr::new(10, 98, 0, 0), 24)
        .via(Ipv4Addr::new(10, 97, 0, 1))
        .dev(eth0.index)
        .onlink();
    inside.add_route(&onlink).await.expect("onlink route");
    let routes = inside.routes().await.expect("routes");
    assert!(
        routes
            .iter()
            .any(|r| r.is_default() && r.gateway == Some(Ipv4Addr::new(10, 99, 0, 1))),
        "{routes:?}"
    );
    assert!(
        routes
            .iter()
            .any(|r| r.destination == Ipv4Addr::new(10, 98, 0, 0)
                && r.onlink
                && r.output_interface == Some(eth0.index)),
        "{routes:?}"
    );
    assert!(inside.delete_route(&default).await.expect("delete route"));
    assert!(!inside.delete_route(&default).await.expect("delete again"));

    let neighbour_mac: MacAddress = "0a:58:0a:63:00:32".parse().expect("mac");
    let neighbour_ip = Ipv4Addr::new(10, 99, 0, 50);
    inside
        .add_neighbour(eth0.index, neighbour_ip, neighbour_mac)
        .await
        .expect("neighbour");
    inside
        .replace_neighbour(eth0.index, neighbour_ip, neighbour_mac)
        .await
        .expect("replace neighbour");
    let neighbours = inside
        .neighbours(Some(eth0.index))
        .await
        .expect("neighbours");
    assert!(
        neighbours
            .iter()
            .any(|n| n.destination == neighbour_ip && n.mac == Some(neighbour_mac) && n.permanent),
        "{neighbours:?}"
    );
    assert!(
        inside
            .delete_neighbour(eth0.index, neighbour_ip)
            .await
            .expect("delete")
    );
    assert!(
        !inside
            .delete_neighbour(eth0.index, neighbour_ip)
            .await
            .expect("again")
    );

    host.set_mtu("veth-test", 1300).await.expect("mtu");
    host.set_down("veth-test").await.expect("down");
    let veth = host.require_link("veth-test").await.expect("veth");
    assert_eq!(veth.mtu, 1300);
    assert!(!veth.up);
    host.clear_controller("veth-test").await.expect("nomaster");
    host.set_controller("veth-test", bridge.index)
        .await
        .expect("master");
    assert!(host.delete_link("veth-test").await.expect("delete veth"));
    assert!(!host.delete_link("veth-test").await.expect("delete again"));
    // Deleting one end removes the other.
    assert!(inside.link("eth0").await.expect("lookup").is_none());
}

#[tokio::test]
async fn vxlan_fdb_and_sysctl() {
    if !capable("vxlan_fdb_and_sysctl") {
        return;
    }
    let mut namespaces = Namespaces(Vec::new());
    let node = namespaces.create("vx");
    let host = Netlink::connect_in(&node).await.expect("connect");
    let underlay = host
        .create_bridge("underlay0", None, None)
        .await
        .expect("underlay");
    host.add_address(underlay.index, Ipv4Addr::new(172, 31, 0, 11), 24)
        .await
        .expect("underlay address");

    let vtep_mac: MacAddress = "0a:58:ac:1f:00:0b".parse().expect("mac");
    let vxlan = host
        .create_vxlan(&Vxlan {
            name: "flannel.1",
            vni: 1,
            local: Some(Ipv4Addr::new(172, 31, 0, 11)),
            port: 8472,
            learning: false,
            mtu: Some(1450),
            underlay: Some(underlay.index),
            mac: Some(vtep_mac),
        })
        .await
        .expect("vxlan");
    assert_eq!(vxlan.kind.as_deref(), Some("vxlan"));
    assert_eq!(vxlan.mtu, 1450);
    assert_eq!(vxlan.mac, Some(vtep_mac));
    let info = vxlan.vxlan.clone().expect("vxlan info");
    assert_eq!(info.vni, Some(1));
    assert_eq!(info.port, Some(8472));
    assert_eq!(info.learning, Some(false));
    assert_eq!(info.local, Some(Ipv4Addr::new(172, 31, 0, 11)));
    assert_eq!(info.underlay, Some(underlay.index));

    let remote_mac: MacAddress = "0a:58:ac:1f:00:0c".parse().expect("mac");
    let remote_node = Ipv4Addr::new(172, 31, 0, 12);
    host.replace_fdb(vxlan.index, remote_mac, remote_node)
        .await
        .expect("fdb replace");
    host.replace_fdb(vxlan.index, remote_mac, remote_node)
        .await
        .expect("fdb replace is idempotent");
    let zero = MacAddress([0; 6]);
    host.append_fdb(vxlan.index, zero, Ipv4Addr::new(172, 31, 0, 12))
        .await
        .expect("append 1");
    host.append_fdb(vxlan.index, zero, Ipv4Addr::new(172, 31, 0, 13))
        .await
        .expect("append 2");
    let entries = host.fdb_entries(vxlan.index).await.expect("fdb");
    assert!(
        entries
            .iter()
            .any(|e| e.mac == remote_mac && e.destination == Some(remote_node)),
        "{entries:?}"
    );
    assert_eq!(
        entries.iter().filter(|e| e.mac == zero).count(),
        2,
        "{entries:?}"
    );
    assert!(
        host.delete_fdb(vxlan.index, remote_mac, Some(remote_node))
            .await
            .expect("delete")
    );
    assert!(
        !host
            .delete_fdb(vxlan.index, remote_mac, Some(remote_node))
            .await
            .expect("again")
    );

    // The overlay's per-node route and ARP entry.
    let remote_vtep = Ipv4Addr::new(10, 244, 2, 0);
    host.replace_neighbour(vxlan.index, remote_vtep, remote_mac)
        .await
        .expect("arp entry");
    host.replace_route(
        &Route::to(Ipv4Addr::new(10, 244, 2, 0), 24)
            .via(remote_vtep)
            .dev(vxlan.index)
            .onlink(),
    )
    .await
    .expect("onlink route via vxlan");

    sysctl::write_in(&node, "net.ipv4.ip_forward", "1").expect("write sysctl");
    assert_eq!(
        sysctl::read_in(&node, "net.ipv4.ip_forward").expect("read"),
        "1"
    );
    sysctl::write_in(&node, "net/ipv4/conf/flannel.1/forwarding", "0").expect("per-interface");
    assert_eq!(
        sysctl::read_in(&node, "net.ipv4.conf.underlay0.forwarding").expect("read"),
        "1"
    );
    let error = sysctl::read_in(&node, "net.ipv4.conf.missing0.forwarding").expect_err("missing");
    assert!(
        error.to_string().contains("in netns /run/netns/fnl-"),
        "{error}"
    );
}

#[test]
fn namespaces_are_created_entered_and_deleted() {
    if !capable("namespaces_are_created_entered_and_deleted") {
        return;
    }
    let mut namespaces = Namespaces(Vec::new());
    let ns = namespaces.create("plain");
    let name = namespaces.0[0].clone();
    assert!(netns::exists(&name));
    assert!(netns::list().expect("list").contains(&name));
    let error = netns::create(&name).expect_err("duplicate");
    assert!(error.is_exists(), "{error}");

    // The helper thread is inside; the caller is not.
    let outside = std::fs::read_link("/proc/thread-self/ns/net").expect("own netns");
    let inside = ns
        .run(|| std::fs::read_link("/proc/thread-self/ns/net"))
        .expect("run in netns")
        .expect("netns link");
    assert_ne!(outside, inside);
    assert_eq!(
        std::fs::read_link("/proc/thread-self/ns/net").expect("own netns"),
        outside
    );
    let reopened = NetNs::open_named(&name).expect("open by name");
    let again = reopened
        .run(|| std::fs::read_link("/proc/thread-self/ns/net"))
        .expect("run")
        .expect("link");
    assert_eq!(inside, again);

    netns::delete(&name).expect("delete");
    assert!(!netns::exists(&name));
    netns::delete(&name).expect("deleting twice succeeds");
    assert!(NetNs::open_named(&name).is_err());
    assert!(netns::create("a/b").is_err());
}
