#!/usr/bin/env bash
# A flood of 10^6 distinct keys against `drip serve --max-keys 500000`
# (memory store), as issue 19 asks: RSS read from /proc before, at the cap
# and after the flood; the keys beyond the cap are refused with 503
# `key_limit`; the keys held before decide exactly as before (each is full,
# so its second request is a 429, not a 503).
#
# 10^6 distinct keys = 500,000 keys of bucket `a` (k0..k499999, admitted:
# they fill the cap) then 500,000 of bucket `b` (new keys: refused). Both
# buckets hold capacity 1 leaking once a day, so no key goes idle (nothing
# is swept) during the run.
#
# Usage: scripts/bench-key-flood.sh   (MAX_KEYS=500000 KEYS=500000
#   CONCURRENCY=64 HTTP_PORT=18180 from the environment). Run it under
#   `flock /work/bench.lock` on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_KEYS=${MAX_KEYS:-500000}
KEYS=${KEYS:-500000}
CONCURRENCY=${CONCURRENCY:-64}
HTTP_PORT=${HTTP_PORT:-18180}
GRPC_PORT=${GRPC_PORT:-18151}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
DRIP="$TARGET_DIR/release/drip"
BASE="http://127.0.0.1:$HTTP_PORT"

echo "== machine"
echo "nproc: $(nproc)"
grep -m1 'model name' /proc/cpuinfo | sed 's/^model name[[:space:]]*: /cpu: /'
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "uptime: $(uptime)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo none)"

echo
echo "== build"
cargo build --release -p drip-server --bin drip

SERVER=""
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT

"$DRIP" serve --http "127.0.0.1:$HTTP_PORT" --grpc "127.0.0.1:$GRPC_PORT" \
    --max-keys "$MAX_KEYS" 2>/dev/null &
SERVER=$!
for _ in $(seq 1 200); do
    curl -fs -o /dev/null "$BASE/healthz" && break
    sleep 0.05
done
for b in a b; do
    curl -fs -o /dev/null -X PUT "$BASE/v1/buckets/$b" -d '{"capacity": 1, "leak_rate": 0.00001}'
done

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$SERVER/status"; }
metric() { curl -fs "$BASE/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
# drip stress --json -> "admitted rejected errors req/s"
flood() {
    "$DRIP" stress --url "$BASE" --bucket "$1" --keys "$KEYS" --requests "$KEYS" \
        --concurrency "$CONCURRENCY" --json 2>/dev/null \
        | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["admitted"], r["rejected"], r["errors"], round(r["throughput_rps"]))' \
        || true
}

RSS0=$(rss_kb)
echo
echo "== flood"
printf '%-44s %9s %9s %9s %8s %10s\n' "phase" "admitted" "429" "errors" "req/s" "RSS kB"
printf '%-44s %9s %9s %9s %8s %10s\n' "start (2 buckets, no keys)" - - - - "$RSS0"
read -r A1 R1 E1 T1 <<<"$(flood a)"
RSS1=$(rss_kb)
printf '%-44s %9s %9s %9s %8s %10s\n' "$KEYS new keys of a (fill the cap)" "$A1" "$R1" "$E1" "$T1" "$RSS1"
read -r A2 R2 E2 T2 <<<"$(flood b)"
RSS2=$(rss_kb)
printf '%-44s %9s %9s %9s %8s %10s\n' "$KEYS new keys of b (beyond the cap)" "$A2" "$R2" "$E2" "$T2" "$RSS2"
read -r A3 R3 E3 T3 <<<"$(flood a)"
RSS3=$(rss_kb)
printf '%-44s %9s %9s %9s %8s %10s\n' "the $KEYS keys of a again (held, full)" "$A3" "$R3" "$E3" "$T3" "$RSS3"

echo
echo "== a refused new key, and a held key"
curl -s -w ' -> %{http_code}\n' -X POST "$BASE/v1/buckets/b/allow" -d '{"key": "new"}'
curl -s -w ' -> %{http_code}\n' -X POST "$BASE/v1/buckets/a/allow" -d '{"key": "k7"}'
echo "drip_keys_held: $(metric drip_keys_held)"
echo "drip_keys_refused_total: $(metric drip_keys_refused_total)"

echo
echo "== summary"
awk -v r0="$RSS0" -v r1="$RSS1" -v r2="$RSS2" -v r3="$RSS3" -v n="$A1" 'BEGIN {
    printf "RSS: %.1f MB at start, %.1f MB at the cap, %.1f MB after the flood, %.1f MB at the end\n", r0/1024, r1/1024, r2/1024, r3/1024
    if (n > 0) printf "bytes per held key (RSS at the cap - start) / keys: %.0f\n", (r1 - r0) * 1024 / n
    printf "RSS growth while %s keys beyond the cap were refused: %.1f MB\n", "'"$KEYS"'", (r2 - r1) / 1024
}'
