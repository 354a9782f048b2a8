//! A whole table as one value, and the batch that turns one into another.
//!
//! A dataplane builds the [`Ruleset`] it wants, diffs it against the live
//! one (listed once at start, then the last one it applied) and sends the
//! resulting batch: the batch holds only the changes, and the kernel
//! applies them atomically. Changes are ordered so every reference is
//! valid at every step: chains before the rules and map elements that
//! jump to them, sets before the rules that look them up, and removals of
//! references before removals of what they refer to.

use std::collections::{HashMap, HashSet};

use super::batch::Batch;
use super::conn::Connection;
use super::error::Error;
use super::expr::Expr;
use super::objects::{Chain, Table};
use super::rule::Rule;
use super::set::{Set, SetElement, SetFlags};
use super::value::Value;

/// A chain and its rules, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRules {
    pub chain: Chain,
    pub rules: Vec<Rule>,
}

/// A set or map and its elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetContents {
    pub set: Set,
    pub elements: Vec<SetElement>,
}

/// Everything in one table: what a dataplane wants, or what is live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    pub table: Table,
    pub chains: Vec<ChainRules>,
    pub sets: Vec<SetContents>,
}

impl Ruleset {
    pub fn new(table: Table) -> Self {
        Ruleset {
            table,
            chains: Vec::new(),
            sets: Vec::new(),
        }
    }

    pub fn add_chain(&mut self, chain: Chain, rules: Vec<Rule>) -> &mut Self {
        self.chains.push(ChainRules { chain, rules });
        self
    }

    pub fn add_set(&mut self, set: Set, elements: Vec<SetElement>) -> &mut Self {
        self.sets.push(SetContents { set, elements });
        self
    }

    /// The elements of set or map `set`; none when the table has no such set.
    pub fn elements(&self, set: &str) -> &[SetElement] {
        self.sets
            .iter()
            .find(|s| s.set.name == set)
            .map(|s| s.elements.as_slice())
            .unwrap_or_default()
    }

    /// Reads the live state of `table`; `None` if it does not exist.
    pub fn list(conn: &mut Connection, table: &Table) -> Result<Option<Ruleset>, Error> {
        let Some(live_table) = conn
            .list_tables(Some(table.family))?
            .into_iter()
            .find(|t| t.name == table.name)
        else {
            return Ok(None);
        };
        let mut ruleset = Ruleset::new(live_table);
        let mut rules_by_chain: HashMap<String, Vec<Rule>> = HashMap::new();
        for listed in conn.list_rules(table, None)? {
            rules_by_chain
                .entry(listed.chain)
                .or_default()
                .push(listed.rule);
        }
        for chain in conn.list_chains(table)? {
            let rules = rules_by_chain.remove(&chain.name).unwrap_or_default();
            ruleset.add_chain(chain, rules);
        }
        for set in conn.list_sets(table)? {
            let elements = conn.list_elements(&set)?;
            ruleset.add_set(set, elements);
        }
        Ok(Some(ruleset))
    }

    /// The batch that turns `live` (`None`: the table does not exist)
    /// into `self`.
    pub fn diff(&self, live: Option<&Ruleset>) -> Batch {
        let mut batch = Batch::new();
        self.diff_into(live, &mut batch);
        batch
    }

