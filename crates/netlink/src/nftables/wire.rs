//! Netlink framing for nfnetlink: message headers, attributes (TLVs,
//! nested or not) and the reverse, iterating over what the kernel sends.
//!
//! Layout (netlink(7), nfnetlink.h): a 16-byte `nlmsghdr` (length, type,
//! flags, sequence, port id; host byte order), a 4-byte `nfgenmsg`
//! (family, version, resource id in big endian), then attributes. Each
//! attribute is a 4-byte header (length including the header, type) and
//! its payload, padded to 4 bytes. nf_tables integers are big endian.

use super::sys;

/// Rounds up to the 4-byte netlink alignment.
pub(crate) const fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// An attribute or message grew past what its length field can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooLarge;

/// Appends netlink messages and attributes to a byte buffer.
///
/// Messages and nests are opened (returning their start offset) and closed
/// (patching their length). Sequence numbers are patched when the batch is
/// sent, so encoding does not depend on the connection.
pub(crate) struct Writer<'a> {
    pub(crate) buf: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut Vec<u8>) -> Self {
        Writer { buf }
    }

    /// Starts an nfnetlink message; returns its offset for [`Self::end_message`].
    pub(crate) fn begin_message(
        &mut self,
        msg_type: u16,
        flags: u16,
        seq: u32,
        family: u8,
        res_id: u16,
    ) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched
        self.buf.extend_from_slice(&msg_type.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        self.buf.push(family);
        self.buf.push(sys::NFNETLINK_V0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    pub(crate) fn end_message(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    pub(crate) fn attr(&mut self, attr_type: u16, payload: &[u8]) -> Result<(), TooLarge> {
        let len = 4 + payload.len();
        let len16 = u16::try_from(len).map_err(|_| TooLarge)?;
        self.buf.extend_from_slice(&len16.to_ne_bytes());
        self.buf.extend_from_slice(&attr_type.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
        Ok(())
    }

    pub(crate) fn u32(&mut self, attr_type: u16, value: u32) {
        self.attr(attr_type, &value.to_be_bytes())
            .expect("a 4-byte attribute fits");
    }

    pub(crate) fn u64(&mut self, attr_type: u16, value: u64) {
        self.attr(attr_type, &value.to_be_bytes())
            .expect("an 8-byte attribute fits");
    }

    pub(crate) fn u8(&mut self, attr_type: u16, value: u8) {
        self.attr(attr_type, &[value])
            .expect("a 1-byte attribute fits");
    }

    /// A NUL-terminated string, as the kernel's `NLA_STRING` policies expect.
    pub(crate) fn str(&mut self, attr_type: u16, value: &str) -> Result<(), TooLarge> {
        let len = 4 + value.len() + 1;
        let len16 = u16::try_from(len).map_err(|_| TooLarge)?;
        self.buf.extend_from_slice(&len16.to_ne_bytes());
        self.buf.extend_from_slice(&attr_type.to_ne_bytes());
        self.buf.extend_from_slice(value.as_bytes());
        self.buf.push(0);
        self.pad();
        Ok(())
    }

    /// Opens a nested attribute (flagged `NLA_F_NESTED`, as libmnl does).
    pub(crate) fn begin_nest(&mut self, attr_type: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(attr_type | sys::NLA_F_NESTED).to_ne_bytes());
        start
    }

    pub(crate) fn end_nest(&mut self, start: usize) -> Result<(), TooLarge> {
        let len = u16::try_from(self.buf.len() - start).map_err(|_| TooLarge)?;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        Ok(())
    }

    /// Size of the nest opened at `start`, so far.
    pub(crate) fn nest_len(&self, start: usize) -> usize {
        self.buf.len() - start
    }

    fn pad(&mut self) {
        let padded = align(self.buf.len());
        self.buf.resize(padded, 0);
    }
}

/// One received netlink message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Message<'a> {
    pub(crate) msg_type: u16,
    pub(crate) flags: u16,
    pub(crate) seq: u32,
    /// Everything after the 16-byte header.
    pub(crate) payload: &'a [u8],
}

/// Splits a datagram into netlink messages; stops at the first malformed one.
pub(crate) fn messages(mut data: &[u8]) -> impl Iterator<Item = Message<'_>> {
    std::iter::from_fn(move || {
        if data.len() < sys::NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes(data[0..4].try_into().ok()?) as usize;
        if len < sys::NLMSG_HDRLEN || len > data.len() {
            return None;
        }
        let message = Message {
            msg_type: u16::from_ne_bytes(data[4..6].try_into().ok()?),
            flags: u16::from_ne_bytes(data[6..8].try_into().ok()?),
            seq: u32::from_ne_bytes(data[8..12].try_into().ok()?),
            payload: &data[sys::NLMSG_HDRLEN..len],
        };
        data = &data[align(len).min(data.len())..];
        Some(message)
    })
}

