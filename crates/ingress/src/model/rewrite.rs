//! `rewrite-target` expansion (being written).
