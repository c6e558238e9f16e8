#!/usr/bin/env bash
# Rebuilds the proxy's eBPF objects from their C source (crates/proxy/bpf/*.bpf.c) with
# clang, and records each source's SHA-256 next to its object. The objects are committed,
# so building Weft needs only the Rust toolchain; the test `bpf_objects_are_built_from_their_source`
# fails when a source changed and this script was not run.
#
# Needs Debian's clang and libbpf-dev (installed here when missing and run as root).
set -euo pipefail
cd "$(dirname "$0")/../crates/proxy/bpf"

missing=()
command -v clang >/dev/null 2>&1 || missing+=(clang)
[ -f /usr/include/bpf/bpf_helpers.h ] || missing+=(libbpf-dev)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing: ${missing[*]}; run as root, or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

arch_include="/usr/include/$(uname -m)-linux-gnu"
for source in *.bpf.c; do
  object="${source%.c}.o"
  # -g keeps BTF (the loader needs it for the maps); the DWARF line info is stripped.
  clang -O2 -g -target bpf -I"$arch_include" -c "$source" -o "$object"
  llvm-strip -g "$object" 2>/dev/null || true
  sha256sum "$source" | cut -d' ' -f1 > "$object.source-sha256"
  echo "built $object from $source"
done
