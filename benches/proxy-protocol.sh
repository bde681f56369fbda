#!/usr/bin/env bash
# The PROXY protocol's cost: authback against nginx, both behind HAProxy in
# TCP mode, as a balancer in front stands. wrk cannot send the header, so
# HAProxy sits between wrk and each server, once with `send-proxy-v2` (the
# server reads the header: authback's server.proxy_protocol, nginx's
# `listen ... proxy_protocol` with the real-IP module) and once without (the
# same path, the header the only difference). The header is sent once per
# connection, so it shows most with a new connection per request:
#   plain        HTTP/1.1 keep-alive
#   plain-close  HTTP/1.1, a new connection per request
#   tls-close    TLS 1.3, a new connection per request (HAProxy passes TLS
#                through; the header comes before the handshake)
# Reports req/s and the server's CPU per request (HAProxy's and wrk's CPU
# are not counted), medians of ROUNDS runs, and the authback/nginx ratios.
#
#   bash benches/proxy-protocol.sh               # ROUNDS=1, RUN_SECS=10
#   ROUNDS=3 bash benches/proxy-protocol.sh
#   AUTHBACK_BIN=/path/to/authback UPSTREAM_BIN=/path/to/bench-upstream bash benches/proxy-protocol.sh
#   KEEP_WORK=1 bash benches/proxy-protocol.sh   # keeps configs and logs in the temporary folder
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-1}
RUN_SECS=${RUN_SECS:-10}
CONNS=${CONNS:-64}

source benches/common.sh
need_tools wrk:wrk nginx:nginx haproxy:haproxy openssl:openssl
if [ -z "${AUTHBACK_BIN:-}" ]; then
  cargo build --release -q
  AUTHBACK_BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/authback
fi
build_upstream
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
# KEEP_WORK=1 keeps the configs and logs, for a run that failed.
[ -n "${KEEP_WORK:-}" ] && trap "for p in \"\${PIDS[@]}\"; do kill \"\$p\" 2>/dev/null || true; done" EXIT
make_cert "$WORK"

UP=$(port)
"$UPSTREAM_BIN" "127.0.0.1:$UP" & PIDS+=($!)

# Two authbacks (header read, or not) and one nginx with two servers.
declare -A PLAIN TLS PID FRONT_PLAIN FRONT_TLS
for v in pp direct; do
  PLAIN[ab-$v]=$(port); TLS[ab-$v]=$(port); adm=$(port)
  pp=""
  [ "$v" = pp ] && pp=$'proxy_protocol = true\nproxy_protocol_from = ["127.0.0.1"]'
  cat > "$WORK/ab-$v.toml" <<TOML
[server]
listen = "127.0.0.1:${TLS[ab-$v]}"
listen_plain = "127.0.0.1:${PLAIN[ab-$v]}"
public_url = "https://localhost:${TLS[ab-$v]}"
$pp
[server.tls]
cert = "$WORK/tls.crt"
key = "$WORK/tls.key"
[admin]
listen = "127.0.0.1:$adm"
[upstream]
url = "http://127.0.0.1:$UP"
[limits]
max_connections = 100000
TOML
  shop_route >> "$WORK/ab-$v.toml"
  RUST_LOG=warn "$AUTHBACK_BIN" --config "$WORK/ab-$v.toml" 2>"$WORK/ab-$v.log" & PID[ab-$v]=$!; PIDS+=($!)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$adm/readyz" >/dev/null && break; sleep 0.05; done
done
for v in pp direct; do PLAIN[ng-$v]=$(port); TLS[ng-$v]=$(port); done
ng_server() { # plain tls [proxy_protocol]
  local pp=${3:-}
  cat <<NGINX
  server {
    listen 127.0.0.1:$1 $pp;
    listen 127.0.0.1:$2 ssl $pp;
    ssl_certificate $WORK/tls.crt;
    ssl_certificate_key $WORK/tls.key;
    ssl_protocols TLSv1.3;
$( [ -n "$pp" ] && printf '    set_real_ip_from 127.0.0.1;\n    real_ip_header proxy_protocol;\n' )
$(nginx_location)
  }
NGINX
}
cat > "$WORK/nginx.conf" <<NGINX
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err warn;
events { worker_connections 10000; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream app { server 127.0.0.1:$UP; keepalive 128; }
$(ng_server "${PLAIN[ng-pp]}" "${TLS[ng-pp]}" proxy_protocol)
$(ng_server "${PLAIN[ng-direct]}" "${TLS[ng-direct]}")
}
NGINX
nginx -c "$WORK/nginx.conf" -p "$WORK" -g "daemon off;" & NG=$!; PIDS+=($NG)
PID[ng-pp]=$NG; PID[ng-direct]=$NG

