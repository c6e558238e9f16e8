# A pair of istio ztunnels, standalone on one machine (no Kubernetes, no istiod):
#
#   client --(plain TCP)--> ztunnel A :15001 ==HBONE (HTTP/2 CONNECT over mTLS) :15008==>
#     ztunnel B --(plain TCP)--> backend B_IP:PORT
#
# Source it (bash), then:
#   ztp_setup DIR PORT...   two network namespaces, a veth between them, the ztunnel configs
#                           for the backend PORTs (no process started yet)
#   ztp_start               both ztunnels, waits until they are ready
#   ztp_bg_server NAME CMD  start CMD (a backend) inside the server namespace, tracked
#   ztp_bg_client NAME CMD  the same inside the client namespace
#   ztp_client CMD...       run CMD inside the client namespace (curl, oha, iperf3 -c ...)
#   ztp_server CMD...       run CMD inside the server namespace
#   ztp_wait_serving PORT   until a request to backend PORT goes through the pair
#   ztp_teardown            stop what this file started (by PID), delete namespaces and links
# Or run it: `bash bench/lib/ztunnel-pair.sh selftest` (curl + iperf3 through the pair).
#
# Why two namespaces: ztunnel's ports are fixed (15001 outbound, 15006 inbound plaintext,
# 15008 HBONE, 15000 admin, 15020 stats, 15021 readiness, 15053 DNS) and a pair needs two of
# each. Why B's backend listens on B's address, not 127.0.0.1: after HBONE, ztunnel B dials
# its own workload IP at the requested port (LOCALHOST_APP_TUNNEL only applies to
# PROXY-protocol application tunnels), so a backend in B must listen on 0.0.0.0:PORT or
# $ZTP_IP_B:PORT.
#
# How the client's traffic enters ztunnel A (ZTP_CAPTURE):
#   vip (default)  No iptables. Each backend port gets a service VIP (ZTP_NET.1.N) that is an
#                  address of A's loopback; the client connects to VIP:15001. With no NAT,
#                  SO_ORIGINAL_DST fails and ztunnel uses the socket's local address as the
#                  destination (socket::orig_dst_addr_or_default), i.e. VIP:15001 (the same
#                  address SO_ORIGINAL_DST gives if conntrack is active in A); the service
#                  maps port 15001 to PORT on workload B, so A opens HBONE to B_IP:15008 with
#                  CONNECT B_IP:PORT. Entry: ZTP_ENTRY[PORT] = VIP:15001.
#   redirect       What ambient does in a pod: iptables REDIRECT (nat OUTPUT in A, and nat
#                  PREROUTING for the root link) of TCP to B_IP:PORT onto 15001; ztunnel reads
#                  SO_ORIGINAL_DST. Costs conntrack + NAT per packet. Entry: B_IP:PORT.
#   loopback       Like redirect, but the client connects to 127.0.0.1:PORT (a service whose
#                  VIP is 127.0.0.1), for tools that only talk to loopback. Clients in A only.
#
# Options (environment, read by ztp_setup):
#   ZTUNNEL_BIN    default bench/.tools/bin/ztunnel (bench/ztunnel.sh builds it)
#   ZTP_CAPTURE    vip | redirect | loopback (see above)          default vip
#   ZTP_ROOT_LINK  1: also a veth from the root namespace into A, with routes, so clients in
#                  the root namespace reach the entry (vip, redirect)     default 0
#   ZTP_THREADS    ztunnel worker threads (ZTUNNEL_WORKER_THREADS)  default 1
#   ZTP_LOG        RUST_LOG for both ztunnels (info logs one access line per connection)
#                                                                   default warn
#   ZTP_MTU        MTU of the veths; 65535 (the veth maximum) is as close as it gets to
#                  loopback's 65536, which the other pairs of bench/run.sh use    default 65535
#   ZTP_NET        first two octets of the private addresses          default 10.213
#   ZTP_TAG        suffix of namespace and link names (<= 7 chars)    default the shell's PID
#   ZTP_TRAP       0: do not hook ztp_teardown into the EXIT trap     default 1
#
# Variables set by ztp_setup: ZTP_NS_A ZTP_NS_B ZTP_IP_A ZTP_IP_B (ZTP_IP_ROOT ZTP_IP_A_ROOT
# with the root link), ZTP_ENTRY[PORT] (host:port a client connects to for backend PORT);
# by ztp_start: ZTP_PID_A ZTP_PID_B. Every process started here is in ZTP_PIDS.
#
# Requires root (ip netns, veth), iproute2, curl; iptables for redirect/loopback modes.
# shellcheck shell=bash

