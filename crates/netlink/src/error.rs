//! One error type for every kernel operation in this crate.
//!
//! Each variant says what was being done and to which object, and in which
//! network namespace when it was not the caller's own, so a message such as
//! `creating veth veth0a1b2c3d4e5 in netns /run/netns/pod-1: File exists
//! (os error 17)` is enough to act on without a debugger.

use std::io;
use std::path::{Path, PathBuf};

/// Result of a kernel operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failed kernel operation, naming the operation and its object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel refused a netlink request, or the socket failed.
    #[error("{action} {object}{}: {error}", in_netns(.netns.as_deref()))]
    Netlink {
        /// What was being done, e.g. `creating veth`.
        action: &'static str,
        /// The object it was done to, e.g. `veth0a1b2c3d4e5`.
        object: String,
        /// The namespace the request went to (`None`: the caller's own).
        netns: Option<PathBuf>,
        /// The kernel's answer.
        error: io::Error,
    },
    /// A lookup found nothing where something was required.
    #[error("{kind} {name} not found{}", in_netns(.netns.as_deref()))]
    NotFound {
        /// `link`, `address`, ...
        kind: &'static str,
        /// The name or value that was looked up.
        name: String,
        /// The namespace that was searched.
        netns: Option<PathBuf>,
    },
    /// Creating, entering, opening or removing a network namespace failed.
    #[error("{action} netns {}: {error}", .path.display())]
    Namespace {
        /// What was being done, e.g. `entering`.
        action: &'static str,
        /// The namespace's path (`/run/netns/<name>` or `/proc/<pid>/ns/net`).
        path: PathBuf,
        /// The system call's error.
        error: io::Error,
    },
    /// Reading or writing a sysctl under /proc/sys failed.
    #[error("{action} sysctl {key}{}: {error}", in_netns(.netns.as_deref()))]
    Sysctl {
        /// `reading` or `writing`.
        action: &'static str,
        /// The key as given, e.g. `net.ipv4.ip_forward`.
        key: String,
        /// The namespace the sysctl belongs to.
        netns: Option<PathBuf>,
        /// The file system error.
        error: io::Error,
    },
    /// The caller asked for something the kernel cannot express.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// The offending argument, e.g. `interface name "a/b"`.
        what: String,
        /// Why it is refused.
        reason: &'static str,
    },
}

fn in_netns(netns: Option<&Path>) -> String {
    match netns {
        Some(path) => format!(" in netns {}", path.display()),
        None => String::new(),
    }
}

impl Error {
    /// The errno behind this error, when there is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Netlink { error, .. }
            | Error::Namespace { error, .. }
            | Error::Sysctl { error, .. } => error.raw_os_error(),
            Error::NotFound { .. } | Error::Invalid { .. } => None,
        }
    }

    /// The object already exists (`EEXIST`).
    pub fn is_exists(&self) -> bool {
        self.raw_os_error() == Some(libc::EEXIST)
    }

    /// The object (link, address, route, neighbour, namespace) is not there.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
            || matches!(
                self.raw_os_error(),
                Some(libc::ENODEV | libc::ENOENT | libc::ESRCH | libc::EADDRNOTAVAIL)
            )
    }
}

/// Turns an rtnetlink error into the kernel's errno where there is one.
pub(crate) fn netlink_io_error(error: rtnetlink::Error) -> io::Error {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.to_io(),
        other => io::Error::other(other.to_string()),
    }
}
