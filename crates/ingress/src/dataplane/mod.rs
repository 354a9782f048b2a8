//! The dataplane: listeners, TLS, the proxy. It serves whatever
//! [`crate::model::route::Routes`] is current and never restarts a listener.

pub mod balance;
pub mod proxy;
pub mod tls;
