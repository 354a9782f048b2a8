//! Rules and a builder that reads like the nft statement it produces:
//!
//! ```
//! use ferry_netlink::nftables::{Register, Rule};
//! // ip daddr . meta l4proto . th dport vmap @service-ips
//! let rule = Rule::new()
//!     .payload_ip_daddr(Register::R1)
//!     .meta_l4proto(Register::R1.after(4))
//!     .payload_th_dport(Register::R1.after(8))
//!     .lookup_vmap("service-ips", Register::R1)
//!     .comment("dispatch to services");
//! assert_eq!(rule.exprs.len(), 4);
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::expr::{
    CmpOp, CtKey, DynsetOp, Expr, MetaKey, NatKind, NumgenKind, PayloadBase, Register, RejectKind,
};
use super::objects::{Family, Verdict};

/// One field loaded into a register, for building concatenated keys with
/// [`Rule::load_concat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    IpSaddr,
    IpDaddr,
    Ip6Saddr,
    Ip6Daddr,
    /// `meta l4proto`: the transport protocol, for ip and ip6 alike.
    L4Proto,
    ThSport,
    ThDport,
    Mark,
    IifName,
    OifName,
}

impl Load {
    fn len(self) -> usize {
        match self {
            Load::IpSaddr | Load::IpDaddr | Load::Mark => 4,
            Load::Ip6Saddr | Load::Ip6Daddr | Load::IifName | Load::OifName => 16,
            Load::L4Proto => 1,
            Load::ThSport | Load::ThDport => 2,
        }
    }

    fn expr(self, dreg: Register) -> Expr {
        let payload = |base, offset, len| Expr::Payload {
            dreg,
            base,
            offset,
            len,
        };
        let meta = |key| Expr::Meta { key, dreg };
        match self {
            Load::IpSaddr => payload(PayloadBase::Network, 12, 4),
            Load::IpDaddr => payload(PayloadBase::Network, 16, 4),
            Load::Ip6Saddr => payload(PayloadBase::Network, 8, 16),
            Load::Ip6Daddr => payload(PayloadBase::Network, 24, 16),
            Load::ThSport => payload(PayloadBase::Transport, 0, 2),
            Load::ThDport => payload(PayloadBase::Transport, 2, 2),
            Load::L4Proto => meta(MetaKey::L4Proto),
            Load::Mark => meta(MetaKey::Mark),
            Load::IifName => meta(MetaKey::IifName),
            Load::OifName => meta(MetaKey::OifName),
        }
    }
}

/// A rule: expressions evaluated in order, and an optional comment
/// (stored as nft's user data, so `nft list` shows it and a dataplane can
/// use it to recognise its rules).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Rule {
    pub exprs: Vec<Expr>,
    pub comment: Option<String>,
}

impl Rule {
    pub fn new() -> Self {
        Rule::default()
    }

    pub fn expr(mut self, expr: Expr) -> Self {
        self.exprs.push(expr);
        self
    }

