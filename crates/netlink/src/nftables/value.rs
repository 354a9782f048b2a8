//! Typed values: the types of set keys and map values (single fields or
//! concatenations) and the values themselves, as nf_tables lays them out.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::sys;

/// The type of one field of a set key or map value. nft's type numbers
/// are sent with the set so `nft list ruleset` prints it naturally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Ipv4Addr,
    Ipv6Addr,
    EtherAddr,
    /// An IP protocol number (`meta l4proto`), one byte.
    InetProto,
    /// A port, two bytes in network order (`th dport`).
    InetService,
    /// A 32-bit value in host order, as `meta mark`, `ct mark` and
    /// `numgen` produce: the natural type for ids and bucket numbers.
    Mark,
    IfIndex,
    /// An interface name, 16 bytes NUL-padded.
    IfName,
    /// An integer of the given number of bytes.
    Integer(u8),
}

impl DataType {
    /// Bytes one value of this type takes (before concatenation padding).
    pub fn len(self) -> usize {
        match self {
            DataType::Ipv4Addr | DataType::Mark | DataType::IfIndex => 4,
            DataType::Ipv6Addr | DataType::IfName => 16,
            DataType::EtherAddr => 6,
            DataType::InetProto => 1,
            DataType::InetService => 2,
            DataType::Integer(bytes) => bytes as usize,
        }
    }

    /// Never true: every type has a size. Present for clippy's sake.
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    pub(crate) fn type_id(self) -> u32 {
        match self {
            DataType::Ipv4Addr => sys::TYPE_IPADDR,
            DataType::Ipv6Addr => sys::TYPE_IP6ADDR,
            DataType::EtherAddr => sys::TYPE_ETHERADDR,
            DataType::InetProto => sys::TYPE_INET_PROTOCOL,
            DataType::InetService => sys::TYPE_INET_SERVICE,
            DataType::Mark => sys::TYPE_MARK,
            DataType::IfIndex => sys::TYPE_IFINDEX,
            DataType::IfName => sys::TYPE_IFNAME,
            DataType::Integer(_) => sys::TYPE_INTEGER,
        }
    }

    fn from_type_id(id: u32, len: usize) -> Option<Self> {
        let fixed = match id {
            sys::TYPE_IPADDR => DataType::Ipv4Addr,
            sys::TYPE_IP6ADDR => DataType::Ipv6Addr,
            sys::TYPE_ETHERADDR => DataType::EtherAddr,
            sys::TYPE_INET_PROTOCOL => DataType::InetProto,
            sys::TYPE_INET_SERVICE => DataType::InetService,
            sys::TYPE_MARK => DataType::Mark,
            sys::TYPE_IFINDEX => DataType::IfIndex,
            sys::TYPE_IFNAME => DataType::IfName,
            _ => return u8::try_from(len).ok().map(DataType::Integer),
        };
        Some(fixed)
    }

    fn name(self) -> &'static str {
        match self {
            DataType::Ipv4Addr => "ipv4_addr",
            DataType::Ipv6Addr => "ipv6_addr",
            DataType::EtherAddr => "ether_addr",
            DataType::InetProto => "inet_proto",
            DataType::InetService => "inet_service",
            DataType::Mark => "mark",
            DataType::IfIndex => "iface_index",
            DataType::IfName => "ifname",
            DataType::Integer(_) => "integer",
        }
    }

    fn format(self, bytes: &[u8], out: &mut String) {
        use std::fmt::Write;
        let _ = match (self, bytes.len()) {
            (DataType::Ipv4Addr, 4) => {
                write!(
                    out,
                    "{}",
                    Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])
                )
            }
            (DataType::Ipv6Addr, 16) => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(bytes);
                write!(out, "{}", Ipv6Addr::from(octets))
            }
            (DataType::InetProto, 1) => match bytes[0] {
                6 => write!(out, "tcp"),
                17 => write!(out, "udp"),
                132 => write!(out, "sctp"),
                other => write!(out, "{other}"),
            },
            (DataType::InetService, 2) => {
                write!(out, "{}", u16::from_be_bytes([bytes[0], bytes[1]]))
            }
            (DataType::Mark | DataType::IfIndex, 4) => write!(
                out,
                "{:#x}",
                u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
            ),
            (DataType::IfName, _) => {
                let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                write!(out, "\"{}\"", String::from_utf8_lossy(&bytes[..end]))
            }
            _ => {
                out.push_str("0x");
                bytes.iter().try_for_each(|b| write!(out, "{b:02x}"))
            }
        };
    }
}

