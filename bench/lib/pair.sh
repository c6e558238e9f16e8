# A Weft mTLS pair in front of an nginx backend, on free loopback ports: the path the
# benchmark measures, for the scripts that study it (profile.sh, hot-symbols.sh).
# Source it, then call pair_setup DIR [local|mesh] and pair_start ['WRAPPER ARGS']. In local
# mode the proxies read a mesh file and certificates made by `weft cert`; in mesh mode a
# `weft control` (never under the wrapper) issues their certificates from join tokens and
# pushes their configuration, as in production.
# Sets P_BACKEND, P_IN (server proxy inbound), P_OUT (client proxy outbound), P_BOUND (the
# client proxy's upstream binding to the backend, for clients that cannot set Host), P_TCP (a
# binding to the backend that is never sniffed: opaque TCP through the mTLS hop), P_ADMIN_server,
# P_ADMIN_client, PID_server, PID_client, PID_nginx; everything started is in PAIR_PIDS, for pair_stop.

PAIR_PIDS=()

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_port PORT [TRIES]: 0.1 s between tries; on failure shows the logs and exits.
wait_port() {
  for _ in $(seq "${2:-100}"); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on port $1; last log lines:" >&2
  tail -n 5 "$PAIR_DIR"/*.log >&2
  exit 1
}

# pair_setup DIR [MODE]: the backend's 1 KB file, the certificates (weft cert) and the mesh
# file; in mesh mode also the control plane, the Service and a join token per proxy.
pair_setup() {
  PAIR_DIR=$1 PAIR_MODE=${2:-local}
  P_BACKEND=$(free_port) P_IN=$(free_port) P_OUT=$(free_port) P_BOUND=$(free_port) P_TCP=$(free_port)
  P_ADMIN_server=$(free_port) P_ADMIN_client=$(free_port)
  mkdir -p "$PAIR_DIR/www" "$PAIR_DIR/certs"
  # nginx's workers drop root for an unprivileged user, who must reach the file.
  chmod 755 "$PAIR_DIR"
  head -c 1024 /dev/zero | tr '\0' 'x' >"$PAIR_DIR/www/1k"
  cat >"$PAIR_DIR/nginx.conf" <<EOF
worker_processes auto;
pid $PAIR_DIR/nginx.pid;
error_log $PAIR_DIR/nginx-error.log;
events { worker_connections 4096; }
http {
    client_body_temp_path $PAIR_DIR; proxy_temp_path $PAIR_DIR; fastcgi_temp_path $PAIR_DIR;
    uwsgi_temp_path $PAIR_DIR; scgi_temp_path $PAIR_DIR;
    access_log off; tcp_nodelay on; keepalive_requests 1000000;
    server { listen 127.0.0.1:$P_BACKEND; root $PAIR_DIR/www; }
}
EOF
  "$WEFT_BIN" cert ca --out "$PAIR_DIR/certs" --trust-domain weft.local >/dev/null
  local svc
  for svc in client backend; do
    "$WEFT_BIN" cert issue --ca-dir "$PAIR_DIR/certs" --service "$svc" --namespace default \
      --out "$PAIR_DIR/certs" >/dev/null
  done
  # Local mode names the server proxy as the endpoint; in mesh mode it registers itself.
  local endpoints="endpoints: [{address: \"127.0.0.1:$P_IN\", mesh: true}]"
  [[ $PAIR_MODE == mesh ]] && endpoints=""
  cat >"$PAIR_DIR/mesh.yaml" <<EOF
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: backend, namespace: default}
spec:
  ports: [{port: 80, protocol: http}]
  $endpoints
EOF
  [[ $PAIR_MODE == mesh ]] && pair_control_plane
  return 0
}

# pair_control_plane: weft control on free ports, the Service applied, the CA bundle the
# proxies check the control plane against, and a join token each.
pair_control_plane() {
  local api_port grpc_port svc
  api_port=$(free_port) grpc_port=$(free_port)
  PAIR_API="http://127.0.0.1:$api_port" P_GRPC=$grpc_port
  "$WEFT_BIN" control --log warn --data-dir "$PAIR_DIR/control" --api-addr "127.0.0.1:$api_port" \
    --grpc-addr "127.0.0.1:$grpc_port" >"$PAIR_DIR/control.log" 2>&1 &
  PAIR_PIDS+=("$!")
  wait_port "$api_port"
  # The client commands read the admin API token the control plane writes as it starts.
  export WEFT_DATA_DIR="$PAIR_DIR/control"
  local _
  for _ in $(seq 100); do [[ -s $WEFT_DATA_DIR/admin.token ]] && break; sleep 0.1; done
  "$WEFT_BIN" apply --api "$PAIR_API" -f "$PAIR_DIR/mesh.yaml" >/dev/null
  "$WEFT_BIN" ca show --pem --api "$PAIR_API" >"$PAIR_DIR/control-plane-ca.pem"
  for svc in client backend; do
    "$WEFT_BIN" token create --service "$svc" --api "$PAIR_API" >"$PAIR_DIR/$svc.token" \
      2>>"$PAIR_DIR/control.log"
  done
}

# pair_start [WRAPPER]: nginx, then both proxies, each run under WRAPPER (e.g. valgrind) if
# given; waits until every port listens and a request goes through (longer under a wrapper).
pair_start() {
  local wrapper=${1:-} c="$PAIR_DIR/certs" name svc admin
  local -a config
  nginx -p "$PAIR_DIR" -c "$PAIR_DIR/nginx.conf" -g 'daemon off;' 2>"$PAIR_DIR/nginx.log" &
  PID_nginx=$!
  PAIR_PIDS+=("$PID_nginx")
  for name in server client; do
    local -a ports
    if [[ $name == server ]]; then
      svc=backend ports=(--inbound "127.0.0.1:$P_IN" --outbound "127.0.0.1:$(free_port)"
        --app "127.0.0.1:$P_BACKEND")
    else
      svc=client ports=(--outbound "127.0.0.1:$P_OUT" --inbound "127.0.0.1:$(free_port)"
        --app 127.0.0.1:1 --upstream "backend=127.0.0.1:$P_BOUND")
      ports+=(--upstream "backend=127.0.0.1:$P_TCP" --opaque-ports "$P_TCP")
    fi
    admin="P_ADMIN_$name"
    if [[ $PAIR_MODE == mesh ]]; then
      config=(--control-plane "https://127.0.0.1:$P_GRPC"
        --control-plane-ca "$PAIR_DIR/control-plane-ca.pem" --token-file "$PAIR_DIR/$svc.token")
    else
      config=(--local "$PAIR_DIR/mesh.yaml" --cert "$c/$svc.pem" --key "$c/$svc-key.pem"
        --ca "$c/ca.pem")
    fi
    # shellcheck disable=SC2086  # the wrapper and PAIR_PROXY_ARGS are command lines on purpose
    env RUST_LOG=warn $wrapper "$WEFT_BIN" proxy --service "$svc" --namespace default \
      "${config[@]}" --threads 1 --admin "127.0.0.1:${!admin}" "${ports[@]}" ${PAIR_PROXY_ARGS:-} \
      >"$PAIR_DIR/$name.log" 2>&1 &
    printf -v "PID_$name" '%s' "$!"
    PAIR_PIDS+=("$!")
  done
  local tries=100
  [[ -n $wrapper ]] && tries=600
  wait_port "$P_BACKEND" "$tries"; wait_port "$P_IN" "$tries"; wait_port "$P_OUT" "$tries"
  wait_port "$P_BOUND" "$tries"; wait_port "$P_TCP" "$tries"
  # Listening is not serving: wait until the client proxy knows the backend's endpoint (in
  # mesh mode, once the server proxy has its certificate and has registered).
  local i
  for i in $(seq "$tries"); do
    curl -sf -o /dev/null -H 'host: backend' "http://127.0.0.1:$P_OUT/1k" && return 0
    sleep 0.2
  done
  echo "the pair does not serve http://127.0.0.1:$P_OUT/1k; last log lines:" >&2
  tail -n 5 "$PAIR_DIR"/*.log >&2
  exit 1
}

# pair_stop: SIGTERM to what pair_start started, and wait for it (proxies drain and exit).
pair_stop() {
  local pid
  for pid in "${PAIR_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PAIR_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PAIR_PIDS=()
}
