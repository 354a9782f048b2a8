//! The address pool of LoadBalancer IPAM: `--load-balancer-pool` entries
//! (single IPs, CIDRs, `first-last` ranges; IPv4 or IPv6) and who holds
//! which address. Pure: no I/O, no Kubernetes types.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A `--load-balancer-pool` entry that is not an address, CIDR or range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("load balancer pool entry {0:?} is not an IP address, a CIDR or a first-last range")]
pub struct BadPoolEntry(pub String);

/// Why a Service got no address; shown in its `AllocationFailed` Event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    #[error("no available IPs")]
    Exhausted,
    #[error("spec.loadBalancerIP {0:?} is not a valid IP address")]
    Invalid(String),
    #[error("{0} is not in the load balancer pool")]
    NotInPool(IpAddr),
    #[error("{ip} is already assigned to {owner}")]
    InUse { ip: IpAddr, owner: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

fn family_of(ip: IpAddr) -> Family {
    if ip.is_ipv4() { Family::V4 } else { Family::V6 }
}

fn to_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_bits(bits: u128, family: Family) -> IpAddr {
    match family {
        // Ranges of the V4 family only hold 32-bit values.
        Family::V4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(bits).unwrap_or(u32::MAX))),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(bits)),
    }
}

/// Inclusive range of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    family: Family,
    first: u128,
    last: u128,
}

impl Range {
    fn parse(entry: &str) -> Result<Range, BadPoolEntry> {
        let bad = || BadPoolEntry(entry.to_string());
        let entry = entry.trim();
        if let Some((ip, prefix)) = entry.split_once('/') {
            let ip: IpAddr = ip.parse().map_err(|_| bad())?;
            let width = if ip.is_ipv4() { 32 } else { 128 };
            let prefix: u32 = prefix.parse().map_err(|_| bad())?;
            if prefix > width {
                return Err(bad());
            }
            // Every address of the CIDR is handed out (like MetalLB): a
            // load balancer address is not a host on that subnet.
            let host_bits = width - prefix;
            let size_mask = if host_bits == 128 {
                u128::MAX
            } else {
                (1u128 << host_bits) - 1
            };
            let first = to_bits(ip) & !size_mask;
            return Ok(Range {
                family: family_of(ip),
                first,
                last: first | size_mask,
            });
        }
        if let Some((first, last)) = entry.split_once('-') {
            let first: IpAddr = first.trim().parse().map_err(|_| bad())?;
            let last: IpAddr = last.trim().parse().map_err(|_| bad())?;
            if family_of(first) != family_of(last) || to_bits(first) > to_bits(last) {
                return Err(bad());
            }
            return Ok(Range {
                family: family_of(first),
                first: to_bits(first),
                last: to_bits(last),
            });
        }
        let ip: IpAddr = entry.parse().map_err(|_| bad())?;
        Ok(Range {
            family: family_of(ip),
            first: to_bits(ip),
            last: to_bits(ip),
        })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        family_of(ip) == self.family && (self.first..=self.last).contains(&to_bits(ip))
    }
}

/// The pool and who holds which address (owners are `namespace/name`).
#[derive(Debug, Clone, Default)]
pub struct Pool {
    ranges: Vec<Range>,
    held: BTreeMap<IpAddr, String>,
    by_owner: HashMap<String, IpAddr>,
}

impl Pool {
    pub fn parse(entries: &[String]) -> Result<Pool, BadPoolEntry> {
        let ranges = entries
            .iter()
            .map(|e| Range::parse(e))
            .collect::<Result<_, _>>()?;
        Ok(Pool {
            ranges,
            ..Pool::default()
        })
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }

    pub fn holder(&self, owner: &str) -> Option<IpAddr> {
        self.by_owner.get(owner).copied()
    }

    /// Gives `owner` exactly `ip` (requested, or found in its status).
    pub fn assign(&mut self, owner: &str, ip: IpAddr) -> Result<(), AllocationError> {
        if !self.contains(ip) {
            return Err(AllocationError::NotInPool(ip));
        }
        match self.held.get(&ip) {
            Some(o) if o == owner => return Ok(()),
            Some(o) => {
                return Err(AllocationError::InUse {
                    ip,
                    owner: o.clone(),
                });
            }
            None => {}
        }
        self.release(owner);
        self.held.insert(ip, owner.to_string());
        self.by_owner.insert(owner.to_string(), ip);
        Ok(())
    }

