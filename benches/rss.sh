#!/usr/bin/env bash
# Memory with a full dedupe cache: authback (memory store, release build)
# takes 1,000,000 distinct callbacks from wrk over TLS while a minimal
# upstream accepts every delivery, then reports its RSS idle, under that
# load, and once every delivery is done and only the dedupe keys remain.
# Everything on 127.0.0.1; everything started here is stopped at exit.
#
#   bash benches/rss.sh              # KEYS=1000000
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${KEYS:-1000000}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q
cargo build --release -q --example bench-upstream
BIN=$PWD/target/release/authback
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
. benches/common.sh
UP=$(port); PUB=$(port); ADM=$(port)
target/release/examples/bench-upstream "127.0.0.1:$UP" & PIDS+=($!)
cat > "$WORK/a.toml" <<TOML
[server]
listen = "127.0.0.1:$PUB"
public_url = "https://localhost:$PUB"
[server.tls]
self_signed = true
[admin]
listen = "127.0.0.1:$ADM"
[upstream]
url = "http://127.0.0.1:$UP"
[store]
kind = "memory"
dedupe_ttl = "48h"
TOML
klarna_route >> "$WORK/a.toml"
RUST_LOG=warn "$BIN" --config "$WORK/a.toml" 2>"$WORK/a.log" & AB=$!; PIDS+=($AB)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ADM/readyz" >/dev/null && break; sleep 0.05; done
rss() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$AB/status"; }
metric() { curl -s "http://127.0.0.1:$ADM/metrics" | awk -v m="$1" 'index($0, m) == 1 {s += $NF} END {printf "%d", s}'; }
echo "RSS idle: $(rss) MB"

# Each thread sends its share of distinct callbacks, then proxied GETs.
cat > "$WORK/post.lua" <<'LUA'
local n, tid, quota, run = 0, 0, 0, "x"
function setup(thread) thread:set("tid", tid); tid = tid + 1 end
function init(args) run = args[1]; quota = tonumber(args[2]) end
request = function()
  n = n + 1
  if n > quota then return wrk.format("GET", "/") end
  local body = string.format('{"authorization_token":"tok-%s-%d-%d","session_id":"s-%s-%d-%d"}', run, tid, n, run, tid, n)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
LUA
URL=$("$BIN" mint-url --config "$WORK/a.toml" --route klarna --reference bench)
URL=${URL/localhost/127.0.0.1}
peak=0; round=0
while :; do
  have=$(metric 'authback_callbacks_total{route="klarna",outcome="accepted"}')
  [ "$have" -ge "$KEYS" ] && break
  round=$((round + 1))
  left=$(( (KEYS - have + 1) / 2 ))   # per wrk thread
  wrk -t2 -c64 -d10s -s "$WORK/post.lua" "$URL" -- "r$round" "$left" >/dev/null 2>&1 &
  w=$!
  while kill -0 "$w" 2>/dev/null; do r=$(rss); [ "$r" -gt "$peak" ] && peak=$r; sleep 0.5; done
done
echo "callbacks accepted: $have; RSS under load (peak): $peak MB"
for _ in $(seq 600); do
  [ "$(metric authback_delivery_queue_depth)" = 0 ] && break; sleep 0.5
done
sleep 2
echo "delivered: $(metric 'authback_deliveries_total{route="klarna",outcome="delivered"}'); queue depth: $(metric authback_delivery_queue_depth)"
echo "RSS with $have dedupe keys cached, every delivery done: $(rss) MB"
