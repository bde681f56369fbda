#!/usr/bin/env bash
# Pass-through: authback against nginx, side by side, in one run, on
# 127.0.0.1. A minimal upstream (examples/bench-upstream.rs) stands behind
# both; the same clients drive both, alternating targets, ROUNDS times:
#   wrk  HTTP/1.1 keep-alive, plain and TLS 1.3
#   wrk  TLS with a new connection per request (handshake cost)
#   h2load  HTTP/2 over TLS
# and the upstream hit directly is the ceiling. Reports medians and the
# authback/nginx ratio, and RSS idle and under load.
#
#   bash benches/run.sh                  # ROUNDS=3, RUN_SECS=10
#   ROUNDS=1 RUN_SECS=5 bash benches/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
RUN_SECS=${RUN_SECS:-10}
CONNS=${CONNS:-64}

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; fi
cargo build --release -q
cargo build --release -q --example bench-upstream
BIN=$PWD/target/release/authback
UPBIN=$PWD/target/release/examples/bench-upstream
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(port); AB_TLS=$(port); AB_PLAIN=$(port); AB_ADM=$(port); NG_TLS=$(port); NG_PLAIN=$(port)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null

"$UPBIN" "127.0.0.1:$UP" & UP_PID=$!; PIDS+=($UP_PID)

cat > "$WORK/authback.toml" <<TOML
[server]
listen = "127.0.0.1:$AB_TLS"
listen_plain = "127.0.0.1:$AB_PLAIN"
public_url = "https://localhost:$AB_TLS"
[server.tls]
cert = "$WORK/tls.crt"
key = "$WORK/tls.key"
[admin]
listen = "127.0.0.1:$AB_ADM"
[upstream]
url = "http://127.0.0.1:$UP"
[limits]
max_connections = 100000
TOML
RUST_LOG=warn "$BIN" --config "$WORK/authback.toml" 2>"$WORK/authback.log" & AB_PID=$!; PIDS+=($AB_PID)

cat > "$WORK/nginx.conf" <<NGINX
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err warn;
events { worker_connections 10000; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream app { server 127.0.0.1:$UP; keepalive 128; }
  server {
    listen 127.0.0.1:$NG_PLAIN;
    listen 127.0.0.1:$NG_TLS ssl;
    http2 on;
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
# Older nginx spells HTTP/2 on the listen line.
if ! nginx -t -c "$WORK/nginx.conf" -p "$WORK" >/dev/null 2>&1; then
  sed -i -e 's/^    http2 on;//' -e "s|listen 127.0.0.1:$NG_TLS ssl;|listen 127.0.0.1:$NG_TLS ssl http2;|" "$WORK/nginx.conf"
fi
nginx -c "$WORK/nginx.conf" -p "$WORK" -g "daemon off;" & NG_PID=$!; PIDS+=($NG_PID)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$AB_ADM/readyz" >/dev/null && curl -sf "http://127.0.0.1:$NG_PLAIN/" >/dev/null && break; sleep 0.05; done

rss() { # pid... -> total RSS in MB
  local kb=0
  for p in "$@"; do for q in $p $(pgrep -P "$p" || true); do kb=$((kb + $(awk '/VmRSS/ {print $2}' /proc/"$q"/status 2>/dev/null || echo 0))); done; done
  echo $((kb / 1024))
}
IDLE_AB=$(rss $AB_PID); IDLE_NG=$(rss $NG_PID)

wrk_run() { # url [extra args] -> "req/s p50 p99"
  local url=$1; shift
  wrk -t2 -c"$CONNS" -d"${RUN_SECS}s" --latency "$@" "$url" 2>&1 |
    awk '/requests in/ {n=$1} /Requests\/sec/ {r=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Non-2xx|Socket errors/ {e=e" "$0} END {printf "%s %s %s %s\n", r, p50, p99, n; if (e) print "errors:" e > "/dev/stderr"}'
}
h2_run() { # url -> "req/s - - requests"
  h2load -t2 -c"$CONNS" -m10 -D"$RUN_SECS" "$1" 2>&1 | awk '/finished in/ {for (i=1;i<=NF;i++) if ($i ~ /req\/s/) {r=$(i-1)}} /^requests:/ {n=$2} END {printf "%s - - %s\n", r, n}'
}
cpu_ticks() { # pid... -> user+system clock ticks of them and their children
  local t=0
  for p in "$@"; do for q in $p $(pgrep -P "$p" || true); do t=$((t + $(awk '{print $14 + $15}' /proc/"$q"/stat 2>/dev/null || echo 0))); done; done
  echo "$t"
}

declare -A RES
declare -A CPU
scenario() { # name target url kind
  local out pid c0 c1 rate p50 p99 n us
  case $2 in authback) pid=$AB_PID ;; nginx) pid=$NG_PID ;; *) pid=$UP_PID ;; esac
  c0=$(cpu_ticks "$pid")
  case $4 in
    wrk) out=$(wrk_run "$3") ;;
    close) out=$(wrk_run "$3" -H "Connection: close") ;;
    h2) out=$(h2_run "$3") ;;
  esac
  c1=$(cpu_ticks "$pid")
  read -r rate p50 p99 n <<<"$out"
  # The server's CPU per request: the steadiest figure when the client, the
  # proxy and the upstream share the cores.
  us=$(python3 -c "print(f'{($c1 - $c0) * 1e6 / $(getconf CLK_TCK) / max(${n:-0}, 1):.1f}')")
  RES["$1|$2"]="${RES["$1|$2"]:-} $rate"
  CPU["$1|$2"]="${CPU["$1|$2"]:-} $us"
  printf '%-16s %-9s %12s %9s %9s %10s\n' "$1" "$2" "$rate" "$p50" "$p99" "$us"
}

