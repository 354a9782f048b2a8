//! host-local style address management: which address an attachment gets
//! (round robin over the configured ranges, never the gateway), and the
//! crash-safe, multi-process store that remembers it ([`store`]).

pub mod store;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::Duration;

pub use store::{LockedStore, Reservation, Store, StoreError};

use crate::config::IpRange;
use crate::fault;
use crate::spec::{Attachment, CniError, ErrorCode};

/// How long an operation waits for another plugin process to release the
/// store before giving up with "try again later".
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(20);

/// The address an attachment holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The address.
    pub ip: Ipv4Addr,
    /// The range it came from (its subnet and gateway apply).
    pub range: IpRange,
    /// The attachment already held it (an ADD repeated after a crash).
    pub reused: bool,
}

impl From<StoreError> for CniError {
    fn from(error: StoreError) -> CniError {
        let code = match error {
            StoreError::LockTimeout { .. } => ErrorCode::TryAgainLater,
            StoreError::Io { .. } => ErrorCode::Io,
        };
        CniError::new(code, format!("IPAM store: {error}"))
    }
}

/// The range `ip` may be allocated from, if any.
pub fn range_of(ranges: &[IpRange], ip: Ipv4Addr) -> Option<&IpRange> {
    ranges.iter().find(|range| range.allocatable(ip))
}

/// The first free address after `last` (or from the start), going round
/// the ranges in order, skipping gateways and `taken` addresses.
pub fn next_free(
    ranges: &[IpRange],
    taken: &HashSet<Ipv4Addr>,
    last: Option<Ipv4Addr>,
) -> Option<(Ipv4Addr, usize)> {
    let all = || {
        ranges.iter().enumerate().flat_map(|(index, range)| {
            (u32::from(range.start)..=u32::from(range.end)).map(move |n| (Ipv4Addr::from(n), index))
        })
    };
    let after_last = last
        .and_then(|last| all().position(|(ip, _)| ip == last))
        .map_or(0, |position| position + 1);
    all()
        .skip(after_last)
        .chain(all().take(after_last))
        .find(|(ip, index)| ranges[*index].allocatable(*ip) && !taken.contains(ip))
}

/// Reserves an address for `attachment`, or returns the one it already
/// holds in these ranges.
pub fn allocate(
    store: &Store,
    ranges: &[IpRange],
    attachment: &Attachment,
) -> Result<Lease, CniError> {
    let locked = store.lock(LOCK_TIMEOUT)?;
    let reservations = locked.reservations()?;
    for held in reservations.iter().filter(|r| r.belongs_to(attachment)) {
        match range_of(ranges, held.ip) {
            Some(range) => {
                return Ok(Lease {
                    ip: held.ip,
                    range: *range,
                    reused: true,
                });
            }
            // The ranges changed since: this one cannot be used any more.
            None => {
                locked.release(held.ip)?;
            }
        }
    }
    let mut taken: HashSet<Ipv4Addr> = reservations.iter().map(|r| r.ip).collect();
    let last = locked.last_reserved_ip();
    let (ip, index) = loop {
        let Some((ip, index)) = next_free(ranges, &taken, last) else {
            let ranges: Vec<String> = ranges.iter().map(ToString::to_string).collect();
            return Err(CniError::new(
                ErrorCode::NoFreeAddress,
                format!("no free IP address in {}", ranges.join(", ")),
            ));
        };
        if locked.reserve(ip, attachment)? {
            break (ip, index);
        }
        taken.insert(ip);
    };
    if let Err(error) = locked.set_last_reserved_ip(ip) {
        tracing::warn!(%error, "could not record the last reserved IP");
    }
    fault::pause_point(fault::Stage::IpamLocked);
    Ok(Lease {
        ip,
        range: ranges[index],
        reused: false,
    })
}

/// Frees every address `attachment` holds; returns them.
pub fn release(store: &Store, attachment: &Attachment) -> Result<Vec<Ipv4Addr>, CniError> {
    if !store.dir().exists() {
        return Ok(Vec::new());
    }
    let locked = store.lock(LOCK_TIMEOUT)?;
    let mut released = Vec::new();
    for reservation in locked.reservations()? {
        if reservation.belongs_to(attachment) && locked.release(reservation.ip)? {
            released.push(reservation.ip);
        }
    }
    if !released.is_empty() {
        locked.sync_dir()?;
    }
    Ok(released)
}

/// The reservations `attachment` holds.
pub fn leases_of(store: &Store, attachment: &Attachment) -> Result<Vec<Reservation>, CniError> {
    if !store.dir().exists() {
        return Ok(Vec::new());
    }
    let locked = store.lock(LOCK_TIMEOUT)?;
    Ok(locked
        .reservations()?
        .into_iter()
        .filter(|r| r.belongs_to(attachment))
        .collect())
}

/// Frees every reservation not held by one of `valid`; returns them.
pub fn collect_garbage(
    store: &Store,
    valid: &HashSet<Attachment>,
) -> Result<Vec<Reservation>, CniError> {
    if !store.dir().exists() {
        return Ok(Vec::new());
    }
    let locked = store.lock(LOCK_TIMEOUT)?;
    let mut released = Vec::new();
    for reservation in locked.reservations()? {
        let in_use = valid
            .iter()
            .any(|attachment| reservation.belongs_to(attachment));
        if !in_use && locked.release(reservation.ip)? {
            released.push(reservation);
        }
    }
    if !released.is_empty() {
        locked.sync_dir()?;
    }
    Ok(released)
}

