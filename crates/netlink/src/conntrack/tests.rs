//! Encoding, decoding and matching, without a kernel.

use super::*;

const CTA_STATUS: u16 = 3;
const CTA_PROTO_ICMP_ID: u16 = 4;
const CTA_PROTO_ICMP_TYPE: u16 = 5;
const CTA_PROTO_ICMP_CODE: u16 = 6;

fn nest(attr_type: u16, build: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut inner = Vec::new();
    build(&mut inner);
    let mut out = Vec::new();
    put_attr(&mut out, attr_type | NLA_F_NESTED, &inner);
    out
}

/// A tuple nest as the kernel dumps it; `ports: None` writes ICMP's
/// id/type/code instead.
fn tuple_attr(
    attr_type: u16,
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    ports: Option<(u16, u16)>,
) -> Vec<u8> {
    nest(attr_type, |buf| {
        buf.extend(nest(CTA_TUPLE_IP, |ip| {
            put_attr(ip, CTA_IP_V4_SRC, &src);
            put_attr(ip, CTA_IP_V4_DST, &dst);
        }));
        buf.extend(nest(CTA_TUPLE_PROTO, |p| {
            put_attr(p, CTA_PROTO_NUM, &[proto]);
            match ports {
                Some((src, dst)) => {
                    put_attr(p, CTA_PROTO_SRC_PORT, &src.to_be_bytes());
                    put_attr(p, CTA_PROTO_DST_PORT, &dst.to_be_bytes());
                }
                None => {
                    put_attr(p, CTA_PROTO_ICMP_ID, &7u16.to_be_bytes());
                    put_attr(p, CTA_PROTO_ICMP_TYPE, &[8]);
                    put_attr(p, CTA_PROTO_ICMP_CODE, &[0]);
                }
            }
        }));
    })
}

/// A DNATed UDP flow: 10.0.0.5:40000 -> 10.96.0.10:53, answered by the
/// endpoint 10.244.1.7:5353.
fn dnat_payload(zone: Option<u16>) -> Vec<u8> {
    let mut payload = vec![AF_INET, NFNETLINK_V0, 0, 0];
    payload.extend(tuple_attr(
        CTA_TUPLE_ORIG,
        [10, 0, 0, 5],
        [10, 96, 0, 10],
        UDP,
        Some((40000, 53)),
    ));
    payload.extend(tuple_attr(
        CTA_TUPLE_REPLY,
        [10, 244, 1, 7],
        [10, 0, 0, 5],
        UDP,
        Some((5353, 40000)),
    ));
    put_attr(&mut payload, CTA_STATUS, &0x188u32.to_be_bytes());
    if let Some(zone) = zone {
        put_attr(&mut payload, CTA_ZONE, &zone.to_be_bytes());
    }
    payload
}

fn dnat_entry() -> Entry {
    Entry {
        original: Tuple {
            src: [10, 0, 0, 5].into(),
            dst: [10, 96, 0, 10].into(),
            protocol: UDP,
            src_port: 40000,
            dst_port: 53,
        },
        reply: Tuple {
            src: [10, 244, 1, 7].into(),
            dst: [10, 0, 0, 5].into(),
            protocol: UDP,
            src_port: 5353,
            dst_port: 40000,
        },
    }
}

