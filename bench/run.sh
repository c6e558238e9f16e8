#!/usr/bin/env bash
# Weft benchmark harness.
#
# Measures four paths side by side, in one run, on loopback only:
#   direct   oha -> backend (nginx serving a 1 KB file)
#   nginx    oha -> nginx (client) ==mTLS==> nginx (server) -> backend
#   haproxy  oha -> HAProxy (client) ==mTLS==> HAProxy (server) -> backend
#   weft     oha -> weft proxy (client) ==mTLS==> weft proxy (server) -> backend
# and writes docs/benchmarks.md (raw data under bench/results/, which git ignores).
#
# Usage: bench/run.sh [--quick] [--no-build] [--no-install] [--skip-weft] [--docs FILE]
# See usage() below for the environment variables that set durations.
# shellcheck disable=SC2154  # PID_<name> variables are assigned by start_bg (printf -v).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
LIB="$BENCH_DIR/lib/benchlib.py"
# shellcheck source-path=SCRIPTDIR source=lib/certs.sh disable=SC1091
source "$BENCH_DIR/lib/certs.sh"
REPORT="$BENCH_DIR/lib/report.py"
ORIG_CMD="bench/run.sh${*:+ $*}"

usage() {
  cat <<'EOF'
Usage: bench/run.sh [options]

Options:
  --quick        smoke run: short durations, 1 repetition (report goes to the run's
                 results directory, not docs/, unless --docs is given)
  --no-build     do not run `cargo build --release -p weft` (use the existing binary)
  --no-install   do not install anything (apt, cargo install oha)
  --skip-weft    do not measure the Weft pair (exit status 0 even without it)
  --docs FILE    where to write the report (default: docs/benchmarks.md for full runs)
  -h, --help     this text

Environment (seconds unless noted; defaults for a full run, --quick in brackets):
  BENCH_PATHS         paths to measure, comma separated   direct,nginx,haproxy,weft
  BENCH_RATE          fixed request rate (RPS)             1000
  BENCH_CONNS         connections at the fixed rate        16
  BENCH_LAT_DURATION  length of one fixed-rate run         20   [5]
  BENCH_REPS          repetitions (latency and max RPS)    3    [1]
  BENCH_WARMUP        warm-up before each measured run     2    [1]
  BENCH_MAX_DURATION  length of one max-RPS run            10   [3]
  BENCH_MAX_CONNS     connections for max RPS              64
  BENCH_TCP_BYTES     bytes per TCP transfer               1073741824 [268435456]
  BENCH_TCP_REPS      TCP transfers per path               3    [1]
  WEFT_BIN            weft binary (default target/release/weft)
EOF
}

# ------------------------------------------------------------------ options

QUICK=0 BUILD=1 INSTALL=1 SKIP_WEFT=0 DOCS_OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --no-build) BUILD=0 ;;
    --no-install) INSTALL=0 ;;
    --skip-weft) SKIP_WEFT=1 ;;
    --docs) DOCS_OUT="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

if [[ $QUICK == 1 ]]; then
  d_lat=5 d_reps=1 d_warm=1 d_max=3 d_tcp=268435456 d_tcpreps=1
else
  d_lat=20 d_reps=3 d_warm=2 d_max=10 d_tcp=1073741824 d_tcpreps=3
fi
RATE=${BENCH_RATE:-1000}
CONNS=${BENCH_CONNS:-16}
LAT_DUR=${BENCH_LAT_DURATION:-$d_lat}
REPS=${BENCH_REPS:-$d_reps}
WARMUP=${BENCH_WARMUP:-$d_warm}
MAX_DUR=${BENCH_MAX_DURATION:-$d_max}
MAX_CONNS=${BENCH_MAX_CONNS:-64}
TCP_BYTES=${BENCH_TCP_BYTES:-$d_tcp}
TCP_REPS=${BENCH_TCP_REPS:-$d_tcpreps}
IFS=, read -r -a PATHS <<<"${BENCH_PATHS:-direct,nginx,haproxy,weft}"
WEFT_BIN=${WEFT_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/weft}
NPROC=$(nproc)
BODY_SIZE=1024

if [[ $QUICK == 0 && -z $DOCS_OUT ]]; then DOCS_OUT="$ROOT/docs/benchmarks.md"; fi

RUN_ID=$(date -u +%Y%m%d-%H%M%S)
RUN_DIR="$BENCH_DIR/results/$RUN_ID"
mkdir -p "$RUN_DIR"/{logs,conf,certs,lat,max,tcp,meta}
ln -sfn "$RUN_ID" "$BENCH_DIR/results/latest"
# Everything we print also lands in the run's log.
exec > >(tee -a "$RUN_DIR/run.log") 2>&1

# ------------------------------------------------------------------ logging and cleanup

