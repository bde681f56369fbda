#!/usr/bin/env bash
# Secrets audit: runs the whole integration suite with every log at trace
# level (in-process authback into one file, the real binary's logs kept
# beside it), then searches all of it for every secret, URL token,
# authorization token, admin token and Klarna password the tests used.
# Exits 1 if any appears.
#
#   bash scripts/secrets-audit.sh
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
TRACE=$WORK/trace.log
if ! AUTHBACK_TEST_TRACE=$TRACE cargo test -q --test it >"$WORK/suite.txt" 2>&1; then
    # Which test, and why: the panics and the list of failures.
    grep -E "panicked at|^failures:|^    [a-z_]+(::[a-z_0-9]+)+$|^test result" -A3 "$WORK/suite.txt" | head -80 >&2
    echo "the suite failed under trace logging" >&2
    exit 1
fi
grep -E '^test result' "$WORK/suite.txt"
python3 - "$TRACE" <<'PY'
import os, sys
trace = sys.argv[1]
values = set()
with open(trace + ".secrets", encoding="utf-8", errors="replace") as f:
    for line in f:
        v = line.rstrip("\n")
        # Short values ("t-1") would match unrelated text; every secret and
        # URL token the tests use is longer.
        if len(v) >= 8:
            values.add(v)
files = [trace] + [os.path.join(trace + ".d", n) for n in sorted(os.listdir(trace + ".d"))] if os.path.isdir(trace + ".d") else [trace]
lines = size = 0
hits = []
for path in files:
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            lines += 1
            size += len(line)
            for v in values:
                if v in line:
                    hits.append((os.path.basename(path), n, v[:6] + "...", line[:200].rstrip()))
print(f"secrets audit: {len(values)} sensitive values, {len(files)} log files, {lines} lines ({size / 1e6:.1f} MB) at trace level, {len(hits)} hits")
for h in hits[:20]:
    print("  %s:%d contains %s: %s" % h)
sys.exit(1 if hits or lines == 0 or not values else 0)
PY