ZTP_PIDS=()
declare -gA ZTP_ENTRY=()

ztp__log() { printf '[ztunnel-pair %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
ztp__die() { ztp__log "ERROR: $*"; return 1; }

# ztp_setup DIR PORT...: namespaces, links, addresses, capture rules and configs.
ztp_setup() {
  local dir=$1; shift
  [[ $# -gt 0 ]] || { ztp__die "ztp_setup DIR PORT...: no backend port given"; return 1; }
  [[ $EUID -eq 0 ]] || { ztp__die "needs root (network namespaces)"; return 1; }
  ZTP_DIR=$(mkdir -p "$dir" && cd "$dir" && pwd)
  ZTP_PORTS=("$@")
  ZTP_CAPTURE=${ZTP_CAPTURE:-vip}
  ZTP_ROOT_LINK=${ZTP_ROOT_LINK:-0}
  ZTP_THREADS=${ZTP_THREADS:-1}
  ZTP_LOG=${ZTP_LOG:-warn}
  ZTP_NET=${ZTP_NET:-10.213}
  ZTP_MTU=${ZTP_MTU:-65535}
  ZTP_TAG=${ZTP_TAG:-$$}
  local here; here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  ZTUNNEL_BIN=${ZTUNNEL_BIN:-$here/../.tools/bin/ztunnel}
  [[ -x $ZTUNNEL_BIN ]] || { ztp__die "no ztunnel binary at $ZTUNNEL_BIN (run bench/ztunnel.sh)"; return 1; }
  case $ZTP_CAPTURE in vip|redirect|loopback) ;; *) ztp__die "ZTP_CAPTURE=$ZTP_CAPTURE: use vip, redirect or loopback"; return 1 ;; esac
  if [[ $ZTP_CAPTURE == loopback && $ZTP_ROOT_LINK == 1 ]]; then
    ztp__die "ZTP_CAPTURE=loopback serves clients in namespace A only (no ZTP_ROOT_LINK)"; return 1
  fi
  local p
  for p in "${ZTP_PORTS[@]}"; do
    # ztunnel refuses its own ports as destinations, and B's ztunnel already listens on the rest.
    case $p in 15000|15001|15006|15008|15020|15021|15053|15080)
      ztp__die "backend port $p collides with ztunnel's fixed ports"; return 1 ;; esac
  done
  if [[ $ZTP_CAPTURE != vip ]] && ! command -v iptables >/dev/null; then
    ztp__die "ZTP_CAPTURE=$ZTP_CAPTURE needs iptables (apt-get install -y iptables)"; return 1
  fi

  ZTP_NS_A="ztp${ZTP_TAG}a" ZTP_NS_B="ztp${ZTP_TAG}b"
  ZTP_IP_A="$ZTP_NET.0.1" ZTP_IP_B="$ZTP_NET.0.2"
  local veth_a="ztp${ZTP_TAG}ab" veth_b="ztp${ZTP_TAG}ba"
  ZTP_LINK_ROOT="ztp${ZTP_TAG}r"
  if [[ ${ZTP_TRAP:-1} == 1 ]]; then ztp__hook_exit; fi

  # Two namespaces joined by a veth pair: A (client side) and B (server side). lo must be up:
  # ztunnel binds its admin/DNS listeners there, and B dials its backend over it.
  ip netns add "$ZTP_NS_A"
  ip netns add "$ZTP_NS_B"
  ip -n "$ZTP_NS_A" link set lo up
  ip -n "$ZTP_NS_B" link set lo up
  ip link add "$veth_a" netns "$ZTP_NS_A" type veth peer name "$veth_b" netns "$ZTP_NS_B"
  ip -n "$ZTP_NS_A" addr add "$ZTP_IP_A/30" dev "$veth_a"
  ip -n "$ZTP_NS_B" addr add "$ZTP_IP_B/30" dev "$veth_b"
  ip -n "$ZTP_NS_A" link set "$veth_a" mtu "$ZTP_MTU" up
  ip -n "$ZTP_NS_B" link set "$veth_b" mtu "$ZTP_MTU" up

  if [[ $ZTP_ROOT_LINK == 1 ]]; then
    # Root <-> A, so a load generator in the root namespace can reach A's entry points; B's
    # address and the VIPs are routed through A (A answers for them itself: no forwarding).
    ZTP_IP_ROOT="$ZTP_NET.0.5" ZTP_IP_A_ROOT="$ZTP_NET.0.6"
    ip link add "$ZTP_LINK_ROOT" type veth peer name "ztp${ZTP_TAG}ar" netns "$ZTP_NS_A"
    ip addr add "$ZTP_IP_ROOT/30" dev "$ZTP_LINK_ROOT"
    ip -n "$ZTP_NS_A" addr add "$ZTP_IP_A_ROOT/30" dev "ztp${ZTP_TAG}ar"
    ip link set "$ZTP_LINK_ROOT" mtu "$ZTP_MTU" up
    ip -n "$ZTP_NS_A" link set "ztp${ZTP_TAG}ar" mtu "$ZTP_MTU" up
    ip route add "$ZTP_NET.1.0/24" via "$ZTP_IP_A_ROOT" dev "$ZTP_LINK_ROOT"
    if [[ $ZTP_CAPTURE == redirect ]]; then
      ip route add "$ZTP_IP_B/32" via "$ZTP_IP_A_ROOT" dev "$ZTP_LINK_ROOT"
    fi
  fi

  local i=0 vip services="" endpoints="" lports=""
  for p in "${ZTP_PORTS[@]}"; do
    i=$((i + 1))
    case $ZTP_CAPTURE in
      vip)
        vip="$ZTP_NET.1.$i"
        ip -n "$ZTP_NS_A" addr add "$vip/32" dev lo
        ZTP_ENTRY[$p]="$vip:15001"
        services+=$(ztp__service "$p" "$vip" 15001)
        endpoints+=$'\n'"    \"default/backend-$p.default.svc.cluster.local\": {15001: $p}"
        ;;
      redirect)
        ZTP_ENTRY[$p]="$ZTP_IP_B:$p"
        ip netns exec "$ZTP_NS_A" iptables -t nat -A OUTPUT -p tcp -d "$ZTP_IP_B" --dport "$p" \
          -j REDIRECT --to-ports 15001
        if [[ $ZTP_ROOT_LINK == 1 ]]; then
          ip netns exec "$ZTP_NS_A" iptables -t nat -A PREROUTING -i "ztp${ZTP_TAG}ar" -p tcp \
            -d "$ZTP_IP_B" --dport "$p" -j REDIRECT --to-ports 15001
        fi
        ;;
      loopback)
        ZTP_ENTRY[$p]="127.0.0.1:$p"
        ip netns exec "$ZTP_NS_A" iptables -t nat -A OUTPUT -p tcp -d 127.0.0.1 --dport "$p" \
          -j REDIRECT --to-ports 15001
        lports+="${lports:+, }$p: $p"
        ;;
    esac
  done
  if [[ $ZTP_CAPTURE == loopback ]]; then
    # One service for all ports: ztunnel keeps one service per VIP, so a service per port
    # on the same VIP would shadow each other ("no healthy upstream").
    services=$(ztp__service loopback 127.0.0.1 "" "{$lports}")
    endpoints=$'\n'"    \"default/backend-loopback.default.svc.cluster.local\": {$lports}"
  fi
  [[ -z $endpoints ]] && endpoints=" {}"

  # The "local XDS" file both ztunnels read (LOCAL_XDS_PATH, same schema as ztunnel's
  # examples/localhost.yaml): the two workloads, both HBONE-capable, and the services.
  # Identities become spiffe://cluster.local/ns/default/sa/{client,server}; with FAKE_CA
  # both certificates chain to ztunnel's embedded test root, so they verify each other.
  cat >"$ZTP_DIR/xds.yaml" <<EOF
