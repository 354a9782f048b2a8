//! The network configuration a runtime passes on stdin, parsed and
//! validated into [`NetworkConfig`]. Pure: no I/O, never panics on input.
//!
//! ```json
//! {
//!   "cniVersion": "1.1.0", "name": "ferry", "type": "ferry",
//!   "bridge": "cni0", "isGateway": true, "ipMasq": true, "mtu": 1450,
//!   "hairpinMode": true, "podCIDR": "10.244.1.0/24",
//!   "ipam": { "type": "host-local", "subnet": "10.244.1.0/24",
//!             "rangeStart": "10.244.1.10", "rangeEnd": "10.244.1.250",
//!             "gateway": "10.244.1.1", "routes": [{ "dst": "0.0.0.0/0" }],
//!             "dataDir": "/var/lib/cni/networks" }
//! }
//! ```

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;

use crate::spec::{
    Attachment, CniError, Dns, ErrorCode, LATEST_VERSION, SUPPORTED_VERSIONS, Version,
};

/// Where host-local keeps its stores by default; the network name is
/// appended.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// The bridge used when the config names none.
pub const DEFAULT_BRIDGE: &str = "cni0";

/// An IPv4 network in CIDR notation, always held as its network address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Cidr {
    /// The network `address/prefix_len` belongs to (host bits cleared).
    pub fn new(address: Ipv4Addr, prefix_len: u8) -> Option<Ipv4Cidr> {
        (prefix_len <= 32).then(|| Ipv4Cidr {
            network: Ipv4Addr::from(u32::from(address) & mask(prefix_len)),
            prefix_len,
        })
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The broadcast address (the last one of the network).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix_len))
    }

    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix_len) == u32::from(self.network)
    }

    /// Whether the two networks share any address.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }
}

fn mask(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        n => u32::MAX << (32 - u32::from(n.min(32))),
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Ipv4Cidr, String> {
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not in CIDR notation (a.b.c.d/n)"))?;
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an IPv4 CIDR (IPv6 is not supported yet)"))?;
        let prefix_len: u8 = prefix
            .parse()
            .ok()
            .filter(|n| *n <= 32)
            .ok_or_else(|| format!("{text:?} has an invalid prefix length"))?;
        Ipv4Cidr::new(address, prefix_len).ok_or_else(|| format!("{text:?} is invalid"))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// One range addresses are allocated from, with host-local's defaults
/// filled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    /// The subnet; pods get this prefix length.
    pub subnet: Ipv4Cidr,
    /// First allocatable address (default: the subnet's first host).
    pub start: Ipv4Addr,
    /// Last allocatable address (default: the one before broadcast).
    pub end: Ipv4Addr,
    /// The gateway, held by the bridge and never given to a pod (default:
    /// the subnet's first host).
    pub gateway: Ipv4Addr,
}

impl IpRange {
    /// A range over the whole of `subnet`, with the defaults.
    pub fn whole(subnet: Ipv4Cidr) -> Result<IpRange, CniError> {
        IpRange::new(subnet, None, None, None)
    }

    fn new(
        subnet: Ipv4Cidr,
        start: Option<Ipv4Addr>,
        end: Option<Ipv4Addr>,
        gateway: Option<Ipv4Addr>,
    ) -> Result<IpRange, CniError> {
        if subnet.prefix_len() > 30 {
            return Err(CniError::config(format!(
                "subnet {subnet} is too small to allocate from (at most /30)"
            )));
        }
        let first_host = Ipv4Addr::from(u32::from(subnet.network()) + 1);
        let last_host = Ipv4Addr::from(u32::from(subnet.broadcast()) - 1);
        let host = |what: &str, ip: Ipv4Addr| {
            if ip < first_host || ip > last_host {
                Err(CniError::config(format!(
                    "ipam {what} {ip} is not a host address of subnet {subnet}"
                )))
            } else {
                Ok(ip)
            }
        };
        let range = IpRange {
            subnet,
            start: host("rangeStart", start.unwrap_or(first_host))?,
            end: host("rangeEnd", end.unwrap_or(last_host))?,
            gateway: host("gateway", gateway.unwrap_or(first_host))?,
        };
        if range.start > range.end {
            return Err(CniError::config(format!(
                "ipam rangeStart {} is after rangeEnd {}",
                range.start, range.end
            )));
        }
        if range.capacity() == 0 {
            return Err(CniError::config(format!(
                "ipam range {range} has no address to give out besides the gateway"
            )));
        }
        Ok(range)
    }

    /// Whether `ip` may be given to a pod from this range.
    pub fn allocatable(&self, ip: Ipv4Addr) -> bool {
        ip >= self.start && ip <= self.end && ip != self.gateway
    }

    /// How many addresses this range can give out.
    pub fn capacity(&self) -> u64 {
        let size = u64::from(u32::from(self.end) - u32::from(self.start)) + 1;
        if self.gateway >= self.start && self.gateway <= self.end {
            size - 1
        } else {
            size
        }
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}-{})", self.subnet, self.start, self.end)
    }
}

