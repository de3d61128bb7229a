#!/usr/bin/env bash
# Redis decisions/s: drip through RedisStore beside, in the same run and on
# the same redis-server, redis-benchmark running drip's own decide script by
# EVALSHA and redis-cell's CL.THROTTLE, at concurrency 1, 16 and 64.
#
#   drip      crates/drip/examples/redis_load.rs: N tokio tasks share ONE
#             RedisStore (one multiplexed connection; redis-rs pipelines the
#             tasks' calls), each looping decide(bucket, key, check(1)), on
#             tokio's current-thread runtime (redis-benchmark is one thread
#             too); also on a 2-worker multi-thread runtime.
#   EVALSHA   redis-benchmark -c N: N connections, one request in flight on
#             each, running drip's decide.lua with the arguments RedisStore
#             sends (the real decision, checked before timing).
#   CL.THROTTLE  redis-benchmark -c N with redis-cell 0.2.2 (--loadmodule),
#             built from crates.io's source into $CACHE each run.
#
# Every system uses 1000 keys picked at random per call (redis-benchmark
# -r 1000; drip the same twelve-digit names) and a huge rate (1,000,000/s,
# burst 1,000,000), so nearly every call is admitted and writes its key.
# Both are also run with redis-cell's README limit (CL.THROTTLE key 15 30 60 1:
# 30 per 60 s, a burst of 16; drip: --rate 30/60 --capacity 16), under which
# nearly every call is rejected (redis-cell then writes nothing; drip counts
# the rejection in the key). drip runs with its exact local deny cache on
# (redis_load's default, 65536 entries) and off (--deny-cache 0, every call a script call): with 1000
# keys the cache answers a key's refusals until its bound passes.
#
# Hot key (issue 19): ONE key under the README limit, so nearly every call
# is refused: drip with the deny cache (refusals answered on the node)
# beside the same node without it (its per-call Redis rate), and
# CL.THROTTLE on one key.
#
# Usage: scripts/bench-redis.sh
#   DURATION=3 (seconds per measurement), ROUNDS=3, CONCURRENCY="1 16 64",
#   PIPELINE=64 (an extra redis-benchmark row: one connection, -P PIPELINE;
#   0 to skip), SPIN_US=100 (an extra drip row at concurrency 1 with
#   RedisOptions::spin, which busy-polls a core; 0 to skip),
#   CACHE=target/bench-redis (where redis-cell is built).
# About 4 minutes after the builds. Rounds interleave the systems, so a
# neighbour's burst of load hits one round of each rather than one system;
# the summary gives the median round.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-3}
ROUNDS=${ROUNDS:-3}
CONCURRENCY=${CONCURRENCY:-"1 16 64"}
PIPELINE=${PIPELINE:-64}
SPIN_US=${SPIN_US:-100}
KEYS=1000
CACHE=${CACHE:-target/bench-redis}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)

for tool in redis-server redis-cli redis-benchmark python3; do
    command -v "$tool" >/dev/null || {
        echo "$tool is not installed (apt-get install -y redis-server redis-tools python3)" >&2
        exit 1
    }
done

echo "== machine"
echo "nproc: $(nproc)"
grep -m1 'model name' /proc/cpuinfo | sed 's/^model name[[:space:]]*: /cpu: /'
rustc --version
redis-server --version
echo "date: $(date)"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
if git rev-parse --short HEAD >/dev/null 2>&1; then
    dirty=$(git status --porcelain -- crates/drip/src | wc -l)
    echo "commit: $(git rev-parse --short HEAD) ($dirty uncommitted files under crates/drip/src)"
fi

echo
echo "== build: cargo build --release -p drip --features redis --example redis_load"
cargo build --release -p drip --features redis --example redis_load
LOAD=$TARGET_DIR/release/examples/redis_load

