//! A scratch network namespace for kernel tests of the rendered ruleset:
//! `lo` up with endpoint addresses, a route for Service IPs (so the output
//! hook can DNAT them), listeners that answer with their own address.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use ferry_netlink::Netlink;
use ferry_netlink::netns::NetNs;
use ferry_netlink::nftables::{Connection, Ruleset};
use ferry_netlink::route::Route;

/// Root is needed; outside CI a test without it prints why and skips.
pub fn is_root() -> bool {
    ferry_netlink::netns::usable_by_test("ferry-proxy kernel test")
}

pub struct Scratch {
    pub name: String,
    pub netns: NetNs,
    pub ruleset: Option<Ruleset>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = ferry_netlink::netns::delete(&self.name);
    }
}

impl Scratch {
    /// A namespace `fpx-<tag>-<pid>` with `addresses` on `lo`.
    pub fn new(tag: &str, addresses: &[Ipv4Addr]) -> Scratch {
        let name = format!("fpx-{tag}-{}", std::process::id());
        let _ = ferry_netlink::netns::delete(&name);
        let netns = ferry_netlink::netns::create(&name).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let nl = Netlink::connect_in(&netns).await.unwrap();
            nl.set_up("lo").await.unwrap();
            let lo = nl.require_link("lo").await.unwrap();
            for ip in addresses {
                nl.add_address(lo.index, *ip, 32).await.unwrap();
            }
            nl.add_route(&Route::to(Ipv4Addr::new(10, 96, 0, 0), 12).dev(lo.index))
                .await
                .unwrap();
        });
        Scratch {
            name,
            netns,
            ruleset: None,
        }
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Applies `want` as the difference from what was applied before.
    pub fn apply(&mut self, want: Ruleset) {
        let batch = want.diff(self.ruleset.as_ref());
        Connection::open_in_netns(self.path())
            .unwrap()
            .apply(&batch)
            .unwrap();
        self.ruleset = Some(want);
    }

    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.netns.run(f).unwrap()
    }

    /// Listeners on `addresses`:`port` that write their own address and
    /// close, on background threads (for the life of the test).
    pub fn serve(&self, addresses: &[Ipv4Addr], port: u16) {
        let addresses = addresses.to_vec();
        self.run(move || {
            for ip in addresses {
                let l = TcpListener::bind((ip, port)).unwrap();
                std::thread::spawn(move || {
                    let me = ip.to_string();
                    for stream in l.incoming() {
                        let Ok(mut s) = stream else { continue };
                        let _ = s.write_all(me.as_bytes());
                    }
                });
            }
        });
    }
}

/// Connects (from `source` if given) and returns what the server wrote.
pub fn who(to: SocketAddr, source: Option<Ipv4Addr>) -> std::io::Result<String> {
    let mut s = match source {
        None => TcpStream::connect_timeout(&to, Duration::from_secs(2))?,
        Some(src) => {
            // Bind before connect: tokio's TcpSocket does it without unsafe.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let sock = tokio::net::TcpSocket::new_v4()?;
                sock.bind(SocketAddr::from((src, 0)))?;
                let stream = sock.connect(to).await?;
                let std = stream.into_std()?;
                std.set_nonblocking(false)?;
                Ok::<_, std::io::Error>(std)
            })?
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}
