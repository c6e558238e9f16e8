#!/usr/bin/env bash
# Transparent capture measured as a mesh is deployed: a client pod and a server pod.
#
# Usage: bench/capture.sh [--quick] [--perf] [--docs FILE] [-h|--help]
#
# Each "pod" is a network namespace with its app and its proxy inside; a client pod (A) and
# a server pod (B) are joined by a veth. The load generator (oha) is the client pod's app,
# an nginx serving a 1 KiB file on port 8080 the server pod's. Paths, side by side in one
# run, repetitions interleaved round-robin:
#
#   direct-ns      oha -> backend over the veth, no proxy (the baseline)
#   nginx          oha -> nginx in A (127.0.0.1) ==mTLS==> nginx in B -> backend
#   haproxy        oha -> HAProxy in A (127.0.0.1) ==mTLS==> HAProxy in B -> backend
#   weft-explicit  oha -> Weft's outbound listener in A (127.0.0.1, Host: backend)
#                  ==mTLS, HTTP/1.1 on pooled connections==> Weft in B -> backend
#   weft-iptables  oha calls http://B:8080/ unmodified; the nat rules of
#                  `--capture iptables` send it to Weft in A, which routes it by its original
#                  destination ==mTLS==> Weft in B (capturing too) -> backend
#   weft-ebpf      the same with `--capture ebpf`: the kernel sends oha's connect to the
#                  proxy (cgroup connect4), and the hops app <-> proxy in both pods pass
#                  socket to socket (sockops + sk_msg), the proxies and apps being in their
#                  pod's cgroup
#
# The four proxy-less and explicit paths share one pod pair; each capture mode has a pair of
# its own, since capture changes the whole namespace (its nat table, conntrack). Every proxy
# runs one worker thread (nginx: one worker; HAProxy: nbthread 1). Measured at a fixed rate
# (BENCH_RATE RPS over BENCH_CONNS connections, --latency-correction): p50, p99, added p50
# over direct-ns, and CPU per request of both proxies together (utime+stime from
# /proc/PID/stat, whole process trees, over the 2xx answers), split into user space and
# kernel. Medians over BENCH_REPS repetitions. Raw data under bench/results/capture-<UTC>/
# (git-ignored); the section "## Transparent capture in the namespace topology" is printed
# and, with --docs, replaced in FILE. With --perf, each path with proxies has one more run,
# under perf record (both proxies' process trees), and the section shows where the pair's
# CPU goes: user space, and the kernel's share split by what it did (bench/lib/cpu-profile.py).
#
# Needs root (namespaces, cgroups, iptables, eBPF), ip, iptables, nginx, haproxy, openssl,
# curl, python3, setpriv, oha (bench/run.sh installs it into bench/.tools/bin; or set OHA)
# and a weft binary (WEFT_BIN). Builds nothing. Traffic stays in the namespaces it makes;
# on exit it stops what it started, by PID, and deletes its namespaces and cgroups.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
LIB="$BENCH_DIR/lib/benchlib.py"
# shellcheck source-path=SCRIPTDIR source=lib/certs.sh disable=SC1091
source "$BENCH_DIR/lib/certs.sh"
HEADING="## Transparent capture in the namespace topology"
ORIG_CMD="bench/capture.sh${*:+ $*}"

usage() {
  cat <<'EOF'
Usage: bench/capture.sh [options]

Weft with eBPF capture, with iptables capture and explicit, against nginx and HAProxy
pairs, with a client pod and a server pod (network namespaces) each holding its app and
its proxy.

Options:
  --quick        smoke run: short runs, 1 repetition
  --perf         one more run per path under perf record (cpu-clock samples with call
                 stacks, BENCH_PERF_DURATION s): where each pair's CPU goes, kernel
                 work split into waking the other side, sk_msg, TCP/IP, waiting,
                 other syscalls
  --docs FILE    replace the section "## Transparent capture in the namespace topology"
                 of FILE with this run's (appended if FILE has none)
  -h, --help     this text

Environment (defaults for a full run, --quick in brackets; durations in seconds):
  BENCH_REPS          repetitions, interleaved across paths      3    [1]
  BENCH_RATE          fixed request rate (RPS)                    1000
  BENCH_CONNS         connections                                 16
  BENCH_LAT_DURATION  one fixed-rate run                          20   [5]
  BENCH_WARMUP        warm-up before each run                     2    [1]
  BENCH_SYSCALLS      count syscalls and context switches (perf)  1 (0: off)
  BENCH_PERF_DURATION the profiled run of --perf                  10   [5]
  CAPTURE_PATHS       paths, comma separated (direct-ns required)
                      direct-ns,nginx,haproxy,weft-explicit,weft-iptables,weft-ebpf
  WEFT_BIN            weft binary (default target/release/weft)
  OHA                 oha binary  (default bench/.tools/bin/oha, else oha on PATH)
EOF
}

