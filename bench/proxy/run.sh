#!/usr/bin/env bash
# `ferry proxy` at 10,000 Services x 5 endpoints (issue 6, point 9), side
# by side with kube-proxy-shaped rulesets in one run:
#  1. full sync into fresh network namespaces: Ferry's agent path (plan,
#     render, diff, apply) vs iptables-legacy-restore, iptables-nft-restore
#     and `nft -f` of kube-proxy's nftables-mode shape, interleaved;
#  2. one endpoint replaced: Ferry's partial sync (the agent's path) vs
#     kube-proxy's partial `iptables-restore --noflush`;
#  3. new connections/s to the first vs the last Service, Ferry's table vs
#     the iptables-legacy ruleset;
#  4. the real `ferry proxy` against `ferry apiserver`: time to the first
#     full sync, VmRSS and VmHWM.
# The benchmark (and everything it starts: restore tools, nft, ferry proxy)
# runs pinned to one CPU, single-threaded except the 2 client threads of
# part 3; the API server of part 4 gets the other CPU.
#
# Usage (as root): bench/proxy/run.sh [ferry-bench-proxy flags...]
#   e.g. bench/proxy/run.sh --services 1000 --rounds 1 --skip rss
# Environment:
#   CPU=<n>           CPU for the benchmark (default 1)
#   APISERVER_CPU=<n> CPU for the API server of part 4 (default 0)
#   FERRY_BIN=<path>  use this prebuilt `ferry` instead of building it
set -euo pipefail
cd "$(dirname "$0")/../.."

if [[ $EUID -ne 0 ]]; then
    echo "run as root (network namespaces, nf_tables, iptables)" >&2
    exit 1
fi

# Debian packages for the tools, installed only when missing.
missing=()
for tool in ip:iproute2 nft:nftables iptables-legacy-restore:iptables \
    iptables-nft-restore:iptables taskset:util-linux; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool##*:}")
done
if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [[ -n "${FERRY_BIN:-}" ]]; then
    cargo build --release -p ferry-bench-proxy
    ferry_bin=$FERRY_BIN
else
    cargo build --release -p ferry -p ferry-bench-proxy
    ferry_bin=target/release/ferry
fi

cpu=${CPU:-1}
apiserver_cpu=${APISERVER_CPU:-0}
echo "## ferry proxy benchmark"
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ); nproc: $(nproc); kernel: $(uname -r)"
echo "command: bench/proxy/run.sh $*"
echo "tools: $(nft --version); $(iptables-legacy --version); $(iptables-nft --version)"
echo "pinning: benchmark and its children on CPU $cpu (taskset); API server of part 4 on CPU $apiserver_cpu"
echo "ferry binary: $ferry_bin (built $(date -u -r "$ferry_bin" +%Y-%m-%dT%H:%M:%SZ))"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
# The benchmark deletes its namespaces itself; this catches the ones a
# signal left behind.
prefix="fbproxy-sh$$"
cleanup() {
    local ns
    for ns in $(ip netns list | awk '{ print $1 }' | grep "^$prefix-" || true); do
        ip netns del "$ns" || true
    done
}
trap cleanup EXIT
status=0
taskset -c "$cpu" target/release/ferry-bench-proxy --netns-prefix "$prefix" \
    --ferry-bin "$ferry_bin" --apiserver-cpus "$apiserver_cpu" "$@" || status=$?
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
exit "$status"