# HAProxy: one TCP frontend per server port; `send-proxy-v2` towards the
# `pp` targets only.
{
  cat <<HAP
global
  maxconn 8000
  nbthread 2
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
HAP
  for t in ab-pp ab-direct ng-pp ng-direct; do
    send=""; [ "${t#*-}" = pp ] && send=send-proxy-v2
    FRONT_PLAIN[$t]=$(port); FRONT_TLS[$t]=$(port)
    printf 'listen %s-plain\n  bind 127.0.0.1:%s\n  server s 127.0.0.1:%s %s\n' "$t" "${FRONT_PLAIN[$t]}" "${PLAIN[$t]}" "$send"
    printf 'listen %s-tls\n  bind 127.0.0.1:%s\n  server s 127.0.0.1:%s %s\n' "$t" "${FRONT_TLS[$t]}" "${TLS[$t]}" "$send"
  done
} > "$WORK/haproxy.cfg"
haproxy -f "$WORK/haproxy.cfg" -db 2>"$WORK/haproxy.log" & PIDS+=($!)
for t in ab-pp ab-direct ng-pp ng-direct; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:${FRONT_PLAIN[$t]}/" >/dev/null && break; sleep 0.05; done
  curl -sf "http://127.0.0.1:${FRONT_PLAIN[$t]}/" >/dev/null || { echo "$t does not answer through HAProxy (see $WORK)" >&2; exit 1; }
done

cpu_ticks() { # pid -> user+system clock ticks of it and its children
  local t=0 q
  for q in $1 $(pgrep -P "$1" || true); do t=$((t + $(awk '{print $14 + $15}' /proc/"$q"/stat 2>/dev/null || echo 0))); done
  echo "$t"
}
declare -A RES CPU
run() { # scenario target url [wrk args]
  local s=$1 t=$2 url=$3 c0 c1 out rate n us
  shift 3
  c0=$(cpu_ticks "${PID[$t]}")
  out=$(wrk -t2 -c"$CONNS" -d"${RUN_SECS}s" "$@" "$url" 2>&1 |
    awk '/requests in/ {n=$1} /Requests\/sec/ {r=$2} /Non-2xx|Socket errors/ {e=e" "$0} END {printf "%s %s\n", r, n; if (e) print "errors:" e > "/dev/stderr"}')
  c1=$(cpu_ticks "${PID[$t]}")
  read -r rate n <<<"$out"
  us=$(python3 -c "print(f'{($c1 - $c0) * 1e6 / $(getconf CLK_TCK) / max(${n:-0}, 1):.1f}')")
  RES["$s|$t"]="${RES["$s|$t"]:-} $rate"; CPU["$s|$t"]="${CPU["$s|$t"]:-} $us"
  printf '%-12s %-10s %12s %10s\n' "$s" "$t" "$rate" "$us"
}

echo "machine: $(nproc) cores; $(nginx -v 2>&1); $(haproxy -v | head -1 | cut -d' ' -f1-3); wrk -t2 -c$CONNS; ${RUN_SECS}s runs, $ROUNDS rounds"
printf '%-12s %-10s %12s %10s\n' scenario target req/s "CPU us/req"
for _ in $(seq "$ROUNDS"); do
  for t in ab-pp ng-pp ab-direct ng-direct; do
    run plain "$t" "http://127.0.0.1:${FRONT_PLAIN[$t]}/"
    run plain-close "$t" "http://127.0.0.1:${FRONT_PLAIN[$t]}/" -H "Connection: close"
    run tls-close "$t" "https://127.0.0.1:${FRONT_TLS[$t]}/" -H "Connection: close"
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { python3 -c "print(f'{$1/$2:.2f}x')"; }
echo
echo "medians; authback/nginx with the header (pp) and without (direct): req/s (higher is better), CPU per request (lower is better)"
for s in plain plain-close tls-close; do
  for v in pp direct; do
    a=$(echo "${RES["$s|ab-$v"]}" | median); n=$(echo "${RES["$s|ng-$v"]}" | median)
    ca=$(echo "${CPU["$s|ab-$v"]}" | median); cn=$(echo "${CPU["$s|ng-$v"]}" | median)
    printf '  %-12s %-7s authback %9s req/s %7s us/req   nginx %9s req/s %7s us/req   req/s %s   CPU %s\n' \
      "$s" "$v" "$a" "$ca" "$n" "$cn" "$(ratio "$a" "$n")" "$(ratio "$ca" "$cn")"
  done
done
