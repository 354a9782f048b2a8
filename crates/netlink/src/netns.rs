//! Network namespaces: create and delete named ones the way `ip netns`
//! does, open any of them by path, and run code inside one.
//!
//! A network namespace belongs to a *thread*, not to a process. Everything
//! here that has to be inside another namespace therefore runs on a helper
//! thread that enters it with `setns(2)`, so the caller's threads (and the
//! tokio workers among them) never move. A netlink socket opened while a
//! thread is inside a namespace stays bound to that namespace after the
//! thread leaves it; [`crate::Netlink::connect_in`] relies on this.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use crate::error::{Error, Result};

/// Where named namespaces live, as with `ip netns`.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// The calling thread's own network namespace.
const THREAD_SELF_NETNS: &str = "/proc/thread-self/ns/net";

/// An open network namespace. The open file keeps the namespace alive even
/// if its bind mount is removed.
#[derive(Debug)]
pub struct NetNs {
    path: PathBuf,
    file: File,
}

impl NetNs {
    /// Opens the namespace at `path` (`/run/netns/<name>`,
    /// `/proc/<pid>/ns/net`, or any bind mount of one).
    pub fn open(path: impl AsRef<Path>) -> Result<NetNs> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|error| Error::Namespace {
            action: "opening",
            path: path.to_owned(),
            error,
        })?;
        Ok(NetNs {
            path: path.to_owned(),
            file,
        })
    }

    /// Opens the namespace called `name` under [`NETNS_RUN_DIR`].
    pub fn open_named(name: &str) -> Result<NetNs> {
        NetNs::open(named_path(name)?)
    }

    /// The namespace the calling thread is in.
    pub fn current() -> Result<NetNs> {
        NetNs::open(THREAD_SELF_NETNS)
    }

    /// The path this namespace was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Another handle to the same namespace.
    pub fn try_clone(&self) -> Result<NetNs> {
        let file = self.file.try_clone().map_err(|error| Error::Namespace {
            action: "duplicating a handle to",
            path: self.path.clone(),
            error,
        })?;
        Ok(NetNs {
            path: self.path.clone(),
            file,
        })
    }

    /// Runs `f` on a helper thread that is inside this namespace and
    /// returns its result. The calling thread never changes namespace, but
    /// it waits for `f`: keep `f` short when calling from async code.
    /// Sockets that `f` opens belong to this namespace for their lifetime.
    pub fn run<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        std::thread::scope(|scope| {
            let helper = std::thread::Builder::new()
                .name("netns".into())
                .spawn_scoped(scope, || {
                    self.enter()?;
                    Ok(f())
                })
                .map_err(|error| Error::Namespace {
                    action: "starting a helper thread for",
                    path: self.path.clone(),
                    error,
                })?;
            match helper.join() {
                Ok(result) => result,
                // The closure panicked: surface it on the caller's thread.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Moves the calling thread into this namespace. Only for threads that
    /// are dedicated to the namespace (see [`NetNs::run`]).
    pub(crate) fn enter(&self) -> Result<()> {
        nix::sched::setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|errno| {
            Error::Namespace {
                action: "entering",
                path: self.path.clone(),
                error: errno.into(),
            }
        })
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// `/run/netns/<name>`, after checking that `name` is a plain file name.
pub fn named_path(name: &str) -> Result<PathBuf> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Error::Invalid {
            what: format!("netns name {name:?}"),
            reason: "must be a non-empty file name without '/'",
        });
    }
    Ok(Path::new(NETNS_RUN_DIR).join(name))
}

/// Whether a named namespace exists (its mount point file is present).
pub fn exists(name: &str) -> bool {
    named_path(name).map(|path| path.exists()).unwrap_or(false)
}

