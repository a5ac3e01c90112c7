#!/usr/bin/env bash
# STUN Binding requests/s: switchboard vs coturn's turnserver, back to back, same load client,
# loopback only, bounded in time. Prints each rate, the server CPU per request, and the ratios.
# Usage: bench/stun.sh [SECONDS] [SOCKETS] [WINDOW]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-8}; SOCKETS=${2:-4}; WINDOW=${3:-32}
command -v turnserver >/dev/null || { echo "bench/stun.sh: needs coturn (apt-get install coturn)" >&2; exit 2; }
cargo build --release -q -p switchboard-cli -p switchboard-bench
TARGET=${CARGO_TARGET_DIR:-target}
SB=$TARGET/release/switchboard; LOAD=$TARGET/release/switchboard-bench
TMP=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

# run NAME PID PORT -> prints "rate cpu_us_per_req"
measure() {
  local name=$1 pid=$2 port=$3 before after out rate answered
  sleep 0.5
  before=$(cpu_ticks "$pid")
  out=$($LOAD stun --server "127.0.0.1:$port" --sockets "$SOCKETS" --window "$WINDOW" --duration "$SECS" --requests 100000000)
  after=$(cpu_ticks "$pid")
  rate=$(sed -E 's/.*rate=([0-9]+).*/\1/' <<<"$out")
  answered=$(sed -E 's/.*answered=([0-9]+).*/\1/' <<<"$out")
  local cpu_us
  cpu_us=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$answered" 'BEGIN{ if (n>0) printf "%.2f", t/hz*1e6/n; else print "nan" }')
  printf '%-12s %10s req/s  %6s us CPU/req   (%s)\n' "$name" "$rate" "$cpu_us" "$out" >&2
  echo "$rate $cpu_us"
}

PORT_SB=$((40000 + RANDOM % 10000)); PORT_CT=$((PORT_SB + 2))
$SB serve --stun-udp 127.0.0.1:$PORT_SB --stun-tcp off --stun-tls off --http off --log-level warn >"$TMP/sb.log" 2>&1 &
PIDS+=($!); SB_PID=$!
read -r SB_RATE SB_CPU < <(measure switchboard "$SB_PID" "$PORT_SB")
kill "$SB_PID"; wait "$SB_PID" 2>/dev/null || true

turnserver -n --stun-only --listening-ip=127.0.0.1 --listening-port=$PORT_CT --no-tls --no-dtls --no-cli \
  --log-file="$TMP/coturn.log" --pidfile="$TMP/coturn.pid" >/dev/null 2>&1 &
PIDS+=($!); CT_PID=$!
read -r CT_RATE CT_CPU < <(measure coturn "$CT_PID" "$PORT_CT")

echo "machine: $(nproc) cores, $(uname -r); load: $SOCKETS sockets x $WINDOW in flight, ${SECS}s each"
awk -v a="$SB_RATE" -v b="$CT_RATE" -v c="$SB_CPU" -v d="$CT_CPU" 'BEGIN{
  printf "switchboard %d req/s, coturn %d req/s: rate ratio %.2fx; CPU per request ratio %.2f (lower is better)\n", a, b, a/b, c/d }'
