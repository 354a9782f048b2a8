//! Decoding expressions from rule dumps. The kernel fills in some fields
//! by itself (NAT range flags, `max` registers equal to `min`); they are
//! normalised away so a decoded rule equals the rule that was sent.

use std::time::Duration;

use super::{
    CmpOp, CtKey, DynsetOp, Expr, MetaKey, NatKind, NumgenKind, PayloadBase, Register, RejectKind,
};
use crate::nftables::objects::{Family, Verdict};
use crate::nftables::sys;
use crate::nftables::wire;

impl Expr {
    /// Decodes one `NFTA_LIST_ELEM` payload. Expressions this crate does
    /// not model, or cannot read, come back as [`Expr::Other`].
    pub(crate) fn decode(elem: &[u8]) -> Expr {
        let mut name = String::new();
        let mut data: &[u8] = &[];
        for (attr, payload) in wire::attrs(elem) {
            match attr {
                sys::NFTA_EXPR_NAME => name = wire::string(payload),
                sys::NFTA_EXPR_DATA => data = payload,
                _ => {}
            }
        }
        Self::decode_data(&name, data).unwrap_or_else(|| Expr::Other {
            name,
            data: data.to_vec(),
        })
    }

    pub(super) fn decode_data(name: &str, data: &[u8]) -> Option<Expr> {
        let a = Attrs::parse(data);
        let reg = |t| a.u32(t).map(Register::from_number);
        Some(match name {
            "payload" => Expr::Payload {
                dreg: reg(sys::NFTA_PAYLOAD_DREG)?,
                base: match a.u32(sys::NFTA_PAYLOAD_BASE)? {
                    0 => PayloadBase::LinkLayer,
                    1 => PayloadBase::Network,
                    2 => PayloadBase::Transport,
                    3 => PayloadBase::Inner,
                    _ => return None,
                },
                offset: a.u32(sys::NFTA_PAYLOAD_OFFSET)?,
                len: a.u32(sys::NFTA_PAYLOAD_LEN)?,
            },
            "meta" => {
                let key = MetaKey::from_number(a.u32(sys::NFTA_META_KEY)?);
                match reg(sys::NFTA_META_DREG) {
                    Some(dreg) => Expr::Meta { key, dreg },
                    None => Expr::MetaSet {
                        key,
                        sreg: reg(sys::NFTA_META_SREG)?,
                    },
                }
            }
            "cmp" => Expr::Cmp {
                sreg: reg(sys::NFTA_CMP_SREG)?,
                op: CmpOp::from_number(a.u32(sys::NFTA_CMP_OP)?)?,
                data: a.value(sys::NFTA_CMP_DATA)?,
            },
            "bitwise" => {
                if a.u32(sys::NFTA_BITWISE_OP)
                    .unwrap_or(sys::NFT_BITWISE_MASK_XOR)
                    != sys::NFT_BITWISE_MASK_XOR
                {
                    return None;
                }
                Expr::Bitwise {
                    sreg: reg(sys::NFTA_BITWISE_SREG)?,
                    dreg: reg(sys::NFTA_BITWISE_DREG)?,
                    mask: a.value(sys::NFTA_BITWISE_MASK)?,
                    xor: a.value(sys::NFTA_BITWISE_XOR)?,
                }
            }
            "lookup" => Expr::Lookup {
                set: a.string(sys::NFTA_LOOKUP_SET)?,
                sreg: reg(sys::NFTA_LOOKUP_SREG)?,
                dreg: reg(sys::NFTA_LOOKUP_DREG),
                invert: a.u32(sys::NFTA_LOOKUP_FLAGS).unwrap_or(0) & sys::NFT_LOOKUP_F_INV != 0,
            },
            "numgen" => Expr::Numgen {
                dreg: reg(sys::NFTA_NG_DREG)?,
                kind: match a.u32(sys::NFTA_NG_TYPE)? {
                    0 => NumgenKind::Incremental,
                    1 => NumgenKind::Random,
                    _ => return None,
                },
                modulus: a.u32(sys::NFTA_NG_MODULUS)?,
                offset: a.u32(sys::NFTA_NG_OFFSET).unwrap_or(0),
            },
            "hash"
                if a.u32(sys::NFTA_HASH_TYPE).unwrap_or(sys::NFT_HASH_JENKINS)
                    == sys::NFT_HASH_JENKINS =>
            {
                Expr::Jhash {
                    sreg: reg(sys::NFTA_HASH_SREG)?,
                    dreg: reg(sys::NFTA_HASH_DREG)?,
                    len: a.u32(sys::NFTA_HASH_LEN)?,
                    modulus: a.u32(sys::NFTA_HASH_MODULUS)?,
                    seed: a.u32(sys::NFTA_HASH_SEED).unwrap_or(0),
                    offset: a.u32(sys::NFTA_HASH_OFFSET).unwrap_or(0),
                }
            }
            "immediate" => {
                let dreg = reg(sys::NFTA_IMMEDIATE_DREG)?;
                let data = a.get(sys::NFTA_IMMEDIATE_DATA)?;
                if dreg == Register::VERDICT {
                    Expr::Verdict(decode_verdict_data(data)?)
                } else {
                    Expr::Immediate {
                        dreg,
                        data: decode_value_data(data)?,
                    }
                }
            }
            "ct" => {
                let key = CtKey::from_number(a.u32(sys::NFTA_CT_KEY)?);
                match reg(sys::NFTA_CT_DREG) {
                    Some(dreg) => Expr::Ct {
                        key,
                        dreg,
                        direction: a
                            .get(sys::NFTA_CT_DIRECTION)
                            .and_then(|d| d.first().copied()),
                    },
                    None => Expr::CtSet {
                        key,
                        sreg: reg(sys::NFTA_CT_SREG)?,
                    },
                }
            }
            "nat" => {
                let addr_min = reg(sys::NFTA_NAT_REG_ADDR_MIN);
                let proto_min = reg(sys::NFTA_NAT_REG_PROTO_MIN);
                // The kernel fills in max = min and derives range flags.
                let addr_max = reg(sys::NFTA_NAT_REG_ADDR_MAX).filter(|r| Some(*r) != addr_min);
                let proto_max = reg(sys::NFTA_NAT_REG_PROTO_MAX).filter(|r| Some(*r) != proto_min);
                Expr::Nat {
                    kind: match a.u32(sys::NFTA_NAT_TYPE)? {
                        sys::NFT_NAT_SNAT => NatKind::Snat,
                        sys::NFT_NAT_DNAT => NatKind::Dnat,
                        _ => return None,
                    },
                    family: Family::from_nfproto(u8::try_from(a.u32(sys::NFTA_NAT_FAMILY)?).ok()?)?,
                    addr_min,
                    addr_max,
                    proto_min,
                    proto_max,
                    flags: a.u32(sys::NFTA_NAT_FLAGS).unwrap_or(0)
                        & !(sys::NF_NAT_RANGE_MAP_IPS | sys::NF_NAT_RANGE_PROTO_SPECIFIED),
                }
            }
            "masq" => {
                let proto_min = reg(sys::NFTA_MASQ_REG_PROTO_MIN);
                Expr::Masquerade {
                    flags: a.u32(sys::NFTA_MASQ_FLAGS).unwrap_or(0)
                        & !sys::NF_NAT_RANGE_PROTO_SPECIFIED,
                    proto_min,
                    proto_max: reg(sys::NFTA_MASQ_REG_PROTO_MAX).filter(|r| Some(*r) != proto_min),
                }
            }
            "reject" => {
                let code = a
                    .get(sys::NFTA_REJECT_ICMP_CODE)
                    .and_then(|c| c.first().copied())
                    .unwrap_or(0);
                Expr::Reject(match a.u32(sys::NFTA_REJECT_TYPE)? {
                    sys::NFT_REJECT_ICMP_UNREACH => RejectKind::IcmpUnreachable(code),
                    sys::NFT_REJECT_TCP_RST => RejectKind::TcpReset,
                    sys::NFT_REJECT_ICMPX_UNREACH => RejectKind::IcmpxUnreachable(code),
                    _ => return None,
                })
            }
            "counter" => Expr::Counter {
                packets: a.u64(sys::NFTA_COUNTER_PACKETS).unwrap_or(0),
                bytes: a.u64(sys::NFTA_COUNTER_BYTES).unwrap_or(0),
            },
            "dynset" => Expr::Dynset {
                set: a.string(sys::NFTA_DYNSET_SET_NAME)?,
                op: match a.u32(sys::NFTA_DYNSET_OP)? {
                    0 => DynsetOp::Add,
                    1 => DynsetOp::Update,
                    2 => DynsetOp::Delete,
                    _ => return None,
                },
                sreg_key: reg(sys::NFTA_DYNSET_SREG_KEY)?,
                sreg_data: reg(sys::NFTA_DYNSET_SREG_DATA),
                timeout: a
                    .u64(sys::NFTA_DYNSET_TIMEOUT)
                    .filter(|&ms| ms != 0)
                    .map(Duration::from_millis),
            },
            _ => return None,
        })
    }
}