/// STATUS: the store must be writable and have a free address.
pub fn check_available(store: &Store, ranges: &[IpRange]) -> Result<(), CniError> {
    let unavailable = |msg: String| CniError::new(ErrorCode::NotAvailable, msg);
    let locked = store
        .lock(LOCK_TIMEOUT)
        .map_err(|error| unavailable(format!("IPAM store is not usable: {error}")))?;
    locked
        .probe_writable()
        .map_err(|error| unavailable(format!("IPAM store is not writable: {error}")))?;
    let taken: HashSet<Ipv4Addr> = locked
        .reservations()
        .map_err(|error| unavailable(format!("IPAM store is not readable: {error}")))?
        .into_iter()
        .map(|r| r.ip)
        .filter(|ip| range_of(ranges, *ip).is_some())
        .collect();
    let capacity: u64 = ranges.iter().map(IpRange::capacity).sum();
    if taken.len() as u64 >= capacity {
        let ranges: Vec<String> = ranges.iter().map(ToString::to_string).collect();
        return Err(unavailable(format!(
            "no free IP address in {} ({} of {} in use)",
            ranges.join(", "),
            taken.len(),
            capacity
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Ipv4Cidr;

    fn range(subnet: &str) -> IpRange {
        IpRange::whole(subnet.parse::<Ipv4Cidr>().expect("cidr")).expect("range")
    }

    fn attachment(id: &str) -> Attachment {
        Attachment {
            container_id: id.into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn next_free_skips_gateway_and_taken_and_goes_round() {
        let ranges = [range("10.0.0.0/29")]; // hosts .1-.6, gateway .1
        let mut taken = HashSet::new();
        assert_eq!(
            next_free(&ranges, &taken, None),
            Some(("10.0.0.2".parse().expect("ip"), 0))
        );
        taken.insert("10.0.0.2".parse().expect("ip"));
        let last = Some("10.0.0.5".parse().expect("ip"));
        assert_eq!(
            next_free(&ranges, &taken, last).map(|(ip, _)| ip.to_string()),
            Some("10.0.0.6".into())
        );
        let last = Some("10.0.0.6".parse().expect("ip"));
        assert_eq!(
            next_free(&ranges, &taken, last).map(|(ip, _)| ip.to_string()),
            Some("10.0.0.3".into())
        );
        for n in 2..=6 {
            taken.insert(format!("10.0.0.{n}").parse().expect("ip"));
        }
        assert_eq!(next_free(&ranges, &taken, last), None);
    }

    #[test]
    fn next_free_crosses_ranges() {
        let ranges = [range("10.0.0.0/30"), range("10.0.1.0/30")];
        let taken: HashSet<Ipv4Addr> = ["10.0.0.2".parse().expect("ip")].into();
        assert_eq!(
            next_free(&ranges, &taken, None),
            Some(("10.0.1.2".parse().expect("ip"), 1))
        );
    }

    #[test]
    fn allocate_reuses_releases_and_exhausts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path().join("net"));
        let ranges = [range("10.0.0.0/29")];
        let a = allocate(&store, &ranges, &attachment("a")).expect("a");
        assert_eq!(a.ip.to_string(), "10.0.0.2");
        assert!(!a.reused);
        let again = allocate(&store, &ranges, &attachment("a")).expect("a again");
        assert_eq!(again.ip, a.ip);
        assert!(again.reused);
        let mut ips = HashSet::from([a.ip]);
        for id in ["b", "c", "d", "e"] {
            assert!(ips.insert(allocate(&store, &ranges, &attachment(id)).expect(id).ip));
        }
        let error = allocate(&store, &ranges, &attachment("f")).expect_err("full");
        assert_eq!(error.code, ErrorCode::NoFreeAddress);
        assert_eq!(
            check_available(&store, &ranges).expect_err("full").code,
            ErrorCode::NotAvailable
        );
        assert_eq!(release(&store, &attachment("c")).expect("release").len(), 1);
        assert!(release(&store, &attachment("c")).expect("again").is_empty());
        check_available(&store, &ranges).expect("one free");
        // Round robin: the freed address comes back only after the rest.
        assert_eq!(
            allocate(&store, &ranges, &attachment("f"))
                .expect("f")
                .ip
                .to_string(),
            "10.0.0.4"
        );
    }

    #[test]
    fn garbage_collection_keeps_valid_attachments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        let ranges = [range("10.0.0.0/24")];
        for id in ["a", "b", "c"] {
            allocate(&store, &ranges, &attachment(id)).expect(id);
        }
        let valid: HashSet<Attachment> = [attachment("b")].into();
        let released = collect_garbage(&store, &valid).expect("gc");
        let mut ids: Vec<&str> = released.iter().map(|r| r.container_id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(leases_of(&store, &attachment("b")).expect("b").len(), 1);
        assert!(leases_of(&store, &attachment("a")).expect("a").is_empty());
    }

    #[test]
    fn a_missing_store_has_nothing_to_release() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path().join("never-created"));
        assert!(
            release(&store, &attachment("a"))
                .expect("release")
                .is_empty()
        );
        assert!(
            collect_garbage(&store, &HashSet::new())
                .expect("gc")
                .is_empty()
        );
        assert!(!store.dir().exists());
    }

    #[test]
    fn a_reservation_outside_the_ranges_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        let old = allocate(&store, &[range("10.0.0.0/24")], &attachment("a")).expect("old");
        let new = allocate(&store, &[range("10.9.0.0/24")], &attachment("a")).expect("new");
        assert_ne!(old.ip, new.ip);
        assert_eq!(leases_of(&store, &attachment("a")).expect("a").len(), 1);
    }
}
