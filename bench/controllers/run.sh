#!/usr/bin/env bash
# Benchmark of `ferry controllers` (issue 4, point 8): EndpointSlice latency
# after Pod readiness flips, with 1,000 Services x 10 Pods. Builds in
# release, starts a fresh `ferry apiserver` in a temp dir and
# `ferry controllers` against it, runs ferry-bench-controllers (which
# samples both processes' CPU and memory at each phase boundary), adds the
# controllers' CPU over the whole run and their final memory, and stops
# both.
#
# Usage: bench/controllers/run.sh [ferry-bench-controllers flags...]
#   e.g. bench/controllers/run.sh --flips 1000 --burst-concurrency 64
# Environment:
#   PORT=<n>          API server port (default 0: the server picks one)
#   PROFILE=1         `perf record` the controllers during the flips (DWARF
#                     call graphs; --perf-args to change);
#                     reports go to $TMPDIR/ferry-bench-controllers-perf*.txt
#   CONTROLLERS_LOG=<filter>  RUST_LOG of the controllers (default info),
#                     e.g. ferry_controllers::endpointslice=debug for
#                     per-sync timestamps; the log is kept with KEEP=1
#   KEEP=1            keep the temp dir (data, logs, perf data)
#   FERRY_BIN=<path>  run this prebuilt `ferry` instead of building it
set -euo pipefail

cd "$(dirname "$0")/../.."
if [[ -n "${FERRY_BIN:-}" ]]; then
    cargo build --release -p ferry-bench-controllers
    ferry_bin=$FERRY_BIN
else
    cargo build --release -p ferry -p ferry-bench-controllers
    ferry_bin=target/release/ferry
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ferry-bench-controllers.XXXXXX")
server_pid=""
controllers_pid=""
stop() {
    local pid=$1
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -INT "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}
cleanup() {
    stop "$controllers_pid"
    stop "$server_pid"
    if [[ "${KEEP:-0}" == 1 ]]; then
        echo "kept $tmp"
    else
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT

echo "## ferry controllers benchmark: EndpointSlice latency"
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ); nproc: $(nproc); kernel: $(uname -r)"
echo "command: bench/controllers/run.sh $*"
echo "API server, controllers and load generator share the same $(nproc) cores (no pinning)"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine shows here)"
echo "binary: $ferry_bin (built $(date -u -r "$ferry_bin" +%Y-%m-%dT%H:%M:%SZ))"

NO_COLOR=1 "$ferry_bin" apiserver --data-dir "$tmp/data" \
    --bind-address "127.0.0.1:${PORT:-0}" >"$tmp/server.out" 2>"$tmp/server.log" &
server_pid=$!
for _ in $(seq 300); do
    grep -q "listening on" "$tmp/server.out" 2>/dev/null && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$tmp/server.log"; exit 1; }
    sleep 0.1
done
grep -q "listening on" "$tmp/server.out" || { echo "server did not start"; exit 1; }
kubeconfig="$tmp/data/kubeconfig"

NO_COLOR=1 RUST_LOG="${CONTROLLERS_LOG:-info}" "$ferry_bin" controllers --kubeconfig "$kubeconfig" \
    >"$tmp/controllers.out" 2>"$tmp/controllers.log" &
controllers_pid=$!
for _ in $(seq 300); do
    grep -q "endpointslice controller started" "$tmp/controllers.log" 2>/dev/null && break
    kill -0 "$controllers_pid" 2>/dev/null || { cat "$tmp/controllers.log"; exit 1; }
    sleep 0.1
done
grep -q "endpointslice controller started" "$tmp/controllers.log" \
    || { echo "controllers did not start"; tail -20 "$tmp/controllers.log"; exit 1; }
echo "API server pid $server_pid ($(head -1 "$tmp/server.out")); controllers pid $controllers_pid"
echo

perf_args=()
if [[ "${PROFILE:-0}" == 1 ]]; then
    perf_args=(--perf-output "$tmp/perf.data")
fi

# CPU seconds (user+system, all threads) of a process, from /proc/<pid>/stat.
cpu_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat"
}
memory() { grep -E "^(VmRSS|VmHWM):" "/proc/$1/status" | tr -s ' \t' ' ' | paste -sd ';'; }
controllers_cpu_before=$(cpu_seconds "$controllers_pid")
target/release/ferry-bench-controllers --kubeconfig "$kubeconfig" \
    --controllers-pid "$controllers_pid" --apiserver-pid "$server_pid" \
    --clock-ticks "$(getconf CLK_TCK)" "${perf_args[@]}" "$@"
controllers_cpu_after=$(cpu_seconds "$controllers_pid")

echo
echo "| whole run (run.sh) | figure |"
echo "|---|---|"
echo "| controllers CPU from start of bench to its end | $(awk -v a="$controllers_cpu_before" -v b="$controllers_cpu_after" 'BEGIN { printf "%.2f", b - a }') s |"
echo "| controllers memory at the end | $(memory "$controllers_pid") |"
echo "| API server memory at the end | $(memory "$server_pid") |"
# Strip colours, should the logger still write them.
log_count() { sed 's/\x1b\[[0-9;]*m//g' "$tmp/controllers.log" | grep -c " $1 " || true; }
echo "| controllers log: warnings / errors | $(log_count WARN) / $(log_count ERROR) |"
echo "| load average at the end | $(cut -d' ' -f1-3 /proc/loadavg) |"

if [[ "${PROFILE:-0}" == 1 && -s "$tmp/perf.data" ]]; then
    out="${TMPDIR:-/tmp}/ferry-bench-controllers-perf"
    perf report -i "$tmp/perf.data" --no-children --percent-limit 0.5 --stdio \
        --sort symbol 2>/dev/null >"$out.txt" || true
    perf report -i "$tmp/perf.data" --children --percent-limit 2 --stdio -g none \
        --sort symbol 2>/dev/null >"$out-children.txt" || true
    perf report -i "$tmp/perf.data" --no-children --stdio -g none \
        --sort comm 2>/dev/null >"$out-threads.txt" || true
    echo
    echo "perf reports: $out.txt (self), $out-children.txt (inclusive), $out-threads.txt (by thread)"
fi
