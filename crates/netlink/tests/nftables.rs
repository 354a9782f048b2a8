//! nf_tables through Ferry's encoder against the real kernel, each test in
//! network namespaces it creates (and deletes, pass or fail). `nft` is
//! used only here, to check that what we wrote reads back as intended.
//!
//! Needs root and `ip`/`nft` (Debian packages iproute2 and nftables).
//! Without them the tests are skipped with a message, except under
//! `CI=true`, where they fail.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ferry_netlink::nftables::*;
use nix::errno::Errno;

/// A named network namespace, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "fnft-{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    fn connect(&self) -> Connection {
        Connection::open_in_netns(self.path()).expect("open nf_tables in netns")
    }

    /// Runs a command inside the namespace; panics on failure.
    fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    fn nft_list(&self) -> String {
        self.exec(&["nft", "list", "ruleset"])
    }

    /// Runs `f` on a thread inside the namespace (to create sockets there).
    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let target = std::fs::File::open(&path).expect("open netns");
                    nix::sched::setns(&target, nix::sched::CloneFlags::CLONE_NEWNET)
                        .expect("setns");
                    f()
                })
                .join()
                .expect("netns thread")
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let status = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("cleanup: cannot delete netns {}", self.name);
        }
    }
}

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Whether this process can run the tests: root, `ip` and `nft`. Skips
/// with a reason, or fails under `CI=true`.
fn capable(test: &str) -> bool {
    let has = |program: &str, version_flag: &str| {
        Command::new(program)
            .arg(version_flag)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let reason = if !nix::unistd::geteuid().is_root() {
        Some("not running as root")
    } else if !has("ip", "-V") {
        Some("`ip` (iproute2) is not installed")
    } else if !has("nft", "--version") {
        Some("`nft` (Debian package nftables) is not installed")
    } else {
        None
    };
    match reason {
        None => true,
        Some(reason) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test} needs root, ip and nft: {reason}")
        }
        Some(reason) => {
            eprintln!("skipping {test}: {reason}");
            false
        }
    }
}

const TCP: u8 = 6;
const SERVICE_KEY: [DataType; 3] = [
    DataType::Ipv4Addr,
    DataType::InetProto,
    DataType::InetService,
];

fn service_key(addr: Ipv4Addr, proto: u8, port: u16) -> Value {
    Value::new().ipv4(addr).inet_proto(proto).inet_service(port)
}

