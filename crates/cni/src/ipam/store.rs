//! The on-disk reservation store, laid out like host-local's so existing
//! tooling can read it:
//!
//! ```text
//! <dataDir>/<network>/lock                 flock(2) target
//! <dataDir>/<network>/10.244.1.5           "<containerID>\r\n<ifname>"
//! <dataDir>/<network>/last_reserved_ip.0   where the next search starts
//! ```
//!
//! Every change happens under an exclusive `flock` on `lock`, so concurrent
//! plugin processes serialise; the kernel drops the lock when a holder dies,
//! even by SIGKILL. A reservation file is written to a temporary name
//! (created with `O_EXCL`), synced, then hard-linked to its final name, which
//! fails rather than overwrites if the name exists, and the directory is
//! synced: after a crash a reservation is either complete or absent, never
//! empty. Temporary files found while holding the lock belong to a dead
//! writer and are removed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::spec::Attachment;

const LOCK_FILE: &str = "lock";
/// host-local suffixes the range set index; there is only set 0 here.
const LAST_RESERVED_FILE: &str = "last_reserved_ip.0";
const TEMP_PREFIX: &str = ".tmp-";

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation failed.
    #[error("{action} {}: {error}", .path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which file.
        path: PathBuf,
        /// The error.
        error: io::Error,
    },
    /// Another process held the lock for too long.
    #[error("timed out after {waited:?} waiting for the IPAM lock {}", .path.display())]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
}

/// One reserved address and who holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// The address.
    pub ip: Ipv4Addr,
    /// The holder's container ID.
    pub container_id: String,
    /// The holder's interface name (absent in files from old host-local).
    pub ifname: Option<String>,
}

impl Reservation {
    /// Whether this reservation belongs to `attachment`.
    pub fn belongs_to(&self, attachment: &Attachment) -> bool {
        self.container_id == attachment.container_id
            && self
                .ifname
                .as_deref()
                .is_none_or(|ifname| ifname == attachment.ifname)
    }
}

/// The store of one network.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in `dir` (`<dataDir>/<network name>`), not yet touched.
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the directory if needed and takes the exclusive lock,
    /// polling up to `timeout`.
    pub fn lock(&self, timeout: Duration) -> Result<LockedStore<'_>, StoreError> {
        let io_error = |action, path: &Path| {
            let path = path.to_owned();
            move |error| StoreError::Io {
                action,
                path,
                error,
            }
        };
        fs::create_dir_all(&self.dir).map_err(io_error("creating", &self.dir))?;
        let lock_path = self.dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_error("opening", &lock_path))?;
        let started = Instant::now();
        let mut pause = Duration::from_micros(500);
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) => {
                    if started.elapsed() >= timeout {
                        return Err(StoreError::LockTimeout {
                            path: lock_path,
                            waited: started.elapsed(),
                        });
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
                Err(fs::TryLockError::Error(error)) => {
                    return Err(StoreError::Io {
                        action: "locking",
                        path: lock_path,
                        error,
                    });
                }
            }
        }
        let locked = LockedStore { store: self, lock };
        locked.remove_partial_files()?;
        Ok(locked)
    }
}

/// The store while this process holds its lock. Dropping it unlocks.
#[derive(Debug)]
pub struct LockedStore<'a> {
    store: &'a Store,
    // Held for the flock; closing the file releases it.
    #[allow(dead_code)]
    lock: File,
}

