//! Bitmap allocators for Service ClusterIPs and NodePorts, with the static
//! and dynamic bands of KEP-3070 (ClusterIPs) and KEP-3668 (NodePorts):
//! automatic allocation prefers the upper (dynamic) band, so users who pick
//! a value by hand from the lower (static) band rarely collide with one.

use std::net::Ipv4Addr;

/// Why an allocation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocationError {
    /// The value is taken.
    Allocated,
    /// The value lies outside the range.
    OutOfRange,
    /// No free value left.
    Full,
}

/// A fixed-size set of offsets with band-aware random allocation.
#[derive(Debug, Clone)]
pub struct Bitmap {
    words: Vec<u64>,
    size: u64,
    /// Offsets below this form the static band.
    static_band: u64,
    used: u64,
    rng: u64,
}

impl Bitmap {
    pub fn new(size: u64, static_band: u64) -> Bitmap {
        Bitmap {
            words: vec![0; size.div_ceil(64) as usize],
            size,
            static_band: static_band.min(size),
            used: 0,
            // Seeded from the OS generator through a v4 UUID.
            rng: (uuid::Uuid::new_v4().as_u128() as u64) | 1,
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn used(&self) -> u64 {
        self.used
    }

    pub fn has(&self, offset: u64) -> bool {
        offset < self.size && self.words[(offset / 64) as usize] & (1 << (offset % 64)) != 0
    }

    pub fn allocate(&mut self, offset: u64) -> Result<(), AllocationError> {
        if offset >= self.size {
            return Err(AllocationError::OutOfRange);
        }
        if self.has(offset) {
            return Err(AllocationError::Allocated);
        }
        self.words[(offset / 64) as usize] |= 1 << (offset % 64);
        self.used += 1;
        Ok(())
    }

    pub fn release(&mut self, offset: u64) {
        if self.has(offset) {
            self.words[(offset / 64) as usize] &= !(1 << (offset % 64));
            self.used -= 1;
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64: uniform enough to spread allocations.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// A free offset in `[start, end)`: a random start, then a scan.
    fn free_in(&mut self, start: u64, end: u64) -> Option<u64> {
        if start >= end {
            return None;
        }
        let len = end - start;
        let first = start + self.next_random() % len;
        (0..len)
            .map(|i| start + (first - start + i) % len)
            .find(|o| !self.has(*o))
    }

    /// Allocates any free offset, from the dynamic band first.
    pub fn allocate_next(&mut self) -> Result<u64, AllocationError> {
        let offset = self
            .free_in(self.static_band, self.size)
            .or_else(|| self.free_in(0, self.static_band))
            .ok_or(AllocationError::Full)?;
        self.allocate(offset)?;
        Ok(offset)
    }
}

/// The Service ClusterIP range (IPv4).
#[derive(Debug, Clone)]
pub struct ClusterIpRange {
    pub network: Ipv4Addr,
    pub prefix: u8,
    bitmap: Bitmap,
}

impl ClusterIpRange {
    /// Parses a CIDR like `10.96.0.0/12`.
    pub fn parse(cidr: &str) -> Result<ClusterIpRange, String> {
        let (ip, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| format!("service CIDR {cidr:?} is not a CIDR"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("service CIDR {cidr:?}: {ip:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("service CIDR {cidr:?}: the prefix must be between 8 and 30"))?;
        let mask = u32::MAX << (32 - prefix);
        let network = Ipv4Addr::from(u32::from(ip) & mask);
        // The network and broadcast addresses are never handed out.
        let size = (1u64 << (32 - prefix)) - 2;
        let static_band = (size / 16).clamp(16, 256);
        Ok(ClusterIpRange {
            network,
            prefix,
            bitmap: Bitmap::new(size, static_band),
        })
    }

    pub fn cidr(&self) -> String {
        format!("{}/{}", self.network, self.prefix)
    }

    fn offset(&self, ip: Ipv4Addr) -> Option<u64> {
        let n = u32::from(ip).checked_sub(u32::from(self.network))? as u64;
        (n >= 1 && n <= self.bitmap.size()).then(|| n - 1)
    }

    fn address(&self, offset: u64) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1 + offset as u32)
    }

    /// The first usable address, which belongs to the `kubernetes` Service.
    pub fn first(&self) -> Ipv4Addr {
        self.address(0)
    }

    pub fn allocate(&mut self, ip: Ipv4Addr) -> Result<(), AllocationError> {
        let offset = self.offset(ip).ok_or(AllocationError::OutOfRange)?;
        self.bitmap.allocate(offset)
    }

    pub fn allocate_next(&mut self) -> Result<Ipv4Addr, AllocationError> {
        self.bitmap.allocate_next().map(|o| self.address(o))
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        if let Some(o) = self.offset(ip) {
            self.bitmap.release(o);
        }
    }

    #[cfg(test)]
    pub fn has(&self, ip: Ipv4Addr) -> bool {
        self.offset(ip).is_some_and(|o| self.bitmap.has(o))
    }

    pub fn used(&self) -> u64 {
        self.bitmap.used()
    }

    pub fn free(&self) -> u64 {
        self.bitmap.size() - self.bitmap.used()
    }
}

/// The NodePort range, 30000-32767 by default.
#[derive(Debug, Clone)]
pub struct NodePortRange {
    pub base: u16,
    pub last: u16,
    bitmap: Bitmap,
}

impl NodePortRange {
    /// Parses `30000-32767`.
    pub fn parse(range: &str) -> Result<NodePortRange, String> {
        let (a, b) = range
            .split_once('-')
            .ok_or_else(|| format!("node port range {range:?} is not of the form first-last"))?;
        let (base, last): (u16, u16) = match (a.trim().parse(), b.trim().parse()) {
            (Ok(a), Ok(b)) if a >= 1 && a <= b => (a, b),
            _ => return Err(format!("node port range {range:?} is not valid")),
        };
        let size = u64::from(last - base) + 1;
        let static_band = (size / 32).clamp(16, 128);
        Ok(NodePortRange {
            base,
            last,
            bitmap: Bitmap::new(size, static_band),
        })
    }

    pub fn describe(&self) -> String {
        format!("{}-{}", self.base, self.last)
    }

    fn offset(&self, port: i64) -> Option<u64> {
        (port >= i64::from(self.base) && port <= i64::from(self.last))
            .then(|| (port - i64::from(self.base)) as u64)
    }

    pub fn allocate(&mut self, port: i64) -> Result<(), AllocationError> {
        let offset = self.offset(port).ok_or(AllocationError::OutOfRange)?;
        self.bitmap.allocate(offset)
    }

    pub fn allocate_next(&mut self) -> Result<i64, AllocationError> {
        self.bitmap
            .allocate_next()
            .map(|o| i64::from(self.base) + o as i64)
    }

    pub fn release(&mut self, port: i64) {
        if let Some(o) = self.offset(port) {
            self.bitmap.release(o);
        }
    }

    #[cfg(test)]
    pub fn has(&self, port: i64) -> bool {
        self.offset(port).is_some_and(|o| self.bitmap.has(o))
    }

    pub fn free(&self) -> u64 {
        self.bitmap.size() - self.bitmap.used()
    }

    pub fn used(&self) -> u64 {
        self.bitmap.used()
    }

    /// Ports of the static band, which automatic allocation uses last.
    #[cfg(test)]
    pub fn static_band_last(&self) -> i64 {
        i64::from(self.base) + self.bitmap.static_band as i64 - 1
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cluster_ip_range() {
        let mut r = ClusterIpRange::parse("10.96.0.0/12").unwrap();
        assert_eq!(r.first(), Ipv4Addr::new(10, 96, 0, 1));
        r.allocate(r.first()).unwrap();
        assert_eq!(r.allocate(r.first()), Err(AllocationError::Allocated));
        assert_eq!(
            r.allocate(Ipv4Addr::new(10, 0, 0, 1)),
            Err(AllocationError::OutOfRange)
        );
        // Network and broadcast addresses are out of range.
        assert_eq!(
            r.allocate(Ipv4Addr::new(10, 96, 0, 0)),
            Err(AllocationError::OutOfRange)
        );
        assert_eq!(
            r.allocate(Ipv4Addr::new(10, 111, 255, 255)),
            Err(AllocationError::OutOfRange)
        );
        r.allocate(Ipv4Addr::new(10, 111, 255, 254)).unwrap();
        // Automatic allocations come from the dynamic band (above the
        // first 256 addresses of a /12).
        for _ in 0..100 {
            let ip = r.allocate_next().unwrap();
            assert!(u32::from(ip) > u32::from(Ipv4Addr::new(10, 96, 1, 0)));
        }
        assert_eq!(r.used(), 102);
        r.release(r.first());
        assert!(!r.has(r.first()));
    }

    #[test]
    fn small_range_fills_both_bands_then_reports_full() {
        let mut r = ClusterIpRange::parse("10.0.0.0/28").unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..14 {
            assert!(seen.insert(r.allocate_next().unwrap()));
        }
        assert_eq!(r.allocate_next(), Err(AllocationError::Full));
    }

    #[test]
    fn node_ports_prefer_the_dynamic_band() {
        let mut r = NodePortRange::parse("30000-32767").unwrap();
        assert_eq!(r.static_band_last(), 30085);
        for _ in 0..500 {
            assert!(r.allocate_next().unwrap() > 30085);
        }
        // A chosen port in the static band is free: nothing random went there.
        r.allocate(30042).unwrap();
        assert_eq!(r.allocate(30042), Err(AllocationError::Allocated));
        assert_eq!(r.allocate(80), Err(AllocationError::OutOfRange));
        assert!(NodePortRange::parse("5-1").is_err());
        let mut tiny = NodePortRange::parse("30000-30001").unwrap();
        tiny.allocate_next().unwrap();
        tiny.allocate_next().unwrap();
        assert_eq!(tiny.allocate_next(), Err(AllocationError::Full));
    }
}
