//! Rule expressions: what each nf_tables expression does, how it is
//! encoded (`NFTA_EXPR_NAME` + `NFTA_EXPR_DATA`), and decoded from dumps.
//!
//! Decoding normalises what the kernel fills in by itself (NAT range flags,
//! `max` registers equal to `min`), so a decoded rule equals the rule that
//! was sent.

use std::time::Duration;

use super::objects::{Family, Verdict};
use super::sys;
use super::wire::{TooLarge, Writer};

/// A data register. nf_tables has sixteen 32-bit registers; the four
/// legacy 128-bit registers `R1`..`R4` start at slots 0, 4, 8 and 12.
/// Concatenated keys use consecutive slots, one per field (an IPv6
/// address takes four).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Register(u32);

impl Register {
    /// The verdict register: a lookup into a verdict map writes here.
    pub const VERDICT: Register = Register(sys::NFT_REG_VERDICT);
    pub const R1: Register = Register(sys::NFT_REG_1);
    pub const R2: Register = Register(sys::NFT_REG_1 + 1);
    pub const R3: Register = Register(sys::NFT_REG_1 + 2);
    pub const R4: Register = Register(sys::NFT_REG_4);

    /// The 32-bit register `slot` (0..=15); `r32(0)` is `R1`.
    pub const fn r32(slot: u8) -> Register {
        let slot = (slot as u32) & 15;
        if slot.is_multiple_of(4) {
            Register(sys::NFT_REG_1 + slot / 4)
        } else {
            Register(sys::NFT_REG32_00 + slot)
        }
    }

    /// The 32-bit slot this register starts at (`None` for the verdict).
    pub const fn slot(self) -> Option<u8> {
        match self.0 {
            sys::NFT_REG_1..=sys::NFT_REG_4 => Some(((self.0 - sys::NFT_REG_1) * 4) as u8),
            sys::NFT_REG32_00..=sys::NFT_REG32_15 => Some((self.0 - sys::NFT_REG32_00) as u8),
            _ => None,
        }
    }

    /// The register `len` bytes further on: where the next field of a
    /// concatenation goes.
    pub fn after(self, len: usize) -> Register {
        let slots = len.div_ceil(4) as u8;
        Register::r32(self.slot().unwrap_or(0) + slots)
    }

    pub(crate) fn number(self) -> u32 {
        self.0
    }

    fn from_number(value: u32) -> Register {
        match value {
            sys::NFT_REG32_00..=sys::NFT_REG32_15 => {
                Register::r32((value - sys::NFT_REG32_00) as u8)
            }
            other => Register(other),
        }
    }
}

/// Where a payload offset counts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadBase {
    LinkLayer,
    Network,
    /// The transport header (`th`): ports of TCP, UDP and SCTP alike.
    Transport,
    Inner,
}

/// Packet and socket metadata (`enum nft_meta_keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetaKey {
    Len,
    Protocol,
    Mark,
    Iif,
    Oif,
    IifName,
    OifName,
    NfProto,
    L4Proto,
    PktType,
    Other(u32),
}

impl MetaKey {
    fn number(self) -> u32 {
        match self {
            MetaKey::Len => 0,
            MetaKey::Protocol => 1,
            MetaKey::Mark => 3,
            MetaKey::Iif => 4,
            MetaKey::Oif => 5,
            MetaKey::IifName => 6,
            MetaKey::OifName => 7,
            MetaKey::NfProto => 15,
            MetaKey::L4Proto => 16,
            MetaKey::PktType => 19,
            MetaKey::Other(n) => n,
        }
    }

    fn from_number(n: u32) -> Self {
        match n {
            0 => MetaKey::Len,
            1 => MetaKey::Protocol,
            3 => MetaKey::Mark,
            4 => MetaKey::Iif,
            5 => MetaKey::Oif,
            6 => MetaKey::IifName,
            7 => MetaKey::OifName,
            15 => MetaKey::NfProto,
            16 => MetaKey::L4Proto,
            19 => MetaKey::PktType,
            n => MetaKey::Other(n),
        }
    }
}

