#!/usr/bin/env bash
# User-space instructions per proxied request, counted by valgrind's
# callgrind: authback builds and nginx side by side, the same client, the
# same upstream. Instruction counts do not move with the machine's load, so
# this compares two builds (a lever, before and after) where timings would
# drown in noise. Kernel time is not counted: pair it with benches/run.sh.
#
#   bash benches/instructions.sh                       # this tree's release build
#   AUTHBACK_BINS="before=/tmp/a after=target/release/authback" bash benches/instructions.sh
#   N=2000 bash benches/instructions.sh                # requests per measurement
#   SCHEMES=plain bash benches/instructions.sh         # plain only (default: plain tls)
#
# Each target serves N keep-alive requests (curl, one connection) after a
# warm-up; the counters are zeroed before them and dumped after them
# (callgrind_control), so start-up, shutdown and the time spent waiting
# for valgrind are not counted. Everything on 127.0.0.1; everything started
# is stopped at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-2000}

need=()
command -v valgrind >/dev/null || need+=(valgrind)
command -v nginx >/dev/null || need+=(nginx)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; fi
if [ -z "${AUTHBACK_BINS:-}" ]; then
  cargo build --release -q
  AUTHBACK_BINS="authback=$PWD/target/release/authback"
fi
if [ -z "${UPSTREAM_BIN:-}" ]; then
  cargo build --release -q --example bench-upstream
  UPSTREAM_BIN=$PWD/target/release/examples/bench-upstream
fi
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(port)
"$UPSTREAM_BIN" "127.0.0.1:$UP" & PIDS+=($!)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null

wait_port() { for _ in $(seq 600); do curl -sk -o /dev/null "$1" && return 0; sleep 0.1; done; return 1; }

# Runs `curl` for $2 requests against $1 (a URL prefix) on one connection.
drive() {
  local n=$2
  [ "$n" -gt 0 ] || return 0
  curl -sk -o /dev/null "$1/r[1-$n]"
}

# total Ir of a callgrind out file
ir() { awk '/^summary:/ {print $2}' "$1"; }

# Zeroes the counters of the callgrind run $1, drives $3 requests at $2,
# dumps the counters and prints the instructions per request.
count() {
  local pid=$1 url=$2 n=$3 out=$4
  drive "$url" 20   # warm-up: the connection, the pool, the first allocations
  callgrind_control -z "$pid" >/dev/null 2>&1
  drive "$url" "$n"
  callgrind_control -d "$pid" >/dev/null 2>&1
  python3 -c "import sys; print(round(int(sys.argv[1]) / $n))" "$(ir "$out.1")"
}

measure_authback() { # name bin scheme -> instructions per request
  local name=$1 bin=$2 scheme=$3
  local tls plain adm
  tls=$(port); plain=$(port); adm=$(port)
  cat > "$WORK/$name.toml" <<TOML
[server]
listen = "127.0.0.1:$tls"
listen_plain = "127.0.0.1:$plain"
public_url = "https://localhost:$tls"
workers = 1
shutdown_grace = "1s"
[server.tls]
cert = "$WORK/tls.crt"
key = "$WORK/tls.key"
[admin]
listen = "127.0.0.1:$adm"
[upstream]
url = "http://127.0.0.1:$UP"
TOML
  local out="$WORK/cg.$name.$scheme"
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$bin" --config "$WORK/$name.toml" 2>"$WORK/$name.log" &
  local pid=$!
  local url
  if [ "$scheme" = tls ]; then url="https://127.0.0.1:$tls"; else url="http://127.0.0.1:$plain"; fi
  wait_port "http://127.0.0.1:$adm/readyz" || { tail "$WORK/$name.log" >&2; exit 1; }
  count "$pid" "$url" "$N" "$out"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
}

measure_nginx() { # scheme -> instructions per request
  local scheme=$1
  local p; p=$(port)
  mkdir -p "$WORK/ng"
  cat > "$WORK/ng/nginx.conf" <<NGINX
daemon off;
master_process off;
worker_processes 1;
pid $WORK/ng/nginx.pid;
error_log $WORK/ng/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $WORK/ng/body;
  proxy_temp_path $WORK/ng/proxy;
  fastcgi_temp_path $WORK/ng/fastcgi;
  uwsgi_temp_path $WORK/ng/uwsgi;
  scgi_temp_path $WORK/ng/scgi;
  upstream app { server 127.0.0.1:$UP; keepalive 16; }
  server {
    listen 127.0.0.1:$p $( [ "$scheme" = tls ] && echo ssl );
    ssl_certificate $WORK/tls.crt;
    ssl_certificate_key $WORK/tls.key;
    ssl_protocols TLSv1.3;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }
}
NGINX
  local out="$WORK/cg.nginx.$scheme"
  valgrind --tool=callgrind --callgrind-out-file="$out" \
    nginx -p "$WORK/ng" -c "$WORK/ng/nginx.conf" 2>"$WORK/ng.log" &
  local pid=$!
  local url
  if [ "$scheme" = tls ]; then url="https://127.0.0.1:$p"; else url="http://127.0.0.1:$p"; fi
  wait_port "$url/" || { tail "$WORK/ng.log" >&2; exit 1; }
  count "$pid" "$url" "$N" "$out"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
}

echo "user-space instructions per proxied request (callgrind), $N keep-alive requests on one connection"
for scheme in ${SCHEMES:-plain tls}; do
  ng=$(measure_nginx "$scheme")
  printf '  %-6s %-10s %10s\n' "$scheme" nginx "$ng"
  for spec in $AUTHBACK_BINS; do
    name=${spec%%=*}; bin=${spec#*=}
    ab=$(measure_authback "$name" "$bin" "$scheme")
    printf '  %-6s %-10s %10s   %s x nginx\n' "$scheme" "$name" "$ab" "$(python3 -c "print(f'{$ab/$ng:.2f}')")"
  done
done