/// A kube-proxy-shaped table: a verdict map from (daddr . proto . dport)
/// to per-service chains, a numgen DNAT over an endpoint map, a set of
/// services without endpoints (rejected), and masquerade for DNATed
/// traffic.
fn proxy_ruleset(name: &str) -> Ruleset {
    let table = Table::new(Family::Ip, name).comment("ferry proxy test");
    let services = Set::verdict_map(&table, "service-ips", SERVICE_KEY).comment("ClusterIPs");
    let endpoints = Set::map(
        &table,
        "service-endpoints",
        [DataType::Mark, DataType::Mark],
        [DataType::Ipv4Addr, DataType::InetService],
    );
    let no_endpoints = Set::new(&table, "no-endpoints", SERVICE_KEY);

    let prerouting = Chain::base(
        &table,
        "nat-prerouting",
        ChainType::Nat,
        Hook::Prerouting,
        priority::DSTNAT,
    );
    let output = Chain::base(
        &table,
        "nat-output",
        ChainType::Nat,
        Hook::Output,
        priority::DSTNAT,
    );
    let postrouting = Chain::base(
        &table,
        "nat-postrouting",
        ChainType::Nat,
        Hook::Postrouting,
        priority::SRCNAT,
    );
    let filter = Chain::base(
        &table,
        "filter-input",
        ChainType::Filter,
        Hook::Input,
        priority::FILTER,
    );
    let services_chain = Chain::new(&table, "services");
    let web = Chain::new(&table, "svc-web").comment("default/web:http");

    let dispatch = Rule::new()
        .load_concat(Register::R1, &[Load::IpDaddr, Load::L4Proto, Load::ThDport])
        .lookup_vmap("service-ips", Register::R1)
        .comment("dispatch ClusterIPs");
    // svc-web: service id 7 in R1 slot 0, random bucket of 2 in slot 1,
    // then (id . bucket) → (addr . port) and DNAT to it.
    let web_dnat = Rule::new()
        .immediate(Register::R1, 7u32.to_ne_bytes())
        .numgen_random(2, Register::r32(1))
        .lookup_map("service-endpoints", Register::R1, Register::R1)
        .counter()
        .dnat(Family::Ip, Register::R1, Some(Register::r32(1)));
    let reject = Rule::new()
        .load_concat(Register::R1, &[Load::IpDaddr, Load::L4Proto, Load::ThDport])
        .lookup("no-endpoints", Register::R1)
        .match_l4proto(TCP)
        .reject_tcp_reset();
    let reject_other = Rule::new()
        .load_concat(Register::R1, &[Load::IpDaddr, Load::L4Proto, Load::ThDport])
        .lookup("no-endpoints", Register::R1)
        .reject_icmp_port_unreachable();
    let local = Rule::new().match_oifname("lo").accept();
    let masquerade = Rule::new()
        .match_ct_status(ct_status::DST_NAT)
        .match_mark(0x4000, 0x4000)
        .masquerade();

    let cluster_ip = Ipv4Addr::new(10, 96, 0, 10);
    let mut ruleset = Ruleset::new(table.clone());
    ruleset
        .add_chain(prerouting, vec![Rule::new().jump("services")])
        .add_chain(output, vec![Rule::new().jump("services")])
        .add_chain(postrouting, vec![local, masquerade])
        .add_chain(filter, vec![reject, reject_other])
        .add_chain(services_chain, vec![dispatch])
        .add_chain(web, vec![Rule::new().set_mark(0x4000), web_dnat])
        .add_set(
            services,
            vec![
                SetElement::new(service_key(cluster_ip, TCP, 80))
                    .verdict(Verdict::Jump("svc-web".into()))
                    .comment("default/web:http"),
            ],
        )
        .add_set(
            endpoints,
            (0..2u32)
                .map(|bucket| {
                    SetElement::new(Value::new().mark(7).mark(bucket)).data(
                        Value::new()
                            .ipv4(Ipv4Addr::new(10, 244, 1, 10 + bucket as u8))
                            .inet_service(8080),
                    )
                })
                .collect(),
        )
        .add_set(
            no_endpoints,
            vec![SetElement::new(service_key(
                Ipv4Addr::new(10, 96, 0, 11),
                TCP,
                443,
            ))],
        );
    ruleset
}

/// Elements come back in hash order: compare sets of them.
fn sorted(mut ruleset: Ruleset) -> Ruleset {
    for set in &mut ruleset.sets {
        set.elements
            .sort_by(|a, b| (&a.key, &a.key_end).cmp(&(&b.key, &b.key_end)));
    }
    ruleset
}

fn list(conn: &mut Connection, table: &Table) -> Ruleset {
    sorted(
        Ruleset::list(conn, table)
            .expect("list")
            .expect("table exists"),
    )
}

#[test]
fn kube_proxy_shaped_ruleset_applies_in_one_batch() {
    if !capable("kube_proxy_shaped_ruleset_applies_in_one_batch") {
        return;
    }
    let ns = Netns::new("proxy");
    let mut conn = ns.connect();
    let desired = proxy_ruleset("ferry");
    conn.apply(&desired.diff(None)).expect("apply");

    // What nft reads back is what we meant.
    let listing = ns.nft_list();
    for expected in [
        "type ipv4_addr . inet_proto . inet_service : verdict",
        "elements = { 10.96.0.10 . tcp . 80 comment \"default/web:http\" : jump svc-web }",
        "type mark . mark : ipv4_addr . inet_service",
        "0x00000007 . 0x00000001 : 10.244.1.11 . 8080",
        "type nat hook prerouting priority dstnat; policy accept;",
        "type nat hook postrouting priority srcnat; policy accept;",
        "type filter hook input priority filter; policy accept;",
        "ip daddr . meta l4proto . th dport vmap @service-ips comment \"dispatch ClusterIPs\"",
        "numgen random mod 2 map @service-endpoints",
        "oifname \"lo\" accept",
        "ct status dnat meta mark & 0x00004000 == 0x00004000 masquerade",
        "ip daddr . meta l4proto . th dport @no-endpoints reject with tcp reset",
        "meta mark set 0x00004000",
        "comment \"ferry proxy test\"",
    ] {
        assert!(
            listing.contains(expected),
            "missing {expected:?} in:\n{listing}"
        );
    }

    // And our own listing decodes to exactly what we sent.
    assert_eq!(list(&mut conn, &desired.table), sorted(desired.clone()));
    let rules = conn
        .list_rules(&desired.table, Some("svc-web"))
        .expect("list rules");
    assert_eq!(rules.len(), 2);
    assert!(rules[0].handle != 0 && rules[0].handle != rules[1].handle);

    // Applying the same ruleset again changes nothing.
    assert!(
        desired
            .diff(Some(&list(&mut conn, &desired.table)))
            .is_empty()
    );
}

