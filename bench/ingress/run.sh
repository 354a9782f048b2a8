#!/usr/bin/env bash
# `ferry ingress` side by side with nginx and HAProxy (issue 8, point 8).
#
# One backend (nginx, 1 worker, static tiny / 1 KB / 100 KB files, on the
# load generator's CPU) behind three proxies, each pinned to the same CPU
# with one worker:
#   * ferry ingress: tokio's default multi-thread runtime sizes itself by
#     available_parallelism; under `taskset -c $PROXY_CPU` that is 1, so
#     it runs ONE worker thread (checked and printed below);
#   * nginx: worker_processes 1, upstream keepalive 64;
#   * HAProxy: nbthread 1, http-reuse always.
# wrk -t1 -c64 -d5s --latency on $CLIENT_CPU, runs interleaved (for each
# round, for each size: ferry, nginx, haproxy). Rows: 1 host and 10,000
# hosts (Ferry: Ingress objects through `ferry apiserver`; nginx: 10,000
# `server` blocks; HAProxy: a 10,000-line host map), TLS handshakes/s
# (openssl s_time -new, no SNI, every proxy serving a self-signed ECDSA
# P-256 certificate), config-change latency (patch -> served, 100 samples;
# nginx reload -> served for reference), the time to load 10,000
# Ingresses and VmRSS/VmHWM.
#
# Usage (as root): bench/ingress/run.sh
# Environment: ROUNDS (default 2), DURATION (wrk seconds, default 5),
#   HOSTS (default 10000), PROXY_CPU (default 1), CLIENT_CPU (default 0),
#   SKIP_PERF=1 (no perf record of ferry at the end),
#   QUICK=1 (only 1 host, tiny and 1 KB, ferry/nginx/HAProxy, then a perf
#   profile of ferry serving tiny responses unless SKIP_PERF=1: the loop
#   for work on the proxy's request path).
set -euo pipefail
cd "$(dirname "$0")/../.."

if [[ $EUID -ne 0 ]]; then
    echo "run as root (nginx and HAProxy configs run as root)" >&2
    exit 1
fi


missing=()
for tool in ip:iproute2 wrk:wrk nginx:nginx-light haproxy:haproxy openssl:openssl taskset:util-linux; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool##*:}")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [[ -z ${FBI_IN_NETNS:-} ]]; then
    cargo build --release -p ferry -p ferry-bench-ingress
fi

# The API server rejects loopback endpoint addresses, so everything runs
# in a network namespace of its own, where the backend listens on
# 10.99.0.1 (an address on that namespace's lo) and the rest on 127.0.0.1.
if [[ -z ${FBI_IN_NETNS:-} ]]; then
    ns=fbingress-$$
    ip netns add "$ns"
    trap 'ip netns del "$ns"' EXIT
    ip netns exec "$ns" ip link set lo up
    ip netns exec "$ns" ip addr add 10.99.0.1/32 dev lo
    status=0
    FBI_IN_NETNS=$ns ip netns exec "$ns" "$PWD/bench/ingress/run.sh" "$@" || status=$?
    exit "$status"
fi
export RUST_BACKTRACE=0
ulimit -n 65536 2>/dev/null || true
ferry=$PWD/target/release/ferry
fbi=$PWD/target/release/ferry-bench-ingress

rounds=${ROUNDS:-2}
dur=${DURATION:-5}
hosts=${HOSTS:-10000}
pcpu=${PROXY_CPU:-1}
ccpu=${CLIENT_CPU:-0}
W=$(mktemp -d /tmp/bench-ingress.XXXXXX)
BE=10.99.0.1:39080
NG=127.0.0.1:39081
HA=127.0.0.1:39082
FE=127.0.0.1:39083
NGS=127.0.0.1:39443
HAS=127.0.0.1:39444
FES=127.0.0.1:39445
FEH=127.0.0.1:39254

pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