/// A route to install in the container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteConfig {
    /// Destination.
    pub dst: Ipv4Cidr,
    /// Next hop (default: the range's gateway).
    pub gw: Option<Ipv4Addr>,
}

/// Where the address ranges come from, or why there are none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ranges {
    /// Configured and valid.
    Configured(Vec<IpRange>),
    /// Neither `ipam.subnet`/`ipam.ranges` nor `podCIDR` is set.
    Missing,
    /// Set but invalid. Kept so that DEL and GC, which need no ranges, can
    /// still clean up.
    Invalid(CniError),
}

/// The `ipam` section, host-local style.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpamConfig {
    /// Address ranges (one range set).
    pub ranges: Ranges,
    /// Routes for the container; empty means a default route via the
    /// gateway when `isGateway` is on.
    pub routes: Vec<RouteConfig>,
    /// Parent of the per-network store.
    pub data_dir: PathBuf,
}

/// A validated network configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The spec version the runtime speaks (as given).
    pub cni_version: String,
    /// The same, parsed.
    pub version: Version,
    /// Network name; keys the IPAM store.
    pub name: String,
    /// `type` (the executable the runtime looked up).
    pub plugin_type: String,
    /// Bridge name.
    pub bridge: String,
    /// Give the bridge the gateway address and route pods through it.
    /// On by default in Ferry (the reference bridge plugin defaults off).
    pub is_gateway: bool,
    /// Make the gateway the container's default route even when
    /// `ipam.routes` lists other routes.
    pub is_default_gateway: bool,
    /// Accepted for compatibility; masquerading is done by the node agent.
    pub ip_masq: bool,
    /// MTU for the bridge (when created) and both veth ends.
    pub mtu: Option<u32>,
    /// Hairpin mode on the bridge port of each container.
    pub hairpin_mode: bool,
    /// IPAM settings.
    pub ipam: IpamConfig,
    /// DNS settings passed through to the result.
    pub dns: Dns,
    /// `prevResult`, unparsed (only CHECK needs it valid).
    pub prev_result: Option<serde_json::Value>,
    /// GC's `cni.dev/valid-attachments`.
    pub valid_attachments: Option<Vec<Attachment>>,
}

impl NetworkConfig {
    /// The store directory: `<dataDir>/<name>`.
    pub fn store_dir(&self) -> PathBuf {
        self.ipam.data_dir.join(&self.name)
    }

    /// The address ranges, or the error that explains why there are none.
    pub fn ranges(&self) -> Result<&[IpRange], CniError> {
        match &self.ipam.ranges {
            Ranges::Configured(ranges) => Ok(ranges),
            Ranges::Missing => Err(CniError::config(format!(
                "network {}: no subnet configured: set ipam.subnet or ipam.ranges, or podCIDR \
                 (the node's pod CIDR)",
                self.name
            ))),
            Ranges::Invalid(error) => Err(error.clone()),
        }
    }

    /// Parses stdin. Errors: 6 if it is not a JSON object, 1 if the
    /// version is not supported, 7 for anything else wrong.
    pub fn parse(stdin: &[u8]) -> Result<NetworkConfig, CniError> {
        let value: serde_json::Value = serde_json::from_slice(stdin).map_err(|error| {
            CniError::new(
                ErrorCode::Decode,
                format!("network config on stdin is not valid JSON: {error}"),
            )
        })?;
        if !value.is_object() {
            return Err(CniError::new(
                ErrorCode::Decode,
                "network config on stdin is not a JSON object",
            ));
        }
        let (cni_version, version) = negotiate_version(&value)?;
        let raw: RawConfig = serde_json::from_value(value)
            .map_err(|error| CniError::config(format!("invalid network config: {error}")))?;
        raw.validate(cni_version, version)
    }
}

