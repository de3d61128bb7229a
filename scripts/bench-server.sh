#!/usr/bin/env bash
# Load-tests `drip serve` (memory store) beside an axum hello-world built in
# the same run, with the same wrk settings, then the gRPC AllowRequest path
# with a small Rust load client (crates/drip-server/examples/grpc_load.rs).
# Prints req/s and p99 latency for each and the ratio drip/hello-world.
#
# Usage: scripts/bench-server.sh
#   THREADS=2 CONNECTIONS=64 DURATION=10s (wrk), GRPC_CONCURRENCY=64,
#   GRPC_CONNECTIONS=4 can be changed from the environment. Needs wrk
#   (apt-get install -y wrk; installed here if missing and we are root).
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-10s}
GRPC_CONCURRENCY=${GRPC_CONCURRENCY:-64}
GRPC_CONNECTIONS=${GRPC_CONNECTIONS:-4}
HTTP_PORT=${HTTP_PORT:-18080}
GRPC_PORT=${GRPC_PORT:-15051}
HELLO_PORT=${HELLO_PORT:-18090}
TARGET_DIR=${CARGO_TARGET_DIR:-target}

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
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo none)"

echo
echo "== build"
cargo build --release -p drip-server --bin drip --example hello --example grpc_load

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_http() {
    for _ in $(seq 1 200); do
        curl -fs -o /dev/null "$1" && return 0
        sleep 0.05
    done
    echo "no answer from $1" >&2
    exit 1
}

# wrk output -> "req/s p99"
summarize() {
    local rps p99
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$1")
    p99=$(awk '$1 == "99%" {print $2}' "$1")
    echo "$rps $p99"
}

WRK=(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s scripts/bench-allow.lua)

echo
echo "== drip serve (memory store): ${WRK[*]} http://127.0.0.1:$HTTP_PORT/v1/buckets/x/allow"
"$TARGET_DIR/release/drip" serve --http "127.0.0.1:$HTTP_PORT" --grpc "127.0.0.1:$GRPC_PORT" 2>/dev/null &
PIDS+=($!)
wait_http "http://127.0.0.1:$HTTP_PORT/healthz"
# Large enough that every request is admitted: the common path.
curl -fs -o /dev/null -X PUT "http://127.0.0.1:$HTTP_PORT/v1/buckets/x" \
    -d '{"capacity": 4294967295, "leak_rate": 1000000000}'
DRIP_OUT=$(mktemp)
"${WRK[@]}" "http://127.0.0.1:$HTTP_PORT/v1/buckets/x/allow" | tee "$DRIP_OUT"

echo
echo "== axum hello-world: ${WRK[*]} http://127.0.0.1:$HELLO_PORT/v1/buckets/x/allow"
"$TARGET_DIR/release/examples/hello" "127.0.0.1:$HELLO_PORT" 2>/dev/null &
PIDS+=($!)
wait_http "http://127.0.0.1:$HELLO_PORT/"
HELLO_OUT=$(mktemp)
"${WRK[@]}" "http://127.0.0.1:$HELLO_PORT/v1/buckets/x/allow" | tee "$HELLO_OUT"

echo
GRPC_CMD=("$TARGET_DIR/release/examples/grpc_load" --addr "http://127.0.0.1:$GRPC_PORT" --bucket x
    --connections "$GRPC_CONNECTIONS" --concurrency "$GRPC_CONCURRENCY" --seconds "${DURATION%s}")
echo "== gRPC AllowRequest: ${GRPC_CMD[*]}"
GRPC_LINE=$("${GRPC_CMD[@]}")
echo "$GRPC_LINE"

read -r DRIP_RPS DRIP_P99 <<<"$(summarize "$DRIP_OUT")"
read -r HELLO_RPS HELLO_P99 <<<"$(summarize "$HELLO_OUT")"
GRPC_RPS=$(awk '{for (i=1;i<=NF;i++) if ($i=="req/s") print $(i+1)}' <<<"$GRPC_LINE")
GRPC_P99=$(awk '{for (i=1;i<=NF;i++) if ($i=="p99") print $(i+1) "ms"}' <<<"$GRPC_LINE")
NON2XX=$(awk '/Non-2xx/ {print $NF}' "$DRIP_OUT")
rm -f "$DRIP_OUT" "$HELLO_OUT"

echo
echo "== summary"
printf '| %-40s | %10s | %9s |\n' "target" "req/s" "p99"
printf '| %-40s | %10s | %9s |\n' "----" "---:" "---:"
printf '| %-40s | %10s | %9s |\n' "drip HTTP POST /v1/buckets/x/allow" "$DRIP_RPS" "$DRIP_P99"
printf '| %-40s | %10s | %9s |\n' "axum hello-world (same wrk settings)" "$HELLO_RPS" "$HELLO_P99"
printf '| %-40s | %10s | %9s |\n' "drip gRPC AllowRequest" "$GRPC_RPS" "$GRPC_P99"
awk -v a="$DRIP_RPS" -v b="$HELLO_RPS" 'BEGIN { printf "ratio drip/hello-world (HTTP req/s): %.2f\n", a / b }'
[ -n "$NON2XX" ] && echo "drip non-2xx responses: $NON2XX"
exit 0
