//! A batch: nf_tables messages applied as one transaction.
//!
//! Messages are encoded as they are added (the batch is the wire buffer
//! plus, per message, what it does to which object, so a kernel error can
//! be named). [`super::Connection::apply`] frames the buffer with
//! `NFNL_MSG_BATCH_BEGIN`/`END` and sends it in one `send`: the kernel
//! applies all of it or none of it.
//!
//! Order matters inside a batch, as it does in an nft file: add a chain
//! before the rules or map elements that jump to it, and drop references
//! (rules, elements) before deleting what they refer to.

use super::error::{Error, Operation};
use super::expr::{Expr, decode_value_data};
use super::objects::{Chain, Family, Table};
use super::rule::Rule;
use super::set::{Set, SetElement};
use super::sys;
use super::value::{DataType, Value};
use super::wire::{self, Writer};

/// What one message of the batch does, to name it in errors.
#[derive(Debug, Clone)]
pub(crate) struct MessageInfo {
    pub(crate) offset: usize,
    pub(crate) operation: Operation,
    pub(crate) object: String,
    /// For element messages: the set's key fields, to print a failing key.
    pub(crate) element_key: Option<Vec<DataType>>,
}

/// An ordered list of nf_tables changes, applied atomically.
///
/// Building never fails: an object that cannot be encoded (a value of
/// the wrong size for its set, a name too long) is remembered and
/// reported by [`super::Connection::apply`], which then sends nothing.
#[derive(Default)]
pub struct Batch {
    buf: Vec<u8>,
    messages: Vec<MessageInfo>,
    next_set_id: u32,
    generation: Option<u32>,
    /// The first encoding failure: (operation, object, reason).
    error: Option<(Operation, String, String)>,
}

impl Batch {
    pub fn new() -> Self {
        Batch::default()
    }

    /// Number of netlink messages so far (set elements are grouped
    /// several to a message).
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Encoded size in bytes, without the batch framing.
    pub fn size(&self) -> usize {
        self.buf.len()
    }

    /// Apply only if the ruleset is still at generation `genid` (from
    /// [`super::Connection::generation`] before listing): the kernel refuses
    /// the batch with [`Error::GenerationChanged`] if anyone changed it since.
    pub fn expect_generation(&mut self, genid: u32) -> &mut Self {
        self.generation = Some(genid);
        self
    }

    // ---- tables ----

    /// Creates the table; adding an existing table is not an error.
    pub fn add_table(&mut self, table: &Table) -> &mut Self {
        self.message(
            sys::NFT_MSG_NEWTABLE,
            sys::NLM_F_CREATE,
            table.family,
            Operation::Add,
            || table.to_string(),
            |w| {
                w.str(sys::NFTA_TABLE_NAME, &table.name)?;
                w.u32(sys::NFTA_TABLE_FLAGS, 0);
                if let Some(comment) = &table.comment {
                    udata(
                        w,
                        sys::NFTA_TABLE_USERDATA,
                        sys::NFTNL_UDATA_TABLE_COMMENT,
                        comment,
                    )?;
                }
                Ok(())
            },
        )
    }

    /// Deletes the table and everything in it; fails if it does not exist.
    pub fn delete_table(&mut self, table: &Table) -> &mut Self {
        self.table_message(sys::NFT_MSG_DELTABLE, Operation::Delete, table)
    }

    /// Deletes the table and everything in it, if it exists (Linux 6.3+).
    pub fn destroy_table(&mut self, table: &Table) -> &mut Self {
        self.table_message(sys::NFT_MSG_DESTROYTABLE, Operation::Destroy, table)
    }

    fn table_message(&mut self, msg: u8, operation: Operation, table: &Table) -> &mut Self {
        self.message(
            msg,
            0,
            table.family,
            operation,
            || table.to_string(),
            |w| Ok(w.str(sys::NFTA_TABLE_NAME, &table.name)?),
        )
    }

    /// Deletes every rule of every chain in the table.
    pub fn flush_table(&mut self, table: &Table) -> &mut Self {
        self.message(
            sys::NFT_MSG_DELRULE,
            0,
            table.family,
            Operation::Flush,
            || table.to_string(),
            |w| Ok(w.str(sys::NFTA_RULE_TABLE, &table.name)?),
        )
    }

    // ---- chains ----

