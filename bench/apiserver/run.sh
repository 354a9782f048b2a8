#!/usr/bin/env bash
# Benchmark of `ferry apiserver` (issue 2, point 7). Builds in release,
# starts a fresh server in a temp dir, measures the disk's fsync floor in
# that same dir, runs the kube-rs load generator (ferry-bench-apiserver)
# against it, then reports the server's RSS, the `kubectl get pods -A` time
# and the data size, and stops the server.
#
# Usage: bench/apiserver/run.sh [ferry-bench-apiserver flags...]
#   e.g. bench/apiserver/run.sh --services 1000 --pods 5000 --watchers 10
# Environment:
#   PORT=<n>      listen port (default 0: the server picks a free one)
#   PROFILE=1     also `perf record` the server during the load (flags in
#                 PERF_ARGS, default "-F 499 -g"); the
#                 report goes to $TMPDIR/ferry-bench-perf.txt
#   KEEP=1        keep the temp dir (data, server log, perf data)
#   FERRY_BIN=<path>  run this prebuilt server instead of building `ferry`
#                 (to compare runs on one server build)
set -euo pipefail

cd "$(dirname "$0")/../.."
if [[ -n "${FERRY_BIN:-}" ]]; then
    cargo build --release -p ferry-bench-apiserver
    ferry_bin=$FERRY_BIN
else
    cargo build --release -p ferry -p ferry-bench-apiserver
    ferry_bin=target/release/ferry
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ferry-bench.XXXXXX")
server_pid=""
perf_pid=""
cleanup() {
    if [[ -n "$perf_pid" ]] && kill -0 "$perf_pid" 2>/dev/null; then
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
    fi
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -INT "$server_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [[ "${KEEP:-0}" == 1 ]]; then
        echo "kept $tmp"
    else
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT

echo "## ferry apiserver benchmark"
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ); nproc: $(nproc); kernel: $(uname -r)"
echo "command: bench/apiserver/run.sh $*"
echo "server and load generator share the same $(nproc) cores (no pinning)"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine shows here)"
echo

# The disk floor, on the filesystem of the data dir: 1000 x (4 KiB write + fsync).
python3 - "$tmp/fsync-probe" <<'EOF'
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)
buf = b"x" * 4096
lat = []
for i in range(1000):
    t = time.perf_counter()
    os.pwrite(fd, buf, (i % 256) * 4096)
    os.fsync(fd)
    lat.append(time.perf_counter() - t)
os.close(fd)
os.unlink(sys.argv[1])
lat.sort()
ms = lambda s: f"{s * 1e3:.3f} ms"
print(f"reference, fsync of a 4 KiB write (1000 in a row, data-dir filesystem): "
      f"p50 {ms(lat[499])}, p99 {ms(lat[989])}, max {ms(lat[-1])}, "
      f"total {sum(lat):.3f} s")
EOF
echo

echo "server binary: $ferry_bin (built $(date -u -r "$ferry_bin" +%Y-%m-%dT%H:%M:%SZ))"
"$ferry_bin" apiserver --data-dir "$tmp/data" \
    --bind-address "127.0.0.1:${PORT:-0}" >"$tmp/server.out" 2>"$tmp/server.log" &
server_pid=$!
for _ in $(seq 300); do
    grep -q "listening on" "$tmp/server.out" 2>/dev/null && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$tmp/server.log"; exit 1; }
    sleep 0.1
done
grep -q "listening on" "$tmp/server.out" || { echo "server did not start"; exit 1; }
echo "server pid $server_pid: $(head -1 "$tmp/server.out")"
kubeconfig="$tmp/data/kubeconfig"

if [[ "${PROFILE:-0}" == 1 ]]; then
    # shellcheck disable=SC2086 # PERF_ARGS is a list of flags
    perf record ${PERF_ARGS:--F 499 -g} -p "$server_pid" -o "$tmp/perf.data" 2>"$tmp/perf.log" &
    perf_pid=$!
    sleep 1
fi

# CPU seconds (user+system) of a process, from /proc/<pid>/stat.
cpu_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}
server_cpu_before=$(cpu_seconds "$server_pid")
/usr/bin/time -f "%e %U %S" -o "$tmp/bench.time" \
    target/release/ferry-bench-apiserver --kubeconfig "$kubeconfig" --server-pid "$server_pid" "$@"
server_cpu_after=$(cpu_seconds "$server_pid")
read -r bench_wall bench_user bench_sys <"$tmp/bench.time"
echo
echo "| CPU during the bench run ($(nproc) cores, shared) | seconds |"
echo "|---|---|"
echo "| wall time of the load generator | $bench_wall |"
echo "| load generator CPU (user + system) | $(awk -v u="$bench_user" -v s="$bench_sys" 'BEGIN { printf "%.2f", u + s }') |"
echo "| server CPU (user + system) | $(awk -v a="$server_cpu_before" -v b="$server_cpu_after" 'BEGIN { printf "%.2f", b - a }') |"

if [[ -n "$perf_pid" ]]; then
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    perf_pid=""
    perf report -i "$tmp/perf.data" --no-children --percent-limit 0.5 --stdio -g none \
        --sort symbol 2>/dev/null >"${TMPDIR:-/tmp}/ferry-bench-perf.txt" || true
    perf report -i "$tmp/perf.data" --children --percent-limit 2 --stdio -g none \
        --sort symbol 2>/dev/null >"${TMPDIR:-/tmp}/ferry-bench-perf-children.txt" || true
    echo
    echo "perf reports: ${TMPDIR:-/tmp}/ferry-bench-perf.txt (self), ferry-bench-perf-children.txt (inclusive)"
fi

status() { grep -E "^(VmRSS|VmHWM):" "/proc/$server_pid/status" | tr -s ' \t' ' ' | paste -sd ';'; }
echo
echo "| after the load | figure |"
echo "|---|---|"
echo "| server memory (bench done, watchers closed) | $(status) |"
pods_total=$( { /usr/bin/time -f "%e" -o "$tmp/kubectl.time" \
    env KUBECONFIG="$kubeconfig" kubectl get pods -A --no-headers | wc -l; } )
echo "| \`kubectl get pods -A --no-headers \| wc -l\` | $pods_total lines in $(cat "$tmp/kubectl.time") s |"
# kubectl pages by 500 and, past a burst of 10, waits on its own client-side
# rate limiter; one unpaged request shows what the server itself takes.
pods_total=$( { /usr/bin/time -f "%e" -o "$tmp/kubectl.time" \
    env KUBECONFIG="$kubeconfig" kubectl get pods -A --no-headers --chunk-size=0 | wc -l; } )
echo "| \`kubectl get pods -A --no-headers --chunk-size=0 \| wc -l\` | $pods_total lines in $(cat "$tmp/kubectl.time") s |"
echo "| server memory (after both kubectl runs, the unpaged one last) | $(status) |"
echo "| load average at the end | $(cut -d' ' -f1-3 /proc/loadavg) |"
echo "| data dir size | $(du -sh "$tmp/data" | cut -f1) (store/objects.redb $(du -h "$tmp/data/store/objects.redb" | cut -f1)) |"
