#!/usr/bin/env bash
# drip stress beside wrk on the same `drip serve` endpoint, same concurrency,
# rounds interleaved (wrk, drip, wrk, drip...) so a busy machine hurts both
# alike. Prints each round and the ratios: drip's req/s over wrk's (goal
# >= 0.8) and its p50/p90/p99, corrected for coordinated omission as wrk
# corrects its own, over wrk's (goal within 20%); with oha, drip's measured
# percentiles over oha's (closed loop, uncorrected, as measured).
#
#   scripts/bench-stress.sh [CONCURRENCY=32] [SECONDS=5] [ROUNDS=3]
#
# Then, at a fixed rate (RATE req/s from the environment; default half the
# slowest wrk round), `drip stress --rate` beside oha `-q RATE
# --latency-correction` (both count latency from each request's intended
# send time: coordinated omission corrected the same way), interleaved the
# same way: the fair check of the percentiles. oha is looked for as `oha`,
# or $OHA; `cargo install oha` builds it. Without it that part is skipped
# (with a message), unless CI=1.
#
# Needs wrk (apt-get install wrk) and builds drip in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
C=${1:-32}
D=${2:-5}
ROUNDS=${3:-3}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }

cargo build --release -q -p drip-server
DRIP=${CARGO_TARGET_DIR:-target}/release/drip
WORK=$(mktemp -d)
LOG="$WORK/serve.log"
"$DRIP" serve --http 127.0.0.1:0 --grpc 127.0.0.1:0 2>"$LOG" &
SERVE=$!
trap 'kill $SERVE 2>/dev/null; wait $SERVE 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do
    grep -q "HTTP listening" "$LOG" && break
    sleep 0.1
done
ADDR=$(sed -n 's/.*HTTP listening on http:\/\/\([0-9.:]*\).*/\1/p' "$LOG")
[ -n "$ADDR" ] || { echo "drip serve did not start" >&2; cat "$LOG" >&2; exit 1; }
URL="http://$ADDR"
# A bucket that admits everything: both tools measure the same 200s.
curl -sf -X PUT "$URL/v1/buckets/bench" -d '{"capacity": 4000000000, "leak_rate": 1e15}' >/dev/null

cat >"$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"key":"k"}'
wrk.headers["Content-Type"] = "application/json"
LUA

# wrk's latency figures in ms (it prints us, ms or s).
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.3f", v}'; }

OHA=${OHA:-$(command -v oha || true)}
OHA_POST=(-m POST -H 'Content-Type: application/json' -d '{"key":"k"}' "$URL/v1/buckets/bench/allow")

