//! The pure part: Ingress rules to a router.

pub mod annotations;
pub mod build;
pub mod objects;
pub mod paths;
pub mod rewrite;
pub mod route;
pub mod router;
pub mod tls;