QUICK=0 DOCS_OUT="" PROFILE=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --perf) PROFILE=1 ;;
    --docs) [[ $# -ge 2 ]] || { echo "capture.sh: --docs needs a FILE" >&2; exit 2; }
            DOCS_OUT=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "capture.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

if [[ $QUICK == 1 ]]; then d_reps=1 d_lat=5 d_warm=1 d_perf=5; else d_reps=3 d_lat=20 d_warm=2 d_perf=10; fi
REPS=${BENCH_REPS:-$d_reps}
RATE=${BENCH_RATE:-1000}
CONNS=${BENCH_CONNS:-16}
LAT_DUR=${BENCH_LAT_DURATION:-$d_lat}
WARMUP=${BENCH_WARMUP:-$d_warm}
PERF_DUR=${BENCH_PERF_DURATION:-$d_perf}
# Count each proxy's syscalls and context switches during the warm-ups (perf stat).
SYSCALLS=${BENCH_SYSCALLS:-1}
IFS=, read -r -a PATHS <<<"${CAPTURE_PATHS:-direct-ns,nginx,haproxy,weft-explicit,weft-iptables,weft-ebpf}"
WEFT_BIN=${WEFT_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/weft}
if [[ -z ${OHA:-} ]]; then
  OHA=$BENCH_DIR/.tools/bin/oha
  [[ -x $OHA ]] || OHA=$(command -v oha || true)
fi
BODY_SIZE=1024
APP_PORT=8080
APP_UID=65534  # the apps that are captured run as nobody; the proxies as root

for v in REPS RATE CONNS LAT_DUR WARMUP PERF_DUR; do
  [[ ${!v} =~ ^[0-9]+$ && ${!v} -gt 0 ]] || { echo "capture.sh: $v=${!v} must be a positive integer" >&2; exit 2; }
done
for p in "${PATHS[@]}"; do
  case $p in direct-ns|nginx|haproxy|weft-explicit|weft-iptables|weft-ebpf) ;;
    *) echo "capture.sh: unknown path '$p' in CAPTURE_PATHS" >&2; exit 2 ;; esac
done
has_path() { [[ " ${PATHS[*]} " == *" $1 "* ]]; }
has_path direct-ns || { echo "capture.sh: CAPTURE_PATHS must include direct-ns (the baseline)" >&2; exit 2; }

RUN_ID=capture-$(date -u +%Y%m%d-%H%M%S)
RUN_DIR="$BENCH_DIR/results/$RUN_ID"
mkdir -p "$RUN_DIR"/{logs,conf,certs,lat,meta}
exec > >(tee -a "$RUN_DIR/run.log") 2>&1

