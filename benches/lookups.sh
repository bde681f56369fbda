#!/usr/bin/env bash
# Finding one among millions: fills a file store with N delivered records
# and a Redis store with REDIS_N (examples/lookups-fill.rs, through the
# stores' own claim path: each record its own session and reference,
# received evenly over the past week), starts authback on each, and times
# GET /v1/deliveries through the admin API: by session_id, by reference,
# by a session_id that no record has, by state and a one-hour time window,
# and GET /v1/deliveries/{id}; LOOKUPS requests each (different values),
# median and p99. With BEFORE_BIN, that build is timed first on the same
# data (the file store taken back to schema 7 for it, as an older build
# wrote it); the build of this tree then migrates it, and the time to
# /readyz includes that. Everything on 127.0.0.1, in a folder under /tmp
# that is removed at exit; every process started here is stopped.
#
#   bash benches/lookups.sh                       # N=5000000, REDIS_N=1000000
#   N=200000 REDIS_N=200000 LOOKUPS=50 bash benches/lookups.sh
#   BEFORE_BIN=/tmp/old/authback bash benches/lookups.sh
#   KINDS=redis bash benches/lookups.sh
#   KINDS=claim CLAIM_REV=bf51a34 bash benches/lookups.sh   # what the indexes cost a claim
#
# KINDS=claim times the Redis claim script of CLAIM_REV and of this tree,
# server side (INFO commandstats), over 200,000 claims each through
# redis-cli --pipe, in three alternating rounds: what keeping the lookup
# indexes adds to each callback's one Redis step.
#
# A Redis record takes about 2.1 KB of Redis memory, the lookup indexes
# about 0.4 KB of it: REDIS_N defaults to a million (about 2.2 GB). The
# file store takes about 450 bytes a record on disk (about 2.3 GB at 5
# million); mind the free space of /tmp.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-5000000}
REDIS_N=${REDIS_N:-1000000}
LOOKUPS=${LOOKUPS:-200}
BEFORE_LOOKUPS=${BEFORE_LOOKUPS:-$LOOKUPS}
KINDS=${KINDS:-file redis}

command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q --bin authback --example lookups-fill
AFTER_BIN=${AFTER_BIN:-$TARGET/release/authback}
FILL=$TARGET/release/examples/lookups-fill
WORK=$(mktemp -d /tmp/authback-lookups.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  rm -rf "$WORK"
}
trap cleanup EXIT

. benches/common.sh
UP=$(port); RP=$(port)

config() { # kind public admin
  cat <<TOML
[server]
listen = "127.0.0.1:$2"
public_url = "https://localhost:$2"
shutdown_grace = "1s"
[server.tls]
self_signed = true
[admin]
listen = "127.0.0.1:$3"
[upstream]
url = "http://127.0.0.1:$UP"
[store]
kind = "$1"
dedupe_ttl = "192h"
$( [ "$1" = file ] && echo "path = \"$WORK/authback.db\"" )
$( [ "$1" = redis ] && echo "url = \"redis://127.0.0.1:$RP/0\"" && echo "key_prefix = \"bench:\"" )
TOML
klarna_route
}

