use super::*;
use crate::nftables::wire;

#[test]
fn registers_use_the_canonical_numbers() {
    assert_eq!(Register::r32(0), Register::R1);
    assert_eq!(Register::r32(4).number(), 2);
    assert_eq!(Register::r32(1).number(), 9); // NFT_REG32_01
    assert_eq!(Register::R1.after(4).number(), 9);
    assert_eq!(Register::R1.after(16), Register::R2);
    assert_eq!(Register::from_number(8), Register::R1);
    assert_eq!(Register::VERDICT.slot(), None);
}

fn roundtrip(expr: Expr) {
    let mut buf = Vec::new();
    expr.encode(&mut Writer::new(&mut buf)).expect("fits");
    let (t, elem) = wire::attrs(&buf).next().expect("one element");
    assert_eq!(t, sys::NFTA_LIST_ELEM);
    assert_eq!(Expr::decode(elem), expr);
}

#[test]
fn every_expression_decodes_to_itself() {
    let exprs = [
        Expr::Payload {
            dreg: Register::R1,
            base: PayloadBase::Network,
            offset: 16,
            len: 4,
        },
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: Register::r32(1),
        },
        Expr::MetaSet {
            key: MetaKey::Mark,
            sreg: Register::R1,
        },
        Expr::Cmp {
            sreg: Register::R1,
            op: CmpOp::Neq,
            data: vec![6],
        },
        Expr::Bitwise {
            sreg: Register::R1,
            dreg: Register::R1,
            mask: vec![6, 0, 0, 0],
            xor: vec![0; 4],
        },
        Expr::Lookup {
            set: "svc".into(),
            sreg: Register::R1,
            dreg: Some(Register::VERDICT),
            invert: false,
        },
        Expr::Lookup {
            set: "allowed".into(),
            sreg: Register::R1,
            dreg: None,
            invert: true,
        },
        Expr::Numgen {
            dreg: Register::r32(1),
            kind: NumgenKind::Random,
            modulus: 5,
            offset: 0,
        },
        Expr::Immediate {
            dreg: Register::R1,
            data: vec![0, 0x40, 0, 0],
        },
        Expr::Jhash {
            sreg: Register::R1,
            dreg: Register::r32(9),
            len: 4,
            modulus: 60,
            seed: 0x5eed,
            offset: 0,
        },
        Expr::Verdict(Verdict::Jump("svc-web".into())),
        Expr::Verdict(Verdict::Accept),
        Expr::Verdict(Verdict::Drop),
        Expr::Verdict(Verdict::Goto("svc-api".into())),
        Expr::Verdict(Verdict::Return),
        Expr::Verdict(Verdict::Continue),
        Expr::Ct {
            key: CtKey::State,
            dreg: Register::R1,
            direction: None,
        },
        Expr::CtSet {
            key: CtKey::Mark,
            sreg: Register::R1,
        },
        Expr::Nat {
            kind: NatKind::Dnat,
            family: Family::Ip,
            addr_min: Some(Register::R1),
            addr_max: None,
            proto_min: Some(Register::r32(1)),
            proto_max: None,
            flags: 0,
        },
        Expr::Masquerade {
            flags: nat_flags::FULLY_RANDOM,
            proto_min: None,
            proto_max: None,
        },
        Expr::Reject(RejectKind::TcpReset),
        Expr::Reject(RejectKind::IcmpUnreachable(3)),
        Expr::Counter {
            packets: 0,
            bytes: 0,
        },
        Expr::Dynset {
            set: "affinity".into(),
            op: DynsetOp::Update,
            sreg_key: Register::R1,
            sreg_data: Some(Register::R2),
            timeout: Some(Duration::from_secs(10800)),
        },
    ];
    for expr in exprs {
        roundtrip(expr);
    }
}

#[test]
fn kernel_filled_nat_fields_are_normalised() {
    // What the kernel dumps for `dnat ip addr reg 1 proto reg 9`:
    // max registers repeated and MAP_IPS | PROTO_SPECIFIED set.
    let mut buf = Vec::new();
    let mut w = Writer::new(&mut buf);
    w.u32(sys::NFTA_NAT_TYPE, sys::NFT_NAT_DNAT);
    w.u32(sys::NFTA_NAT_FAMILY, 2);
    w.u32(sys::NFTA_NAT_REG_ADDR_MIN, 1);
    w.u32(sys::NFTA_NAT_REG_ADDR_MAX, 1);
    w.u32(sys::NFTA_NAT_REG_PROTO_MIN, 9);
    w.u32(sys::NFTA_NAT_REG_PROTO_MAX, 9);
    w.u32(sys::NFTA_NAT_FLAGS, 3);
    assert_eq!(
        Expr::decode_data("nat", &buf),
        Some(Expr::Nat {
            kind: NatKind::Dnat,
            family: Family::Ip,
            addr_min: Some(Register::R1),
            addr_max: None,
            proto_min: Some(Register::r32(1)),
            proto_max: None,
            flags: 0,
        })
    );
}

#[test]
fn unknown_expressions_are_kept_raw() {
    let mut buf = Vec::new();
    let mut w = Writer::new(&mut buf);
    w.str(sys::NFTA_EXPR_NAME, "fib").expect("fits");
    w.attr(sys::NFTA_EXPR_DATA, &[1, 2, 3, 4]).expect("fits");
    assert_eq!(
        Expr::decode(&buf),
        Expr::Other {
            name: "fib".into(),
            data: vec![1, 2, 3, 4]
        }
    );
}
