#!/usr/bin/env bash
# Hub fan-out through Centrifugo's client protocol (/connection/websocket, JSON) beside
# switchboard's own WebSocket (/v1/ws) against one server in one run: the bench/hub.sh load
# (SUBSCRIBERS WebSocket subscribers on CHANNELS channels, a paced, bounded publish load through
# the HTTP server API, loopback only), run ROUNDS times per protocol, alternating
# (native, centrifugo, native, centrifugo, ...), so drift in the machine hits both alike.
# Prints each run, then per protocol the median and min–max of delivered messages/s and of
# the server CPU per delivery, and the ratios centrifugo/native (delivered rate) and
# native/centrifugo (CPU per delivery): 1.0 = as fast as native; the goal is >= 0.9.
#
# Usage: bench/centrifugo.sh [SUBSCRIBERS=1000] [MESSAGES=10000] [RATE=1000] [CHANNELS=1]
#        NATIVE=native-json bench/centrifugo.sh      (compare against switchboard.json instead
#                                                     of switchboard.proto)
#        ROUNDS=3 WRITE_DELAY_MS=0 SB_PROFILE=release (the defaults)
#        SB_PROFILE=debug ROUNDS=1 bench/centrifugo.sh 50 200 100   (quick smoke run)
# Only meaningful on a quiet machine: after building, it waits up to QUIET_WAIT (180) seconds
# for the 1-minute load average to drop below MAX_LOAD (0.5), else refuses to run
# (MAX_LOAD=inf skips the check, for smoke runs).
set -euo pipefail
cd "$(dirname "$0")/.."
SUBS=${1:-1000}; MSG=${2:-10000}; RATE=${3:-1000}; CHANNELS=${4:-1}
ROUNDS=${ROUNDS:-3}; NATIVE=${NATIVE:-native}; MAX_LOAD=${MAX_LOAD:-0.5}
PROFILE=${SB_PROFILE:-release}
if [ "$PROFILE" = release ]; then
  cargo build --release -q -p switchboard-cli -p switchboard-bench
else
  cargo build -q -p switchboard-cli -p switchboard-bench
fi
# Wait for the load average to settle (the build above raises it; anything else running would
# distort both protocols' figures): bench/lib.sh.
. bench/lib.sh
bench_quiet
TARGET=${CARGO_TARGET_DIR:-target}
SB=$TARGET/$PROFILE/switchboard; LOAD=$TARGET/$PROFILE/switchboard-bench
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

# run PROTOCOL: one bench run; prints its line and appends "PROTOCOL RATE CPU_US" to runs.txt.
run() {
  local protocol=$1 before after out delivered rate cpu
  before=$(cpu_ticks "$SB_PID")
  out=$($LOAD hub --server "$ADDR" --api-key $KEY --protocol "$protocol" --subscribers "$SUBS" \
        --channels "$CHANNELS" --messages "$MSG" --rate "$RATE" --duration 60)
  after=$(cpu_ticks "$SB_PID")
  delivered=$(sed -E 's/.* delivered=([0-9]+).*/\1/' <<<"$out")
  rate=$(sed -E 's/.* delivered_rate=([0-9.]+)\/s.*/\1/' <<<"$out")
  cpu=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$delivered" 'BEGIN{printf "%.3f", (n > 0 ? t / hz * 1e6 / n : 0)}')
  printf '%-11s %s server_cpu_us_per_delivery=%s\n' "$protocol" "$out" "$cpu"
  echo "$protocol $rate $cpu" >>"$TMP/runs.txt"
  sleep 2 # let the server close the last run's connections
}

# stats PROTOCOL COLUMN: "median min max" of column 2 (rate) or 3 (CPU) of that protocol's runs.
stats() {
  awk -v p="$1" -v c="$2" '$1 == p {print $c}' "$TMP/runs.txt" | sort -g |
    awk '{v[NR] = $1} END {m = (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2); print m, v[1], v[NR]}'
}

echo "machine: $(nproc) cores, $(uname -r); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$SUBS subscribers, $CHANNELS channel(s), $MSG publications at $RATE/s; build: $PROFILE; write_delay_ms=${WRITE_DELAY_MS:-0}; $ROUNDS rounds, alternating $NATIVE / centrifugo"
for _ in $(seq "$ROUNDS"); do
  run "$NATIVE"
  run centrifugo
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
read -r nr nr_lo nr_hi < <(stats "$NATIVE" 2)
read -r cr cr_lo cr_hi < <(stats centrifugo 2)
read -r nc nc_lo nc_hi < <(stats "$NATIVE" 3)
read -r cc cc_lo cc_hi < <(stats centrifugo 3)
awk -v np="$NATIVE" -v nr="$nr" -v nrl="$nr_lo" -v nrh="$nr_hi" -v cr="$cr" -v crl="$cr_lo" -v crh="$cr_hi" \
    -v nc="$nc" -v ncl="$nc_lo" -v nch="$nc_hi" -v cc="$cc" -v ccl="$cc_lo" -v cch="$cc_hi" 'BEGIN {
  printf "%-11s delivered/s median %.0f (%.0f-%.0f)  server CPU us/delivery median %.3f (%.3f-%.3f)\n", np, nr, nrl, nrh, nc, ncl, nch
  printf "%-11s delivered/s median %.0f (%.0f-%.0f)  server CPU us/delivery median %.3f (%.3f-%.3f)\n", "centrifugo", cr, crl, crh, cc, ccl, cch
  printf "ratio       delivered/s centrifugo/%s = %.2f   CPU per delivery %s/centrifugo = %.2f   (goal >= 0.9)\n", np, (nr > 0 ? cr / nr : 0), np, (cc > 0 ? nc / cc : 0)
}'