impl LockedStore<'_> {
    fn path(&self, name: &str) -> PathBuf {
        self.store.dir.join(name)
    }

    fn io_error(&self, action: &'static str, path: &Path, error: io::Error) -> StoreError {
        StoreError::Io {
            action,
            path: path.to_owned(),
            error,
        }
    }

    /// Every reservation in the store.
    pub fn reservations(&self) -> Result<Vec<Reservation>, StoreError> {
        let entries = fs::read_dir(&self.store.dir)
            .map_err(|error| self.io_error("listing", &self.store.dir, error))?;
        let mut reservations = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|error| self.io_error("listing", &self.store.dir, error))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let path = entry.path();
            let content = match fs::read(&path) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                // Released between listing and reading.
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Err(self.io_error("reading", &path, error)),
            };
            let mut lines = content.lines().map(str::trim);
            let container_id = lines.next().unwrap_or_default().to_string();
            let ifname = lines.next().filter(|s| !s.is_empty()).map(str::to_string);
            reservations.push(Reservation {
                ip,
                container_id,
                ifname,
            });
        }
        reservations.sort_by_key(|r| r.ip);
        Ok(reservations)
    }

    /// Reserves `ip` for `attachment`. Returns `false` if it was taken.
    pub fn reserve(&self, ip: Ipv4Addr, attachment: &Attachment) -> Result<bool, StoreError> {
        let target = self.path(&ip.to_string());
        let temp = self.path(&format!("{TEMP_PREFIX}{}-{ip}", std::process::id()));
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&temp)
            .and_then(|mut file| {
                write!(file, "{}\r\n{}", attachment.container_id, attachment.ifname)?;
                file.sync_all()
            });
        if let Err(error) = written {
            let _ = fs::remove_file(&temp);
            return Err(self.io_error("writing", &temp, error));
        }
        // link(2) refuses to replace an existing name, so a reservation is
        // never overwritten, and the final name appears fully written.
        let linked = fs::hard_link(&temp, &target);
        let _ = fs::remove_file(&temp);
        match linked {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(error) => return Err(self.io_error("creating", &target, error)),
        }
        self.sync_dir()?;
        Ok(true)
    }

    /// Frees `ip`. Returns `false` if it was not reserved.
    pub fn release(&self, ip: Ipv4Addr) -> Result<bool, StoreError> {
        let path = self.path(&ip.to_string());
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(self.io_error("removing", &path, error)),
        }
    }

    /// Makes releases durable.
    pub fn sync_dir(&self) -> Result<(), StoreError> {
        File::open(&self.store.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|error| self.io_error("syncing", &self.store.dir, error))
    }

    /// Where the last search ended, if recorded.
    pub fn last_reserved_ip(&self) -> Option<Ipv4Addr> {
        fs::read_to_string(self.path(LAST_RESERVED_FILE))
            .ok()
            .and_then(|text| text.trim().parse().ok())
    }

    /// Records where the search ended. Only a hint for round-robin
    /// allocation, so it is replaced atomically but not synced.
    pub fn set_last_reserved_ip(&self, ip: Ipv4Addr) -> Result<(), StoreError> {
        let target = self.path(LAST_RESERVED_FILE);
        let temp = self.path(&format!("{TEMP_PREFIX}{}-last", std::process::id()));
        fs::write(&temp, ip.to_string())
            .and_then(|()| fs::rename(&temp, &target))
            .map_err(|error| {
                let _ = fs::remove_file(&temp);
                self.io_error("writing", &target, error)
            })
    }

    /// Checks that files can be created here (for STATUS).
    pub fn probe_writable(&self) -> Result<(), StoreError> {
        let probe = self.path(&format!("{TEMP_PREFIX}{}-probe", std::process::id()));
        let result = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .and_then(|mut file| file.write_all(b"probe"));
        let _ = fs::remove_file(&probe);
        result.map_err(|error| self.io_error("creating", &probe, error))
    }

    /// Removes temporary files left by writers that died; anyone writing
    /// one holds the lock, which we now hold.
    fn remove_partial_files(&self) -> Result<(), StoreError> {
        let entries = fs::read_dir(&self.store.dir)
            .map_err(|error| self.io_error("listing", &self.store.dir, error))?;
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.starts_with(TEMP_PREFIX))
            {
                let path = entry.path();
                tracing::debug!(path = %path.display(), "removing a partial IPAM file");
                let _ = fs::remove_file(path);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachment(id: &str) -> Attachment {
        Attachment {
            container_id: id.into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn reserve_is_exclusive_and_readable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path().join("net"));
        let locked = store.lock(Duration::from_secs(1)).expect("lock");
        let ip = Ipv4Addr::new(10, 0, 0, 5);
        assert!(locked.reserve(ip, &attachment("a")).expect("reserve"));
        assert!(!locked.reserve(ip, &attachment("b")).expect("taken"));
        let content = fs::read_to_string(dir.path().join("net/10.0.0.5")).expect("file");
        assert_eq!(content, "a\r\neth0");
        let reservations = locked.reservations().expect("list");
        assert_eq!(reservations.len(), 1);
        assert!(reservations[0].belongs_to(&attachment("a")));
        assert!(!reservations[0].belongs_to(&attachment("b")));
        assert!(locked.release(ip).expect("release"));
        assert!(!locked.release(ip).expect("release again"));
        assert!(locked.reservations().expect("list").is_empty());
    }

    #[test]
    fn partial_files_are_cleaned_and_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        fs::write(dir.path().join(".tmp-999-10.0.0.9"), "half").expect("partial");
        fs::write(dir.path().join("10.0.0.7"), "old-host-local-id").expect("legacy");
        let locked = store.lock(Duration::from_secs(1)).expect("lock");
        assert!(!dir.path().join(".tmp-999-10.0.0.9").exists());
        let reservations = locked.reservations().expect("list");
        assert_eq!(reservations.len(), 1);
        assert_eq!(reservations[0].ifname, None);
        // A reservation without ifname belongs to every ifname of its ID.
        assert!(reservations[0].belongs_to(&Attachment {
            container_id: "old-host-local-id".into(),
            ifname: "net1".into()
        }));
    }

    #[test]
    fn last_reserved_ip_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        let locked = store.lock(Duration::from_secs(1)).expect("lock");
        assert_eq!(locked.last_reserved_ip(), None);
        locked
            .set_last_reserved_ip(Ipv4Addr::new(10, 0, 0, 3))
            .expect("set");
        assert_eq!(locked.last_reserved_ip(), Some(Ipv4Addr::new(10, 0, 0, 3)));
    }

    #[test]
    fn lock_times_out_while_held() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        let _held = store.lock(Duration::from_secs(1)).expect("lock");
        // flock locks belong to the open file description, so a second
        // open in the same process contends like another process would.
        let error = store
            .lock(Duration::from_millis(20))
            .expect_err("second lock times out");
        assert!(matches!(error, StoreError::LockTimeout { .. }), "{error}");
    }
}