/// Picks the version: `cniVersion`, or the highest supported entry of
/// `cniVersions` (spec 1.1) when `cniVersion` is absent.
fn negotiate_version(value: &serde_json::Value) -> Result<(String, Version), CniError> {
    let incompatible = |given: &str| {
        CniError::new(
            ErrorCode::IncompatibleVersion,
            format!(
                "incompatible CNI version {given}: this plugin supports {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        )
    };
    if let Some(text) = value.get("cniVersion").and_then(|v| v.as_str()) {
        let version: Version = text
            .parse()
            .map_err(|()| CniError::config(format!("cniVersion {text:?} is not a version")))?;
        return if version.is_supported() {
            Ok((text.to_string(), version))
        } else {
            Err(incompatible(text))
        };
    }
    if let Some(list) = value.get("cniVersions").and_then(|v| v.as_array()) {
        let best = list
            .iter()
            .filter_map(|v| v.as_str())
            .filter_map(|text| Some((text.to_string(), text.parse::<Version>().ok()?)))
            .filter(|(_, version)| version.is_supported())
            .max_by_key(|(_, version)| *version);
        return best.ok_or_else(|| incompatible("(none of cniVersions)"));
    }
    if value.get("cniVersion").is_some() {
        return Err(CniError::config("cniVersion must be a string"));
    }
    // The reference libraries read a missing version as 0.1.0.
    Err(incompatible("0.1.0 (cniVersion not set)"))
}

/// The error JSON's `cniVersion`: the caller's if it can be read from
/// stdin, else the newest.
pub fn reply_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|value| negotiate_version(&value).ok())
        .map(|(text, _)| text)
        .unwrap_or_else(|| LATEST_VERSION.to_string())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    name: Option<String>,
    #[serde(rename = "type")]
    plugin_type: Option<String>,
    bridge: Option<String>,
    is_gateway: Option<bool>,
    is_default_gateway: Option<bool>,
    ip_masq: Option<bool>,
    mtu: Option<u32>,
    hairpin_mode: Option<bool>,
    #[serde(rename = "podCIDR", alias = "podCidr")]
    pod_cidr: Option<String>,
    ipam: Option<RawIpam>,
    dns: Option<Dns>,
    prev_result: Option<serde_json::Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<Attachment>>,
    /// The name libcni also sets, after a naming slip in the spec.
    #[serde(rename = "cni.dev/attachments")]
    attachments: Option<Vec<Attachment>>,
    runtime_config: Option<RawRuntimeConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIpam {
    #[serde(rename = "type")]
    ipam_type: Option<String>,
    subnet: Option<String>,
    range_start: Option<String>,
    range_end: Option<String>,
    gateway: Option<String>,
    ranges: Option<Vec<Vec<RawRange>>>,
    routes: Option<Vec<RawRoute>>,
    data_dir: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRange {
    subnet: String,
    range_start: Option<String>,
    range_end: Option<String>,
    gateway: Option<String>,
}

#[derive(Deserialize)]
struct RawRoute {
    dst: String,
    gw: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRuntimeConfig {
    /// The `ipRanges` capability: ranges chosen by the runtime.
    ip_ranges: Option<Vec<Vec<RawRange>>>,
}

fn parse_ip(what: &str, text: Option<&String>) -> Result<Option<Ipv4Addr>, CniError> {
    text.map(|text| {
        text.parse::<Ipv4Addr>()
            .map_err(|_| CniError::config(format!("{what} {text:?} is not an IPv4 address")))
    })
    .transpose()
}

fn parse_cidr(what: &str, text: &str) -> Result<Ipv4Cidr, CniError> {
    text.parse::<Ipv4Cidr>()
        .map_err(|error| CniError::config(format!("{what}: {error}")))
}

fn build_range(raw: &RawRange, what: &str) -> Result<IpRange, CniError> {
    let subnet = parse_cidr(&format!("{what}.subnet"), &raw.subnet)?;
    IpRange::new(
        subnet,
        parse_ip(&format!("{what}.rangeStart"), raw.range_start.as_ref())?,
        parse_ip(&format!("{what}.rangeEnd"), raw.range_end.as_ref())?,
        parse_ip(&format!("{what}.gateway"), raw.gateway.as_ref())?,
    )
}

fn build_range_sets(sets: &[Vec<RawRange>], what: &str) -> Result<Vec<IpRange>, CniError> {
    match sets {
        [] => Err(CniError::config(format!("{what} is empty"))),
        [set] => {
            if set.is_empty() {
                return Err(CniError::config(format!("{what}[0] is empty")));
            }
            let ranges = set
                .iter()
                .enumerate()
                .map(|(i, raw)| build_range(raw, &format!("{what}[0][{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            for (i, a) in ranges.iter().enumerate() {
                for b in &ranges[i + 1..] {
                    if a.start <= b.end && b.start <= a.end {
                        return Err(CniError::config(format!(
                            "{what}: ranges {a} and {b} overlap"
                        )));
                    }
                }
            }
            Ok(ranges)
        }
        _ => Err(CniError::new(
            ErrorCode::UnsupportedField,
            format!("{what}: only one range set (one IPv4 address per container) is supported"),
        )),
    }
}

impl RawConfig {
    fn validate(self, cni_version: String, version: Version) -> Result<NetworkConfig, CniError> {
        let name = self
            .name
            .ok_or_else(|| CniError::config("network config has no name"))?;
        if !valid_network_name(&name) {
            return Err(CniError::config(format!(
                "network name {name:?} is invalid: it must start with a letter or digit followed \
                 by letters, digits, '_', '.' or '-'"
            )));
        }
        let bridge = self.bridge.unwrap_or_else(|| DEFAULT_BRIDGE.to_string());
        if !crate::spec::valid_interface_name(&bridge) {
            return Err(CniError::config(format!(
                "bridge name {bridge:?} is not a valid interface name"
            )));
        }
        if let Some(mtu) = self.mtu
            && !(68..=65535).contains(&mtu)
        {
            return Err(CniError::config(format!(
                "mtu {mtu} is out of range (68-65535)"
            )));
        }
        let ipam = self.ipam.unwrap_or(RawIpam {
            ipam_type: None,
            subnet: None,
            range_start: None,
            range_end: None,
            gateway: None,
            ranges: None,
            routes: None,
            data_dir: None,
        });
        if let Some(kind) = ipam.ipam_type.as_deref()
            && !kind.is_empty()
            && kind != "host-local"
        {
            return Err(CniError::config(format!(
                "ipam type {kind:?} is not supported: Ferry has host-local IPAM built in"
            )));
        }
        let ranges = match ranges_from(&ipam, self.pod_cidr.as_deref(), self.runtime_config) {
            Ok(Some(ranges)) => Ranges::Configured(ranges),
            Ok(None) => Ranges::Missing,
            Err(error) => Ranges::Invalid(error),
        };
        let routes = ipam
            .routes
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, raw)| {
                Ok(RouteConfig {
                    dst: parse_cidr(&format!("ipam.routes[{i}].dst"), &raw.dst)?,
                    gw: parse_ip(&format!("ipam.routes[{i}].gw"), raw.gw.as_ref())?,
                })
            })
            .collect::<Result<Vec<_>, CniError>>()?;
        let data_dir = PathBuf::from(
            ipam.data_dir
                .filter(|dir| !dir.is_empty())
                .unwrap_or_else(|| DEFAULT_DATA_DIR.to_string()),
        );
        Ok(NetworkConfig {
            cni_version,
            version,
            name,
            plugin_type: self.plugin_type.unwrap_or_default(),
            bridge,
            is_gateway: self.is_gateway.unwrap_or(true) || self.is_default_gateway == Some(true),
            is_default_gateway: self.is_default_gateway.unwrap_or(false),
            ip_masq: self.ip_masq.unwrap_or(false),
            mtu: self.mtu,
            hairpin_mode: self.hairpin_mode.unwrap_or(false),
            ipam: IpamConfig {
                ranges,
                routes,
                data_dir,
            },
            dns: self.dns.unwrap_or_default(),
            prev_result: self.prev_result,
            valid_attachments: self.valid_attachments.or(self.attachments),
        })
    }
}

/// Ranges by precedence: the runtime's `ipRanges` capability, then
/// `ipam.ranges`, then `ipam.subnet`, then the node's `podCIDR`.
fn ranges_from(
    ipam: &RawIpam,
    pod_cidr: Option<&str>,
    runtime_config: Option<RawRuntimeConfig>,
) -> Result<Option<Vec<IpRange>>, CniError> {
    if let Some(sets) = runtime_config.and_then(|rc| rc.ip_ranges)
        && !sets.is_empty()
    {
        return build_range_sets(&sets, "runtimeConfig.ipRanges").map(Some);
    }
    if let Some(sets) = &ipam.ranges {
        if ipam.subnet.is_some() {
            return Err(CniError::config(
                "set either ipam.subnet or ipam.ranges, not both",
            ));
        }
        return build_range_sets(sets, "ipam.ranges").map(Some);
    }
    let subnet = match (ipam.subnet.as_deref(), pod_cidr) {
        (Some(subnet), _) if !subnet.is_empty() => parse_cidr("ipam.subnet", subnet)?,
        (_, Some(pod_cidr)) if !pod_cidr.is_empty() => parse_cidr("podCIDR", pod_cidr)?,
        _ => return Ok(None),
    };
    let range = IpRange::new(
        subnet,
        parse_ip("ipam.rangeStart", ipam.range_start.as_ref())?,
        parse_ip("ipam.rangeEnd", ipam.range_end.as_ref())?,
        parse_ip("ipam.gateway", ipam.gateway.as_ref())?,
    )?;
    Ok(Some(vec![range]))
}

/// The spec's rule for network names; they also name the store directory.
fn valid_network_name(name: &str) -> bool {
    crate::spec::valid_container_id(name) && name != "." && name != ".."
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(json: serde_json::Value) -> Result<NetworkConfig, CniError> {
        NetworkConfig::parse(json.to_string().as_bytes())
    }

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().expect("test IP")
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = parse(serde_json::json!({
            "cniVersion": "1.1.0", "name": "ferry", "type": "ferry",
            "ipam": { "subnet": "10.244.1.0/24" }
        }))
        .expect("valid");
        assert_eq!(config.bridge, "cni0");
        assert!(config.is_gateway);
        assert!(!config.hairpin_mode);
        assert_eq!(
            config.store_dir(),
            PathBuf::from("/var/lib/cni/networks/ferry")
        );
        let ranges = config.ranges().expect("ranges");
        assert_eq!(ranges.len(), 1);
        assert_eq!(ranges[0].start, ip("10.244.1.1"));
        assert_eq!(ranges[0].end, ip("10.244.1.254"));
        assert_eq!(ranges[0].gateway, ip("10.244.1.1"));
        assert_eq!(ranges[0].capacity(), 253);
    }

    #[test]
    fn subnet_falls_back_to_pod_cidr() {
        let config = parse(serde_json::json!({
            "cniVersion": "1.0.0", "name": "ferry", "type": "ferry",
            "podCIDR": "10.244.7.0/24", "ipam": { "type": "host-local" }
        }))
        .expect("valid");
        assert_eq!(
            config.ranges().expect("ranges")[0].subnet.to_string(),
            "10.244.7.0/24"
        );
    }

    #[test]
    fn no_subnet_is_an_invalid_config_for_add_only() {
        let config = parse(serde_json::json!({
            "cniVersion": "1.1.0", "name": "ferry", "type": "ferry"
        }))
        .expect("parses: DEL and GC need no subnet");
        assert_eq!(config.ipam.ranges, Ranges::Missing);
        assert_eq!(
            config.ranges().expect_err("no ranges").code,
            ErrorCode::InvalidConfig
        );
    }

    #[test]
    fn explicit_range_and_gateway() {
        let config = parse(serde_json::json!({
            "cniVersion": "1.1.0", "name": "n", "type": "ferry",
            "ipam": { "subnet": "10.2.0.0/16", "rangeStart": "10.2.1.10",
                      "rangeEnd": "10.2.1.20", "gateway": "10.2.0.254",
                      "routes": [{ "dst": "0.0.0.0/0" }, { "dst": "10.96.0.0/12", "gw": "10.2.0.1" }],
                      "dataDir": "/tmp/x" }
        }))
        .expect("valid");
        let range = config.ranges().expect("ranges")[0];
        assert_eq!(range.start, ip("10.2.1.10"));
        assert_eq!(range.end, ip("10.2.1.20"));
        assert_eq!(range.gateway, ip("10.2.0.254"));
        assert_eq!(range.capacity(), 11);
        assert_eq!(config.ipam.routes.len(), 2);
        assert_eq!(config.ipam.routes[1].gw, Some(ip("10.2.0.1")));
        assert_eq!(config.store_dir(), PathBuf::from("/tmp/x/n"));
    }

    #[test]
    fn ranges_list_and_overlap() {
        let config = parse(serde_json::json!({
            "cniVersion": "1.1.0", "name": "n", "type": "ferry",
            "ipam": { "ranges": [[
                { "subnet": "10.1.0.0/24", "rangeStart": "10.1.0.10", "rangeEnd": "10.1.0.19" },
                { "subnet": "10.1.0.0/24", "rangeStart": "10.1.0.100", "rangeEnd": "10.1.0.109" }
            ]] }
        }))
        .expect("valid");
        assert_eq!(config.ranges().expect("ranges").len(), 2);

        let overlapping = parse(serde_json::json!({
            "cniVersion": "1.1.0", "name": "n", "type": "ferry",
            "ipam": { "ranges": [[
                { "subnet": "10.1.0.0/24", "rangeStart": "10.1.0.10", "rangeEnd": "10.1.0.19" },
                { "subnet": "10.1.0.0/24", "rangeStart": "10.1.0.15", "rangeEnd": "10.1.0.30" }
            ]] }
        }))
        .expect("parses");
        assert_eq!(
            overlapping.ranges().expect_err("overlap").code,
            ErrorCode::InvalidConfig
        );
    }

    #[test]
    fn invalid_values_are_code_7() {
        for ipam in [
            serde_json::json!({ "subnet": "10.244.1.0" }),
            serde_json::json!({ "subnet": "10.244.1.0/33" }),
            serde_json::json!({ "subnet": "fd00::/64" }),
            serde_json::json!({ "subnet": "10.244.1.0/31" }),
            serde_json::json!({ "subnet": "10.244.1.0/24", "rangeStart": "10.244.2.1" }),
            serde_json::json!({ "subnet": "10.244.1.0/24", "rangeStart": "10.244.1.9", "rangeEnd": "10.244.1.8" }),
            serde_json::json!({ "subnet": "10.244.1.0/24", "gateway": "10.244.1.255" }),
            serde_json::json!({ "subnet": "10.244.1.0/24", "ranges": [[{ "subnet": "10.1.0.0/24" }]] }),
        ] {
            let config = parse(serde_json::json!({
                "cniVersion": "1.1.0", "name": "n", "type": "ferry", "ipam": ipam
            }))
            .expect("parses");
            assert_eq!(
                config.ranges().expect_err("invalid").code,
                ErrorCode::InvalidConfig,
                "{ipam}"
            );
        }
        for config in [
            serde_json::json!({ "cniVersion": "1.1.0", "type": "ferry" }),
            serde_json::json!({ "cniVersion": "1.1.0", "name": "a/b" }),
            serde_json::json!({ "cniVersion": "1.1.0", "name": "n", "mtu": 10 }),
            serde_json::json!({ "cniVersion": "1.1.0", "name": "n", "mtu": "big" }),
            serde_json::json!({ "cniVersion": "1.1.0", "name": "n", "bridge": "a very long bridge name" }),
            serde_json::json!({ "cniVersion": "1.1.0", "name": "n", "ipam": { "type": "dhcp" } }),
            serde_json::json!({ "cniVersion": "1.1.0", "name": "n", "ipam": { "routes": [{ "dst": "x" }] } }),
            serde_json::json!({ "cniVersion": 1, "name": "n" }),
        ] {
            assert_eq!(
                parse(config.clone()).expect_err("invalid").code,
                ErrorCode::InvalidConfig,
                "{config}"
            );
        }
    }

    #[test]
    fn versions_are_negotiated() {
        let old = parse(serde_json::json!({ "cniVersion": "0.2.0", "name": "n" }));
        assert_eq!(old.expect_err("old").code, ErrorCode::IncompatibleVersion);
        let missing = parse(serde_json::json!({ "name": "n" }));
        assert_eq!(
            missing.expect_err("missing").code,
            ErrorCode::IncompatibleVersion
        );
        let list =
            parse(serde_json::json!({ "cniVersions": ["0.4.0", "1.0.0", "9.0.0"], "name": "n" }))
                .expect("negotiated");
        assert_eq!(list.cni_version, "1.0.0");
        assert_eq!(reply_version(br#"{"cniVersion":"0.4.0"}"#), "0.4.0");
        assert_eq!(reply_version(b"garbage"), LATEST_VERSION);
    }

    #[test]
    fn garbage_is_a_decode_error() {
        for stdin in [&b""[..], b"{", b"[1,2]", b"\"text\"", b"\xff\xfe"] {
            assert_eq!(
                NetworkConfig::parse(stdin).expect_err("garbage").code,
                ErrorCode::Decode
            );
        }
    }

    #[test]
    fn gc_attachments_under_either_key() {
        for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
            let config = parse(serde_json::json!({
                "cniVersion": "1.1.0", "name": "n",
                key: [{ "containerID": "a", "ifname": "eth0" }]
            }))
            .expect("valid");
            assert_eq!(
                config.valid_attachments,
                Some(vec![Attachment {
                    container_id: "a".into(),
                    ifname: "eth0".into()
                }])
            );
        }
    }

    #[test]
    fn runtime_ip_ranges_win() {
        let config = parse(serde_json::json!({
            "cniVersion": "1.1.0", "name": "n", "podCIDR": "10.244.1.0/24",
            "runtimeConfig": { "ipRanges": [[{ "subnet": "10.9.0.0/24" }]] }
        }))
        .expect("valid");
        assert_eq!(
            config.ranges().expect("ranges")[0].subnet.to_string(),
            "10.9.0.0/24"
        );
    }

    #[test]
    fn cidr_arithmetic() {
        let cidr: Ipv4Cidr = "10.244.1.77/24".parse().expect("cidr");
        assert_eq!(cidr.to_string(), "10.244.1.0/24");
        assert_eq!(cidr.broadcast(), ip("10.244.1.255"));
        assert!(cidr.contains(ip("10.244.1.5")));
        assert!(!cidr.contains(ip("10.244.2.5")));
        let all: Ipv4Cidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(all.contains(ip("1.2.3.4")));
        assert!(all.overlaps(&cidr));
    }

    proptest! {
        #[test]
        fn parser_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = NetworkConfig::parse(&bytes);
            let _ = reply_version(&bytes);
        }

        #[test]
        fn parser_never_panics_on_config_shapes(
            version in prop_oneof![Just("1.1.0".to_string()), Just("0.3.1".to_string()), ".{0,8}"],
            name in ".{0,12}",
            bridge in proptest::option::of(".{0,20}"),
            mtu in proptest::option::of(any::<i64>()),
            subnet in proptest::option::of(prop_oneof![
                "(\\d{1,3}\\.){3}\\d{1,3}/\\d{1,2}".prop_map(|s| s),
                ".{0,20}",
            ]),
            start in proptest::option::of("(\\d{1,3}\\.){3}\\d{1,3}"),
            end in proptest::option::of("(\\d{1,3}\\.){3}\\d{1,3}"),
            gateway in proptest::option::of("(\\d{1,3}\\.){3}\\d{1,3}"),
            pod_cidr in proptest::option::of("(\\d{1,3}\\.){3}\\d{1,3}/\\d{1,2}"),
        ) {
            let mut ipam = serde_json::Map::new();
            if let Some(subnet) = subnet { ipam.insert("subnet".into(), subnet.into()); }
            if let Some(start) = start { ipam.insert("rangeStart".into(), start.into()); }
            if let Some(end) = end { ipam.insert("rangeEnd".into(), end.into()); }
            if let Some(gateway) = gateway { ipam.insert("gateway".into(), gateway.into()); }
            let mut config = serde_json::json!({
                "cniVersion": version, "name": name, "type": "ferry", "ipam": ipam,
            });
            if let Some(bridge) = bridge { config["bridge"] = bridge.into(); }
            if let Some(mtu) = mtu { config["mtu"] = mtu.into(); }
            if let Some(pod_cidr) = pod_cidr { config["podCIDR"] = pod_cidr.into(); }
            if let Ok(parsed) = NetworkConfig::parse(config.to_string().as_bytes()) {
                // Whatever parses yields ranges that are internally sound.
                if let Ok(ranges) = parsed.ranges() {
                    for range in ranges {
                        prop_assert!(range.subnet.contains(range.start));
                        prop_assert!(range.subnet.contains(range.end));
                        prop_assert!(range.start <= range.end);
                        prop_assert!(range.capacity() >= 1);
                    }
                }
            }
        }
    }
}