/// The type of a set key or map value: one field, or a concatenation.
pub(crate) fn type_id(fields: &[DataType]) -> u32 {
    fields
        .iter()
        .fold(0, |id, field| (id << sys::TYPE_BITS) | field.type_id())
}

/// Bytes a key or value of these fields takes on the wire: a single field
/// as is, each field of a concatenation padded to a 32-bit register.
pub(crate) fn wire_len(fields: &[DataType]) -> usize {
    match fields {
        [single] => single.len(),
        _ => fields.iter().map(|f| super::wire::align(f.len())).sum(),
    }
}

/// Splits a type number from the kernel back into fields. `field_lens`
/// (from NFTA_SET_DESC_CONCAT) helps with integers, which have no fixed size.
pub(crate) fn fields_from_type(id: u32, total_len: usize, field_lens: &[usize]) -> Vec<DataType> {
    let mut ids = Vec::new();
    let mut rest = id;
    while rest != 0 {
        ids.push(rest & ((1 << sys::TYPE_BITS) - 1));
        rest >>= sys::TYPE_BITS;
    }
    ids.reverse();
    if ids.len() <= 1 {
        let id = ids.first().copied().unwrap_or(sys::TYPE_INTEGER);
        return DataType::from_type_id(id, total_len)
            .map(|t| vec![t])
            .unwrap_or_default();
    }
    let fields: Option<Vec<DataType>> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| DataType::from_type_id(id, field_lens.get(i).copied().unwrap_or(4)))
        .collect();
    match fields {
        Some(fields) if wire_len(&fields) == total_len => fields,
        // Unknown layout: keep the bytes as one opaque integer.
        _ => u8::try_from(total_len)
            .map(|len| vec![DataType::Integer(len)])
            .unwrap_or_default(),
    }
}

pub(crate) fn format_fields(fields: &[DataType]) -> String {
    fields
        .iter()
        .map(|f| f.name())
        .collect::<Vec<_>>()
        .join(" . ")
}

/// A key or map value: the fields' bytes back to back, unpadded, as the
/// builder methods append them. The set it goes into supplies the layout
/// (padding for concatenations) when it is encoded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value(Vec<u8>);

impl Value {
    pub fn new() -> Self {
        Value(Vec::new())
    }

