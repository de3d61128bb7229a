#!/usr/bin/env bash
# Runs drip's benchmarks beside governor (criterion, crates/drip/benches/check.rs),
# the heap-bytes-per-key measurement (crates/drip/benches/memory.rs) and the
# SQLite store's decisions/s (crates/drip/benches/sqlite.rs), then prints a
# summary of the criterion results with the ratio drip/governor per group.
#
# Usage: scripts/bench.sh [criterion filter...]
#   MEASURE=3 WARMUP=1 (seconds per criterion benchmark) and SQLITE_SECS=3
#   can be changed from the environment. The whole run takes about 4-5
#   minutes on 2 cores, after the build.
set -euo pipefail
cd "$(dirname "$0")/.."

MEASURE=${MEASURE:-3}
WARMUP=${WARMUP:-1}
TARGET_DIR=${CARGO_TARGET_DIR:-target}

echo "== machine"
echo "nproc: $(nproc)"
grep -m1 'model name' /proc/cpuinfo | sed 's/^model name[[:space:]]*: /cpu: /'
rustc --version
echo "date: $(date)"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
if git rev-parse --short HEAD >/dev/null 2>&1; then
    dirty=$(git status --porcelain -- crates/drip/src | wc -l)
    echo "commit: $(git rev-parse --short HEAD) ($dirty uncommitted files under crates/drip/src)"
fi

echo
echo "== build"
cargo bench -p drip --no-run --bench check --bench memory

# Results of this run only (older criterion results stay in the directory).
STAMP=$(mktemp)
trap 'rm -f "$STAMP"' EXIT

echo
echo "== check: cargo bench -p drip --bench check -- --measurement-time $MEASURE --warm-up-time $WARMUP $*"
cargo bench -p drip --bench check -- --noplot \
    --measurement-time "$MEASURE" --warm-up-time "$WARMUP" "$@"

echo
echo "== memory: cargo bench -p drip --bench memory"
cargo bench -p drip --bench memory

# SQLite store: decisions/s from 1 and 4 processes on one file (its own
# table; not part of the criterion summary below). SQLITE_SECS per case.
echo
echo "== sqlite: DRIP_BENCH_SECS=${SQLITE_SECS:-3} cargo bench -p drip --features sqlite --bench sqlite"
DRIP_BENCH_SECS=${SQLITE_SECS:-3} cargo bench -p drip --features sqlite --bench sqlite

echo
echo "== summary (criterion's estimate: slope of the linear fit, else the mean; 95% CI)"
python3 - "$TARGET_DIR/criterion" "$STAMP" <<'EOF'
import json, os, sys
from collections import defaultdict

root = sys.argv[1]
since = os.path.getmtime(sys.argv[2])
groups = defaultdict(dict)
for dirpath, _, files in os.walk(root):
    if os.path.basename(dirpath) != "new" or "benchmark.json" not in files:
        continue
    if os.path.getmtime(os.path.join(dirpath, "estimates.json")) < since:
        continue
    with open(os.path.join(dirpath, "benchmark.json")) as f:
        meta = json.load(f)
    with open(os.path.join(dirpath, "estimates.json")) as f:
        est = json.load(f)
    e = est.get("slope") or est["mean"]
    ci = e["confidence_interval"]
    groups[meta["group_id"]][meta["function_id"]] = (
        e["point_estimate"], ci["lower_bound"], ci["upper_bound"])

def baseline(fns, name):
    """The governor function a drip function is compared with: its twin by
    name, else governor's one keyed function on the same clock (frozen or
    not)."""
    twin = "governor_" + name[len("drip_"):]
    if twin in fns:
        return twin
    frozen = name.endswith("_frozen")
    gov = [f for f in fns if f.startswith("governor_")
           and f.endswith("_frozen") == frozen and f != "governor_direct"]
    return gov[0] if len(gov) == 1 else None

for group in sorted(groups):
    fns = groups[group]
    print(f"\n{group}")
    print(f"  {'function':<28} {'time':>10}   {'95% CI':<21} {'drip/governor':>14}")
    for name in sorted(fns, key=lambda n: (not n.startswith("drip"), n)):
        t, lo, hi = fns[name]
        ratio = ""
        if name.startswith("drip_"):
            b = baseline(fns, name)
            if b:
                ratio = f"{t / fns[b][0]:.2f}x vs {b}"
        print(f"  {name:<28} {t:8.2f} ns   [{lo:7.2f}, {hi:7.2f}]   {ratio}")
EOF
