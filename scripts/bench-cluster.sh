#!/usr/bin/env bash
# Cluster throughput: total decisions/s of 1, 2 and 3 `drip serve` nodes on
# one redis-server, beside that Redis's EVALSHA ceiling for drip's decide
# script (redis-benchmark, same run), with p99 latency; then an exactness
# check at every size (300 concurrent allows on a capacity-100 bucket that
# leaks 1 a day must admit exactly 100).
#
# Each round measures every subject in turn (EVALSHA, 1, 2, 3 nodes), so a
# machine that is busy for a while slows all of them alike; ROUNDS rounds,
# the median is reported. On a shared machine, read the ratios, not the
# absolute figures.
#
# Usage: scripts/bench-cluster.sh
#   ROUNDS=3 DURATION=5s CONNECTIONS=64 (wrk, split over the nodes; one wrk
#   process per node, all at once) EVAL_CLIENTS=64 (redis-benchmark -c).
#   Needs redis-server, redis-cli, redis-benchmark, wrk, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/http-bench.sh
. scripts/lib/http-bench.sh

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-64}
EVAL_CLIENTS=${EVAL_CLIENTS:-64}
REDIS_PORT=${REDIS_PORT:-16390}
BASE_PORT=${BASE_PORT:-18180}
TARGET_DIR=${CARGO_TARGET_DIR:-target}

for tool in redis-server redis-cli redis-benchmark wrk curl; do
    command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install -y redis-server redis-tools wrk curl)" >&2; exit 1; }
done

echo "== machine"
echo "nproc: $(nproc)"
grep -m1 'model name' /proc/cpuinfo | sed 's/^model name[[:space:]]*: /cpu: /'
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo none)"

echo
echo "== build"
cargo build --release -p drip-server --bin drip
DRIP=$TARGET_DIR/release/drip

WORK=$(mktemp -d)
PIDS=()
REDIS=
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -n "$REDIS" ] && kill "$REDIS" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$WORK" >"$WORK/redis.log" 2>&1 &
REDIS=$!
cli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
for _ in $(seq 100); do [ "$(cli PING 2>/dev/null)" = PONG ] && break; sleep 0.1; done
URL=redis://127.0.0.1:$REDIS_PORT/

# start_nodes N: N nodes on the Redis; their HTTP ports in NODES.
NODES=()
start_nodes() {
    stop_nodes
    for i in $(seq 0 $(($1 - 1))); do
        local port=$((BASE_PORT + i))
        "$DRIP" serve --http "127.0.0.1:$port" --grpc "127.0.0.1:$((BASE_PORT + 100 + i))" \
            --store "$URL" --node-id "bench-$i" 2>>"$WORK/nodes.log" &
        PIDS+=($!)
        NODES+=("$port")
    done
    for port in "${NODES[@]}"; do wait_http "http://127.0.0.1:$port/healthz"; done
}
stop_nodes() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
    NODES=()
}

start_nodes 1
# Every request admitted: the common path.
curl -fs -o /dev/null -X PUT "http://127.0.0.1:${NODES[0]}/v1/buckets/x" \
    -d '{"capacity": 4294967295, "leak_rate": 1000000}'
# The same decision by redis-benchmark: drip's script, text arguments.
read -r VERSION GEN TEXT < <(cli HMGET 'drip:{b:x}:policy' version gen text | tr '\n' ' '; echo)
read -r A P < <(echo "$TEXT" | sed -E 's/.*rate=([0-9]+)\/([0-9]+).*/\1 \2/')
CAP=$(echo "$TEXT" | sed -E 's/.*capacity=([0-9]+).*/\1/')
SHA=$(cli -x SCRIPT LOAD <crates/drip/src/store/redis/decide.lua)
EVAL=(EVALSHA "$SHA" 2 'drip:{b:x}:policy' "drip:{b:x}:g$GEN:s:k" '' "$VERSION" '' police "$A" "$P" "$CAP" 0 1 -1)

RESULTS=$WORK/results
: >"$RESULTS"