echo "## ferry ingress benchmark"
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ); nproc: $(nproc); kernel: $(uname -r); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
echo "tools: $(wrk -v 2>&1 | head -1); $(nginx -v 2>&1); $(haproxy -v | head -1); $(openssl version)"
echo "network: network namespace $FBI_IN_NETNS (backend on 10.99.0.1, the rest on 127.0.0.1)"
echo "pinning: proxies on CPU $pcpu; wrk, openssl s_time, backend nginx, API server and the bench client on CPU $ccpu"
echo "wrk -t1 -c64 -d${dur}s --latency; rounds: $rounds; hosts: $hosts; work dir: $W"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

# --- files: backend content, certificate, configs ---
mkdir -p "$W/www" "$W/ng" "$W/be" "$W/api"
printf 'ok' >"$W/www/tiny"
head -c 1024 /dev/zero | tr '\0' 'a' >"$W/www/1k"
head -c 102400 /dev/zero | tr '\0' 'a' >"$W/www/100k"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj "/CN=bench" -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
cat "$W/cert.pem" "$W/key.pem" >"$W/both.pem"

cat >"$W/be/nginx.conf" <<CONF
user root; worker_processes 1; daemon off; pid $W/be/pid; error_log $W/be/error.log;
events { worker_connections 4096; }
http {
  access_log off; default_type application/octet-stream; sendfile on; tcp_nopush on;
  client_body_temp_path $W/be/cb; proxy_temp_path $W/be/pt; fastcgi_temp_path $W/be/ft;
  uwsgi_temp_path $W/be/ut; scgi_temp_path $W/be/st;
  keepalive_requests 1000000;
  server { listen $BE reuseport backlog=4096; root $W/www;
    location = /tiny { } location = /1k { } location = /100k { }
    location / { return 200 "ok\n"; } }
}
CONF

# nginx proxy config for $1 hosts; the cc.bench server (config change) is
# an included file.
nginx_conf() {
    local n=$1 i
    {
        echo "user root; worker_processes 1; daemon off; pid $W/ng/pid; error_log $W/ng/error.log;"
        echo "events { worker_connections 4096; }"
        echo "http {"
        echo "  access_log off; server_names_hash_max_size 32768; server_names_hash_bucket_size 64;"
        echo "  client_body_temp_path $W/ng/cb; proxy_temp_path $W/ng/pt; fastcgi_temp_path $W/ng/ft;"
        echo "  uwsgi_temp_path $W/ng/ut; scgi_temp_path $W/ng/st; keepalive_requests 1000000;"
        echo "  ssl_certificate $W/cert.pem; ssl_certificate_key $W/key.pem;"
        echo "  upstream be { server $BE; keepalive 64; keepalive_requests 1000000; }"
        # The request headers ingress-nginx's template sets (and Ferry
        # sets), so that every proxy does the same work per request.
        echo "  proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header Host \$host;"
        echo "  proxy_set_header X-Request-ID \$request_id; proxy_set_header X-Real-IP \$remote_addr;"
        echo "  proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Host \$host;"
        echo "  proxy_set_header X-Forwarded-Port \$server_port; proxy_set_header X-Forwarded-Proto \$scheme;"
        echo "  proxy_set_header X-Forwarded-Scheme \$scheme; proxy_set_header X-Scheme \$scheme;"
        echo "  server { listen $NG reuseport backlog=4096 default_server; listen $NGS ssl default_server; return 404; }"
        echo "  include $W/ng/cc.conf;"
        for ((i = 0; i < n; i++)); do
            echo "  server { listen $NG; server_name h$i.bench; location / { proxy_pass http://be; } }"
        done
        echo "}"
    } >"$W/ng/nginx.conf"
}
nginx_cc() {
    echo "server { listen $NG; server_name cc.bench; location = /cc-$1 { proxy_pass http://be; } location / { return 404; } }" >"$W/ng/cc.conf"
}
haproxy_conf() {
    local n=$1 i
    for ((i = 0; i < n; i++)); do echo "h$i.bench be"; done >"$W/hosts.map"
    cat >"$W/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 9000
  pidfile $W/haproxy.pid
  tune.ssl.default-dh-param 2048
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend fe
  bind $HA
  bind $HAS ssl crt $W/both.pem
  use_backend %[req.hdr(host),lower,map($W/hosts.map)]
  # The request headers ingress-nginx sets (and Ferry sets).
  option forwardfor
  http-request set-header X-Request-ID %[uuid]
  http-request set-header X-Real-IP %[src]
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Forwarded-Port %[dst_port]
  http-request set-header X-Forwarded-Proto http if !{ ssl_fc }
  http-request set-header X-Forwarded-Proto https if { ssl_fc }
  http-request set-header X-Forwarded-Scheme %[req.hdr(x-forwarded-proto)]
  http-request set-header X-Scheme %[req.hdr(x-forwarded-proto)]
backend be
  http-reuse always
  server s1 $BE
CONF
}

