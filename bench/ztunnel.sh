#!/usr/bin/env bash
# Builds istio's ztunnel for the benchmark: the binary lands in bench/.tools/bin/ztunnel.
#
# Why a script: ztunnel is the ambient-mesh node proxy (HBONE = HTTP/2 CONNECT over mTLS),
# the closest thing to Weft's data path in a production mesh, so bench/ can measure it
# beside Weft. bench/lib/ztunnel-pair.sh runs a pair of them (see there for the topology).
#
# Usage: bench/ztunnel.sh [--force]
#   --force   rebuild even if the binary is newer than the source
#
# Environment:
#   ZTUNNEL_SRC      source tree (default bench/.tools/ztunnel-src)
#   ZTUNNEL_COMMIT   the pinned commit (default below); checked against the tree's stamp
#   ZTUNNEL_GIT_DIR  a git dir holding that commit (e.g. a bare mirror); if ZTUNNEL_SRC is
#                    missing and this has the commit, the tree is extracted from it
#                    (default /work/.mirror/istio+ztunnel/repo when it exists)
#   ZTUNNEL_FEATURES cargo features (default "testing": the fake CA, so no istiod is needed)
#   ZTUNNEL_NICE     niceness of the build (default 19: never slow down other work)
#   ZTUNNEL_NO_INSTALL=1  do not apt-get install missing build tools; fail instead
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOOLS="$BENCH_DIR/.tools"
# Pinned so every run measures the same ztunnel (master as of 2026-08-20, "Automator: update
# common-files@master ... (#2061)"). Bump deliberately, and say so in the benchmark report.
ZTUNNEL_COMMIT=${ZTUNNEL_COMMIT:-62d826530e5ce85764e309170205b293efcbc80b}
ZTUNNEL_SRC=${ZTUNNEL_SRC:-$TOOLS/ztunnel-src}
if [[ -z ${ZTUNNEL_GIT_DIR:-} && -d /work/.mirror/istio+ztunnel/repo ]]; then
  ZTUNNEL_GIT_DIR=/work/.mirror/istio+ztunnel/repo
fi
FEATURES=${ZTUNNEL_FEATURES:-testing}
NICE=${ZTUNNEL_NICE:-19}
# The build happens in a patched copy of the source (the source tree stays pristine) with its
# own target dir, kept between runs so that a rebuild after a bump is incremental.
BUILD_DIR="$TOOLS/ztunnel-build"
BIN_DIR="$TOOLS/bin"
BIN="$BIN_DIR/ztunnel"
FORCE=0
[[ ${1:-} == --force ]] && FORCE=1

