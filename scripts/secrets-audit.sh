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
# Every sensitive value the tests marked, at least 8 characters long
# (shorter ones, "t-1", would match unrelated text; every secret and URL
# token the tests use is longer), searched for as fixed strings all at once
# (grep -F builds one automaton: thousands of values cost one pass).
awk 'length($0) >= 8' "$TRACE.secrets" | sort -u > "$WORK/values"
files=("$TRACE")
[ -d "$TRACE.d" ] && while IFS= read -r f; do files+=("$f"); done < <(find "$TRACE.d" -type f | sort)
values=$(wc -l < "$WORK/values")
lines=$(cat "${files[@]}" | wc -l)
size=$(cat "${files[@]}" | wc -c)
grep -F -n -H -f "$WORK/values" "${files[@]}" > "$WORK/hits" || true
hits=$(wc -l < "$WORK/hits")
echo "secrets audit: $values sensitive values, ${#files[@]} log files, $lines lines ($((size / 1000000)) MB) at trace level, $hits hits"
# Show where, never the whole value.
cut -c1-200 "$WORK/hits" | head -20 | sed 's/^/  /'
[ "$hits" -eq 0 ] && [ "$lines" -gt 0 ] && [ "$values" -gt 0 ]