/// Iterates the attributes in `data`, yielding (type without flags, payload).
pub(crate) fn attrs(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let attr_type = u16::from_ne_bytes([data[2], data[3]]) & sys::NLA_TYPE_MASK;
        if len < 4 || len > data.len() {
            return None;
        }
        let payload = &data[4..len];
        data = &data[align(len).min(data.len())..];
        Some((attr_type, payload))
    })
}

pub(crate) fn be_u32(payload: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(payload.get(..4)?.try_into().ok()?))
}

pub(crate) fn be_u64(payload: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(payload.get(..8)?.try_into().ok()?))
}

pub(crate) fn ne_u32(payload: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(payload.get(..4)?.try_into().ok()?))
}

/// A NUL-terminated (or not) string attribute.
pub(crate) fn string(payload: &[u8]) -> String {
    let end = payload
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(payload.len());
    String::from_utf8_lossy(&payload[..end]).into_owned()
}

/// nft's user-data TLVs (libnftnl `udata`): one byte type, one byte length.
pub(crate) fn udata_put_str(out: &mut Vec<u8>, udata_type: u8, value: &str) {
    // nft stores comments with their terminating NUL and caps them so the
    // length fits the one-byte field.
    let bytes = value.as_bytes();
    let len = bytes.len().min(254);
    out.push(udata_type);
    out.push((len + 1) as u8);
    out.extend_from_slice(&bytes[..len]);
    out.push(0);
}

pub(crate) fn udata_get_str(data: &[u8], udata_type: u8) -> Option<String> {
    let mut rest = data;
    while rest.len() >= 2 {
        let (t, len) = (rest[0], rest[1] as usize);
        let value = rest.get(2..2 + len)?;
        if t == udata_type {
            return Some(string(value));
        }
        rest = &rest[2 + len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nests_flagged() {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        w.str(1, "t").expect("fits");
        let nest = w.begin_nest(4);
        w.u32(1, 2);
        w.end_nest(nest).expect("fits");
        assert_eq!(
            buf,
            [
                6, 0, 1, 0, b't', 0, 0, 0, // "t\0" padded
                12, 0, 4, 0x80, // nested, type 4
                8, 0, 1, 0, 0, 0, 0, 2, // big-endian 2
            ]
        );
        let parsed: Vec<_> = attrs(&buf).collect();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1].0, 4);
        assert_eq!(be_u32(attrs(parsed[1].1).next().expect("inner").1), Some(2));
    }

    #[test]
    fn malformed_input_ends_iteration() {
        assert_eq!(attrs(&[200, 0, 1, 0]).count(), 0);
        assert_eq!(messages(&[1, 2, 3]).count(), 0);
    }

    #[test]
    fn udata_comment_roundtrip() {
        let mut out = Vec::new();
        udata_put_str(&mut out, 0, "hello");
        assert_eq!(out, b"\x00\x06hello\x00");
        assert_eq!(udata_get_str(&out, 0).as_deref(), Some("hello"));
        assert_eq!(udata_get_str(&out, 7), None);
    }
}
