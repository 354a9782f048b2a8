//! Tables, chains and verdicts: where rules live and what they decide.
//!
//! These are plain values: the batch encodes them, the listing decodes
//! into them, so a dataplane can compare desired and live state with `==`.

use std::fmt;

use super::sys;

/// An nf_tables address family (the `nfgen_family` of every message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4 (`ip`).
    Ip,
    /// IPv6 (`ip6`).
    Ip6,
    /// IPv4 and IPv6 in one table (`inet`).
    Inet,
    Arp,
    Bridge,
    Netdev,
}

impl Family {
    pub(crate) fn nfproto(self) -> u8 {
        match self {
            Family::Inet => 1,
            Family::Ip => 2,
            Family::Arp => 3,
            Family::Netdev => 5,
            Family::Bridge => 7,
            Family::Ip6 => 10,
        }
    }

    pub(crate) fn from_nfproto(value: u8) -> Option<Family> {
        Some(match value {
            1 => Family::Inet,
            2 => Family::Ip,
            3 => Family::Arp,
            5 => Family::Netdev,
            7 => Family::Bridge,
            10 => Family::Ip6,
            _ => return None,
        })
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Inet => "inet",
            Family::Arp => "arp",
            Family::Bridge => "bridge",
            Family::Netdev => "netdev",
        })
    }
}

/// A table: the namespace every chain, set and rule lives in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Table {
    pub family: Family,
    pub name: String,
    pub comment: Option<String>,
}

impl Table {
    pub fn new(family: Family, name: impl Into<String>) -> Self {
        Table {
            family,
            name: name.into(),
            comment: None,
        }
    }

    pub fn comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "table {} {}", self.family, self.name)
    }
}

/// The kind of a base chain, which decides what its rules may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainType {
    Filter,
    /// Only the first packet of a connection passes; NAT statements allowed.
    Nat,
    Route,
}

impl ChainType {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
            ChainType::Route => "route",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "filter" => ChainType::Filter,
            "nat" => ChainType::Nat,
            "route" => ChainType::Route,
            _ => return None,
        })
    }
}

/// Netfilter hooks of the ip, ip6 and inet families (`NF_INET_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    pub(crate) fn number(self) -> u32 {
        match self {
            Hook::Prerouting => 0,
            Hook::Input => 1,
            Hook::Forward => 2,
            Hook::Output => 3,
            Hook::Postrouting => 4,
        }
    }

    pub(crate) fn from_number(value: u32) -> Option<Self> {
        Some(match value {
            0 => Hook::Prerouting,
            1 => Hook::Input,
            2 => Hook::Forward,
            3 => Hook::Output,
            4 => Hook::Postrouting,
            _ => return None,
        })
    }
}

/// Standard hook priorities, as nft names them (`NF_IP_PRI_*`).
pub mod priority {
    pub const RAW: i32 = -300;
    pub const MANGLE: i32 = -150;
    pub const DSTNAT: i32 = -100;
    pub const FILTER: i32 = 0;
    pub const SECURITY: i32 = 50;
    pub const SRCNAT: i32 = 100;
}

/// What a base chain does with a packet no rule decided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Policy {
    #[default]
    Accept,
    Drop,
}

/// Where a base chain is attached to the network stack.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BaseChain {
    pub chain_type: ChainType,
    pub hook: Hook,
    pub priority: i32,
    pub policy: Policy,
}

/// A chain: a base chain (attached to a hook) or a regular chain (reached
/// by jump, goto or a verdict map).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chain {
    pub family: Family,
    pub table: String,
    pub name: String,
    pub base: Option<BaseChain>,
    pub comment: Option<String>,
}

impl Chain {
    /// A regular chain.
    pub fn new(table: &Table, name: impl Into<String>) -> Self {
        Chain {
            family: table.family,
            table: table.name.clone(),
            name: name.into(),
            base: None,
            comment: None,
        }
    }

    /// A base chain with policy accept.
    pub fn base(
        table: &Table,
        name: impl Into<String>,
        chain_type: ChainType,
        hook: Hook,
        priority: i32,
    ) -> Self {
        Chain {
            base: Some(BaseChain {
                chain_type,
                hook,
                priority,
                policy: Policy::Accept,
            }),
            ..Chain::new(table, name)
        }
    }

    /// Sets the policy; only meaningful for base chains.
    pub fn policy(mut self, policy: Policy) -> Self {
        if let Some(base) = &mut self.base {
            base.policy = policy;
        }
        self
    }

    pub fn comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "chain {} {} {}", self.family, self.table, self.name)
    }
}

/// A verdict: in a rule (immediate), a verdict map element, or a policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    Accept,
    Drop,
    /// Go on with the next rule.
    Continue,
    /// Go on with the next rule (used internally by failed matches).
    Break,
    Return,
    Jump(String),
    Goto(String),
}

impl Verdict {
    pub(crate) fn code(&self) -> i32 {
        match self {
            Verdict::Accept => sys::NF_ACCEPT,
            Verdict::Drop => sys::NF_DROP,
            Verdict::Continue => sys::NFT_CONTINUE,
            Verdict::Break => sys::NFT_BREAK,
            Verdict::Return => sys::NFT_RETURN,
            Verdict::Jump(_) => sys::NFT_JUMP,
            Verdict::Goto(_) => sys::NFT_GOTO,
        }
    }

    pub(crate) fn chain(&self) -> Option<&str> {
        match self {
            Verdict::Jump(chain) | Verdict::Goto(chain) => Some(chain),
            _ => None,
        }
    }

    pub(crate) fn from_code(code: i32, chain: Option<String>) -> Option<Self> {
        Some(match (code, chain) {
            (sys::NF_ACCEPT, _) => Verdict::Accept,
            (sys::NF_DROP, _) => Verdict::Drop,
            (sys::NFT_CONTINUE, _) => Verdict::Continue,
            (sys::NFT_BREAK, _) => Verdict::Break,
            (sys::NFT_RETURN, _) => Verdict::Return,
            (sys::NFT_JUMP, Some(chain)) => Verdict::Jump(chain),
            (sys::NFT_GOTO, Some(chain)) => Verdict::Goto(chain),
            _ => return None,
        })
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::Continue => f.write_str("continue"),
            Verdict::Break => f.write_str("break"),
            Verdict::Return => f.write_str("return"),
            Verdict::Jump(chain) => write!(f, "jump {chain}"),
            Verdict::Goto(chain) => write!(f, "goto {chain}"),
        }
    }
}