/// Connection tracking keys (`enum nft_ct_keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtKey {
    /// Bit set of [`ct_state`] values (host order u32).
    State,
    Direction,
    /// Bit set of [`ct_status`] values (host order u32).
    Status,
    Mark,
    Expiration,
    Other(u32),
}

impl CtKey {
    fn number(self) -> u32 {
        match self {
            CtKey::State => 0,
            CtKey::Direction => 1,
            CtKey::Status => 2,
            CtKey::Mark => 3,
            CtKey::Expiration => 5,
            CtKey::Other(n) => n,
        }
    }

    fn from_number(n: u32) -> Self {
        match n {
            0 => CtKey::State,
            1 => CtKey::Direction,
            2 => CtKey::Status,
            3 => CtKey::Mark,
            5 => CtKey::Expiration,
            n => CtKey::Other(n),
        }
    }
}

/// `ct state` bits (`NF_CT_STATE_*_BIT`).
pub mod ct_state {
    pub const INVALID: u32 = 1;
    pub const ESTABLISHED: u32 = 1 << 1;
    pub const RELATED: u32 = 1 << 2;
    pub const NEW: u32 = 1 << 3;
    pub const UNTRACKED: u32 = 1 << 6;
}

/// `ct status` bits (`IPS_*` in nf_conntrack_common.h).
pub mod ct_status {
    pub const EXPECTED: u32 = 1;
    pub const SEEN_REPLY: u32 = 1 << 1;
    pub const ASSURED: u32 = 1 << 2;
    pub const CONFIRMED: u32 = 1 << 3;
    pub const SRC_NAT: u32 = 1 << 4;
    /// The connection was destination-NATed (e.g. to a Service endpoint).
    pub const DST_NAT: u32 = 1 << 5;
}

/// Comparison operators (`enum nft_cmp_ops`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
}

impl CmpOp {
    fn number(self) -> u32 {
        self as u32
    }

