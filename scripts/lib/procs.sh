# Shared by the benchmark scripts that start servers (sourced, not run): a
# work directory ($WORK) and the background processes started ($PIDS, add
# each with `PIDS+=($!)`), all stopped and removed when the script exits.

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
