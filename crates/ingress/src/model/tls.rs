//! TLS Secrets to certificates (being written).