# The timing client: one keep-alive connection, LOOKUPS requests a kind.
cat > "$WORK/time.py" <<'PY'
import http.client, sys, time, statistics
port, sample, count, follow = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rows = [l.split() for l in open(sample) if l.strip()]
rows = [rows[i * len(rows) // count] for i in range(count)]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
def get(path):
    t = time.perf_counter()
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    return time.perf_counter() - t, r.status, body, r.getheader("Next-Cursor")
kinds = [
    ("session_id", lambda r: f"/v1/deliveries?session_id={r[1]}"),
    ("reference", lambda r: f"/v1/deliveries?reference={r[2]}"),
    ("session_id, none such", lambda r: f"/v1/deliveries?session_id=00000000-{r[1][9:]}"),
    # The hour up to the wanted record's second: it is among the newest.
    ("state + 1 h window", lambda r: f"/v1/deliveries?state=delivered&since={int(r[3]) // 1000 - 3599}&until={int(r[3]) // 1000 + 1}"),
    ("id", lambda r: f"/v1/deliveries/{r[0]}"),
]
for name, path in kinds:
    took, found, paged = [], 0, 0
    for r in rows:
        t, status, body, cursor = get(path(r))
        if status != 200:
            sys.exit(f"{name}: {status} {body[:200]!r}")
        took.append(t)
        found += r[0].encode() in body
        paged += cursor is not None
    took.sort()
    p99 = took[min(len(took) - 1, round(0.99 * (len(took) - 1)))]
    print(f"  {name:24} median {statistics.median(took) * 1e3:9.2f} ms   p99 {p99 * 1e3:9.2f} ms"
          f"   ({len(took)} requests; wanted id in the answer: {found}; Next-Cursor: {paged})", flush=True)
# Following Next-Cursor until the session's delivery is found: what an
# operator waits for when a page can end short.
for r in rows[:follow]:
    calls, total, path = 0, 0.0, f"/v1/deliveries?session_id={r[1]}"
    while True:
        t, status, body, cursor = get(path)
        calls, total = calls + 1, total + t
        if r[0].encode() in body or cursor is None or calls >= 2000:
            break
        path = f"/v1/deliveries?session_id={r[1]}&cursor={cursor}"
    print(f"  session_id, following Next-Cursor: found={r[0].encode() in body} after {calls} requests, {total * 1e3:.1f} ms")
PY

run() { # label bin kind lookups
  local pub adm pid t0 ready
  pub=$(port); adm=$(port)
  config "$3" "$pub" "$adm" > "$WORK/$1.toml"
  t0=$(date +%s.%N)
  RUST_LOG=warn "$2" --config "$WORK/$1.toml" >/dev/null 2>"$WORK/$1.log" &
  pid=$!; PIDS+=("$pid")
  ready=""
  for _ in $(seq 6000); do
    if curl -sf "http://127.0.0.1:$adm/readyz" >/dev/null 2>&1; then ready=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$ready" ] || { tail -n 20 "$WORK/$1.log" >&2; exit 1; }
  echo "$1 ($3 store): ready in $(python3 -c "import time; print(f'{time.time() - $t0:.1f}')") s"
  python3 "$WORK/time.py" "$adm" "$WORK/sample-$3.txt" "$4" "${FOLLOW:-3}"
  echo "  authback RSS: $(awk '/VmRSS/ {printf "%.0f MB", $2/1024}' "/proc/$pid/status")"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB; load $(cut -d' ' -f1-3 /proc/loadavg)"
for kind in $KINDS; do
  case $kind in
    file)
      t0=$(date +%s)
      "$FILL" file "$WORK/authback.db" "$N" "$WORK/sample-file.txt" 2>"$WORK/fill.log"
      echo "file store: $N records in $(( $(date +%s) - t0 )) s; database $(du -sh "$WORK" | cut -f1) with its WAL"
      if [ -n "${BEFORE_BIN:-}" ]; then
        # As schema 7 left it: the single-column indexes, no composite ones.
        python3 - "$WORK/authback.db" <<'PY'
import sqlite3, sys, time
t = time.time()
db = sqlite3.connect(sys.argv[1])
db.executescript("""
DROP INDEX IF EXISTS deliveries_session_received;
DROP INDEX IF EXISTS deliveries_reference_received;
CREATE INDEX IF NOT EXISTS deliveries_session ON deliveries (session_id);
CREATE INDEX IF NOT EXISTS deliveries_reference ON deliveries (reference);
PRAGMA user_version = 7;
PRAGMA wal_checkpoint(TRUNCATE);
""")
db.close()
print(f"  taken back to schema 7 in {time.time() - t:.0f} s")
PY
        run before "$BEFORE_BIN" file "$BEFORE_LOOKUPS"
      fi
      run after "$AFTER_BIN" file "$LOOKUPS"
      echo "  database after: $(du -sh "$WORK" | cut -f1)"
      rm -f "$WORK"/authback.db*
      ;;
    claim)
      redis-server --bind 127.0.0.1 --port "$RP" --save "" --appendonly no --dir "$WORK" \
        --protected-mode no >/dev/null 2>&1 &
      PIDS+=($!)
      for _ in $(seq 100); do redis-cli -p "$RP" ping >/dev/null 2>&1 && break; sleep 0.05; done
      git show "${CLAIM_REV:?CLAIM_REV names the build to compare with}:src/store/redis/claim.lua" > "$WORK/claim-before.lua"
      # The scripts that start with shared functions are joined as mod.rs joins them.
      if grep -q lookup_keep src/store/redis/claim.lua; then
        cat src/store/redis/lookup.lua src/store/redis/claim.lua > "$WORK/claim-after.lua"
      else
        cp src/store/redis/claim.lua "$WORK/claim-after.lua"
      fi
      for round in 1 2 3; do
        for v in before after; do
          sha=$(redis-cli -p "$RP" script load "$(cat "$WORK/claim-$v.lua")")
          redis-cli -p "$RP" flushall >/dev/null; redis-cli -p "$RP" config resetstat >/dev/null
          python3 - "$sha" 200000 <<'PY' | redis-cli -p "$RP" --pipe >/dev/null
import sys, time
sha, n = sys.argv[1], int(sys.argv[2])
out, now, ttl = sys.stdout.buffer, int(time.time() * 1000), 172_800_000
def cmd(*a):
    out.write(b"*%d\r\n" % len(a))
    for x in map(lambda v: str(v).encode(), a):
        out.write(b"$%d\r\n%s\r\n" % (len(x), x))
for i in range(n):
    id, sess, at = "%032x" % (i * 2654435761), "sess-%08d-aaaa-4bbb-accc-%012d" % (i, i), now + i
    keys = ["c:d:" + id] + ["c:" + k for k in ("due", "pending", "r:" + sess, "rdue", "rleased", "delivered",
                                                "dead_by_expiry", "unconfirmed", "wdue", "wleased")]
    cmd("EVALSHA", sha, 11, *keys, id, at - ttl, at + 3_600_000 + ttl, "klarna", "order-%d" % i, sess, "tok-%d" % i,
        "callback", at, '{"authorization_token":"tok-%d","session_id":"%s"}' % (i, sess), "", at, at + 3_600_000, at + ttl)
PY
          per=$(redis-cli -p "$RP" info commandstats | awk -F'usec_per_call=' '/evalsha/ {split($2, a, ","); print a[1]}')
          mem=$(redis-cli -p "$RP" info memory | awk -F: '/^used_memory:/ {printf "%.0f", $2/1048576}')
          echo "claim script, round $round, $v: $per us a call; $mem MB for 200,000 pending records"
        done
      done
      redis-cli -p "$RP" shutdown nosave >/dev/null 2>&1 || true
      ;;
    redis)
      redis-server --bind 127.0.0.1 --port "$RP" --save "" --appendonly no --dir "$WORK" \
        --protected-mode no >/dev/null 2>&1 &
      PIDS+=($!)
      for _ in $(seq 100); do redis-cli -p "$RP" ping >/dev/null 2>&1 && break; sleep 0.05; done
      t0=$(date +%s)
      "$FILL" redis "redis://127.0.0.1:$RP/0" "bench:" "$REDIS_N" "$WORK/sample-redis.txt" 2>"$WORK/fill.log"
      mem=$(redis-cli -p "$RP" info memory | awk -F: '/^used_memory:/ {printf "%.0f", $2/1048576}')
      echo "redis store: $REDIS_N records in $(( $(date +%s) - t0 )) s; Redis used_memory $mem MB"
      [ -n "${BEFORE_BIN:-}" ] && run before "$BEFORE_BIN" redis "$BEFORE_LOOKUPS"
      run after "$AFTER_BIN" redis "$LOOKUPS"
      redis-cli -p "$RP" shutdown nosave >/dev/null 2>&1 || true
      ;;
  esac
done
