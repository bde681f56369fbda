#!/usr/bin/env bash
# Where the CPU goes: `perf record` (cpu-clock samples, so it works where the
# hardware counters do not) on authback and on nginx, each under the same wrk
# load, plain and TLS keep-alive, in one run on 127.0.0.1. Prints, for each
# server and scenario, the share of samples in the kernel and in user space
# and the top symbols.
#
#   bash benches/profile.sh                       # this tree's release build
#   AUTHBACK_BIN=/tmp/old/authback bash benches/profile.sh
#   RUN_SECS=10 TOP=30 bash benches/profile.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_SECS=${RUN_SECS:-8}
TOP=${TOP:-25}
CONNS=${CONNS:-64}

source benches/common.sh
need_tools wrk:wrk nginx:nginx perf:linux-perf openssl:openssl
if [ -z "${AUTHBACK_BIN:-}" ]; then
  cargo build --release -q
  AUTHBACK_BIN=$PWD/target/release/authback
fi
build_upstream
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
UP=$(port); AB_TLS=$(port); AB_PLAIN=$(port); AB_ADM=$(port); NG_TLS=$(port); NG_PLAIN=$(port)

make_cert "$WORK"
"$UPSTREAM_BIN" "127.0.0.1:$UP" & PIDS+=($!)

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
RUST_LOG=warn "$AUTHBACK_BIN" --config "$WORK/authback.toml" 2>"$WORK/authback.log" & AB_PID=$!; PIDS+=($AB_PID)

nginx_conf "$WORK" "$UP" "$NG_PLAIN" "$NG_TLS"
nginx -c "$WORK/nginx.conf" -p "$WORK" -g "daemon off;" & NG_PID=$!; PIDS+=($NG_PID)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$AB_ADM/readyz" >/dev/null && break; sleep 0.05; done
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$NG_PLAIN/" >/dev/null && break; sleep 0.05; done

profile() { # label pids url
  local label=$1 pids=$2 url=$3
  perf record -q -e cpu-clock -F 2000 -g -p "$pids" -o "$WORK/$label.data" -- sleep "$RUN_SECS" 2>/dev/null &
  local rec=$!
  sleep 0.2
  local rate
  rate=$(wrk -t2 -c"$CONNS" -d"$((RUN_SECS - 1))s" "$url" 2>&1 | awk '/Requests\/sec/ {print $2}')
  wait "$rec" || true
  local kernel
  kernel=$(perf report -i "$WORK/$label.data" --stdio --no-children --sort dso 2>/dev/null |
    awk '/\[kernel/ {gsub("%","",$1); k+=$1} END {printf "%.0f", k}')
  echo
  echo "== $label: $rate req/s under wrk; kernel ${kernel}% of samples, user space $((100 - kernel))%"
  perf report -i "$WORK/$label.data" --stdio --no-children --sort dso,symbol 2>/dev/null |
    grep -E '^ +[0-9.]+%' | sed -e 's/  *-  *-  *$//' -e 's/ *$//' | head -"$TOP" || true
}
ng_pids=$(pgrep -P "$NG_PID" | paste -sd, -)
profile authback-plain "$AB_PID" "http://127.0.0.1:$AB_PLAIN/"
profile nginx-plain "$ng_pids" "http://127.0.0.1:$NG_PLAIN/"
profile authback-tls "$AB_PID" "https://127.0.0.1:$AB_TLS/"
profile nginx-tls "$ng_pids" "https://127.0.0.1:$NG_TLS/"
