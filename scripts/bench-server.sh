#!/usr/bin/env bash
# Load-tests `drip serve` (memory store) beside its peers, in interleaved
# rounds so the machine's drifting load falls on both alike:
#   HTTP: POST /v1/buckets/x/allow under wrk, beside an axum hello-world
#         (crates/drip-server/examples/hello.rs) under the same wrk load;
#   gRPC: AllowRequest from the same small Rust load client
#         (examples/grpc_load.rs) against drip and against the smallest
#         tonic service answering the same messages (examples/grpc_hello.rs).
# Each round runs the four in turn (the order of each pair alternating from
# round to round) and prints req/s and p99; the summary gives each round's
# ratio drip/peer and the median over the rounds.
#
# Usage: scripts/bench-server.sh    (under `flock /work/bench.lock` on a
#   shared machine). From the environment: ROUNDS=3, THREADS=2,
#   CONNECTIONS=64, DURATION=10s (wrk), GRPC_CONCURRENCY=64,
#   GRPC_CONNECTIONS=4, DRIP=path/to/drip (another build to measure, e.g.
#   an older commit's), NO_BUILD=1, SERVE_ARGS (more `drip serve` flags,
#   e.g. "--store redis://127.0.0.1:6379" for the Redis store). Needs wrk (installed if missing and we
#   are root).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/http-bench.sh
. scripts/lib/http-bench.sh

ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-10s}
GRPC_CONCURRENCY=${GRPC_CONCURRENCY:-64}
GRPC_CONNECTIONS=${GRPC_CONNECTIONS:-4}
HTTP_PORT=${HTTP_PORT:-18080}
GRPC_PORT=${GRPC_PORT:-15051}
HELLO_PORT=${HELLO_PORT:-18090}
GRPC_HELLO_PORT=${GRPC_HELLO_PORT:-15061}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
DRIP=${DRIP:-$TARGET_DIR/release/drip}

if ! command -v wrk >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y wrk >/dev/null || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
    else
        echo "wrk is missing: apt-get install -y wrk" >&2
        exit 1
    fi
fi

echo "== machine"
echo "nproc: $(nproc)"
grep -m1 'model name' /proc/cpuinfo | sed 's/^model name[[:space:]]*: /cpu: /'
rustc --version
wrk --version 2>&1 | head -1 || true
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "uptime at start: $(uptime)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo none); drip binary: $DRIP"

if [ -z "${NO_BUILD:-}" ]; then
    echo
    echo "== build"
    cargo build --release -p drip-server --bin drip --example hello --example grpc_hello --example grpc_load
fi

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT


wait_tcp() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listening on port $1" >&2
    exit 1
}

# shellcheck disable=SC2086 # SERVE_ARGS is a list of flags
"$DRIP" serve --http "127.0.0.1:$HTTP_PORT" --grpc "127.0.0.1:$GRPC_PORT" ${SERVE_ARGS:-} 2>/dev/null &
DRIP_PID=$!
PIDS+=($!)
"$TARGET_DIR/release/examples/hello" "127.0.0.1:$HELLO_PORT" 2>/dev/null &
HELLO_PID=$!
PIDS+=($!)
"$TARGET_DIR/release/examples/grpc_hello" "127.0.0.1:$GRPC_HELLO_PORT" 2>/dev/null &
PIDS+=($!)
wait_http "http://127.0.0.1:$HTTP_PORT/healthz"
wait_http "http://127.0.0.1:$HELLO_PORT/"
wait_tcp "$GRPC_HELLO_PORT"
# Large enough that every request is admitted: the common path.
curl -fs -o /dev/null -X PUT "http://127.0.0.1:$HTTP_PORT/v1/buckets/x" \
    -d '{"capacity": 4294967295, "leak_rate": 1000000000}'