LOAD_AB=0; LOAD_NG=0
echo "machine: $(nproc) cores; $(nginx -v 2>&1); wrk -t2 -c$CONNS, h2load -t2 -c$CONNS -m10; ${RUN_SECS}s runs, $ROUNDS rounds"
printf '%-16s %-9s %12s %9s %9s %10s\n' scenario target req/s p50 p99 "CPU us/req"
for r in $(seq "$ROUNDS"); do
  scenario direct upstream "http://127.0.0.1:$UP/" wrk
  for t in authback nginx; do
    if [ $t = authback ]; then P=$AB_PLAIN; S=$AB_TLS; else P=$NG_PLAIN; S=$NG_TLS; fi
    scenario plain "$t" "http://127.0.0.1:$P/" wrk
    scenario tls "$t" "https://127.0.0.1:$S/" wrk
    if [ $t = authback ]; then LOAD_AB=$(rss $AB_PID); else LOAD_NG=$(rss $NG_PID); fi
    scenario tls-newconn "$t" "https://127.0.0.1:$S/" close
    scenario h2 "$t" "https://127.0.0.1:$S/" h2
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "medians (req/s) and authback/nginx:"
for s in plain tls tls-newconn h2; do
  a=$(echo "${RES["$s|authback"]}" | median); n=$(echo "${RES["$s|nginx"]}" | median)
  ca=$(echo "${CPU["$s|authback"]}" | median); cn=$(echo "${CPU["$s|nginx"]}" | median)
  printf '  %-12s authback %10s  nginx %10s  ratio %s   CPU us/req authback %s nginx %s\n' "$s" "$a" "$n" "$(python3 -c "print(f'{$a/$n:.2f}x')")" "$ca" "$cn"
done
printf '  %-12s %10s\n' "upstream direct" "$(echo "${RES["direct|upstream"]}" | median)"
echo "RSS MB: authback idle $IDLE_AB, under load $LOAD_AB; nginx (master + 2 workers) idle $IDLE_NG, under load $LOAD_NG"
