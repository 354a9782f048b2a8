//! The CNI protocol itself (spec 1.1): commands, environment variables,
//! versions, results and errors, as they appear on the wire. No I/O.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Spec versions this plugin speaks. Older ones (0.1.0, 0.2.0) had a
/// different result format and are refused.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest supported version, used when the caller's is unknown.
pub const LATEST_VERSION: &str = "1.1.0";

/// A CNI spec version, `major.minor.patch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    /// CHECK exists since 0.4.0.
    pub const CHECK: Version = Version(0, 4, 0);
    /// GC and STATUS exist since 1.1.0.
    pub const GC_STATUS: Version = Version(1, 1, 0);
    /// Results before 1.0.0 carry `"version": "4"` in each IP.
    pub const UNVERSIONED_IPS: Version = Version(1, 0, 0);

    /// Whether this plugin speaks this version.
    pub fn is_supported(&self) -> bool {
        SUPPORTED_VERSIONS
            .iter()
            .any(|text| text.parse::<Version>().ok() == Some(*self))
    }
}

impl FromStr for Version {
    type Err = ();

    fn from_str(text: &str) -> Result<Version, ()> {
        let mut parts = text.split('.').map(|part| {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                Err(())
            } else {
                part.parse::<u32>().map_err(|_| ())
            }
        });
        let major = parts.next().ok_or(())??;
        let minor = parts.next().ok_or(())??;
        let patch = parts.next().unwrap_or(Ok(0))?;
        if parts.next().is_some() {
            return Err(());
        }
        Ok(Version(major, minor, patch))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The operation a runtime asks for (`CNI_COMMAND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Attach a container to the network.
    Add,
    /// Detach it and free what it held.
    Del,
    /// Verify an earlier ADD is still in place.
    Check,
    /// Free everything not held by the listed attachments.
    Gc,
    /// Report whether ADD can succeed now.
    Status,
    /// Report the supported spec versions.
    Version,
}

impl FromStr for Command {
    type Err = ();

    fn from_str(text: &str) -> Result<Command, ()> {
        Ok(match text {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            _ => return Err(()),
        })
    }
}

/// Error codes: 1-99 from the spec, 100 and up Ferry's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// 1: the config's cniVersion is not supported.
    IncompatibleVersion = 1,
    /// 2: a field in the config is not supported.
    UnsupportedField = 2,
    /// 3: the container (its network namespace) does not exist.
    UnknownContainer = 3,
    /// 4: a required `CNI_*` variable is missing or malformed.
    InvalidEnvironment = 4,
    /// 5: reading or writing local state failed.
    Io = 5,
    /// 6: stdin is not JSON.
    Decode = 6,
    /// 7: the network config is invalid.
    InvalidConfig = 7,
    /// 11: a transient condition; retry later.
    TryAgainLater = 11,
    /// 50 (STATUS): the plugin cannot serve ADD now.
    NotAvailable = 50,
    /// 51 (STATUS): not available, and existing containers may have
    /// limited connectivity.
    NotAvailableLimitedConnectivity = 51,
    /// 100: every address of the configured ranges is taken.
    NoFreeAddress = 100,
    /// 101: the kernel refused a network operation.
    Kernel = 101,
    /// 102 (CHECK): the container's network differs from the ADD result.
    CheckFailed = 102,
}

/// A failure reported to the runtime as the spec's error JSON.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    /// The error code.
    pub code: ErrorCode,
    /// What went wrong, naming the object.
    pub msg: String,
    /// Longer explanation, if any.
    pub details: Option<String>,
}

impl CniError {
    /// An error with a message and no details.
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: None,
        }
    }

    /// Adds details.
    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = Some(details.into());
        self
    }

    /// Shorthand for [`ErrorCode::InvalidConfig`].
    pub fn config(msg: impl Into<String>) -> CniError {
        CniError::new(ErrorCode::InvalidConfig, msg)
    }

    /// The error JSON for stdout.
    pub fn to_json(&self, cni_version: &str) -> String {
        let mut object = serde_json::Map::new();
        object.insert("cniVersion".into(), cni_version.into());
        object.insert("code".into(), (self.code as u32).into());
        object.insert("msg".into(), self.msg.clone().into());
        if let Some(details) = &self.details {
            object.insert("details".into(), details.clone().into());
        }
        serde_json::Value::Object(object).to_string()
    }
}

impl From<ferry_netlink::Error> for CniError {
    fn from(error: ferry_netlink::Error) -> CniError {
        CniError::new(ErrorCode::Kernel, error.to_string())
    }
}

/// The `CNI_*` environment of one invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Environment {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID`.
    pub container_id: Option<String>,
    /// `CNI_NETNS`.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`.
    pub ifname: Option<String>,
    /// `CNI_ARGS`, unparsed (Ferry needs none of them).
    pub args: Option<String>,
    /// `CNI_PATH` (Ferry delegates to no other plugin).
    pub path: Option<String>,
}

impl Environment {
    /// Reads and validates the environment through `get`, which returns a
    /// variable's value (like `std::env::var(..).ok()`). Empty values count
    /// as unset. What each command requires is checked too.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Environment, CniError> {
        let var = |key: &str| get(key).filter(|value| !value.is_empty());
        let command = var("CNI_COMMAND").ok_or_else(|| {
            CniError::new(ErrorCode::InvalidEnvironment, "CNI_COMMAND is not set")
        })?;
        let command: Command = command.parse().map_err(|()| {
            CniError::new(
                ErrorCode::InvalidEnvironment,
                format!(
                    "CNI_COMMAND {command:?} is not one of ADD, DEL, CHECK, GC, STATUS, VERSION"
                ),
            )
        })?;
        let environment = Environment {
            command,
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS").map(PathBuf::from),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS"),
            path: var("CNI_PATH"),
        };
        let (needs_container, needs_netns) = match command {
            Command::Add | Command::Check => (true, true),
            Command::Del => (true, false),
            Command::Gc | Command::Status | Command::Version => (false, false),
        };
        let mut missing = Vec::new();
        if needs_container && environment.container_id.is_none() {
            missing.push("CNI_CONTAINERID");
        }
        if needs_container && environment.ifname.is_none() {
            missing.push("CNI_IFNAME");
        }
        if needs_netns && environment.netns.is_none() {
            missing.push("CNI_NETNS");
        }
        if !missing.is_empty() {
            return Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!(
                    "required environment variables missing: {}",
                    missing.join(", ")
                ),
            ));
        }
        if let Some(id) = &environment.container_id
            && !valid_container_id(id)
        {
            return Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!(
                    "CNI_CONTAINERID {id:?} is invalid: it must start with a letter or digit \
                     followed by letters, digits, '_', '.' or '-'"
                ),
            ));
        }
        if let Some(ifname) = &environment.ifname
            && !valid_interface_name(ifname)
        {
            return Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!(
                    "CNI_IFNAME {ifname:?} is invalid: it must be 1-15 characters, not '.' or \
                     '..', without '/', ':' or whitespace"
                ),
            ));
        }
        Ok(environment)
    }

    /// `CNI_CONTAINERID`, which `from_lookup` guaranteed for ADD/DEL/CHECK.
    pub fn container_id(&self) -> Result<&str, CniError> {
        self.container_id.as_deref().ok_or_else(|| {
            CniError::new(ErrorCode::InvalidEnvironment, "CNI_CONTAINERID is not set")
        })
    }

    /// `CNI_IFNAME`, which `from_lookup` guaranteed for ADD/DEL/CHECK.
    pub fn ifname(&self) -> Result<&str, CniError> {
        self.ifname
            .as_deref()
            .ok_or_else(|| CniError::new(ErrorCode::InvalidEnvironment, "CNI_IFNAME is not set"))
    }

    /// `CNI_NETNS`, which `from_lookup` guaranteed for ADD/CHECK.
    pub fn netns(&self) -> Result<&std::path::Path, CniError> {
        self.netns
            .as_deref()
            .ok_or_else(|| CniError::new(ErrorCode::InvalidEnvironment, "CNI_NETNS is not set"))
    }
}