pub(crate) fn decode_value_data(nested: &[u8]) -> Option<Vec<u8>> {
    wire::attrs(nested)
        .find(|(t, _)| *t == sys::NFTA_DATA_VALUE)
        .map(|(_, v)| v.to_vec())
}

pub(crate) fn decode_verdict_data(nested: &[u8]) -> Option<Verdict> {
    let (_, verdict) = wire::attrs(nested).find(|(t, _)| *t == sys::NFTA_DATA_VERDICT)?;
    let a = Attrs::parse(verdict);
    Verdict::from_code(
        a.u32(sys::NFTA_VERDICT_CODE)? as i32,
        a.string(sys::NFTA_VERDICT_CHAIN),
    )
}

/// The attributes of one nest, by type (later duplicates win).
pub(crate) struct Attrs<'a> {
    by_type: [Option<&'a [u8]>; 24],
}

impl<'a> Attrs<'a> {
    pub(crate) fn parse(data: &'a [u8]) -> Self {
        let mut by_type = [None; 24];
        for (t, payload) in wire::attrs(data) {
            if let Some(slot) = by_type.get_mut(t as usize) {
                *slot = Some(payload);
            }
        }
        Attrs { by_type }
    }

    pub(crate) fn get(&self, attr_type: u16) -> Option<&'a [u8]> {
        self.by_type.get(attr_type as usize).copied().flatten()
    }

    pub(crate) fn u32(&self, attr_type: u16) -> Option<u32> {
        self.get(attr_type).and_then(wire::be_u32)
    }

    pub(crate) fn u64(&self, attr_type: u16) -> Option<u64> {
        self.get(attr_type).and_then(wire::be_u64)
    }

    pub(crate) fn string(&self, attr_type: u16) -> Option<String> {
        self.get(attr_type).map(wire::string)
    }

    fn value(&self, attr_type: u16) -> Option<Vec<u8>> {
        self.get(attr_type).and_then(decode_value_data)
    }
}
