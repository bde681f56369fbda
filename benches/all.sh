#!/usr/bin/env bash
# Every benchmark in one go, in the order BENCHMARKS.md reports them:
# pass-through against nginx, the PROXY protocol behind HAProxy, durable
# acks per store, RSS with 1,000,000 dedupe keys, then the in-process ack
# latency (alone and beside 1,000 slow connections). About 17 minutes on 2
# cores. Run on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash benches/run.sh
bash benches/proxy-protocol.sh
bash benches/acks.sh
bash benches/rss.sh
cargo bench --bench ack -- ack_latency slowloris
