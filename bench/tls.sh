#!/usr/bin/env bash
# Mutual-TLS handshake benchmark: how many mTLS handshakes one core of a real `weft proxy`
# accepts per second, with full handshakes and with TLS session resumption.
#
# It makes a dev CA and two certificates with `weft cert` in a temporary directory, starts
# the app (`weft-bench-tls app`, answers 200) and one `weft proxy` (release build, local
# mode, mutual TLS on its inbound) pinned to core 0, then runs bench/tls (weft-bench-tls)
# pinned to core 1 against the proxy's inbound listener: each connection is a handshake and
# one HTTP/1.1 request answered in full, once with a new client config per connection
# (`fresh`: full handshakes) and once with one client config per concurrent worker
# (`resume`: session tickets). The proxy's CPU time (utime+stime from /proc/PID/stat)
# around each run gives handshakes per proxy CPU-second. Then it stops what it started and
# writes the section "Mutual TLS handshakes" of docs/benchmarks.md (raw output under
# bench/results/, which git ignores). All traffic stays on 127.0.0.1.
#
# Usage: bench/tls.sh [--no-build] [--docs FILE | --no-docs]
# Environment:
#   TLS_CONNECTIONS (10000), TLS_CONCURRENCY (16): connections per mode, and how many at once
#   TLS_WARMUP (500): connections before the measured runs, not reported
#   WEFT_BIN, TLS_BIN
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
ORIG_CMD="bench/tls.sh${*:+ $*}"
HEADING="## Mutual TLS handshakes"

BUILD=1 DOCS_OUT="$ROOT/docs/benchmarks.md"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-build) BUILD=0 ;;
    --docs) DOCS_OUT="$2"; shift ;;
    --no-docs) DOCS_OUT="" ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "tls.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
  shift
done

CONNECTIONS=${TLS_CONNECTIONS:-10000}
CONCURRENCY=${TLS_CONCURRENCY:-16}
WARMUP=${TLS_WARMUP:-500}
WEFT_BIN=${WEFT_BIN:-$ROOT/target/release/weft}
TLS_BIN=${TLS_BIN:-$ROOT/target/release/weft-bench-tls}
PROXY_CORE=0 CLIENT_CORE=1

log() { printf '[tls] %s\n' "$*" >&2; }

if [[ $BUILD == 1 ]]; then
  log "building (release)"
  (cd "$ROOT" && cargo build --release -p weft -p weft-bench-tls)
fi
[[ -x $WEFT_BIN ]] || { echo "no $WEFT_BIN: build first" >&2; exit 1; }
[[ -x $TLS_BIN ]] || { echo "no $TLS_BIN: build first" >&2; exit 1; }
command -v taskset >/dev/null || { echo "taskset not found (util-linux): it pins the proxy to one core" >&2; exit 1; }
(($(nproc) >= 2)) || { echo "needs 2 cores: one for the proxy, one for the load generator" >&2; exit 1; }

RUN_DIR=$ROOT/bench/results/tls-$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$RUN_DIR"
CERT_DIR=$(mktemp -d "${TMPDIR:-/tmp}/weft-tls-bench.XXXXXX")

# Everything started here is stopped by PID on the way out, however the script ends.
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  PIDS=()
  rm -rf "$CERT_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "certificates in $CERT_DIR"
"$WEFT_BIN" cert ca --out "$CERT_DIR" >/dev/null
for service in api bench; do
  "$WEFT_BIN" cert issue --ca-dir "$CERT_DIR" --service "$service" --namespace default \
    --ttl 24h --out "$CERT_DIR" >/dev/null
done
printf 'apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {name: api}\nspec: {ports: [{port: 80, protocol: http}]}\n' \
  >"$CERT_DIR/local.yaml"

# Waits up to 10 s for `pattern` to print something from `file`, while `pid` lives.
await_line() {
  local file=$1 pid=$2 what=$3 pattern=$4 found
  for _ in $(seq 100); do
    found=$(sed -n "$pattern" "$file" | head -1)
    if [[ -n $found ]]; then printf '%s\n' "$found"; return 0; fi
    kill -0 "$pid" 2>/dev/null || { cat "$file" >&2; echo "$what exited" >&2; exit 1; }
    sleep 0.1
  done
  cat "$file" >&2
  echo "$what did not report its address within 10 s" >&2
  exit 1
}

