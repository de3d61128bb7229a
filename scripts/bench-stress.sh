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
# Then the same three tools against a server of known latency (the hello
# example answering after DELAY, default 2ms), where their own overheads are
# small beside what they measure.
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

cargo build --release -q -p drip-server --bin drip --example hello
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
oha_post() { local url=$1; shift; "$OHA" "$@" --no-tui --output-format json -m POST -H 'Content-Type: application/json' -d '{"key":"k"}' "$url"; }

# wrk 4 corrects its closed-loop latencies for coordinated omission after the
# run (stats_correct with the mean interval per connection); `drip stress`
# reports the same correction as `latency_wrk_corrected` beside what it
# measured. So drip's corrected figures are compared with wrk's, and drip's
# measured ones with oha's (closed loop, no correction), when oha is there.
#
# closed_loop TITLE BASE_URL: ROUNDS rounds of wrk, oha, drip stress on
# BASE_URL/v1/buckets/bench/allow, each round's ratios printed after it.
declare -a WR
closed_loop() {
    local title=$1 base=$2 r out json w o d
    local url="$base/v1/buckets/bench/allow"
    echo
    echo "$title: drip stress vs wrk${OHA:+ and oha}, $url, concurrency $C, ${D}s a run, $ROUNDS rounds, $(nproc) cores"
    printf "%-6s %-16s %10s %9s %9s %9s\n" round tool req/s p50_ms p90_ms p99_ms
    for r in $(seq "$ROUNDS"); do
        out=$(wrk -t2 -c"$C" -d"${D}s" --latency -s "$WORK/post.lua" "$url")
        w="$(awk '/^Requests\/sec/ {print $2}' <<<"$out") $(for p in 50% 90% 99%; do awk -v p=$p '$1==p {print $2}' <<<"$out" | to_ms; echo -n ' '; done)"
        WR[r]=${w%% *}
        printf "%-6s %-16s %10.0f %9s %9s %9s\n" "$r" "wrk (corrected)" $w
        o=""
        if [ -n "$OHA" ]; then
            o=$(oha_post "$url" -z "${D}s" -c "$C" | python3 -c '
import json,sys; r=json.load(sys.stdin); p=r["latencyPercentiles"]
print("%.1f %.3f %.3f %.3f" % (r["summary"]["requestsPerSec"], p["p50"]*1e3, p["p90"]*1e3, p["p99"]*1e3))')
            printf "%-6s %-16s %10.0f %9s %9s %9s\n" "$r" oha $o
        fi
        json=$("$DRIP" stress --url "$base" --bucket bench --key k --concurrency "$C" --duration "${D}s" --json)
        d=$(python3 -c '
import json,sys; r=json.load(sys.stdin); l=r["latency"]; c=r["latency_wrk_corrected"]["latency"]
print("%.1f %.3f %.3f %.3f %.3f %.3f %.3f" % (r["throughput_rps"], l["p50_ms"], l["p90_ms"], l["p99_ms"], c["p50_ms"], c["p90_ms"], c["p99_ms"]))' <<<"$json")
        printf "%-6s %-16s %10.0f %9s %9s %9s\n" "$r" drip $(cut -d' ' -f1-4 <<<"$d")
        printf "%-6s %-16s %10s %9s %9s %9s\n" "$r" "drip (corrected)" "" $(cut -d' ' -f5-7 <<<"$d")
        python3 - "$w" "$o" "$d" <<'PY'
import sys
w = [float(x) for x in sys.argv[1].split()]
o = [float(x) for x in sys.argv[2].split()]
d = [float(x) for x in sys.argv[3].split()]
ratios = lambda a, b: "  ".join("%s %.2f" % (n, x / y) for n, x, y in zip(("req/s", "p50", "p90", "p99"), a, b))
print("%-6s ratios drip corrected / wrk: %s" % ("", ratios([d[0]] + d[4:7], w)))
if o:
    print("%-6s ratios drip / oha:           %s" % ("", ratios(d[0:4], o)))
PY
    done
}

closed_loop "drip serve" "$URL"
MIN_WRK=$(printf '%s\n' "${WR[@]}" | sort -n | head -1)

# A server of known latency (the hello example answering after DELAY): the
# tools' own overheads are small beside it, so what they measure should agree.
DELAY=${DELAY:-2ms}
"${CARGO_TARGET_DIR:-target}/release/examples/hello" 127.0.0.1:0 "$DELAY" 2>"$WORK/hello.log" &
HELLO=$!
trap 'kill $SERVE $HELLO 2>/dev/null; wait $SERVE $HELLO 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do
    grep -q "listening" "$WORK/hello.log" && break
    sleep 0.1
done
HELLO_URL=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$WORK/hello.log")
[ -n "$HELLO_URL" ] || { echo "the hello example did not start" >&2; cat "$WORK/hello.log" >&2; exit 1; }
closed_loop "known latency (hello example, $DELAY a request)" "$HELLO_URL"

if [ -z "$OHA" ]; then
    echo
    echo "oha not found (cargo install oha, or OHA=/path/to/oha): the fixed-rate comparison is skipped"
    [ "${CI:-}" = 1 ] && exit 1
    exit 0
fi
RATE=${RATE:-$(python3 -c "print(max(1, int($MIN_WRK / 2)))")}
echo
echo "fixed rate $RATE req/s, concurrency $C, ${D}s a run: drip stress --rate vs $("$OHA" --version) -q --latency-correction"
printf "%-6s %-6s %10s %9s %9s %9s\n" round tool req/s p50_ms p90_ms p99_ms
declare -a OR O50 O90 O99 FR F50 F90 F99
for r in $(seq "$ROUNDS"); do
    json=$(oha_post "$URL/v1/buckets/bench/allow" -z "${D}s" -c "$C" -q "$RATE" --latency-correction)
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
