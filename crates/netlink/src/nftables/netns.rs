//! Running a closure inside another network namespace.
//!
//! A netlink socket stays bound to the namespace it was created in, so the
//! connection is opened on a short-lived thread that has entered the
//! target namespace; the rest of the process never moves.

use std::fs::File;
use std::io;
use std::path::Path;

use nix::sched::{CloneFlags, setns};

use super::error::Error;

/// Runs `f` on a dedicated thread inside the network namespace at `path`
/// (`/run/netns/NAME` or `/proc/PID/ns/net`).
pub(crate) fn run_in<T: Send>(
    path: &Path,
    f: impl FnOnce() -> Result<T, Error> + Send,
) -> Result<T, Error> {
    let netns_error = |source: io::Error| Error::Netns {
        path: path.to_path_buf(),
        source,
    };
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            let target = File::open(path).map_err(netns_error)?;
            let original = File::open("/proc/thread-self/ns/net").map_err(netns_error)?;
            setns(&target, CloneFlags::CLONE_NEWNET).map_err(|e| netns_error(e.into()))?;
            let result = f();
            // Go back even though the thread ends here: nothing else should
            // ever run in a namespace it did not ask for.
            if let Err(errno) = setns(&original, CloneFlags::CLONE_NEWNET) {
                tracing::warn!(%errno, "nf_tables: cannot return to the original network namespace");
            }
            result
        });
        worker.join().unwrap_or_else(|_| {
            Err(netns_error(io::Error::other(
                "the thread opening the socket panicked",
            )))
        })
    })
}