log()  { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
warn() { printf '\n[%s] WARNING: %s\n\n' "$(date +%H:%M:%S)" "$*"; echo "$*" >>"$RUN_DIR/meta/warnings.txt"; }
die()  { printf '\n[%s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }
banner() {
  printf '\n%s\n!!! %s\n%s\n\n' "$(printf '!%.0s' {1..78})" "$*" "$(printf '!%.0s' {1..78})"
  echo "$*" >>"$RUN_DIR/meta/warnings.txt"
}

# PIDs of every process this script starts; the EXIT trap stops exactly these.
STARTED_PIDS=()
cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  for pid in "${STARTED_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for pid in "${STARTED_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [[ $alive == 0 ]] && break
    sleep 0.1
  done
  for pid in "${STARTED_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  # Wait only for our own children: a bare `wait` would also wait for the tee behind our stdout.
  if [[ ${#STARTED_PIDS[@]} -gt 0 ]]; then wait "${STARTED_PIDS[@]}" 2>/dev/null || true; fi
  if [[ $rc == 2 ]]; then echo "run.sh: incomplete (exit 2): some paths were not measured; see $RUN_DIR" >&2
  elif [[ $rc != 0 ]]; then echo "run.sh: failed (exit $rc); logs and raw data in $RUN_DIR" >&2; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_bg NAME CMD...: run CMD in the background, log to logs/NAME.log, remember its PID
# in the variable PID_<NAME>.
start_bg() {
  local name=$1; shift
  "$@" >"$RUN_DIR/logs/$name.log" 2>&1 &
  local pid=$!
  STARTED_PIDS+=("$pid")
  printf -v "PID_$name" '%s' "$pid"
  echo "$name $pid $*" >>"$RUN_DIR/meta/pids.txt"
  log "started $name (pid $pid)"
}

# alive NAME: fail with the process's log if it died (e.g. a config error found at startup).
alive() {
  local var="PID_$1"
  if ! kill -0 "${!var}" 2>/dev/null; then
    echo "---- last lines of logs/$1.log:" >&2; tail -n 30 "$RUN_DIR/logs/$1.log" >&2 || true
    die "$1 exited right after start"
  fi
}

has_path() { local p; for p in "${PATHS[@]}"; do [[ $p == "$1" ]] && return 0; done; return 1; }
drop_path() {
  local p keep=()
  for p in "${PATHS[@]}"; do [[ $p != "$1" ]] && keep+=("$p"); done
  PATHS=("${keep[@]}")
  echo "$1" >>"$RUN_DIR/meta/skipped.txt"
}

# ------------------------------------------------------------------ 1. tools

install_tools() {
  local need=()
  command -v nginx >/dev/null || need+=(nginx)
  command -v haproxy >/dev/null || need+=(haproxy)
  # nginx's stream module is a separate Debian package; the TCP test needs it.
  [[ -n $(find_stream_module) ]] || need+=(libnginx-mod-stream)
  command -v python3 >/dev/null || need+=(python3)
  command -v openssl >/dev/null || need+=(openssl)
  command -v curl >/dev/null || need+=(curl)
  command -v taskset >/dev/null || need+=(util-linux)
  command -v pgrep >/dev/null || need+=(procps)
  if [[ ${#need[@]} -gt 0 ]]; then
    if [[ $INSTALL == 0 ]]; then
      warn "missing (not installing, --no-install): ${need[*]}"
    elif [[ $EUID -ne 0 ]]; then
      warn "missing ${need[*]} and not running as root: install them with apt-get"
    else
      log "installing from Debian: ${need[*]}"
      if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } \
          >"$RUN_DIR/logs/apt.log" 2>&1; then
        warn "apt-get failed (see $RUN_DIR/logs/apt.log); continuing with what is installed"
      fi
    fi
  else
    log "Debian packages already present (nginx, haproxy, stream module, python3, openssl, curl, taskset)"
  fi

  command -v python3 >/dev/null || die "python3 is required (apt-get install python3)"
  command -v openssl >/dev/null || die "openssl is required (apt-get install openssl)"
  command -v curl >/dev/null || die "curl is required (apt-get install curl)"

  # oha: constant-rate load generator that corrects for coordinated omission.
  OHA=$(command -v oha || true)
  [[ -z $OHA && -x $BENCH_DIR/.tools/bin/oha ]] && OHA=$BENCH_DIR/.tools/bin/oha
  [[ -z $OHA && -x $HOME/.cargo/bin/oha ]] && OHA=$HOME/.cargo/bin/oha
  if [[ -z $OHA ]]; then
    if [[ $INSTALL == 0 ]]; then die "oha not found and --no-install given"; fi
    log "installing oha with cargo into bench/.tools (takes a few minutes, once)"
    cargo install oha --locked --root "$BENCH_DIR/.tools" >"$RUN_DIR/logs/oha-install.log" 2>&1 \
      || die "cargo install oha failed (see $RUN_DIR/logs/oha-install.log); install oha and rerun"
    OHA=$BENCH_DIR/.tools/bin/oha
  fi
  # Flags changed across oha versions: pick what this one has.
  local help; help=$("$OHA" --help)
  grep -q -- '--latency-correction' <<<"$help" || die "$OHA has no --latency-correction; need oha >= 0.6"
  if grep -q -- '--output-format' <<<"$help"; then OHA_JSON=(--output-format json)
  elif grep -q -- '--json' <<<"$help"; then OHA_JSON=(--json)
  else die "$OHA has no JSON output option"; fi
  OHA_WAIT=()  # finish in-flight requests at the deadline instead of counting them as errors
  grep -q -- '--wait-ongoing-requests-after-deadline' <<<"$help" && OHA_WAIT=(-w)
  if grep -q -- '--host' <<<"$help"; then OHA_HOST=(--host backend); else OHA_HOST=(-H 'Host: backend'); fi
  log "load generator: $OHA ($("$OHA" --version))"

  if has_path nginx && ! command -v nginx >/dev/null; then banner "nginx is not installed: SKIPPING the nginx pair"; drop_path nginx; fi
  if has_path nginx && [[ -z $(find_stream_module) ]] && ! nginx_stream_static; then
    banner "nginx stream module not found (apt-get install libnginx-mod-stream): SKIPPING the nginx pair"; drop_path nginx
  fi
  if has_path haproxy && ! command -v haproxy >/dev/null; then banner "haproxy is not installed: SKIPPING the HAProxy pair"; drop_path haproxy; fi
  if ! command -v taskset >/dev/null; then warn "taskset missing: max-RPS and TCP runs will not pin proxies to cores"; fi
}

find_stream_module() {
  local f
  for f in /usr/lib/nginx/modules/ngx_stream_module.so /usr/share/nginx/modules/ngx_stream_module.so; do
    [[ -f $f ]] && { echo "$f"; return; }
  done
}
nginx_stream_static() { nginx -V 2>&1 | grep -q -- '--with-stream\( \|$\)'; }

# ------------------------------------------------------------------ 2. weft binary

prepare_weft() {
  has_path weft || return 0
  if [[ $SKIP_WEFT == 1 ]]; then drop_path weft; log "--skip-weft: not measuring Weft"; return; fi
  if [[ $BUILD == 1 ]]; then
    log "building: cargo build --release -p weft (log: logs/cargo-build.log)"
    if ! (cd "$ROOT" && cargo build --release -p weft) >"$RUN_DIR/logs/cargo-build.log" 2>&1; then
      tail -n 20 "$RUN_DIR/logs/cargo-build.log"
      banner "cargo build --release -p weft FAILED: SKIPPING the Weft pair"
      drop_path weft; return
    fi
  fi
  if [[ ! -x $WEFT_BIN ]]; then
    banner "weft binary $WEFT_BIN not found: SKIPPING the Weft pair (build it or drop --no-build)"
    drop_path weft; return
  fi
  if ! "$WEFT_BIN" proxy --help >"$RUN_DIR/logs/weft-proxy-help.txt" 2>&1; then
    banner "'weft proxy --help' fails (not implemented yet?): SKIPPING the Weft pair"
    drop_path weft; return
  fi
  log "weft: $WEFT_BIN"
  local layout
  if ! layout=$(WEFT_BIN=$WEFT_BIN "$BENCH_DIR/hot-symbols.sh" --check 2>&1); then
    warn "stale code layout ($layout): the proxy's resident memory is higher than it needs to be; rerun bench/hot-symbols.sh"
  else
    log "code layout: $layout"
  fi
}

# ------------------------------------------------------------------ 3. certificates

# openssl_cert NAME SAN: an ECDSA P-256 leaf signed by the run's CA (certs/ca.pem).
openssl_cert() { openssl_leaf "$RUN_DIR/certs" "$@"; }

spiffe() { echo "spiffe://weft.local/ns/default/svc/$1"; }

# weft_certs DIR: CA and leaf certs made by weft itself (the contract in DESIGN.md).
weft_certs() {
  local d=$1 svc
  "$WEFT_BIN" cert ca --out "$d" --trust-domain weft.local >"$RUN_DIR/logs/weft-cert.log" 2>&1 || return 1
  for svc in client backend bulk; do
    "$WEFT_BIN" cert issue --ca-dir "$d" --service "$svc" --namespace default --out "$d" \
      >>"$RUN_DIR/logs/weft-cert.log" 2>&1 || return 1
  done
  [[ -s $d/ca.pem && -s $d/ca-key.pem && -s $d/client.pem && -s $d/client-key.pem ]]
}

# openssl_certs DIR: the same shape as weft's certs (ECDSA P-256, SPIFFE URI SAN only), so the
# nginx and HAProxy pairs are measured the same way they would be with weft's CA.
openssl_certs() {
  local d=$1 svc
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/ca-key.pem" 2>/dev/null
  openssl req -x509 -new -key "$d/ca-key.pem" -subj "/O=weft-bench/CN=weft.local root" -days 2 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$d/ca.pem" 2>/dev/null
  for svc in client backend bulk; do openssl_cert "$svc" "URI:$(spiffe "$svc")"; done
}

make_certs() {
  local d="$RUN_DIR/certs" f
  if has_path weft; then
    log "certificates: weft cert ca / weft cert issue (client, backend, bulk)"
    if weft_certs "$d"; then
      echo weft >"$RUN_DIR/meta/certs.txt"
    else
      tail -n 20 "$RUN_DIR/logs/weft-cert.log"
      banner "'weft cert' failed (logs/weft-cert.log): using openssl-made certificates of the same shape instead"
      rm -f "$d"/*
    fi
  fi
  if [[ ! -s $RUN_DIR/meta/certs.txt ]]; then
    log "certificates: making a CA and ECDSA P-256 SPIFFE certificates with openssl"
    openssl_certs "$d"
    echo openssl >"$RUN_DIR/meta/certs.txt"
  fi
  # nginx checks the upstream certificate against a host name (proxy_ssl_name) and cannot match
  # a URI SAN, so the nginx/HAProxy servers get a cert from the same CA that also has DNS:backend.
  # Both then verify the peer's identity, as weft does with the SPIFFE id.
  openssl_cert backend-dns "URI:$(spiffe backend),DNS:backend"
  # HAProxy wants certificate and key in one file.
  cat "$d/client.pem" "$d/client-key.pem" >"$d/client-bundle.pem"
  cat "$d/backend-dns.pem" "$d/backend-dns-key.pem" >"$d/backend-dns-bundle.pem"
  for f in client backend backend-dns; do
    openssl verify -CAfile "$d/ca.pem" "$d/$f.pem" >/dev/null || die "certs/$f.pem does not verify against certs/ca.pem"
  done
  openssl x509 -in "$d/client.pem" -noout -text >"$RUN_DIR/meta/client-cert.txt"
  grep -q 'prime256v1\|P-256' "$RUN_DIR/meta/client-cert.txt" \
    || warn "client certificate is not ECDSA P-256 (see meta/client-cert.txt); the TLS cost differs from nginx/HAProxy"
}

# ------------------------------------------------------------------ 4. ports and configs

alloc_ports() {
  local names=(BACKEND SINK
    NG_C_HTTP NG_S_HTTP NG_C_TCP NG_S_TCP
    HA_C_HTTP HA_S_HTTP HA_C_TCP HA_S_TCP
    WC_OUT WC_IN WC_ADMIN WS_IN WS_OUT WS_ADMIN
    BC_OUT BC_IN BC_ADMIN BC_UP BS_IN BS_OUT BS_ADMIN)
  local ports i=0 n
  mapfile -t ports < <(python3 "$LIB" ports "${#names[@]}")
  [[ ${#ports[@]} == "${#names[@]}" ]] || die "could not get ${#names[@]} free loopback ports"
  for n in "${names[@]}"; do printf -v "P_$n" '%s' "${ports[$i]}"; i=$((i + 1)); done
  for n in "${names[@]}"; do local v="P_$n"; echo "$n=${!v}"; done >"$RUN_DIR/meta/ports.txt"
}

# nginx as root keeps workers as root, so they can read files under any work dir.
nginx_common() {
  local dir=$1
  mkdir -p "$dir/tmp"
  if [[ $EUID == 0 ]]; then echo "user root;"; fi
  cat <<EOF
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
EOF
}

nginx_http_temp() {
  local dir=$1
  cat <<EOF
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
EOF
}

write_backend_conf() {
  local dir="$RUN_DIR/conf/backend"
  mkdir -p "$dir/www"
  head -c "$BODY_SIZE" /dev/zero | tr '\0' 'x' >"$dir/www/1k"
  {
    # The backend is shared by every path and unpinned; 'auto' so it is never the one-core bottleneck.
    echo "worker_processes auto;"
    nginx_common "$dir"
    cat <<EOF
http {
$(nginx_http_temp "$dir")
    access_log off;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    open_file_cache max=16;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$P_BACKEND backlog=4096;
        root $dir/www;
    }
}
EOF
  } >"$dir/nginx.conf"
}

write_nginx_confs() {
  local c="$RUN_DIR/certs" dir
  local stream_mod; stream_mod=$(find_stream_module)
  # Client side: plain HTTP in, HTTPS with a client cert out, pooled upstream connections.
  dir="$RUN_DIR/conf/nginx-client"; mkdir -p "$dir"
  {
    [[ -n $stream_mod ]] && echo "load_module $stream_mod;"
    echo "worker_processes 1;"
    nginx_common "$dir"
    cat <<EOF
http {
$(nginx_http_temp "$dir")
    access_log off;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    upstream mtls_server {
        server 127.0.0.1:$P_NG_S_HTTP;
        keepalive 128;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:$P_NG_C_HTTP backlog=4096;
        location / {
            proxy_pass https://mtls_server;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_ssl_certificate $c/client.pem;
            proxy_ssl_certificate_key $c/client-key.pem;
            proxy_ssl_trusted_certificate $c/ca.pem;
            proxy_ssl_verify on;
            proxy_ssl_verify_depth 2;
            proxy_ssl_name backend;
            proxy_ssl_server_name on;
            proxy_ssl_protocols TLSv1.3;
            proxy_ssl_session_reuse on;
        }
    }
}
stream {
    server {
        listen 127.0.0.1:$P_NG_C_TCP;
        proxy_pass 127.0.0.1:$P_NG_S_TCP;
        proxy_ssl on;
        proxy_ssl_certificate $c/client.pem;
        proxy_ssl_certificate_key $c/client-key.pem;
        proxy_ssl_trusted_certificate $c/ca.pem;
        proxy_ssl_verify on;
        proxy_ssl_verify_depth 2;
        proxy_ssl_name backend;
        proxy_ssl_server_name on;
        proxy_ssl_protocols TLSv1.3;
    }
}
EOF
  } >"$dir/nginx.conf"

  # Server side: TLS listener that requires a client cert from the CA, plain HTTP to the backend.
  dir="$RUN_DIR/conf/nginx-server"; mkdir -p "$dir"
  {
    [[ -n $stream_mod ]] && echo "load_module $stream_mod;"
    echo "worker_processes 1;"
    nginx_common "$dir"
    cat <<EOF
http {
$(nginx_http_temp "$dir")
    access_log off;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    upstream app {
        server 127.0.0.1:$P_BACKEND;
        keepalive 128;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:$P_NG_S_HTTP ssl backlog=4096;
        ssl_certificate $c/backend-dns.pem;
        ssl_certificate_key $c/backend-dns-key.pem;
        ssl_protocols TLSv1.3;
        ssl_verify_client on;
        ssl_client_certificate $c/ca.pem;
        ssl_verify_depth 2;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
stream {
    server {
        listen 127.0.0.1:$P_NG_S_TCP ssl;
        ssl_certificate $c/backend-dns.pem;
        ssl_certificate_key $c/backend-dns-key.pem;
        ssl_protocols TLSv1.3;
        ssl_verify_client on;
        ssl_client_certificate $c/ca.pem;
        ssl_verify_depth 2;
        proxy_pass 127.0.0.1:$P_SINK;
    }
}
EOF
  } >"$dir/nginx.conf"
}

write_haproxy_confs() {
  local c="$RUN_DIR/certs" dir="$RUN_DIR/conf/haproxy"
  mkdir -p "$dir"
  local globals
  globals=$(cat <<EOF
global
    nbthread 1
    # 4096 keeps the FD need (~2 per connection) under common hard limits (ulimit -Hn).
    maxconn 4096
    ssl-server-verify required

defaults
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    timeout client-fin 30s
    timeout server-fin 30s
EOF
)
  # Client side: plain HTTP in, TLS with a client cert out; http-reuse keeps upstream connections.
  cat >"$dir/client.cfg" <<EOF
$globals

frontend http_in
    mode http
    bind 127.0.0.1:$P_HA_C_HTTP
    default_backend mtls_server

backend mtls_server
    mode http
    http-reuse always
    server pair 127.0.0.1:$P_HA_S_HTTP ssl crt $c/client-bundle.pem ca-file $c/ca.pem verify required verifyhost backend sni str(backend) ssl-min-ver TLSv1.3 alpn http/1.1

listen tcp_in
    mode tcp
    bind 127.0.0.1:$P_HA_C_TCP
    server pair 127.0.0.1:$P_HA_S_TCP ssl crt $c/client-bundle.pem ca-file $c/ca.pem verify required verifyhost backend sni str(backend) ssl-min-ver TLSv1.3
EOF
  # Server side: TLS listener that requires a client cert from the CA.
  cat >"$dir/server.cfg" <<EOF
$globals

frontend mtls_in
    mode http
    bind 127.0.0.1:$P_HA_S_HTTP ssl crt $c/backend-dns-bundle.pem ca-file $c/ca.pem verify required ssl-min-ver TLSv1.3 alpn http/1.1
    default_backend app

backend app
    mode http
    http-reuse always
    server app 127.0.0.1:$P_BACKEND

listen mtls_tcp_in
    mode tcp
    bind 127.0.0.1:$P_HA_S_TCP ssl crt $c/backend-dns-bundle.pem ca-file $c/ca.pem verify required ssl-min-ver TLSv1.3
    server sink 127.0.0.1:$P_SINK
EOF
}

write_weft_confs() {
  local dir="$RUN_DIR/conf/weft"
  mkdir -p "$dir"
  cat >"$dir/mesh.yaml" <<EOF
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: backend, namespace: default}
spec:
  ports: [{port: 80, protocol: http}]
  endpoints:
    - {address: "127.0.0.1:$P_WS_IN", mesh: true}
EOF
  cat >"$dir/bulk-mesh.yaml" <<EOF
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: bulk, namespace: default}
spec:
  ports: [{port: 9000, protocol: tcp}]
  endpoints:
    - {address: "127.0.0.1:$P_BS_IN", mesh: true}
EOF
}

# ------------------------------------------------------------------ 5. start everything

start_nginx() {
  local name=$1 dir="$RUN_DIR/conf/$2"
  nginx -t -q -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" 2>"$RUN_DIR/logs/$name-configtest.log" \
    || { cat "$RUN_DIR/logs/$name-configtest.log"; die "nginx config for $name is invalid ($dir/nginx.conf)"; }
  start_bg "$name" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" -g 'daemon off;'
}

start_haproxy() {
  local name=$1 cfg="$RUN_DIR/conf/haproxy/$2.cfg"
  haproxy -c -q -f "$cfg" >"$RUN_DIR/logs/$name-configtest.log" 2>&1 \
    || { cat "$RUN_DIR/logs/$name-configtest.log"; die "HAProxy config for $name is invalid ($cfg)"; }
  start_bg "$name" haproxy -db -f "$cfg"
}

start_weft() {
  local c="$RUN_DIR/certs" w="$RUN_DIR/conf/weft"
  # RUST_LOG=warn: no per-request logging, like access_log off for nginx.
  start_bg weft_client env RUST_LOG=warn "$WEFT_BIN" proxy --service client --namespace default \
    --local "$w/mesh.yaml" --cert "$c/client.pem" --key "$c/client-key.pem" --ca "$c/ca.pem" \
    --outbound "127.0.0.1:$P_WC_OUT" --inbound "127.0.0.1:$P_WC_IN" --admin "127.0.0.1:$P_WC_ADMIN" \
    --app 127.0.0.1:1 --threads 1
  start_bg weft_server env RUST_LOG=warn "$WEFT_BIN" proxy --service backend --namespace default \
    --local "$w/mesh.yaml" --cert "$c/backend.pem" --key "$c/backend-key.pem" --ca "$c/ca.pem" \
    --inbound "127.0.0.1:$P_WS_IN" --outbound "127.0.0.1:$P_WS_OUT" --admin "127.0.0.1:$P_WS_ADMIN" \
    --app "127.0.0.1:$P_BACKEND" --threads 1
  # Second pair for the TCP test: the server's app is the byte sink.
  start_bg weft_bulk_client env RUST_LOG=warn "$WEFT_BIN" proxy --service client --namespace default \
    --local "$w/bulk-mesh.yaml" --cert "$c/client.pem" --key "$c/client-key.pem" --ca "$c/ca.pem" \
    --outbound "127.0.0.1:$P_BC_OUT" --inbound "127.0.0.1:$P_BC_IN" --admin "127.0.0.1:$P_BC_ADMIN" \
    --app 127.0.0.1:1 --upstream "bulk=127.0.0.1:$P_BC_UP" --threads 1
  start_bg weft_bulk_server env RUST_LOG=warn "$WEFT_BIN" proxy --service bulk --namespace default \
    --local "$w/bulk-mesh.yaml" --cert "$c/bulk.pem" --key "$c/bulk-key.pem" --ca "$c/ca.pem" \
    --inbound "127.0.0.1:$P_BS_IN" --outbound "127.0.0.1:$P_BS_OUT" --admin "127.0.0.1:$P_BS_ADMIN" \
    --app "127.0.0.1:$P_SINK" --threads 1
}

wait_port() {
  local name=$1 port=$2 i
  for i in $(seq 100); do
    alive "$name"
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  die "$name does not listen on 127.0.0.1:$port after 10s (see logs/$name.log)"
}

# check_http LABEL URL: one request must return 200 with the 1 KB body.
check_http() {
  local out
  out=$(curl -s --noproxy "*" -m 5 -o /dev/null -w '%{http_code} %{size_download}' -H 'Host: backend' "$2" || true)
  [[ $out == "200 $BODY_SIZE" ]] || die "$1: GET $2 answered '$out', expected '200 $BODY_SIZE' (see logs/)"
  log "$1 serves: $out"
}

# check_mtls LABEL PORT: the server side must reject a client without a certificate, and (for
# nginx/HAProxy) serve over TLS 1.3 with one. Records protocol and cipher for the report.
check_mtls() {
  local label=$1 port=$2 c="$RUN_DIR/certs" out code
  out=$(timeout 10 openssl s_client -connect "127.0.0.1:$port" -tls1_3 -cert "$c/client.pem" \
        -key "$c/client-key.pem" -CAfile "$c/ca.pem" -alpn h2,http/1.1 -brief </dev/null 2>&1 | tr -d '\000' || true)
  echo "$out" >"$RUN_DIR/meta/tls-$label.txt"
  code=$(curl -sk --noproxy "*" -m 5 --tlsv1.3 -o /dev/null -w '%{http_code}' -H 'Host: backend' "https://127.0.0.1:$port/1k" || true)
  if [[ $code == 200 ]]; then
    banner "$label: the mTLS listener on port $port served a client WITHOUT a certificate"
    echo "ACCEPTED (HTTP 200)" >"$RUN_DIR/meta/nocert-$label.txt"
  else
    log "$label: client without certificate rejected (HTTP code '$code')"
    echo "rejected (curl HTTP code $code)" >"$RUN_DIR/meta/nocert-$label.txt"
  fi
  grep -q 'TLSv1.3' <<<"$out" || warn "$label: TLS 1.3 handshake with client cert not confirmed (see meta/tls-$label.txt)"
}

start_all() {
  write_backend_conf
  start_nginx backend backend
  start_bg sink python3 "$LIB" tcp-sink "$P_SINK" "$RUN_DIR/tcp/sink.log"
  wait_port backend "$P_BACKEND"; wait_port sink "$P_SINK"

  if has_path nginx; then
    write_nginx_confs
    start_nginx nginx_server nginx-server; start_nginx nginx_client nginx-client
    wait_port nginx_server "$P_NG_S_HTTP"; wait_port nginx_client "$P_NG_C_HTTP"
  fi
  if has_path haproxy; then
    write_haproxy_confs
    start_haproxy haproxy_server server; start_haproxy haproxy_client client
    wait_port haproxy_server "$P_HA_S_HTTP"; wait_port haproxy_client "$P_HA_C_HTTP"
  fi
  if has_path weft; then
    write_weft_confs
    start_weft
    local n p
    for n in weft_client:$P_WC_ADMIN weft_server:$P_WS_ADMIN weft_bulk_client:$P_BC_ADMIN weft_bulk_server:$P_BS_ADMIN; do
      alive "${n%%:*}"
      python3 "$LIB" wait-http "http://127.0.0.1:${n##*:}/ready" 30 \
        || { tail -n 30 "$RUN_DIR/logs/${n%%:*}.log"; die "${n%%:*} never became ready"; }
      log "${n%%:*} ready"
    done
  fi

  # Where the load generator sends, and which processes make up each pair.
  declare -gA URL TCP_PORT ROLES TCP_ROLES
  URL[direct]="http://127.0.0.1:$P_BACKEND/1k";   TCP_PORT[direct]=$P_SINK
  ROLES[direct]="backend=$PID_backend";            TCP_ROLES[direct]=""
  if has_path nginx; then
    URL[nginx]="http://127.0.0.1:$P_NG_C_HTTP/1k"; TCP_PORT[nginx]=$P_NG_C_TCP
    ROLES[nginx]="client=$PID_nginx_client server=$PID_nginx_server backend=$PID_backend"
    TCP_ROLES[nginx]="client=$PID_nginx_client server=$PID_nginx_server"
  fi
  if has_path haproxy; then
    URL[haproxy]="http://127.0.0.1:$P_HA_C_HTTP/1k"; TCP_PORT[haproxy]=$P_HA_C_TCP
    ROLES[haproxy]="client=$PID_haproxy_client server=$PID_haproxy_server backend=$PID_backend"
    TCP_ROLES[haproxy]="client=$PID_haproxy_client server=$PID_haproxy_server"
  fi
  if has_path weft; then
    URL[weft]="http://127.0.0.1:$P_WC_OUT/1k"; TCP_PORT[weft]=$P_BC_UP
    ROLES[weft]="client=$PID_weft_client server=$PID_weft_server backend=$PID_backend"
    TCP_ROLES[weft]="client=$PID_weft_bulk_client server=$PID_weft_bulk_server"
  fi

  local p
  for p in "${PATHS[@]}"; do check_http "$p" "${URL[$p]}"; done
  has_path nginx && check_mtls nginx "$P_NG_S_HTTP"
  has_path haproxy && check_mtls haproxy "$P_HA_S_HTTP"
  has_path weft && check_mtls weft "$P_WS_IN"
  return 0
}

# ------------------------------------------------------------------ 6. measurements

# sample OUT ROLE=PID...: CPU ticks and memory of each role's process tree. ROLES[...] values
# are space-separated ROLE=PID lists and are word-split on purpose where they are passed.
sample() { python3 "$LIB" sample "$@"; }

oha_run() {
  local out=$1; shift
  # Loopback only: make sure no proxy from the environment is involved.
  env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY -u all_proxy -u ALL_PROXY \
    "$OHA" --no-tui "${OHA_JSON[@]}" "${OHA_WAIT[@]}" "${OHA_HOST[@]}" "$@" >"$out" 2>"$out.stderr" \
    || { cat "$out.stderr"; die "oha failed: $*"; }
}

# pin PATH on|off: client proxy on core 0, server proxy on core 1 (all threads, all processes
# of the tree); backend and load generator stay unpinned.
pin() {
  local path=$1 mode=$2 spec role pid p cpu
  [[ $NPROC -ge 2 ]] && command -v taskset >/dev/null || return 0
  for spec in ${ROLES[$path]} ${TCP_ROLES[$path]}; do
    role=${spec%%=*} pid=${spec#*=}
    case "$role" in client) cpu=0 ;; server) cpu=1 ;; *) continue ;; esac
    [[ $mode == off ]] && cpu="0-$((NPROC - 1))"
    for p in $pid $(pgrep -P "$pid" || true); do taskset -a -p -c "$cpu" "$p" >/dev/null; done
  done
}

measure_latency() {
  local rep=$1 path=$2
  local base="$RUN_DIR/lat/$path-r$rep"
  log "latency  rep $rep/$REPS  $path: ${RATE} RPS, $CONNS conns, ${LAT_DUR}s (+${WARMUP}s warm-up)"
  oha_run "$base.warmup.json" -q "$RATE" --latency-correction -c "$CONNS" -z "${WARMUP}s" "${URL[$path]}"
  sample "$base.before.json" ${ROLES[$path]}
  oha_run "$base.oha.json" -q "$RATE" --latency-correction -c "$CONNS" -z "${LAT_DUR}s" "${URL[$path]}"
  sample "$base.after.json" ${ROLES[$path]}
  python3 "$LIB" check-oha "$base.oha.json" --size "$BODY_SIZE" --label "latency $path rep $rep" \
    --min-requests $((RATE * LAT_DUR * 95 / 100))
}

measure_max() {
  local rep=$1 path=$2
  local base="$RUN_DIR/max/$path-r$rep"
  log "max RPS  rep $rep/$REPS  $path: $MAX_CONNS conns, ${MAX_DUR}s"
  oha_run "$base.warmup.json" -c "$MAX_CONNS" -z 1s "${URL[$path]}"
  sample "$base.before.json" ${ROLES[$path]}
  oha_run "$base.oha.json" -c "$MAX_CONNS" -z "${MAX_DUR}s" "${URL[$path]}"
  sample "$base.after.json" ${ROLES[$path]}
  python3 "$LIB" check-oha "$base.oha.json" --size "$BODY_SIZE" --label "max RPS $path rep $rep"
}

measure_tcp() {
  local rep=$1 path=$2
  local base="$RUN_DIR/tcp/$path-r$rep"
  local roles="${TCP_ROLES[$path]:-}"
  log "tcp      rep $rep/$TCP_REPS  $path: $TCP_BYTES bytes on one connection"
  [[ -n $roles ]] && sample "$base.before.json" $roles
  python3 "$LIB" tcp-send "${TCP_PORT[$path]}" "$TCP_BYTES" "$RUN_DIR/tcp/sink.log" >"$base.json" \
    || die "tcp transfer through $path failed"
  [[ -n $roles ]] && sample "$base.after.json" $roles
  log "  $(python3 -c 'import json,sys; print("%.0f MB/s" % json.load(open(sys.argv[1]))["mb_per_s"])' "$base.json")"
}

all_roles_sample() {
  local out=$1 spec args=() p
  # Named PATH.ROLE and PATH.tcp-ROLE: the Weft TCP test uses its own pair of processes.
  for p in "${PATHS[@]}"; do
    for spec in ${ROLES[$p]}; do args+=("$p.$spec"); done
    for spec in ${TCP_ROLES[$p]:-}; do args+=("$p.tcp-$spec"); done
  done
  sample "$out" "${args[@]}"
}

# ------------------------------------------------------------------ 7. metadata for the report

write_meta() {
  local m="$RUN_DIR/meta"
  echo "$ORIG_CMD" >"$m/command.txt"
  { nginx -v 2>&1 || echo "nginx: not installed"; } >"$m/nginx.txt"
  { haproxy -v 2>&1 | head -n 1 || echo "haproxy: not installed"; } >"$m/haproxy.txt"
  "$OHA" --version >"$m/oha.txt" 2>&1
  openssl version >"$m/openssl.txt" 2>&1
  if [[ -x $WEFT_BIN ]]; then { "$WEFT_BIN" --version 2>&1 || true; } | head -n 1 >"$m/weft.txt"; fi
  python3 "$LIB" git-commit "$ROOT" >"$m/commit.txt"
  nproc >"$m/nproc.txt"
  grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //' >"$m/cpu.txt" || echo unknown >"$m/cpu.txt"
  uname -srm >"$m/kernel.txt"
  grep MemTotal /proc/meminfo >"$m/mem.txt"
  date -u '+%Y-%m-%d %H:%M UTC' >"$m/date.txt"
  (IFS=,; echo "${PATHS[*]}") >"$m/paths.txt"
  cat >"$m/params.json" <<EOF
{"quick": $QUICK, "rate": $RATE, "conns": $CONNS, "lat_duration": $LAT_DUR, "reps": $REPS,
 "warmup": $WARMUP, "max_duration": $MAX_DUR, "max_conns": $MAX_CONNS,
 "tcp_bytes": $TCP_BYTES, "tcp_reps": $TCP_REPS, "body_size": $BODY_SIZE,
 "pinned": $([[ $NPROC -ge 2 ]] && command -v taskset >/dev/null && echo true || echo false)}
EOF
}

# Other busy processes (e.g. a compiler) make every number here meaningless: record them.
check_quiet() {
  local when=$1
  # $$ covers everything this script started (proxies, backend, sink, tee).
  python3 "$LIB" busy 1 $$ >"$RUN_DIR/meta/busy-$when.txt"
  if [[ -s $RUN_DIR/meta/busy-$when.txt ]]; then
    warn "other processes were using CPU $when the run (numbers are disturbed): $(tr '\n' ';' <"$RUN_DIR/meta/busy-$when.txt")"
  fi
  cat /proc/loadavg >"$RUN_DIR/meta/loadavg-$when.txt"
}

# ------------------------------------------------------------------ main

main() {
  log "results: $RUN_DIR"
  install_tools
  has_path direct || die "BENCH_PATHS must include 'direct' (the baseline)"
  prepare_weft
  alloc_ports
  make_certs
  start_all
  write_meta
  check_quiet before

  local rep p
  log "phase 1: fixed rate (latency, CPU, RSS); proxies unpinned; paths interleaved per repetition"
  for rep in $(seq "$REPS"); do
    for p in "${PATHS[@]}"; do measure_latency "$rep" "$p"; done
  done
  all_roles_sample "$RUN_DIR/lat/end.json"

  log "phase 2: max RPS; client proxy pinned to core 0, server proxy to core 1"
  for p in "${PATHS[@]}"; do pin "$p" on; done
  for rep in $(seq "$REPS"); do
    for p in "${PATHS[@]}"; do measure_max "$rep" "$p"; done
  done

  log "phase 3: single-connection TCP throughput through the mTLS hop (same pinning)"
  for rep in $(seq "$TCP_REPS"); do
    for p in "${PATHS[@]}"; do measure_tcp "$rep" "$p"; done
  done
  for p in "${PATHS[@]}"; do pin "$p" off; done
  all_roles_sample "$RUN_DIR/final.json"
  check_quiet after
  if has_path weft; then
    local n
    for n in weft_client:$P_WC_ADMIN weft_server:$P_WS_ADMIN weft_bulk_client:$P_BC_ADMIN weft_bulk_server:$P_BS_ADMIN; do
      curl -s --noproxy "*" -m 5 "http://127.0.0.1:${n##*:}/metrics" >"$RUN_DIR/meta/metrics-${n%%:*}.txt" || true
    done
  fi

  local out="$RUN_DIR/benchmarks.md"
  # The docs file's other sections (control plane, TLS handshakes) are carried over.
  python3 "$REPORT" "$RUN_DIR" "$out" "$DOCS_OUT"
  if [[ -n $DOCS_OUT ]]; then cp "$out" "$DOCS_OUT"; log "report: $DOCS_OUT"; else log "report: $out (quick run: docs/ untouched)"; fi
  log "raw results: $RUN_DIR"

  if [[ -s $RUN_DIR/meta/skipped.txt ]]; then
    banner "NOT MEASURED: $(tr '\n' ' ' <"$RUN_DIR/meta/skipped.txt")— the report is incomplete"
    [[ $SKIP_WEFT == 1 && $(cat "$RUN_DIR/meta/skipped.txt") == weft ]] || exit 2
  fi
}

main