# redis-cell's source comes from crates.io through cargo (a throwaway project
# that depends on it), is copied into $CACHE and built there as a root
# package; nothing of it is kept in this repository.
build_redis_cell() {
    local dir=$CACHE/redis-cell
    mkdir -p "$dir/fetch/src"
    cat >"$dir/fetch/Cargo.toml" <<'EOF'
[package]
name = "fetch-redis-cell"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
redis-cell = "=0.2.2"

[workspace]
EOF
    : >"$dir/fetch/src/lib.rs"
    if [ ! -f "$dir/src/Cargo.toml" ]; then
        local manifest
        manifest=$(cd "$dir/fetch" && cargo metadata --format-version 1 | python3 -c '
import json, sys
m = json.load(sys.stdin)
print(next(p["manifest_path"] for p in m["packages"] if p["name"] == "redis-cell"))')
        rm -rf "$dir/src"
        cp -r "$(dirname "$manifest")" "$dir/src"
        chmod -R u+w "$dir/src"
        # Its own workspace root: it lives under this repository's target/.
        printf '\n[workspace]\n' >>"$dir/src/Cargo.toml"
    fi
    if ! (cd "$dir/src" && CARGO_TARGET_DIR="$dir/target" cargo build --release --lib) \
        >"$dir/build.log" 2>&1; then
        tail -20 "$dir/build.log" >&2
        return 1
    fi
    MODULE=$dir/target/release/libredis_cell.so
}

echo
echo "== build: redis-cell 0.2.2 (crates.io) into $CACHE/redis-cell"
MODULE=
if build_redis_cell; then
    echo "module: $MODULE"
else
    echo "redis-cell did not build (log: $CACHE/redis-cell/build.log); no CL.THROTTLE column" >&2
fi

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
WORK=$(mktemp -d)
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --dir "$WORK" ${MODULE:+--loadmodule "$MODULE"} >"$WORK/redis.log" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null; rm -rf "$WORK"' EXIT
cli() { redis-cli -h 127.0.0.1 -p "$PORT" "$@"; }
for _ in $(seq 100); do
    [ "$(cli PING 2>/dev/null)" = PONG ] && break
    sleep 0.1
done
[ "$(cli PING)" = PONG ] || { cat "$WORK/redis.log" >&2; exit 1; }
URL=redis://127.0.0.1:$PORT/

echo
echo "== setup: redis-server on port $PORT ($(cli INFO server | grep -m1 redis_version | tr -d '\r'))"
# drip configures the bucket; the script's arguments are the ones RedisStore sends.
read -r _ MODE A P CAP NWIN < <("$LOAD" "$URL" --configure-only | grep '^policy-args:')
POLICY_KEY='drip:{b:bench}:policy'
read -r VERSION GEN < <(cli HMGET "$POLICY_KEY" version gen | tr '\n' ' '; echo)
SHA=$(cli -x SCRIPT LOAD <crates/drip/src/store/redis/decide.lua)
[ "$SHA" = "$(sha1sum crates/drip/src/store/redis/decide.lua | cut -d' ' -f1)" ]
STATE_KEY="drip:{b:bench}:g$GEN:s:"
# ARGV: '' (numbers as text follow), version, now_us ('': Redis TIME), the
# policy, then per request cost and max_wait_ns (-1: check). One request per
# call, as RedisStore sends when one caller is waiting; RedisStore sends the
# same numbers packed as doubles in one argument.
EVAL=(EVALSHA "$SHA" 2 "$POLICY_KEY" "${STATE_KEY}__rand_int__" '' "$VERSION" ''
    "$MODE" "$A" "$P" "$CAP" "$NWIN" 1 -1)
echo "EVALSHA: ${EVAL[*]}"
# The reply is six little-endian doubles; the first is the outcome, 1.0
# (admitted) = 00 00 00 00 00 00 f0 3f.
reply=$(cli "${EVAL[@]/__rand_int__/000000000000}" | od -An -tx1 -N8 | tr -d ' \n')
[ "$reply" = 000000000000f03f ] ||
    { echo "EVALSHA check failed: outcome bytes '$reply', expected 1.0 (admitted)" >&2; exit 1; }
echo "check: the reply's outcome is 1 (admitted): drip's decision runs"
CELL=(CL.THROTTLE 'cell:__rand_int__' 1000000 1000000 1 1)
CELL_README=(CL.THROTTLE 'cellreadme:__rand_int__' 15 30 60 1)
if [ -n "$MODULE" ]; then
    echo "CL.THROTTLE: ${CELL[*]}   and   ${CELL_README[*]}"
    [ "$(cli "${CELL[@]/__rand_int__/check}" | head -1)" = 0 ] ||
        { echo "CL.THROTTLE check failed" >&2; exit 1; }
fi

RESULTS=$WORK/results
: >"$RESULTS"

# rb NAME C PIPE ARGS...: redis-benchmark for about $DURATION s (a short
# calibration run sizes -n); appends "round name c rps p50_us p99_us".
rb() {
    local name=$1 c=$2 pipe=$3
    shift 3
    local base=(redis-benchmark -h 127.0.0.1 -p "$PORT" -c "$c" -P "$pipe" -r "$KEYS" --csv)
    local cal rps n line try
    for try in 1 2 3; do
        cal=$("${base[@]}" -n $((1000 * c * pipe < 20000 ? 20000 : 1000 * c * pipe)) "$@" |
            tail -1) || true
        rps=$(echo "$cal" | awk -F'","' '{print int($2)}')
        n=$((${rps:-0} * DURATION))
        line=$("${base[@]}" -n "$n" "$@" | tail -1) && [ "$n" -gt 0 ] && break
        echo "redis-benchmark failed (try $try): $cal / $line" >&2
        line=
    done
    [ -n "$line" ] || return 0
    echo "$line" | awk -F'","' -v r="$round" -v name="$name" -v c="$c" \
        '{printf "%s %s %s %s %.0f %.0f\n", r, name, c, $2, $5 * 1000, $7 * 1000}' >>"$RESULTS"
    tail -1 "$RESULTS"
}

# record NAME C LINE: appends a redis_load result line to $RESULTS (with
# the share of calls refused).
record() {
    echo "$3" | sed -E 's/.*decisions_per_s=([0-9.]+).*admitted=([0-9]+) limited=([0-9]+).*p50_us=([0-9.]+) p99_us=([0-9.]+).*/\1 \4 \5 \2 \3/' |
        awk -v r="$round" -v name="$1" -v c="$2" \
            '{printf "%s %s %s %s %.1f %.0f %.4f\n", r, name, c, $1, $2, $3, $5 / ($4 + $5 + 1e-9)}' >>"$RESULTS"
}

echo
echo "== runs: $ROUNDS rounds x concurrency ($CONCURRENCY) x $DURATION s"
for round in $(seq "$ROUNDS"); do
    for c in $CONCURRENCY; do
        echo "-- round $round, concurrency $c (load $(cut -d' ' -f1 /proc/loadavg))"
        out=$("$LOAD" "$URL" --concurrency "$c" --seconds "$DURATION" --keys "$KEYS" | grep '^drip ')
        echo "$out"
        record drip "$c" "$out"
        out=$("$LOAD" "$URL" --concurrency "$c" --seconds "$DURATION" --keys "$KEYS" \
            --threads 2 | grep '^drip ')
        echo "$out"
        record drip_mt "$c" "$out"
        if [ "$c" = 1 ] && [ "$SPIN_US" -gt 0 ]; then
            out=$("$LOAD" "$URL" --concurrency 1 --seconds "$DURATION" --keys "$KEYS" \
                --spin-us "$SPIN_US" | grep '^drip ')
            echo "$out (spin $SPIN_US us)"
            record drip_spin 1 "$out"
        fi
        rb evalsha "$c" 1 "${EVAL[@]}"
        [ -z "$MODULE" ] || rb cell "$c" 1 "${CELL[@]}"
        out=$("$LOAD" "$URL" --bucket bench-readme --rate 30/60 --capacity 16 \
            --concurrency "$c" --seconds "$DURATION" --keys "$KEYS" | grep '^drip ')
        echo "$out (README limit)"
        record drip_readme "$c" "$out"
        [ -z "$MODULE" ] || rb cell_readme "$c" 1 "${CELL_README[@]}"
        out=$("$LOAD" "$URL" --bucket bench-readme --rate 30/60 --capacity 16 \
            --concurrency "$c" --seconds "$DURATION" --keys "$KEYS" --deny-cache 0 | grep '^drip ')
        echo "$out (README limit, deny cache off)"
        record drip_readme_nocache "$c" "$out"
        # One hot key: the deny cache on, then off, then CL.THROTTLE.
        out=$("$LOAD" "$URL" --bucket bench-hot --rate 30/60 --capacity 16 \
            --concurrency "$c" --seconds "$DURATION" --keys 1 | grep '^drip ')
        echo "$out (hot key, deny cache on)"
        record drip_hot "$c" "$out"
        out=$("$LOAD" "$URL" --bucket bench-hot --rate 30/60 --capacity 16 \
            --concurrency "$c" --seconds "$DURATION" --keys 1 --deny-cache 0 | grep '^drip ')
        echo "$out (hot key, deny cache off)"
        record drip_hot_nocache "$c" "$out"
        [ -z "$MODULE" ] || rb cell_hot "$c" 1 CL.THROTTLE cellhot:one 15 30 60 1
    done
    if [ "$PIPELINE" -gt 0 ]; then
        echo "-- round $round, one connection, -P $PIPELINE"
        rb evalsha_p 1 "$PIPELINE" "${EVAL[@]}"
        [ -z "$MODULE" ] || rb cell_p 1 "$PIPELINE" "${CELL[@]}"
    fi
done

echo
echo "== server-side time per call (INFO commandstats, all rounds)"
cli INFO commandstats | grep -E 'cmdstat_(evalsha|cl\.throttle|get|set|hget|time):' |
    tr -d '\r'
# drip's script decides several requests per call (one GET each): its time
# per decision is its total time over the GETs.
cli INFO commandstats | tr -d '\r' | awk -F'[:,=]' '
    /^cmdstat_evalsha:/ { us = $5 } /^cmdstat_get:/ { n = $3 }
    END { if (n) printf "drip script: %.2f us per decision (%d decisions)\n", us / n, n }'

echo
echo "== summary: decisions/s, median of $ROUNDS rounds (each round's figure in brackets); p99 in µs (median)"
python3 - "$RESULTS" "$PIPELINE" "$SPIN_US" <<'EOF'
import sys
from collections import defaultdict

runs = defaultdict(list)
p50s = defaultdict(list)
refused = defaultdict(list)
for line in open(sys.argv[1]):
    _, name, c, rps, p50, p99, *rest = line.split()
    runs[(name, int(c))].append((float(rps), float(p99)))
    p50s[(name, int(c))].append(float(p50))
    if rest:
        refused[(name, int(c))].append(float(rest[0]))

from statistics import median

def cell(name, c):
    rs = runs.get((name, c))
    if not rs:
        return "-"
    each = "/".join(f"{r / 1000:.1f}k" for r, _ in rs)
    p99 = median(p for _, p in rs)
    return f"{median(r for r, _ in rs):,.0f} [{each}] p99 {p99:.1f}"

def mean(name, c):
    rs = runs.get((name, c))
    return median(r for r, _ in rs) if rs else None

def ratio(a, b, c):
    x, y = mean(a, c), mean(b, c)
    return f"{x / y:.2f}" if x and y else "-"

cs = sorted({c for (n, c) in runs if n == "drip"})
print("Nearly all admitted (1,000,000/s, burst 1,000,000):")
print("| concurrency | drip RedisStore (1 conn) | drip, 2-thread runtime"
      " | redis-benchmark EVALSHA drip's script | redis-benchmark CL.THROTTLE"
      " | drip / CL.THROTTLE |")
print("|---|---|---|---|---|---|")
for c in cs:
    print(f"| {c} | {cell('drip', c)} | {cell('drip_mt', c)} | {cell('evalsha', c)}"
          f" | {cell('cell', c)} | {ratio('drip', 'cell', c)} |")
p = sys.argv[2]
if ("drip_spin", 1) in runs:
    print(f"| 1, RedisOptions::spin {sys.argv[3]} us (a busy client core) | {cell('drip_spin', 1)}"
          f" | - | - | {cell('cell', 1)} | {ratio('drip_spin', 'cell', 1)} |")
if ("evalsha_p", 1) in runs:
    print(f"| 1 conn, -P {p} | - | - | {cell('evalsha_p', 1)} | {cell('cell_p', 1)} | - |")
print()
def p50(name, c):
    v = p50s.get((name, c))
    return median(v) if v else None

print()
print("Lone caller latency, p50 in µs (median of rounds):")
print("| | drip (deny cache on) | CL.THROTTLE | drip / CL.THROTTLE |")
print("|---|---|---|---|")
for a, b, what in [("drip", "cell", "admitting"), ("drip_readme", "cell_readme", "rejecting, 1000 keys"),
                   ("drip_readme_nocache", "cell_readme", "rejecting, deny cache off")]:
    x, y = p50(a, 1), p50(b, 1)
    if x and y:
        print(f"| {what} | {x:.1f} | {y:.1f} | {x / y:.2f} |")
print()
print("Nearly all rejected (redis-cell's README limit: 30 per 60 s, burst 16), 1000 keys:")
print("| concurrency | drip RedisStore (deny cache on) | drip, deny cache off"
      " | redis-benchmark CL.THROTTLE 15 30 60 1"
      " | drip / CL.THROTTLE | drip (cache off) / CL.THROTTLE |")
print("|---|---|---|---|---|---|")
for c in cs:
    print(f"| {c} | {cell('drip_readme', c)} | {cell('drip_readme_nocache', c)}"
          f" | {cell('cell_readme', c)}"
          f" | {ratio('drip_readme', 'cell_readme', c)}"
          f" | {ratio('drip_readme_nocache', 'cell_readme', c)} |")
print()
print("Hot key: ONE key under the README limit (share refused in brackets):")
print("| concurrency | drip, deny cache on | drip, deny cache off (per-call Redis rate)"
      " | CL.THROTTLE on one key | cache on / off | cache on / CL.THROTTLE |")
print("|---|---|---|---|---|---|")
def share(name, c):
    v = refused.get((name, c))
    return f" ({median(v) * 100:.1f}% refused)" if v else ""
for c in cs:
    print(f"| {c} | {cell('drip_hot', c)}{share('drip_hot', c)}"
          f" | {cell('drip_hot_nocache', c)}{share('drip_hot_nocache', c)}"
          f" | {cell('cell_hot', c)} | {ratio('drip_hot', 'drip_hot_nocache', c)}"
          f" | {ratio('drip_hot', 'cell_hot', c)} |")
EOF