    /// Creates the chain (a base chain is attached to its hook at commit).
    /// Adding an existing chain is not an error; a base chain's policy is
    /// updated.
    pub fn add_chain(&mut self, chain: &Chain) -> &mut Self {
        self.message(
            sys::NFT_MSG_NEWCHAIN,
            sys::NLM_F_CREATE,
            chain.family,
            Operation::Add,
            || chain.to_string(),
            |w| {
                w.str(sys::NFTA_CHAIN_TABLE, &chain.table)?;
                w.str(sys::NFTA_CHAIN_NAME, &chain.name)?;
                if let Some(base) = &chain.base {
                    // The order nft uses: type, policy, hook.
                    w.str(sys::NFTA_CHAIN_TYPE, base.chain_type.name())?;
                    let policy = match base.policy {
                        super::Policy::Accept => sys::NF_ACCEPT,
                        super::Policy::Drop => sys::NF_DROP,
                    };
                    w.u32(sys::NFTA_CHAIN_POLICY, policy as u32);
                    let hook = w.begin_nest(sys::NFTA_CHAIN_HOOK);
                    w.u32(sys::NFTA_HOOK_HOOKNUM, base.hook.number());
                    w.u32(sys::NFTA_HOOK_PRIORITY, base.priority as u32);
                    w.end_nest(hook)?;
                }
                if let Some(comment) = &chain.comment {
                    udata(
                        w,
                        sys::NFTA_CHAIN_USERDATA,
                        sys::NFTNL_UDATA_CHAIN_COMMENT,
                        comment,
                    )?;
                }
                Ok(())
            },
        )
    }

    /// Deletes the chain; it must be empty and unreferenced by then (flush
    /// it and remove jumps to it earlier in the batch).
    pub fn delete_chain(&mut self, chain: &Chain) -> &mut Self {
        self.chain_message(sys::NFT_MSG_DELCHAIN, Operation::Delete, chain)
    }

    /// Like [`Self::delete_chain`], without failing if it does not exist.
    pub fn destroy_chain(&mut self, chain: &Chain) -> &mut Self {
        self.chain_message(sys::NFT_MSG_DESTROYCHAIN, Operation::Destroy, chain)
    }

    fn chain_message(&mut self, msg: u8, operation: Operation, chain: &Chain) -> &mut Self {
        self.message(
            msg,
            0,
            chain.family,
            operation,
            || chain.to_string(),
            |w| {
                w.str(sys::NFTA_CHAIN_TABLE, &chain.table)?;
                Ok(w.str(sys::NFTA_CHAIN_NAME, &chain.name)?)
            },
        )
    }

    /// Deletes every rule of the chain; rules added after this in the same
    /// batch remain: flush-and-refill replaces a chain's rules atomically.
    pub fn flush_chain(&mut self, chain: &Chain) -> &mut Self {
        self.message(
            sys::NFT_MSG_DELRULE,
            0,
            chain.family,
            Operation::Flush,
            || chain.to_string(),
            |w| {
                w.str(sys::NFTA_RULE_TABLE, &chain.table)?;
                Ok(w.str(sys::NFTA_RULE_CHAIN, &chain.name)?)
            },
        )
    }

    // ---- sets and maps ----

    /// Creates the set or map. Adding an existing set with the same
    /// definition is not an error.
    pub fn add_set(&mut self, set: &Set) -> &mut Self {
        self.next_set_id += 1;
        let set_id = self.next_set_id;
        self.message(
            sys::NFT_MSG_NEWSET,
            sys::NLM_F_CREATE,
            set.family,
            Operation::Add,
            || set.to_string(),
            |w| encode_set(w, set, set_id),
        )
    }

    pub fn delete_set(&mut self, set: &Set) -> &mut Self {
        self.set_message(sys::NFT_MSG_DELSET, Operation::Delete, set)
    }

    /// Like [`Self::delete_set`], without failing if it does not exist.
    pub fn destroy_set(&mut self, set: &Set) -> &mut Self {
        self.set_message(sys::NFT_MSG_DESTROYSET, Operation::Destroy, set)
    }

    fn set_message(&mut self, msg: u8, operation: Operation, set: &Set) -> &mut Self {
        self.message(
            msg,
            0,
            set.family,
            operation,
            || set.to_string(),
            |w| {
                w.str(sys::NFTA_SET_TABLE, &set.table)?;
                Ok(w.str(sys::NFTA_SET_NAME, &set.name)?)
            },
        )
    }

