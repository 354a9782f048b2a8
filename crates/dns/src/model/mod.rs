//! The pure part of `ferry dns`: API objects in ([`objects`]), an answer
//! index out ([`index`]), and the answer to one query ([`answer`]).

pub mod answer;
pub mod index;
pub mod names;
pub mod objects;

pub use answer::{Answered, answer};
pub use index::{Config, Index, PodsMode, State};