    /// Appends to `batch` the changes that turn `live` into `self`.
    ///
    /// Elements of sets flagged [`SetFlags::DYNAMIC`] are left alone once
    /// the set exists: the packet path owns them (e.g. session affinity).
    pub fn diff_into(&self, live: Option<&Ruleset>, batch: &mut Batch) {
        let empty = Ruleset::new(self.table.clone());
        let (live, table_exists) = match live {
            Some(live) => (live, true),
            None => (&empty, false),
        };
        if !table_exists {
            batch.add_table(&self.table);
        }

        let live_chains: HashMap<&str, &ChainRules> = live
            .chains
            .iter()
            .map(|c| (c.chain.name.as_str(), c))
            .collect();
        let live_sets: HashMap<&str, &SetContents> =
            live.sets.iter().map(|s| (s.set.name.as_str(), s)).collect();
        let wanted_chains: HashSet<&str> =
            self.chains.iter().map(|c| c.chain.name.as_str()).collect();
        let wanted_sets: HashSet<&str> = self.sets.iter().map(|s| s.set.name.as_str()).collect();

        // Sets that must be deleted: gone, or redefined (recreated below).
        let recreated_sets: HashSet<&str> = self
            .sets
            .iter()
            .filter(|s| {
                live_sets
                    .get(s.set.name.as_str())
                    .is_some_and(|l| !same_definition(&l.set, &s.set))
            })
            .map(|s| s.set.name.as_str())
            .collect();
        let dropped_sets: Vec<&SetContents> = live
            .sets
            .iter()
            .filter(|s| {
                !wanted_sets.contains(s.set.name.as_str())
                    || recreated_sets.contains(s.set.name.as_str())
            })
            .collect();
        let dropped_set_names: HashSet<&str> =
            dropped_sets.iter().map(|s| s.set.name.as_str()).collect();

        // Base chains whose hook, type or priority changed are recreated.
        let recreated_chains: HashSet<&str> = self
            .chains
            .iter()
            .filter(|c| {
                live_chains.get(c.chain.name.as_str()).is_some_and(|l| {
                    let (a, b) = (&l.chain.base, &c.chain.base);
                    match (a, b) {
                        (Some(a), Some(b)) => {
                            (a.chain_type, a.hook, a.priority) != (b.chain_type, b.hook, b.priority)
                        }
                        (None, None) => false,
                        _ => true,
                    }
                })
            })
            .map(|c| c.chain.name.as_str())
            .collect();

        // 1. New chains first: rules and map elements may jump to them.
        //    Existing base chains get their policy updated in place.
        for wanted in &self.chains {
            let name = wanted.chain.name.as_str();
            match live_chains.get(name) {
                None => {
                    batch.add_chain(&wanted.chain);
                }
                Some(l)
                    if !recreated_chains.contains(name) && l.chain.base != wanted.chain.base =>
                {
                    batch.add_chain(&wanted.chain);
                }
                Some(_) => {}
            }
        }

        // 2. Empty the chains whose rules change, the chains that go away,
        //    and the chains that refer to sets about to be deleted.
        let mut refill: Vec<&ChainRules> = Vec::new();
        for wanted in &self.chains {
            let name = wanted.chain.name.as_str();
            let Some(l) = live_chains.get(name) else {
                refill.push(wanted);
                continue;
            };
            let rules_differ = l.rules.len() != wanted.rules.len()
                || l.rules
                    .iter()
                    .zip(&wanted.rules)
                    .any(|(a, b)| !a.same_as(b));
            let uses_dropped_set = l.rules.iter().any(|r| refers_to(r, &dropped_set_names));
            if rules_differ || uses_dropped_set || recreated_chains.contains(name) {
                if !l.rules.is_empty() {
                    batch.flush_chain(&l.chain);
                }
                refill.push(wanted);
            }
        }
        for l in &live.chains {
            if !wanted_chains.contains(l.chain.name.as_str()) && !l.rules.is_empty() {
                batch.flush_chain(&l.chain);
            }
        }

        // 3. Remove elements that go or change, in sets that stay.
        let mut additions: Vec<(&Set, Vec<&SetElement>)> = Vec::new();
        for wanted in &self.sets {
            let name = wanted.set.name.as_str();
            match live_sets.get(name) {
                Some(l) if !recreated_sets.contains(name) => {
                    if wanted.set.flags.contains(SetFlags::DYNAMIC) {
                        continue;
                    }
                    let (removed, added) = element_changes(&l.elements, &wanted.elements);
                    if !removed.is_empty() {
                        batch.delete_elements(&l.set, removed);
                    }
                    additions.push((&wanted.set, added));
                }
                _ => additions.push((&wanted.set, wanted.elements.iter().collect())),
            }
        }

        // 4. Delete sets and chains nothing refers to any more.
        for dropped in &dropped_sets {
            batch.delete_set(&dropped.set);
        }
        for l in &live.chains {
            let name = l.chain.name.as_str();
            if !wanted_chains.contains(name) || recreated_chains.contains(name) {
                batch.delete_chain(&l.chain);
            }
        }

        // 5. Create: recreated chains, new and recreated sets, elements.
        for wanted in &self.chains {
            if recreated_chains.contains(wanted.chain.name.as_str()) {
                batch.add_chain(&wanted.chain);
            }
        }
        for wanted in &self.sets {
            let name = wanted.set.name.as_str();
            if !live_sets.contains_key(name) || recreated_sets.contains(name) {
                batch.add_set(&wanted.set);
            }
        }
        for (set, elements) in additions {
            if !elements.is_empty() {
                batch.add_elements(set, elements);
            }
        }

        // 6. Fill the emptied and new chains.
        for chain in refill {
            for rule in &chain.rules {
                batch.add_rule(&chain.chain, rule);
            }
        }
    }
}

