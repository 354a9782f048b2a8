//! `ferry ingress`: the Ingress controller (ingress-nginx's job). It
//! watches Ingresses, IngressClasses, Services, EndpointSlices and Secrets,
//! builds a router (the pure [`model`]) and swaps it atomically into the
//! HTTP/TLS proxy ([`dataplane`]), so no change ever reloads, restarts or
//! drops a connection.

pub mod agent;
pub mod dataplane;
pub mod health;
pub mod model;