start_nginx() { # conf -> pid
    taskset -c "$2" nginx -p "$W" -c "$1" >/dev/null 2>&1 &
    pids+=($!)
}
wait_port() { # host:port host path
    "$fbi" poll --http "$1" --host "$2" --path "$3" --timeout-s 30 >/dev/null
}

for a in $BE $NG $HA $FE $NGS $HAS $FES $FEH; do
    if ss -Hltn "sport = :${a##*:}" | grep -q .; then echo "port ${a##*:} is in use" >&2; exit 1; fi
done

# --- start: backend, API server, Ferry (1 host), nginx, HAProxy ---
start_nginx "$W/be/nginx.conf" "$ccpu"
"$ferry" apiserver --data-dir "$W/api" --bind-address 127.0.0.1:0 >"$W/apiserver.out" 2>"$W/apiserver.log" &
apipid=$!
pids+=($apipid)
taskset -pc "$ccpu" "$apipid" >/dev/null
for _ in $(seq 300); do [[ -s $W/api/kubeconfig ]] && grep -q "listening" "$W/apiserver.out" 2>/dev/null && break; sleep 0.1; done
sleep 0.5
KC=$W/api/kubeconfig
wait_port "$BE" x /tiny
taskset -c "$ccpu" "$fbi" setup --kubeconfig "$KC" --backend-ip 10.99.0.1 --backend-port 39080 --from 0 --to 1

start_ferry() {
    taskset -c "$pcpu" "$ferry" ingress --kubeconfig "$KC" --http-address "$FE" --https-address "$FES" \
        --healthz-address "$FEH" --update-status false >>"$W/ferry.log" 2>&1 &
    ferrypid=$!
    pids+=($ferrypid)
}
t0=$(date +%s%N)
start_ferry
wait_port "$FEH" x /healthz
t1=$(date +%s%N)
wait_port "$FE" h0.bench /tiny
t2=$(date +%s%N)
echo "ferry ingress (1 host): start -> /healthz 200 $(((t1 - t0) / 1000000)) ms, -> h0 served $(((t2 - t0) / 1000000)) ms"
echo "ferry ingress threads: $(ls /proc/$ferrypid/task | wc -l) ($(cat /proc/$ferrypid/task/*/comm | sort | uniq -c | xargs)); affinity:$(taskset -pc $ferrypid | cut -d: -f2)"

nginx_conf 1
nginx_cc 0
start_nginx "$W/ng/nginx.conf" "$pcpu"
haproxy_conf 1
taskset -c "$pcpu" haproxy -f "$W/haproxy.cfg" -db >"$W/haproxy.log" 2>&1 &
hapid=$!
pids+=($hapid)
wait_port "$NG" h0.bench /tiny
wait_port "$HA" h0.bench /tiny

mem() { awk '/VmRSS|VmHWM/ { printf "%s %d MiB  ", $1, $2 / 1024 }' "/proc/$1/status"; }
ngmem() { # master + workers
    local pid total=0 p
    pid=$(cat "$W/ng/pid")
    for p in $pid $(pgrep -P "$pid"); do total=$((total + $(awk '/VmRSS/ {print $2}' /proc/$p/status))); done
    echo "VmRSS(master+worker) $((total / 1024)) MiB"
}

