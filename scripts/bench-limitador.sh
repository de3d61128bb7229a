#!/usr/bin/env bash
# `drip serve` beside limitador-server (Kuadrant's rate-limit service, Rust +
# actix-web), both on their memory stores, and the axum hello-world of
# scripts/bench-server.sh, under the same wrk load in interleaved rounds:
#   drip:       POST /v1/buckets/x/allow {"key":"k"}  (a leaky bucket, exact)
#   limitador:  POST /check_and_report {"namespace":"bench","values":{"key":"k"},"delta":1}
#               (a fixed window counted per key, the same one key)
#   hello:      the same POST as drip's, answered with a fixed text.
# Every request is admitted. Per round: req/s, p99 and the server's CPU per
# request; the summary gives drip/limitador and drip/hello by round and
# their medians.
#
# limitador-server is not built here (it is not a dependency of this
# repository, and its RocksDB needs libclang and a C++ build): build it from
# a checkout of github.com/Kuadrant/limitador with
#   apt-get install -y libclang-dev && cargo build --release -p limitador-server
# and pass its path:
#   LIMITADOR=/path/to/limitador/target/release/limitador-server scripts/bench-limitador.sh
# ROUNDS=5, THREADS=2, CONNECTIONS=64, DURATION=5s, NO_BUILD=1 as in
# scripts/bench-server.sh. Needs wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/http-bench.sh
. scripts/lib/http-bench.sh

: "${LIMITADOR:?set LIMITADOR to a limitador-server binary (see the comment at the top)}"
ROUNDS=${ROUNDS:-5}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-5s}
DRIP_PORT=${DRIP_PORT:-18280}
LIMITADOR_PORT=${LIMITADOR_PORT:-18281}
LIMITADOR_RLS_PORT=${LIMITADOR_RLS_PORT:-18282}
HELLO_PORT=${HELLO_PORT:-18283}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
DRIP=${DRIP:-$TARGET_DIR/release/drip}

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }

echo "== machine"
echo "nproc: $(nproc)"
grep -m1 'model name' /proc/cpuinfo | sed 's/^model name[[:space:]]*: /cpu: /'
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "uptime at start: $(uptime)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo none)"
echo "limitador: $("$LIMITADOR" --version 2>&1 | head -1)"

if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release -p drip-server --bin drip --example hello
fi

# shellcheck source=scripts/lib/procs.sh
. scripts/lib/procs.sh

# One limit as large as drip's bucket below: everything admitted, counted
# per key as drip counts per key.
cat >"$WORK/limits.yaml" <<'EOF'
- namespace: bench
  max_value: 4294967295
  seconds: 60
  conditions: []
  variables:
    - descriptors[0]['key']
EOF
cat >"$WORK/limitador.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"namespace":"bench","values":{"key":"k"},"delta":1}'
wrk.headers["Content-Type"] = "application/json"
EOF

"$DRIP" serve --http "127.0.0.1:$DRIP_PORT" --grpc 127.0.0.1:0 2>/dev/null &
DRIP_PID=$!
PIDS+=($!)
"$LIMITADOR" --http-ip 127.0.0.1 --http-port "$LIMITADOR_PORT" \
    --rls-ip 127.0.0.1 --rls-port "$LIMITADOR_RLS_PORT" "$WORK/limits.yaml" memory \
    >"$WORK/limitador.log" 2>&1 &
LIMITADOR_PID=$!
PIDS+=($!)
"$TARGET_DIR/release/examples/hello" "127.0.0.1:$HELLO_PORT" 2>/dev/null &
HELLO_PID=$!
PIDS+=($!)
wait_http "http://127.0.0.1:$DRIP_PORT/healthz"
wait_http "http://127.0.0.1:$LIMITADOR_PORT/status"
wait_http "http://127.0.0.1:$HELLO_PORT/"
curl -fs -o /dev/null -X PUT "http://127.0.0.1:$DRIP_PORT/v1/buckets/x" \
    -d '{"capacity": 4294967295, "leak_rate": 1000000000}'
# Both must admit before they are timed.
curl -fs -o /dev/null -X POST "http://127.0.0.1:$DRIP_PORT/v1/buckets/x/allow" \
    -H 'content-type: application/json' -d '{"key":"k"}'
curl -fs -o /dev/null -X POST "http://127.0.0.1:$LIMITADOR_PORT/check_and_report" \
    -H 'content-type: application/json' -d '{"namespace":"bench","values":{"key":"k"},"delta":1}'

# run URL LUA PID -> "req/s p99 µs-of-server-CPU-per-request"; exits on
# any non-2xx answer (not a like-for-like run).
run() {
    local rps p99 cpu non2xx
    read -r rps p99 cpu non2xx <<<"$(wrk_cpu "$3" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$2" "$1")"
    if [ "$non2xx" != 0 ]; then
        echo "$1 answered $non2xx non-2xx responses: not a like-for-like run" >&2
        exit 1
    fi
    echo "$rps $p99 $cpu"
}
drip_run() { run "http://127.0.0.1:$DRIP_PORT/v1/buckets/x/allow" scripts/bench-allow.lua "$DRIP_PID"; }
limitador_run() { run "http://127.0.0.1:$LIMITADOR_PORT/check_and_report" "$WORK/limitador.lua" "$LIMITADOR_PID"; }
hello_run() { run "http://127.0.0.1:$HELLO_PORT/v1/buckets/x/allow" scripts/bench-allow.lua "$HELLO_PID"; }

echo
echo "== rounds: wrk -t$THREADS -c$CONNECTIONS -d$DURATION"
printf '| %5s | %-10s | %10s | %9s | %s |\n' round server req/s p99 "server CPU/request"
printf '| %5s | %-10s | %10s | %9s | %s |\n' ---: --- ---: ---: ---:
VS_LIMITADOR=()
VS_HELLO=()
for r in $(seq 1 "$ROUNDS"); do
    # The order turns each round, so a drifting load falls on all three.
    case $((r % 3)) in
        1) order="drip limitador hello" ;;
        2) order="limitador hello drip" ;;
        0) order="hello drip limitador" ;;
    esac
    for s in $order; do
        read -r RPS P99 CPU <<<"$("${s}_run")"
        printf '| %5s | %-10s | %10s | %9s | %s us |\n' "$r" "$s" "$RPS" "$P99" "$CPU"
        printf -v "RPS_$s" '%s' "$RPS"
    done
    VS_LIMITADOR+=("$(awk -v a="$RPS_drip" -v b="$RPS_limitador" 'BEGIN { printf "%.2f", a / b }')")
    VS_HELLO+=("$(awk -v a="$RPS_drip" -v b="$RPS_hello" 'BEGIN { printf "%.2f", a / b }')")
done

echo
echo "== summary"
echo "uptime at end: $(uptime)"
echo "drip/limitador req/s by round: ${VS_LIMITADOR[*]}; median $(median "${VS_LIMITADOR[@]}")"
echo "drip/hello-world req/s by round: ${VS_HELLO[*]}; median $(median "${VS_HELLO[@]}")"
