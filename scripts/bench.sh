#!/usr/bin/env bash
# Runs drip's benchmarks beside governor (criterion, crates/drip/benches/check.rs),
# the heap-bytes-per-key measurement (crates/drip/benches/memory.rs) and the
# SQLite store's decisions/s (crates/drip/benches/sqlite.rs), then prints a
# summary of the criterion results with the ratio drip/governor per group.
#
# Usage: scripts/bench.sh [criterion filter...]
#   MEASURE=3 WARMUP=1 (seconds per criterion benchmark), ROUNDS=3 (runs of
#   the whole check bench; the summary gives each function's median round)
#   and SQLITE_SECS=3 can be changed from the environment. One round takes
#   about 5 minutes on 2 cores (MEASURE=2: 4), after the build.
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

ROUNDS=${ROUNDS:-3}
ROUND_DIR=$(mktemp -d)
trap 'rm -rf "$ROUND_DIR"' EXIT

# Collects the criterion estimates written since the stamp file $1 into $2.
collect() {
    python3 - "$TARGET_DIR/criterion" "$1" "$2" <<'EOF'
import json, os, sys
root, stamp, out = sys.argv[1], sys.argv[2], sys.argv[3]
since = os.path.getmtime(stamp)
rows = []
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
    rows.append([meta["group_id"], meta["function_id"], e["point_estimate"]])
json.dump(rows, open(out, "w"))
EOF
}

# Rounds: the machine's load moves a figure by up to 1.5x between runs of
# one function, so each round runs every function once and the summary
# gives each function's median round (and every round).
for round in $(seq "$ROUNDS"); do
    stamp="$ROUND_DIR/stamp"
    touch "$stamp"
    sleep 1
    echo
    echo "== check, round $round/$ROUNDS: cargo bench -p drip --bench check -- --measurement-time $MEASURE --warm-up-time $WARMUP $*"
    cargo bench -p drip --bench check -- --noplot \
        --measurement-time "$MEASURE" --warm-up-time "$WARMUP" "$@"
    collect "$stamp" "$ROUND_DIR/round$round.json"
done

echo
echo "== memory: cargo bench -p drip --bench memory"
cargo bench -p drip --bench memory

# SQLite store: decisions/s from 1 and 4 processes on one file (its own
# table; not part of the criterion summary below). SQLITE_SECS per case.
echo
echo "== sqlite: DRIP_BENCH_SECS=${SQLITE_SECS:-3} cargo bench -p drip --features sqlite --bench sqlite"
DRIP_BENCH_SECS=${SQLITE_SECS:-3} cargo bench -p drip --features sqlite --bench sqlite

echo
echo "== summary: criterion's estimate (slope of the linear fit, else the mean), median of $ROUNDS rounds [each round]"
python3 - "$ROUND_DIR" <<'EOF'
import glob, json, os, sys
from collections import defaultdict
from statistics import median

groups = defaultdict(lambda: defaultdict(list))
for path in sorted(glob.glob(os.path.join(sys.argv[1], "round*.json"))):
    for group, fn, t in json.load(open(path)):
        groups[group][fn].append(t)

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
    fns = {name: (median(ts), ts) for name, ts in groups[group].items()}
    print(f"\n{group}")
    print(f"  {'function':<28} {'median':>10}   {'rounds':<27} {'drip/governor':>14}")
    for name in sorted(fns, key=lambda n: (not n.startswith("drip"), n)):
        t, ts = fns[name]
        each = "/".join(f"{x:.1f}" for x in ts)
        ratio = ""
        if name.startswith("drip_"):
            b = baseline(fns, name)
            if b:
                ratio = f"{t / fns[b][0]:.2f}x vs {b}"
        print(f"  {name:<28} {t:7.2f} ns   [{each:<25}] {ratio}")
EOF
