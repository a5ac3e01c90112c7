#!/usr/bin/env bash
# Real-time hub fan-out: 1,000 WebSocket subscribers (switchboard.proto) on one channel and on
# 1,000 channels, a paced publish load through the HTTP server API, loopback only, bounded in
# count and time. Prints delivered messages/s, publish-to-receive p50/p99 latency and the
# server CPU per delivered message for each scenario; ROUNDS (3) rounds of both scenarios, then
# the median and min-max of each figure. The load client's CPU per delivery is printed too (it
# shares the two cores: the split says how much of the machine the server had). Refuses to run on a busy machine (bench/lib.sh); runs go
# to bench-results/hub-DATE.json.
# Usage: bench/hub.sh [SUBSCRIBERS] [MESSAGES_ONE_CHANNEL] [RATE_ONE_CHANNEL] [MESSAGES_MANY] [RATE_MANY]
#        SB_PROFILE=debug bench/hub.sh 200 200 100 500 200   (quick smoke run on a debug build)
#        WRITE_DELAY_MS=10 bench/hub.sh                      (gather pushes up to 10 ms per write)
#        SB=bench-results/sb-OLD LOAD=bench-results/bench-OLD bench/hub.sh   (other builds, not rebuilt)
set -euo pipefail
cd "$(dirname "$0")/.."
SUBS=${1:-1000}; MSG1=${2:-2000}; RATE1=${3:-200}; MSGN=${4:-20000}; RATEN=${5:-2000}
PROFILE=${SB_PROFILE:-release}; ROUNDS=${ROUNDS:-3}
# SB=PATH runs that server binary instead of building (an A/B run of two builds).
if [ -n "${SB:-}" ]; then
  :
elif [ "$PROFILE" = release ]; then
  cargo build --release -q -p switchboard-cli -p switchboard-bench
else
  cargo build -q -p switchboard-cli -p switchboard-bench
fi
. bench/lib.sh
bench_quiet
TARGET=${CARGO_TARGET_DIR:-target}
SB=${SB:-$TARGET/$PROFILE/switchboard}; LOAD=${LOAD:-$TARGET/$PROFILE/switchboard-bench}
# Each subscriber is a socket in this script's client and one in the server.
ulimit -n "$(( SUBS * 2 + 1024 ))" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
bench_workdir

KEY=bench-key
cat >"$TMP/hub.toml" <<TOML
[hub]
write_delay_ms = ${WRITE_DELAY_MS:-0}

[hub.limits]
max_connections = $(( SUBS * 2 + 100 ))

[http]
# Every load connection comes from 127.0.0.1: no per-address cap.
max_connections_per_ip = 0
TOML
$SB serve --config "$TMP/hub.toml" --stun-udp off --stun-tcp off --stun-tls off --https off \
  --http 127.0.0.1:0 --api-key $KEY --log-level warn --access-log false >"$TMP/sb.log" 2>&1 &
PIDS+=($!); SB_PID=$!
for _ in $(seq 100); do grep -q '^http ' "$TMP/sb.log" && break; sleep 0.1; done
grep -q '^http ' "$TMP/sb.log" || { cat "$TMP/sb.log"; exit 1; }
ADDR=$(awk '/^http /{print $3; exit}' "$TMP/sb.log")

# scenario ROUND NAME CHANNELS MESSAGES RATE: one run, printed and recorded.
scenario() {
  local round=$1 name=$2 channels=$3 messages=$4 rate=$5 before after out delivered cpu ccpu
  before=$(cpu_ticks "$SB_PID")
  out=$(/usr/bin/time -f '%U %S' -o "$TMP/load.time" $LOAD hub --server $ADDR --api-key $KEY \
        --subscribers "$SUBS" --channels "$channels" --messages "$messages" --rate "$rate" --duration 60)
  after=$(cpu_ticks "$SB_PID")
  delivered=$(sed -E 's/.* delivered=([0-9]+).*/\1/' <<<"$out")
  cpu=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$delivered" 'BEGIN{ printf "%.3f", (n > 0 ? t / hz * 1e6 / n : 0) }')
  # The load client's CPU (start to exit, connecting included) on the same two cores.
  ccpu=$(awk -v n="$delivered" 'END{ printf "%.3f", (n > 0 ? ($1 + $2) * 1e6 / n : 0) }' "$TMP/load.time")
  printf 'round %s %-14s %s server_cpu_us_per_delivery=%s client_cpu_us_per_delivery=%s\n' "$round" "$name" "$out" "$cpu" "$ccpu"
  bench_record "$name" "rate=$(sed -E 's/.* delivered_rate=([0-9.]+).*/\1/' <<<"$out")" \
    "p99_ms=$(sed -E 's/.* p99_ms=([0-9.]+).*/\1/' <<<"$out")" "cpu_us=$cpu" "client_cpu_us=$ccpu" "delivered=$delivered" \
    "expected=$(sed -E 's/.* expected=([0-9]+).*/\1/' <<<"$out")"
}

echo "machine: $(nproc) cores, $(uname -r); $SUBS WebSocket subscribers; build: $PROFILE; write_delay_ms=${WRITE_DELAY_MS:-0}; $ROUNDS rounds"
for round in $(seq "$ROUNDS"); do
  scenario "$round" one-channel 1 "$MSG1" "$RATE1"
  scenario "$round" many-channels "$SUBS" "$MSGN" "$RATEN"
done
echo
printf '%-14s %30s %26s %30s %30s\n' scenario "deliveries/s (median, min-max)" "p99 ms (median, min-max)" "server CPU us/delivery (median)" "load client CPU us/delivery"
for name in one-channel many-channels; do
  read -r r rlo rhi < <(bench_stats "$name" rate)
  read -r p plo phi < <(bench_stats "$name" p99_ms)
  read -r c clo chi < <(bench_stats "$name" cpu_us)
  read -r k klo khi < <(bench_stats "$name" client_cpu_us)
  printf '%-14s %12.0f (%.0f-%.0f) %12s (%s-%s) %14s (%s-%s) %14s (%s-%s)\n' "$name" "$r" "$rlo" "$rhi" "$p" "$plo" "$phi" "$c" "$clo" "$chi" "$k" "$klo" "$khi"
done
bench_json hub
