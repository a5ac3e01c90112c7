#!/usr/bin/env bash
# STUN Binding requests/s: switchboard vs coturn's turnserver, same load client, loopback only,
# bounded in time; ROUNDS (3) rounds alternating switchboard, coturn, switchboard, ... so drift
# in the machine hits both alike. Prints each run, then per side the median and min–max of the
# rate and of the server CPU per request, and the ratios' medians and ranges; the runs go to
# bench-results/stun-DATE.json. Refuses to run on a busy machine (bench/lib.sh).
# The load client makes a system call per request and per reply; LOAD_FLAGS=--batch makes it
# send each window refill with one sendmmsg and take replies with one recvmmsg (lighter, but
# burstier: see BENCHMARKS.md).
# Usage: bench/stun.sh [SECONDS] [SOCKETS] [WINDOW]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-8}; SOCKETS=${2:-4}; WINDOW=${3:-32}; ROUNDS=${ROUNDS:-3}
command -v turnserver >/dev/null || { echo "bench/stun.sh: needs coturn (apt-get install coturn)" >&2; exit 2; }
cargo build --release -q -p switchboard-cli -p switchboard-bench
. bench/lib.sh
bench_quiet
TARGET=${CARGO_TARGET_DIR:-target}
SB=$TARGET/release/switchboard; LOAD=$TARGET/release/switchboard-bench
bench_workdir


# measure NAME PID PORT: one run; recorded as rate and cpu_us (server CPU per request).
measure() {
  local name=$1 pid=$2 port=$3 before after out rate answered cpu_us
  sleep 0.5
  before=$(cpu_ticks "$pid")
  # shellcheck disable=SC2086 # LOAD_FLAGS: words on purpose
  out=$($LOAD stun --server "127.0.0.1:$port" --sockets "$SOCKETS" --window "$WINDOW" --duration "$SECS" --requests 100000000 ${LOAD_FLAGS:-})
  after=$(cpu_ticks "$pid")
  rate=$(sed -E 's/.*rate=([0-9]+).*/\1/' <<<"$out")
  answered=$(sed -E 's/.*answered=([0-9]+).*/\1/' <<<"$out")
  cpu_us=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$answered" 'BEGIN{ if (n>0) printf "%.3f", t/hz*1e6/n; else print "nan" }')
  printf '%-12s %10s req/s  %6s us CPU/req   (%s)\n' "$name" "$rate" "$cpu_us" "$out"
  bench_record "$name" "rate=$rate" "cpu_us=$cpu_us"
}

PORT_SB=$((40000 + RANDOM % 10000)); PORT_CT=$((PORT_SB + 2))
$SB serve --stun-udp 127.0.0.1:$PORT_SB --stun-tcp off --stun-tls off --http off --https off --log-level warn >"$TMP/sb.log" 2>&1 &
PIDS+=($!); SB_PID=$!
turnserver -n --stun-only --listening-ip=127.0.0.1 --listening-port=$PORT_CT --no-tls --no-dtls --no-cli \
  --log-file="$TMP/coturn.log" --pidfile="$TMP/coturn.pid" >/dev/null 2>&1 &
PIDS+=($!); CT_PID=$!

echo "machine: $(nproc) cores, $(uname -r); load average before: $BENCH_LOAD_BEFORE"
echo "load: $SOCKETS sockets x $WINDOW in flight, ${SECS}s per run, $ROUNDS rounds alternating switchboard / coturn; client flags: ${LOAD_FLAGS:-(none: one system call per request and per reply)}"
for _ in $(seq "$ROUNDS"); do
  measure switchboard "$SB_PID" "$PORT_SB"
  measure coturn "$CT_PID" "$PORT_CT"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
for side in switchboard coturn; do
  read -r r rl rh < <(bench_stats "$side" rate)
  read -r c cl ch < <(bench_stats "$side" cpu_us)
  printf '%-12s median %8.0f req/s (%.0f-%.0f)   CPU/req median %.3f us (%.3f-%.3f)\n' "$side" "$r" "$rl" "$rh" "$c" "$cl" "$ch"
done
read -r q ql qh < <(bench_ratio switchboard coturn rate)
read -r p pl ph < <(bench_ratio switchboard coturn cpu_us)
printf 'rate switchboard/coturn median %.2fx (%.2f-%.2f); CPU per request switchboard/coturn median %.2f (%.2f-%.2f) (lower is better)\n' "$q" "$ql" "$qh" "$p" "$pl" "$ph"
bench_json stun
