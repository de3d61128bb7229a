#!/usr/bin/env bash
# `drip proxy` beside nginx's limit_req, in alternating rounds of one run,
# both in front of the same upstream (the axum hello-world example):
#
#   1. police, everything admitted: req/s and p99 (wrk), drip/nginx ratios,
#      beside the Rust stack's own ceilings on this machine: the upstream
#      answering wrk directly, and the smallest hyper proxy
#      (examples/bare_proxy.rs: no limit, no header rewriting) before it;
#   2. police, ~90% refused (rate = a tenth of the slower proxy's round-1
#      throughput): req/s, p99 and the refused share;
#   3. shape vs limit_req with burst (delay): N requests at once, the gaps
#      between departures at the upstream vs the ideal 1/rate, p50/p99
#      (crates/drip-server/examples/spacing.rs).
#
# Usage: scripts/bench-proxy.sh
#   ROUNDS=3 THREADS=2 CONNECTIONS=64 DURATION=10s SHAPE_RATE=50 SHAPE_N=150
#   PARTS="police shape" (either or both) DRIP_ARGS="--workers 2" (extra
#   `drip proxy` flags) can be changed from the environment. Needs wrk and nginx (apt-get
#   install -y wrk nginx; installed here if missing and we are root).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-10s}
SHAPE_RATE=${SHAPE_RATE:-50}
SHAPE_N=${SHAPE_N:-150}
DRIP_PORT=${DRIP_PORT:-18181}
NGINX_PORT=${NGINX_PORT:-18182}
HELLO_PORT=${HELLO_PORT:-18183}
SPACING_PORT=${SPACING_PORT:-18184}
BARE_PORT=${BARE_PORT:-18185}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
PARTS=${PARTS:-"police shape"}
DRIP_ARGS=${DRIP_ARGS:-}

for tool in wrk nginx; do
    if ! command -v "$tool" >/dev/null; then
        if [ "$(id -u)" = 0 ]; then
            apt-get install -y "$tool" >/dev/null || { apt-get update >/dev/null && apt-get install -y "$tool" >/dev/null; }
        else
            echo "$tool is missing: apt-get install -y $tool" >&2
            exit 1
        fi
    fi
done
NGINX=$(command -v nginx)

echo "== machine"
echo "nproc: $(nproc)"
grep -m1 'model name' /proc/cpuinfo | sed 's/^model name[[:space:]]*: /cpu: /'
rustc --version
"$NGINX" -v 2>&1
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo none)"

echo
echo "== build"
cargo build --release -p drip-server --bin drip --example hello --example spacing --example bare_proxy

WORK=$(mktemp -d)
PIDS=()
PROXY_PIDS=()
cleanup() {
    for p in "${PROXY_PIDS[@]}" "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_port() {
    for _ in $(seq 1 200); do
        (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2
    exit 1
}

stop_proxies() {
    for p in "${PROXY_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    PROXY_PIDS=()
}

# drip proxy ARGS... on DRIP_PORT.
start_drip() {
    # shellcheck disable=SC2086
    "$TARGET_DIR/release/drip" proxy --listen "127.0.0.1:$DRIP_PORT" "$@" $DRIP_ARGS 2>"$WORK/drip.log" &
    PROXY_PIDS+=($!)
    wait_port "$DRIP_PORT"
}

# nginx with `limit_req_zone ... rate=$1r/s` and `limit_req $2` to $3.
start_nginx() {
    local rate=$1 limit=$2 upstream=$3
    mkdir -p "$WORK/nginx/logs"
    cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes $(nproc);
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log error;
events { worker_connections 4096; }
http {
    access_log off;
    limit_req_zone \$binary_remote_addr zone=z:10m rate=${rate}r/s;
    limit_req_status 429;
    limit_req_log_level warn;
    upstream up { server $upstream; keepalive 128; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            limit_req $limit;
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
    PROXY_PIDS+=($!)
    wait_port "$NGINX_PORT"
}

# wrk URL -> "req/s p99 non2xx total"
run_wrk() {
    local out
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$1")
    echo "$out" >>"$WORK/wrk.log"
    local rps p99 non2xx total
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $5}' <<<"$out")
    total=$(awk '/requests in/ {print $1}' <<<"$out")
    echo "$rps $p99 ${non2xx:-0} $total"
}

# "1.23ms" / "456.00us" / "1.2s" -> microseconds
to_us() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); print v + 0 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); print v * 1000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000000 }
        else print v }'
}

"$TARGET_DIR/release/examples/hello" "127.0.0.1:$HELLO_PORT" 2>/dev/null &
PIDS+=($!)
wait_port "$HELLO_PORT"
UP="127.0.0.1:$HELLO_PORT"