# The app shares the load generator's core, so the proxy has core 0 to itself.
taskset -c "$CLIENT_CORE" "$TLS_BIN" app >"$RUN_DIR/app.out" 2>"$RUN_DIR/app.log" &
APP_PID=$!
PIDS+=("$APP_PID")
APP_ADDR=$(await_line "$RUN_DIR/app.out" "$APP_PID" "the app (weft-bench-tls app)" 's/^\(127\.0\.0\.1:[0-9]*\)$/\1/p')

# RUST_LOG would override --log, so it is cleared.
taskset -c "$PROXY_CORE" env -u RUST_LOG "$WEFT_BIN" --log info proxy --service api \
  --threads 1 --local "$CERT_DIR/local.yaml" --app "$APP_ADDR" \
  --inbound 127.0.0.1:0 --outbound 127.0.0.1:0 --admin 127.0.0.1:0 \
  --cert "$CERT_DIR/api.pem" --key "$CERT_DIR/api-key.pem" --ca "$CERT_DIR/ca.pem" \
  >/dev/null 2>"$RUN_DIR/proxy.log" &
PROXY_PID=$!
PIDS+=("$PROXY_PID")
INBOUND=$(await_line "$RUN_DIR/proxy.log" "$PROXY_PID" "weft proxy" \
  's/.*listener="\{0,1\}inbound"\{0,1\} addr=\([0-9.:]*\).*/\1/p')
log "app $APP_ADDR (pid $APP_PID), proxy inbound $INBOUND (pid $PROXY_PID) on core $PROXY_CORE"

CLK_TCK=$(getconf CLK_TCK)
# The proxy's user+system CPU time so far, in clock ticks. The command name in field 2 may
# hold spaces, so fields are counted after its closing parenthesis (utime and stime are
# fields 14 and 15, i.e. the 12th and 13th after it).
proxy_ticks() {
  local stat
  stat=$(<"/proc/$PROXY_PID/stat")
  awk '{print $12 + $13}' <<<"${stat##*) }"
}

load() {
  taskset -c "$CLIENT_CORE" "$TLS_BIN" --inbound "$INBOUND" --cert "$CERT_DIR/bench.pem" \
    --key "$CERT_DIR/bench-key.pem" --ca "$CERT_DIR/ca.pem" "$@"
}

# Warms the proxy's allocator, its pooled connection to the app and the page cache.
log "warm-up: $WARMUP connections"
load --connections "$WARMUP" --concurrency "$CONCURRENCY" --mode fresh >"$RUN_DIR/warmup.json"

RESULTS=()
for mode in fresh resume; do
  log "$mode: $CONNECTIONS connections, $CONCURRENCY at a time"
  before=$(proxy_ticks)
  if ! load --connections "$CONNECTIONS" --concurrency "$CONCURRENCY" --mode "$mode" \
    >"$RUN_DIR/$mode.json" 2> >(tee "$RUN_DIR/$mode.log" >&2); then
    echo "weft-bench-tls failed in mode $mode; see $RUN_DIR/$mode.log" >&2
    exit 1
  fi
  after=$(proxy_ticks)
  kill -0 "$PROXY_PID" 2>/dev/null || { echo "weft proxy died during $mode; see $RUN_DIR/proxy.log" >&2; exit 1; }
  cpu=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", t / hz}')
  log "$mode: $(cat "$RUN_DIR/$mode.json"); proxy CPU ${cpu}s"
  RESULTS+=("$RUN_DIR/$mode.json" "$cpu")
done
cleanup

# shellcheck disable=SC2016  # the backquotes are Markdown, not command substitution.
machine() {
  local cpu mem
  cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
  mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
  printf -- '- Date: %s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
  printf -- '- CPU: %s, %s cores (`nproc`); memory: %s\n' "$cpu" "$(nproc)" "$mem"
  printf -- '- Kernel: %s\n' "$(uname -srm)"
  printf -- '- Command: `%s`\n' "$ORIG_CMD"
  printf -- '- Weft: %s (release build)\n' "$("$WEFT_BIN" --version)"
  printf -- '- Raw results: `%s/` (not committed)\n' "${RUN_DIR#"$ROOT"/}"
}

section="$RUN_DIR/tls.md"
machine >"$RUN_DIR/machine.md"
python3 - "$RUN_DIR/machine.md" "$CONCURRENCY" "$WARMUP" "${RESULTS[@]}" >"$section" <<'PY'
import json, sys