/// Whether the live set already is the wanted one. Comments are ignored
/// (they cannot change in place), and so is the size when the wanted set
/// leaves it to the kernel (which sizes dynamic sets by itself).
fn same_definition(live: &Set, wanted: &Set) -> bool {
    (&live.key, &live.data, live.flags, live.timeout)
        == (&wanted.key, &wanted.data, wanted.flags, wanted.timeout)
        && (wanted.size.is_none() || live.size == wanted.size)
}

fn refers_to(rule: &Rule, sets: &HashSet<&str>) -> bool {
    rule.exprs.iter().any(|e| match e {
        Expr::Lookup { set, .. } | Expr::Dynset { set, .. } => sets.contains(set.as_str()),
        _ => false,
    })
}

type ElementId<'a> = (&'a Value, Option<&'a Value>, bool);

fn element_id(e: &SetElement) -> ElementId<'_> {
    (&e.key, e.key_end.as_ref(), e.interval_end)
}

/// (elements to delete, elements to add): a changed element is both.
///
/// A dataplane that diffs against the state it applied last usually has
/// both lists in the same order with a few changes, so equal runs at both
/// ends are skipped with plain comparisons and only the middle is hashed:
/// one changed endpoint among 50,000 costs about a millisecond.
fn element_changes<'a>(
    live: &'a [SetElement],
    wanted: &'a [SetElement],
) -> (Vec<&'a SetElement>, Vec<&'a SetElement>) {
    let prefix = live.iter().zip(wanted).take_while(|(a, b)| a == b).count();
    let (live, wanted) = (&live[prefix..], &wanted[prefix..]);
    let suffix = live
        .iter()
        .rev()
        .zip(wanted.iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let live = &live[..live.len() - suffix];
    let wanted = &wanted[..wanted.len() - suffix];
    let live_by_id: HashMap<ElementId<'_>, &SetElement> =
        live.iter().map(|e| (element_id(e), e)).collect();
    let wanted_ids: HashSet<ElementId<'_>> = wanted.iter().map(element_id).collect();
    let mut removed: Vec<&SetElement> = live
        .iter()
        .filter(|e| !wanted_ids.contains(&element_id(e)))
        .collect();
    let mut added = Vec::new();
    for e in wanted {
        match live_by_id.get(&element_id(e)) {
            None => added.push(e),
            Some(l) if l.data != e.data || l.comment != e.comment => {
                removed.push(l);
                added.push(e);
            }
            Some(_) => {}
        }
    }
    (removed, added)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::nftables::expr::Register;
    use crate::nftables::objects::{ChainType, Family, Hook, Verdict, priority};
    use crate::nftables::value::DataType;

    fn key(last: u8, port: u16) -> Value {
        Value::new()
            .ipv4(Ipv4Addr::new(10, 96, 0, last))
            .inet_proto(6)
            .inet_service(port)
    }

    fn desired(services: &[(u8, &str)]) -> Ruleset {
        let table = Table::new(Family::Ip, "ferry");
        let map = Set::verdict_map(
            &table,
            "services",
            [
                DataType::Ipv4Addr,
                DataType::InetProto,
                DataType::InetService,
            ],
        );
        let mut ruleset = Ruleset::new(table.clone());
        ruleset.add_chain(
            Chain::base(
                &table,
                "pre",
                ChainType::Nat,
                Hook::Prerouting,
                priority::DSTNAT,
            ),
            vec![
                Rule::new()
                    .payload_ip_daddr(Register::R1)
                    .meta_l4proto(Register::r32(1))
                    .payload_th_dport(Register::r32(2))
                    .lookup_vmap("services", Register::R1),
            ],
        );
        let mut elements = Vec::new();
        for (last, chain) in services {
            ruleset.add_chain(
                Chain::new(&table, *chain),
                vec![Rule::new().dnat_to(Ipv4Addr::new(10, 244, 0, *last), Some(8080))],
            );
            elements
                .push(SetElement::new(key(*last, 80)).verdict(Verdict::Jump(chain.to_string())));
        }
        ruleset.add_set(map, elements);
        ruleset
    }

    fn steps(batch: &Batch) -> Vec<String> {
        batch
            .messages()
            .iter()
            .map(|m| format!("{} {}", m.operation, m.object))
            .collect()
    }

    #[test]
    fn a_missing_table_is_created_in_dependency_order() {
        let batch = desired(&[(1, "svc-a")]).diff(None);
        assert_eq!(
            steps(&batch),
            [
                "add table ip ferry",
                "add chain ip ferry pre",
                "add chain ip ferry svc-a",
                "add map ip ferry services",
                "add elements of map ip ferry services",
                "add rule in chain ip ferry pre",
                "add rule in chain ip ferry svc-a",
            ]
        );
    }

    #[test]
    fn no_change_means_an_empty_batch() {
        let ruleset = desired(&[(1, "svc-a"), (2, "svc-b")]);
        assert!(ruleset.diff(Some(&ruleset)).is_empty());
    }

    #[test]
    fn a_removed_service_drops_its_element_before_its_chain() {
        let live = desired(&[(1, "svc-a"), (2, "svc-b")]);
        let wanted = desired(&[(1, "svc-a")]);
        assert_eq!(
            steps(&wanted.diff(Some(&live))),
            [
                "flush chain ip ferry svc-b",
                "delete elements of map ip ferry services",
                "delete chain ip ferry svc-b",
            ]
        );
    }

    #[test]
    fn a_changed_element_is_deleted_then_added() {
        let live = desired(&[(1, "svc-a"), (2, "svc-b")]);
        let mut wanted = live.clone();
        wanted.sets[0].elements[0] =
            SetElement::new(key(1, 80)).verdict(Verdict::Jump("svc-b".into()));
        assert_eq!(
            steps(&wanted.diff(Some(&live))),
            [
                "delete elements of map ip ferry services",
                "add elements of map ip ferry services",
            ]
        );
    }

    #[test]
    fn element_order_does_not_matter() {
        let live = desired(&[(1, "svc-a"), (2, "svc-b"), (3, "svc-c")]);
        let mut wanted = live.clone();
        wanted.sets[0].elements.reverse();
        assert!(wanted.diff(Some(&live)).is_empty());
        wanted.sets[0].elements.remove(1);
        let (removed, added) = element_changes(&live.sets[0].elements, &wanted.sets[0].elements);
        assert_eq!((removed.len(), added.len()), (1, 0));
        assert_eq!(removed[0].key, key(2, 80));
    }

    #[test]
    fn a_redefined_set_is_recreated_and_its_users_refilled() {
        let live = desired(&[(1, "svc-a")]);
        let mut wanted = live.clone();
        wanted.sets[0].set.size = Some(65536);
        assert_eq!(
            steps(&wanted.diff(Some(&live))),
            [
                "flush chain ip ferry pre",
                "delete map ip ferry services",
                "add map ip ferry services",
                "add elements of map ip ferry services",
                "add rule in chain ip ferry pre",
            ]
        );
    }
}
