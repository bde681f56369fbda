# Shared by the benches (run.sh, profile.sh, instructions.sh, acks.sh,
# lookups.sh, rss.sh):
# sourced, not run.

# A free port on 127.0.0.1.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# need_tools command:package ...: installs from Debian what is missing.
need_tools() {
  local need=() pair
  for pair in "$@"; do command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}"); done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

# Sets UPSTREAM_BIN, unless given, to this tree's release build of
# examples/bench-upstream.
build_upstream() {
  if [ -z "${UPSTREAM_BIN:-}" ]; then
    cargo build --release -q --example bench-upstream
    UPSTREAM_BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/examples/bench-upstream
  fi
}

# make_cert DIR: a self-signed certificate for localhost, DIR/tls.crt and DIR/tls.key.
make_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$1/tls.key" -out "$1/tls.crt" 2>/dev/null
}

# nginx's proxying, the same in every bench: HTTP/1.1 to the `app`
# upstream block, with the headers authback sets.
nginx_location() {
  cat <<'NGINX'
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme;
    }
NGINX
}

# nginx_conf DIR UPSTREAM_PORT PLAIN_PORT TLS_PORT: writes DIR/nginx.conf,
# 2 workers proxying to the upstream, plain and TLS 1.3 (HTTP/1.1 and h2),
# with DIR/tls.crt and DIR/tls.key.
nginx_conf() {
  local dir=$1 up=$2 plain=$3 tls=$4
  cat > "$dir/nginx.conf" <<NGINX
worker_processes 2;
pid $dir/nginx.pid;
error_log $dir/nginx.err warn;
events { worker_connections 10000; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream app { server 127.0.0.1:$up; keepalive 128; }
  server {
    listen 127.0.0.1:$plain;
    listen 127.0.0.1:$tls ssl;
    http2 on;
    ssl_certificate $dir/tls.crt;
    ssl_certificate_key $dir/tls.key;
    ssl_protocols TLSv1.3;
$(nginx_location)
  }
}
NGINX
  # Older nginx spells HTTP/2 on the listen line.
  if ! nginx -t -c "$dir/nginx.conf" -p "$dir" >/dev/null 2>&1; then
    sed -i -e 's/^    http2 on;//' -e "s|listen 127.0.0.1:$tls ssl;|listen 127.0.0.1:$tls ssl http2;|" "$dir/nginx.conf"
  fi
}

# klarna_route: the callback route the ack, lookup and memory benches
# send to (a URL token, forwarded as json).
klarna_route() {
  cat <<'TOML'
[[routes]]
name = "klarna"
kind = "klarna_authorization"
path = "/klarna/authorization/{reference}"
forward_path = "/klarna/authorized"
secrets = ["bench-secret-0123456789abcdef"]
TOML
}

# shop_route: a callback route as a WooCommerce shop has one (query_match),
# fenced to an address no client here has, so every request is read
# against a route and every form body is scanned as it streams.
shop_route() {
  cat <<'TOML'
[[routes]]
name = "shop"
kind = "klarna_authorization"
path = "/wc-api/KP_WC_AUTHORIZATION"
ignore_case = true
query_match = ["wc-api=KP_WC_AUTHORIZATION"]
forward_format = "original"
unverified = true
allow_ips = ["192.0.2.1/32"]
TOML
}
