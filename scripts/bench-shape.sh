#!/usr/bin/env bash
# `drip shape` achieved-rate error at 64 KiB/s, 1 MiB/s, 100 MiB/s and
# 1 GiB/s of target, each over SECONDS after the burst, beside `trickle -s -d`
# (userspace shaping by LD_PRELOAD) at the same rate in the same round, and
# the unshaped loopback and the unlimited shaper (the ceilings of this
# machine). Note: trickle wraps read/select/poll but not epoll, so it does
# not shape a tokio program such as the probe; its column shows that, and tc
# needs CAP_NET_ADMIN on a loopback other sessions share, so it is not used.
#
# The probe (crates/drip-server/examples/rate_probe.rs) is both the upstream,
# sending as fast as its socket takes, and the client, timing what arrives
# after the burst.
#
# Usage: scripts/bench-shape.sh
#   ROUNDS=1 SECONDS_PER_RUN=10 RATES="65536 1048576 104857600 536870912 1073741824"
#   can be changed from the environment. trickle is installed with apt when
#   missing and we are root; without it the peer column is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-1}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
RATES=${RATES:-"65536 1048576 104857600 536870912 1073741824"}
SHAPE_PORT=${SHAPE_PORT:-18281}
UP_PORT=${UP_PORT:-18282}
TARGET_DIR=${CARGO_TARGET_DIR:-target}

if ! command -v trickle >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y trickle >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y trickle >/dev/null 2>&1; } || true
fi

echo "== machine"
echo "nproc: $(nproc)"
grep -m1 'model name' /proc/cpuinfo | sed 's/^model name[[:space:]]*: /cpu: /'
rustc --version
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo none)"

echo
echo "== build"
cargo build --release -p drip-server --bin drip --example rate_probe

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_port() {
    for _ in $(seq 1 200); do
        (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2
    exit 1
}

PROBE="$TARGET_DIR/release/examples/rate_probe"
# "bytes=.. seconds=.. rate_Bps=R" -> R
rate_of() { sed -n 's/.*rate_Bps=\([0-9.]*\).*/\1/p' <<<"$1"; }
err_pct() { awk -v a="$1" -v t="$2" 'BEGIN { printf "%+.3f%%", (a / t - 1) * 100 }'; }

echo
echo "== unshaped loopback (ceiling)"
echo "$("$PROBE" "127.0.0.1:$UP_PORT" "127.0.0.1:$UP_PORT" "$SECONDS_PER_RUN" 0)"

echo
echo "== through drip shape, unlimited (--rate 1000GiB/s): the shaper's own ceiling"
"$TARGET_DIR/release/drip" shape --listen "127.0.0.1:$SHAPE_PORT" --upstream "127.0.0.1:$UP_PORT" \
    --rate 1000GiB/s 2>/dev/null &
pid=$!
PIDS+=($pid)
wait_port "$SHAPE_PORT"
"$PROBE" "127.0.0.1:$SHAPE_PORT" "127.0.0.1:$UP_PORT" "$SECONDS_PER_RUN" 0
kill "$pid"; wait "$pid" 2>/dev/null || true

echo
echo "== achieved rate over ${SECONDS_PER_RUN}s after the burst (burst = max(64 KiB, 50 ms of rate))"
for r in $(seq 1 "$ROUNDS"); do
    for rate in $RATES; do
        burst=$(( rate / 20 > 65536 ? rate / 20 : 65536 ))
        "$TARGET_DIR/release/drip" shape --listen "127.0.0.1:$SHAPE_PORT" --upstream "127.0.0.1:$UP_PORT" \
            --rate "${rate}B/s" --burst "${burst}B" 2>/dev/null &
        pid=$!
        PIDS+=($pid)
        wait_port "$SHAPE_PORT"
        d=$("$PROBE" "127.0.0.1:$SHAPE_PORT" "127.0.0.1:$UP_PORT" "$SECONDS_PER_RUN" "$burst")
        kill "$pid"; wait "$pid" 2>/dev/null || true
        line="round $r target $rate B/s  drip shape: $(rate_of "$d") B/s ($(err_pct "$(rate_of "$d")" "$rate"))"
        if command -v trickle >/dev/null; then
            # trickle's unit is KB/s = 1024 B/s; it shapes the probe's reads.
            t=$(trickle -s -d $(( rate / 1024 )) "$PROBE" "127.0.0.1:$UP_PORT" "127.0.0.1:$UP_PORT" "$SECONDS_PER_RUN" 0 2>/dev/null || echo "rate_Bps=0")
            line="$line | trickle: $(rate_of "$t") B/s ($(err_pct "$(rate_of "$t")" "$rate"))"
        fi
        echo "$line"
    done
done
