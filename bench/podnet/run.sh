#!/usr/bin/env bash
# Pod network benchmark (issue 5, point 8): CNI ADD latency, pod start
# latency (create -> Ready) and single-stream TCP throughput three ways.
#
# Usage (as root): bench/podnet/run.sh [cni|pods|iperf|all] [podnet.py options]
# `cni` needs nothing running. `pods` and `iperf` start a 2-node lab
# (`ferry up --nodes 2`) in a temporary data dir and stop it afterwards.
# Needs iproute2 (nsenter comes with util-linux), kubectl and iperf3.
set -euo pipefail
cd "$(dirname "$0")/../.."
what="${1:-all}"; shift || true
command -v iperf3 >/dev/null || { apt-get update -qq && apt-get install -y -qq iperf3; }
cargo build --release -p ferry
echo "machine: $(nproc) cores, kernel $(uname -r), $(iperf3 --version | head -1)"
if [[ "$what" == cni ]]; then
  exec python3 bench/podnet/podnet.py cni "$@"
fi
data=$(mktemp -d /tmp/podnet-lab.XXXXXX)
target/release/ferry up --nodes 2 --data-dir "$data" >"$data/up.log" 2>&1 &
up=$!
trap 'target/release/ferry down --data-dir "$data" >/dev/null 2>&1 || kill $up; wait $up 2>/dev/null || true' EXIT
for _ in $(seq 120); do grep -q '^Cluster ready' "$data/up.log" && break; sleep 1; done
grep -q '^Cluster ready' "$data/up.log" || { cat "$data/up.log"; exit 1; }
export KUBECONFIG="$data/kubeconfig"
python3 bench/podnet/podnet.py "$what" "$@"