    /// Raw bytes, for types without a builder method.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        Value(bytes.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn ipv4(mut self, addr: Ipv4Addr) -> Self {
        self.0.extend_from_slice(&addr.octets());
        self
    }

    pub fn ipv6(mut self, addr: Ipv6Addr) -> Self {
        self.0.extend_from_slice(&addr.octets());
        self
    }

    /// An IP protocol number (6 tcp, 17 udp, 132 sctp).
    pub fn inet_proto(mut self, proto: u8) -> Self {
        self.0.push(proto);
        self
    }

    /// A port, in network byte order.
    pub fn inet_service(mut self, port: u16) -> Self {
        self.0.extend_from_slice(&port.to_be_bytes());
        self
    }

    /// A 32-bit value in host byte order (mark, numgen bucket, id).
    pub fn mark(mut self, value: u32) -> Self {
        self.0.extend_from_slice(&value.to_ne_bytes());
        self
    }

    /// An interface name, NUL-padded to 16 bytes (longer names are cut).
    pub fn ifname(mut self, name: &str) -> Self {
        let mut bytes = [0u8; 16];
        let len = name.len().min(15);
        bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
        self.0.extend_from_slice(&bytes);
        self
    }

    pub fn bytes(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }

    /// Writes the wire form for `fields`, or says why it does not fit.
    pub(crate) fn encode(&self, fields: &[DataType], out: &mut Vec<u8>) -> Result<(), String> {
        let expected: usize = fields.iter().map(|f| f.len()).sum();
        if self.0.len() != expected {
            return Err(format!(
                "value has {} bytes, type {} needs {expected}",
                self.0.len(),
                format_fields(fields)
            ));
        }
        if fields.len() <= 1 {
            out.extend_from_slice(&self.0);
            return Ok(());
        }
        let mut at = 0;
        for field in fields {
            let len = field.len();
            out.extend_from_slice(&self.0[at..at + len]);
            out.resize(out.len() + super::wire::align(len) - len, 0);
            at += len;
        }
        Ok(())
    }

    /// The reverse of [`Self::encode`]; falls back to the raw bytes.
    pub(crate) fn decode(fields: &[DataType], wire: &[u8]) -> Value {
        if fields.len() <= 1 || wire.len() != wire_len(fields) {
            return Value(wire.to_vec());
        }
        let mut value = Vec::with_capacity(wire.len());
        let mut at = 0;
        for field in fields {
            value.extend_from_slice(&wire[at..at + field.len()]);
            at += super::wire::align(field.len());
        }
        Value(value)
    }

    /// Human-readable form for `fields`, like nft prints it.
    pub fn format(&self, fields: &[DataType]) -> String {
        let mut out = String::new();
        let expected: usize = fields.iter().map(|f| f.len()).sum();
        if expected != self.0.len() || fields.is_empty() {
            DataType::Integer(0).format(&self.0, &mut out);
            return out;
        }
        let mut at = 0;
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                out.push_str(" . ");
            }
            field.format(&self.0[at..at + field.len()], &mut out);
            at += field.len();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE_KEY: [DataType; 3] = [
        DataType::Ipv4Addr,
        DataType::InetProto,
        DataType::InetService,
    ];

    #[test]
    fn concatenated_type_ids_pack_six_bits_per_field() {
        // The numbers nft itself sends (seen with `nft --debug=mnl`).
        assert_eq!(type_id(&SERVICE_KEY), 0x730d);
        assert_eq!(type_id(&[DataType::Ipv4Addr, DataType::InetService]), 0x1cd);
        assert_eq!(wire_len(&SERVICE_KEY), 12);
        assert_eq!(wire_len(&[DataType::InetService]), 2);
        assert_eq!(fields_from_type(0x730d, 12, &[]), SERVICE_KEY.to_vec());
        assert_eq!(fields_from_type(7, 4, &[]), vec![DataType::Ipv4Addr]);
    }

    #[test]
    fn concatenations_pad_each_field_to_a_register() {
        let key = Value::new()
            .ipv4(Ipv4Addr::new(10, 96, 0, 1))
            .inet_proto(6)
            .inet_service(80);
        let mut wire = Vec::new();
        key.encode(&SERVICE_KEY, &mut wire).expect("fits");
        assert_eq!(wire, [10, 96, 0, 1, 6, 0, 0, 0, 0, 80, 0, 0]);
        assert_eq!(Value::decode(&SERVICE_KEY, &wire), key);
        assert_eq!(key.format(&SERVICE_KEY), "10.96.0.1 . tcp . 80");

        let port = Value::new().inet_service(443);
        let mut wire = Vec::new();
        port.encode(&[DataType::InetService], &mut wire)
            .expect("fits");
        assert_eq!(wire, [1, 187]);
    }

    #[test]
    fn wrong_sized_values_are_refused() {
        let mut wire = Vec::new();
        let err = Value::new()
            .ipv4(Ipv4Addr::LOCALHOST)
            .encode(&SERVICE_KEY, &mut wire)
            .expect_err("too short");
        assert!(
            err.contains("ipv4_addr . inet_proto . inet_service"),
            "{err}"
        );
    }
}
