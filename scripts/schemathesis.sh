#!/usr/bin/env bash
# Runs schemathesis 4 (`st`, PyPI) with every check against a real
# `drip serve` (memory store, no admin token, free ports): the OpenAPI
# document must describe what the server does, with 0 failures.
#
#   scripts/schemathesis.sh [extra st run flags, e.g. --seed 1 --max-examples 100]
#
# Uses target/debug/drip (built if missing); DRIP=path overrides it. The
# exceptions JSON Schema cannot state are in .ci/schemathesis.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

DRIP="${DRIP:-target/debug/drip}"
[ -x "$DRIP" ] || cargo build -q -p drip-server --bin drip
command -v st >/dev/null 2>&1 || { echo "st (schemathesis 4) is not installed: pip install 'schemathesis>=4,<5'" >&2; exit 1; }

log="$(mktemp)"
"$DRIP" serve --http 127.0.0.1:0 --grpc 127.0.0.1:0 --store memory 2>"$log" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -f "$log"' EXIT

# The address it bound, from its log; then wait until /readyz answers.
addr=""
for _ in $(seq 300); do
    addr="$(grep -o 'HTTP listening on http://[0-9.:]*' "$log" | sed 's|.*http://||' || true)"
    [ -n "$addr" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$addr" ] || { echo "drip serve did not log its HTTP address" >&2; cat "$log" >&2; exit 1; }
for _ in $(seq 300); do
    python3 -c "import urllib.request,sys; urllib.request.urlopen('http://$addr/readyz', timeout=1)" 2>/dev/null && break
    sleep 0.1
done

# 25 examples per operation and phase (.ci/schemathesis.toml): ~600 cases, seconds.
# From a scratch directory: st keeps a cache (.schemathesis/) where it runs.
repo="$PWD"
scratch="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$log" "$scratch"' EXIT
cd "$scratch"
st --config-file "$repo/.ci/schemathesis.toml" run "http://$addr/openapi.json" --checks all "$@"
