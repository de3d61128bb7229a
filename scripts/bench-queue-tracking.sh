#!/usr/bin/env bash
# The cost of queue tracking on the decision path, per store (memory,
# SQLite, Redis): tracked and untracked shape decisions interleaved in one
# run (crates/drip/benches/queue_tracking.rs). Holds /work/bench.lock (when
# present) so no other benchmark overlaps, and prints `uptime` beside the
# figures. Rerun on a quiet machine for figures to publish.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -p drip --features sqlite,redis --bench queue_tracking --no-run -q
lock="${BENCH_LOCK:-/work/bench.lock}"
run() {
    echo "date: $(date -u +%FT%TZ)  host: $(uname -n)  cores: $(nproc)"
    echo "uptime before: $(uptime)"
    cargo bench -p drip --features sqlite,redis --bench queue_tracking -q
    echo "uptime after: $(uptime)"
}
if [ -e "$(dirname "$lock")" ] && command -v flock >/dev/null; then
    export -f run
    flock "$lock" bash -c run
else
    run
fi
