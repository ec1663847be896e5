#!/usr/bin/env bash
# Reliability soak (issue 6, docs/RELIABILITY.md): runs the rel_* suites
# ROUNDS times in a row (default 10), one test at a time, and prints the
# figures each round reports; then, once, the VIM outage test at the issue's
# 60 s (CI runs the same test at 30 s). Not run by CI (CI runs each suite once
# through `cargo test --workspace`).
#
# usage: tests/soak.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-10}
failed=0
for i in $(seq 1 "$rounds"); do
    echo "== round $i/$rounds"
    if ! cargo test --locked --test it rel_ -- --nocapture --test-threads 1 2>&1 \
        | grep -E '^\| |^RSS|lossy relay|kill -9|failover|inotify overflow|agent kill|VIM request|^test |test result'; then
        failed=$((failed + 1))
    fi
done
echo "== VIM down for 60 s"
if ! GH_VIM_OUTAGE_SECS=60 cargo test --locked --test it -- vim_down_for_30_s --nocapture 2>&1 \
    | grep -E 'VIM outage|^test |test result'; then
    failed=$((failed + 1))
fi
echo "soak: $rounds rounds + the 60 s outage, $failed failed"
[ "$failed" -eq 0 ]
