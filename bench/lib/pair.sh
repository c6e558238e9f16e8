# A Weft mTLS pair in front of an nginx backend, on free loopback ports: the path the
# benchmark measures, for the scripts that study it (profile.sh, hot-symbols.sh).
# Source it, then call pair_setup DIR and pair_start ['WRAPPER ARGS'].
# Sets P_BACKEND, P_IN (server proxy inbound), P_OUT (client proxy outbound), P_BOUND (the
# client proxy's upstream binding to the backend, for clients that cannot set Host), P_ADMIN_server,
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

# pair_setup DIR: the backend's 1 KB file, the certificates (weft cert) and the mesh file.
pair_setup() {
  PAIR_DIR=$1
  P_BACKEND=$(free_port) P_IN=$(free_port) P_OUT=$(free_port) P_BOUND=$(free_port)
  P_ADMIN_server=$(free_port) P_ADMIN_client=$(free_port)
  mkdir -p "$PAIR_DIR/www" "$PAIR_DIR/certs"
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
  cat >"$PAIR_DIR/mesh.yaml" <<EOF
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: backend, namespace: default}
spec:
  ports: [{port: 80, protocol: http}]
  endpoints: [{address: "127.0.0.1:$P_IN", mesh: true}]
EOF
}

# pair_start [WRAPPER]: nginx, then both proxies, each run under WRAPPER (e.g. valgrind) if
# given; waits until all three listen (longer under a wrapper).
pair_start() {
  local wrapper=${1:-} c="$PAIR_DIR/certs" name svc admin
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
    fi
    admin="P_ADMIN_$name"
    # shellcheck disable=SC2086  # the wrapper is a command line on purpose
    env RUST_LOG=warn $wrapper "$WEFT_BIN" proxy --service "$svc" --namespace default \
      --local "$PAIR_DIR/mesh.yaml" --cert "$c/$svc.pem" --key "$c/$svc-key.pem" --ca "$c/ca.pem" \
      --threads 1 --admin "127.0.0.1:${!admin}" "${ports[@]}" >"$PAIR_DIR/$name.log" 2>&1 &
    printf -v "PID_$name" '%s' "$!"
    PAIR_PIDS+=("$!")
  done
  local tries=100
  [[ -n $wrapper ]] && tries=600
  wait_port "$P_BACKEND" "$tries"; wait_port "$P_IN" "$tries"; wait_port "$P_OUT" "$tries"
  wait_port "$P_BOUND" "$tries"
}

# pair_stop: SIGTERM to what pair_start started, and wait for it (proxies drain and exit).
pair_stop() {
  local pid
  for pid in "${PAIR_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PAIR_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PAIR_PIDS=()
}