/// A kernel message around `payload`.
fn message(msg_type: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
    out.extend_from_slice(&msg_type.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(align(out.len()), 0);
    out
}

#[test]
fn dump_request_asks_for_every_ipv4_entry() {
    let mut expected = Vec::new();
    expected.extend_from_slice(&20u32.to_ne_bytes());
    expected.extend_from_slice(&0x0101u16.to_ne_bytes()); // CTNETLINK, CT_GET
    expected.extend_from_slice(&0x0301u16.to_ne_bytes()); // REQUEST | DUMP
    expected.extend_from_slice(&7u32.to_ne_bytes());
    expected.extend_from_slice(&0u32.to_ne_bytes());
    expected.extend_from_slice(&[2, 0, 0, 0]); // AF_INET, v0, res_id
    assert_eq!(dump_request(7), expected);
}

#[test]
fn entries_decode_with_nat_and_zone() {
    let listed = decode_entry(&dnat_payload(None)).expect("an entry");
    assert_eq!(listed.entry, dnat_entry());
    assert_eq!(listed.zone, None);
    assert_eq!(
        listed.entry.to_string(),
        "udp 10.0.0.5:40000 -> 10.96.0.10:53 (reply 10.244.1.7:5353 -> 10.0.0.5:40000)"
    );
    let zoned = decode_entry(&dnat_payload(Some(3))).expect("an entry");
    assert_eq!(zoned.zone, Some(3));
}

#[test]
fn delete_request_sends_the_kernels_original_tuple_and_zone() {
    let listed = decode_entry(&dnat_payload(Some(3))).expect("an entry");
    let request = delete_request(9, &listed);
    let parsed: Vec<_> = messages(&request).collect();
    assert_eq!(parsed.len(), 1);
    let message = parsed[0];
    assert_eq!(message.msg_type, 0x0102); // CTNETLINK, CT_DELETE
    assert_eq!(message.flags, NLM_F_REQUEST | NLM_F_ACK);
    assert_eq!(message.seq, 9);
    assert_eq!(message.payload[..4], [AF_INET, 0, 0, 0]);
    let attributes: Vec<_> = attrs(&message.payload[4..]).collect();
    assert_eq!(attributes.len(), 2, "only the tuple and the zone");
    // Nested flag set on the tuple, as the kernel's policy expects.
    assert_eq!(
        u16::from_ne_bytes([message.payload[6], message.payload[7]]),
        CTA_TUPLE_ORIG | NLA_F_NESTED
    );
    assert_eq!(attributes[0], (CTA_TUPLE_ORIG, &listed.original_attr[..]));
    assert_eq!(decode_tuple(attributes[0].1), Some(dnat_entry().original));
    assert_eq!(attributes[1], (CTA_ZONE, &3u16.to_be_bytes()[..]));
    // Without a zone, the tuple alone: never a request without a tuple,
    // which the kernel would take as "flush everything".
    let unzoned = decode_entry(&dnat_payload(None)).expect("an entry");
    let request = delete_request(10, &unzoned);
    let message = messages(&request).next().expect("a message");
    let types: Vec<u16> = attrs(&message.payload[4..]).map(|(t, _)| t).collect();
    assert_eq!(types, [CTA_TUPLE_ORIG]);
}

#[test]
fn icmp_entries_have_no_ports_but_keep_their_tuple() {
    let mut payload = vec![AF_INET, 0, 0, 0];
    payload.extend(tuple_attr(
        CTA_TUPLE_ORIG,
        [10, 0, 0, 1],
        [10, 0, 0, 2],
        1,
        None,
    ));
    payload.extend(tuple_attr(
        CTA_TUPLE_REPLY,
        [10, 0, 0, 2],
        [10, 0, 0, 1],
        1,
        None,
    ));
    let listed = decode_entry(&payload).expect("an ICMP entry");
    assert_eq!(listed.entry.original.protocol, 1);
    assert_eq!(
        (
            listed.entry.original.src_port,
            listed.entry.original.dst_port
        ),
        (0, 0)
    );
    assert_eq!(
        listed.entry.original.to_string(),
        "icmp 10.0.0.1:0 -> 10.0.0.2:0"
    );
    // The ICMP id/type/code go back to the kernel on delete.
    assert!(
        attr(
            attr(&listed.original_attr, CTA_TUPLE_PROTO).expect("proto"),
            CTA_PROTO_ICMP_ID
        )
        .is_some()
    );
}

#[test]
fn incomplete_or_foreign_entries_are_skipped() {
    // No reply tuple.
    let mut payload = vec![AF_INET, 0, 0, 0];
    payload.extend(tuple_attr(
        CTA_TUPLE_ORIG,
        [1, 1, 1, 1],
        [2, 2, 2, 2],
        UDP,
        Some((1, 2)),
    ));
    assert_eq!(decode_entry(&payload), None);
    // Another family.
    let mut ipv6 = dnat_payload(None);
    ipv6[0] = libc::AF_INET6 as u8;
    assert_eq!(decode_entry(&ipv6), None);
    // A tuple without addresses.
    let mut no_ip = vec![AF_INET, 0, 0, 0];
    for t in [CTA_TUPLE_ORIG, CTA_TUPLE_REPLY] {
        no_ip.extend(nest(t, |buf| {
            buf.extend(nest(CTA_TUPLE_PROTO, |p| {
                put_attr(p, CTA_PROTO_NUM, &[UDP])
            }))
        }));
    }
    assert_eq!(decode_entry(&no_ip), None);
    assert_eq!(decode_entry(&[]), None);
    assert_eq!(decode_entry(&[AF_INET]), None);
}

#[test]
fn malformed_input_never_panics() {
    let valid = dnat_payload(Some(1));
    for len in 0..valid.len() {
        let _ = decode_entry(&valid[..len]);
    }
    // Deterministic byte flips (xorshift), including in lengths.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..20_000 {
        let mut data = valid.clone();
        for _ in 0..3 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let index = (state as usize) % data.len();
            data[index] = (state >> 32) as u8;
        }
        let _ = decode_entry(&data);
        let framed = message(message_type(IPCTNL_MSG_CT_NEW), 0, 1, &data);
        for m in messages(&framed) {
            let _ = error_code(m.payload);
        }
        let _ = messages(&data).count();
    }
    assert_eq!(attrs(&[200, 0, 1, 0]).count(), 0);
    assert_eq!(attrs(&[2, 0, 1, 0]).count(), 0, "length below the header");
    assert_eq!(messages(&[1, 2, 3]).count(), 0);
}

