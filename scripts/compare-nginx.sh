#!/usr/bin/env bash
# Request-smuggling differentials: authback against a stock nginx reverse
# proxy. Both stand in front of one recording upstream (a small Python server
# that answers 200 to any method and notes "METHOD raw-path" of every request
# it gets). The same raw HTTP/1.1 inputs (odd spellings of a callback path, the
# forward path, unusual request heads, upgrades) go to authback's plain
# listener and to nginx, each on a fresh connection, and a markdown table shows
# per input: the status each one answered, and whether (and as what) the
# request reached the upstream. nginx has no callback routes: its columns show
# what a plain reverse proxy does with the same head.
#
# Everything listens on 127.0.0.1 ephemeral ports; every process started here
# is stopped and the temp dir removed on exit.
#
#   bash scripts/compare-nginx.sh
#   AUTHBACK_BIN=target/release/authback bash scripts/compare-nginx.sh
#   OUT=compare.md bash scripts/compare-nginx.sh     # also write the table there
#
# AUTHBACK_BIN defaults to target/debug/authback (built with `cargo build` if
# missing). nginx is installed with apt-get if missing. Exits non-zero only if
# the setup fails.
set -euo pipefail
cd "$(dirname "$0")/.."
HELPER=scripts/compare-nginx.py
BIN=${AUTHBACK_BIN:-target/debug/authback}
OUT=${OUT:-}

if ! command -v nginx >/dev/null; then
  { apt-get update -qq && apt-get install -y -qq nginx-light; } >/dev/null ||
    apt-get install -y -qq nginx >/dev/null
fi
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
[ -x "$BIN" ] || cargo build -q
[ -x "$BIN" ] || { echo "no authback binary at $BIN" >&2; exit 1; }

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { # message, log file
  echo "$1" >&2
  [ -f "$2" ] && sed 's/^/  /' "$2" >&2
  exit 1
}

read -r UP AB_TLS AB_PLAIN AB_ADM NG <<<"$(python3 "$HELPER" ports 5)"
RECORD=$WORK/upstream.record

# --- upstream
python3 "$HELPER" upstream "$UP" "$RECORD" 2>"$WORK/upstream.log" &
PIDS+=($!)

# --- authback: a plain listener so raw HTTP needs no TLS
secret() { python3 -c 'import secrets; print(secrets.token_hex(16))'; }
cat >"$WORK/authback.toml" <<TOML
[server]
listen = "127.0.0.1:$AB_TLS"
listen_plain = "127.0.0.1:$AB_PLAIN"
public_url = "https://localhost"
[server.tls]
self_signed = true
[admin]
listen = "127.0.0.1:$AB_ADM"
[upstream]
url = "http://127.0.0.1:$UP"

[[routes]]
name = "klarna"
kind = "klarna_authorization"
path = "/klarna/authorization/{reference}"
forward_path = "/klarna/authorized"
secrets = ["$(secret)"]

[[routes]]
name = "orig"
kind = "klarna_authorization"
path = "/orig/{reference}/cb"
forward_format = "original"
secrets = ["$(secret)"]

# As in examples/platforms/, each fenced to an address no client here has:
# only a refusal may come back, and nothing may reach the upstream.
[[routes]]
name = "magento"
kind = "klarna_authorization"
path = "/checkout/klarna/authorize"
ignore_case = true
trailing_slash = true
subpaths = true
passthrough_query = ["dryRun=1"]
forward_format = "original"
unverified = true
allow_ips = ["192.0.2.1/32"]

[[routes]]
name = "woo"
kind = "klarna_authorization"
path = "/wc-api/KP_WC_AUTHORIZATION"
ignore_case = true
trailing_slash = true
query_match = ["wc-api=KP_WC_AUTHORIZATION"]
endpoint = true
clean_values = true
forward_format = "original"
unverified = true
allow_ips = ["192.0.2.1/32"]

[[routes]]
name = "php"
kind = "klarna_authorization"
path = "/php/{reference}/cb"
forward_path = "/checkout/authorized.php"
secrets = ["$(secret)"]
TOML
"$BIN" check --config "$WORK/authback.toml" >"$WORK/check.log" 2>&1 ||
  fail "authback check rejected the generated config:" "$WORK/check.log"
RUST_LOG=warn "$BIN" run --config "$WORK/authback.toml" >"$WORK/authback.log" 2>&1 &
PIDS+=($!)

# --- nginx: foreground, everything under the temp dir
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<NGINX
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  server {
    listen 127.0.0.1:$NG;
    location / {
      proxy_pass http://127.0.0.1:$UP;
      proxy_http_version 1.1;
      proxy_set_header Host \$host;
    }
  }
}
NGINX
NGINX_ARGS=(-p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf")
nginx -t "${NGINX_ARGS[@]}" >"$WORK/nginx-t.log" 2>&1 ||
  fail "nginx rejected the generated config:" "$WORK/nginx-t.log"
nginx "${NGINX_ARGS[@]}" -g "daemon off;" 2>>"$WORK/nginx/error.log" &
PIDS+=($!)

# --- wait (bounded) for all three
python3 "$HELPER" wait "$UP" "$NG" || fail "upstream or nginx did not start:" "$WORK/nginx/error.log"
python3 "$HELPER" ready "http://127.0.0.1:$AB_ADM/readyz" || fail "authback did not become ready:" "$WORK/authback.log"
python3 "$HELPER" wait "$AB_PLAIN" || fail "authback's plain listener is not up:" "$WORK/authback.log"

# --- probe: 2 s per input and target at most
TABLE=$(timeout 300 python3 "$HELPER" probe "$RECORD" "authback=$AB_PLAIN" "nginx=$NG") ||
  fail "probing failed" "$WORK/authback.log"
printf '%s\n' "$TABLE"
[ -z "$OUT" ] || printf '%s\n' "$TABLE" >"$OUT"