machine, concurrency, warmup, *rest = sys.argv[1:]
rows = [(json.load(open(f)), float(cpu)) for f, cpu in zip(rest[::2], rest[1::2])]
out = []
w = out.append
w("## Mutual TLS handshakes")
w("")
w("<!-- Generated by bench/tls.sh (bench/tls). Do not edit by hand: rerun it. -->")
w("")
w(open(machine).read().rstrip())
w("")
w("### Method")
w("")
w("One `weft proxy` (release build, `--threads 1`, local mode, mutual TLS on its inbound "
  "listener, log level info) is pinned to core 0 with `taskset`; the load generator "
  "(`weft-bench-tls`) and the app behind the proxy (`weft-bench-tls app`, a keep-alive "
  "HTTP/1.1 server answering 200 with a 2-byte body) share core 1. Certificates are ECDSA "
  "P-256 from one dev CA (`weft cert ca` / `weft cert issue`); the client presents "
  "`spiffe://weft.local/ns/default/svc/bench` and accepts only the proxy's SPIFFE id. Each "
  "connection is a TCP connect, a TLS 1.3 handshake (ALPN `http/1.1`, no SNI), one "
  "`GET /` with `connection: close` and the whole 200 answer: in TLS 1.3 the proxy checks "
  "the client certificate only after the client has finished, so only the answer proves the "
  "connection was accepted; anything else is a failure. "
  f"{concurrency} connections are in flight at once, over loopback, after a warm-up of "
  f"{int(warmup):,} connections. "
  "`fresh` gives every connection a new client config, hence an empty session cache: every "
  "handshake is full (ECDHE, certificate signatures and chain checks on both sides). "
  f"`resume` gives each of the {concurrency} workers one client config for all its "
  "connections, so each connection resumes with a session ticket the proxy sent the "
  "worker's previous one (PSK with ECDHE, no certificates); only each worker's first "
  "connection is full, and the resumed column counts the connections that actually "
  "resumed (rustls `handshake_kind()`). Not one config for all workers: a rustls client "
  "cache keeps at most 8 TLS 1.3 tickets per server, so with more connections in flight "
  "about half of them found the cache empty and did full handshakes. *Wall handshakes/s* is successful connections over the run's wall "
  "time and is bounded by whichever core saturates first, the proxy's or the client's; "
  "*handshakes per proxy CPU-second* divides them by the proxy's user+system CPU time "
  "during the run (`/proc/PID/stat`, 10 ms ticks), which is what one proxy core can accept "
  "when it is the bottleneck. Both include the proxy's work for the request itself "
  "(forwarding it to the app) and sending new session tickets.")
w("")
w("### Results")
w("")
w("| mode | connections | failures | wall handshakes/s | proxy CPU seconds | handshakes per proxy CPU-second | resumed |")
w("|---|--:|--:|--:|--:|--:|--:|")
for r, cpu in rows:
    per_cpu = f"{r['succeeded'] / cpu:,.0f}" if cpu > 0 else "–"
    w(f"| {r['mode']} | {r['connections']:,} | {r['failures']:,} | {r['handshakes_per_second']:,.0f} | "
      f"{cpu:.2f} | {per_cpu} | {r['resumed']:,} |")
w("")
w("Share of the wall time the proxy's core was busy: " + ", ".join(
    f"{100 * cpu / r['seconds']:.0f}% in `{r['mode']}`" for r, cpu in rows) +
  ". Where that is well below 100%, the load generator's core (which also runs the app and "
  "does the client half of every handshake) was the bottleneck, so the wall rate understates "
  "the proxy and the per-CPU-second rate is the one to read.")
failed = [(r, cpu) for r, cpu in rows if r["failures"]]
if failed:
    w("")
    w("**Some connections failed**, so these numbers undercount: " + "; ".join(
        f"{r['mode']}: {r['failures']:,} of {r['connections']:,}, first error: {r['first_error']}"
        for r, _ in failed) + ".")
print("\n".join(out))
PY

cat "$section"
if [[ -n $DOCS_OUT ]]; then
  # Replaces this section (from its heading to the next "## " heading, or the end) and
  # leaves the rest, which bench/run.sh and bench/control-plane.sh own, as it is.
  python3 "$BENCH_DIR/lib/replace_section.py" "$DOCS_OUT" "$section" "$HEADING"
  log "report: ${DOCS_OUT}"
fi