    /// Removes every element of the set.
    pub fn flush_set(&mut self, set: &Set) -> &mut Self {
        self.message(
            sys::NFT_MSG_DELSETELEM,
            0,
            set.family,
            Operation::Flush,
            || set.to_string(),
            |w| {
                w.str(sys::NFTA_SET_ELEM_LIST_TABLE, &set.table)?;
                Ok(w.str(sys::NFTA_SET_ELEM_LIST_SET, &set.name)?)
            },
        )
    }

    /// Adds elements. Re-adding an element with the same value is not an
    /// error; changing a map element's value needs delete then add (both
    /// in this batch, so the change is atomic).
    pub fn add_elements<'a>(
        &mut self,
        set: &Set,
        elements: impl IntoIterator<Item = &'a SetElement>,
    ) -> &mut Self {
        self.elements(
            sys::NFT_MSG_NEWSETELEM,
            sys::NLM_F_CREATE,
            Operation::Add,
            set,
            elements,
        )
    }

    /// Deletes elements (by key); each must exist.
    pub fn delete_elements<'a>(
        &mut self,
        set: &Set,
        elements: impl IntoIterator<Item = &'a SetElement>,
    ) -> &mut Self {
        self.elements(sys::NFT_MSG_DELSETELEM, 0, Operation::Delete, set, elements)
    }

    /// Deletes elements that exist and ignores the others (Linux 6.3+).
    pub fn destroy_elements<'a>(
        &mut self,
        set: &Set,
        elements: impl IntoIterator<Item = &'a SetElement>,
    ) -> &mut Self {
        self.elements(
            sys::NFT_MSG_DESTROYSETELEM,
            0,
            Operation::Destroy,
            set,
            elements,
        )
    }

    fn elements<'a>(
        &mut self,
        msg: u8,
        flags: u16,
        operation: Operation,
        set: &Set,
        elements: impl IntoIterator<Item = &'a SetElement>,
    ) -> &mut Self {
        let with_data = operation == Operation::Add;
        let object = || format!("elements of {set}");
        // The elements list is one attribute, whose length is 16 bits:
        // start a new message when it would overflow.
        let mut nest: Option<usize> = None;
        for element in elements {
            if self.error.is_some() {
                break;
            }
            let current = match nest {
                Some(current) => current,
                None => *nest.insert(self.begin_elements(msg, flags, operation, set)),
            };
            let mark = self.buf.len();
            let mut w = Writer::new(&mut self.buf);
            let result = encode_element(&mut w, set, element, with_data);
            let overflow = w.nest_len(current) > u16::MAX as usize;
            match result {
                Ok(()) if !overflow => {}
                Ok(()) => {
                    self.buf.truncate(mark);
                    self.end_elements(current);
                    let fresh = self.begin_elements(msg, flags, operation, set);
                    nest = Some(fresh);
                    let mut w = Writer::new(&mut self.buf);
                    if encode_element(&mut w, set, element, with_data).is_err() {
                        self.fail(operation, object(), "element too large".into());
                    }
                }
                Err(invalid) => {
                    let reason = match invalid {
                        Invalid::TooLarge => "element too large".to_string(),
                        Invalid::Reason(reason) => reason,
                    };
                    let key = set.format_key(&element.key);
                    self.fail(operation, object(), format!("element {key}: {reason}"));
                }
            }
        }
        if let Some(current) = nest {
            self.end_elements(current);
        }
        self
    }

    /// Opens an elements message; returns the offset of its elements nest.
    fn begin_elements(&mut self, msg: u8, flags: u16, operation: Operation, set: &Set) -> usize {
        let start = self.buf.len();
        self.messages.push(MessageInfo {
            offset: start,
            operation,
            object: format!("elements of {set}"),
            element_key: Some(set.key.clone()),
        });
        let mut w = Writer::new(&mut self.buf);
        w.begin_message(
            message_type(msg),
            sys::NLM_F_REQUEST | flags,
            0,
            set.family.nfproto(),
            0,
        );
        let names = w
            .str(sys::NFTA_SET_ELEM_LIST_TABLE, &set.table)
            .and_then(|()| w.str(sys::NFTA_SET_ELEM_LIST_SET, &set.name));
        let nest = w.begin_nest(sys::NFTA_SET_ELEM_LIST_ELEMENTS);
        if names.is_err() {
            self.fail(
                operation,
                format!("elements of {set}"),
                "name too long".into(),
            );
        }
        nest
    }

    fn end_elements(&mut self, nest: usize) {
        let start = self.messages.last().map(|m| m.offset).unwrap_or(0);
        let mut w = Writer::new(&mut self.buf);
        // `elements` keeps the nest within the 16-bit range.
        let _ = w.end_nest(nest);
        w.end_message(start);
    }

    // ---- rules ----

    /// Appends the rule to the chain.
    pub fn add_rule(&mut self, chain: &Chain, rule: &Rule) -> &mut Self {
        self.rule_message(
            sys::NLM_F_CREATE | sys::NLM_F_APPEND,
            Operation::Add,
            chain,
            None,
            rule,
        )
    }

    /// Puts the rule first in the chain.
    pub fn insert_rule(&mut self, chain: &Chain, rule: &Rule) -> &mut Self {
        self.rule_message(sys::NLM_F_CREATE, Operation::Insert, chain, None, rule)
    }

    /// Replaces the rule with this handle, in place.
    pub fn replace_rule(&mut self, chain: &Chain, handle: u64, rule: &Rule) -> &mut Self {
        self.rule_message(
            sys::NLM_F_REPLACE,
            Operation::Replace,
            chain,
            Some(handle),
            rule,
        )
    }

    /// Deletes the rule with this handle (from [`super::Connection::list_rules`]).
    pub fn delete_rule(&mut self, chain: &Chain, handle: u64) -> &mut Self {
        self.message(
            sys::NFT_MSG_DELRULE,
            0,
            chain.family,
            Operation::Delete,
            || format!("rule handle {handle} in {chain}"),
            |w| {
                w.str(sys::NFTA_RULE_TABLE, &chain.table)?;
                w.str(sys::NFTA_RULE_CHAIN, &chain.name)?;
                w.u64(sys::NFTA_RULE_HANDLE, handle);
                Ok(())
            },
        )
    }

    fn rule_message(
        &mut self,
        flags: u16,
        operation: Operation,
        chain: &Chain,
        handle: Option<u64>,
        rule: &Rule,
    ) -> &mut Self {
        self.message(
            sys::NFT_MSG_NEWRULE,
            flags,
            chain.family,
            operation,
            || match (handle, &rule.comment) {
                (Some(handle), _) => format!("rule handle {handle} in {chain}"),
                (None, Some(comment)) => format!("rule \"{comment}\" in {chain}"),
                (None, None) => format!("rule in {chain}"),
            },
            |w| {
                w.str(sys::NFTA_RULE_TABLE, &chain.table)?;
                w.str(sys::NFTA_RULE_CHAIN, &chain.name)?;
                if let Some(handle) = handle {
                    w.u64(sys::NFTA_RULE_HANDLE, handle);
                }
                let exprs = w.begin_nest(sys::NFTA_RULE_EXPRESSIONS);
                for expr in &rule.exprs {
                    expr.encode(w)?;
                }
                w.end_nest(exprs)?;
                if let Some(comment) = &rule.comment {
                    udata(
                        w,
                        sys::NFTA_RULE_USERDATA,
                        sys::NFTNL_UDATA_RULE_COMMENT,
                        comment,
                    )?;
                }
                Ok(())
            },
        )
    }

    // ---- encoding ----

    fn message(
        &mut self,
        msg: u8,
        flags: u16,
        family: Family,
        operation: Operation,
        object: impl FnOnce() -> String,
        body: impl FnOnce(&mut Writer<'_>) -> Result<(), Invalid>,
    ) -> &mut Self {
        if self.error.is_some() {
            return self;
        }
        let start = self.buf.len();
        let mut w = Writer::new(&mut self.buf);
        w.begin_message(
            message_type(msg),
            sys::NLM_F_REQUEST | flags,
            0,
            family.nfproto(),
            0,
        );
        match body(&mut w) {
            Ok(()) => {
                w.end_message(start);
                self.messages.push(MessageInfo {
                    offset: start,
                    operation,
                    object: object(),
                    element_key: None,
                });
            }
            Err(invalid) => {
                self.buf.truncate(start);
                let reason = match invalid {
                    Invalid::TooLarge => "an attribute exceeds 64 KiB".to_string(),
                    Invalid::Reason(reason) => reason,
                };
                self.fail(operation, object(), reason);
            }
        }
        self
    }

    fn fail(&mut self, operation: Operation, object: String, reason: String) {
        if self.error.is_none() {
            self.error = Some((operation, object, reason));
        }
    }

    /// The first encoding error, which makes the batch unusable.
    pub(crate) fn encode_error(&self) -> Option<Error> {
        self.error
            .as_ref()
            .map(|(operation, object, reason)| Error::Encode {
                operation: *operation,
                object: object.clone(),
                reason: reason.clone(),
            })
    }

    pub(crate) fn generation(&self) -> Option<u32> {
        self.generation
    }

    pub(crate) fn messages(&self) -> &[MessageInfo] {
        &self.messages
    }

    /// The batch as sent: BEGIN (sequence `seq`), the messages (sequence
    /// `seq + 1 + index`; the last one asks for an ACK, so the caller knows
    /// the kernel read it all), END.
    pub(crate) fn frame(&self, seq: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.buf.len() + 64);
        let mut w = Writer::new(&mut out);
        let begin = w.begin_message(
            sys::NFNL_MSG_BATCH_BEGIN,
            sys::NLM_F_REQUEST,
            seq,
            0,
            sys::NFNL_SUBSYS_NFTABLES,
        );
        if let Some(genid) = self.generation {
            w.u32(sys::NFNL_BATCH_GENID, genid);
        }
        w.end_message(begin);
        let base = out.len();
        out.extend_from_slice(&self.buf);
        let count = self.messages.len();
        for (i, info) in self.messages.iter().enumerate() {
            let at = base + info.offset;
            let msg_seq = seq.wrapping_add(1 + i as u32);
            out[at + 8..at + 12].copy_from_slice(&msg_seq.to_ne_bytes());
            if i + 1 == count {
                let flags = u16::from_ne_bytes([out[at + 6], out[at + 7]]) | sys::NLM_F_ACK;
                out[at + 6..at + 8].copy_from_slice(&flags.to_ne_bytes());
            }
        }
        let mut w = Writer::new(&mut out);
        let end = w.begin_message(
            sys::NFNL_MSG_BATCH_END,
            sys::NLM_F_REQUEST,
            seq.wrapping_add(1 + count as u32),
            0,
            sys::NFNL_SUBSYS_NFTABLES,
        );
        w.end_message(end);
        out
    }

    /// Names the attribute at `offset` (from the kernel's extended ack) in
    /// message `index`: the failing set element or rule expression.
    pub(crate) fn describe_offset(&self, index: usize, offset: usize) -> Option<String> {
        let info = self.messages.get(index)?;
        let end = self
            .messages
            .get(index + 1)
            .map(|m| m.offset)
            .unwrap_or(self.buf.len());
        let message = self.buf.get(info.offset..end)?;
        let attr = message.get(offset..)?;
        let (attr_type, payload) = wire::attrs(attr).next()?;
        if let Some(fields) = &info.element_key
            && attr_type == sys::NFTA_LIST_ELEM
        {
            let key = wire::attrs(payload)
                .find(|(t, _)| *t == sys::NFTA_SET_ELEM_KEY)
                .and_then(|(_, key)| decode_value_data(key))?;
            return Some(format!(
                "element {}",
                Value::decode(fields, &key).format(fields)
            ));
        }
        // A rule: find the expression the offset falls in.
        let body = message.get(sys::NLMSG_HDRLEN + 4..)?;
        let mut at = sys::NLMSG_HDRLEN + 4;
        for (t, payload) in wire::attrs(body) {
            let len = 4 + payload.len();
            if t == sys::NFTA_RULE_EXPRESSIONS && (at..at + len).contains(&offset) {
                let mut expr_at = at + 4;
                for (n, (_, expr)) in wire::attrs(payload).enumerate() {
                    let expr_len = wire::align(4 + expr.len());
                    if (expr_at..expr_at + expr_len).contains(&offset) {
                        let name = Expr::decode(expr).name().to_string();
                        return Some(format!("expression {} ({name})", n + 1));
                    }
                    expr_at += expr_len;
                }
            }
            at += wire::align(len);
        }
        None
    }
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let steps: Vec<String> = self
            .messages
            .iter()
            .map(|m| format!("{} {}", m.operation, m.object))
            .collect();
        f.debug_struct("Batch")
            .field("messages", &steps)
            .field("bytes", &self.buf.len())
            .field("generation", &self.generation)
            .field("error", &self.error)
            .finish()
    }
}

fn message_type(msg: u8) -> u16 {
    (sys::NFNL_SUBSYS_NFTABLES << 8) | msg as u16
}

mod encode;

use encode::{Invalid, encode_element, encode_set, udata};

#[cfg(test)]
mod tests;
