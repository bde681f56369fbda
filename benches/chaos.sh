#!/usr/bin/env bash
# The chaos test, longer: the release binary on the file store is kill -9ed
# and restarted at random (every 0.3-1.5 s) while 8 clients send distinct
# callbacks as Klarna does, and the backend answers 503 (20%), resets the
# connection (20%) or hangs past the attempt timeout (10%) while the chaos
# lasts, then recovers. Prints the figures: callbacks, acknowledged, delivered,
# duplicates after a kill, unexplained duplicates and lost (must be 0).
# Everything runs on 127.0.0.1 and stops by itself.
#
#   bash benches/chaos.sh            # 120 s of chaos
#   SECS=30 SEED=42 bash benches/chaos.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-120}
export AUTHBACK_CHAOS_SECS=$SECS
[ -n "${SEED:-}" ] && export AUTHBACK_CHAOS_SEED=$SEED
cargo test --release -q --test it chaos:: -- --nocapture 2>&1 | grep -E '^chaos:|test result|panicked|assert'