# wrk_nodes ROUND: one wrk per node at once, CONNECTIONS split over them;
# appends "round nodes rps p99_ms".
wrk_nodes() {
    local n=${#NODES[@]} c=$((CONNECTIONS / ${#NODES[@]})) i wrks=()
    for i in "${!NODES[@]}"; do
        wrk -t1 -c"$c" -d"$DURATION" --latency -s scripts/bench-allow.lua \
            "http://127.0.0.1:${NODES[$i]}/v1/buckets/x/allow" >"$WORK/wrk.$i" &
        wrks+=($!)
    done
    for p in "${wrks[@]}"; do wait "$p"; done
    awk -v r="$1" -v n="$n" '
        /^Requests\/sec:/ { rps += $2 }
        $1 == "99%" { v = $2; ms = v + 0; if (v ~ /us$/) ms /= 1000; else if (v ~ /s$/ && v !~ /ms$/) ms *= 1000; if (ms > p99) p99 = ms }
        END { printf "%s %s %.0f %.2f\n", r, n, rps, p99 }' "$WORK"/wrk.* >>"$RESULTS"
    rm -f "$WORK"/wrk.*
}

# exact N: 300 concurrent allows spread over the nodes on a fresh
# capacity-100 bucket; prints how many were admitted.
exact() {
    local b="exact$1_$2"
    curl -fs -o /dev/null -X PUT "http://127.0.0.1:${NODES[0]}/v1/buckets/$b" -d '{"capacity": 100, "leak_rate": 0.00002}'
    seq 0 299 | xargs -P 64 -I{} sh -c 'port=$(( '"$BASE_PORT"' + {} % '"$1"' )); curl -s -o /dev/null -w "%{http_code}\n" -X POST http://127.0.0.1:$port/v1/buckets/'"$b"'/allow' |
        grep -c '^200$' || true
}

EXACT=()
for round in $(seq 1 "$ROUNDS"); do
    echo
    echo "== round $round/$ROUNDS"
    secs=${DURATION%s}
    line=$(redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -c "$EVAL_CLIENTS" -n $((secs * 60000)) --csv "${EVAL[@]}" | tail -1)
    echo "$line" | awk -F'","' -v r="$round" '{gsub(/"/, "", $0); split($0, f, ","); printf "%s 0 %.0f %.2f\n", r, f[2], f[7]}' >>"$RESULTS"
    tail -1 "$RESULTS"
    for n in 1 2 3; do
        start_nodes "$n"
        wrk_nodes "$round"
        admitted=$(exact "$n" "$round")
        EXACT+=("$n:$admitted")
        tail -1 "$RESULTS"
        echo "exactness, $n node(s): $admitted of 300 admitted (capacity 100)"
    done
    stop_nodes
done

echo
echo "== results (median of $ROUNDS rounds; p99 in ms; rows are 'round nodes decisions/s p99_ms', 0 nodes = redis-benchmark EVALSHA)"
cat "$RESULTS"
printf '| %-28s | %12s | %8s | %10s |\n' subject "decisions/s" p99_ms "x ceiling"
ceiling=$(awk '$2 == 0 {print $3}' "$RESULTS" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
for n in 0 1 2 3; do
    rps=$(awk -v n="$n" '$2 == n {print $3}' "$RESULTS" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    p99=$(awk -v n="$n" '$2 == n {print $4}' "$RESULTS" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    name=$([ "$n" = 0 ] && echo "EVALSHA ceiling (-c $EVAL_CLIENTS)" || echo "$n node(s), wrk -c $CONNECTIONS")
    printf '| %-28s | %12s | %8s | %10.2f |\n' "$name" "$rps" "$p99" "$(echo "$rps $ceiling" | awk '{print $1 / $2}')"
done
echo "exactness (nodes:admitted of 300, capacity 100): ${EXACT[*]}"
for e in "${EXACT[@]}"; do [ "${e#*:}" = 100 ] || { echo "NOT EXACT: $e" >&2; exit 1; }; done