cat >"$W/hosts.lua" <<LUA
local i = 0
local n = tonumber(os.getenv("NHOSTS"))
local p = os.getenv("WPATH")
request = function()
  i = (i + 1) % n
  return wrk.format("GET", p, { Host = "h" .. i .. ".bench" })
end
LUA

RES=$W/results.tsv
: >"$RES"
# The CPU the proxy (or, for direct, the backend) used during a run, in
# clock ticks (utime + stime of /proc/<pid>/stat, all its threads).
ticks_hz=$(getconf CLK_TCK)
server_pids() {
    case $1 in
    ferry) echo "$ferrypid" ;;
    nginx) pgrep -P "$(cat "$W/ng/pid")" ;;
    haproxy) echo "$hapid" ;;
    direct) pgrep -P "$(cat "$W/be/pid")" ;;
    esac
}
ticks() {
    local t=0 p
    for p in "$@"; do t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat"))); done
    echo "$t"
}
# wrk_run label hosts size addr
wrk_run() {
    local label=$1 n=$2 size=$3 addr=$4 out rps p99 p50 sp t0 t1 cpu us
    sp=$(server_pids "$label" | xargs)
    t0=$(ticks $sp)
    if ((n == 1)); then
        out=$(taskset -c "$ccpu" wrk -t1 -c64 -d"${dur}s" --latency -H "Host: h0.bench" "http://$addr/$size")
    else
        out=$(NHOSTS=$n WPATH=/$size taskset -c "$ccpu" wrk -t1 -c64 -d"${dur}s" --latency -s "$W/hosts.lua" "http://$addr/")
    fi
    t1=$(ticks $sp)
    rps=$(awk '/Requests\/sec/ { print $2 }' <<<"$out")
    cpu=$(awk -v t=$((t1 - t0)) -v hz="$ticks_hz" -v d="$dur" 'BEGIN { printf "%.0f", 100 * t / hz / d }')
    us=$(awk -v t=$((t1 - t0)) -v hz="$ticks_hz" -v r="$rps" -v d="$dur" 'BEGIN { printf "%.1f", 1e6 * t / hz / (r * d) }')
    p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
    p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
    if grep -q "Non-2xx\|Socket errors" <<<"$out"; then
        echo "WARNING $label $n $size: $(grep 'Non-2xx\|Socket errors' <<<"$out" | tr '\n' ' ')"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s%%\t%s\n' "$label" "$n" "$size" "$rps" "$p50" "$p99" "$cpu" "$us" | tee -a "$RES"
}
matrix() { # hosts
    local n=$1 r size
    for ((r = 1; r <= rounds; r++)); do
        for size in tiny 1k 100k; do
            ((n == 1)) && wrk_run direct "$n" "$size" "$BE"
            wrk_run ferry "$n" "$size" "$FE"
            wrk_run nginx "$n" "$size" "$NG"
            wrk_run haproxy "$n" "$size" "$HA"
        done
    done
}
tls_run() {
    local r label addr out
    for ((r = 1; r <= rounds; r++)); do
        for label in ferry nginx haproxy; do
            case $label in ferry) addr=$FES ;; nginx) addr=$NGS ;; haproxy) addr=$HAS ;; esac
            out=$(taskset -c "$ccpu" openssl s_time -connect "$addr" -new -time "$dur" 2>&1 | grep 'real seconds' || true)
            awk -v l="$label" '{ printf "tls\t%s\t%d conns in %s s\t%.0f handshakes/s\n", l, $1, $4, $1 / $4 }' <<<"$out" | tee -a "$W/tls.tsv"
        done
    done
}
nginx_reload_cc() { # samples
    local i t0 t1
    for ((i = 1; i <= $1; i++)); do
        nginx_cc "$i"
        t0=$(date +%s%N)
        nginx -p "$W" -c "$W/ng/nginx.conf" -s reload 2>/dev/null
        wait_port "$NG" cc.bench "/cc-$i"
        t1=$(date +%s%N)
        echo "$(((t1 - t0) / 1000))"
    done | sort -n | awk '{ a[NR] = $1 } END { printf "nginx reload -> new path served, %d samples: p50 %.1f ms, max %.1f ms\n", NR, a[int((NR + 1) / 2)] / 1000, a[NR] / 1000 }'
}