    /// The lowest free address of `family` (or the one `owner` holds).
    pub fn allocate(&mut self, owner: &str, family: Family) -> Result<IpAddr, AllocationError> {
        if let Some(ip) = self.holder(owner) {
            return Ok(ip);
        }
        for range in self.ranges.iter().filter(|r| r.family == family) {
            // Walk the held addresses inside the range to the first gap:
            // O(held), whatever the size of the range.
            let mut candidate = range.first;
            let lo = from_bits(range.first, family);
            let hi = from_bits(range.last, family);
            for held in self.held.range(lo..=hi).map(|(ip, _)| to_bits(*ip)) {
                if held != candidate {
                    break;
                }
                candidate += 1;
            }
            if candidate <= range.last {
                let ip = from_bits(candidate, family);
                self.held.insert(ip, owner.to_string());
                self.by_owner.insert(owner.to_string(), ip);
                return Ok(ip);
            }
        }
        Err(AllocationError::Exhausted)
    }

    pub fn release(&mut self, owner: &str) -> Option<IpAddr> {
        let ip = self.by_owner.remove(owner)?;
        self.held.remove(&ip);
        Some(ip)
    }

    /// Every address held, with its owner, in address order.
    pub fn assignments(&self) -> impl Iterator<Item = (IpAddr, &str)> {
        self.held.iter().map(|(ip, owner)| (*ip, owner.as_str()))
    }

    pub fn clear(&mut self) {
        self.held.clear();
        self.by_owner.clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pool(entries: &[&str]) -> Pool {
        Pool::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn pool_entries() {
        let mut p = pool(&[
            "172.30.0.200/30",
            "10.0.0.7",
            "10.1.0.1-10.1.0.2",
            "fd00::/126",
        ]);
        let got: Vec<String> = (0..7)
            .map(|i| {
                p.allocate(&format!("s{i}"), Family::V4)
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            got,
            [
                "172.30.0.200",
                "172.30.0.201",
                "172.30.0.202",
                "172.30.0.203",
                "10.0.0.7",
                "10.1.0.1",
                "10.1.0.2"
            ]
        );
        assert_eq!(p.allocate("x", Family::V4), Err(AllocationError::Exhausted));
        assert_eq!(p.allocate("x", Family::V6).unwrap(), ip("fd00::"));
        assert!(p.contains(ip("fd00::3")) && !p.contains(ip("fd00::4")));
        for bad in [
            "",
            "10.0.0.0/33",
            "nope",
            "10.0.0.2-10.0.0.1",
            "10.0.0.1-fd00::1",
        ] {
            assert!(Pool::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
        // Host bits in a CIDR are ignored, as Go's ParseCIDR does.
        assert!(pool(&["192.168.1.5/24"]).contains(ip("192.168.1.0")));
    }

    #[test]
    fn requested_addresses() {
        let mut p = pool(&["10.0.0.0/30"]);
        assert_eq!(p.assign("a", ip("10.0.0.2")), Ok(()));
        assert_eq!(
            p.assign("b", ip("10.0.0.2")),
            Err(AllocationError::InUse {
                ip: ip("10.0.0.2"),
                owner: "a".into()
            })
        );
        assert_eq!(
            p.assign("b", ip("10.9.0.2")),
            Err(AllocationError::NotInPool(ip("10.9.0.2")))
        );
        // The lowest free address skips the requested one.
        assert_eq!(p.allocate("b", Family::V4).unwrap(), ip("10.0.0.0"));
        assert_eq!(p.allocate("c", Family::V4).unwrap(), ip("10.0.0.1"));
        assert_eq!(p.allocate("d", Family::V4).unwrap(), ip("10.0.0.3"));
        // Moving "a" frees its old address.
        p.release("b");
        assert_eq!(p.assign("a", ip("10.0.0.0")), Ok(()));
        assert_eq!(p.allocate("e", Family::V4).unwrap(), ip("10.0.0.2"));
    }
}
