//! Names derived from addresses: reverse-lookup names (`in-addr.arpa`,
//! nibble-form `ip6.arpa`), the dashed form of an IP that stands for an
//! endpoint without a hostname (`10-244-1-5`), and back from a pod label.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `5.1.244.10.in-addr.arpa`, or the 32 nibbles of `ip6.arpa`.
pub fn reverse_name(ip: IpAddr) -> String {
    let mut out = String::with_capacity(72);
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            let _ = write!(out, "{d}.{c}.{b}.{a}.in-addr.arpa");
        }
        IpAddr::V6(v6) => {
            for byte in v6.octets().iter().rev() {
                let _ = write!(out, "{:x}.{:x}.", byte & 0x0F, byte >> 4);
            }
            out.push_str("ip6.arpa");
        }
    }
    out
}

/// The system-assigned name of an endpoint without `hostname`: its IP
/// with dashes, as CoreDNS writes it (`10-244-1-5`, `fd00--5`).
pub fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// The IP a pod label stands for (`10-244-1-5` → 10.244.1.5): three dashes
/// and no empty part is IPv4, anything else is tried as IPv6 with dashes
/// for colons.
pub fn pod_label_ip(label: &str) -> Option<IpAddr> {
    let parts = label.split('-').count();
    if parts == 4 && !label.contains("--") {
        let mut octets = [0u8; 4];
        for (o, p) in octets.iter_mut().zip(label.split('-')) {
            if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            *o = p.parse().ok()?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    if label.len() > 39 || !label.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return None;
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn reverse_names_as_the_spec_writes_them() {
        // Spec 2.3.3: 10.3.0.100 → 100.0.3.10.in-addr.arpa.
        assert_eq!(reverse_name(ip("10.3.0.100")), "100.0.3.10.in-addr.arpa");
        assert_eq!(
            reverse_name(ip("2001:db8::567:89ab")),
            "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
    }

    #[test]
    fn dashed_names_round_trip_through_pod_labels() {
        for s in ["10.244.1.5", "fd00::5", "2001:db8::567:89ab"] {
            assert_eq!(pod_label_ip(&dashed(ip(s))), Some(ip(s)), "{s}");
        }
        assert_eq!(dashed(ip("10.244.1.5")), "10-244-1-5");
        for bad in [
            "10-244-1",
            "1-2-3-4-5x",
            "300-1-1-1",
            "a-b-c-d",
            "nginx",
            "",
        ] {
            assert_eq!(pod_label_ip(bad), None, "{bad}");
        }
    }
}
