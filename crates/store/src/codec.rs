//! On-disk encodings of stored objects and logged events.

use bytes::Bytes;

use crate::{EventType, StoreError};

/// Object table value: revision (u64 LE) followed by the JSON document.
pub(crate) fn encode_object(revision: u64, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + data.len());
    out.extend_from_slice(&revision.to_le_bytes());
    out.extend_from_slice(data);
    out
}

pub(crate) fn decode_object(raw: &[u8]) -> Result<(u64, Bytes), StoreError> {
    let (head, body) = split_u64(raw)?;
    Ok((head, Bytes::copy_from_slice(body)))
}

/// Event log value: type byte, key length (u32 LE), key, then the object.
pub(crate) fn encode_event(event_type: EventType, key: &str, object: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + key.len() + object.len());
    out.push(match event_type {
        EventType::Added => 0,
        EventType::Modified => 1,
        EventType::Deleted => 2,
    });
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(object);
    out
}

pub(crate) fn decode_event(raw: &[u8]) -> Result<(EventType, String, Bytes), StoreError> {
    let corrupt = || StoreError::Storage("corrupt event log entry".into());
    let (&tag, rest) = raw.split_first().ok_or_else(corrupt)?;
    let event_type = match tag {
        0 => EventType::Added,
        1 => EventType::Modified,
        2 => EventType::Deleted,
        _ => return Err(corrupt()),
    };
    let len_bytes: [u8; 4] = rest
        .get(..4)
        .ok_or_else(corrupt)?
        .try_into()
        .map_err(|_| corrupt())?;
    let key_len = u32::from_le_bytes(len_bytes) as usize;
    let key = rest.get(4..4 + key_len).ok_or_else(corrupt)?;
    let key = std::str::from_utf8(key).map_err(|_| corrupt())?.to_string();
    let object = Bytes::copy_from_slice(&rest[4 + key_len..]);
    Ok((event_type, key, object))
}

fn split_u64(raw: &[u8]) -> Result<(u64, &[u8]), StoreError> {
    let head: [u8; 8] = raw
        .get(..8)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| StoreError::Storage("corrupt object entry".into()))?;
    Ok((u64::from_le_bytes(head), &raw[8..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_round_trip() {
        let raw = encode_event(EventType::Deleted, "pods/default/a", b"{}");
        let (t, k, o) = decode_event(&raw).expect("decodes");
        assert_eq!(
            (t, k.as_str(), &o[..]),
            (EventType::Deleted, "pods/default/a", &b"{}"[..])
        );
        assert!(decode_event(&raw[..3]).is_err());
        assert!(decode_event(&[9, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn object_round_trip() {
        let raw = encode_object(42, b"{\"a\":1}");
        let (rv, data) = decode_object(&raw).expect("decodes");
        assert_eq!((rv, &data[..]), (42, &b"{\"a\":1}"[..]));
        assert!(decode_object(&raw[..4]).is_err());
    }
}