#[test]
fn diffs_apply_only_what_changed() {
    if !capable("diffs_apply_only_what_changed") {
        return;
    }
    let ns = Netns::new("diff");
    let mut conn = ns.connect();
    let before = proxy_ruleset("ferry");
    conn.apply(&before.diff(None)).expect("apply");

    // A new service with its own chain, a moved endpoint, a rule change.
    let mut after = before.clone();
    let table = after.table.clone();
    after.add_chain(
        Chain::new(&table, "svc-api"),
        vec![Rule::new().dnat_to(Ipv4Addr::new(10, 244, 2, 20), Some(6443))],
    );
    let services = &mut after.sets[0].elements;
    services.push(
        SetElement::new(service_key(Ipv4Addr::new(10, 96, 0, 1), TCP, 443))
            .verdict(Verdict::Jump("svc-api".into())),
    );
    after.sets[1].elements[1] = SetElement::new(Value::new().mark(7).mark(1)).data(
        Value::new()
            .ipv4(Ipv4Addr::new(10, 244, 3, 30))
            .inet_service(8080),
    );
    after.chains[2].rules[1] = Rule::new().match_ct_status(ct_status::DST_NAT).masquerade();

    let batch = after.diff(Some(&list(&mut conn, &table)));
    // Add chain svc-api, flush nat-postrouting, delete the old endpoint,
    // add the service and the new endpoint, refill nat-postrouting (two
    // rules), fill svc-api: eight messages, nothing else touched.
    assert_eq!(batch.len(), 8, "{batch:?}");
    conn.apply(&batch).expect("apply diff");
    assert_eq!(list(&mut conn, &table), sorted(after.clone()));

    // And back: the service, its chain and the endpoint go away.
    let batch = before.diff(Some(&list(&mut conn, &table)));
    conn.apply(&batch).expect("apply reverse diff");
    assert_eq!(list(&mut conn, &table), sorted(before));
    assert!(!ns.nft_list().contains("svc-api"));
}

#[test]
fn refused_batches_name_the_message_and_change_nothing() {
    if !capable("refused_batches_name_the_message_and_change_nothing") {
        return;
    }
    let ns = Netns::new("errors");
    let mut conn = ns.connect();
    let table = Table::new(Family::Ip, "ferry");
    let chain = Chain::new(&table, "present");
    let missing = Chain::new(&table, "missing");

    let mut batch = Batch::new();
    batch
        .add_table(&table)
        .add_chain(&chain)
        .add_rule(&chain, &Rule::new().accept())
        .add_rule(&missing, &Rule::new().drop().comment("lost"));
    let err = conn.apply(&batch).expect_err("rule in a missing chain");
    let Error::Rejected { failures } = &err else {
        panic!("unexpected {err}");
    };
    assert_eq!(failures.len(), 1, "{err}");
    assert_eq!(failures[0].operation, Operation::Add);
    assert_eq!(
        failures[0].object,
        "rule \"lost\" in chain ip ferry missing"
    );
    assert_eq!(failures[0].errno, Errno::ENOENT);
    // Atomic: the table of the same batch was not created either.
    assert!(conn.list_tables(Some(Family::Ip)).expect("list").is_empty());

    // A failing element is named by its key.
    let set = Set::new(&table, "ports", [DataType::InetService]);
    let mut batch = Batch::new();
    batch
        .add_table(&table)
        .add_set(&set)
        .add_elements(&set, &[SetElement::new(Value::new().inet_service(80))]);
    conn.apply(&batch).expect("create set");
    let mut batch = Batch::new();
    batch.delete_elements(
        &set,
        &[
            SetElement::new(Value::new().inet_service(80)),
            SetElement::new(Value::new().inet_service(8443)),
        ],
    );
    let err = conn.apply(&batch).expect_err("deleting an absent element");
    let message = err.to_string();
    assert!(
        message.contains("delete elements of set ip ferry ports")
            && message.contains("ENOENT")
            && message.contains("element 8443"),
        "{message}"
    );
    assert_eq!(conn.list_elements(&set).expect("list").len(), 1);

    // A failing expression is named by its position and kind.
    let mut batch = Batch::new();
    batch.add_chain(&chain).add_rule(
        &chain,
        &Rule::new()
            .payload_th_dport(Register::R1)
            .lookup("no-such-set", Register::R1)
            .accept(),
    );
    let err = conn.apply(&batch).expect_err("missing set");
    let message = err.to_string();
    assert!(message.contains("expression 2 (lookup)"), "{message}");

    // Values of the wrong size never reach the kernel.
    let mut batch = Batch::new();
    batch.add_elements(&set, &[SetElement::new(Value::new().mark(1))]);
    let err = conn.apply(&batch).expect_err("wrong size");
    assert!(matches!(err, Error::Encode { .. }), "{err}");
}

