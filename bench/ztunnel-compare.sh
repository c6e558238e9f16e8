#!/usr/bin/env bash
# Weft against istio's ztunnel: one run, one topology, four paths side by side.
#
# Usage: bench/ztunnel-compare.sh [--quick] [--docs FILE] [-h|--help]
#
# Everything happens in the two network namespaces of bench/lib/ztunnel-pair.sh (A, the
# client side, and B, the server side, joined by one veth). The load generator (oha) runs
# in A, an nginx backend serving a 1 KiB file listens on B's address, and each path is:
#
#   direct-ns  oha -> backend over the veth (the topology's own cost: the baseline)
#   ztunnel    oha -> ztunnel A (VIP capture, no iptables) ==HBONE: HTTP/2 CONNECT over
#              mTLS==> ztunnel B -> backend. ztunnel carries TCP only.
#   weft-l4    oha -> Weft client proxy, an --upstream binding of a `protocol: tcp` Service
#              (opaque bytes, no HTTP parsing) ==mTLS (ALPN weft-tcp)==> Weft server proxy
#              -> backend
#   weft-l7    oha -> Weft client proxy's outbound listener (HTTP, routed by Host) ==mTLS,
#              HTTP/1.1 over pooled connections==> Weft server proxy -> backend
#
# Each proxy runs with one worker thread; each Weft path has its own pair of processes, so
# every pair's CPU and memory are its own. Measured, with repetitions interleaved
# round-robin across the paths (the starting path rotates each repetition):
#   1. fixed rate (BENCH_RATE RPS over BENCH_CONNS connections, --latency-correction):
#      p50, p99, added p50 over direct-ns, and CPU per request of the pair (utime+stime of
#      both proxy processes from /proc/PID/stat, before and after, over the 2xx answers);
#   2. max RPS (BENCH_MAX_CONNS connections, no rate limit);
#   3. memory: peak RSS (VmHWM) and RSS after all runs, summed over both proxies of a pair.
# Medians over BENCH_REPS repetitions. Raw data (oha JSON, /proc samples, logs, configs)
# and results.json go to bench/results/ztunnel-<UTC timestamp>/ (git-ignored); the Markdown
# section "## Weft against ztunnel" is printed and saved there as section.md.
#
# Needs root (network namespaces), ip, nginx, curl, openssl, python3, the ztunnel built by
# bench/ztunnel.sh, oha (bench/.tools/bin/oha or OHA=...) and a weft binary (WEFT_BIN).
# Builds nothing. All traffic stays inside the two namespaces it creates; on exit (also on
# failure or Ctrl-C) it stops the processes it started, by PID, and deletes the namespaces.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
LIB="$BENCH_DIR/lib/benchlib.py"
HEADING="## Weft against ztunnel"
ORIG_CMD="bench/ztunnel-compare.sh${*:+ $*}"

usage() {
  cat <<'EOF'
Usage: bench/ztunnel-compare.sh [options]

Weft's L4 (opaque TCP) and L7 (HTTP) mTLS pairs against an istio ztunnel pair, in one run,
in one two-namespace topology, with direct-ns (no proxy) as the baseline.

Options:
  --quick        smoke run: short runs, 1 repetition
  --docs FILE    replace the section "## Weft against ztunnel" of FILE with this run's
                 (bench/lib/replace_section.py; appended if FILE has no such section)
  -h, --help     this text

Environment (defaults for a full run, --quick in brackets; durations in seconds):
  BENCH_REPS          repetitions, interleaved across paths      3    [1]
  BENCH_RATE          fixed request rate (RPS)                    1000
  BENCH_CONNS         connections at the fixed rate               16
  BENCH_LAT_DURATION  one fixed-rate run                          20   [5]
  BENCH_WARMUP        warm-up before each fixed-rate run          2    [1]
  BENCH_MAX_DURATION  one max-RPS run                             10   [3]
  BENCH_MAX_CONNS     connections for max RPS                     64
  BENCH_MAX_WARMUP    warm-up before each max-RPS run             1    [1]
  ZT_PATHS            paths, comma separated (direct-ns required)
                      direct-ns,ztunnel,weft-l4,weft-l7
  ZT_TASKSET          pin the proxies: "CPUS_A:CPUS_B" puts every client-side proxy
                      (ztunnel A, Weft clients) on CPUS_A and every server-side one on
                      CPUS_B, e.g. "0:1"; empty (default) pins nothing
  ZT_BACKEND_PORT     the backend's port in B                     8080
  WEFT_BIN            weft binary      (default target/release/weft; copy it if a build
                                        may replace it during the run)
  OHA                 oha binary       (default bench/.tools/bin/oha, else oha on PATH)
  ZTUNNEL_BIN         ztunnel binary   (default bench/.tools/bin/ztunnel)
  and the ZTP_* variables of bench/lib/ztunnel-pair.sh (ZTP_MTU, ZTP_NET, ZTP_TAG, ...).
EOF
}

# ------------------------------------------------------------------ options

QUICK=0 DOCS_OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --docs) [[ $# -ge 2 ]] || { echo "ztunnel-compare.sh: --docs needs a FILE" >&2; exit 2; }
            DOCS_OUT=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "ztunnel-compare.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

if [[ $QUICK == 1 ]]; then d_reps=1 d_lat=5 d_warm=1 d_max=3
else d_reps=3 d_lat=20 d_warm=2 d_max=10; fi
REPS=${BENCH_REPS:-$d_reps}
RATE=${BENCH_RATE:-1000}
CONNS=${BENCH_CONNS:-16}
LAT_DUR=${BENCH_LAT_DURATION:-$d_lat}
WARMUP=${BENCH_WARMUP:-$d_warm}
MAX_DUR=${BENCH_MAX_DURATION:-$d_max}
MAX_CONNS=${BENCH_MAX_CONNS:-64}
MAX_WARMUP=${BENCH_MAX_WARMUP:-1}
IFS=, read -r -a PATHS <<<"${ZT_PATHS:-direct-ns,ztunnel,weft-l4,weft-l7}"
ZT_TASKSET=${ZT_TASKSET:-}
BACKEND_PORT=${ZT_BACKEND_PORT:-8080}
WEFT_BIN=${WEFT_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/weft}
if [[ -z ${OHA:-} ]]; then
  OHA=$BENCH_DIR/.tools/bin/oha
  [[ -x $OHA ]] || OHA=$(command -v oha || true)
fi
BODY_SIZE=1024

for v in REPS RATE CONNS LAT_DUR WARMUP MAX_DUR MAX_CONNS MAX_WARMUP BACKEND_PORT; do
  [[ ${!v} =~ ^[0-9]+$ && ${!v} -gt 0 ]] || { echo "ztunnel-compare.sh: $v=${!v} must be a positive integer" >&2; exit 2; }
done
for p in "${PATHS[@]}"; do
  case $p in direct-ns|ztunnel|weft-l4|weft-l7) ;;
    *) echo "ztunnel-compare.sh: unknown path '$p' in ZT_PATHS" >&2; exit 2 ;; esac
