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
#   FORM=1 SCHEMES=plain bash benches/instructions.sh  # a 1 KB form POST each, and every
#                                                       # authback with a query_match route
#   AUTHBACK_BINS="off=target/release/authback on=target/release/authback+log" \
#     NGINX_LOG=1 bash benches/instructions.sh         # the access log on (+log, into a
#                                                       # file), and nginx with a JSON one too
#
# Each target serves N keep-alive requests (curl, one connection) after a
# warm-up; the counters are zeroed before them and dumped after them
# (callgrind_control), so start-up, shutdown and the time spent waiting
# for valgrind are not counted. Everything on 127.0.0.1; everything started
# is stopped at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-2000}

source benches/common.sh
need_tools valgrind:valgrind nginx:nginx curl:curl openssl:openssl
if [ -z "${AUTHBACK_BINS:-}" ]; then
  cargo build --release -q
  AUTHBACK_BINS="authback=$PWD/target/release/authback"
fi
build_upstream
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
UP=$(port)
"$UPSTREAM_BIN" "127.0.0.1:$UP" & PIDS+=($!)
make_cert "$WORK"
python3 -c 'import sys; sys.stdout.write("&".join(f"field{i}=value-{i:04d}" for i in range(60))[:1024])' > "$WORK/form.txt"

wait_port() { for _ in $(seq 600); do curl -sk -o /dev/null "$1" && return 0; sleep 0.1; done; return 1; }

# Runs `curl` for $2 requests against $1 (a URL prefix) on one connection.
drive() {
  local n=$2
  [ "$n" -gt 0 ] || return 0
  if [ -n "${FORM:-}" ]; then
    curl -sk -o /dev/null -H "Content-Type: application/x-www-form-urlencoded" \
      --data-binary "@$WORK/form.txt" "$1/r[1-$n]"
  else
    curl -sk -o /dev/null "$1/r[1-$n]"
  fi
}

# total Ir of a callgrind out file
ir() { awk '/^summary:/ {print $2}' "$1"; }

# callgrind_count OUT URL READY CMD...: runs CMD under callgrind, waits for
# READY to answer, warms up, then zeroes the counters, drives $N requests
# at URL, dumps the counters, stops CMD and prints instructions per request.
callgrind_count() {
  local out=$1 url=$2 ready=$3
  shift 3
  valgrind --tool=callgrind --callgrind-out-file="$out" "$@" 2>"$out.log" &
  local pid=$!
  wait_port "$ready" || { tail "$out.log" >&2; exit 1; }
  drive "$url" 20   # warm-up: the connection, the pool, the first allocations
  callgrind_control -z "$pid" >/dev/null 2>&1
  drive "$url" "$N"
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  python3 -c "import sys; print(round(int(sys.argv[1]) / $N))" "$(ir "$out.1")"
}

measure_authback() { # name bin[+log] scheme -> instructions per request
  local name=$1 bin=$2 scheme=$3
  local tls plain adm log=
  if [ "$bin" != "${bin%+log}" ]; then bin=${bin%+log}; log=$WORK/$name.$scheme.access.log; fi
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
  # As in benches/run.sh: a shop with a query_match route, whose form
  # bodies are read as they stream.
  [ -z "${FORM:-}" ] || shop_route >> "$WORK/$name.toml"
  [ -z "$log" ] || printf '[access_log]\nenabled = true\npath = "%s"\n' "$log" >> "$WORK/$name.toml"
  local url
  if [ "$scheme" = tls ]; then url="https://127.0.0.1:$tls"; else url="http://127.0.0.1:$plain"; fi
  RUST_LOG=warn callgrind_count "$WORK/cg.$name.$scheme" "$url" "http://127.0.0.1:$adm/readyz" \
    "$bin" --config "$WORK/$name.toml"
}

# With NGINX_LOG set, a JSON access log line per request with the fields
# authback's has; otherwise none.
nginx_access_log() {
  if [ -z "${NGINX_LOG:-}" ]; then echo "  access_log off;"; return; fi
  cat <<NGINX
  log_format json escape=json '{"time":"\$time_iso8601","client":"\$remote_addr","method":"\$request_method","path":"\$uri","status":\$status,"bytes_in":\$request_length,"bytes_out":\$body_bytes_sent,"duration_ms":\$request_time,"upstream_status":"\$upstream_status","upstream_ms":"\$upstream_response_time","tls":"\$ssl_protocol","request_id":"\$http_x_request_id"}';
  access_log $WORK/ng/access.log json;
NGINX
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
$(nginx_access_log)
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
$(nginx_location)
  }
}
NGINX
  local url
  if [ "$scheme" = tls ]; then url="https://127.0.0.1:$p"; else url="http://127.0.0.1:$p"; fi
  callgrind_count "$WORK/cg.nginx.$scheme" "$url" "$url/" nginx -p "$WORK/ng" -c "$WORK/ng/nginx.conf"
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