workloads:
- uid: cluster1//v1/Pod/default/client
  name: client
  namespace: default
  serviceAccount: client
  trustDomain: cluster.local
  workloadIps: ["$ZTP_IP_A"]
  protocol: HBONE
  node: node-a
  network: ""
  services: {}
- uid: cluster1//v1/Pod/default/server
  name: server
  namespace: default
  serviceAccount: server
  trustDomain: cluster.local
  workloadIps: ["$ZTP_IP_B"]
  protocol: HBONE
  node: node-b
  network: ""
  services:$endpoints
services:${services:- []}
EOF
  mkdir -p "$ZTP_DIR/a" "$ZTP_DIR/b"
  ztp__log "set up $ZTP_NS_A ($ZTP_IP_A) <-> $ZTP_NS_B ($ZTP_IP_B), mtu $ZTP_MTU, capture=$ZTP_CAPTURE, root link=$ZTP_ROOT_LINK; config $ZTP_DIR/xds.yaml"
}

# ztp__service NAME VIP VIP_PORT [PORTS]: one service entry of xds.yaml, mapping VIP_PORT to
# the backend port NAME, or with the port map PORTS ("{P: P, ...}") if given.
ztp__service() {
  local ports=${4:-"{$3: $1}"}
  cat <<EOF

- name: backend-$1
  namespace: default
  hostname: backend-$1.default.svc.cluster.local
  vips: ["/$2"]
  ports: $ports
EOF
}