done
[[ " ${PATHS[*]} " == *" direct-ns "* ]] || { echo "ztunnel-compare.sh: ZT_PATHS must include direct-ns (the baseline)" >&2; exit 2; }
if [[ -n $ZT_TASKSET && ! $ZT_TASKSET =~ ^[0-9,-]+:[0-9,-]+$ ]]; then
  echo "ztunnel-compare.sh: ZT_TASKSET='$ZT_TASKSET': use CPUS_A:CPUS_B, e.g. 0:1" >&2; exit 2
fi

has_path() { [[ " ${PATHS[*]} " == *" $1 "* ]]; }

# Weft's ports. Each side has its own namespace, so these only need to be distinct from
# each other and from ztunnel's fixed 150xx ports.
W7_A_OUT=7140 W7_A_IN=7141 W7_A_ADMIN=7901   # weft-l7 client (A): oha -> outbound
W4_A_BIND=7150 W4_A_OUT=7151 W4_A_IN=7152 W4_A_ADMIN=7902  # weft-l4 client (A): oha -> binding
W7_B_IN=7143 W7_B_OUT=7145 W7_B_ADMIN=7903   # weft-l7 server (B): inbound on B's address
W4_B_IN=7144 W4_B_OUT=7146 W4_B_ADMIN=7904   # weft-l4 server (B)

# ------------------------------------------------------------------ run dir, logging

RUN_ID=ztunnel-$(date -u +%Y%m%d-%H%M%S)
RUN_DIR="$BENCH_DIR/results/$RUN_ID"
mkdir -p "$RUN_DIR"/{logs,conf,certs,lat,max,mem,meta}
exec > >(tee -a "$RUN_DIR/run.log") 2>&1

log()  { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
warn() { printf '[%s] WARNING: %s\n' "$(date +%H:%M:%S)" "$*"; echo "$*" >>"$RUN_DIR/meta/warnings.txt"; }
die()  { printf '[%s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }

# The pair helper: its teardown runs from our cleanup (ZTP_TRAP=0), which also stops the
# Weft proxies and the backend (they are started through it, so their PIDs are in ZTP_PIDS).
export ZTP_TRAP=0
# shellcheck source-path=SCRIPTDIR source=lib/ztunnel-pair.sh disable=SC1091
source "$BENCH_DIR/lib/ztunnel-pair.sh"

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  ztp_teardown
  if [[ $rc != 0 ]]; then echo "ztunnel-compare.sh: failed (exit $rc); logs and raw data in $RUN_DIR" >&2; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ 1. preflight

preflight() {
  [[ $EUID -eq 0 ]] || die "needs root (network namespaces)"
  local t
  for t in ip nginx curl openssl python3; do
    command -v "$t" >/dev/null || die "$t is required (apt-get install ${t/ip/iproute2})"
  done
  [[ -z $ZT_TASKSET ]] || command -v taskset >/dev/null || die "ZT_TASKSET needs taskset (util-linux)"
  [[ -n $OHA && -x $OHA ]] || die "oha not found (bench/run.sh installs it into bench/.tools/bin; or set OHA)"
  local help; help=$("$OHA" --help)
  for t in --latency-correction --output-format --host --wait-ongoing-requests-after-deadline; do
    grep -q -- "$t" <<<"$help" || die "$OHA lacks $t (need oha >= 1.0)"
  done
  [[ -x $WEFT_BIN ]] || die "no weft binary at $WEFT_BIN (set WEFT_BIN)"
  "$WEFT_BIN" proxy --help >"$RUN_DIR/logs/weft-proxy-help.txt" 2>&1 || die "'$WEFT_BIN proxy --help' failed"
  grep -q -- '--upstream' "$RUN_DIR/logs/weft-proxy-help.txt" || die "$WEFT_BIN proxy has no --upstream"
  log "results: $RUN_DIR"
  log "weft: $WEFT_BIN ($("$WEFT_BIN" --version 2>&1 | head -n 1)); oha: $OHA; paths: ${PATHS[*]}"
}

# ------------------------------------------------------------------ 2. topology and processes

write_backend_conf() {
  local d="$RUN_DIR/conf/backend"
  mkdir -p "$d/www" "$d/tmp"
  head -c "$BODY_SIZE" /dev/zero | tr '\0' x >"$d/www/1k"
  # The backend serves every path; 'auto' workers so it is never the one-core bottleneck.
  cat >"$d/nginx.conf" <<EOF
user root;
worker_processes auto;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    access_log off;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    open_file_cache max=16;
    default_type application/octet-stream;
    server {
        listen $ZTP_IP_B:$BACKEND_PORT backlog=4096;
        root $d/www;
    }
}
EOF
}

make_certs() {
  local d="$RUN_DIR/certs" svc
  "$WEFT_BIN" cert ca --out "$d" --trust-domain weft.local >"$RUN_DIR/logs/weft-cert.log" 2>&1 \
    || { cat "$RUN_DIR/logs/weft-cert.log"; die "weft cert ca failed"; }
  for svc in client backend backend-tcp; do
    "$WEFT_BIN" cert issue --ca-dir "$d" --service "$svc" --namespace default --out "$d" \
      >>"$RUN_DIR/logs/weft-cert.log" 2>&1 || { cat "$RUN_DIR/logs/weft-cert.log"; die "weft cert issue $svc failed"; }
  done
  openssl x509 -in "$d/client.pem" -noout -text >"$RUN_DIR/meta/weft-client-cert.txt"
}

# Two Services, both served by meshed endpoints (the server proxies' inbound listeners on
# B's veth address): `backend` speaks HTTP (weft-l7), `backend-tcp` is opaque TCP (weft-l4:
# an --upstream binding to it skips protocol detection and passes bytes through).
write_mesh() {
  cat >"$RUN_DIR/conf/mesh.yaml" <<EOF
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: backend, namespace: default}
spec:
  ports: [{port: 80, protocol: http}]
  endpoints:
    - {address: "$ZTP_IP_B:$W7_B_IN", mesh: true}
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: backend-tcp, namespace: default}
spec:
  ports: [{port: 80, protocol: tcp}]
  endpoints:
    - {address: "$ZTP_IP_B:$W4_B_IN", mesh: true}
EOF
}

# weft_proxy SIDE NAME SERVICE ARGS...: a Weft proxy in namespace A or B, local mode, mTLS,
# one thread, warn-level logs (no per-request logging, like ztunnel at warn). `ip netns exec`
# and `env` exec, so the tracked PID is the proxy's own.
weft_proxy() {
  local side=$1 name=$2 svc=$3 c="$RUN_DIR/certs"; shift 3
  local -a cmd=(env RUST_LOG=warn "$WEFT_BIN" proxy --log warn --service "$svc" --namespace default
    --local "$RUN_DIR/conf/mesh.yaml" --cert "$c/$svc.pem" --key "$c/$svc-key.pem" --ca "$c/ca.pem"
    --threads 1 "$@")
  if [[ $side == a ]]; then ztp_bg_client "$name" "${cmd[@]}"; else ztp_bg_server "$name" "${cmd[@]}"; fi
  local var="ZTP_PID_$name"
  log "started $name (pid ${!var}) in namespace $side"
  echo "$name ${!var} ${cmd[*]}" >>"$RUN_DIR/meta/pids.txt"
}

