//! Conntrack listing and deletion against the real kernel, in network
//! namespaces these tests create (and delete, pass or fail). Conntrack is
//! switched on in a namespace by loading a small nf_tables ruleset through
//! the crate's own encoder; no `conntrack`, `nft` or `ip` program is run.
//!
//! Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN). Without it the tests are
//! skipped with a message, except under `CI=true`, where they fail.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use ferry_netlink::conntrack::{Conntrack, Entry, Filter, UDP};
use ferry_netlink::netns::usable_by_test as capable;
use ferry_netlink::nftables::{
    Batch, Chain, ChainType, Connection, Family, Hook, Rule, Table, ct_state, priority,
};
use ferry_netlink::{NetNs, Netlink, netns};

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A scratch namespace with `lo` up, deleted on drop.
struct Scratch {
    name: String,
    ns: NetNs,
}

impl Scratch {
    async fn new(tag: &str) -> Scratch {
        let name = format!("fct-{}-{tag}", std::process::id());
        let _ = netns::delete(&name);
        let ns = netns::create(&name).expect("create netns");
        let scratch = Scratch { name, ns };
        Netlink::connect_in(&scratch.ns)
            .await
            .expect("rtnetlink in netns")
            .set_up("lo")
            .await
            .expect("lo up");
        scratch
    }

    fn conntrack(&self) -> Conntrack {
        Conntrack::open_in_netns(self.ns.path()).expect("open ctnetlink in netns")
    }

    fn apply(&self, batch: &Batch) {
        Connection::open_in_netns(self.ns.path())
            .expect("open nf_tables in netns")
            .apply(batch)
            .expect("apply ruleset");
    }

    /// A UDP socket bound to `addr:0` inside the namespace.
    fn udp(&self, addr: Ipv4Addr) -> UdpSocket {
        let socket = self
            .ns
            .run(|| UdpSocket::bind((addr, 0)))
            .expect("enter netns")
            .expect("bind UDP socket");
        // Only a guard against a hang if the datagram is lost.
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        socket
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(error) = netns::delete(&self.name) {
            eprintln!("cleanup: {error}");
        }
    }
}

fn port(socket: &UdpSocket) -> u16 {
    socket.local_addr().expect("local address").port()
}

/// Sends one datagram from `from` to `to` and waits until `receiver` has
/// it, so the packet went through conntrack.
fn send(from: &UdpSocket, to: SocketAddrV4, receiver: &UdpSocket) {
    from.send_to(b"ping", to).expect("send");
    let mut buf = [0u8; 16];
    let (len, _) = receiver.recv_from(&mut buf).expect("datagram delivered");
    assert_eq!(&buf[..len], b"ping");
}

/// The UDP entries from `client` (a local port), sorted by original
/// destination port.
fn udp_entries_from(conntrack: &mut Conntrack, client: u16) -> Vec<Entry> {
    let mut entries: Vec<Entry> = conntrack
        .list_ipv4()
        .expect("list conntrack")
        .into_iter()
        .filter(|e| e.original.protocol == UDP && e.original.src_port == client)
        .collect();
    entries.sort_by_key(|e| e.original.dst_port);
    entries
}

