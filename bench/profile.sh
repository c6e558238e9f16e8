#!/usr/bin/env bash
# Where the Weft pair spends its time: a quick loop for data-plane work, not a benchmark.
#
# Starts an nginx backend (1 KB file) and a Weft mTLS pair on free loopback ports, drives
# them with oha at a fixed rate, and prints for each proxy: CPU µs per request, syscalls per
# request by kind (strace -c, in a second run, since strace slows the proxy), resident memory,
# and with --perf a perf profile of the server proxy (--perf-client: of the client proxy;
# software cpu-clock sampling, which works where hardware counters do not; --perf-out FILE
# keeps perf.data). The side-by-side numbers belong to bench/run.sh.
#
# --mesh runs the pair in mesh mode (a `weft control` issues certificates and pushes config).
# --policies N puts N AuthorizationPolicies of 10 rules each on the server's Service, laid out
# so every request is judged against all of them: N/2 DENY policies that match nothing, then
# N/2 ALLOW policies whose very last rule allows the client (compare with a run without).
# --flood RPS sends, beside the measured load and through the same client proxy, RPS more
# requests that a DENY policy on /probe/* denies (--flood-allowed: to /1k, allowed, for the
# A/B): what a denial flood costs the good callers' latency.
# --trace PERCENT gives both proxies --trace-collector (an OTLP address where nothing listens:
# spans are made, queued and their export fails, counted as dropped) and
# --trace-sample-percent PERCENT. --tap (mesh mode) keeps a `weft tap backend --max-rps 1000`
# open during the run: every request tapped, the most a tap costs.
# --instructions N runs both proxies under callgrind instead and counts the instructions each
# executes for N requests (after a warm-up of 200; 4 connections, as fast as they go, which
# under callgrind is a few hundred a second): an exact count, where CPU time per request moves
# 15-30 % between runs on a shared machine, for A/Bs of a few percent. Work done on timers
# (reports every 5 s) is counted too, over fewer requests a second than a native run has, so it
# weighs more per request than it would at --rate. With --perf-out FILE the counts are kept
# as FILE.client and FILE.server, for callgrind_annotate.
#
# Usage: bench/profile.sh [--mesh] [--policies N] [--flood RPS [--flood-allowed]]
#                         [--trace PERCENT] [--tap] [--instructions N]
#                         [--perf|--perf-client] [--perf-out FILE] [--rate RPS] [--seconds N]
# Needs: target/release/weft (cargo build --release -p weft), nginx, oha (bench/run.sh installs
# both), strace; perf for --perf (Debian's linux-perf).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
WEFT_BIN=${WEFT_BIN:-$ROOT/target/release/weft}
RATE=1000 SECONDS_RUN=10 PERF="" PERF_OUT="" MODE=local POLICIES=0 FLOOD=0 FLOOD_PATH=/probe/x
TRACE="" TAP=0 INSTRUCTIONS=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --mesh) MODE=mesh ;;
    --policies) POLICIES=$2; shift ;;
    --flood) FLOOD=$2; shift ;;
    --flood-allowed) FLOOD_PATH=/1k ;;
    --trace) TRACE=$2; shift ;;
    --tap) TAP=1 ;;
    --instructions) INSTRUCTIONS=$2; shift ;;
    --perf) PERF=server ;;
    --perf-client) PERF=client ;;
    --perf-out) PERF_OUT=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --seconds) SECONDS_RUN=$2; shift ;;
    -h|--help) sed -n '2,37p' "$0"; exit 0 ;;
    *) echo "profile.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
  shift
done
OHA=$(command -v oha || echo "$BENCH_DIR/.tools/bin/oha")
for tool in "$WEFT_BIN" "$OHA"; do
  [[ -x $tool ]] || { echo "profile.sh: $tool not found (see the header of this script)" >&2; exit 1; }
done
command -v nginx >/dev/null || { echo "profile.sh: nginx not found (apt-get install nginx)" >&2; exit 1; }
# The memory figures below depend on the code layout: a stale hot-symbols list left a proxy
# 5 MB larger for a day before anyone looked.
if ! layout=$(WEFT_BIN=$WEFT_BIN "$BENCH_DIR/hot-symbols.sh" --check 2>&1); then
  echo "profile.sh: WARNING: stale code layout ($layout): resident memory is higher than it needs to be; rerun bench/hot-symbols.sh" >&2
fi

