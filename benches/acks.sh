#!/usr/bin/env bash
# Durable callback acks: the memory store against the file store and the
# redis store (one replica, and two replicas sharing one Redis), and the
# redis store on a primary with one Redis replica, waiting for it
# (store.min_replicas_acked = 1: `repl1`) or not (`repl0`), driven by wrk
# (separate processes) with 64 keep-alive TLS connections in all, posting
# distinct callbacks while the upstream hangs, beside the disk's raw fsync
# rate measured in the same run. Targets alternate; each run lasts RUN_SECS.
# Redis runs with appendonly yes + appendfsync always (the durable setting).
# Everything listens on 127.0.0.1; everything started here is stopped at exit.
#
#   bash benches/acks.sh            # 3 rounds of 5 s per target
#   ROUNDS=1 RUN_SECS=3 bash benches/acks.sh
#   KINDS="memory file" bash benches/acks.sh   # only these targets
#   KINDS="repl0 repl1" bash benches/acks.sh   # what waiting for a replica costs
#   AUTHBACK_BIN=/path/to/authback bash benches/acks.sh   # another build
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
RUN_SECS=${RUN_SECS:-5}
CONNS=${CONNS:-64}
KINDS=${KINDS:-memory file redis redis2 repl0 repl1}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
if [ -n "${AUTHBACK_BIN:-}" ]; then BIN=$AUTHBACK_BIN; else cargo build --release -q; BIN=$PWD/target/release/authback; fi
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; [ -n "${KEEP_LOGS:-}" ] && tail -n 5 "$WORK"/*.log >&2; rm -rf "$WORK"; }
trap cleanup EXIT

. benches/common.sh
UP=$(port); PUB=$(port); ADM=$(port); PUB2=$(port); ADM2=$(port); RP=$(port)

redis-server --bind 127.0.0.1 --port "$RP" --save "" --appendonly yes --appendfsync always \
  --dir "$WORK" --protected-mode no >/dev/null 2>&1 &
PIDS+=($!)

# For repl0 and repl1: a primary of their own and its replica, both durable
# as above, so the other targets pay nothing for replication.
if [[ " $KINDS " == *" repl"* ]]; then
  RP2=$(port); RR=$(port); mkdir -p "$WORK/primary" "$WORK/replica"
  redis-server --bind 127.0.0.1 --port "$RP2" --save "" --appendonly yes --appendfsync always \
    --dir "$WORK/primary" --protected-mode no >/dev/null 2>&1 &
  PIDS+=($!)
  redis-server --bind 127.0.0.1 --port "$RR" --save "" --appendonly yes --appendfsync always \
    --dir "$WORK/replica" --protected-mode no --replicaof 127.0.0.1 "$RP2" >/dev/null 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do
    redis-cli -p "$RR" info replication 2>/dev/null | grep -q master_link_status:up && break; sleep 0.1
  done
fi

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

config() { # kind [public admin]
  local pub=${2:-$PUB} adm=${3:-$ADM} kind=$1
  [[ $kind == repl* ]] && kind=redis
  cat <<TOML
[server]
listen = "127.0.0.1:$pub"
public_url = "https://localhost:$pub"
shutdown_grace = "1s"
[server.tls]
self_signed = true
[admin]
listen = "127.0.0.1:$adm"
[upstream]
url = "http://127.0.0.1:$UP"
[delivery]
attempt_timeout = "1s"
[store]
kind = "$kind"
$( [ "$1" = file ] && echo "path = \"$WORK/authback.db\"" )
$( [ "$1" = redis ] && echo "url = \"redis://127.0.0.1:$RP/0\"" && echo "key_prefix = \"bench-$ROUND_TAG:\"" )
$( [[ $1 == repl* ]] && echo "url = \"redis://127.0.0.1:$RP2/0\"" && echo "key_prefix = \"bench-$ROUND_TAG:\"" && echo "min_replicas_acked = ${1#repl}" )
TOML
klarna_route
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

start() { # kind conf-name public admin -> pid
  config "$1" "$3" "$4" > "$WORK/$2.toml"
  "$BIN" --config "$WORK/$2.toml" >/dev/null 2>"$WORK/$2.log" &
  local pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$4/readyz" >/dev/null && break; sleep 0.05; done
  echo "$pid"
}

load() { # conf-name conns tag -> wrk output
  local url; url=$("$BIN" mint-url --config "$WORK/$1.toml" --route klarna --reference bench)
  wrk -t1 -c"$2" -d"${RUN_SECS}s" --latency -s "$WORK/post.lua" "${url/localhost/127.0.0.1}" -- "$3" 2>&1
}

stop() { # pid... (children of a subshell: `wait` cannot reap them, so poll)
  kill "$@" 2>/dev/null || true
  for p in "$@"; do
    for _ in $(seq 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
  done
}

check_distinct() { # admin port...
  local total=0
  for adm in "$@"; do
    local d; d=$(curl -s "http://127.0.0.1:$adm/metrics" | awk '/outcome="duplicate"/ {print $2}')
    total=$((total + ${d:-0}))
  done
  if [ "$total" != 0 ]; then echo "the load sent $total duplicate callbacks: not distinct" >&2; exit 1; fi
}

summary() { # wrk outputs on stdin -> "acks/s p50 p99" (rates summed, worst p50/p99)
  awk '/Requests\/sec/ {r+=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Non-2xx/ {bad=1}
       END {if (bad) {print "non-2xx" > "/dev/stderr"; exit 1} printf "%.2f %s %s\n", r, p50, p99}'
}

cpu_ticks() { # pid... -> their user+system clock ticks
  local t=0
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' /proc/"$p"/stat 2>/dev/null || echo 0))); done
  echo "$t"
}
per_ack() { # ticks acks/s -> authback's CPU microseconds per ack
  python3 -c "print(f'{$1 * 1e6 / $(getconf CLK_TCK) / max($2 * $RUN_SECS, 1):.1f}')"
}

run() { # kind round -> "acks/s p50 p99 cpu-us/ack"
  ROUND_TAG="$1-$2"
  rm -f "$WORK"/authback.db*
  if [ "$1" = redis2 ]; then
    local a b; a=$(start redis "$ROUND_TAG-a" "$PUB" "$ADM"); b=$(start redis "$ROUND_TAG-b" "$PUB2" "$ADM2")
    local oa="$WORK/wa.out" ob="$WORK/wb.out" c0 c1 rate p50 p99
    c0=$(cpu_ticks "$a" "$b")
    load "$ROUND_TAG-a" $((CONNS / 2)) "$ROUND_TAG-a" > "$oa" & local wa=$!
    load "$ROUND_TAG-b" $((CONNS / 2)) "$ROUND_TAG-b" > "$ob" & local wb=$!
    wait "$wa" "$wb"
    c1=$(cpu_ticks "$a" "$b")
    check_distinct "$ADM" "$ADM2"
    stop "$a" "$b"
    read -r rate p50 p99 < <(cat "$oa" "$ob" | summary)
    echo "$rate $p50 $p99 $(per_ack $((c1 - c0)) "$rate")"
  else
    local pid c0 c1 out rate p50 p99; pid=$(start "$1" "$ROUND_TAG" "$PUB" "$ADM")
    c0=$(cpu_ticks "$pid")
    out=$(load "$ROUND_TAG" "$CONNS" "$ROUND_TAG")
    c1=$(cpu_ticks "$pid")
    check_distinct "$ADM"
    stop "$pid"
    read -r rate p50 p99 < <(summary <<<"$out")
    echo "$rate $p50 $p99 $(per_ack $((c1 - c0)) "$rate")"
  fi
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB; disk fsync (200 B append + fdatasync): $(fsync_rate)/s"
printf '%-7s %-6s %10s %9s %9s %12s\n' store round acks/s p50 p99 "CPU us/ack"
declare -A SUM
for r in $(seq "$ROUNDS"); do
  for kind in $KINDS; do
    read -r rate p50 p99 cpu < <(run "$kind" "$r")
    printf '%-7s %-6s %10s %9s %9s %12s\n' "$kind" "$r" "$rate" "$p50" "$p99" "$cpu"
    SUM[$kind]="${SUM[$kind]:-} $rate"
  done
done
median() { tr ' ' '\n' | { grep -v '^$' || true; } | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m=$(echo "${SUM[memory]:-}" | median)
line="median acks/s:"
for kind in $KINDS; do
  v=$(echo "${SUM[$kind]}" | median)
  line="$line $kind $v"
  [ -n "$m" ] && [ "$kind" != memory ] && line="$line ($(python3 -c "print(f'{$v/$m:.2f}')")x memory)"
  line="$line,"
done
echo "${line%,}"
# What waiting for the replica costs: repl1 against repl0, same run.
if [ -n "${SUM[repl0]:-}" ] && [ -n "${SUM[repl1]:-}" ]; then
  r0=$(echo "${SUM[repl0]}" | median); r1=$(echo "${SUM[repl1]}" | median)
  echo "min_replicas_acked = 1 against 0: $(python3 -c "print(f'{$r1/$r0:.2f}')")x the acks/s"
fi
echo "disk fsync after the runs: $(fsync_rate)/s"
