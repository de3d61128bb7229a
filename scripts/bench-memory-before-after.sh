#!/usr/bin/env bash
# The paired benchmark (drip beside governor, benches/paired.rs) of two
# builds of drip, run alternately (A B A B ...) so that a shared machine's
# drifting load falls on both alike: compare each build's drip/governor
# ratios, not raw times.
#
# Usage: scripts/bench-memory-before-after.sh BEFORE_BIN AFTER_BIN [PAIRS]
#   where each BIN is a paired bench executable, built with
#   `cargo bench -p drip --bench paired --no-run` at the commit to compare
#   (e.g. from `git archive REV | tar -x -C DIR`, then in DIR with
#   CARGO_TARGET_DIR pointing at this worktree's target/ to reuse its deps).
#   PAIRED_CASES, PAIRED_ROUNDS, PAIRED_BLOCK pass through (benches/paired.rs).
set -euo pipefail
before=$1
after=$2
pairs=${3:-2}
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), load: $(cut -d' ' -f1-3 /proc/loadavg), nproc: $(nproc)"
for i in $(seq 1 "$pairs"); do
    echo "=== pair $i: before"
    "$before" --bench
    echo "=== pair $i: after"
    "$after" --bench
done