    fn from_number(n: u32) -> Option<Self> {
        Some(match n {
            0 => CmpOp::Eq,
            1 => CmpOp::Neq,
            2 => CmpOp::Lt,
            3 => CmpOp::Lte,
            4 => CmpOp::Gt,
            5 => CmpOp::Gte,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NumgenKind {
    /// Round robin: 0, 1, ..., modulus-1, 0, ...
    Incremental,
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatKind {
    Snat,
    Dnat,
}

/// NAT range flags (`NF_NAT_RANGE_*`) a user may ask for.
pub mod nat_flags {
    pub const RANDOM: u32 = 1 << 2;
    pub const PERSISTENT: u32 = 1 << 3;
    pub const FULLY_RANDOM: u32 = 1 << 4;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectKind {
    /// ICMP (ip) or ICMPv6 (ip6) destination unreachable with this code;
    /// 3 is port unreachable for ICMP, 4 for ICMPv6.
    IcmpUnreachable(u8),
    TcpReset,
    /// Family-independent code (inet tables): 1 is port unreachable.
    IcmpxUnreachable(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DynsetOp {
    Add,
    Update,
    Delete,
}

/// One nf_tables expression.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    /// Load `len` bytes of the packet at `base + offset` into `dreg`.
    Payload {
        dreg: Register,
        base: PayloadBase,
        offset: u32,
        len: u32,
    },
    /// Load metadata into `dreg`.
    Meta {
        key: MetaKey,
        dreg: Register,
    },
    /// Set metadata (e.g. the packet mark) from `sreg`.
    MetaSet {
        key: MetaKey,
        sreg: Register,
    },
    /// Compare `sreg` with `data`; the rule stops here when false.
    Cmp {
        sreg: Register,
        op: CmpOp,
        data: Vec<u8>,
    },
    /// `dreg = (sreg & mask) ^ xor` over `mask.len()` bytes.
    Bitwise {
        sreg: Register,
        dreg: Register,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// Look `sreg` up in a set; with `dreg`, a map lookup that loads the
    /// value (or, with [`Register::VERDICT`], applies the verdict).
    Lookup {
        set: String,
        sreg: Register,
        dreg: Option<Register>,
        invert: bool,
    },
    /// A number generator: `offset + (next value mod modulus)` into `dreg`.
    Numgen {
        dreg: Register,
        kind: NumgenKind,
        modulus: u32,
        offset: u32,
    },
    /// Jenkins hash of `len` bytes from `sreg`: `offset + (jhash mod
    /// modulus)` into `dreg` (e.g. source-hash scheduling).
    Jhash {
        sreg: Register,
        dreg: Register,
        len: u32,
        modulus: u32,
        seed: u32,
        offset: u32,
    },
    /// Load a constant into `dreg`.
    Immediate {
        dreg: Register,
        data: Vec<u8>,
    },
    /// A verdict (an immediate into the verdict register).
    Verdict(Verdict),
    /// Load conntrack state into `dreg`.
    Ct {
        key: CtKey,
        dreg: Register,
        /// For keys that differ per direction (addresses, ports).
        direction: Option<u8>,
    },
    /// Set conntrack state (e.g. the mark) from `sreg`.
    CtSet {
        key: CtKey,
        sreg: Register,
    },
    /// Source or destination NAT to the address (and port) in registers.
    Nat {
        kind: NatKind,
        family: Family,
        addr_min: Option<Register>,
        addr_max: Option<Register>,
        proto_min: Option<Register>,
        proto_max: Option<Register>,
        flags: u32,
    },
    /// Source NAT to the outgoing interface's address.
    Masquerade {
        flags: u32,
        proto_min: Option<Register>,
        proto_max: Option<Register>,
    },
    Reject(RejectKind),
    Counter {
        packets: u64,
        bytes: u64,
    },
    /// Add or update an element of a set from the packet path
    /// (e.g. session affinity).
    Dynset {
        set: String,
        op: DynsetOp,
        sreg_key: Register,
        sreg_data: Option<Register>,
        timeout: Option<Duration>,
    },
    /// An expression this crate does not model, as the kernel sent it.
    Other {
        name: String,
        data: Vec<u8>,
    },
}

impl Expr {
    /// The expression's kernel name.
    pub fn name(&self) -> &str {
        match self {
            Expr::Payload { .. } => "payload",
            Expr::Meta { .. } | Expr::MetaSet { .. } => "meta",
            Expr::Cmp { .. } => "cmp",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Lookup { .. } => "lookup",
            Expr::Numgen { .. } => "numgen",
            Expr::Jhash { .. } => "hash",
            Expr::Immediate { .. } | Expr::Verdict(_) => "immediate",
            Expr::Ct { .. } | Expr::CtSet { .. } => "ct",
            Expr::Nat { .. } => "nat",
            Expr::Masquerade { .. } => "masq",
            Expr::Reject(_) => "reject",
            Expr::Counter { .. } => "counter",
            Expr::Dynset { .. } => "dynset",
            Expr::Other { name, .. } => name,
        }
    }

    /// Writes one `NFTA_LIST_ELEM` of a rule's expression list.
    pub(crate) fn encode(&self, w: &mut Writer<'_>) -> Result<(), TooLarge> {
        let elem = w.begin_nest(sys::NFTA_LIST_ELEM);
        w.str(sys::NFTA_EXPR_NAME, self.name())?;
        if let Expr::Other { data, .. } = self {
            // Already a list of attributes, as the kernel dumped it.
            let nest = w.begin_nest(sys::NFTA_EXPR_DATA);
            w.buf.extend_from_slice(data);
            w.end_nest(nest)?;
            return w.end_nest(elem);
        }
        let data = w.begin_nest(sys::NFTA_EXPR_DATA);
        self.encode_data(w)?;
        w.end_nest(data)?;
        w.end_nest(elem)
    }

    fn encode_data(&self, w: &mut Writer<'_>) -> Result<(), TooLarge> {
        match self {
            Expr::Payload {
                dreg,
                base,
                offset,
                len,
            } => {
                w.u32(sys::NFTA_PAYLOAD_DREG, dreg.number());
                w.u32(sys::NFTA_PAYLOAD_BASE, *base as u32);
                w.u32(sys::NFTA_PAYLOAD_OFFSET, *offset);
                w.u32(sys::NFTA_PAYLOAD_LEN, *len);
            }
            Expr::Meta { key, dreg } => {
                w.u32(sys::NFTA_META_KEY, key.number());
                w.u32(sys::NFTA_META_DREG, dreg.number());
            }
            Expr::MetaSet { key, sreg } => {
                w.u32(sys::NFTA_META_KEY, key.number());
                w.u32(sys::NFTA_META_SREG, sreg.number());
            }
            Expr::Cmp { sreg, op, data } => {
                w.u32(sys::NFTA_CMP_SREG, sreg.number());
                w.u32(sys::NFTA_CMP_OP, op.number());
                value_data(w, sys::NFTA_CMP_DATA, data)?;
            }
            Expr::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
            } => {
                w.u32(sys::NFTA_BITWISE_SREG, sreg.number());
                w.u32(sys::NFTA_BITWISE_DREG, dreg.number());
                w.u32(sys::NFTA_BITWISE_LEN, mask.len() as u32);
                value_data(w, sys::NFTA_BITWISE_MASK, mask)?;
                value_data(w, sys::NFTA_BITWISE_XOR, xor)?;
            }
            Expr::Lookup {
                set,
                sreg,
                dreg,
                invert,
            } => {
                w.u32(sys::NFTA_LOOKUP_SREG, sreg.number());
                if let Some(dreg) = dreg {
                    w.u32(sys::NFTA_LOOKUP_DREG, dreg.number());
                }
                w.str(sys::NFTA_LOOKUP_SET, set)?;
                if *invert {
                    w.u32(sys::NFTA_LOOKUP_FLAGS, sys::NFT_LOOKUP_F_INV);
                }
            }
            Expr::Numgen {
                dreg,
                kind,
                modulus,
                offset,
            } => {
                w.u32(sys::NFTA_NG_DREG, dreg.number());
                w.u32(sys::NFTA_NG_MODULUS, *modulus);
                w.u32(sys::NFTA_NG_TYPE, *kind as u32);
                w.u32(sys::NFTA_NG_OFFSET, *offset);
            }
            Expr::Jhash {
                sreg,
                dreg,
                len,
                modulus,
                seed,
                offset,
            } => {
                w.u32(sys::NFTA_HASH_SREG, sreg.number());
                w.u32(sys::NFTA_HASH_DREG, dreg.number());
                w.u32(sys::NFTA_HASH_LEN, *len);
                w.u32(sys::NFTA_HASH_MODULUS, *modulus);
                w.u32(sys::NFTA_HASH_SEED, *seed);
                w.u32(sys::NFTA_HASH_OFFSET, *offset);
                w.u32(sys::NFTA_HASH_TYPE, sys::NFT_HASH_JENKINS);
            }
            Expr::Immediate { dreg, data } => {
                w.u32(sys::NFTA_IMMEDIATE_DREG, dreg.number());
                value_data(w, sys::NFTA_IMMEDIATE_DATA, data)?;
            }
            Expr::Verdict(verdict) => {
                w.u32(sys::NFTA_IMMEDIATE_DREG, sys::NFT_REG_VERDICT);
                verdict_data(w, sys::NFTA_IMMEDIATE_DATA, verdict)?;
            }
            Expr::Ct {
                key,
                dreg,
                direction,
            } => {
                w.u32(sys::NFTA_CT_KEY, key.number());
                w.u32(sys::NFTA_CT_DREG, dreg.number());
                if let Some(direction) = direction {
                    w.u8(sys::NFTA_CT_DIRECTION, *direction);
                }
            }
            Expr::CtSet { key, sreg } => {
                w.u32(sys::NFTA_CT_KEY, key.number());
                w.u32(sys::NFTA_CT_SREG, sreg.number());
            }
            Expr::Nat {
                kind,
                family,
                addr_min,
                addr_max,
                proto_min,
                proto_max,
                flags,
            } => {
                let kind = match kind {
                    NatKind::Snat => sys::NFT_NAT_SNAT,
                    NatKind::Dnat => sys::NFT_NAT_DNAT,
                };
                w.u32(sys::NFTA_NAT_TYPE, kind);
                w.u32(sys::NFTA_NAT_FAMILY, family.nfproto() as u32);
                let regs = [
                    (sys::NFTA_NAT_REG_ADDR_MIN, addr_min),
                    (sys::NFTA_NAT_REG_ADDR_MAX, addr_max),
                    (sys::NFTA_NAT_REG_PROTO_MIN, proto_min),
                    (sys::NFTA_NAT_REG_PROTO_MAX, proto_max),
                ];
                for (attr, reg) in regs {
                    if let Some(reg) = reg {
                        w.u32(attr, reg.number());
                    }
                }
                if *flags != 0 {
                    w.u32(sys::NFTA_NAT_FLAGS, *flags);
                }
            }
            Expr::Masquerade {
                flags,
                proto_min,
                proto_max,
            } => {
                if *flags != 0 {
                    w.u32(sys::NFTA_MASQ_FLAGS, *flags);
                }
                if let Some(reg) = proto_min {
                    w.u32(sys::NFTA_MASQ_REG_PROTO_MIN, reg.number());
                }
                if let Some(reg) = proto_max {
                    w.u32(sys::NFTA_MASQ_REG_PROTO_MAX, reg.number());
                }
            }
            Expr::Reject(kind) => {
                let (kind, code) = match *kind {
                    RejectKind::IcmpUnreachable(code) => (sys::NFT_REJECT_ICMP_UNREACH, code),
                    RejectKind::TcpReset => (sys::NFT_REJECT_TCP_RST, 0),
                    RejectKind::IcmpxUnreachable(code) => (sys::NFT_REJECT_ICMPX_UNREACH, code),
                };
                w.u32(sys::NFTA_REJECT_TYPE, kind);
                w.u8(sys::NFTA_REJECT_ICMP_CODE, code);
            }
            Expr::Counter { packets, bytes } => {
                w.u64(sys::NFTA_COUNTER_BYTES, *bytes);
                w.u64(sys::NFTA_COUNTER_PACKETS, *packets);
            }
            Expr::Dynset {
                set,
                op,
                sreg_key,
                sreg_data,
                timeout,
            } => {
                w.str(sys::NFTA_DYNSET_SET_NAME, set)?;
                w.u32(sys::NFTA_DYNSET_OP, *op as u32);
                w.u32(sys::NFTA_DYNSET_SREG_KEY, sreg_key.number());
                if let Some(reg) = sreg_data {
                    w.u32(sys::NFTA_DYNSET_SREG_DATA, reg.number());
                }
                if let Some(timeout) = timeout {
                    w.u64(sys::NFTA_DYNSET_TIMEOUT, timeout.as_millis() as u64);
                }
            }
            Expr::Other { .. } => unreachable!("encoded by the caller"),
        }
        Ok(())
    }
}

/// `NFTA_DATA_VALUE` nested in `attr_type`.
pub(crate) fn value_data(w: &mut Writer<'_>, attr_type: u16, data: &[u8]) -> Result<(), TooLarge> {
    let nest = w.begin_nest(attr_type);
    w.attr(sys::NFTA_DATA_VALUE, data)?;
    w.end_nest(nest)
}

/// `NFTA_DATA_VERDICT` nested in `attr_type`.
pub(crate) fn verdict_data(
    w: &mut Writer<'_>,
    attr_type: u16,
    verdict: &Verdict,
) -> Result<(), TooLarge> {
    let outer = w.begin_nest(attr_type);
    let inner = w.begin_nest(sys::NFTA_DATA_VERDICT);
    w.u32(sys::NFTA_VERDICT_CODE, verdict.code() as u32);
    if let Some(chain) = verdict.chain() {
        w.str(sys::NFTA_VERDICT_CHAIN, chain)?;
    }
    w.end_nest(inner)?;
    w.end_nest(outer)
}

mod decode;

pub(crate) use decode::{Attrs, decode_value_data, decode_verdict_data};

#[cfg(test)]
mod tests;