#[test]
fn dump_replies_split_into_entries_and_done() {
    let mut datagram = message(message_type(IPCTNL_MSG_CT_NEW), 0x2, 5, &dnat_payload(None));
    datagram.extend(message(NLMSG_DONE, 0x2, 5, &0i32.to_ne_bytes()));
    let parsed: Vec<_> = messages(&datagram).collect();
    assert_eq!(parsed.len(), 2);
    assert_eq!(parsed[0].msg_type, 0x0100);
    assert_eq!(
        decode_entry(parsed[0].payload).map(|l| l.entry),
        Some(dnat_entry())
    );
    assert_eq!(parsed[1].msg_type, NLMSG_DONE);
    assert_eq!(error_code(parsed[1].payload), Some(0));
    // An error reply: -ENOENT and the capped original header.
    let mut error = (-libc::ENOENT).to_ne_bytes().to_vec();
    error.extend_from_slice(&[0; NLMSG_HDRLEN]);
    assert_eq!(error_code(&error), Some(libc::ENOENT));
    assert_eq!(error_code(&i32::MIN.to_ne_bytes()), None);
    assert_eq!(error_code(&[0, 0]), None);
}

#[test]
fn filters_require_every_condition_they_set() {
    let entry = dnat_entry();
    assert!(Filter::default().matches(&entry));
    assert!(Filter::default().is_empty());

    let service = Filter {
        protocol: Some(UDP),
        original_dst: Some([10, 96, 0, 10].into()),
        original_dst_port: Some(53),
        ..Filter::default()
    };
    assert!(!service.is_empty());
    assert!(service.matches(&entry));
    assert!(
        !Filter {
            original_dst_port: Some(54),
            ..service
        }
        .matches(&entry)
    );
    assert!(
        !Filter {
            protocol: Some(TCP),
            ..service
        }
        .matches(&entry)
    );
    assert!(
        !Filter {
            original_dst: Some([10, 96, 0, 11].into()),
            ..service
        }
        .matches(&entry)
    );

    let endpoint = Filter {
        protocol: Some(UDP),
        original_dst: Some([10, 96, 0, 10].into()),
        reply_src: Some([10, 244, 1, 7].into()),
        reply_src_port: Some(5353),
        ..Filter::default()
    };
    assert!(endpoint.matches(&entry));
    assert!(
        !Filter {
            reply_src: Some([10, 244, 1, 8].into()),
            ..endpoint
        }
        .matches(&entry)
    );
    assert!(
        !Filter {
            reply_src_port: Some(53),
            ..endpoint
        }
        .matches(&entry)
    );
    // The original destination is the Service, not the endpoint.
    assert!(
        !Filter {
            original_dst: Some([10, 244, 1, 7].into()),
            ..endpoint
        }
        .matches(&entry)
    );
}