log() { printf '[ztunnel.sh %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[ztunnel.sh] ERROR: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------ 1. the source

# extract_from_git DIR: the pinned commit's tree into $ZTUNNEL_SRC. Snapshots may lack the
# big blobs of vendor/boringssl-fips (prebuilt FIPS BoringSSL .a files, only used by the
# tls-boring feature we do not build), and `git archive` aborts on a missing blob, so
# extract only the paths outside it.
extract_from_git() {
  local git_dir=$1 tmp want got
  git -C "$git_dir" cat-file -e "$ZTUNNEL_COMMIT^{commit}" 2>/dev/null || return 1
  log "extracting ztunnel $ZTUNNEL_COMMIT from $git_dir into $ZTUNNEL_SRC"
  tmp="$ZTUNNEL_SRC.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  # git archive still prints "error: invalid object ... vendor/boringssl-fips/..." for the
  # absent blobs (exit status 0, archive complete): keep only other messages. tar -i: xargs
  # may split a long path list over several archives, concatenated on the pipe.
  git -C "$git_dir" ls-tree -r -z --name-only "$ZTUNNEL_COMMIT" \
    | grep -zv '^vendor/boringssl-fips/' \
    | xargs -0 git -C "$git_dir" archive "$ZTUNNEL_COMMIT" -- 2>"$tmp.err" \
    | tar -x -i -C "$tmp"
  grep -v "^error: invalid object .* for 'vendor/boringssl-fips/" "$tmp.err" >&2 || true
  rm -f "$tmp.err"
  # Every path outside vendor/boringssl-fips must have arrived.
  want=$(git -C "$git_dir" ls-tree -r --name-only "$ZTUNNEL_COMMIT" | grep -cv '^vendor/boringssl-fips/')
  got=$(find "$tmp" \( -type f -o -type l \) | wc -l)
  if [[ ! -f $tmp/Cargo.toml || $got != "$want" ]]; then
    rm -rf "$tmp"; die "extraction from $git_dir is incomplete ($got of $want files)"
  fi
  echo "$ZTUNNEL_COMMIT" >"$tmp/.weft-ztunnel-commit"
  mv "$tmp" "$ZTUNNEL_SRC"
}

if [[ ! -f $ZTUNNEL_SRC/Cargo.toml ]]; then
  if [[ -n ${ZTUNNEL_GIT_DIR:-} ]] && extract_from_git "$ZTUNNEL_GIT_DIR"; then :
  else
    cat >&2 <<EOF
[ztunnel.sh] ERROR: no ztunnel source at $ZTUNNEL_SRC (set ZTUNNEL_SRC to use another tree).
This script does not download it; get the pinned snapshot (commit $ZTUNNEL_COMMIT) one of these ways:
  * from a git mirror holding the commit (in the Weft dev sandbox: the fetch tool with
    source github:istio/ztunnel gives /work/.mirror/istio+ztunnel/repo), then rerun with
    ZTUNNEL_GIT_DIR=/path/to/that/git/dir (this script extracts the tree itself);
  * with network access:
      git clone https://github.com/istio/ztunnel "$ZTUNNEL_SRC"
      git -C "$ZTUNNEL_SRC" checkout $ZTUNNEL_COMMIT
    or: mkdir -p "$ZTUNNEL_SRC" && curl -fsSL \\
          https://github.com/istio/ztunnel/archive/$ZTUNNEL_COMMIT.tar.gz \\
          | tar -xz --strip-components=1 -C "$ZTUNNEL_SRC"
EOF
    exit 1
  fi
fi

# Which commit the tree is: our stamp, or git if it is a checkout. A mismatch is allowed
# (someone may be trying a newer ztunnel) but must be visible.
src_commit=unknown
if [[ -f $ZTUNNEL_SRC/.weft-ztunnel-commit ]]; then src_commit=$(<"$ZTUNNEL_SRC/.weft-ztunnel-commit")
elif git -C "$ZTUNNEL_SRC" rev-parse HEAD >/dev/null 2>&1; then src_commit=$(git -C "$ZTUNNEL_SRC" rev-parse HEAD); fi
if [[ $src_commit != "$ZTUNNEL_COMMIT" ]]; then
  log "WARNING: $ZTUNNEL_SRC is commit '$src_commit', not the pinned $ZTUNNEL_COMMIT"
fi

# ------------------------------------------------------------------ 2. up to date?

# Skip when the installed binary is newer than every file of the source (and was built from
# the same commit and features): rerunning the benchmark must not cost a 10-minute LTO build.
stamp="$BIN.build-info"
want_info="commit=$src_commit features=$FEATURES"
if [[ $FORCE == 0 && -x $BIN && -f $stamp && $(<"$stamp") == "$want_info" ]] \
    && [[ -z $(find "$ZTUNNEL_SRC" -path "$ZTUNNEL_SRC/.git" -prune -o -type f -newer "$BIN" -print -quit) ]]; then
  log "up to date: $BIN ($want_info); --force to rebuild"
  exit 0
fi

# ------------------------------------------------------------------ 3. build tools

# protoc: build.rs generates the XDS/CA gRPC code with tonic-prost-build, which runs protoc
# (the well-known google/protobuf/*.proto imports ship in the ztunnel tree, so the compiler
# alone is enough). cc: aws-lc-sys (the default rustls crypto provider) and jemalloc are C;
# aws-lc-sys builds with plain cc, no cmake. make: jemalloc's build.
need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v cc >/dev/null || need+=(gcc libc6-dev)
command -v make >/dev/null || need+=(make)
if [[ ${#need[@]} -gt 0 ]]; then
  [[ ${ZTUNNEL_NO_INSTALL:-0} == 1 ]] && die "missing build tools (Debian packages: ${need[*]})"
  [[ $EUID -eq 0 ]] || die "missing build tools; run as root or: apt-get install -y ${need[*]}"
  command -v apt-get >/dev/null || die "missing build tools and no apt-get: install ${need[*]}"
  log "installing from Debian: ${need[*]}"
  # Install first with the existing package lists; only refresh them if that fails.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
fi
command -v cargo >/dev/null || die "cargo not found (ztunnel needs Rust >= $(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' "$ZTUNNEL_SRC/Cargo.toml"))"

# ------------------------------------------------------------------ 4. patched copy

tree="$BUILD_DIR/tree"
log "preparing the build tree $tree"
mkdir -p "$BUILD_DIR"
rm -rf "$tree"
mkdir -p "$tree"
# tar keeps mtimes, so cargo's fingerprints of unchanged files stay valid between builds.
# Not copied: a checkout's .git and its own build output (out/rust per .cargo/config.toml).
tar -C "$ZTUNNEL_SRC" --exclude=./.git --exclude=./out --exclude=./target -cf - . | tar -C "$tree" -xf -
# * boring-rustls-provider is a git dependency of the optional tls-boring (FIPS) provider.
#   Cargo resolves optional dependencies too, so it would clone that repository even though
#   we never enable the feature; drop it (and its use in the feature list). We build the
#   default provider, aws-lc-rs, as istio's release images do.
# * [workspace]: bench/.tools sits inside Weft's cargo workspace; an empty table makes this
#   package its own workspace root instead of an error ("believes it's in a workspace").
sed -i -e '/^boring-rustls-provider *=/d' \
  -e 's/^tls-boring *=.*/tls-boring = ["dep:boring", "dep:boring-sys"]/' "$tree/Cargo.toml"
grep -q '^\[workspace\]' "$tree/Cargo.toml" || printf '\n[workspace]\n' >>"$tree/Cargo.toml"
if grep -q 'boring-rustls-provider' "$tree/Cargo.toml"; then
  die "could not remove boring-rustls-provider from $tree/Cargo.toml (Cargo.toml layout changed?)"
fi

# ------------------------------------------------------------------ 5. build and install

# Release profile of ztunnel's Cargo.toml: opt-level 3, lto = true, codegen-units = 1, plus
# -C force-frame-pointers from its .cargo/config.toml (which cargo still reads in the copy).
# --features testing: ztunnel's FAKE_CA=true needs it (certificates from an embedded test CA).
# Cargo.lock loses the git entries on the first build (no --locked for that reason).
# Version: build.rs runs common/scripts/report_build_info.sh, which asks git; from inside
# bench/.tools git would find Weft's repository and stamp Weft's commit into `ztunnel version`.
# GIT_CEILING_DIRECTORIES stops that search, VERSION names the ztunnel commit instead.
log "building: cargo build --release --features $FEATURES (nice $NICE; ~10 min on 2 cores from scratch; log: $BUILD_DIR/build.log)"
start=$(date +%s)
if ! (cd "$tree" && CARGO_TARGET_DIR="$BUILD_DIR/target" GIT_CEILING_DIRECTORIES="$BUILD_DIR" \
      VERSION="$src_commit" IGNORE_DIRTY_TREE=1 nice -n "$NICE" \
      cargo build --release --features "$FEATURES") >"$BUILD_DIR/build.log" 2>&1; then
  tail -n 30 "$BUILD_DIR/build.log" >&2
  die "cargo build failed (full log: $BUILD_DIR/build.log)"
fi
log "built in $(( $(date +%s) - start ))s"

mkdir -p "$BIN_DIR"
# Copy then rename, so a running benchmark never sees a half-written binary.
cp "$BUILD_DIR/target/release/ztunnel" "$BIN.tmp.$$"
mv -f "$BIN.tmp.$$" "$BIN"
echo "$want_info" >"$stamp"
log "installed $BIN ($(du -h "$BIN" | cut -f1), $want_info): $("$BIN" version 2>/dev/null | head -n 1)"
