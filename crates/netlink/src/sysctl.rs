//! Kernel parameters under /proc/sys (`sysctl`), such as
//! `net.ipv4.ip_forward` or per-interface settings.
//!
//! Entries under /proc/sys/net belong to the network namespace of the
//! thread that opens them, so [`read_in`] and [`write_in`] open the file
//! from a thread inside the target namespace.

use std::fs;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::netns::NetNs;

/// The file behind a sysctl key. Keys use `.` as separator
/// (`net.ipv4.ip_forward`) or, when a component itself contains dots (an
/// interface called `eth0.100`), `/` as `sysctl(8)` allows
/// (`net/ipv4/conf/eth0.100/forwarding`).
pub fn path(key: &str) -> Result<PathBuf> {
    let relative = if key.contains('/') {
        key.trim_start_matches('/').to_string()
    } else {
        key.replace('.', "/")
    };
    if relative.is_empty()
        || relative
            .split('/')
            .any(|part| part.is_empty() || part == "..")
    {
        return Err(Error::Invalid {
            what: format!("sysctl key {key:?}"),
            reason: "must be a path below /proc/sys without empty or '..' parts",
        });
    }
    Ok(PathBuf::from("/proc/sys").join(relative))
}

/// Reads a sysctl in the caller's namespace, without the trailing newline.
pub fn read(key: &str) -> Result<String> {
    read_from(key, None)
}

/// Writes a sysctl in the caller's namespace.
pub fn write(key: &str, value: &str) -> Result<()> {
    write_to(key, value, None)
}

/// Reads a sysctl in the namespace `netns`.
pub fn read_in(netns: &NetNs, key: &str) -> Result<String> {
    netns.run(|| read_from(key, Some(netns)))?
}

/// Writes a sysctl in the namespace `netns`.
pub fn write_in(netns: &NetNs, key: &str, value: &str) -> Result<()> {
    netns.run(|| write_to(key, value, Some(netns)))?
}

fn read_from(key: &str, netns: Option<&NetNs>) -> Result<String> {
    let file = path(key)?;
    let text = fs::read_to_string(&file).map_err(|error| Error::Sysctl {
        action: "reading",
        key: key.to_string(),
        netns: netns.map(|ns| ns.path().to_owned()),
        error,
    })?;
    Ok(text.trim_end().to_string())
}

fn write_to(key: &str, value: &str, netns: Option<&NetNs>) -> Result<()> {
    let file = path(key)?;
    fs::write(&file, value).map_err(|error| Error::Sysctl {
        action: "writing",
        key: key.to_string(),
        netns: netns.map(|ns| ns.path().to_owned()),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_proc_sys() {
        assert_eq!(
            path("net.ipv4.ip_forward").expect("valid"),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            path("net/ipv4/conf/eth0.100/forwarding").expect("valid"),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/forwarding")
        );
    }

    #[test]
    fn keys_cannot_escape_proc_sys() {
        for key in ["", "net..ipv4", "net/../../etc/passwd", "net/ipv4/", "."] {
            assert!(path(key).is_err(), "{key:?} accepted");
        }
    }
}
