#!/usr/bin/env bash
# Runs a coverage-guided fuzz target (libFuzzer, stable toolchain) for SECONDS, on the seed
# corpus in fuzz/corpus/TARGET plus what earlier runs found (fuzz/corpus-found/TARGET,
# which git ignores). A crash stops it and leaves the input in fuzz/artifacts/TARGET:
# make it a regression test, and add it to the seed corpus.
#
# Usage: scripts/fuzz.sh TARGET [SECONDS]      one target (default 60 s)
#        scripts/fuzz.sh --all [SECONDS]        every target in turn (what the test suite does)
#        scripts/fuzz.sh --list
# Targets: resources (YAML loader and compiler), detect (protocol detection), headers (the
# request head handling the proxy does itself), discovery (pushed configs and updates, as a
# proxy decodes and applies them), signing (Identity.Sign: CSRs, join tokens, renewals).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

TARGETS=(resources detect headers discovery signing)

case "${1:-}" in
  --list) printf '%s\n' "${TARGETS[@]}"; exit 0 ;;
  --all) shift; run=("${TARGETS[@]}") ;;
  ""|-h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  *) run=("$1"); shift ;;
esac
SECONDS_EACH=${1:-60}
for target in "${run[@]}"; do
  [[ " ${TARGETS[*]} " == *" $target "* ]] || { echo "fuzz.sh: no target '$target' (--list)" >&2; exit 2; }
done

# What cargo-fuzz does, without its nightly-only sanitizer flags: libFuzzer's coverage
# instrumentation (stable codegen options) and `--cfg fuzzing` for the entry points.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/target}
# An explicit target keeps RUSTFLAGS off build scripts and proc macros (they run on the
# host, without libFuzzer to resolve the coverage hooks).
HOST=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --locked --bins -q --target "$HOST"
BIN_DIR=$CARGO_TARGET_DIR/$HOST/release

for target in "${run[@]}"; do
  found="corpus-found/$target" artifacts="artifacts/$target"
  mkdir -p "$found" "$artifacts"
  echo "== fuzz $target for ${SECONDS_EACH}s"
  # New inputs go to the first directory; the seeds are read only.
  "$BIN_DIR/$target" "$found" "corpus/$target" \
    -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 2>"$found.log" || {
      tail -40 "$found.log" >&2
      echo "fuzz $target found a crash: the input is in fuzz/$artifacts/" >&2
      exit 1
    }
  grep -E 'stat::number_of_executed_units|stat::peak_rss_mb|cov:' "$found.log" | tail -3
done
