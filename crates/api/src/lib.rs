//! Shared Kubernetes API logic with no I/O.
//!
//! The API server (and later the controllers) use these pieces: the table of
//! served resources, label and field selectors, name validation, the
//! strategic-merge-patch engine and the server-side table printers. Everything
//! here is a pure function of its inputs so it can be unit- and property-tested.

pub mod conversion;
pub mod defaults;
pub mod printers;
pub mod resources;
pub mod selector;
pub mod strategic_merge;
pub mod url;
pub mod validation;
