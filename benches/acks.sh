#!/usr/bin/env bash
# Durable callback acks: the memory store against the file store, driven by
# wrk (a separate process) with 64 keep-alive TLS connections posting
# distinct callbacks while the upstream hangs, beside the disk's raw fsync
# rate measured in the same run. Targets alternate; each run lasts RUN_SECS.
# Everything listens on 127.0.0.1; everything started here is stopped at exit.
#
#   bash benches/acks.sh            # 3 rounds of 5 s per target
#   ROUNDS=1 RUN_SECS=3 bash benches/acks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
RUN_SECS=${RUN_SECS:-5}
CONNS=${CONNS:-64}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q
BIN=$PWD/target/release/authback
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(port); PUB=$(port); ADM=$(port)

# An upstream that accepts connections and never answers.
python3 - "$UP" <<'PY' &
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(4096); s.settimeout(1)
held, end = [], time.time() + 3600
while time.time() < end:
    try: held.append(s.accept()[0])
    except socket.timeout: pass
PY
PIDS+=($!)

cat > "$WORK/post.lua" <<'LUA'
local n = 0
local tid = 0
local run = "x"
function setup(thread) thread:set("tid", tid); tid = tid + 1 end
function init(args) run = args[1] or tostring(os.time()) end
request = function()
  n = n + 1
  local body = string.format('{"authorization_token":"tok-%s-%d-%d","session_id":"s-%d"}', run, tid, n, n)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
LUA

config() { # kind
  cat <<TOML
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
kind = "$1"
$( [ "$1" = file ] && echo "path = \"$WORK/authback.db\"" )
[[routes]]
name = "klarna"
kind = "klarna_authorization"
path = "/klarna/authorization/{reference}"
forward_path = "/klarna/authorized"
secrets = ["bench-secret-0123456789abcdef"]
TOML
}

fsync_rate() {
  python3 - "$WORK" <<'PY'
import os, sys, time
fd = os.open(os.path.join(sys.argv[1], "fsync-probe"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
n, end = 0, time.time() + 2
while time.time() < end:
    os.write(fd, b"x" * 200); os.fdatasync(fd); n += 1
print(n // 2)
PY
}

run() { # kind round -> "acks/s p50 p99"
  config "$1" > "$WORK/$1.toml"
  rm -f "$WORK"/authback.db*
  "$BIN" --config "$WORK/$1.toml" 2>"$WORK/$1.log" & local pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ADM/readyz" >/dev/null && break; sleep 0.05; done
  local url; url=$("$BIN" mint-url --config "$WORK/$1.toml" --route klarna --reference bench)
  local out; out=$(wrk -t1 -c"$CONNS" -d"${RUN_SECS}s" --latency -s "$WORK/post.lua" "${url/localhost/127.0.0.1}" -- "$1-$2" 2>&1 | sed "s/^/  /")
  local dups; dups=$(curl -s "http://127.0.0.1:$ADM/metrics" | awk -F' ' '/outcome="duplicate"/ {print $2}')
  kill "$pid"; wait "$pid" 2>/dev/null || true
  if [ "${dups:-0}" != 0 ]; then echo "the load sent $dups duplicate callbacks: not distinct" >&2; exit 1; fi
  if grep -q "Non-2xx" <<<"$out"; then echo "non-2xx answers in $1 run:" >&2; echo "$out" >&2; exit 1; fi
  awk '/Requests\/sec/ {r=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} END {print r, p50, p99}' <<<"$out"
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB; disk fsync (200 B append + fdatasync): $(fsync_rate)/s"
printf '%-7s %-6s %10s %9s %9s\n' store round acks/s p50 p99
declare -A SUM
for r in $(seq "$ROUNDS"); do
  for kind in memory file; do
    read -r rate p50 p99 < <(run "$kind" "$r")
    printf '%-7s %-6s %10s %9s %9s\n' "$kind" "$r" "$rate" "$p50" "$p99"
    SUM[$kind]="${SUM[$kind]:-} $rate"
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m=$(echo "${SUM[memory]}" | median); f=$(echo "${SUM[file]}" | median)
echo "median acks/s: memory $m, file $f, file/memory $(python3 -c "print(f'{$f/$m:.2f}')")"
echo "disk fsync after the runs: $(fsync_rate)/s"
