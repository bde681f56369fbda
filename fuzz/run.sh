#!/usr/bin/env bash
# Runs every fuzz target for a while, one after another, and prints what each
# did. Needs the nightly toolchain and `cargo install cargo-fuzz`; outside CI.
#   fuzz/run.sh [seconds per target, default 600]
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-600}"
targets=(token callback_body path_matcher text_parsers config)
cargo +nightly fuzz build
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
    log="artifacts/$t.log"
    mkdir -p artifacts
    echo "== $t for ${secs}s"
    # -jobs=1 keeps it on one core; the summary line carries the counts.
    if cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
        result="no crash"
    else
        result="CRASH: see $log and artifacts/$t/"
    fi
    execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
    rate=$(grep -m1 'stat::average_exec_per_sec' "$log" | awk '{print $2}')
    cov=$(grep -E '^#[0-9]+' "$log" | tail -1 | grep -o 'cov: [0-9]*' || true)
    echo "$t: ${execs:-?} executions (${rate:-?}/s), ${cov:-cov ?}, corpus $(ls "corpus/$t" | wc -l) inputs, $result"
done