    pub fn comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }

    /// Equal to `other` apart from counter values, which the kernel keeps
    /// counting: the comparison a dataplane wants against a listed rule.
    pub fn same_as(&self, other: &Rule) -> bool {
        fn zeroed(e: &Expr) -> Expr {
            match e {
                Expr::Counter { .. } => Expr::Counter {
                    packets: 0,
                    bytes: 0,
                },
                other => other.clone(),
            }
        }
        self.comment == other.comment
            && self.exprs.len() == other.exprs.len()
            && self
                .exprs
                .iter()
                .zip(&other.exprs)
                .all(|(a, b)| zeroed(a) == zeroed(b))
    }

    // ---- loads ----

    pub fn payload(self, base: PayloadBase, offset: u32, len: u32, dreg: Register) -> Self {
        self.expr(Expr::Payload {
            dreg,
            base,
            offset,
            len,
        })
    }

    pub fn load(self, field: Load, dreg: Register) -> Self {
        self.expr(field.expr(dreg))
    }

    /// Loads `fields` into consecutive registers from `start`, each field
    /// in its own 32-bit slot(s): the layout a concatenated set key has.
    pub fn load_concat(mut self, start: Register, fields: &[Load]) -> Self {
        let mut reg = start;
        for field in fields {
            self.exprs.push(field.expr(reg));
            reg = reg.after(field.len());
        }
        self
    }

    /// `ip saddr`. Header loads read raw offsets: in an inet table, match
    /// [`Self::match_nfproto`] first.
    pub fn payload_ip_saddr(self, dreg: Register) -> Self {
        self.load(Load::IpSaddr, dreg)
    }

    pub fn payload_ip_daddr(self, dreg: Register) -> Self {
        self.load(Load::IpDaddr, dreg)
    }

    /// `ip protocol` (for ip tables; `meta l4proto` works in every family).
    pub fn payload_ip_protocol(self, dreg: Register) -> Self {
        self.payload(PayloadBase::Network, 9, 1, dreg)
    }

    pub fn payload_ip6_saddr(self, dreg: Register) -> Self {
        self.load(Load::Ip6Saddr, dreg)
    }

    pub fn payload_ip6_daddr(self, dreg: Register) -> Self {
        self.load(Load::Ip6Daddr, dreg)
    }

    pub fn payload_th_sport(self, dreg: Register) -> Self {
        self.load(Load::ThSport, dreg)
    }

    pub fn payload_th_dport(self, dreg: Register) -> Self {
        self.load(Load::ThDport, dreg)
    }

    pub fn meta(self, key: MetaKey, dreg: Register) -> Self {
        self.expr(Expr::Meta { key, dreg })
    }

    pub fn meta_l4proto(self, dreg: Register) -> Self {
        self.meta(MetaKey::L4Proto, dreg)
    }

    pub fn meta_iifname(self, dreg: Register) -> Self {
        self.meta(MetaKey::IifName, dreg)
    }

    pub fn meta_oifname(self, dreg: Register) -> Self {
        self.meta(MetaKey::OifName, dreg)
    }

    pub fn meta_mark(self, dreg: Register) -> Self {
        self.meta(MetaKey::Mark, dreg)
    }

    pub fn ct(self, key: CtKey, dreg: Register) -> Self {
        self.expr(Expr::Ct {
            key,
            dreg,
            direction: None,
        })
    }

    pub fn immediate(self, dreg: Register, data: impl Into<Vec<u8>>) -> Self {
        self.expr(Expr::Immediate {
            dreg,
            data: data.into(),
        })
    }

    /// `numgen random mod modulus` into `dreg`.
    pub fn numgen_random(self, modulus: u32, dreg: Register) -> Self {
        self.numgen(NumgenKind::Random, modulus, 0, dreg)
    }

    /// `numgen inc mod modulus` (round robin) into `dreg`.
    pub fn numgen_inc(self, modulus: u32, dreg: Register) -> Self {
        self.numgen(NumgenKind::Incremental, modulus, 0, dreg)
    }

    /// `jhash <len bytes of sreg> mod modulus seed seed` into `dreg`.
    pub fn jhash(self, sreg: Register, len: u32, modulus: u32, seed: u32, dreg: Register) -> Self {
        self.expr(Expr::Jhash {
            sreg,
            dreg,
            len,
            modulus,
            seed,
            offset: 0,
        })
    }

    pub fn numgen(self, kind: NumgenKind, modulus: u32, offset: u32, dreg: Register) -> Self {
        self.expr(Expr::Numgen {
            dreg,
            kind,
            modulus,
            offset,
        })
    }

    // ---- comparisons and lookups ----

    pub fn cmp(self, sreg: Register, op: CmpOp, data: impl Into<Vec<u8>>) -> Self {
        self.expr(Expr::Cmp {
            sreg,
            op,
            data: data.into(),
        })
    }

    /// `dreg = (sreg & mask) ^ xor`.
    pub fn bitwise(
        self,
        sreg: Register,
        dreg: Register,
        mask: impl Into<Vec<u8>>,
        xor: impl Into<Vec<u8>>,
    ) -> Self {
        self.expr(Expr::Bitwise {
            sreg,
            dreg,
            mask: mask.into(),
            xor: xor.into(),
        })
    }

    /// Continues only if `sreg` is in the set.
    pub fn lookup(self, set: impl Into<String>, sreg: Register) -> Self {
        self.expr(Expr::Lookup {
            set: set.into(),
            sreg,
            dreg: None,
            invert: false,
        })
    }

    /// Continues only if `sreg` is not in the set.
    pub fn lookup_not(self, set: impl Into<String>, sreg: Register) -> Self {
        self.expr(Expr::Lookup {
            set: set.into(),
            sreg,
            dreg: None,
            invert: true,
        })
    }

    /// Looks `sreg` up in a map and loads the value into `dreg`; stops the
    /// rule when the key is absent.
    pub fn lookup_map(self, map: impl Into<String>, sreg: Register, dreg: Register) -> Self {
        self.expr(Expr::Lookup {
            set: map.into(),
            sreg,
            dreg: Some(dreg),
            invert: false,
        })
    }

    /// Looks `sreg` up in a verdict map and applies the verdict found.
    pub fn lookup_vmap(self, map: impl Into<String>, sreg: Register) -> Self {
        self.lookup_map(map, sreg, Register::VERDICT)
    }

    /// `meta l4proto == proto` (6 tcp, 17 udp, 132 sctp).
    pub fn match_l4proto(self, proto: u8) -> Self {
        self.meta_l4proto(Register::R1)
            .cmp(Register::R1, CmpOp::Eq, [proto])
    }

    /// `meta nfproto == family` (ip or ip6): in inet tables, put this
    /// before `ip`/`ip6` header loads, which read raw offsets.
    pub fn match_nfproto(self, family: Family) -> Self {
        self.meta(MetaKey::NfProto, Register::R1)
            .cmp(Register::R1, CmpOp::Eq, [family.nfproto()])
    }

    pub fn match_ip_saddr(self, addr: Ipv4Addr) -> Self {
        self.payload_ip_saddr(Register::R1)
            .cmp(Register::R1, CmpOp::Eq, addr.octets())
    }

    pub fn match_ip_daddr(self, addr: Ipv4Addr) -> Self {
        self.payload_ip_daddr(Register::R1)
            .cmp(Register::R1, CmpOp::Eq, addr.octets())
    }

    pub fn match_ip6_daddr(self, addr: Ipv6Addr) -> Self {
        self.payload_ip6_daddr(Register::R1)
            .cmp(Register::R1, CmpOp::Eq, addr.octets())
    }

    pub fn match_th_dport(self, port: u16) -> Self {
        self.payload_th_dport(Register::R1)
            .cmp(Register::R1, CmpOp::Eq, port.to_be_bytes())
    }

    /// `iifname == name` (exact, NUL-padded like nft does).
    pub fn match_iifname(self, name: &str) -> Self {
        self.meta_iifname(Register::R1)
            .cmp(Register::R1, CmpOp::Eq, ifname_bytes(name))
    }

    pub fn match_oifname(self, name: &str) -> Self {
        self.meta_oifname(Register::R1)
            .cmp(Register::R1, CmpOp::Eq, ifname_bytes(name))
    }

    /// `meta mark & mask == value`.
    pub fn match_mark(self, mask: u32, value: u32) -> Self {
        self.meta_mark(Register::R1)
            .bitwise(
                Register::R1,
                Register::R1,
                mask.to_ne_bytes(),
                0u32.to_ne_bytes(),
            )
            .cmp(Register::R1, CmpOp::Eq, value.to_ne_bytes())
    }

    /// `ct state` has any of `bits` ([`super::ct_state`]).
    pub fn match_ct_state(self, bits: u32) -> Self {
        self.match_ct_bits(CtKey::State, bits)
    }

    /// `ct status` has any of `bits` ([`super::ct_status`]).
    pub fn match_ct_status(self, bits: u32) -> Self {
        self.match_ct_bits(CtKey::Status, bits)
    }

    fn match_ct_bits(self, key: CtKey, bits: u32) -> Self {
        self.ct(key, Register::R1)
            .bitwise(
                Register::R1,
                Register::R1,
                bits.to_ne_bytes(),
                0u32.to_ne_bytes(),
            )
            .cmp(Register::R1, CmpOp::Neq, 0u32.to_ne_bytes())
    }

    // ---- statements ----

    pub fn counter(self) -> Self {
        self.expr(Expr::Counter {
            packets: 0,
            bytes: 0,
        })
    }

    /// `meta <key> set` from `sreg` (e.g. the mark).
    pub fn meta_set(self, key: MetaKey, sreg: Register) -> Self {
        self.expr(Expr::MetaSet { key, sreg })
    }

    /// `ct <key> set` from `sreg` (e.g. the connection mark).
    pub fn ct_set(self, key: CtKey, sreg: Register) -> Self {
        self.expr(Expr::CtSet { key, sreg })
    }

    /// `meta mark set value`.
    pub fn set_mark(self, value: u32) -> Self {
        self.immediate(Register::R1, value.to_ne_bytes())
            .expr(Expr::MetaSet {
                key: MetaKey::Mark,
                sreg: Register::R1,
            })
    }

    /// `meta mark set meta mark | bits`.
    pub fn or_mark(self, bits: u32) -> Self {
        self.meta_mark(Register::R1)
            .bitwise(
                Register::R1,
                Register::R1,
                (!bits).to_ne_bytes(),
                bits.to_ne_bytes(),
            )
            .expr(Expr::MetaSet {
                key: MetaKey::Mark,
                sreg: Register::R1,
            })
    }

    /// `ct mark set value`.
    pub fn set_ct_mark(self, value: u32) -> Self {
        self.immediate(Register::R1, value.to_ne_bytes())
            .expr(Expr::CtSet {
                key: CtKey::Mark,
                sreg: Register::R1,
            })
    }

    /// Destination NAT to the address in `addr` (and the port in `port`).
    /// `family` is the address family (ip or ip6) of the registers.
    pub fn dnat(self, family: Family, addr: Register, port: Option<Register>) -> Self {
        self.nat(NatKind::Dnat, family, addr, port)
    }

    pub fn snat(self, family: Family, addr: Register, port: Option<Register>) -> Self {
        self.nat(NatKind::Snat, family, addr, port)
    }

    fn nat(self, kind: NatKind, family: Family, addr: Register, port: Option<Register>) -> Self {
        self.expr(Expr::Nat {
            kind,
            family,
            addr_min: Some(addr),
            addr_max: None,
            proto_min: port,
            proto_max: None,
            flags: 0,
        })
    }

    /// Loads a constant IPv4 address and port and DNATs to them.
    pub fn dnat_to(self, addr: Ipv4Addr, port: Option<u16>) -> Self {
        let rule = self.immediate(Register::R1, addr.octets());
        match port {
            Some(port) => rule.immediate(Register::r32(1), port.to_be_bytes()).dnat(
                Family::Ip,
                Register::R1,
                Some(Register::r32(1)),
            ),
            None => rule.dnat(Family::Ip, Register::R1, None),
        }
    }

    pub fn masquerade(self) -> Self {
        self.masquerade_with(0)
    }

    /// Masquerade with [`super::nat_flags`] (e.g. fully random ports).
    pub fn masquerade_with(self, flags: u32) -> Self {
        self.expr(Expr::Masquerade {
            flags,
            proto_min: None,
            proto_max: None,
        })
    }

    pub fn reject_tcp_reset(self) -> Self {
        self.expr(Expr::Reject(RejectKind::TcpReset))
    }

    /// ICMP port unreachable (ip tables).
    pub fn reject_icmp_port_unreachable(self) -> Self {
        self.expr(Expr::Reject(RejectKind::IcmpUnreachable(3)))
    }

    /// ICMPv6 port unreachable (ip6 tables).
    pub fn reject_icmpv6_port_unreachable(self) -> Self {
        self.expr(Expr::Reject(RejectKind::IcmpUnreachable(4)))
    }

    /// Port unreachable in the packet's own ICMP flavour (inet tables).
    pub fn reject_icmpx_port_unreachable(self) -> Self {
        self.expr(Expr::Reject(RejectKind::IcmpxUnreachable(1)))
    }

    /// Adds or refreshes `key → data` in a dynamic set from the packet path.
    pub fn dynset_update(
        self,
        set: impl Into<String>,
        key: Register,
        data: Option<Register>,
        timeout: Option<Duration>,
    ) -> Self {
        self.expr(Expr::Dynset {
            set: set.into(),
            op: DynsetOp::Update,
            sreg_key: key,
            sreg_data: data,
            timeout,
        })
    }

    // ---- verdicts ----

    pub fn verdict(self, verdict: Verdict) -> Self {
        self.expr(Expr::Verdict(verdict))
    }

    pub fn accept(self) -> Self {
        self.verdict(Verdict::Accept)
    }

    pub fn drop(self) -> Self {
        self.verdict(Verdict::Drop)
    }

    pub fn jump(self, chain: impl Into<String>) -> Self {
        self.verdict(Verdict::Jump(chain.into()))
    }

    pub fn goto(self, chain: impl Into<String>) -> Self {
        self.verdict(Verdict::Goto(chain.into()))
    }
}

fn ifname_bytes(name: &str) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    let len = name.len().min(15);
    bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenated_loads_use_one_slot_per_field() {
        let rule =
            Rule::new().load_concat(Register::R1, &[Load::IpDaddr, Load::L4Proto, Load::ThDport]);
        let regs: Vec<u8> = rule
            .exprs
            .iter()
            .map(|e| match e {
                Expr::Payload { dreg, .. } | Expr::Meta { dreg, .. } => {
                    dreg.slot().expect("data register")
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(regs, [0, 1, 2]);
    }

    #[test]
    fn same_as_ignores_counter_values() {
        let desired = Rule::new().counter().accept();
        let mut live = desired.clone();
        live.exprs[0] = Expr::Counter {
            packets: 3,
            bytes: 180,
        };
        assert!(desired.same_as(&live));
        assert_ne!(desired, live);
        assert!(!desired.same_as(&Rule::new().counter().drop()));
    }
}