/// Creates a new, empty network namespace called `name`, bind-mounted at
/// `/run/netns/<name>` like `ip netns add`. Fails with `EEXIST` if the name
/// is taken. The new namespace is created on a helper thread; the caller
/// stays where it is.
pub fn create(name: &str) -> Result<NetNs> {
    let path = named_path(name)?;
    let ns_error = |action, error| Error::Namespace {
        action,
        path: path.clone(),
        error,
    };
    fs::create_dir_all(NETNS_RUN_DIR).map_err(|e| ns_error("creating the directory for", e))?;
    make_run_dir_shared().map_err(|e| ns_error("making /run/netns a shared mount for", e))?;

    // The mount point: created exclusively so two creators cannot share it.
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(&path)
        .map_err(|e| ns_error("creating", e))?;

    let mounted = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("netns-create".into())
            .spawn_scoped(scope, || -> io::Result<()> {
                nix::sched::unshare(CloneFlags::CLONE_NEWNET)?;
                nix::mount::mount(
                    Some(THREAD_SELF_NETNS),
                    &path,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )?;
                Ok(())
            })
            .map_err(|e| ns_error("starting a helper thread to create", e))?
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("helper thread panicked")))
            .map_err(|e| ns_error("creating", e))
    });
    if let Err(error) = mounted {
        let _ = fs::remove_file(&path);
        return Err(error);
    }
    tracing::debug!(netns = %path.display(), "created network namespace");
    NetNs::open(&path)
}

/// Deletes the named namespace like `ip netns delete`: unmounts and removes
/// `/run/netns/<name>`. The kernel frees the namespace (and the interfaces
/// in it) once no process and no open handle refers to it any more.
/// Deleting a namespace that does not exist succeeds.
pub fn delete(name: &str) -> Result<()> {
    let path = named_path(name)?;
    match nix::mount::umount2(&path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (half-created); ENOENT: already gone.
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(errno) => {
            return Err(Error::Namespace {
                action: "unmounting",
                path,
                error: errno.into(),
            });
        }
    }
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(Error::Namespace {
                action: "removing",
                path,
                error,
            });
        }
    }
    tracing::debug!(netns = %path.display(), "deleted network namespace");
    Ok(())
}

/// Names of the namespaces under [`NETNS_RUN_DIR`], like `ip netns list`.
pub fn list() -> Result<Vec<String>> {
    let entries = match fs::read_dir(NETNS_RUN_DIR) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(Error::Namespace {
                action: "listing",
                path: NETNS_RUN_DIR.into(),
                error,
            });
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// Bind mounts under /run/netns must propagate to other mount namespaces
/// (for example those `ip netns exec` creates), so the directory is made a
/// shared mount point, bind-mounting it onto itself first if it is not a
/// mount point yet. This is what iproute2 does.
fn make_run_dir_shared() -> io::Result<()> {
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    match nix::mount::mount(
        None::<&str>,
        NETNS_RUN_DIR,
        None::<&str>,
        shared,
        None::<&str>,
    ) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) => {
            nix::mount::mount(
                Some(NETNS_RUN_DIR),
                NETNS_RUN_DIR,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )?;
            nix::mount::mount(
                None::<&str>,
                NETNS_RUN_DIR,
                None::<&str>,
                shared,
                None::<&str>,
            )?;
            Ok(())
        }
        Err(errno) => Err(errno.into()),
    }
}

/// Processes whose network namespace is one of `namespaces` (paths of
/// namespace files such as `/run/netns/<name>`), found by comparing
/// `/proc/<pid>/ns/net` with each file's device and inode. The calling
/// process is never listed.
pub fn processes_in(namespaces: &[PathBuf]) -> Vec<i32> {
    use std::collections::HashSet;
    use std::os::unix::fs::MetadataExt;
    let id = |p: &Path| fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let ids: HashSet<(u64, u64)> = namespaces.iter().filter_map(|p| id(p)).collect();
    let me = std::process::id();
    let mut pids = Vec::new();
    if ids.is_empty() {
        return pids;
    }
    let Ok(entries) = fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        if id(&entry.path().join("ns/net")).is_some_and(|i| ids.contains(&i))
            && let Ok(pid) = i32::try_from(pid)
        {
            pids.push(pid);
        }
    }
    pids
}

/// For test suites: whether this process may create network namespaces
/// (root). Without it a test prints why and skips, except under `CI=true`,
/// where skipping would hide a broken setup, so it panics.
pub fn usable_by_test(test: &str) -> bool {
    let probe = format!("ftest-{}-{}", std::process::id(), test.len());
    let reason = match create(&probe) {
        Ok(_) => {
            let _ = delete(&probe);
            return true;
        }
        Err(error) => format!("cannot create network namespaces (needs root): {error}"),
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} needs root and network namespaces under CI=true: {reason}"
    );
    eprintln!("skipping {test}: {reason}");
    false
}