DIR=$(mktemp -d /tmp/weft-profile.XXXXXX)
# shellcheck source=lib/pair.sh
source "$BENCH_DIR/lib/pair.sh"
cleanup() { pair_stop; rm -rf "$DIR"; }
trap cleanup EXIT
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
user_ticks() { awk '{print $14}' "/proc/$1/stat"; }

# policies N: the YAML of --policies (see the header).
policies() {
  local n=$1 p r action caller
  for ((p = 0; p < n; p++)); do
    action=DENY
    ((p >= n / 2)) && action=ALLOW
    printf -- '---\napiVersion: weft.dev/v1alpha1\nkind: AuthorizationPolicy\n'
    printf 'metadata: {name: p%03d, namespace: default}\n' "$p"
    printf 'spec:\n  targetRef: {kind: Service, name: backend}\n  action: %s\n  rules:\n' "$action"
    for ((r = 0; r < 10; r++)); do
      caller="caller-$p-$r"
      ((p == n - 1 && r == 9)) && caller=client
      printf '  - from: [{services: [%s]}]\n    to: [{methods: [GET], paths: [/1k, /api/*]}]\n' "$caller"
    done
  done
}

pair_setup "$DIR" "$MODE"
if ((FLOOD > 0)); then
  printf -- '---\napiVersion: weft.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: no-probes, namespace: default}\nspec:\n  targetRef: {kind: Service, name: backend}\n  action: DENY\n  rules: [{to: [{paths: [/probe/*]}]}]\n' >"$DIR/flood.yaml"
fi
if ((POLICIES > 0 || FLOOD > 0)); then
  { ((POLICIES > 0)) && policies "$POLICIES"; [[ -f $DIR/flood.yaml ]] && cat "$DIR/flood.yaml"; } >"$DIR/policies.yaml"
  if [[ $MODE == mesh ]]; then
    "$WEFT_BIN" apply --api "$PAIR_API" -f "$DIR/policies.yaml" >/dev/null
  else
    cat "$DIR/policies.yaml" >>"$DIR/mesh.yaml"
  fi
fi
if [[ -n $TRACE ]]; then
  PAIR_PROXY_ARGS="--trace-collector http://127.0.0.1:$(free_port) --trace-sample-percent $TRACE"
fi
if ((INSTRUCTIONS > 0)); then
  command -v callgrind_control >/dev/null || { echo "profile.sh: valgrind not found (apt-get install valgrind)" >&2; exit 1; }
  pair_start "valgrind --tool=callgrind --dump-instr=no --dump-line=no --callgrind-out-file=$DIR/callgrind.%p"
else
  pair_start
fi
if ((TAP)); then
  [[ $MODE == mesh ]] || { echo "profile.sh: --tap needs --mesh" >&2; exit 2; }
  "$WEFT_BIN" tap backend --max-rps 1000 -o json --api "$PAIR_API" >/dev/null 2>"$DIR/tap.log" &
  PAIR_PIDS+=("$!")
fi
URL="http://127.0.0.1:$P_OUT/1k"

load() { # SECONDS
  local flood_pid=""
  if ((FLOOD > 0)); then
    "$OHA" --no-tui -z "${1}s" -q "$FLOOD" -c 16 -H 'host: backend' \
      "http://127.0.0.1:$P_OUT$FLOOD_PATH" >"$DIR/flood.txt" &
    flood_pid=$!
  fi
  "$OHA" --no-tui -z "${1}s" -q "$RATE" -c 16 --latency-correction -H 'host: backend' "$URL" >"$DIR/oha.txt"
  [[ -n $flood_pid ]] && wait "$flood_pid"
  grep -q '\[200\]' "$DIR/oha.txt" || { cat "$DIR/oha.txt"; echo "profile.sh: no 200 answers" >&2; exit 1; }
}

