#!/usr/bin/env bash
# Refused requests/s on the Redis store, answered with two store calls
# (the decision, then the policy again: before issue 13) and with one (the
# decision carries its quota: after), alternately in one run on one
# redis-server started here on a free port. See
# crates/drip/examples/redis_refusals.rs.
#
# Usage: scripts/bench-redis-refusals.sh   (CONCURRENCY=1,16 ROUNDS=10 BLOCK_MS=500)
set -euo pipefail
cd "$(dirname "$0")/.."
CONCURRENCY=${CONCURRENCY:-1,16}
ROUNDS=${ROUNDS:-10}
BLOCK_MS=${BLOCK_MS:-500}
cargo build --release -p drip --features redis --example redis_refusals
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
redis_pid=$!
trap 'kill $redis_pid 2>/dev/null || true' EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), load: $(cut -d' ' -f1-3 /proc/loadavg), nproc: $(nproc), $(redis-server --version | cut -d' ' -f1-3)"
"${CARGO_TARGET_DIR:-target}/release/examples/redis_refusals" "redis://127.0.0.1:$port/" \
    --concurrency "$CONCURRENCY" --rounds "$ROUNDS" --block-ms "$BLOCK_MS"
