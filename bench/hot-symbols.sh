#!/usr/bin/env bash
# Regenerates crates/weft/hot-symbols.txt: every function of the `weft` binary that a proxy
# runs, hottest first. The release build hands the list to the linker
# (--symbol-ordering-file, see crates/weft/build.rs), which puts those functions side by side
# at the start of .text.
#
# Why: the kernel maps a binary's code around each page fault (64 KB at a time), so code the
# proxy runs that is spread over the whole 9 MB .text (control plane, CLI and all) keeps most
# of it resident. Packed together, a proxy under load holds about 4 MB less (bench/run.sh
# measures it), and its hot path shares fewer cache lines and TLB entries with cold code.
#
# How: the Weft mTLS pair (bench/lib/pair.sh) runs under callgrind, which records every
# function executed, in local mode and then in mesh mode (with a real `weft control`), while
# oha sends it HTTP/1.1, HTTP/2 and opaque TCP traffic and the admin endpoints are scraped.
# Run it after changing the data path or updating dependencies: a symbol that no longer
# exists is skipped by the linker, so a stale list only packs less.
#
# Usage: bench/hot-symbols.sh [--no-build]
#        bench/hot-symbols.sh --check   how much of the list the built binary still has (bench/run.sh
#                                       warns below 90 %: time to rerun this script)
# Needs: valgrind, nginx, curl, oha (bench/run.sh installs nginx and oha).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
OUT="$ROOT/crates/weft/hot-symbols.txt"
WEFT_BIN=${WEFT_BIN:-$ROOT/target/release/weft}
BUILD=1
case "${1:-}" in
  --no-build) BUILD=0 ;;
  --check)
    [[ -x $WEFT_BIN ]] || { echo "hot-symbols.sh: $WEFT_BIN not found" >&2; exit 1; }
    listed=$(wc -l <"$OUT")
    found=$(nm --defined-only "$WEFT_BIN" | awk '$2 ~ /^[tTwW]$/ {print $3}' \
      | awk 'NR == FNR {want[$1] = 1; next} ($1 in want) {n++} END {print n + 0}' "$OUT" -)
    # Built with the list, the binary's first function is one of them.
    first=$(nm -n --defined-only "$WEFT_BIN" | awk '$2 ~ /^[tT]$/ && !seen {print $3; seen = 1}')
    if ! grep -qxF "$first" "$OUT"; then
      echo "$WEFT_BIN was linked without crates/weft/hot-symbols.txt (first function: $first)"
      exit 1
    fi
    echo "$found of $listed functions in crates/weft/hot-symbols.txt are in $WEFT_BIN"
    [[ $((found * 100)) -ge $((listed * 90)) ]]
    exit ;;
  -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
  "") ;;
  *) echo "hot-symbols.sh: unknown option '$1'" >&2; exit 2 ;;
esac
OHA=$(command -v oha || echo "$BENCH_DIR/.tools/bin/oha")
for tool in valgrind callgrind_annotate nginx curl "$OHA"; do
  command -v "$tool" >/dev/null || { echo "hot-symbols.sh: $tool not found (see the header of this script)" >&2; exit 1; }
done
if [[ $BUILD == 1 ]]; then (cd "$ROOT" && cargo build --release -p weft); fi

DIR=$(mktemp -d /tmp/weft-hot-symbols.XXXXXX)
chmod 755 "$DIR" # the pairs' directories are inside, and nginx's workers are not root
# shellcheck source=lib/pair.sh
source "$BENCH_DIR/lib/pair.sh"
cleanup() { pair_stop; rm -rf "$DIR"; }
trap cleanup EXIT

# run_mode MODE: the pair in that mode under callgrind, HTTP/1.1, HTTP/2 and TCP traffic,
# admin scrapes; callgrind writes its files when the proxies exit.
run_mode() {
  local mode=$1 http url admin path host
  pair_setup "$DIR/$mode" "$mode"
  pair_start "valgrind --tool=callgrind --demangle=no --callgrind-out-file=$DIR/callgrind.$mode.%p"
  # Under callgrind a proxy runs about 50 times slower: a low rate, long enough for steady state.
  # HTTP/2 clients name the service in :authority, so they go through the upstream binding;
  # `tcp` is HTTP/1.1 carried as opaque TCP (a binding on an opaque port).
  for http in 1.1 2 tcp; do
    # An HTTP/2 client names the binding's address in :authority; a `host` header beside it
    # would name another host, which the proxy refuses (400, host_mismatch).
    host=(-H 'host: backend')
    case $http in
      1.1) url="http://127.0.0.1:$P_OUT/1k" ;;
      2) url="http://127.0.0.1:$P_BOUND/1k"; host=() ;;
      tcp) url="http://127.0.0.1:$P_TCP/1k" ;;
    esac
    "$OHA" --no-tui --http-version "${http/tcp/1.1}" -z 15s -q 100 -c 8 "${host[@]}" "$url" >"$DIR/oha.txt"
    grep -q '\[200\]' "$DIR/oha.txt" || { cat "$DIR/oha.txt"; echo "hot-symbols.sh: no 200 answers ($mode, $http)" >&2; exit 1; }
    for admin in "$P_ADMIN_server" "$P_ADMIN_client"; do
      for path in metrics ready live config certs; do
        curl -sf -o /dev/null "http://127.0.0.1:$admin/$path" || true
      done
    done
  done
  pair_stop
}
# Local mode (a mesh file, certificates from files) and mesh mode (control-plane stream,
# certificate issuance, health checks): both are how proxies run.
run_mode local
run_mode mesh

# Functions by their own instruction count (mangled names), kept only if the binary defines
# them; hottest first, so the busiest code shares the fewest pages.
nm --defined-only "$WEFT_BIN" | awk '$2 ~ /^[tTwW]$/ {print $3}' | sort -u >"$DIR/defined.txt"
for f in "$DIR"/callgrind.*.*; do callgrind_annotate --threshold=100 --inclusive=no "$f" 2>/dev/null; done \
  | sed -nE 's/^ *([0-9,]+) +\([^)]*\) +.*:([^: ]+)( \[.*\])?$/\1 \2/p' \
  | tr -d , \
  | awk '{cost[$2] += $1} END {for (f in cost) print cost[f], f}' \
  | sort -k1,1nr -k2 \
  | awk 'NR == FNR {defined[$1] = 1; next} ($2 in defined) {print $2}' "$DIR/defined.txt" - \
  >"$DIR/hot.txt"
count=$(wc -l <"$DIR/hot.txt")
[[ $count -gt 500 ]] || { echo "hot-symbols.sh: only $count functions found; not writing $OUT" >&2; exit 1; }
mv "$DIR/hot.txt" "$OUT"
echo "wrote $OUT: $count functions"