if [[ -n ${HOLD:-} ]]; then
    # Keep everything up for manual measurements (stopped by a signal).
    echo "holding: ferry $FE (pid $ferrypid), nginx $NG (pid $(cat "$W/ng/pid")), haproxy $HA (pid $hapid), backend $BE, netns $FBI_IN_NETNS"
    sleep infinity &
    wait $! || true
    exit 0
fi
if [[ -n ${QUICK:-} ]]; then
    echo "### quick: 1 host (label hosts size req/s p50 p99 server-CPU% CPU-us/request)"
    for ((r = 1; r <= rounds; r++)); do
        for size in tiny 1k; do
            for label in ferry nginx haproxy; do
                case $label in ferry) a=$FE ;; nginx) a=$NG ;; haproxy) a=$HA ;; esac
                wrk_run "$label" 1 "$size" "$a"
            done
        done
    done
    if [[ -z ${SKIP_PERF:-} ]] && command -v perf >/dev/null; then
        (sleep 1 && perf record -F 1999 -g -p "$ferrypid" -o "$W/perf.data" -- sleep 3 >/dev/null 2>&1) &
        perfpid=$!
        taskset -c "$ccpu" wrk -t1 -c64 -d5s -H "Host: h0.bench" "http://$FE/tiny" | grep 'Requests/sec'
        wait "$perfpid" || true
        perf report -i "$W/perf.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null | grep '%' | grep -v '^#' | awk '{ $1 = $1 }; 1' | cut -c1-160 | sed -n 1,60p || true
        cp "$W/perf.data" /tmp/ferry-ingress-quick.perf
    fi
    exit 0
fi

echo "### 1 host: RPS and latency (label hosts size req/s p50 p99 server-CPU% CPU-us/request)"
matrix 1
echo
echo "### TLS handshakes (openssl s_time -new, TLS 1.3, ECDSA P-256, no SNI)"
tls_run
echo
echo "### memory, 1 host"
echo "ferry: $(mem "$ferrypid")"
echo "nginx: $(ngmem)"
echo "haproxy: $(mem "$hapid")"
echo
echo "### config change, 1 host"
taskset -c "$ccpu" "$fbi" change --kubeconfig "$KC" --http "$FE" --samples 100
nginx_reload_cc 10
echo

echo "### loading $hosts Ingresses with ferry ingress running (API server + client on CPU $ccpu)"
taskset -c "$ccpu" "$fbi" setup --kubeconfig "$KC" --backend-ip 10.99.0.1 --backend-port 39080 --from 1 --to "$hosts" --http "$FE"
echo "ferry after load: $(mem "$ferrypid")"
echo "apiserver: $(mem "$apipid")"
echo
echo "### restart ferry ingress with $hosts Ingresses present"
kill -INT "$ferrypid"
wait "$ferrypid" 2>/dev/null || true
t0=$(date +%s%N)
start_ferry
wait_port "$FEH" x /healthz
t1=$(date +%s%N)
wait_port "$FE" "h$((hosts - 1)).bench" /tiny
t2=$(date +%s%N)
echo "ferry ingress ($hosts hosts): start -> /healthz 200 $(((t1 - t0) / 1000000)) ms, -> last host served $(((t2 - t0) / 1000000)) ms"
echo "ferry after restart: $(mem "$ferrypid")"
taskset -c "$ccpu" "$fbi" sweep --http "$FE" --hosts "$hosts"
echo
echo "### nginx and HAProxy with $hosts hosts"
nginx_conf "$hosts"
t0=$(date +%s%N)
nginx -p "$W" -c "$W/ng/nginx.conf" -s reload
wait_port "$NG" "h$((hosts - 1)).bench" /tiny
t1=$(date +%s%N)
echo "nginx reload with $hosts server blocks -> last host served: $(((t1 - t0) / 1000000)) ms"
haproxy_conf "$hosts"
kill "$hapid"
wait "$hapid" 2>/dev/null || true
t0=$(date +%s%N)
taskset -c "$pcpu" haproxy -f "$W/haproxy.cfg" -db >>"$W/haproxy.log" 2>&1 &
hapid=$!
pids+=($hapid)
wait_port "$HA" "h$((hosts - 1)).bench" /tiny
t1=$(date +%s%N)
echo "haproxy start with a $hosts-line map -> last host served: $(((t1 - t0) / 1000000)) ms"
sleep 1
echo "nginx: $(ngmem); haproxy: $(mem "$hapid")"
echo
echo "### $hosts hosts: RPS and latency (wrk Lua script cycling the Host header, same for all)"
matrix "$hosts"
echo
echo "### config change, $hosts hosts"
if [[ -z ${SKIP_PERF:-} ]] && command -v perf >/dev/null; then
    perf record -F 499 -g -p "$ferrypid" -o "$W/perf-cc.data" -- sleep 15 >/dev/null 2>&1 &
    perfpid=$!
