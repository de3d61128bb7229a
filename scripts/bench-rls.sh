#!/usr/bin/env bash
# Envoy's ShouldRateLimit through drip beside drip's own AllowRequest, in the
# same run, on the same `drip serve`, with the same Rust load client
# (`drip stress --grpc`, and `--rls` for ShouldRateLimit), rounds
# interleaved (allow, rls, allow, rls...) so a busy machine hurts both
# alike. Once on the memory store, once on Redis (a redis-server on a free
# port, started here).
#
#   scripts/bench-rls.sh [CONCURRENCY=32] [SECONDS=5] [ROUNDS=3]
#
# Both admit everything (the measure is the decision path, not refusals):
# AllowRequest on a bucket of capacity 4e9 leaking 1e15/s; ShouldRateLimit
# on one descriptor (key, k) of a rule of 4e9 per second (a rolling window,
# approximate above 1024 per unit, beside its bucket: see docs/rls.md). One
# key for both. Prints each round, then the median round's calls/s and p99 and the
# ratio rls/allow.
#
# Needs redis-server and python3; builds drip in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
C=${1:-32}
D=${2:-5}
ROUNDS=${3:-3}
for tool in redis-server redis-cli python3 curl; do
    command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done

cargo build --release -q -p drip-server
DRIP=${CARGO_TARGET_DIR:-target}/release/drip
# shellcheck source=scripts/lib/procs.sh
. scripts/lib/procs.sh

cat >"$WORK/rls.yaml" <<'YAML'
domain: bench
descriptors:
  - key: key
    rate_limit:
      unit: second
      requests_per_unit: 4000000000
YAML

echo "== machine"
echo "nproc: $(nproc)"
grep -m1 'model name' /proc/cpuinfo | sed 's/^model name[[:space:]]*: /cpu: /'
echo "date: $(date -u +%FT%TZ)"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
git rev-parse --short HEAD 2>/dev/null | sed 's/^/commit: /' || true

# Starts `drip serve` with the RLS config on `$1` (a --store value), sets
# GRPC and HTTP to its addresses.
serve() {
    local log="$WORK/serve-$RANDOM.log"
    "$DRIP" serve --http 127.0.0.1:0 --grpc 127.0.0.1:0 --store "$1" \
        --rls-config "$WORK/rls.yaml" 2>"$log" &
    PIDS+=($!)
    for _ in $(seq 200); do
        grep -q "gRPC listening" "$log" && break
        sleep 0.05
    done
    HTTP=$(sed -n 's/.*HTTP listening on http:\/\/\([0-9.:]*\).*/\1/p' "$log")
    GRPC=$(sed -n 's/.*gRPC listening on \([0-9.:]*\).*/\1/p' "$log")
    [ -n "$HTTP" ] && [ -n "$GRPC" ] || { echo "drip serve did not start" >&2; cat "$log" >&2; exit 1; }
    curl -sf -X PUT "http://$HTTP/v1/buckets/bench" \
        -d '{"capacity": 4000000000, "leak_rate": 1e15}' >/dev/null
}

# One run of `drip stress`: prints "calls/s p50_ms p99_ms admitted errors".
stress() {
    "$DRIP" stress --grpc "$@" --url "http://$GRPC" --bucket bench --key k \
        --concurrency "$C" --duration "${D}s" --json |
        python3 -c '
import json, sys
r = json.load(sys.stdin); l = r["latency"]
print("%.1f %.3f %.3f %d %d" % (r["throughput_rps"], l["p50_ms"], l["p99_ms"], r["admitted"], r["errors"]))'
}

# On Redis ($REDIS_PORT set): Redis' own time per script call in the run
# (`INFO commandstats`), reset before each run.
resetstat() { [ -z "${REDIS_PORT:-}" ] || redis-cli -p "$REDIS_PORT" config resetstat >/dev/null; }
scriptstat() {
    [ -z "${REDIS_PORT:-}" ] && return
    redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r' |
        sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),usec=[0-9]*,usec_per_call=\([0-9.]*\).*/evalsha: \1 calls, \2 us each/p'
}

median() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

bench() {
    local store=$1
    echo
    echo "== $store: concurrency $C, ${D}s a run, $ROUNDS rounds"
    printf "%-6s %-16s %10s %9s %9s %10s %7s\n" round call calls/s p50_ms p99_ms admitted errors
    : >"$WORK/allow" && : >"$WORK/rls"
    for r in $(seq "$ROUNDS"); do
        resetstat
        read -r rps p50 p99 adm err < <(stress)
        printf "%-6s %-16s %10.0f %9s %9s %10s %7s %s\n" "$r" AllowRequest "$rps" "$p50" "$p99" "$adm" "$err" "$(scriptstat)"
        echo "$rps $p99" >>"$WORK/allow"
        resetstat
        read -r rps p50 p99 adm err < <(stress --rls)
        printf "%-6s %-16s %10.0f %9s %9s %10s %7s %s\n" "$r" ShouldRateLimit "$rps" "$p50" "$p99" "$adm" "$err" "$(scriptstat)"
        echo "$rps $p99" >>"$WORK/rls"
    done
    local ar ap rr rp
    ar=$(cut -d' ' -f1 "$WORK/allow" | median)
    ap=$(cut -d' ' -f2 "$WORK/allow" | median)
    rr=$(cut -d' ' -f1 "$WORK/rls" | median)
    rp=$(cut -d' ' -f2 "$WORK/rls" | median)
    python3 -c "print('median: AllowRequest %.0f/s p99 %.3f ms; ShouldRateLimit %.0f/s p99 %.3f ms; rls/allow calls/s %.2fx, p99 %.2fx' % ($ar, $ap, $rr, $rp, $rr / $ar, $rp / $ap))"
}

serve memory
bench memory

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
    redis-cli -p "$PORT" ping >/dev/null 2>&1 && break
    sleep 0.05
done
serve "redis://127.0.0.1:$PORT"
REDIS_PORT=$PORT
bench "redis (redis-server $(redis-server --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p'))"
