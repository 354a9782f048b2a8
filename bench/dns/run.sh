#!/usr/bin/env bash
# `ferry dns` with 10,000 Services and 50,000 Pods loaded (issue 7, point 6),
# side by side with unbound serving the same names, in one run:
#  1. a fresh `ferry apiserver`, loaded through kube-rs: 10,000 ClusterIP
#     Services, 10,000 EndpointSlices x 5 ready endpoints, 50,000 Pods;
#  2. `ferry dns --threads 1` against it and unbound (num-threads 1) with the
#     same names (the ClusterIPs read back from the API) as local data, both
#     pinned to the same CPU, both forwarding `example.` to a loopback stub;
#  3. every Service name checked on both, then dnsperf on the other CPU,
#     interleaved (ferry, unbound, ferry, unbound): cluster names, a mix with
#     NXDOMAIN and NODATA, cached forwarded names; then percentiles from
#     `dnsperf -v` at a fixed rate (half of unbound's);
#  4. VmRSS/VmHWM, time to ready, and a markdown table for BENCHMARKS.md.
# Everything (API server, both servers, the stub, dnsperf) runs in a fresh
# network namespace with only `lo` up: no query can leave the machine, and
# the ports (5300, 5301, 5399, 8181, 9153) cannot clash with the host's.
#
# Usage (as root): bench/dns/run.sh [ferry-bench-dns flags...]
#   e.g. bench/dns/run.sh --services 500 --duration 3 --rounds 1   (dry run)
#        bench/dns/run.sh --perf-seconds 5                        (+ a perf profile)
# Environment:
#   SERVER_CPU=<n>   CPU for ferry dns and unbound (default 1)
#   CLIENT_CPU=<n>   CPU for dnsperf, the stub and the API server (default 0)
#   FERRY_BIN=<path> use this prebuilt `ferry` instead of building it
set -euo pipefail
cd "$(dirname "$0")/../.."

if [[ $EUID -ne 0 ]]; then
    echo "run as root (network namespace)" >&2
    exit 1
fi

# Debian packages for the tools, installed only when missing. unbound's
# package may start its system service where an init system runs; nothing
# here touches it or port 53 (the benchmark's unbound is its own process,
# in its own namespace, on port 5301).
missing=()
for tool in dnsperf:dnsperf unbound:unbound unbound-checkconf:unbound \
    taskset:util-linux ip:iproute2; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool##*:}")
done
if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [[ -n "${FERRY_BIN:-}" ]]; then
    cargo build --release -p ferry-bench-dns
    ferry_bin=$FERRY_BIN
else
    cargo build --release -p ferry -p ferry-bench-dns
    ferry_bin=target/release/ferry
fi
ferry_bin=$(realpath "$ferry_bin")

server_cpu=${SERVER_CPU:-1}
client_cpu=${CLIENT_CPU:-0}
echo "## ferry dns benchmark"
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ); nproc: $(nproc); kernel: $(uname -r)"
echo "command: bench/dns/run.sh $*"
echo "tools: dnsperf $(dpkg-query -W -f '${Version}' dnsperf 2>/dev/null || echo '?'); unbound $(dpkg-query -W -f '${Version}' unbound 2>/dev/null || echo '?')"
echo "pinning: ferry dns and unbound on CPU $server_cpu (taskset); dnsperf, the stub, the benchmark and the API server on CPU $client_cpu"
echo "ferry binary: $ferry_bin (built $(date -u -r "$ferry_bin" +%Y-%m-%dT%H:%M:%SZ))"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

ns="fbdns-$$"
cleanup() {
    ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
echo "network namespace $ns: $(ip -n "$ns" -brief link | tr -s ' ' | paste -sd ';'); routes: $(ip -n "$ns" route show | paste -sd ';')"
status=0
ip netns exec "$ns" taskset -c "$client_cpu" target/release/ferry-bench-dns \
    --ferry-bin "$ferry_bin" --server-cpus "$server_cpu" \
    --client-cpus "$client_cpu" --apiserver-cpus "$client_cpu" "$@" || status=$?
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
exit "$status"