/// The spec's rule for container IDs.
pub fn valid_container_id(id: &str) -> bool {
    let mut bytes = id.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The spec's (and Linux's) rule for interface names.
pub fn valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
}

/// One `(containerID, ifname)` pair, the key of everything the plugin
/// stores, and the unit of `cni.dev/valid-attachments` in GC.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Attachment {
    /// The runtime's container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The interface name inside the container.
    pub ifname: String,
}

/// The ADD result (also the `prevResult` of CHECK and DEL).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    /// Spec version of this result (the config's).
    pub cni_version: String,
    /// Interfaces created: the bridge, the host end of the veth, and the
    /// container end (with `sandbox`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// Addresses assigned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    /// Routes installed in the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteEntry>,
    /// DNS settings, passed through from the config.
    #[serde(default)]
    pub dns: Dns,
}

/// An interface in a result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// Hardware address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// MTU, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The container's netns path; empty for host interfaces.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

/// An address in a result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// `"4"` in results before spec 1.0.0, absent after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Address with prefix length, e.g. `10.244.1.5/24`.
    pub address: String,
    /// The subnet's gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces` of the interface holding the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route in a result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteEntry {
    /// Destination CIDR.
    pub dst: String,
    /// Next hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// DNS settings (`dns` in both the config and the result).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers, in priority order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// The VERSION answer.
