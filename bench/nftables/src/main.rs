//! Loading a kube-proxy-sized NAT ruleset: Ferry's nf_tables encoder
//! against `nft -f`, side by side in one run (BENCHMARKS.md).
//!
//! The ruleset is the "two global maps" shape of issue 6:
//! (daddr . proto . dport) → service id, and (service id . `numgen random
//! mod M` bucket) → endpoint address . port, with two rules that chain the
//! lookups through the packet mark (the form `nft` can also parse, so both
//! sides load the same thing). Each round loads it into a fresh network
//! namespace with Ferry, then with `nft -f`, alternating (A B A B), then
//! applies a one-endpoint change with each. Needs root, `ip` and `nft`.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use ferry_netlink::nftables::{
    Chain, ChainType, Connection, DataType, Family, Hook, Load, MetaKey, Register, Rule, Ruleset,
    Set, SetElement, Table, Value, priority,
};

#[derive(Parser)]
#[command(about = "nf_tables load benchmark: Ferry's encoder vs nft -f")]
struct Args {
    /// Number of Services (one ClusterIP:port each).
    #[arg(long, default_value_t = 10_000)]
    services: u32,
    /// Endpoints per Service; also the numgen modulus (buckets per Service).
    #[arg(long, default_value_t = 5)]
    endpoints: u32,
    /// Rounds; each loads once with Ferry and once with nft.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Keep the generated nft file here instead of a temp file.
    #[arg(long)]
    nft_file: Option<PathBuf>,
}

const TCP: u8 = 6;
const TABLE: &str = "ferry-bench";

fn cluster_ip(service: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + 1 + service)
}

fn endpoint_ip(service: u32, endpoint: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)) + 1 + service * 8 + endpoint)
}

/// The ruleset as Ferry's dataplane would build it.
fn ferry_ruleset(args: &Args) -> Ruleset {
    let table = Table::new(Family::Ip, TABLE);
    let ids = Set::map(
        &table,
        "service-ids",
        [
            DataType::Ipv4Addr,
            DataType::InetProto,
            DataType::InetService,
        ],
        [DataType::Mark],
    );
    let endpoints = Set::map(
        &table,
        "service-endpoints",
        [DataType::Mark, DataType::Mark],
        [DataType::Ipv4Addr, DataType::InetService],
    );
    let chain = Chain::base(
        &table,
        "nat-prerouting",
        ChainType::Nat,
        Hook::Prerouting,
        priority::DSTNAT,
    );
    let rules = vec![
        Rule::new()
            .load_concat(Register::R1, &[Load::IpDaddr, Load::L4Proto, Load::ThDport])
            .lookup_map("service-ids", Register::R1, Register::R1)
            .meta_set(MetaKey::Mark, Register::R1),
        Rule::new()
            .match_l4proto(TCP)
            .meta_mark(Register::R1)
            .numgen_random(args.endpoints, Register::r32(1))
            .lookup_map("service-endpoints", Register::R1, Register::R1)
            .dnat(Family::Ip, Register::R1, Some(Register::r32(1))),
    ];
    let id_elements = (0..args.services)
        .map(|s| {
            SetElement::new(
                Value::new()
                    .ipv4(cluster_ip(s))
                    .inet_proto(TCP)
                    .inet_service(80),
            )
            .data(Value::new().mark(s + 1))
        })
        .collect();
    let endpoint_elements = (0..args.services)
        .flat_map(|s| {
            (0..args.endpoints).map(move |e| {
                SetElement::new(Value::new().mark(s + 1).mark(e))
                    .data(Value::new().ipv4(endpoint_ip(s, e)).inet_service(8080))
            })
        })
        .collect();
    let mut ruleset = Ruleset::new(table);
    ruleset
        .add_set(ids, id_elements)
        .add_set(endpoints, endpoint_elements)
        .add_chain(chain, rules);
    ruleset
}

/// The same ruleset as an nft file.
fn nft_ruleset(args: &Args) -> String {
    let mut out =
        String::with_capacity(args.services as usize * (40 + 40 * args.endpoints as usize));
    let _ = writeln!(out, "table ip {TABLE} {{");
    out.push_str("  map service-ids {\n    type ipv4_addr . inet_proto . inet_service : mark\n    elements = {\n");
    for s in 0..args.services {
        let _ = writeln!(out, "      {} . tcp . 80 : {},", cluster_ip(s), s + 1);
    }
    out.push_str("    }\n  }\n");
    let _ = writeln!(
        out,
        "  map service-endpoints {{\n    typeof meta mark . numgen random mod {} : ip daddr . tcp dport\n    elements = {{",
        args.endpoints
    );
    for s in 0..args.services {
        for e in 0..args.endpoints {
            let _ = writeln!(out, "      {} . {e} : {} . 8080,", s + 1, endpoint_ip(s, e));
        }
    }
    out.push_str("    }\n  }\n");
    let _ = writeln!(
        out,
        "  chain nat-prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    \
         meta mark set ip daddr . meta l4proto . th dport map @service-ids\n    \
         meta l4proto tcp dnat ip addr . port to meta mark . numgen random mod {} map @service-endpoints\n  }}\n}}",
        args.endpoints
    );
    out
}