#[test]
fn a_stale_generation_is_refused() {
    if !capable("a_stale_generation_is_refused") {
        return;
    }
    let ns = Netns::new("genid");
    let mut conn = ns.connect();
    let table = Table::new(Family::Inet, "ferry");
    let generation = conn.generation().expect("generation");

    let mut other = Batch::new();
    other.add_table(&Table::new(Family::Ip, "someone-else"));
    ns.connect().apply(&other).expect("concurrent change");

    let mut batch = Batch::new();
    batch.add_table(&table).expect_generation(generation);
    let err = conn.apply(&batch).expect_err("stale");
    assert!(matches!(err, Error::GenerationChanged { .. }), "{err}");

    let mut batch = Batch::new();
    batch
        .add_table(&table)
        .expect_generation(conn.generation().expect("generation"));
    conn.apply(&batch).expect("fresh generation");
    // Destroying twice is fine; deleting an absent table is not.
    let mut batch = Batch::new();
    batch.destroy_table(&table).destroy_table(&table);
    conn.apply(&batch).expect("destroy");
    let mut batch = Batch::new();
    batch.delete_table(&table);
    assert_eq!(
        conn.apply(&batch).expect_err("absent").errno(),
        Some(Errno::ENOENT)
    );
}

#[test]
fn large_maps_span_several_messages_of_one_batch() {
    if !capable("large_maps_span_several_messages_of_one_batch") {
        return;
    }
    let ns = Netns::new("large");
    let mut conn = ns.connect();
    let table = Table::new(Family::Ip, "ferry");
    let map = Set::map(
        &table,
        "endpoints",
        [DataType::Mark, DataType::Mark],
        [DataType::Ipv4Addr, DataType::InetService],
    )
    .size(65536);
    let elements: Vec<SetElement> = (0..20_000u32)
        .map(|i| {
            SetElement::new(Value::new().mark(i / 4).mark(i % 4)).data(
                Value::new()
                    .ipv4(Ipv4Addr::from(0x0af4_0000 + i))
                    .inet_service(8080),
            )
        })
        .collect();
    let mut batch = Batch::new();
    batch
        .add_table(&table)
        .add_set(&map)
        .add_elements(&map, &elements);
    assert!(batch.len() > 4, "elements split over messages");
    assert!(
        batch.size() > 212_992,
        "larger than the default socket buffer"
    );
    conn.apply(&batch).expect("apply");
    let live = conn.list_elements(&map).expect("list");
    assert_eq!(live.len(), elements.len());
    assert_eq!(conn.list_sets(&table).expect("sets"), vec![map]);
}