start_weft() {
  if has_path weft-l7; then
    weft_proxy b weft_l7_b backend --inbound "$ZTP_IP_B:$W7_B_IN" --outbound "127.0.0.1:$W7_B_OUT" \
      --admin "127.0.0.1:$W7_B_ADMIN" --app "$ZTP_IP_B:$BACKEND_PORT"
    weft_proxy a weft_l7_a client --outbound "127.0.0.1:$W7_A_OUT" --inbound "127.0.0.1:$W7_A_IN" \
      --admin "127.0.0.1:$W7_A_ADMIN" --app 127.0.0.1:1
  fi
  if has_path weft-l4; then
    weft_proxy b weft_l4_b backend-tcp --inbound "$ZTP_IP_B:$W4_B_IN" --outbound "127.0.0.1:$W4_B_OUT" \
      --admin "127.0.0.1:$W4_B_ADMIN" --app "$ZTP_IP_B:$BACKEND_PORT"
    weft_proxy a weft_l4_a client --outbound "127.0.0.1:$W4_A_OUT" --inbound "127.0.0.1:$W4_A_IN" \
      --admin "127.0.0.1:$W4_A_ADMIN" --app 127.0.0.1:1 --upstream "backend-tcp=127.0.0.1:$W4_A_BIND"
  fi
  local spec name ns port
  for spec in weft_l7_b:b:$W7_B_ADMIN weft_l7_a:a:$W7_A_ADMIN weft_l4_b:b:$W4_B_ADMIN weft_l4_a:a:$W4_A_ADMIN; do
    IFS=: read -r name ns port <<<"$spec"
    local var="ZTP_PID_$name"
    [[ -n ${!var:-} ]] || continue
    if [[ $ns == a ]]; then ns=$ZTP_NS_A; else ns=$ZTP_NS_B; fi
    if ! ip netns exec "$ns" python3 "$LIB" wait-http "http://127.0.0.1:$port/ready" 30; then
      tail -n 30 "$ZTP_DIR/$name.log" >&2
      die "$name never became ready"
    fi
    kill -0 "${!var}" 2>/dev/null || { tail -n 30 "$ZTP_DIR/$name.log" >&2; die "$name exited"; }
  done
  log "Weft proxies ready"
}

# pin: with ZT_TASKSET=A:B, every thread of each proxy on its side's CPUs.
pin() {
  [[ -n $ZT_TASKSET ]] || return 0
  local cpus_a=${ZT_TASKSET%%:*} cpus_b=${ZT_TASKSET##*:} path spec role pid
  for path in "${PATHS[@]}"; do
    for spec in ${ROLES[$path]}; do
      role=${spec%%=*} pid=${spec#*=}
      case $role in
        a) taskset -a -p -c "$cpus_a" "$pid" >/dev/null ;;
        b) taskset -a -p -c "$cpus_b" "$pid" >/dev/null ;;
      esac
    done
  done
  log "pinned: client-side proxies on CPUs $cpus_a, server-side proxies on CPUs $cpus_b"
}

setup() {
  ztp_setup "$RUN_DIR/procs" "$BACKEND_PORT"
  write_backend_conf
  local bc="$RUN_DIR/conf/backend"
  ztp_server nginx -t -q -p "$bc" -e "$bc/error.log" -c "$bc/nginx.conf" \
    || die "nginx backend config is invalid ($bc/nginx.conf)"
  ztp_bg_server backend nginx -p "$bc" -e "$bc/error.log" -c "$bc/nginx.conf" -g 'daemon off;'
  # shellcheck disable=SC2154  # set by ztp_bg_server (printf -v)
  log "backend nginx pid $ZTP_PID_backend on $ZTP_IP_B:$BACKEND_PORT (namespace $ZTP_NS_B)"
  make_certs
  write_mesh
  if has_path ztunnel; then ztp_start; fi
  start_weft

  # Where oha sends, and which processes make up each path (a = client side, b = server side).
  declare -gA URL ROLES
  URL[direct-ns]="http://$ZTP_IP_B:$BACKEND_PORT/1k"
  ROLES[direct-ns]="backend=$ZTP_PID_backend"
  if has_path ztunnel; then
    URL[ztunnel]="http://${ZTP_ENTRY[$BACKEND_PORT]}/1k"
    ROLES[ztunnel]="a=$ZTP_PID_A b=$ZTP_PID_B backend=$ZTP_PID_backend"
  fi
  # shellcheck disable=SC2154  # ZTP_PID_weft_* are set by ztp_bg_client/ztp_bg_server
  if has_path weft-l4; then
    URL[weft-l4]="http://127.0.0.1:$W4_A_BIND/1k"
    ROLES[weft-l4]="a=$ZTP_PID_weft_l4_a b=$ZTP_PID_weft_l4_b backend=$ZTP_PID_backend"
  fi
  # shellcheck disable=SC2154
  if has_path weft-l7; then
    URL[weft-l7]="http://127.0.0.1:$W7_A_OUT/1k"
    ROLES[weft-l7]="a=$ZTP_PID_weft_l7_a b=$ZTP_PID_weft_l7_b backend=$ZTP_PID_backend"
  fi
  local p
  for p in "${PATHS[@]}"; do echo "$p ${URL[$p]} ${ROLES[$p]}" >>"$RUN_DIR/meta/paths.txt"; done
}

# ------------------------------------------------------------------ 3. checks

# get_a URL / get_b URL: one plain request from namespace A / B, never through a proxy of
# the environment; prints "CODE SIZE".
curl_a() { ztp_client curl -s --noproxy '*' -m 5 -o /dev/null -w '%{http_code} %{size_download}' "$@" 2>/dev/null || true; }

