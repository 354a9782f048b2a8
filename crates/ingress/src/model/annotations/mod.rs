//! ingress-nginx annotations (being written).