fi
taskset -c "$ccpu" "$fbi" change --kubeconfig "$KC" --http "$FE" --samples 100 --first 101
if [[ -n ${perfpid:-} ]]; then
    wait "$perfpid" || true
    echo "perf: ferry ingress during the first 15 s of these config changes"
    perf report -i "$W/perf-cc.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null | grep '%' | grep -v '^#' | awk '{ $1 = $1 }; 1' | cut -c1-160 | sed -n 1,30p || true
fi
nginx_reload_cc "${NGINX_RELOADS_10K:-5}"
echo "ferry at the end: $(mem "$ferrypid")"
echo

echo "### summary: median over rounds (req/s, p99), ferry / best of nginx, haproxy"
for n in 1 "$hosts"; do
    for size in tiny 1k 100k; do
        line="hosts=$n size=$size"
        for label in direct ferry nginx haproxy; do
            v=$(awk -F'\t' -v l="$label" -v n="$n" -v s="$size" '$1 == l && $2 == n && $3 == s { print $4 }' "$RES" | sort -n | awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)] }')
            p=$(awk -F'\t' -v l="$label" -v n="$n" -v s="$size" '$1 == l && $2 == n && $3 == s { print $6 }' "$RES" | tr '\n' ',' | sed 's/,$//')
            u=$(awk -F'\t' -v l="$label" -v n="$n" -v s="$size" '$1 == l && $2 == n && $3 == s { print $8 }' "$RES" | sort -n | awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)] }')
            [[ -n $v ]] && line+=" | $label ${v} (p99 $p; ${u} CPU-us/req)" && eval "rps_$label=$v" && eval "us_$label=$u"
        done
        best=$(awk -v a="$rps_nginx" -v b="$rps_haproxy" 'BEGIN { print (a > b) ? a : b }')
        line+=" | ferry/best req/s $(awk -v f="$rps_ferry" -v b="$best" 'BEGIN { printf "%.2f", f / b }')"
        line+=" | CPU per request best-of-others/ferry $(awk -v f="$us_ferry" -v a="$us_nginx" -v b="$us_haproxy" 'BEGIN { m = (a < b) ? a : b; printf "%.2f", m / f }')"
        echo "$line"
        unset rps_direct
    done
done
echo

if [[ -z ${SKIP_PERF:-} ]] && command -v perf >/dev/null; then
    echo "### perf: ferry ingress during wrk (tiny, $hosts hosts)"
    (sleep 1 && perf record -F 999 -g -p "$ferrypid" -o "$W/perf.data" -- sleep 3 >/dev/null 2>&1) &
    perfpid=$!
    NHOSTS=$hosts WPATH=/tiny taskset -c "$ccpu" wrk -t1 -c64 -d5s -s "$W/hosts.lua" "http://$FE/" | grep 'Requests/sec'
    wait "$perfpid" || true
    perf report -i "$W/perf.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null | grep '%' | grep -v '^#' | awk '{ $1 = $1 }; 1' | cut -c1-160 | sed -n 1,40p || true
fi
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