pub fn version_json() -> String {
    serde_json::json!({
        "cniVersion": LATEST_VERSION,
        "supportedVersions": SUPPORTED_VERSIONS,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |key| map.get(key).cloned()
    }

    #[test]
    fn versions_parse_and_compare() {
        assert_eq!("1.1.0".parse::<Version>(), Ok(Version(1, 1, 0)));
        assert_eq!("0.4".parse::<Version>(), Ok(Version(0, 4, 0)));
        assert!("1.x.0".parse::<Version>().is_err());
        assert!("1.0.0.0".parse::<Version>().is_err());
        assert!("".parse::<Version>().is_err());
        assert!("+1.0".parse::<Version>().is_err());
        assert!(Version(0, 3, 1) < Version::CHECK);
        assert!(Version(1, 1, 0).is_supported());
        assert!(!Version(0, 2, 0).is_supported());
        assert!(!Version(1, 2, 0).is_supported());
    }

    #[test]
    fn add_needs_container_netns_and_ifname() {
        let error =
            Environment::from_lookup(lookup(&[("CNI_COMMAND", "ADD")])).expect_err("refused");
        assert_eq!(error.code, ErrorCode::InvalidEnvironment);
        assert!(error.msg.contains("CNI_CONTAINERID"), "{}", error.msg);
        assert!(error.msg.contains("CNI_NETNS"), "{}", error.msg);
        assert!(error.msg.contains("CNI_IFNAME"), "{}", error.msg);

        let env = Environment::from_lookup(lookup(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc-1.2_3"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
        ]))
        .expect("valid");
        assert_eq!(env.command, Command::Add);
        assert_eq!(env.ifname.as_deref(), Some("eth0"));
    }

    #[test]
    fn del_does_not_need_netns() {
        let env = Environment::from_lookup(lookup(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", ""),
            ("CNI_IFNAME", "eth0"),
        ]))
        .expect("valid");
        assert_eq!(env.netns, None);
    }

    #[test]
    fn bad_values_are_refused() {
        for (key, value) in [
            ("CNI_COMMAND", "ATTACH"),
            ("CNI_CONTAINERID", "-abc"),
            ("CNI_CONTAINERID", "a/b"),
            ("CNI_IFNAME", "a-very-long-interface-name"),
            ("CNI_IFNAME", "eth 0"),
            ("CNI_IFNAME", ".."),
        ] {
            let mut vars = vec![
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "abc"),
                ("CNI_IFNAME", "eth0"),
            ];
            vars.retain(|(k, _)| *k != key);
            vars.push((key, value));
            let error = Environment::from_lookup(lookup(&vars)).expect_err("refused");
            assert_eq!(error.code, ErrorCode::InvalidEnvironment, "{key}={value}");
        }
    }

    #[test]
    fn error_json_has_the_spec_fields() {
        let json = CniError::config("no subnet")
            .with_details("set ipam.subnet")
            .to_json("1.0.0");
        let value: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(value["cniVersion"], "1.0.0");
        assert_eq!(value["code"], 7);
        assert_eq!(value["msg"], "no subnet");
        assert_eq!(value["details"], "set ipam.subnet");
    }

    #[test]
    fn version_json_lists_supported_versions() {
        let value: serde_json::Value = serde_json::from_str(&version_json()).expect("json");
        assert_eq!(value["cniVersion"], LATEST_VERSION);
        assert_eq!(value["supportedVersions"].as_array().map(Vec::len), Some(5));
    }
}
