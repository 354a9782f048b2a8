//! Encoding of the objects whose layout depends on their definition:
//! sets (type numbers, lengths, concatenation description) and their
//! elements (keys and values padded per field).

use crate::nftables::expr::{value_data, verdict_data};
use crate::nftables::set::{ElementData, MapData, Set, SetElement, SetFlags};
use crate::nftables::sys;
use crate::nftables::value::{DataType, format_fields, type_id, wire_len};
use crate::nftables::wire::{self, TooLarge, Writer};

/// Largest value nf_tables accepts in a key or map value
/// (`NFT_DATA_VALUE_MAXLEN`).
const MAX_VALUE_LEN: usize = 64;

/// Why a message could not be encoded.
pub(super) enum Invalid {
    TooLarge,
    Reason(String),
}

impl From<TooLarge> for Invalid {
    fn from(_: TooLarge) -> Self {
        Invalid::TooLarge
    }
}

pub(super) fn udata(
    w: &mut Writer<'_>,
    attr: u16,
    udata_type: u8,
    comment: &str,
) -> Result<(), TooLarge> {
    let mut data = Vec::with_capacity(comment.len() + 3);
    wire::udata_put_str(&mut data, udata_type, comment);
    w.attr(attr, &data)
}

fn check_fields(what: &str, fields: &[DataType]) -> Result<(), Invalid> {
    let len = wire_len(fields);
    if fields.is_empty() || fields.iter().any(|f| f.is_empty()) {
        return Err(Invalid::Reason(format!("{what} has no or empty fields")));
    }
    if len > MAX_VALUE_LEN {
        return Err(Invalid::Reason(format!(
            "{what} {} is {len} bytes, more than {MAX_VALUE_LEN}",
            format_fields(fields)
        )));
    }
    Ok(())
}

pub(super) fn encode_set(w: &mut Writer<'_>, set: &Set, set_id: u32) -> Result<(), Invalid> {
    check_fields("key", &set.key)?;
    let concat = set.key.len() > 1;
    let mut flags = set.flags.bits();
    if set.data.is_some() {
        flags |= sys::NFT_SET_MAP;
    }
    let pipapo = concat && set.flags.contains(SetFlags::INTERVAL);
    if pipapo {
        flags |= sys::NFT_SET_CONCAT;
    }
    w.str(sys::NFTA_SET_TABLE, &set.table)?;
    w.str(sys::NFTA_SET_NAME, &set.name)?;
    w.u32(sys::NFTA_SET_FLAGS, flags);
    w.u32(sys::NFTA_SET_KEY_TYPE, type_id(&set.key));
    w.u32(sys::NFTA_SET_KEY_LEN, wire_len(&set.key) as u32);
    match &set.data {
        None => {}
        Some(MapData::Verdict) => {
            w.u32(sys::NFTA_SET_DATA_TYPE, sys::NFT_DATA_VERDICT);
            w.u32(sys::NFTA_SET_DATA_LEN, 0);
        }
        Some(MapData::Value(fields)) => {
            check_fields("map value", fields)?;
            w.u32(sys::NFTA_SET_DATA_TYPE, type_id(fields));
            w.u32(sys::NFTA_SET_DATA_LEN, wire_len(fields) as u32);
        }
    }
    if let Some(timeout) = set.timeout {
        w.u64(sys::NFTA_SET_TIMEOUT, timeout.as_millis() as u64);
    }
    w.u32(sys::NFTA_SET_ID, set_id);
    if pipapo || set.size.is_some() {
        let desc = w.begin_nest(sys::NFTA_SET_DESC);
        if let Some(size) = set.size {
            w.u32(sys::NFTA_SET_DESC_SIZE, size);
        }
        if pipapo {
            // The kernel's pipapo set needs each field's unpadded length.
            let list = w.begin_nest(sys::NFTA_SET_DESC_CONCAT);
            for field in &set.key {
                let elem = w.begin_nest(sys::NFTA_LIST_ELEM);
                w.u32(sys::NFTA_SET_FIELD_LEN, field.len() as u32);
                w.end_nest(elem)?;
            }
            w.end_nest(list)?;
        }
        w.end_nest(desc)?;
    }
    if let Some(comment) = &set.comment {
        udata(
            w,
            sys::NFTA_SET_USERDATA,
            sys::NFTNL_UDATA_SET_COMMENT,
            comment,
        )?;
    }
    Ok(())
}

pub(super) fn encode_element(
    w: &mut Writer<'_>,
    set: &Set,
    element: &SetElement,
    with_data: bool,
) -> Result<(), Invalid> {
    let elem = w.begin_nest(sys::NFTA_LIST_ELEM);
    let mut value = Vec::with_capacity(MAX_VALUE_LEN);
    element
        .key
        .encode(&set.key, &mut value)
        .map_err(Invalid::Reason)?;
    value_data(w, sys::NFTA_SET_ELEM_KEY, &value)?;
    if let Some(end) = &element.key_end {
        value.clear();
        end.encode(&set.key, &mut value).map_err(Invalid::Reason)?;
        value_data(w, sys::NFTA_SET_ELEM_KEY_END, &value)?;
    }
    if with_data && !element.interval_end {
        match (&set.data, &element.data) {
            (None, None) => {}
            (Some(MapData::Verdict), Some(ElementData::Verdict(verdict))) => {
                verdict_data(w, sys::NFTA_SET_ELEM_DATA, verdict)?;
            }
            (Some(MapData::Value(fields)), Some(ElementData::Value(data))) => {
                value.clear();
                data.encode(fields, &mut value).map_err(Invalid::Reason)?;
                value_data(w, sys::NFTA_SET_ELEM_DATA, &value)?;
            }
            (None, Some(_)) => {
                return Err(Invalid::Reason("a set element cannot have data".into()));
            }
            (Some(MapData::Verdict), _) => {
                return Err(Invalid::Reason(
                    "a verdict map element needs a verdict".into(),
                ));
            }
            (Some(MapData::Value(fields)), _) => {
                return Err(Invalid::Reason(format!(
                    "a map element needs a {} value",
                    format_fields(fields)
                )));
            }
        }
    }
    if element.interval_end {
        w.u32(sys::NFTA_SET_ELEM_FLAGS, sys::NFT_SET_ELEM_INTERVAL_END);
    }
    if with_data {
        if let Some(timeout) = element.timeout {
            w.u64(sys::NFTA_SET_ELEM_TIMEOUT, timeout.as_millis() as u64);
        }
        if let Some(comment) = &element.comment {
            udata(
                w,
                sys::NFTA_SET_ELEM_USERDATA,
                sys::NFTNL_UDATA_SET_ELEM_COMMENT,
                comment,
            )?;
        }
    }
    w.end_nest(elem)?;
    Ok(())
}
