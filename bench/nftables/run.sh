#!/usr/bin/env bash
# Loading a kube-proxy-sized NAT ruleset (issue 6, point 9): Ferry's
# nf_tables encoder against `nft -f` of the same ruleset, alternating in
# fresh network namespaces, then a one-endpoint change with each.
# Both run pinned to one CPU (taskset; nft inherits it), single-threaded.
#
# Usage (as root): bench/nftables/run.sh [--services N] [--endpoints M] [--rounds R]
# Needs `ip` (iproute2) and `nft` (Debian package nftables).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p ferry-bench-nftables
echo "machine: $(nproc) cores, kernel $(uname -r), $(nft --version)"
exec taskset -c "${CPU:-1}" target/release/ferry-bench-nftables "$@"