/// A named network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> anyhow::Result<Netns> {
        let name = format!("fbench-{}-{tag}", std::process::id());
        if PathBuf::from("/run/netns").join(&name).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
        run("ip", &["netns", "add", &name])?;
        Ok(Netns(name))
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn nft_in(ns: &Netns, file: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    run("ip", &["netns", "exec", &ns.0, "nft", "-f", file])?;
    Ok(start.elapsed())
}

struct FerryLoad {
    build: Duration,
    encode: Duration,
    apply: Duration,
    bytes: usize,
    messages: usize,
}

fn ferry_load(args: &Args, ns: &Netns) -> anyhow::Result<(FerryLoad, Ruleset, Connection)> {
    let start = Instant::now();
    let ruleset = ferry_ruleset(args);
    let build = start.elapsed();
    let start = Instant::now();
    let batch = ruleset.diff(None);
    let encode = start.elapsed();
    let mut conn = Connection::open_in_netns(ns.path())?;
    let start = Instant::now();
    conn.apply(&batch)?;
    let apply = start.elapsed();
    Ok((
        FerryLoad {
            build,
            encode,
            apply,
            bytes: batch.size(),
            messages: batch.len(),
        },
        ruleset,
        conn,
    ))
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let nft_text = nft_ruleset(&args);
    let (nft_path, _temp) = match &args.nft_file {
        Some(path) => (path.clone(), None),
        None => {
            let path = std::env::temp_dir().join(format!("ferry-bench-{}.nft", std::process::id()));
            (path.clone(), Some(TempFile(path)))
        }
    };
    std::fs::write(&nft_path, &nft_text).context("writing the nft file")?;
    let nft_file = nft_path.to_string_lossy().into_owned();
    // A one-endpoint change: service 0's bucket 0 moves to a new address.
    let change_path =
        std::env::temp_dir().join(format!("ferry-bench-{}-change.nft", std::process::id()));
    let _temp_change = TempFile(change_path.clone());
    std::fs::write(
        &change_path,
        format!(
            "delete element ip {TABLE} service-endpoints {{ 1 . 0 }}\n\
             add element ip {TABLE} service-endpoints {{ 1 . 0 : 10.245.0.1 . 8080 }}\n"
        ),
    )?;
    let change_file = change_path.to_string_lossy().into_owned();

    println!(
        "{} services x {} endpoints: {} + {} map elements; nft file {} KiB",
        args.services,
        args.endpoints,
        args.services,
        args.services * args.endpoints,
        nft_text.len() / 1024
    );
    println!(
        "round | ferry total s (build / encode / apply) | nft -f s | ferry change ms | nft change ms"
    );
    let (mut ferry_totals, mut nft_totals, mut ferry_changes, mut nft_changes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        // A: Ferry, into a fresh namespace.
        let ns = Netns::new("ferry")?;
        let (load, ruleset, mut conn) = ferry_load(&args, &ns)?;
        let total = load.build + load.encode + load.apply;
        // One endpoint changes: diff against the last applied state.
        let mut changed = ruleset.clone();
        changed.sets[1].elements[0] = SetElement::new(Value::new().mark(1).mark(0)).data(
            Value::new()
                .ipv4(Ipv4Addr::new(10, 245, 0, 1))
                .inet_service(8080),
        );
        let start = Instant::now();
        let batch = changed.diff(Some(&ruleset));
        let diff = start.elapsed();
        conn.apply(&batch)?;
        let ferry_change = start.elapsed();
        if batch.len() != 2 {
            bail!(
                "the one-endpoint diff has {} messages, expected 2",
                batch.len()
            );
        }
        let live = Ruleset::list(&mut conn, &changed.table)?.context("table missing")?;
        let loaded: usize = live.sets.iter().map(|s| s.elements.len()).sum();
        if loaded != (args.services * (1 + args.endpoints)) as usize {
            bail!("ferry loaded {loaded} elements");
        }
        drop(conn);
        drop(ns);

        // B: nft -f, into a fresh namespace.
        let ns = Netns::new("nft")?;
        let nft = nft_in(&ns, &nft_file)?;
        let nft_change = nft_in(&ns, &change_file)?;
        drop(ns);

        println!(
            "{round} | {} ({} / {} / {}; {} messages, {} KiB) | {} | {} (diff {}) | {}",
            secs(total),
            secs(load.build),
            secs(load.encode),
            secs(load.apply),
            load.messages,
            load.bytes / 1024,
            secs(nft),
            ms(ferry_change),
            ms(diff),
            ms(nft_change),
        );
        ferry_totals.push(total);
        nft_totals.push(nft);
        ferry_changes.push(ferry_change);
        nft_changes.push(nft_change);
    }
    let (ferry, nft) = (median(ferry_totals), median(nft_totals));
    let (ferry_change, nft_change) = (median(ferry_changes), median(nft_changes));
    println!(
        "median: ferry {} s, nft -f {} s, nft/ferry {:.1}x; one-endpoint change: ferry {} ms, nft -f {} ms",
        secs(ferry),
        secs(nft),
        nft.as_secs_f64() / ferry.as_secs_f64().max(1e-9),
        ms(ferry_change),
        ms(nft_change),
    );
    Ok(())
}

/// Removes a file on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
