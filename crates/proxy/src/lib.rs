//! `ferry proxy` (issue 6), kube-proxy's job. Built as ARCHITECTURE.md
//! describes: a pure [`model`] turns Services and EndpointSlices into what
//! one node must program; a dataplane (nf_tables, not written yet) applies
//! the difference as one batch.

pub mod model;