# ztp__env ROLE WORKLOAD: the environment of one ztunnel. env -i keeps the caller's
# environment (proxy variables, KUBERNETES_SERVICE_HOST, ...) out of its config.
ztp__env() {
  local -a e=(env -i "PATH=$PATH" "HOME=${HOME:-/root}"
    "RUST_LOG=$ZTP_LOG"
    # Fake CA: certificates from the test CA built into the binary (--features testing), so
    # no istiod or CA server is needed.
    FAKE_CA=true
    # No XDS server: the workloads and services come from the file.
    XDS_ADDRESS= "LOCAL_XDS_PATH=$ZTP_DIR/xds.yaml"
    # Dedicated mode: one ztunnel per workload, in the workload's own namespace (no in-pod
    # UDS protocol with istio-cni); the workload it proxies for is named here.
    PROXY_MODE=dedicated "PROXY_WORKLOAD_INFO=default/$2/$2"
    "ZTUNNEL_WORKER_THREADS=$ZTP_THREADS")
  # B must not dial the backend from the client's address (the default, via IP_TRANSPARENT):
  # the backend's replies to A's address would leave through the veth to A, never reaching B
  # (connections hang in SYN-SENT). A keeps the default: its transparent outbound listener
  # also keeps ztunnel from warning on every connection when SO_ORIGINAL_DST is absent (vip).
  [[ $1 == b ]] && e+=(ENABLE_ORIG_SRC=false)
  printf '%s\0' "${e[@]}"
}

# ztp_start: both ztunnels (each in its namespace, cwd its own directory so that relative
# default paths such as ./var/run/secrets stay inside DIR), then their readiness endpoints.
ztp_start() {
  local role ns wl pid i
  local -a envv
  for role in a b; do
    if [[ $role == a ]]; then ns=$ZTP_NS_A wl=client; else ns=$ZTP_NS_B wl=server; fi
    mapfile -d '' -t envv < <(ztp__env "$role" "$wl")
    # `ip netns exec` and `env` both exec, so $! is ztunnel's own PID (for taskset, sampling).
    (cd "$ZTP_DIR/$role" && exec ip netns exec "$ns" "${envv[@]}" "$ZTUNNEL_BIN") \
      >"$ZTP_DIR/ztunnel-$role.log" 2>&1 &
    pid=$!
    ZTP_PIDS+=("$pid")
    if [[ $role == a ]]; then ZTP_PID_A=$pid; else ZTP_PID_B=$pid; fi
  done
  for role in a b; do
    if [[ $role == a ]]; then ns=$ZTP_NS_A pid=$ZTP_PID_A; else ns=$ZTP_NS_B pid=$ZTP_PID_B; fi
    for i in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || { tail -n 20 "$ZTP_DIR/ztunnel-$role.log" >&2; ztp__die "ztunnel $role exited"; return 1; }
      ip netns exec "$ns" curl -s -o /dev/null -m 1 --noproxy '*' -f http://127.0.0.1:15021/healthz/ready && break
      [[ $i == 100 ]] && { tail -n 20 "$ZTP_DIR/ztunnel-$role.log" >&2; ztp__die "ztunnel $role not ready after 10 s"; return 1; }
      sleep 0.1
    done
  done
  ztp__log "ztunnel A pid $ZTP_PID_A, B pid $ZTP_PID_B: ready (logs $ZTP_DIR/ztunnel-{a,b}.log)"
}