WRK=(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s scripts/bench-allow.lua)
# http_run PORT PID -> "req/s p99 µs-of-server-CPU-per-request".
http_run() {
    local rps p99 cpu
    read -r rps p99 cpu _ <<<"$(wrk_cpu "$2" "${WRK[@]}" "http://127.0.0.1:$1/v1/buckets/x/allow")"
    echo "$rps $p99 $cpu"
}
grpc_run() {
    local line
    line=$("$TARGET_DIR/release/examples/grpc_load" --addr "http://127.0.0.1:$1" --bucket x \
        --connections "$GRPC_CONNECTIONS" --concurrency "$GRPC_CONCURRENCY" --seconds "${DURATION%s}")
    awk '{for (i=1;i<=NF;i++) { if ($i=="req/s") r=$(i+1); if ($i=="p99") p=$(i+1) "ms" } } END {print r, p}' <<<"$line"
}

echo
echo "== rounds: wrk ${WRK[*]:1}; grpc_load --connections $GRPC_CONNECTIONS --concurrency $GRPC_CONCURRENCY"
printf '| %5s | %-34s | %10s | %9s |\n' round target req/s p99
printf '| %5s | %-34s | %10s | %9s |\n' ---: ---- ---: ---:
HTTP_RATIOS=()
CPU_RATIOS=()
GRPC_RATIOS=()
for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then
        read -r D_RPS D_P99 D_CPU <<<"$(http_run "$HTTP_PORT" "$DRIP_PID")"
        read -r H_RPS H_P99 H_CPU <<<"$(http_run "$HELLO_PORT" "$HELLO_PID")"
        read -r G_RPS G_P99 <<<"$(grpc_run "$GRPC_PORT")"
        read -r T_RPS T_P99 <<<"$(grpc_run "$GRPC_HELLO_PORT")"
    else
        read -r H_RPS H_P99 H_CPU <<<"$(http_run "$HELLO_PORT" "$HELLO_PID")"
        read -r D_RPS D_P99 D_CPU <<<"$(http_run "$HTTP_PORT" "$DRIP_PID")"
        read -r T_RPS T_P99 <<<"$(grpc_run "$GRPC_HELLO_PORT")"
        read -r G_RPS G_P99 <<<"$(grpc_run "$GRPC_PORT")"
    fi
    printf '| %5s | %-34s | %10s | %9s |\n' "$r" "drip HTTP POST /v1/buckets/x/allow" "$D_RPS" "$D_P99 (server CPU $D_CPU us/req)"
    printf '| %5s | %-34s | %10s | %9s |\n' "$r" "axum hello-world" "$H_RPS" "$H_P99 (server CPU $H_CPU us/req)"
    printf '| %5s | %-34s | %10s | %9s |\n' "$r" "drip gRPC AllowRequest" "$G_RPS" "$G_P99"
    printf '| %5s | %-34s | %10s | %9s |\n' "$r" "tonic AllowRequest hello" "$T_RPS" "$T_P99"
    HTTP_RATIOS+=("$(awk -v a="$D_RPS" -v b="$H_RPS" 'BEGIN { printf "%.2f", a / b }')")
    CPU_RATIOS+=("$(awk -v a="$D_CPU" -v b="$H_CPU" 'BEGIN { printf "%.2f", b / a }')")
    GRPC_RATIOS+=("$(awk -v a="$G_RPS" -v b="$T_RPS" 'BEGIN { printf "%.2f", a / b }')")
done

echo
echo "== summary"
echo "uptime at end: $(uptime)"
echo "HTTP drip/axum hello-world req/s by round: ${HTTP_RATIOS[*]}; median $(median "${HTTP_RATIOS[@]}")"
echo "HTTP server CPU per request, hello-world's/drip's (the req/s ratio a server with cores of its own would see) by round: ${CPU_RATIOS[*]}; median $(median "${CPU_RATIOS[@]}")"
echo "gRPC drip/tonic hello req/s by round: ${GRPC_RATIOS[*]}; median $(median "${GRPC_RATIOS[@]}")"
