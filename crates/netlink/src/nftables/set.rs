//! Named sets and maps, and their elements.

use std::fmt;
use std::time::Duration;

use super::objects::{Family, Table, Verdict};
use super::sys;
use super::value::{DataType, Value};

/// Set flags (`NFT_SET_*`) chosen by the user; `map` and `concat` follow
/// from the set's definition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SetFlags(u32);

impl SetFlags {
    /// Elements cannot change after the set is created.
    pub const CONSTANT: SetFlags = SetFlags(sys::NFT_SET_CONSTANT);
    /// Elements are ranges (prefixes, port ranges).
    pub const INTERVAL: SetFlags = SetFlags(sys::NFT_SET_INTERVAL);
    /// Elements can expire.
    pub const TIMEOUT: SetFlags = SetFlags(sys::NFT_SET_TIMEOUT);
    /// Rules may add elements (`dynset`, nft's `dynamic`).
    pub const DYNAMIC: SetFlags = SetFlags(sys::NFT_SET_EVAL);

    pub const fn empty() -> Self {
        SetFlags(0)
    }

    pub const fn contains(self, other: SetFlags) -> bool {
        self.0 & other.0 == other.0
    }

    pub(crate) fn bits(self) -> u32 {
        self.0
    }

    pub(crate) fn from_kernel(bits: u32) -> Self {
        SetFlags(
            bits & (sys::NFT_SET_CONSTANT
                | sys::NFT_SET_INTERVAL
                | sys::NFT_SET_TIMEOUT
                | sys::NFT_SET_EVAL),
        )
    }
}

impl std::ops::BitOr for SetFlags {
    type Output = SetFlags;
    fn bitor(self, rhs: SetFlags) -> SetFlags {
        SetFlags(self.0 | rhs.0)
    }
}

/// What a map maps to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MapData {
    /// A verdict map (`vmap`): elements carry accept, drop, jump...
    Verdict,
    /// A value map: elements carry values of these fields, e.g.
    /// `ipv4_addr . inet_service` for DNAT targets.
    Value(Vec<DataType>),
}

/// A named set or map.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Set {
    pub family: Family,
    pub table: String,
    pub name: String,
    /// One field, or several for a concatenated key
    /// (`ipv4_addr . inet_proto . inet_service`).
    pub key: Vec<DataType>,
    /// `None` for a set, the value type for a map.
    pub data: Option<MapData>,
    pub flags: SetFlags,
    /// Default element timeout (needs [`SetFlags::TIMEOUT`]).
    pub timeout: Option<Duration>,
    /// Maximum number of elements.
    pub size: Option<u32>,
    pub comment: Option<String>,
}

impl Set {
    /// A set of keys.
    pub fn new(table: &Table, name: impl Into<String>, key: impl Into<Vec<DataType>>) -> Self {
        Set {
            family: table.family,
            table: table.name.clone(),
            name: name.into(),
            key: key.into(),
            data: None,
            flags: SetFlags::empty(),
            timeout: None,
            size: None,
            comment: None,
        }
    }

    /// A map from keys to values.
    pub fn map(
        table: &Table,
        name: impl Into<String>,
        key: impl Into<Vec<DataType>>,
        value: impl Into<Vec<DataType>>,
    ) -> Self {
        Set {
            data: Some(MapData::Value(value.into())),
            ..Set::new(table, name, key)
        }
    }

    /// A map from keys to verdicts (`vmap`).
    pub fn verdict_map(
        table: &Table,
        name: impl Into<String>,
        key: impl Into<Vec<DataType>>,
    ) -> Self {
        Set {
            data: Some(MapData::Verdict),
            ..Set::new(table, name, key)
        }
    }

    pub fn flags(mut self, flags: SetFlags) -> Self {
        self.flags = flags;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn size(mut self, size: u32) -> Self {
        self.size = Some(size);
        self
    }

    pub fn comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }

    pub fn is_map(&self) -> bool {
        self.data.is_some()
    }

    /// Formats an element's key like nft does, for messages.
    pub fn format_key(&self, key: &Value) -> String {
        key.format(&self.key)
    }
}

impl fmt::Display for Set {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.is_map() { "map" } else { "set" };
        write!(f, "{kind} {} {} {}", self.family, self.table, self.name)
    }
}

/// What a map element maps its key to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ElementData {
    Value(Value),
    Verdict(Verdict),
}

/// One element of a set or map.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SetElement {
    pub key: Value,
    /// The end of a range in a concatenated interval set.
    pub key_end: Option<Value>,
    pub data: Option<ElementData>,
    /// Marks the end of a range in a (non-concatenated) interval set.
    pub interval_end: bool,
    pub timeout: Option<Duration>,
    pub comment: Option<String>,
}

impl SetElement {
    pub fn new(key: Value) -> Self {
        SetElement {
            key,
            key_end: None,
            data: None,
            interval_end: false,
            timeout: None,
            comment: None,
        }
    }

    /// A map element with a value.
    pub fn data(mut self, value: Value) -> Self {
        self.data = Some(ElementData::Value(value));
        self
    }

    /// A verdict map element.
    pub fn verdict(mut self, verdict: Verdict) -> Self {
        self.data = Some(ElementData::Verdict(verdict));
        self
    }

    /// Makes this a range `key ..= end` (concatenated interval sets).
    pub fn range_end(mut self, end: Value) -> Self {
        self.key_end = Some(end);
        self
    }

    /// Marks this element as the (exclusive) end of an interval.
    pub fn interval_end(mut self) -> Self {
        self.interval_end = true;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }
}
