//! The pure part: Ingress rules to a router.

pub mod paths;
pub mod route;
pub mod router;
