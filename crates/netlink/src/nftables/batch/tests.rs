//! Byte-exact encodings. The expected bytes are what `nft --debug=mnl`
//! (nftables 1.0.6, libnftnl) sends for the same objects, minus the
//! attributes nft adds for its own bookkeeping (set user data for its
//! type hints, `NFTA_*_SET_ID` next to set names), which the kernel
//! does not need.
use std::net::Ipv4Addr;

use super::*;
use crate::nftables::{ChainType, Hook, Load, Register, Rule, Verdict, priority, value::DataType};

fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
        .collect()
}

/// The bytes of message `index`, sequence number still 0.
fn message(batch: &Batch, index: usize) -> &[u8] {
    let start = batch.messages[index].offset;
    let end = batch
        .messages
        .get(index + 1)
        .map(|m| m.offset)
        .unwrap_or(batch.buf.len());
    &batch.buf[start..end]
}

fn table() -> Table {
    Table::new(Family::Ip, "t")
}

#[test]
fn a_batch_is_framed_by_begin_and_end() {
    let mut batch = Batch::new();
    batch.add_table(&table());
    assert_eq!(
        batch.frame(100),
        hex(
            "14 00 00 00  10 00  01 00  64 00 00 00  00 00 00 00  00 00 00 0a
             24 00 00 00  00 0a  05 04  65 00 00 00  00 00 00 00  02 00 00 00
             06 00 01 00  74 00 00 00
             08 00 02 00  00 00 00 00
             14 00 00 00  11 00  01 00  66 00 00 00  00 00 00 00  00 00 00 0a"
        )
    );
}

#[test]
fn the_generation_guard_rides_on_batch_begin() {
    let mut batch = Batch::new();
    batch.add_table(&table()).expect_generation(7);
    assert_eq!(
        &batch.frame(1)[..28],
        hex(
            "1c 00 00 00  10 00  01 00  01 00 00 00  00 00 00 00  00 00 00 0a
             08 00 01 00  00 00 00 07"
        )
    );
}

#[test]
fn base_chain() {
    let mut batch = Batch::new();
    batch.add_chain(&Chain::base(
        &table(),
        "p",
        ChainType::Nat,
        Hook::Prerouting,
        priority::DSTNAT,
    ));
    assert_eq!(
        message(&batch, 0),
        hex(
            "48 00 00 00  03 0a  01 04  00 00 00 00  00 00 00 00  02 00 00 00
             06 00 01 00  74 00 00 00
             06 00 03 00  70 00 00 00
             08 00 07 00  6e 61 74 00
             08 00 05 00  00 00 00 01
             14 00 04 80  08 00 01 00  00 00 00 00  08 00 02 00  ff ff ff 9c"
        )
    );
}

#[test]
fn concatenated_map_to_address_and_port() {
    let mut batch = Batch::new();
    batch.add_set(&Set::map(
        &table(),
        "ep",
        [
            DataType::Ipv4Addr,
            DataType::InetProto,
            DataType::InetService,
        ],
        [DataType::Ipv4Addr, DataType::InetService],
    ));
    assert_eq!(
        message(&batch, 0),
        hex(
            "54 00 00 00  09 0a  01 04  00 00 00 00  00 00 00 00  02 00 00 00
             06 00 01 00  74 00 00 00
             07 00 02 00  65 70 00 00
             08 00 03 00  00 00 00 08
             08 00 04 00  00 00 73 0d
             08 00 05 00  00 00 00 0c
             08 00 06 00  00 00 01 cd
             08 00 07 00  00 00 00 08
             08 00 0a 00  00 00 00 01"
        )
    );
}