# A police scenario: capacity (drip) = burst + 1 (nginx admits burst + 1 at once).
police_round() {
    local rate=$1 burst=$2 label=$3 round=$4
    start_drip --upstream "http://$UP" --capacity $((burst + 1)) --leak-rate "$rate"
    read -r d_rps d_p99 d_non d_total < <(run_wrk "http://127.0.0.1:$DRIP_PORT/")
    stop_proxies
    start_nginx "$rate" "zone=z burst=$burst nodelay" "$UP"
    read -r n_rps n_p99 n_non n_total < <(run_wrk "http://127.0.0.1:$NGINX_PORT/")
    stop_proxies
    # The Rust HTTP stack's own ceilings here: the upstream (axum
    # hello-world) answering wrk directly, no proxy, no limit; and the
    # smallest hyper proxy in front of it (examples/bare_proxy.rs).
    read -r h_rps h_p99 _ _ < <(run_wrk "http://$UP/")
    "$TARGET_DIR/release/examples/bare_proxy" "127.0.0.1:$BARE_PORT" "$UP" 2>/dev/null &
    PROXY_PIDS+=($!)
    wait_port "$BARE_PORT"
    read -r b_rps b_p99 _ _ < <(run_wrk "http://127.0.0.1:$BARE_PORT/")
    stop_proxies
    local d_us n_us
    d_us=$(to_us "$d_p99"); n_us=$(to_us "$n_p99")
    printf '%-14s round %s  drip %9.0f req/s p99 %8s (%5.1f%% refused) | nginx %9.0f req/s p99 %8s (%5.1f%% refused) | req/s ratio %.3f, p99 ratio %.3f | hello direct %9.0f req/s p99 %8s, hello/nginx %.3f | bare hyper proxy %9.0f req/s p99 %8s, bare/nginx %.3f\n' \
        "$label" "$round" "$d_rps" "$d_p99" "$(awk -v a="$d_non" -v b="$d_total" 'BEGIN{print 100*a/b}')" \
        "$n_rps" "$n_p99" "$(awk -v a="$n_non" -v b="$n_total" 'BEGIN{print 100*a/b}')" \
        "$(awk -v a="$d_rps" -v b="$n_rps" 'BEGIN{print a/b}')" "$(awk -v a="$d_us" -v b="$n_us" 'BEGIN{print a/b}')" \
        "$h_rps" "$h_p99" "$(awk -v a="$h_rps" -v b="$n_rps" 'BEGIN{print a/b}')" \
        "$b_rps" "$b_p99" "$(awk -v a="$b_rps" -v b="$n_rps" 'BEGIN{print a/b}')"
    LAST_MIN_RPS=$(awk -v a="$d_rps" -v b="$n_rps" 'BEGIN{print int(a < b ? a : b)}')
}

if [[ " $PARTS " == *" police "* ]]; then
echo
echo "== police, all admitted (rate 1000000/s, burst 1000000): wrk -t$THREADS -c$CONNECTIONS -d$DURATION"
MIN_RPS=""
for r in $(seq 1 "$ROUNDS"); do
    police_round 1000000 1000000 "all-admitted" "$r"
    MIN_RPS=$(awk -v a="${MIN_RPS:-$LAST_MIN_RPS}" -v b="$LAST_MIN_RPS" 'BEGIN{print a < b ? a : b}')
done

REFUSE_RATE=$(( MIN_RPS / 10 > 1 ? MIN_RPS / 10 : 1 ))
echo
echo "== police, ~90% refused (rate $REFUSE_RATE/s = a tenth of the slowest round-1 throughput, burst 10)"
for r in $(seq 1 "$ROUNDS"); do
    police_round "$REFUSE_RATE" 10 "90%-refused" "$r"
done

fi

if [[ " $PARTS " == *" shape "* ]]; then
echo
echo "== shape vs limit_req burst (delay): $SHAPE_N requests at once, rate $SHAPE_RATE/s; |gap - 1/rate| at the upstream"
for r in $(seq 1 "$ROUNDS"); do
    start_drip --upstream "http://127.0.0.1:$SPACING_PORT" --capacity 1 --leak-rate "$SHAPE_RATE" \
        --mode shape --key const --queue-timeout 1h
    d=$("$TARGET_DIR/release/examples/spacing" "http://127.0.0.1:$DRIP_PORT/" "127.0.0.1:$SPACING_PORT" "$SHAPE_RATE" "$SHAPE_N")
    stop_proxies
    start_nginx "$SHAPE_RATE" "zone=z burst=$SHAPE_N" "127.0.0.1:$SPACING_PORT"
    n=$("$TARGET_DIR/release/examples/spacing" "http://127.0.0.1:$NGINX_PORT/" "127.0.0.1:$SPACING_PORT" "$SHAPE_RATE" "$SHAPE_N")
    stop_proxies
    echo "shape round $r  drip: $d | nginx: $n"
done
fi
