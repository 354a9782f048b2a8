//! Decoding the kernel's dump replies into this crate's objects.
//!
//! Each function takes one reply message's payload (the 4-byte `nfgenmsg`
//! and the attributes) and returns `None` for what it cannot read, so a
//! listing skips an odd object rather than failing.

use std::time::Duration;

use super::expr::{Attrs, Expr, decode_value_data, decode_verdict_data};
use super::objects::{BaseChain, Chain, ChainType, Family, Hook, Policy, Table};
use super::rule::Rule;
use super::set::{ElementData, MapData, Set, SetElement, SetFlags};
use super::sys;
use super::value::{Value, fields_from_type};
use super::wire;

/// A rule as listed: where it is and the handle to delete or replace it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRule {
    pub chain: String,
    pub handle: u64,
    pub rule: Rule,
}

fn split(payload: &[u8]) -> Option<(Family, Attrs<'_>)> {
    let family = Family::from_nfproto(*payload.first()?)?;
    Some((family, Attrs::parse(payload.get(4..)?)))
}

fn comment(a: &Attrs<'_>, attr: u16, udata_type: u8) -> Option<String> {
    a.get(attr)
        .and_then(|data| wire::udata_get_str(data, udata_type))
}

pub(crate) fn table(payload: &[u8]) -> Option<Table> {
    let (family, a) = split(payload)?;
    Some(Table {
        family,
        name: a.string(sys::NFTA_TABLE_NAME)?,
        comment: comment(&a, sys::NFTA_TABLE_USERDATA, sys::NFTNL_UDATA_TABLE_COMMENT),
    })
}

pub(crate) fn chain(payload: &[u8]) -> Option<Chain> {
    let (family, a) = split(payload)?;
    let base = match a.get(sys::NFTA_CHAIN_HOOK) {
        Some(hook) => {
            let h = Attrs::parse(hook);
            Some(BaseChain {
                chain_type: ChainType::from_name(&a.string(sys::NFTA_CHAIN_TYPE)?)?,
                hook: Hook::from_number(h.u32(sys::NFTA_HOOK_HOOKNUM)?)?,
                priority: h.u32(sys::NFTA_HOOK_PRIORITY)? as i32,
                policy: match a.u32(sys::NFTA_CHAIN_POLICY).map(|p| p as i32) {
                    Some(sys::NF_DROP) => Policy::Drop,
                    _ => Policy::Accept,
                },
            })
        }
        None => None,
    };
    Some(Chain {
        family,
        table: a.string(sys::NFTA_CHAIN_TABLE)?,
        name: a.string(sys::NFTA_CHAIN_NAME)?,
        base,
        comment: comment(&a, sys::NFTA_CHAIN_USERDATA, sys::NFTNL_UDATA_CHAIN_COMMENT),
    })
}

/// A named set; anonymous sets (nft's inline `{ ... }`) are skipped.
pub(crate) fn set(payload: &[u8]) -> Option<Set> {
    let (family, a) = split(payload)?;
    let flags = a.u32(sys::NFTA_SET_FLAGS).unwrap_or(0);
    if flags & sys::NFT_SET_ANONYMOUS != 0 {
        return None;
    }
    let mut size = None;
    let mut field_lens = Vec::new();
    if let Some(desc) = a.get(sys::NFTA_SET_DESC) {
        let d = Attrs::parse(desc);
        size = d.u32(sys::NFTA_SET_DESC_SIZE);
        if let Some(concat) = d.get(sys::NFTA_SET_DESC_CONCAT) {
            for (_, field) in wire::attrs(concat) {
                if let Some(len) = Attrs::parse(field).u32(sys::NFTA_SET_FIELD_LEN) {
                    field_lens.push(len as usize);
                }
            }
        }
    }
    let key_len = a.u32(sys::NFTA_SET_KEY_LEN)? as usize;
    let key = fields_from_type(
        a.u32(sys::NFTA_SET_KEY_TYPE).unwrap_or(0),
        key_len,
        &field_lens,
    );
    let data = if flags & sys::NFT_SET_MAP != 0 {
        match a.u32(sys::NFTA_SET_DATA_TYPE)? {
            sys::NFT_DATA_VERDICT => Some(MapData::Verdict),
            id => {
                let len = a.u32(sys::NFTA_SET_DATA_LEN)? as usize;
                Some(MapData::Value(fields_from_type(id, len, &[])))
            }
        }
    } else {
        None
    };
    Some(Set {
        family,
        table: a.string(sys::NFTA_SET_TABLE)?,
        name: a.string(sys::NFTA_SET_NAME)?,
        key,
        data,
        flags: SetFlags::from_kernel(flags),
        timeout: a.u64(sys::NFTA_SET_TIMEOUT).map(Duration::from_millis),
        size,
        comment: comment(&a, sys::NFTA_SET_USERDATA, sys::NFTNL_UDATA_SET_COMMENT),
    })
}

/// The elements in one reply, decoded with `set`'s key and value types.
pub(crate) fn elements(set: &Set, payload: &[u8], out: &mut Vec<SetElement>) {
    let Some((_, a)) = split(payload) else { return };
    let Some(list) = a.get(sys::NFTA_SET_ELEM_LIST_ELEMENTS) else {
        return;
    };
    let value_fields = match &set.data {
        Some(MapData::Value(fields)) => fields.as_slice(),
        _ => &[],
    };
    for (_, elem) in wire::attrs(list) {
        let e = Attrs::parse(elem);
        let Some(key) = e.get(sys::NFTA_SET_ELEM_KEY).and_then(decode_value_data) else {
            continue; // a catch-all element has no key
        };
        let data = e
            .get(sys::NFTA_SET_ELEM_DATA)
            .and_then(|data| match &set.data {
                Some(MapData::Verdict) => decode_verdict_data(data).map(ElementData::Verdict),
                _ => decode_value_data(data)
                    .map(|value| ElementData::Value(Value::decode(value_fields, &value))),
            });
        let flags = e.u32(sys::NFTA_SET_ELEM_FLAGS).unwrap_or(0);
        out.push(SetElement {
            key: Value::decode(&set.key, &key),
            key_end: e
                .get(sys::NFTA_SET_ELEM_KEY_END)
                .and_then(decode_value_data)
                .map(|end| Value::decode(&set.key, &end)),
            data,
            interval_end: flags & sys::NFT_SET_ELEM_INTERVAL_END != 0,
            timeout: e.u64(sys::NFTA_SET_ELEM_TIMEOUT).map(Duration::from_millis),
            comment: comment(
                &e,
                sys::NFTA_SET_ELEM_USERDATA,
                sys::NFTNL_UDATA_SET_ELEM_COMMENT,
            ),
        });
    }
}

pub(crate) fn rule(payload: &[u8]) -> Option<ListedRule> {
    let (_, a) = split(payload)?;
    let exprs = a
        .get(sys::NFTA_RULE_EXPRESSIONS)
        .map(|list| wire::attrs(list).map(|(_, e)| Expr::decode(e)).collect())
        .unwrap_or_default();
    Some(ListedRule {
        chain: a.string(sys::NFTA_RULE_CHAIN)?,
        handle: a.u64(sys::NFTA_RULE_HANDLE)?,
        rule: Rule {
            exprs,
            comment: comment(&a, sys::NFTA_RULE_USERDATA, sys::NFTNL_UDATA_RULE_COMMENT),
        },
    })
}

pub(crate) fn generation(payload: &[u8]) -> Option<u32> {
    // The reply's family is AF_UNSPEC, so no `split` here.
    Attrs::parse(payload.get(4..)?).u32(sys::NFTA_GEN_ID)
}
