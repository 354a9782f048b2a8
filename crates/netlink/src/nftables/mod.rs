//! nf_tables over netlink, with Ferry's own encoder (no libnftnl, no `nft`).
//!
//! The service proxy's dataplane describes the ruleset it wants with plain
//! values ([`Table`], [`Chain`], [`Set`] and [`SetElement`], [`Rule`]
//! built from [`Expr`]essions), lists what is live through a
//! [`Connection`], and applies the difference as one [`Batch`]: the kernel
//! commits all of it or none. [`Ruleset`] does that diff for a whole table.
//!
//! ```no_run
//! use ferry_netlink::nftables::*;
//! # fn main() -> Result<(), Error> {
//! let table = Table::new(Family::Ip, "ferry");
//! let services = Set::verdict_map(
//!     &table,
//!     "services",
//!     [DataType::Ipv4Addr, DataType::InetProto, DataType::InetService],
//! );
//! let prerouting = Chain::base(&table, "prerouting", ChainType::Nat, Hook::Prerouting, priority::DSTNAT);
//! let web = Chain::new(&table, "svc-web");
//!
//! let mut batch = Batch::new();
//! batch
//!     .add_table(&table)
//!     .add_chain(&prerouting)
//!     .add_chain(&web)
//!     .add_set(&services)
//!     .add_elements(&services, &[SetElement::new(
//!         Value::new().ipv4([10, 96, 0, 10].into()).inet_proto(6).inet_service(80),
//!     )
//!     .verdict(Verdict::Jump("svc-web".into()))])
//!     .add_rule(&prerouting, &Rule::new()
//!         .load_concat(Register::R1, &[Load::IpDaddr, Load::L4Proto, Load::ThDport])
//!         .lookup_vmap("services", Register::R1));
//! Connection::open_in_netns("/run/netns/lab-node-1")?.apply(&batch)?;
//! # Ok(()) }
//! ```
//!
//! Layout: `wire` frames netlink messages and attributes; `objects`,
//! `value`, `set`, `expr` and `rule` model the ruleset; `batch` encodes changes, `list`
//! decodes dumps, `conn` talks to the kernel, `ruleset` computes diffs.

mod batch;
mod conn;
mod error;
mod expr;
mod list;
mod netns;
mod objects;
mod rule;
mod ruleset;
mod set;
mod sys;
mod value;
mod wire;

pub use batch::Batch;
pub use conn::Connection;
pub use error::{Error, Failure, Operation};
pub use expr::{
    CmpOp, CtKey, DynsetOp, Expr, MetaKey, NatKind, NumgenKind, PayloadBase, Register, RejectKind,
    ct_state, ct_status, nat_flags,
};
pub use list::ListedRule;
pub use objects::{BaseChain, Chain, ChainType, Family, Hook, Policy, Table, Verdict, priority};
pub use rule::{Load, Rule};
pub use ruleset::{ChainRules, Ruleset, SetContents};
pub use set::{ElementData, MapData, Set, SetElement, SetFlags};
pub use value::{DataType, Value};
