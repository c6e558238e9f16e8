#!/usr/bin/env bash
# Runs every check and test Weft has: formatting, lints, unit tests and the end-to-end
# tests that start real `weft` processes, and a short run of every fuzz target. Needs only
# the Rust toolchain; the real servers the tests talk to (Prometheus), tmux (to drive
# `weft top` in a terminal), Chromium (to open the dashboard in a real browser), iptables,
# iproute2, curl and Python with grpcio (transparent capture, in network namespaces), dnsmasq and dig
# (the proxy's DNS, against a real resolver and client), a C++ compiler
# for libFuzzer, and cmake and Go for the FIPS build are installed here first from
# Debian's packages.
set -euo pipefail
cd "$(dirname "$0")/.."

install_debian_packages() {
  local missing=()
  command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
  command -v tmux >/dev/null 2>&1 || missing+=(tmux) # `weft top` is driven in it
  command -v chromium >/dev/null 2>&1 || missing+=(chromium) # the dashboard, in a real browser
  command -v c++ >/dev/null 2>&1 || missing+=(g++) # libFuzzer, for the fuzz targets
  # transparent capture, tested in network namespaces: iptables, ip, and an unmodified
  # app (curl, Python's http.server)
  command -v iptables-restore >/dev/null 2>&1 || missing+=(iptables)
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  # Debian's python3 (not a toolchain under /root): the tests run it as another user;
  # with grpcio, an unmodified gRPC client and server; with requests, an HTTP client
  [ -x /usr/bin/python3 ] || missing+=(python3)
  /usr/bin/python3 -c 'import grpc' >/dev/null 2>&1 || missing+=(python3-grpcio)
  /usr/bin/python3 -c 'import requests' >/dev/null 2>&1 || missing+=(python3-requests)
  # `weft demo --transparent` runs its sidecars as another user
  command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
  # the proxy's DNS: a real resolver upstream (dnsmasq) and a real client (dig)
  command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || missing+=(dnsmasq-base)
  command -v dig >/dev/null 2>&1 || missing+=(bind9-dnsutils)
  # AWS-LC's FIPS module, for the `fips` build
  command -v cmake >/dev/null 2>&1 || missing+=(cmake)
  command -v go >/dev/null 2>&1 || missing+=(golang-go)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing: ${missing[*]}; run as root, or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "== installing ${missing[*]} (Debian packages)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
install_debian_packages

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test (unit and end-to-end)"
cargo test --workspace --locked

echo "== the FIPS build: TLS on AWS-LC's FIPS module (identity tests)"
cargo test -p weft-identity --features fips --locked

echo "== fuzz targets, a few seconds each (scripts/fuzz.sh TARGET SECONDS for longer runs)"
./scripts/fuzz.sh --all 5