# wrk 4 corrects its closed-loop latencies for coordinated omission after the
# run (stats_correct with the mean interval per connection); `drip stress`
# reports the same correction as `latency_wrk_corrected` beside what it
# measured. So drip's corrected figures are compared with wrk's, and drip's
# measured ones with oha's (closed loop, no correction), when oha is there.
echo "drip stress vs wrk${OHA:+ and oha}: $URL/v1/buckets/bench/allow, concurrency $C, ${D}s a run, $ROUNDS rounds, $(nproc) cores"
printf "%-6s %-16s %10s %9s %9s %9s\n" round tool req/s p50_ms p90_ms p99_ms
declare -a WR DR W50 D50 W90 D90 W99 D99 C50 C90 C99 OR O50 O90 O99
for r in $(seq "$ROUNDS"); do
    out=$(wrk -t2 -c"$C" -d"${D}s" --latency -s "$WORK/post.lua" "$URL/v1/buckets/bench/allow")
    WR[r]=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    W50[r]=$(awk '$1=="50%" {print $2}' <<<"$out" | to_ms)
    W90[r]=$(awk '$1=="90%" {print $2}' <<<"$out" | to_ms)
    W99[r]=$(awk '$1=="99%" {print $2}' <<<"$out" | to_ms)
    printf "%-6s %-16s %10.0f %9s %9s %9s\n" "$r" "wrk (corrected)" "${WR[r]}" "${W50[r]}" "${W90[r]}" "${W99[r]}"

    if [ -n "$OHA" ]; then
        json=$("$OHA" -z "${D}s" -c "$C" --no-tui --output-format json "${OHA_POST[@]}")
        read -r OR[r] O50[r] O90[r] O99[r] < <(python3 -c '
import json,sys; r=json.load(sys.stdin); p=r["latencyPercentiles"]
print("%.1f %.3f %.3f %.3f" % (r["summary"]["requestsPerSec"], p["p50"]*1e3, p["p90"]*1e3, p["p99"]*1e3))' <<<"$json")
        printf "%-6s %-16s %10.0f %9s %9s %9s\n" "$r" oha "${OR[r]}" "${O50[r]}" "${O90[r]}" "${O99[r]}"
    fi

    json=$("$DRIP" stress --url "$URL" --bucket bench --key k --concurrency "$C" --duration "${D}s" --json)
    read -r DR[r] D50[r] D90[r] D99[r] C50[r] C90[r] C99[r] < <(python3 -c '
import json,sys; r=json.load(sys.stdin); l=r["latency"]; c=r["latency_wrk_corrected"]["latency"]
print("%.1f %.3f %.3f %.3f %.3f %.3f %.3f" % (r["throughput_rps"], l["p50_ms"], l["p90_ms"], l["p99_ms"], c["p50_ms"], c["p90_ms"], c["p99_ms"]))' <<<"$json")
    printf "%-6s %-16s %10.0f %9s %9s %9s\n" "$r" drip "${DR[r]}" "${D50[r]}" "${D90[r]}" "${D99[r]}"
    printf "%-6s %-16s %10s %9s %9s %9s\n" "$r" "drip (corrected)" "" "${C50[r]}" "${C90[r]}" "${C99[r]}"
done

echo
echo "ratios per round (req/s goal >= 0.80; percentiles goal 0.80..1.20):"
printf "%-6s %12s %15s %15s %15s\n" round req/s p50 p90 p99
for r in $(seq "$ROUNDS"); do
    python3 -c "print('%-6s %12s %15s %15s %15s' % ('$r', '%.2f' % (${DR[r]}/${WR[r]}), *['%.2f' % (c/w) for c, w in ((${C50[r]}, ${W50[r]}), (${C90[r]}, ${W90[r]}), (${C99[r]}, ${W99[r]}))]))" | sed 's/$/   drip corrected \/ wrk/'
    if [ -n "$OHA" ]; then
        python3 -c "print('%-6s %12s %15s %15s %15s' % ('$r', '%.2f' % (${DR[r]}/${OR[r]}), *['%.2f' % (d/o) for d, o in ((${D50[r]}, ${O50[r]}), (${D90[r]}, ${O90[r]}), (${D99[r]}, ${O99[r]}))]))" | sed 's/$/   drip \/ oha/'
    fi
done

if [ -z "$OHA" ]; then
    echo
    echo "oha not found (cargo install oha, or OHA=/path/to/oha): the fixed-rate comparison is skipped"
    [ "${CI:-}" = 1 ] && exit 1
    exit 0
fi
MIN_WRK=$(printf '%s\n' "${WR[@]}" | sort -n | head -1)
RATE=${RATE:-$(python3 -c "print(max(1, int($MIN_WRK / 2)))")}
echo
echo "fixed rate $RATE req/s, concurrency $C, ${D}s a run: drip stress --rate vs $("$OHA" --version) -q --latency-correction"
printf "%-6s %-6s %10s %9s %9s %9s\n" round tool req/s p50_ms p90_ms p99_ms
declare -a OR O50 O90 O99 FR F50 F90 F99
for r in $(seq "$ROUNDS"); do
    json=$("$OHA" -z "${D}s" -c "$C" -q "$RATE" --latency-correction --no-tui --output-format json "${OHA_POST[@]}")
    read -r OR[r] O50[r] O90[r] O99[r] < <(python3 -c '
import json,sys; r=json.load(sys.stdin); p=r["latencyPercentiles"]
print("%.1f %.3f %.3f %.3f" % (r["summary"]["requestsPerSec"], p["p50"]*1e3, p["p90"]*1e3, p["p99"]*1e3))' <<<"$json")
    printf "%-6s %-6s %10.0f %9s %9s %9s\n" "$r" oha "${OR[r]}" "${O50[r]}" "${O90[r]}" "${O99[r]}"

    json=$("$DRIP" stress --url "$URL" --bucket bench --key k --concurrency "$C" --duration "${D}s" --rate "$RATE" --json)
    read -r FR[r] F50[r] F90[r] F99[r] < <(python3 -c '
import json,sys; r=json.load(sys.stdin); l=r["latency"]
print("%.1f %.3f %.3f %.3f" % (r["throughput_rps"], l["p50_ms"], l["p90_ms"], l["p99_ms"]))' <<<"$json")
    printf "%-6s %-6s %10.0f %9s %9s %9s\n" "$r" drip "${FR[r]}" "${F50[r]}" "${F90[r]}" "${F99[r]}"
done

echo
echo "ratios drip/oha at $RATE req/s per round (percentiles goal 0.80..1.20):"
printf "%-6s %8s %8s %8s %8s\n" round req/s p50 p90 p99
for r in $(seq "$ROUNDS"); do
    python3 -c "print('%-6s %8.2f %8.2f %8.2f %8.2f' % ('$r', ${FR[r]}/${OR[r]}, ${F50[r]}/${O50[r]}, ${F90[r]}/${O90[r]}, ${F99[r]}/${O99[r]}))"
done