#[test]
fn verdict_map_element_with_comment() {
    let set = Set::verdict_map(
        &table(),
        "svc",
        [
            DataType::Ipv4Addr,
            DataType::InetProto,
            DataType::InetService,
        ],
    );
    let element = SetElement::new(
        Value::new()
            .ipv4(Ipv4Addr::new(10, 0, 0, 1))
            .inet_proto(6)
            .inet_service(80),
    )
    .verdict(Verdict::Accept)
    .comment("ec");
    let mut batch = Batch::new();
    batch.add_elements(&set, [&element]);
    assert_eq!(
        message(&batch, 0),
        hex(
            "5c 00 00 00  0c 0a  01 04  00 00 00 00  00 00 00 00  02 00 00 00
             06 00 01 00  74 00 00 00
             08 00 02 00  73 76 63 00
             38 00 03 80
               34 00 01 80
                 14 00 01 80  10 00 01 00  0a 00 00 01  06 00 00 00  00 50 00 00
                 10 00 02 80  0c 00 02 80  08 00 01 00  00 00 00 01
                 09 00 06 00  00 03 65 63  00 00 00 00"
        )
    );
}

#[test]
fn verdict_map_dispatch_rule() {
    let chain = Chain::new(&table(), "c");
    let rule = Rule::new()
        .load_concat(Register::R1, &[Load::IpDaddr, Load::L4Proto, Load::ThDport])
        .lookup_vmap("svc", Register::R1);
    let mut batch = Batch::new();
    batch.add_rule(&chain, &rule);
    assert_eq!(
        message(&batch, 0),
        hex(
            "e0 00 00 00  06 0a  01 0c  00 00 00 00  00 00 00 00  02 00 00 00
             06 00 01 00  74 00 00 00
             06 00 02 00  63 00 00 00
             bc 00 04 80
               34 00 01 80  0c 00 01 00  70 61 79 6c  6f 61 64 00
                 24 00 02 80  08 00 01 00  00 00 00 01  08 00 02 00  00 00 00 01
                              08 00 03 00  00 00 00 10  08 00 04 00  00 00 00 04
               24 00 01 80  09 00 01 00  6d 65 74 61  00 00 00 00
                 14 00 02 80  08 00 02 00  00 00 00 10  08 00 01 00  00 00 00 09
               34 00 01 80  0c 00 01 00  70 61 79 6c  6f 61 64 00
                 24 00 02 80  08 00 01 00  00 00 00 0a  08 00 02 00  00 00 00 02
                              08 00 03 00  00 00 00 02  08 00 04 00  00 00 00 02
               2c 00 01 80  0b 00 01 00  6c 6f 6f 6b  75 70 00 00
                 1c 00 02 80  08 00 02 00  00 00 00 01  08 00 03 00  00 00 00 00
                              08 00 01 00  73 76 63 00"
        )
    );
}

#[test]
fn large_element_lists_are_split_below_the_attribute_limit() {
    let set = Set::new(&table(), "s", [DataType::Ipv4Addr]);
    let elements: Vec<SetElement> = (0..10_000u32)
        .map(|i| SetElement::new(Value::new().ipv4(Ipv4Addr::from(i))))
        .collect();
    let mut batch = Batch::new();
    batch.add_elements(&set, &elements);
    assert!(batch.len() > 1);
    let mut total = 0;
    for index in 0..batch.len() {
        let body = &message(&batch, index)[sys::NLMSG_HDRLEN + 4..];
        let (_, list) = wire::attrs(body)
            .find(|(t, _)| *t == sys::NFTA_SET_ELEM_LIST_ELEMENTS)
            .expect("elements");
        assert!(list.len() + 4 <= u16::MAX as usize);
        total += wire::attrs(list).count();
    }
    assert_eq!(total, elements.len());
}

#[test]
fn invalid_objects_poison_the_batch() {
    let set = Set::new(&table(), "s", [DataType::Ipv4Addr]);
    let mut batch = Batch::new();
    batch
        .add_elements(&set, &[SetElement::new(Value::new().inet_service(1))])
        .add_table(&table());
    let error = batch.encode_error().expect("poisoned").to_string();
    assert_eq!(
        error,
        "nf_tables: cannot encode add elements of set ip t s: element 0x0001: \
         value has 2 bytes, type ipv4_addr needs 4"
    );
    let mut batch = Batch::new();
    batch.add_elements(
        &set,
        &[SetElement::new(Value::new().ipv4(Ipv4Addr::LOCALHOST)).verdict(Verdict::Accept)],
    );
    assert!(batch.encode_error().is_some());
}