check_serving() {
  local p out i
  for p in "${PATHS[@]}"; do
    for i in $(seq 50); do
      out=$(curl_a -H 'Host: backend' "${URL[$p]}")
      [[ $out == "200 $BODY_SIZE" ]] && break
      sleep 0.2
    done
    [[ $out == "200 $BODY_SIZE" ]] || { tail -n 5 "$ZTP_DIR"/*.log >&2; die "$p: GET ${URL[$p]} from $ZTP_NS_A answered '$out', expected '200 $BODY_SIZE'"; }
    log "$p serves: GET ${URL[$p]} -> $out"
  done
}

# metric_lines NS PORT PATTERN: the lines of a Prometheus endpoint in NS matching PATTERN.
metric_lines() { ip netns exec "$1" curl -s --noproxy '*' -m 5 "http://127.0.0.1:$2/metrics" | grep -E "$3" || true; }

# check_weft_mtls LABEL PORT SERVICE: the server proxy's inbound refuses plaintext and TLS
# without a client certificate; with the client's certificate it completes TLS 1.3 and
# presents the service's SPIFFE id.
check_weft_mtls() {
  local label=$1 port=$2 svc=$3 c="$RUN_DIR/certs" out code san
  code=$(curl_a -H 'Host: backend' "http://$ZTP_IP_B:$port/1k")
  [[ $code == 200* ]] && die "$label: the server proxy's inbound $ZTP_IP_B:$port served PLAINTEXT HTTP"
  echo "$label plaintext HTTP to $ZTP_IP_B:$port -> '$code' (000 = refused)" >>"$RUN_DIR/meta/checks.txt"
  code=$(curl_a -k --tlsv1.3 -H 'Host: backend' "https://$ZTP_IP_B:$port/1k")
  [[ $code == 200* ]] && die "$label: the server proxy's inbound served a TLS client WITHOUT a certificate"
  echo "$label TLS without client certificate to $ZTP_IP_B:$port -> '$code' (000 = refused)" >>"$RUN_DIR/meta/checks.txt"
  out=$(ztp_client timeout 10 openssl s_client -connect "$ZTP_IP_B:$port" -cert "$c/client.pem" \
        -key "$c/client-key.pem" -CAfile "$c/ca.pem" -alpn h2 -brief </dev/null 2>&1 | tr -d '\000' || true)
  san=$(ztp_client timeout 10 openssl s_client -connect "$ZTP_IP_B:$port" -cert "$c/client.pem" \
        -key "$c/client-key.pem" -CAfile "$c/ca.pem" -alpn h2 </dev/null 2>/dev/null \
        | openssl x509 -noout -ext subjectAltName 2>/dev/null | grep -o 'URI:[^ ,]*' || true)
  echo "$out" >"$RUN_DIR/meta/tls-$label.txt"
  grep -q 'TLSv1.3' <<<"$out" || die "$label: no TLS 1.3 handshake with the client certificate (meta/tls-$label.txt)"
  [[ $san == "URI:spiffe://weft.local/ns/default/svc/$svc" ]] || die "$label: server presents '$san', expected spiffe://weft.local/ns/default/svc/$svc"
  echo "$label with the client certificate: $(grep -E 'Protocol version|Ciphersuite|Verification' <<<"$out" | tr '\n' ';') server $san" >>"$RUN_DIR/meta/checks.txt"
  log "$label: mTLS hop confirmed (plaintext and certificate-less TLS refused; TLS 1.3 with client certificate, server $san)"
}

# The path Weft takes: weft-l4 must count opaque TCP bytes and no HTTP request on both of
# its proxies; weft-l7 must count HTTP requests on both. (TCP bytes are added when the
# connection closes, hence the polling.)
check_weft_paths() {
  local i ok
  if has_path weft-l4; then
    for i in $(seq 20); do
      ok=1
      [[ -n $(metric_lines "$ZTP_NS_A" "$W4_A_ADMIN" '^weft_tcp_bytes_total') ]] || ok=0
      [[ -n $(metric_lines "$ZTP_NS_B" "$W4_B_ADMIN" '^weft_tcp_bytes_total') ]] || ok=0
      [[ $ok == 1 ]] && break
      sleep 0.1
    done
    [[ $ok == 1 ]] || die "weft-l4: no weft_tcp_bytes_total on both proxies: the binding did not carry opaque TCP"
    if [[ -n $(metric_lines "$ZTP_NS_A" "$W4_A_ADMIN" '^weft_http_requests_total')$(metric_lines "$ZTP_NS_B" "$W4_B_ADMIN" '^weft_http_requests_total') ]]; then
      die "weft-l4: a proxy counted HTTP requests: the path is not opaque TCP"
    fi
    { echo "weft-l4 client metrics: $(metric_lines "$ZTP_NS_A" "$W4_A_ADMIN" '^weft_tcp_bytes_total' | tr '\n' ';')"
      echo "weft-l4 server metrics: $(metric_lines "$ZTP_NS_B" "$W4_B_ADMIN" '^weft_tcp_bytes_total' | tr '\n' ';')"
    } >>"$RUN_DIR/meta/checks.txt"
    log "weft-l4: opaque TCP on both proxies (weft_tcp_bytes_total, no weft_http_requests_total)"
  fi
  if has_path weft-l7; then
    [[ -n $(metric_lines "$ZTP_NS_A" "$W7_A_ADMIN" '^weft_http_requests_total') && \
       -n $(metric_lines "$ZTP_NS_B" "$W7_B_ADMIN" '^weft_http_requests_total') ]] \
      || die "weft-l7: weft_http_requests_total missing on a proxy"
    echo "weft-l7 client metrics: $(metric_lines "$ZTP_NS_A" "$W7_A_ADMIN" '^weft_http_requests_total' | tr '\n' ';')" >>"$RUN_DIR/meta/checks.txt"
    log "weft-l7: HTTP requests counted on both proxies"
  fi
}

# ztunnel: B's HBONE port refuses TLS without a client certificate, and B's metrics count
# the connection of the check request as mutual TLS.
check_ztunnel_mtls() {
  local code line
  code=$(ztp_client curl -sk --noproxy '*' -m 5 --http2 -o /dev/null -w '%{http_code}' "https://$ZTP_IP_B:15008/" 2>/dev/null || true)
  [[ $code == 000 ]] || die "ztunnel B answered a TLS client without certificate on :15008 (HTTP $code)"
  echo "ztunnel TLS without client certificate to $ZTP_IP_B:15008 -> '$code' (000 = refused)" >>"$RUN_DIR/meta/checks.txt"
  line=$(ztp_server curl -s --noproxy '*' -m 5 http://127.0.0.1:15020/metrics \
    | grep '^istio_tcp_connections_opened_total' | grep 'reporter="destination"' \
    | grep 'connection_security_policy="mutual_tls"' | head -n 1 || true)
  [[ -n $line ]] || die "ztunnel B's metrics show no inbound mutual_tls connection"
  echo "ztunnel B metrics: $line" >>"$RUN_DIR/meta/checks.txt"
  log "ztunnel: HBONE hop is mTLS (certificate-less TLS refused; B counts mutual_tls connections)"
}

checks() {
  if has_path ztunnel; then ztp_wait_serving "$BACKEND_PORT" /1k; fi
  check_serving
  if has_path ztunnel; then check_ztunnel_mtls; fi
  if has_path weft-l7; then check_weft_mtls weft-l7 "$W7_B_IN" backend; fi
  if has_path weft-l4; then check_weft_mtls weft-l4 "$W4_B_IN" backend-tcp; fi
  check_weft_paths
}

# ------------------------------------------------------------------ 4. measurements

sample() { python3 "$LIB" sample "$@"; }

# machine_snap OUT: the machine's CPU ticks (busy, steal, all) from /proc/stat (without
# IRQ time accounting, softirq ticks are also charged to the interrupted task, so busy stays
# comparable with the processes' utime+stime; steal is time the hypervisor took) and the CPU of this
# shell's reaped children (cutime+cstime: oha, once it has exited), with the time. Taken
# just before and after oha, they give, per run, oha's CPU and what the rest of the machine
# (anything but oha, the proxies and the backend) used: the run's noise.
machine_snap() {
  local _c user nice sys idle iowait irq softirq steal rest self
  read -r _c user nice sys idle iowait irq softirq steal rest </proc/stat
  self=$(</proc/$$/stat)
  self=${self##*) }
  read -r -a self <<<"$self"
  # After "comm) ": state is index 0, so field N of proc(5) is index N-3 (cutime 16, cstime 17).
  echo "{\"time\": ${EPOCHREALTIME}, \"busy\": $((user + nice + sys + irq + softirq)), \"steal\": $steal, \"all\": $((user + nice + sys + idle + iowait + irq + softirq + steal)), \"children\": $((self[13] + self[14]))}" >"$1"
}

oha_run() {
  local out=$1 t0 t1; shift
  t0=$EPOCHREALTIME
  ztp_client env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY -u all_proxy -u ALL_PROXY \
    "$OHA" --no-tui --output-format json -w --host backend "$@" >"$out" 2>"$out.stderr" \
    || { cat "$out.stderr"; die "oha failed: $*"; }
  t1=$EPOCHREALTIME
  # oha's wall time (start-up to exit), beside its own "total": a slow exit shows here.
  local us=$(( 10#${t1//[.,]/} - 10#${t0//[.,]/} ))
  printf '%s wall %d.%03d s\n' "$(basename "$out")" $((us / 1000000)) $((us % 1000000 / 1000)) >>"$RUN_DIR/meta/oha-wall.txt"
}

# rotated REP: the paths in this repetition's order (each repetition starts one later).
rotated() {
  local n=${#PATHS[@]} i
  for i in $(seq 0 $((n - 1))); do echo "${PATHS[$(( (i + $1 - 1) % n ))]}"; done
}

# shellcheck disable=SC2086  # ROLES values are ROLE=PID lists, split on purpose
measure_lat() {
  local rep=$1 path=$2 base="$RUN_DIR/lat/$2-r$1"
  log "fixed rate  rep $rep/$REPS  $path: $RATE RPS, $CONNS conns, ${LAT_DUR}s (+${WARMUP}s warm-up)"
  oha_run "$base.warmup.json" -q "$RATE" --latency-correction -c "$CONNS" -z "${WARMUP}s" "${URL[$path]}"
  sample "$base.before.json" ${ROLES[$path]}
  machine_snap "$base.machine-before.json"
  oha_run "$base.oha.json" -q "$RATE" --latency-correction -c "$CONNS" -z "${LAT_DUR}s" "${URL[$path]}"
  machine_snap "$base.machine-after.json"
  sample "$base.after.json" ${ROLES[$path]}
  summarize_oha "$base.oha.json"
}

# shellcheck disable=SC2086
measure_max() {
  local rep=$1 path=$2 base="$RUN_DIR/max/$2-r$1"
  log "max RPS     rep $rep/$REPS  $path: $MAX_CONNS conns, ${MAX_DUR}s (+${MAX_WARMUP}s warm-up)"
  oha_run "$base.warmup.json" -c "$MAX_CONNS" -z "${MAX_WARMUP}s" "${URL[$path]}"
  sample "$base.before.json" ${ROLES[$path]}
  machine_snap "$base.machine-before.json"
  oha_run "$base.oha.json" -c "$MAX_CONNS" -z "${MAX_DUR}s" "${URL[$path]}"
  machine_snap "$base.machine-after.json"
  sample "$base.after.json" ${ROLES[$path]}
  summarize_oha "$base.oha.json"
}

# summarize_oha FILE: one line per run; failed requests are warned about (and reported), not
# fatal, so that one bad run does not lose the others; a run without any 2xx is fatal.
summarize_oha() {
  local line
  line=$(python3 - "$1" "$BODY_SIZE" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))
codes = {str(k): int(v) for k, v in (o.get("statusCodeDistribution") or {}).items()}
ok = sum(v for k, v in codes.items() if k.startswith("2"))
bad = {k: v for k, v in codes.items() if not k.startswith("2")}
errs = o.get("errorDistribution") or {}
s = o["summary"]; lp = o["latencyPercentiles"]
size = s.get("sizePerRequest")
msg = f"{ok} x 2xx, {ok / s['total']:.0f} RPS, p50 {lp['p50'] * 1e3:.3f} ms, p99 {lp['p99'] * 1e3:.3f} ms"
problems = []
if bad: problems.append(f"non-2xx {bad}")
if errs: problems.append(f"errors {errs}")
if size is not None and ok and int(size) != int(sys.argv[2]): problems.append(f"{size} bytes per answer")
print(("PROBLEM " if problems or not ok else "ok ") + msg + ("; " + "; ".join(problems) if problems else ""))
PY
)
  log "  $line"
  if [[ $line == PROBLEM* ]]; then
    warn "$(basename "$1"): $line"
    [[ $line == *" 0 x 2xx"* ]] && die "no successful request in $1"
  fi
  return 0
}

# all_sample OUT: every proxy (and the backend), named PATH.ROLE, for memory.
all_sample() {
  local out=$1 p spec args=()
  for p in "${PATHS[@]}"; do for spec in ${ROLES[$p]}; do args+=("$p.$spec"); done; done
  sample "$out" "${args[@]}"
}

busy_check() {
  python3 "$LIB" busy 1 $$ >"$RUN_DIR/meta/busy-$1.txt" || true
  if [[ -s $RUN_DIR/meta/busy-$1.txt ]]; then
    warn "other processes busy ($1): $(tr '\n' ';' <"$RUN_DIR/meta/busy-$1.txt")"
  fi
  cat /proc/loadavg >"$RUN_DIR/meta/loadavg-$1.txt"
}

# ------------------------------------------------------------------ 5. metadata

write_meta() {
  local m="$RUN_DIR/meta" zt_info weft_sha paths_json
  echo "$ORIG_CMD" >"$m/command.txt"
  zt_info=$(cat "$(dirname "$ZTUNNEL_BIN")/ztunnel.build-info" 2>/dev/null || echo unknown)
  weft_sha=$(sha256sum "$WEFT_BIN" | cut -c1-16)
  paths_json=$(printf '"%s",' "${PATHS[@]}")
  # KEY=VALUE arguments, so that no version string needs quoting.
  python3 -c '
import json, sys
d = dict(a.split("=", 1) for a in sys.argv[2:])
for k in ("nproc", "mem_total_kb"):
    d[k] = int(d[k])
json.dump(d, open(sys.argv[1], "w"), indent=1)
' "$m/versions.json" \
    "weft=$("$WEFT_BIN" --version 2>&1 | head -n 1)" \
    "weft_bin=$WEFT_BIN" \
    "weft_bin_sha256_16=$weft_sha" \
    "weft_bin_mtime=$(date -u -r "$WEFT_BIN" '+%Y-%m-%d %H:%M UTC')" \
    "repo_commit=$(python3 "$LIB" git-commit "$ROOT" 2>/dev/null || echo unknown)" \
    "ztunnel=$("$ZTUNNEL_BIN" version 2>&1 | head -n 1)" \
    "ztunnel_build=$zt_info" \
    "oha=$("$OHA" --version 2>&1 | head -n 1)" \
    "nginx=$(nginx -v 2>&1 | head -n 1)" \
    "kernel=$(uname -srm)" \
    "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')" \
    "nproc=$(nproc)" \
    "mem_total_kb=$(awk '/MemTotal/ {print $2}' /proc/meminfo)" \
    "date=$(date -u '+%Y-%m-%d %H:%M UTC')" \
    "command=$ORIG_CMD"
  cat >"$m/params.json" <<EOF
{"quick": $QUICK, "reps": $REPS, "rate": $RATE, "conns": $CONNS, "lat_duration": $LAT_DUR,
 "warmup": $WARMUP, "max_duration": $MAX_DUR, "max_conns": $MAX_CONNS, "max_warmup": $MAX_WARMUP,
 "body_size": $BODY_SIZE, "paths": [${paths_json%,}], "taskset": "$ZT_TASKSET",
 "mtu": $ZTP_MTU, "ztunnel_threads": $ZTP_THREADS, "ztunnel_capture": "$ZTP_CAPTURE",
 "ip_a": "$ZTP_IP_A", "ip_b": "$ZTP_IP_B", "ns_a": "$ZTP_NS_A", "ns_b": "$ZTP_NS_B",
 "ztunnel_entry": "${ZTP_ENTRY[$BACKEND_PORT]:-}", "backend_port": $BACKEND_PORT}
EOF
}

# After the runs: proxies' metrics and whatever they logged at warn/error level.
collect_after() {
  local spec name ns port
  for spec in weft_l7_a:a:$W7_A_ADMIN weft_l7_b:b:$W7_B_ADMIN weft_l4_a:a:$W4_A_ADMIN weft_l4_b:b:$W4_B_ADMIN \
              ztunnel_a:a:15020 ztunnel_b:b:15020; do
    IFS=: read -r name ns port <<<"$spec"
    if [[ $ns == a ]]; then ns=$ZTP_NS_A; else ns=$ZTP_NS_B; fi
    case $name in
      ztunnel_*) has_path ztunnel || continue ;;
      weft_l7_*) has_path weft-l7 || continue ;;
      weft_l4_*) has_path weft-l4 || continue ;;
    esac
    ip netns exec "$ns" curl -s --noproxy '*' -m 5 "http://127.0.0.1:$port/metrics" >"$RUN_DIR/meta/metrics-$name.txt" || true
  done
  : >"$RUN_DIR/meta/log-problems.txt"
  local f
  for f in "$ZTP_DIR"/weft_*.log "$ZTP_DIR"/ztunnel-*.log; do
    [[ -f $f ]] || continue
    grep -E 'WARN|ERROR|panic' "$f" | sed "s|^|$(basename "$f"): |" >>"$RUN_DIR/meta/log-problems.txt" || true
  done
  if [[ -s $RUN_DIR/meta/log-problems.txt ]]; then
    warn "proxies logged $(wc -l <"$RUN_DIR/meta/log-problems.txt") warning/error lines (meta/log-problems.txt); first ones:"
    head -n 10 "$RUN_DIR/meta/log-problems.txt"
  fi
  local p spec2 pid
  for p in "${PATHS[@]}"; do
    for spec2 in ${ROLES[$p]}; do
      pid=${spec2#*=}
      kill -0 "$pid" 2>/dev/null || warn "$p: process $spec2 is gone after the runs"
    done
  done
}

# ------------------------------------------------------------------ 6. report

report() {
  python3 - "$RUN_DIR" "$HEADING" <<'PY'
import glob, json, os, statistics, sys

run, heading = sys.argv[1], sys.argv[2]
P = json.load(open(f"{run}/meta/params.json"))
V = json.load(open(f"{run}/meta/versions.json"))
paths = P["paths"]


def load(p):
    with open(p) as f:
        return json.load(f)


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ticks(sample, role):
    return sum(p["ticks"] for p in sample["roles"].get(role, []))


def one_run(base):
    o, b, a = load(base + ".oha.json"), load(base + ".before.json"), load(base + ".after.json")
    codes = {str(k): int(v) for k, v in (o.get("statusCodeDistribution") or {}).items()}
    ok = sum(v for k, v in codes.items() if k.startswith("2"))
    r = {
        "ok": ok,
        "non2xx": {k: v for k, v in codes.items() if not k.startswith("2")},
        "errors": o.get("errorDistribution") or {},
        "seconds": o["summary"]["total"],
        "rps": ok / o["summary"]["total"],
        "p50_ms": o["latencyPercentiles"]["p50"] * 1e3,
        "p99_ms": o["latencyPercentiles"]["p99"] * 1e3,
        "size_per_request": o["summary"].get("sizePerRequest"),
    }
    tck = a["clk_tck"]
    for role in ("a", "b", "backend"):
        if role in a["roles"] and ok:
            r[f"cpu_{role}_us"] = (ticks(a, role) - ticks(b, role)) / tck * 1e6 / ok
    if "cpu_a_us" in r:
        r["cpu_pair_us"] = r["cpu_a_us"] + r["cpu_b_us"]
    # The run's noise: machine CPU not used by oha, the pair or the backend, in cores.
    if os.path.exists(base + ".machine-after.json"):
        m0, m1 = load(base + ".machine-before.json"), load(base + ".machine-after.json")
        oha_ticks = m1["children"] - m0["children"]
        ours = sum(ticks(a, role) - ticks(b, role) for role in a["roles"])
        secs = max(m1["time"] - m0["time"], 1e-9)
        r["oha_cpu_us"] = oha_ticks / tck * 1e6 / ok if ok else None
        r["other_cores"] = max(0, (m1["busy"] - m0["busy"]) - oha_ticks - ours) / tck / secs
        r["machine_cores"] = (m1["busy"] - m0["busy"]) / tck / secs
        r["steal_cores"] = (m1["steal"] - m0["steal"]) / tck / secs
    return r


def mem(sample_path, path):
    if not os.path.exists(sample_path):
        return {}
    s = load(sample_path)["roles"]
    out = {}
    for role in ("a", "b"):
        procs = s.get(f"{path}.{role}")
        if procs:
            out[f"hwm_{role}_kb"] = sum(p["hwm_kb"] for p in procs)
            out[f"rss_{role}_kb"] = sum(p["rss_kb"] for p in procs)
    if "hwm_a_kb" in out:
        out["peak_mb"] = (out["hwm_a_kb"] + out["hwm_b_kb"]) / 1024
        out["after_mb"] = (out["rss_a_kb"] + out["rss_b_kb"]) / 1024
    return out


R = {"params": P, "versions": V, "paths": {}}
for path in paths:
    d = {"lat": [], "max": []}
    for kind in ("lat", "max"):
        for rep in range(1, P["reps"] + 1):
            base = f"{run}/{kind}/{path}-r{rep}"
            if os.path.exists(base + ".after.json"):
                d[kind].append(dict(rep=rep, **one_run(base)))
    m = lambda kind, key: med([r.get(key) for r in d[kind]])
    s = {
        "p50_ms": m("lat", "p50_ms"), "p99_ms": m("lat", "p99_ms"), "lat_rps": m("lat", "rps"),
        "cpu_pair_us": m("lat", "cpu_pair_us"), "cpu_a_us": m("lat", "cpu_a_us"),
        "cpu_b_us": m("lat", "cpu_b_us"), "cpu_backend_us": m("lat", "cpu_backend_us"),
        "max_rps": m("max", "rps"), "max_p50_ms": m("max", "p50_ms"),
        "max_cpu_pair_us": m("max", "cpu_pair_us"),
        "other_cores_lat": m("lat", "other_cores"), "other_cores_max": m("max", "other_cores"),
        "other_cores_worst": max([r.get("other_cores") or 0 for k in ("lat", "max") for r in d[k]] or [0]),
        "oha_cpu_us_lat": m("lat", "oha_cpu_us"),
        "failed": sum(sum(r["non2xx"].values()) + sum(r["errors"].values()) for k in d for r in d[k]),
        "short_lat_runs": sum(1 for r in d["lat"] if r["ok"] < P["rate"] * P["lat_duration"] * 0.95),
    }
    s.update(mem(f"{run}/mem/end.json", path))
    lat_mem = mem(f"{run}/mem/after-lat.json", path)
    if lat_mem:
        s["peak_mb_fixed_rate"] = lat_mem["peak_mb"]
    d["summary"] = s
    R["paths"][path] = d

base = R["paths"]["direct-ns"]["summary"]["p50_ms"]
for path in paths:
    s = R["paths"][path]["summary"]
    s["added_p50_ms"] = None if path == "direct-ns" or s["p50_ms"] is None else s["p50_ms"] - base

# Ratios against ztunnel. lower: lower is better; the goals are the issue's.
METRICS = [
    ("added_p50_ms", "added p50", "lower"), ("p50_ms", "p50", "lower"), ("p99_ms", "p99", "lower"),
    ("cpu_pair_us", "CPU/request", "lower"), ("max_rps", "max RPS", "higher"),
    ("peak_mb", "peak memory", "lower"), ("after_mb", "memory after", "lower"),
]
GOALS = {"weft-l4": ("added_p50_ms", "cpu_pair_us", "max_rps", "peak_mb", "after_mb"),
         "weft-l7": ("added_p50_ms", "cpu_pair_us", "max_rps", "peak_mb", "after_mb")}
R["ratios"] = {}
if "ztunnel" in paths:
    z = R["paths"]["ztunnel"]["summary"]
    for w in ("weft-l4", "weft-l7"):
        if w not in paths:
            continue
        s = R["paths"][w]["summary"]
        R["ratios"][w] = {k: (s[k] / z[k] if s.get(k) is not None and z.get(k) else None) for k, _, _ in METRICS}

json.dump(R, open(f"{run}/results.json", "w"), indent=1)


def f(x, spec, dash="—"):
    return dash if x is None else format(x, spec)


NAMES = {"direct-ns": "direct-ns (no proxy)", "ztunnel": "ztunnel", "weft-l4": "Weft L4 (opaque TCP)",
         "weft-l7": "Weft L7 (HTTP)"}
out = [heading, ""]
q = " (QUICK smoke run: short runs, one repetition; not for conclusions)" if P["quick"] else ""
out.append(f"Measured by `{V['command']}` on {V['date']}{q}: one run, one topology, "
           f"{P['reps']} repetition(s) per measurement interleaved round-robin across the paths, medians shown. "
           f"Fixed rate: {P['rate']} RPS over {P['conns']} keep-alive connections for {P['lat_duration']} s with "
           f"`--latency-correction`; max RPS: {P['max_conns']} connections for {P['max_duration']} s, no rate limit. "
           f"Added p50 is the path's p50 minus direct-ns's. CPU/request is utime+stime of both proxies of the pair "
           f"over the 2xx answers of the fixed-rate runs. Memory is both proxies' peak RSS (VmHWM) / RSS after all "
           f"runs, 1 MB = 2^20 bytes.")
out.append("")
out.append("| path | p50 ms | p99 ms | added p50 ms | CPU µs/request (pair) | max RPS | memory MB (pair): peak / after |")
out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for path in paths:
    s = R["paths"][path]["summary"]
    memtxt = "—" if s.get("peak_mb") is None else f"{s['peak_mb']:.1f} / {s['after_mb']:.1f}"
    out.append(f"| {NAMES[path]} | {f(s['p50_ms'], '.3f')} | {f(s['p99_ms'], '.3f')} | "
               f"{f(s['added_p50_ms'], '.3f')} | {f(s['cpu_pair_us'], '.1f')} | {f(s['max_rps'], ',.0f')} | {memtxt} |")
out.append("")


def verdict(path, key, better, r):
    if r is None:
        return None
    good = r < 1 if better == "lower" else r > 1
    tie = abs(r - 1) <= 0.05
    if path == "weft-l7":  # goal: at least equal
        return "met" if good or r == 1 else ("tie (within 5%)" if tie else "NOT met")
    return "met" if good and not tie else ("met, within 5% (noise)" if good else ("tie (within 5%)" if tie else "NOT met"))


for w, title, goal in (("weft-l4", "Weft L4 / ztunnel", "lower added p50 and CPU/request, higher max RPS, less memory"),
                       ("weft-l7", "Weft L7 / ztunnel", "at least equal on each")):
    if w not in R["ratios"]:
        continue
    rr = R["ratios"][w]
    parts = []
    for key, label, better in METRICS:
        parts.append(f"{label} {f(rr[key], '.2f')}×")
    checks = []
    for key, label, better in METRICS:
        if key in GOALS[w]:
            v = verdict(w, key, better, rr[key])
            if v:
                checks.append(f"{label} {v}")
    out.append(f"- **{title}**: " + ", ".join(parts) + f" (below 1 is better for Weft except max RPS). "
               f"Goal ({goal}): " + "; ".join(checks) + ".")
out.append("")

# Per side, and what the backend and max-RPS runs cost.
out.append("| path | CPU µs/request: client side / server side | backend CPU µs/request | CPU µs/request at max RPS (pair) | p50 ms at max RPS | peak MB: client / server | other load, cores: fixed rate / max RPS |")
out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for path in paths:
    s = R["paths"][path]["summary"]
    side = "—" if s.get("cpu_a_us") is None else f"{s['cpu_a_us']:.1f} / {s['cpu_b_us']:.1f}"
    pk = "—" if s.get("hwm_a_kb") is None else f"{s['hwm_a_kb'] / 1024:.1f} / {s['hwm_b_kb'] / 1024:.1f}"
    out.append(f"| {NAMES[path]} | {side} | {f(s['cpu_backend_us'], '.1f')} | {f(s['max_cpu_pair_us'], '.1f')} | "
               f"{f(s['max_p50_ms'], '.3f')} | {pk} | {f(s['other_cores_lat'], '.2f')} / {f(s['other_cores_max'], '.2f')} |")
out.append("")
out.append("Other load: the CPU the machine spent during the measured runs on anything but oha, the "
           "path's proxies and the backend (/proc/stat busy time minus those processes' CPU; it also holds "
           "kernel network work done on otherwise idle cores; hypervisor steal excluded). Medians, in cores of the "
           f"{V['nproc']}: near 0 is a quiet machine; above ~0.1, latency and max RPS are disturbed.")
out.append("")

notes = []
for path in paths:
    s = R["paths"][path]["summary"]
    if s["failed"]:
        notes.append(f"{path}: {s['failed']} failed requests (non-2xx or errors) over all runs, see results.json")
    if s["other_cores_worst"] > 0.1:
        noisy = sum(1 for k in ("lat", "max") for r in R["paths"][path][k] if (r.get("other_cores") or 0) > 0.1)
        notes.append(f"{path}: {noisy} run(s) with other load above 0.1 cores (worst {s['other_cores_worst']:.2f})")
    if s["short_lat_runs"]:
        notes.append(f"{path}: {s['short_lat_runs']} fixed-rate run(s) below 95% of the requested rate")
lp = f"{run}/meta/log-problems.txt"
if os.path.exists(lp) and os.path.getsize(lp):
    n = sum(1 for _ in open(lp))
    notes.append(f"the proxies logged {n} warning/error line(s) (meta/log-problems.txt)")
busy = []
for b in sorted(glob.glob(f"{run}/meta/busy-*.txt")):
    t = open(b).read().split("\n")
    t = [x for x in t if x]
    if t:
        busy.append(os.path.basename(b)[5:-4] + ": " + ", ".join(t))
if busy:
    notes.append("other processes were using CPU during the run, so the numbers are disturbed (" + "; ".join(busy) + ")")
if notes:
    out.append("Problems seen in this run: " + "; ".join(notes) + ".")
    out.append("")

zbuild = V["ztunnel_build"]
zv = dict(kv.split(":", 1) for kv in V["ztunnel"].partition("{")[2].rstrip("}").replace('"', "").split(", ") if ":" in kv)
ztxt = f"Rust {zv.get('RustVersion', '?')}, {zv.get('BuildProfile', '?')}, {zv.get('CryptoProvider', '?')}"
pin = f"pinned with taskset ({P['taskset']}: client-side proxies : server-side proxies)" if P["taskset"] else "not pinned"
out.append(
    f"Method. Versions: Weft `{V['weft']}` (binary sha256 {V['weft_bin_sha256_16']}…, built {V['weft_bin_mtime']}, "
    f"checkout at commit {V['repo_commit'][:12]} during the run); ztunnel built by `bench/ztunnel.sh` from "
    f"istio/ztunnel ({zbuild}; {ztxt}); {V['oha']}; {V['nginx']}; {V['kernel']}; {V['nproc']} × {V['cpu']}. "
    f"Topology (`bench/lib/ztunnel-pair.sh`): two network namespaces, A ({P['ip_a']}) and B ({P['ip_b']}), joined "
    f"by one veth (MTU {P['mtu']}); oha runs in A, the backend (nginx, all cores, 1 KiB file, keep-alive) listens on "
    f"B's address, every proxy on the client side runs in A and every proxy on the server side in B, each with one "
    f"worker thread ({pin}); only one path carries load at a time. "
    f"**direct-ns**: oha to the backend over the veth. "
    f"**ztunnel**: a standalone pair in dedicated mode with a local XDS file and its built-in test CA (FAKE_CA); "
    f"oha connects to a service VIP on A's loopback ({P['ztunnel_entry']}, no iptables: ztunnel takes the socket's "
    f"local address as the destination); ztunnel A opens HBONE (HTTP/2 CONNECT over mTLS, pooled) to ztunnel B's "
    f":15008, which dials the backend. ztunnel forwards TCP only: it never parses the HTTP inside. "
    f"**weft-l4**: oha connects to an `--upstream` binding of a Service with `protocol: tcp` on the client proxy; "
    f"bytes pass through without detection or HTTP parsing over one mTLS connection (ALPN `weft-tcp`) per client "
    f"connection to the server proxy's inbound listener on B's address, which connects to the backend. "
    f"**weft-l7**: oha sends HTTP to the client proxy's outbound listener with `Host: backend`; the proxy parses "
    f"each request, routes it by Host, applies the route's retry policy and records metrics, and sends it as "
    f"HTTP/1.1 over pooled mTLS connections to the server proxy (as many as requests in flight), which sends it "
    f"to the backend over pooled connections too. Weft runs in local mode (`--local mesh.yaml`) with ECDSA P-256 certificates from "
    f"`weft cert ca`/`weft cert issue`; its Services' endpoints are the server proxies' inbound listeners with "
    f"`mesh: true`. Before measuring, every path answered 200 with the 1 KiB body, both server proxies refused "
    f"plaintext and TLS without a client certificate and completed TLS 1.3 with one (presenting their SPIFFE id), "
    f"the weft-l4 pair counted opaque TCP bytes and no HTTP request, and ztunnel B refused TLS without a client "
    f"certificate on :15008 and counted the test connection as `mutual_tls` (details in meta/checks.txt). "
    f"Raw data: `bench/results/{os.path.basename(run)}/`.")
out.append("")
out.append(
    "Not equal between the paths: ztunnel's certificates come from its test CA (ECDSA P-256 leaves under an "
    "RSA-2048 root) and Weft's from its own CA (ECDSA P-256 throughout); with keep-alive connections handshakes "
    "are rare, so this barely shows. The backend sees a different number of connections: 16 (64 at max RPS) for "
    "direct-ns, ztunnel and weft-l4, and what the server proxy's pool opens for weft-l7; its CPU per request is "
    "in the second table. oha and the backend share the machine's cores with the proxies, so max RPS is the "
    "throughput of the whole box, not of the proxies alone.")
text = "\n".join(out) + "\n"
open(f"{run}/section.md", "w").write(text)
print(text)
PY
}

# ------------------------------------------------------------------ main

main() {
  preflight
  setup
  checks
  pin
  write_meta
  busy_check before

  local rep p
  log "phase 1: fixed rate (latency, CPU per request); repetitions round-robin over: ${PATHS[*]}"
  for rep in $(seq "$REPS"); do
    for p in $(rotated "$rep"); do measure_lat "$rep" "$p"; done
  done
  all_sample "$RUN_DIR/mem/after-lat.json"
  busy_check middle

  log "phase 2: max RPS; repetitions round-robin"
  for rep in $(seq "$REPS"); do
    for p in $(rotated "$rep"); do measure_max "$rep" "$p"; done
  done
  all_sample "$RUN_DIR/mem/end.json"
  busy_check after
  collect_after

  log "report"
  echo
  report
  if [[ -n $DOCS_OUT ]]; then
    python3 "$BENCH_DIR/lib/replace_section.py" "$DOCS_OUT" "$RUN_DIR/section.md" "$HEADING"
    log "replaced '$HEADING' in $DOCS_OUT"
  fi
  log "raw results: $RUN_DIR (results.json, section.md); run took $SECONDS s"
}

main
