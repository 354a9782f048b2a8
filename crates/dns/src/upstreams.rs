//! Where forwarded queries go: `--upstream` values and resolv.conf.

use std::net::{IpAddr, SocketAddr};

/// `ip`, `ip:port` or `[v6]:port`; port 53 when not given.
pub fn parse_upstream(s: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| anyhow::anyhow!("upstream {s:?}: expected ip or ip:port"))
}

/// The `nameserver` lines of a resolv.conf, port 53 (the glibc resolver
/// reads at most three; so does this).
pub fn nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        // A zone index (fe80::1%eth0) cannot be expressed in SocketAddr.
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .take(3)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_forms() {
        assert_eq!(
            parse_upstream("10.0.0.2").ok(),
            Some("10.0.0.2:53".parse().expect("addr"))
        );
        assert_eq!(
            parse_upstream("127.0.0.1:5399").ok(),
            Some("127.0.0.1:5399".parse().expect("addr"))
        );
        assert_eq!(
            parse_upstream("[::1]:5300").ok(),
            Some("[::1]:5300".parse().expect("addr"))
        );
        assert!(parse_upstream("dns.example").is_err());
    }

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# comment\nsearch corp.example\nnameserver 192.0.2.53\nnameserver ::1\noptions ndots:1\nnameserver bogus\n";
        assert_eq!(
            nameservers(text),
            vec![
                "192.0.2.53:53".parse::<SocketAddr>().expect("addr"),
                "[::1]:53".parse().expect("addr")
            ]
        );
    }
}