#[test]
fn packets_follow_the_rules() {
    if !capable("packets_follow_the_rules") {
        return;
    }
    // client (10.200.0.1) ── veth ── server (10.200.0.2), which runs the
    // rules and two listeners standing in for endpoints of a ClusterIP.
    let client = Netns::new("client");
    let server = Netns::new("server");
    client.exec(&[
        "ip",
        "link",
        "add",
        "veth-c",
        "type",
        "veth",
        "peer",
        "name",
        "veth-s",
        "netns",
        &server.name,
    ]);
    client.exec(&["ip", "addr", "add", "10.200.0.1/24", "dev", "veth-c"]);
    client.exec(&["ip", "link", "set", "veth-c", "up"]);
    client.exec(&["ip", "route", "add", "10.96.0.0/12", "via", "10.200.0.2"]);
    server.exec(&["ip", "addr", "add", "10.200.0.2/24", "dev", "veth-s"]);
    server.exec(&["ip", "link", "set", "veth-s", "up"]);

    let listeners: Vec<TcpListener> = server.enter(|| {
        [8080, 8081]
            .map(|port| TcpListener::bind(("10.200.0.2", port)).expect("bind"))
            .into()
    });
    for listener in listeners {
        std::thread::spawn(move || {
            let port = listener.local_addr().expect("addr").port();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.write_all(port.to_string().as_bytes());
            }
        });
    }

    let table = Table::new(Family::Ip, "ferry");
    let services = Set::verdict_map(&table, "service-ips", SERVICE_KEY);
    let no_endpoints = Set::new(&table, "no-endpoints", SERVICE_KEY);
    let endpoints = Set::map(
        &table,
        "service-endpoints",
        [DataType::Mark, DataType::Mark],
        [DataType::Ipv4Addr, DataType::InetService],
    );
    let cluster_ip = Ipv4Addr::new(10, 96, 0, 10);
    let mut ruleset = Ruleset::new(table.clone());
    ruleset
        .add_chain(
            Chain::base(
                &table,
                "filter-prerouting",
                ChainType::Filter,
                Hook::Prerouting,
                priority::DSTNAT - 10,
            ),
            vec![
                Rule::new()
                    .load_concat(Register::R1, &[Load::IpDaddr, Load::L4Proto, Load::ThDport])
                    .lookup("no-endpoints", Register::R1)
                    .match_l4proto(TCP)
                    .reject_tcp_reset(),
            ],
        )
        .add_chain(
            Chain::base(
                &table,
                "nat-prerouting",
                ChainType::Nat,
                Hook::Prerouting,
                priority::DSTNAT,
            ),
            vec![
                Rule::new()
                    .load_concat(Register::R1, &[Load::IpDaddr, Load::L4Proto, Load::ThDport])
                    .lookup_vmap("service-ips", Register::R1),
            ],
        )
        .add_chain(
            Chain::new(&table, "svc-web"),
            vec![
                Rule::new()
                    .immediate(Register::R1, 1u32.to_ne_bytes())
                    .numgen_inc(2, Register::r32(1))
                    .lookup_map("service-endpoints", Register::R1, Register::R1)
                    .dnat(Family::Ip, Register::R1, Some(Register::r32(1))),
            ],
        )
        .add_set(
            services,
            vec![
                SetElement::new(service_key(cluster_ip, TCP, 80))
                    .verdict(Verdict::Jump("svc-web".into())),
            ],
        )
        .add_set(
            endpoints,
            [8080u16, 8081]
                .iter()
                .enumerate()
                .map(|(bucket, port)| {
                    SetElement::new(Value::new().mark(1).mark(bucket as u32)).data(
                        Value::new()
                            .ipv4(Ipv4Addr::new(10, 200, 0, 2))
                            .inet_service(*port),
                    )
                })
                .collect(),
        )
        .add_set(
            no_endpoints,
            vec![SetElement::new(service_key(cluster_ip, TCP, 81))],
        );
    server.connect().apply(&ruleset.diff(None)).expect("apply");

    // Round robin over both endpoints through the ClusterIP.
    let answers: Vec<String> = client.enter(|| {
        (0..4)
            .map(|_| {
                let target = SocketAddr::from((cluster_ip, 80));
                let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(5))
                    .expect("connect to the ClusterIP");
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("read timeout");
                let mut answer = String::new();
                stream.read_to_string(&mut answer).expect("read");
                answer
            })
            .collect()
    });
    let mut seen = answers.clone();
    seen.sort();
    assert_eq!(seen, ["8080", "8080", "8081", "8081"], "{answers:?}");

    // A service without endpoints is refused at once, not black-holed.
    let refused = client.enter(|| {
        TcpStream::connect_timeout(&SocketAddr::from((cluster_ip, 81)), Duration::from_secs(5))
    });
    assert_eq!(
        refused.expect_err("no endpoints").kind(),
        std::io::ErrorKind::ConnectionRefused
    );
}

