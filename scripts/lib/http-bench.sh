# Shared by the scripts that load-test HTTP servers with wrk (sourced, not
# run): waiting for a server, a server's CPU per answer, medians.

# wait_http URL: until URL answers 2xx (10 s at most), else exit.
wait_http() {
    for _ in $(seq 1 200); do
        curl -fs -o /dev/null "$1" && return 0
        sleep 0.05
    done
    echo "no answer from $1" >&2
    exit 1
}

# The CPU time (user + system, clock ticks) process $1 has used.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# wrk_cpu PID WRK-ARGS... -> "req/s p99 µs-of-server-CPU-per-request
# non-2xx": wrk (given --latency) against the server PID; the CPU figure is
# what that server spent per answer whatever the load generator took.
wrk_cpu() {
    local pid=$1 out rps p99 before after n non2xx
    shift
    before=$(cpu_ticks "$pid")
    out=$("$@")
    after=$(cpu_ticks "$pid")
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    echo "$rps $p99 $(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$n" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }') ${non2xx:-0}"
}

# median VALUES...: the middle value (the mean of the two middle ones for
# an even count).
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