#[tokio::test]
async fn udp_entries_are_listed_and_deleted_by_original_destination() {
    let test = "udp_entries_are_listed_and_deleted_by_original_destination";
    if !capable(test) {
        return;
    }
    let scratch = Scratch::new("dst").await;
    // Any `ct` expression registers the conntrack hooks for the namespace.
    let table = Table::new(Family::Ip, "ferry-conntrack-test");
    let output = Chain::base(
        &table,
        "output",
        ChainType::Filter,
        Hook::Output,
        priority::FILTER,
    );
    let mut batch = Batch::new();
    batch.add_table(&table).add_chain(&output).add_rule(
        &output,
        &Rule::new()
            .match_ct_state(ct_state::ESTABLISHED | ct_state::RELATED)
            .accept(),
    );
    scratch.apply(&batch);

    let client = scratch.udp(LOCALHOST);
    let first = scratch.udp(LOCALHOST);
    let second = scratch.udp(LOCALHOST);
    let (p1, p2, p3) = (port(&client), port(&first), port(&second));
    send(&client, SocketAddrV4::new(LOCALHOST, p2), &first);
    send(&client, SocketAddrV4::new(LOCALHOST, p3), &second);

    let mut conntrack = scratch.conntrack();
    let entries = udp_entries_from(&mut conntrack, p1);
    let mut expected_ports = [p2, p3];
    expected_ports.sort_unstable();
    assert_eq!(entries.len(), 2, "{entries:?}");
    for (entry, dst_port) in entries.iter().zip(expected_ports) {
        assert_eq!(entry.original.src, LOCALHOST);
        assert_eq!(entry.original.dst, LOCALHOST);
        assert_eq!(entry.original.dst_port, dst_port);
        // No NAT: the reply is the original turned around.
        assert_eq!(entry.reply.src, LOCALHOST);
        assert_eq!(entry.reply.src_port, dst_port);
        assert_eq!(entry.reply.dst_port, p1);
    }

    let to_first = Filter {
        protocol: Some(UDP),
        original_dst_port: Some(p2),
        ..Filter::default()
    };
    assert_eq!(conntrack.delete(&to_first).expect("delete"), 1);
    let left = udp_entries_from(&mut conntrack, p1);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].original.dst_port, p3);
    // Nothing left to delete; an empty filter is refused.
    assert_eq!(conntrack.delete(&to_first).expect("delete again"), 0);
    conntrack
        .delete(&Filter::default())
        .expect_err("an empty filter would delete everything");
    assert_eq!(udp_entries_from(&mut conntrack, p1).len(), 1);
}

#[tokio::test]
async fn dnat_entries_are_deleted_by_removed_endpoint() {
    let test = "dnat_entries_are_deleted_by_removed_endpoint";
    if !capable(test) {
        return;
    }
    let scratch = Scratch::new("endpoint").await;
    let service = Ipv4Addr::new(127, 1, 0, 10);
    let (endpoint_a, endpoint_b) = (Ipv4Addr::new(127, 2, 0, 1), Ipv4Addr::new(127, 2, 0, 2));
    let client = scratch.udp(LOCALHOST);
    let a = scratch.udp(endpoint_a);
    let b = scratch.udp(endpoint_b);
    let (pa, pb) = (port(&a), port(&b));

    // Two Service ports on one address, each DNATed to its own endpoint,
    // as the service proxy does for locally generated traffic.
    let table = Table::new(Family::Ip, "ferry-conntrack-test");
    let output = Chain::base(
        &table,
        "nat-output",
        ChainType::Nat,
        Hook::Output,
        priority::DSTNAT,
    );
    let dnat = |service_port, endpoint, endpoint_port| {
        Rule::new()
            .match_ip_daddr(service)
            .match_l4proto(UDP)
            .match_th_dport(service_port)
            .dnat_to(endpoint, Some(endpoint_port))
    };
    let mut batch = Batch::new();
    batch
        .add_table(&table)
        .add_chain(&output)
        .add_rule(&output, &dnat(53, endpoint_a, pa))
        .add_rule(&output, &dnat(54, endpoint_b, pb));
    scratch.apply(&batch);

    send(&client, SocketAddrV4::new(service, 53), &a);
    send(&client, SocketAddrV4::new(service, 54), &b);

    let mut conntrack = scratch.conntrack();
    let p1 = port(&client);
    let entries = udp_entries_from(&mut conntrack, p1);
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[0].original.dst, service);
    assert_eq!(entries[0].original.dst_port, 53);
    assert_eq!(entries[0].reply.src, endpoint_a);
    assert_eq!(entries[0].reply.src_port, pa);
    assert_eq!(entries[1].original.dst_port, 54);
    assert_eq!(entries[1].reply.src, endpoint_b);

    let removed_endpoint = Filter {
        protocol: Some(UDP),
        original_dst: Some(service),
        reply_src: Some(endpoint_a),
        reply_src_port: Some(pa),
        ..Filter::default()
    };
    // The same endpoint behind another Service address: nothing to delete.
    let elsewhere = Filter {
        original_dst: Some(Ipv4Addr::new(127, 1, 0, 99)),
        ..removed_endpoint
    };
    assert_eq!(conntrack.delete(&elsewhere).expect("delete"), 0);
    assert_eq!(conntrack.delete(&removed_endpoint).expect("delete"), 1);
    let left = udp_entries_from(&mut conntrack, p1);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].reply.src, endpoint_b);
}