#[test]
fn interval_and_dynamic_sets() {
    if !capable("interval_and_dynamic_sets") {
        return;
    }
    let ns = Netns::new("sets");
    let mut conn = ns.connect();
    let table = Table::new(Family::Inet, "ferry");
    // loadBalancerSourceRanges: prefixes, alone and per port.
    let ranges = Set::new(&table, "source-ranges", [DataType::Ipv4Addr]).flags(SetFlags::INTERVAL);
    let per_port = Set::new(
        &table,
        "source-ranges-by-port",
        [DataType::Ipv4Addr, DataType::InetService],
    )
    .flags(SetFlags::INTERVAL);
    // sessionAffinity: ClientIP, refreshed from the packet path.
    let affinity = Set::map(
        &table,
        "affinity",
        [DataType::Ipv4Addr, DataType::Mark],
        [DataType::Ipv4Addr, DataType::InetService],
    )
    .flags(SetFlags::TIMEOUT | SetFlags::DYNAMIC)
    .timeout(Duration::from_secs(10800))
    .size(65535);
    let chain = Chain::base(
        &table,
        "input",
        ChainType::Filter,
        Hook::Input,
        priority::FILTER,
    );

    let ip = |a, b, c, d| Value::new().ipv4(Ipv4Addr::new(a, b, c, d));
    let mut ruleset = Ruleset::new(table.clone());
    ruleset
        .add_set(
            ranges,
            vec![
                SetElement::new(ip(10, 0, 0, 0)),
                SetElement::new(ip(11, 0, 0, 0)).interval_end(),
                SetElement::new(ip(192, 168, 1, 0)),
                SetElement::new(ip(192, 168, 2, 0)).interval_end(),
            ],
        )
        .add_set(
            per_port,
            vec![
                SetElement::new(ip(10, 0, 0, 0).inet_service(80))
                    .range_end(ip(10, 255, 255, 255).inet_service(80)),
            ],
        )
        .add_set(affinity, Vec::new())
        .add_chain(
            chain,
            vec![
                Rule::new()
                    .match_nfproto(Family::Ip)
                    .match_ip_saddr(Ipv4Addr::new(127, 0, 0, 1))
                    .accept(),
                Rule::new()
                    .match_nfproto(Family::Ip)
                    .payload_ip_saddr(Register::R1)
                    .lookup_not("source-ranges", Register::R1)
                    .reject_icmpx_port_unreachable(),
                Rule::new()
                    .match_nfproto(Family::Ip)
                    .load_concat(Register::R1, &[Load::IpSaddr, Load::Mark])
                    .immediate(Register::R2, Ipv4Addr::new(10, 244, 0, 5).octets())
                    .immediate(Register::R2.after(4), 8080u16.to_be_bytes())
                    .dynset_update("affinity", Register::R1, Some(Register::R2), None),
            ],
        );
    conn.apply(&ruleset.diff(None)).expect("apply");

    let listing = ns.nft_list();
    for expected in [
        "elements = { 10.0.0.0/8, 192.168.1.0/24 }",
        "elements = { 10.0.0.0/8 . 80 }",
        "flags dynamic,timeout",
        "timeout 3h",
        "ip saddr 127.0.0.1 accept",
        "ip saddr != @source-ranges reject",
        "update @affinity { ip saddr . meta mark : 10.244.0.5 . 8080 }",
    ] {
        assert!(
            listing.contains(expected),
            "missing {expected:?} in:\n{listing}"
        );
    }
    let live = list(&mut conn, &table);
    assert_eq!(live, sorted(ruleset.clone()));

    // The kernel's default size for dynamic sets is not a difference.
    ruleset.sets[2].set.size = None;
    assert!(ruleset.diff(Some(&live)).is_empty());
}