ztp_client() { ip netns exec "$ZTP_NS_A" "$@"; }
ztp_server() { ip netns exec "$ZTP_NS_B" "$@"; }

# ztp_bg_server NAME CMD...: CMD in B in the background, logging to DIR/NAME.log; its PID
# goes into ZTP_PIDS (stopped by ztp_teardown) and ZTP_PID_<NAME>.
ztp_bg_server() {
  local name=$1; shift
  ip netns exec "$ZTP_NS_B" "$@" >"$ZTP_DIR/$name.log" 2>&1 &
  ZTP_PIDS+=("$!")
  printf -v "ZTP_PID_$name" '%s' "$!"
}

# ztp_bg_client NAME CMD...: the same in A (e.g. another proxy on the client side).
ztp_bg_client() {
  local name=$1; shift
  ip netns exec "$ZTP_NS_A" "$@" >"$ZTP_DIR/$name.log" 2>&1 &
  ZTP_PIDS+=("$!")
  printf -v "ZTP_PID_$name" '%s' "$!"
}

# ztp_wait_serving PORT [PATH]: until an HTTP request from A to backend PORT returns 200
# through the pair (listening is not serving).
ztp_wait_serving() {
  local port=$1 path=${2:-/} i
  for i in $(seq 100); do
    ztp_client curl -s -o /dev/null -m 2 --noproxy '*' -f "http://${ZTP_ENTRY[$port]}$path" && return 0
    sleep 0.1
  done
  tail -n 5 "$ZTP_DIR"/*.log >&2
  ztp__die "backend $port not served through the pair (http://${ZTP_ENTRY[$port]}$path)"
}

# ztp_teardown: TERM then KILL to the PIDs started here, then the namespaces and the root
# link. Anything else still inside a namespace is reported, not killed (not ours).
ztp_teardown() {
  local pid i alive left
  for pid in "${ZTP_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for i in $(seq 70); do
    alive=0
    for pid in "${ZTP_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [[ $alive == 0 ]] && break
    sleep 0.1
  done
  for pid in "${ZTP_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${ZTP_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  ZTP_PIDS=()
  local ns
  for ns in ${ZTP_NS_A:-} ${ZTP_NS_B:-}; do
    ip netns list 2>/dev/null | grep -qw "$ns" || continue
    left=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
    [[ -n $left ]] && ztp__log "WARNING: processes not started here remain in $ns: $left (the namespace lives until they exit)"
    ip netns del "$ns" 2>/dev/null || true
  done
  # The veths go with their namespaces; the root end explicitly, in case A lingers.
  if [[ -n ${ZTP_LINK_ROOT:-} ]]; then ip link del "$ZTP_LINK_ROOT" 2>/dev/null || true; fi
}

# ztp__hook_exit: run ztp_teardown on exit, then whatever EXIT trap the caller already had,
# which still sees the exit status in $? (bench/run.sh's cleanup reads it).
ztp__hook_exit() {
  local t=()
  # `trap -p EXIT` prints: trap -- 'HANDLER' EXIT (quoted for reuse); word 3 is the handler.
  eval "t=($(trap -p EXIT))"
  [[ ${#t[@]} -ge 3 && ${t[2]} == ztp__on_exit ]] && return 0
  ZTP__PREV_EXIT=${t[2]:-}
  trap ztp__on_exit EXIT
}
ztp__on_exit() {
  local rc=$?
  ztp_teardown
  # errexit off: `(exit rc)` only sets $? for the previous handler, it must not end us here.
  set +e
  (exit "$rc")
  eval "${ZTP__PREV_EXIT:-:}"
}

# ------------------------------------------------------------------ selftest

# ztp_selftest [DIR]: the pair end to end, as recorded in the integration notes: HTTP 200
# with a 1 KB body from python's http.server behind B, proof that the hop is HBONE with
# mTLS (B's access log and metrics, a client without certificate refused), and iperf3.
ztp_selftest() {
  local dir=${1:-$(mktemp -d /tmp/ztunnel-pair.XXXXXX)} http=8080 bulk=5201 out
  ZTP_LOG=${ZTP_LOG:-info}  # one access line per connection: the evidence below
  ztp_setup "$dir" "$http" "$bulk" || return 1
  mkdir -p "$dir/www"; head -c 1024 /dev/zero | tr '\0' x >"$dir/www/1k"
  ztp_bg_server backend python3 -m http.server "$http" --bind 0.0.0.0 --directory "$dir/www"
  ztp_start || return 1
  ztp_wait_serving "$http" /1k || return 1

  echo "== curl through the pair (client in $ZTP_NS_A)"
  out=$(ztp_client curl -sS -m 5 --noproxy '*' -o /dev/null -w '%{http_code} %{size_download}' "http://${ZTP_ENTRY[$http]}/1k")
  echo "curl http://${ZTP_ENTRY[$http]}/1k -> $out"
  [[ $out == "200 1024" ]] || { ztp__die "expected '200 1024'"; return 1; }
  if [[ ${ZTP_ROOT_LINK:-0} == 1 ]]; then
    out=$(curl -sS -m 5 --noproxy '*' -o /dev/null -w '%{http_code} %{size_download}' "http://${ZTP_ENTRY[$http]}/1k")
    echo "curl from the root namespace -> $out"
    [[ $out == "200 1024" ]] || { ztp__die "expected '200 1024' from the root namespace"; return 1; }
  fi

  echo "== evidence of HBONE + mTLS"
  sleep 0.3  # the access line is written when the connection closes
  grep 'direction="inbound"' "$dir/ztunnel-b.log" | tail -n 1 | sed 's/^/B access log: /' || true
  grep 'direction="inbound"' "$dir/ztunnel-b.log" | grep 'dst.hbone_addr=' \
    | grep -q 'src.identity="spiffe://cluster.local/ns/default/sa/client"' \
    || { ztp__die "no inbound HBONE access line with the client's identity on B"; return 1; }
  ztp_server curl -s --noproxy '*' http://127.0.0.1:15020/metrics \
    | grep '^istio_tcp_connections_opened_total' | grep 'reporter="destination"' | head -n 1 \
    | grep -o 'connection_security_policy="[a-z_]*"\|request_protocol="[a-z]*"' | sed 's/^/B metrics: /' || true
  # B's port 15008 must refuse TLS without a client certificate (and anything plaintext).
  out=$(ztp_client curl -sk -m 5 --noproxy '*' --http2 -o /dev/null -w '%{http_code}' "https://$ZTP_IP_B:15008/" 2>&1 || true)
  echo "TLS to $ZTP_IP_B:15008 without a client certificate -> HTTP code '$out' (000 = refused)"
  [[ $out == 000 ]] || { ztp__die "ztunnel B answered a client without certificate"; return 1; }
  sleep 0.2
  grep -o 'connection failed.*NoCertificatesPresented.*' "$dir/ztunnel-b.log" | tail -n 1 | sed 's/^/B log: /' || true

  echo "== iperf3 through the pair (5 s, one connection)"
  ztp_bg_server iperf3 iperf3 -s -p "$bulk"
  sleep 0.5
  local host=${ZTP_ENTRY[$bulk]%:*} port=${ZTP_ENTRY[$bulk]##*:}
  ztp_client iperf3 -c "$host" -p "$port" -t 5 -f g | grep -E 'sender|receiver'
  echo "== selftest passed (work dir $dir)"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  set -euo pipefail
  trap 'exit 130' INT
  trap 'exit 143' TERM
  case ${1:-} in
    selftest) shift; ztp_selftest "$@" ;;
    *) echo "usage: bash ${BASH_SOURCE[0]} selftest [DIR]   (or source it; see the header)" >&2; exit 2 ;;
  esac
fi