log()  { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die()  { printf '[%s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }

# ------------------------------------------------------------------ pods, processes, cleanup

TAG=$$
CGROUP_ROOT=/run/weft-bench-cgroup2
STARTED_PIDS=() NAMESPACES=() CGROUPS=()

cleanup() {
  local rc=$? pid ns cg
  trap - EXIT INT TERM
  for pid in "${STARTED_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 100); do
    local alive=0
    for pid in "${STARTED_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [[ $alive == 0 ]] && break
    sleep 0.1
  done
  for pid in "${STARTED_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  if [[ ${#STARTED_PIDS[@]} -gt 0 ]]; then wait "${STARTED_PIDS[@]}" 2>/dev/null || true; fi
  for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  for cg in "${CGROUPS[@]}"; do rmdir "$cg" 2>/dev/null || true; done
  [[ $rc == 0 ]] || echo "capture.sh: failed (exit $rc); logs and raw data in $RUN_DIR" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# pod_pair KEY N: namespaces ${KEY}a (client pod) and ${KEY}b (server pod) joined by a veth,
# addresses 10.215.0.(4N+1) and (4N+2); sets NS_A_KEY, NS_B_KEY, IP_B_KEY.
pod_pair() {
  local key=$1 n=$2 a="wcap${TAG}${1}a" b="wcap${TAG}${1}b"
  ip netns add "$a"; NAMESPACES+=("$a")
  ip netns add "$b"; NAMESPACES+=("$b")
  ip -n "$a" link set lo up
  ip -n "$b" link set lo up
  ip link add "wc${TAG}${key}ab" netns "$a" type veth peer name "wc${TAG}${key}ba" netns "$b"
  ip -n "$a" addr add "10.215.0.$((4 * n + 1))/30" dev "wc${TAG}${key}ab"
  ip -n "$b" addr add "10.215.0.$((4 * n + 2))/30" dev "wc${TAG}${key}ba"
  # 65535, the veth maximum, as close to loopback's MTU as the bench's other pairs.
  ip -n "$a" link set "wc${TAG}${key}ab" mtu 65535 up
  ip -n "$b" link set "wc${TAG}${key}ba" mtu 65535 up
  printf -v "NS_A_$key" '%s' "$a"
  printf -v "NS_B_$key" '%s' "$b"
  printf -v "IP_B_$key" '%s' "10.215.0.$((4 * n + 2))"
}

# pod_cgroup NAME VAR: a cgroup (v2) for one pod, on a mount outside /sys (`ip netns exec`
# mounts a fresh sysfs, where the host's cgroups are not seen); its path in VAR.
pod_cgroup() {
  if ! grep -q " $CGROUP_ROOT cgroup2 " /proc/self/mounts; then
    mkdir -p "$CGROUP_ROOT"
    mount -t cgroup2 none "$CGROUP_ROOT"
  fi
  local path="$CGROUP_ROOT/weft-bench-$TAG-$1"
  mkdir "$path"
  CGROUPS+=("$path")
  printf -v "$2" '%s' "$path"
}

# in_ns NS CGROUP UID: sets IN_NS to the command prefix that runs a command in namespace
# NS, in CGROUP ("-": none), as UID ("-": root). Each step of it execs.
in_ns() {
  local ns=$1 cgroup=$2 uid=$3
  IN_NS=(ip netns exec "$ns")
  if [[ $cgroup != - ]]; then IN_NS+=(sh -c "echo \$\$ > $cgroup/cgroup.procs && exec \"\$@\"" sh); fi
  if [[ $uid != - ]]; then IN_NS+=(setpriv --reuid "$uid" --regid "$uid" --clear-groups); fi
  IN_NS+=(env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY)
}

# run_in NS CGROUP UID CMD...: CMD there (see in_ns).
run_in() {
  in_ns "$1" "$2" "$3"; shift 3
  "${IN_NS[@]}" "$@"
}

# start_bg NAME NS CGROUP CMD...: CMD in the background as root, logging to logs/NAME.log;
# its PID (CMD's own: the background shell execs it) in PID_<NAME>.
start_bg() {
  local name=$1 ns=$2 cgroup=$3; shift 3
  in_ns "$ns" "$cgroup" -
  exec_in_ns() { exec "${IN_NS[@]}" "$@"; }
  exec_in_ns "$@" >"$RUN_DIR/logs/$name.log" 2>&1 &
  STARTED_PIDS+=("$!")
  printf -v "PID_$name" '%s' "$!"
  echo "$name $! $ns $cgroup $*" >>"$RUN_DIR/meta/pids.txt"
}

# wait_http NS URL [HOST]: until URL answers 200 from NS (as root).
wait_http() {
  local i
  for i in $(seq 150); do
    run_in "$1" - - curl -sf -o /dev/null -m 2 -H "Host: ${3:-backend}" "$2" && return 0
    sleep 0.1
  done
  tail -n 20 "$RUN_DIR"/logs/*.log >&2
  die "$2 never answered 200 in $1"
}

# ------------------------------------------------------------------ configuration

make_certs() {
  local d="$RUN_DIR/certs" svc
  "$WEFT_BIN" cert ca --out "$d" --trust-domain weft.local >"$RUN_DIR/logs/weft-cert.log" 2>&1
  for svc in client backend; do
    "$WEFT_BIN" cert issue --ca-dir "$d" --service "$svc" --namespace default --out "$d" \
      >>"$RUN_DIR/logs/weft-cert.log" 2>&1
  done
  # nginx checks the server against a host name, so the peers' server certificate also has
  # DNS:backend; both peers check the other side as Weft does.
  openssl_leaf "$d" backend-dns "URI:spiffe://weft.local/ns/default/svc/backend,DNS:backend"
  cat "$d/client.pem" "$d/client-key.pem" >"$d/client-bundle.pem"
  cat "$d/backend-dns.pem" "$d/backend-dns-key.pem" >"$d/backend-dns-bundle.pem"
}

# nginx_conf NAME BODY: an nginx.conf for one process, BODY inside http {}.
nginx_conf() {
  local d="$RUN_DIR/conf/$1"
  mkdir -p "$d/tmp"
  cat >"$d/nginx.conf" <<EOF
user root;
worker_processes ${3:-1};
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
    client_body_temp_path $d/tmp/body; proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi; uwsgi_temp_path $d/tmp/uwsgi; scgi_temp_path $d/tmp/scgi;
    access_log off; tcp_nodelay on; keepalive_requests 1000000; keepalive_timeout 300s;
$2
}
EOF
  echo "$d"
}

start_nginx() { # NAME NS CGROUP CONF_DIR
  start_bg "$1" "$2" "$3" nginx -p "$4" -e "$4/error.log" -c "$4/nginx.conf" -g 'daemon off;'
}

# The backend: every core, so it is never the bottleneck.
start_backend() { # NAME NS CGROUP
  local d
  d=$(nginx_conf "$1" "    sendfile on; open_file_cache max=16; default_type application/octet-stream;
    server { listen 0.0.0.0:$APP_PORT backlog=4096; root $RUN_DIR/conf/www; }" auto)
  start_nginx "$1" "$2" "$3" "$d"
}

start_nginx_pair() { # NS_A NS_B IP_B
  local c="$RUN_DIR/certs" d
  d=$(nginx_conf nginx-client "    upstream mtls { server $3:7243; keepalive 128; keepalive_requests 1000000; keepalive_timeout 300s; }
    server {
        listen 127.0.0.1:7240 backlog=4096;
        location / {
            proxy_pass https://mtls; proxy_http_version 1.1; proxy_set_header Connection \"\";
            proxy_set_header Host \$host;
            proxy_ssl_certificate $c/client.pem; proxy_ssl_certificate_key $c/client-key.pem;
            proxy_ssl_trusted_certificate $c/ca.pem; proxy_ssl_verify on; proxy_ssl_verify_depth 2;
            proxy_ssl_name backend; proxy_ssl_server_name on; proxy_ssl_protocols TLSv1.3;
            proxy_ssl_session_reuse on;
        }
    }")
  start_nginx nginx_a "$1" - "$d"
  d=$(nginx_conf nginx-server "    upstream app { server 127.0.0.1:$APP_PORT; keepalive 128; keepalive_requests 1000000; keepalive_timeout 300s; }
    server {
        listen $3:7243 ssl backlog=4096;
        ssl_certificate $c/backend-dns.pem; ssl_certificate_key $c/backend-dns-key.pem;
        ssl_protocols TLSv1.3; ssl_verify_client on; ssl_client_certificate $c/ca.pem; ssl_verify_depth 2;
        location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
    }")
  start_nginx nginx_b "$2" - "$d"
}

start_haproxy_pair() { # NS_A NS_B IP_B
  local c="$RUN_DIR/certs" d="$RUN_DIR/conf/haproxy" globals
  mkdir -p "$d"
  globals="global
    nbthread 1
    maxconn 4096
    ssl-server-verify required
defaults
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s"
  cat >"$d/client.cfg" <<EOF
$globals
frontend http_in
    mode http
    bind 127.0.0.1:7250
    default_backend mtls
backend mtls
    mode http
    http-reuse always
    server pair $3:7253 ssl crt $c/client-bundle.pem ca-file $c/ca.pem verify required verifyhost backend sni str(backend) ssl-min-ver TLSv1.3 alpn http/1.1
EOF
  cat >"$d/server.cfg" <<EOF
$globals
frontend mtls_in
    mode http
    bind $3:7253 ssl crt $c/backend-dns-bundle.pem ca-file $c/ca.pem verify required ssl-min-ver TLSv1.3 alpn http/1.1
    default_backend app
backend app
    mode http
    http-reuse always
    server app 127.0.0.1:$APP_PORT
EOF
  start_bg haproxy_a "$1" - haproxy -db -f "$d/client.cfg"
  start_bg haproxy_b "$2" - haproxy -db -f "$d/server.cfg"
}

# mesh_file KEY IP_B: the Service `backend` (port 8080), served by the server pod's Weft.
mesh_file() {
  cat >"$RUN_DIR/conf/mesh-$1.yaml" <<EOF
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: backend, namespace: default}
spec:
  ports: [{port: $APP_PORT, protocol: http}]
  endpoints:
    - {address: "$2:7143", mesh: true}
EOF
}

# weft_pair KEY CAPTURE CGROUP_A CGROUP_B: Weft in both pods of pair KEY, local mode,
# one thread, warn logs; CAPTURE is off, iptables or ebpf.
weft_pair() {
  local key=$1 capture=$2 cg_a=$3 cg_b=$4 c="$RUN_DIR/certs"
  local ns_a="NS_A_$key" ns_b="NS_B_$key" ip_b="IP_B_$key"
  mesh_file "$key" "${!ip_b}"
  local -a common=(env RUST_LOG=warn "$WEFT_BIN" proxy --log warn --namespace default
    --local "$RUN_DIR/conf/mesh-$key.yaml" --ca "$c/ca.pem" --threads 1 --capture "$capture")
  local -a a_capture=() b_capture=()
  if [[ $capture == ebpf ]]; then a_capture=(--capture-cgroup "$cg_a") b_capture=(--capture-cgroup "$cg_b"); fi
  start_bg "weft_${key}_b" "${!ns_b}" "$cg_b" "${common[@]}" "${b_capture[@]}" --service backend \
    --cert "$c/backend.pem" --key "$c/backend-key.pem" --inbound "0.0.0.0:7143" \
    --outbound 127.0.0.1:7140 --admin 127.0.0.1:7903 --app "127.0.0.1:$APP_PORT"
  start_bg "weft_${key}_a" "${!ns_a}" "$cg_a" "${common[@]}" "${a_capture[@]}" --service client \
    --cert "$c/client.pem" --key "$c/client-key.pem" --inbound "0.0.0.0:7143" \
    --outbound 127.0.0.1:7140 --admin 127.0.0.1:7901 --app 127.0.0.1:8081
  wait_http "${!ns_b}" http://127.0.0.1:7903/ready
  wait_http "${!ns_a}" http://127.0.0.1:7901/ready
}

declare -A URL NS CGROUP UID_OF ROLES HOST
setup() {
  mkdir -p "$RUN_DIR/conf/www"
  head -c "$BODY_SIZE" /dev/zero | tr '\0' x >"$RUN_DIR/conf/www/1k"
  make_certs

  # Pair p: no capture (direct, the peers, Weft explicit).
  pod_pair p 0
  start_backend backend_p "$NS_B_p" -
  URL[direct-ns]="http://$IP_B_p:$APP_PORT/1k"
  ROLES[direct-ns]="backend=$PID_backend_p"
  if has_path nginx; then
    start_nginx_pair "$NS_A_p" "$NS_B_p" "$IP_B_p"
    URL[nginx]="http://127.0.0.1:7240/1k"
    ROLES[nginx]="a=$PID_nginx_a b=$PID_nginx_b backend=$PID_backend_p"
  fi
  if has_path haproxy; then
    start_haproxy_pair "$NS_A_p" "$NS_B_p" "$IP_B_p"
    URL[haproxy]="http://127.0.0.1:7250/1k"
    ROLES[haproxy]="a=$PID_haproxy_a b=$PID_haproxy_b backend=$PID_backend_p"
  fi
  if has_path weft-explicit; then
    weft_pair p off - -
    URL[weft-explicit]="http://127.0.0.1:7140/1k"
    ROLES[weft-explicit]="a=$PID_weft_p_a b=$PID_weft_p_b backend=$PID_backend_p"
  fi
  for p in direct-ns nginx haproxy weft-explicit; do NS[$p]=$NS_A_p CGROUP[$p]=- UID_OF[$p]=- HOST[$p]=backend; done

  # Pair i: iptables capture in both pods; the app (oha) is not root, so it is captured.
  if has_path weft-iptables; then
    pod_pair i 1
    start_backend backend_i "$NS_B_i" -
    weft_pair i iptables - -
    URL[weft-iptables]="http://$IP_B_i:$APP_PORT/1k"
    ROLES[weft-iptables]="a=$PID_weft_i_a b=$PID_weft_i_b backend=$PID_backend_i"
    NS[weft-iptables]=$NS_A_i CGROUP[weft-iptables]=- UID_OF[weft-iptables]=$APP_UID HOST[weft-iptables]=""
  fi

  # Pair e: eBPF capture; each pod's app and proxy in the pod's cgroup.
  if has_path weft-ebpf; then
    pod_pair e 2
    local cg_a cg_b
    pod_cgroup a cg_a
    pod_cgroup b cg_b
    start_backend backend_e "$NS_B_e" "$cg_b"
    weft_pair e ebpf "$cg_a" "$cg_b"
    URL[weft-ebpf]="http://$IP_B_e:$APP_PORT/1k"
    ROLES[weft-ebpf]="a=$PID_weft_e_a b=$PID_weft_e_b backend=$PID_backend_e"
    NS[weft-ebpf]=$NS_A_e CGROUP[weft-ebpf]=$cg_a UID_OF[weft-ebpf]=$APP_UID HOST[weft-ebpf]=""
  fi
  local p
  for p in "${PATHS[@]}"; do echo "$p ${URL[$p]} ns=${NS[$p]} cgroup=${CGROUP[$p]} uid=${UID_OF[$p]} ${ROLES[$p]}" >>"$RUN_DIR/meta/paths.txt"; done
}

# ------------------------------------------------------------------ checks

# as_app PATH CMD...: CMD as the path's client app runs (namespace, cgroup, user).
as_app() { local p=$1; shift; run_in "${NS[$p]}" "${CGROUP[$p]}" "${UID_OF[$p]}" "$@"; }

metrics_of() { run_in "$1" - - curl -s -m 5 "http://127.0.0.1:$2/metrics"; }
metric_total() { metrics_of "$1" "$2" | awk -v m="$3" '$1 == m || index($1, m "{") == 1 { s += $NF } END { print s + 0 }'; }

checks() {
  local p out i
  for p in "${PATHS[@]}"; do
    local -a host=()
    [[ -n ${HOST[$p]} ]] && host=(-H "Host: ${HOST[$p]}")
    for i in $(seq 50); do
      out=$(as_app "$p" curl -s -m 5 "${host[@]}" -o /dev/null -w '%{http_code} %{size_download}' "${URL[$p]}" || true)
      [[ $out == "200 $BODY_SIZE" ]] && break
      sleep 0.2
    done
    [[ $out == "200 $BODY_SIZE" ]] || die "$p: GET ${URL[$p]} answered '$out', expected '200 $BODY_SIZE'"
    log "$p serves: GET ${URL[$p]} -> $out"
  done
  # The captured paths really went through both proxies, and eBPF's really skipped TCP/IP
  # on the local hops of both pods.
  local key
  for key in i e; do
    [[ $key == i ]] && ! has_path weft-iptables && continue
    [[ $key == e ]] && ! has_path weft-ebpf && continue
    local ns_a="NS_A_$key" ns_b="NS_B_$key"
    for side in "${!ns_a}:7901" "${!ns_b}:7903"; do
      [[ $(metric_total "${side%:*}" "${side#*:}" weft_http_requests_total) -ge 1 ]] \
        || die "pair $key: the proxy in ${side%:*} counted no request: the app's call was not captured"
    done
  done
  if has_path weft-ebpf; then
    local redirects a_local b_local
    redirects=$(metric_total "$NS_A_e" 7901 weft_capture_ebpf_redirects_total)
    a_local=$(metric_total "$NS_A_e" 7901 weft_capture_ebpf_local_messages_total)
    b_local=$(metric_total "$NS_B_e" 7903 weft_capture_ebpf_local_messages_total)
    [[ $redirects -ge 1 && $a_local -ge 1 && $b_local -ge 1 ]] \
      || die "weft-ebpf: redirects $redirects, local messages client $a_local / server $b_local: the eBPF path is not taken"
    echo "weft-ebpf after the check request: redirects $redirects, local messages client $a_local, server $b_local" >>"$RUN_DIR/meta/checks.txt"
    log "weft-ebpf: connect redirected by eBPF, local hops passed socket to socket in both pods"
  fi
}

# ------------------------------------------------------------------ measurement

sample() { python3 "$LIB" sample "$@"; }

# perf_start BASE ROLE=PID...: counts the syscalls and context switches of each proxy (roles
# a and b, whole process trees) into BASE.perf-ROLE.csv until perf_stop. perf stat is
# started in the background and stopped with SIGINT, by its own PID.
PERF_PIDS=()
perf_start() {
  PERF_PIDS=()
  [[ $SYSCALLS == 1 ]] || return 0
  local base=$1 spec role; shift
  for spec in "$@"; do
    role=${spec%%=*}
    [[ $role == a || $role == b ]] || continue
    perf stat -x, -e raw_syscalls:sys_enter,context-switches -p "$(python3 "$LIB" tree "${spec#*=}")" \
      -o "$base.perf-$role.csv" &
    PERF_PIDS+=($!)
  done
}
perf_stop() {
  local pid
  for pid in "${PERF_PIDS[@]}"; do kill -INT "$pid"; wait "$pid" || true; done
  PERF_PIDS=()
}

# oha_command P: sets OHA_CMD to oha at the fixed rate for path P (its Host header, if it
# has one), without the duration and the URL.
OHA_CMD=()
oha_command() {
  OHA_CMD=("$OHA" --no-tui --output-format json -w)
  [[ -n ${HOST[$1]} ]] && OHA_CMD+=(--host "${HOST[$1]}")
  OHA_CMD+=(-q "$RATE" --latency-correction -c "$CONNS")
}

# shellcheck disable=SC2086  # ROLES values are ROLE=PID lists, split on purpose
measure() {
  local rep=$1 p=$2 base="$RUN_DIR/lat/$2-r$1"
  oha_command "$p"
  log "rep $rep/$REPS  $p: $RATE RPS, $CONNS conns, ${LAT_DUR}s (+${WARMUP}s warm-up)"
  # Syscalls are counted in the warm-up, not the measured run: counting them slows each one.
  perf_start "$base" ${ROLES[$p]}
  as_app "$p" "${OHA_CMD[@]}" -z "${WARMUP}s" "${URL[$p]}" >"$base.warmup.json" 2>"$base.stderr" || die "oha failed ($base.stderr)"
  perf_stop
  sample "$base.before.json" ${ROLES[$p]}
  as_app "$p" "${OHA_CMD[@]}" -z "${LAT_DUR}s" "${URL[$p]}" >"$base.oha.json" 2>"$base.stderr" || die "oha failed ($base.stderr)"
  sample "$base.after.json" ${ROLES[$p]}
}

# profile P: one more fixed-rate run of path P under a system-wide perf record; the samples
# of each proxy's process tree are classified into RUN_DIR/perf/P.json
# (bench/lib/cpu-profile.py).
# shellcheck disable=SC2086  # ROLES values are ROLE=PID lists, split on purpose
profile() {
  local p=$1 spec role dir="$RUN_DIR/perf" perf_pid
  local -a specs=()
  oha_command "$p"
  log "profiling $p: $RATE RPS, ${PERF_DUR}s under perf record"
  for spec in ${ROLES[$p]}; do
    role=${spec%%=*}
    [[ $role == a || $role == b ]] && specs+=("$role=$(python3 "$LIB" tree "${spec#*=}")")
  done
  perf record -q -a -e cpu-clock -F 1999 -g -o "$dir/$p.data" -- sleep "$((PERF_DUR + 1))" 2>"$dir/$p.log" &
  perf_pid=$!
  as_app "$p" "${OHA_CMD[@]}" -z "${PERF_DUR}s" "${URL[$p]}" >"$dir/$p.oha.json" 2>"$dir/$p.stderr" || die "oha failed ($dir/$p.stderr)"
  wait "$perf_pid" || die "perf record failed ($dir/$p.log)"
  python3 "$BENCH_DIR/lib/cpu-profile.py" "$dir/$p.json" "$dir/$p.data" "${specs[@]}"
  rm -f "$dir/$p.data"
}

rotated() {
  local n=${#PATHS[@]} i
  for i in $(seq 0 $((n - 1))); do echo "${PATHS[$(( (i + $1 - 1) % n ))]}"; done
}

write_meta() {
  python3 -c '
import json, sys
json.dump(dict(a.split("=", 1) for a in sys.argv[2:]), open(sys.argv[1], "w"), indent=1)
' "$RUN_DIR/meta/versions.json" \
    "weft=$("$WEFT_BIN" --version 2>&1 | head -n 1)" \
    "commit=$(python3 "$LIB" git-commit "$ROOT" 2>/dev/null || echo unknown)" \
    "oha=$("$OHA" --version 2>&1 | head -n 1)" \
    "nginx=$(nginx -v 2>&1 | head -n 1)" \
    "haproxy=$(haproxy -v 2>&1 | head -n 1 | cut -d" " -f1-3)" \
    "kernel=$(uname -srm)" \
    "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')" \
    "nproc=$(nproc)" \
    "date=$(date -u '+%Y-%m-%d %H:%M UTC')" \
    "command=$ORIG_CMD"
  local paths_json; paths_json=$(printf '"%s",' "${PATHS[@]}")
  echo "{\"quick\": $QUICK, \"reps\": $REPS, \"rate\": $RATE, \"conns\": $CONNS, \"duration\": $LAT_DUR, \"perf_duration\": $((PROFILE == 1 ? PERF_DUR : 0)), \"paths\": [${paths_json%,}]}" >"$RUN_DIR/meta/params.json"
}

report() {
  python3 "$BENCH_DIR/lib/capture-report.py" "$RUN_DIR" "$HEADING"
}

main() {
  [[ $EUID -eq 0 ]] || die "needs root (network namespaces, cgroups, iptables, eBPF)"
  local t
  for t in ip iptables nginx openssl curl python3 setpriv; do command -v "$t" >/dev/null || die "$t is required"; done
  if has_path haproxy; then command -v haproxy >/dev/null || die "haproxy is required (apt-get install haproxy), or leave it out of CAPTURE_PATHS"; fi
  [[ -n $OHA && -x $OHA ]] || die "oha not found (bench/run.sh installs it into bench/.tools/bin; or set OHA)"
  [[ -x $WEFT_BIN ]] || die "no weft binary at $WEFT_BIN (cargo build --release -p weft, or set WEFT_BIN)"
  if [[ $PROFILE == 1 ]] && ! perf record -q -a -e cpu-clock -g -o /dev/null -- true >/dev/null 2>&1; then
    die "--perf needs perf record (apt-get install linux-perf)"
  fi
  if [[ $SYSCALLS == 1 ]] && ! perf stat -e raw_syscalls:sys_enter,context-switches -- true >/dev/null 2>&1; then
    die "perf cannot count syscalls here (apt-get install linux-perf; tracefs mounted), or set BENCH_SYSCALLS=0"
  fi
  log "results: $RUN_DIR; weft: $WEFT_BIN; paths: ${PATHS[*]}"
  setup
  checks
  write_meta
  local rep p
  for rep in $(seq "$REPS"); do
    for p in $(rotated "$rep"); do measure "$rep" "$p"; done
  done
  if [[ $PROFILE == 1 ]]; then
    mkdir -p "$RUN_DIR/perf"
    for p in "${PATHS[@]}"; do [[ $p == direct-ns ]] || profile "$p"; done
  fi
  if has_path weft-ebpf; then
    echo "weft-ebpf after the runs: client $(metrics_of "$NS_A_e" 7901 | grep '^weft_capture_ebpf' | tr '\n' ' ')" >>"$RUN_DIR/meta/checks.txt"
    echo "weft-ebpf after the runs: server $(metrics_of "$NS_B_e" 7903 | grep '^weft_capture_ebpf' | tr '\n' ' ')" >>"$RUN_DIR/meta/checks.txt"
  fi
  report
  if [[ -n $DOCS_OUT ]]; then
    python3 "$BENCH_DIR/lib/replace_section.py" "$DOCS_OUT" "$RUN_DIR/section.md" "$HEADING"
    log "replaced '$HEADING' in $DOCS_OUT"
  fi
  log "raw results: $RUN_DIR; run took $SECONDS s"
}

main