if ((INSTRUCTIONS > 0)); then
  "$OHA" --no-tui -n 200 -c 4 -H 'host: backend' "$URL" >/dev/null
  for name in client server; do pid="PID_$name"; callgrind_control -z "${!pid}" >/dev/null; done
  "$OHA" --no-tui -n "$INSTRUCTIONS" -c 4 -H 'host: backend' "$URL" >"$DIR/oha.txt"
  grep -q '\[200\] '"$INSTRUCTIONS"' responses' "$DIR/oha.txt" || { cat "$DIR/oha.txt"; echo "profile.sh: not every request answered 200" >&2; exit 1; }
  echo "$MODE mode, $INSTRUCTIONS requests under callgrind, 4 connections, 1 KB answers, $POLICIES authorization policies${TRACE:+, tracing at $TRACE %}$( ((TAP)) && echo ', a tap open at 1000/s')"
  for name in client server; do
    pid="PID_$name"
    callgrind_control -d "${!pid}" >/dev/null 2>&1
    dump=$(ls -t "$DIR/callgrind.${!pid}".* | head -1)
    [[ -n $PERF_OUT ]] && cp "$dump" "$PERF_OUT.$name"
    awk -v n="$INSTRUCTIONS" -v name="$name" '/^(summary|totals):/ {printf "%s proxy: %.0f instructions per request\n", name, $2 / n; exit}' "$dump"
  done
  exit 0
fi

load 2 # warm-up: connections, TLS, pools
tick=$(getconf CLK_TCK)
before_c=$(cpu_ticks "$PID_client") before_s=$(cpu_ticks "$PID_server")
user_before_c=$(user_ticks "$PID_client") user_before_s=$(user_ticks "$PID_server")
perf_pid=""
if [[ -n $PERF ]]; then
  perf_target="PID_$PERF"
  perf record -e cpu-clock -F 2000 -g -p "${!perf_target}" -o "$DIR/perf.data" >/dev/null 2>&1 &
  perf_pid=$!
fi
load "$SECONDS_RUN"
after_c=$(cpu_ticks "$PID_client") after_s=$(cpu_ticks "$PID_server")
user_after_c=$(user_ticks "$PID_client") user_after_s=$(user_ticks "$PID_server")
requests=$(((RATE + FLOOD) * SECONDS_RUN))
echo "$MODE mode, fixed rate $RATE RPS for ${SECONDS_RUN}s, 16 connections, 1 KB answers, $POLICIES authorization policies${TRACE:+, tracing at $TRACE %}$( ((TAP)) && echo ', a tap open at 1000/s')"
grep -E 'Success rate|50.00%|99.00%' "$DIR/oha.txt" | sed 's/^/  oha: /'
if ((FLOOD > 0)); then
  echo "  beside a flood of $FLOOD RPS to $FLOOD_PATH ($([[ $FLOOD_PATH == /1k ]] && echo allowed || echo denied)); CPU below is per request of both:"
  grep -E '^ *\[[0-9]{3}\] [0-9]+ responses' "$DIR/flood.txt" | sed 's/^ */  flood: /'
fi
for name in client server; do
  var="PID_$name"; pid=${!var}
  b="before_${name:0:1}" a="after_${name:0:1}"
  cpu_us=$(( (${!a} - ${!b}) * 1000000 / tick / requests ))
  ub="user_before_${name:0:1}" ua="user_after_${name:0:1}"
  user_share=$(( (${!ua} - ${!ub}) * 100 / (${!a} - ${!b} > 0 ? ${!a} - ${!b} : 1) ))
  rss=$(awk '/VmRSS|VmHWM|RssAnon|RssFile/ {printf "%s %s kB  ", $1, $2}' "/proc/$pid/status")
  echo "$name proxy: ${cpu_us} µs CPU per request (${user_share} % of it in user space); $rss"
done

if [[ -n $perf_pid ]]; then
  kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
  [[ -n $PERF_OUT ]] && cp "$DIR/perf.data" "$PERF_OUT"
  echo; echo "$PERF proxy, perf (self time: by object, then the top 40 symbols):"
  perf report -i "$DIR/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -6
  perf report -i "$DIR/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null \
    | grep -E '^ +[0-9]' | sed 's/ *- *- *$//' | head -40
fi

if command -v strace >/dev/null; then
  for name in client server; do
    var="PID_$name"; pid=${!var}
    strace -c -f -p "$pid" -o "$DIR/strace-$name.txt" 2>/dev/null &
    strace_pid=$!
    sleep 0.5
    load 5
    kill -INT "$strace_pid"; wait "$strace_pid" 2>/dev/null || true
    echo; echo "$name proxy, syscalls per request (strace -c over $((RATE * 5)) requests):"
    awk -v n=$((RATE * 5)) '$1 ~ /^[0-9.]+$/ && NF >= 5 {printf "  %-16s %6.2f\n", $NF, $4 / n}' \
      "$DIR/strace-$name.txt" | sort -k2 -nr | head -12
  done
fi
