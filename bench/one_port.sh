#!/usr/bin/env bash
# One port versus dedicated listeners (issue 18), in one server and one run: HTTPS requests/s
# (h2load, h2 and HTTP/1.1 over TLS) to --https versus --listen, and TURN over TLS (paced
# turnutils_uclient -S, channels) to --stun-tls versus --listen, as server CPU per relayed packet.
# ROUNDS (3) rounds, each side alternating; medians and ranges of each figure and of the
# per-round ratio one-port/dedicated (goal >= 0.95 for the HTTPS rate; <= 1/0.95 for CPU per
# packet). Refuses to run on a busy machine (bench/lib.sh); results in bench-results/.
# Usage: bench/one_port.sh            N=50000 C=32 M=10 (h2load), TURN_M=20 TURN_N=3000
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-50000}; C=${C:-32}; M=${M:-10}; ROUNDS=${ROUNDS:-3}
TURN_M=${TURN_M:-20}; TURN_N=${TURN_N:-3000}
for t in h2load turnutils_uclient turnutils_peer; do
  command -v $t >/dev/null || { echo "bench/one_port.sh: needs $t (apt-get install nghttp2-client coturn)" >&2; exit 2; }
done
cargo build --release -q -p switchboard-cli
. bench/lib.sh
bench_quiet
SB=${CARGO_TARGET_DIR:-target}/release/switchboard
bench_workdir

BASE=$((40000 + RANDOM % 9000))
HTTPS=$BASE; LISTEN=$((BASE + 1)); STUNTLS=$((BASE + 2)); PEER=$((BASE + 3))
$SB serve --http off --https 127.0.0.1:$HTTPS --listen 127.0.0.1:$LISTEN \
  --stun-udp off --stun-tcp off --stun-tls 127.0.0.1:$STUNTLS \
  --turn-realm bench.test --turn-user user:pass --allow-peer 127.0.0.0/8 --relay-ports 50000-54999 \
  --log-level warn --access-log false >"$TMP/sb.log" 2>&1 &
PIDS+=($!); SB_PID=$!
for _ in $(seq 100); do grep -q '^ready' "$TMP/sb.log" && break; sleep 0.1; done
grep -q '^ready' "$TMP/sb.log" || { cat "$TMP/sb.log"; exit 1; }
turnutils_peer -L 127.0.0.1 -p $PEER >/dev/null 2>&1 & PIDS+=($!)

# https SIDE PORT PROTO: one h2load run; records rps.
https() {
  local side=$1 port=$2 proto=$3 flag=() out rps
  [ "$proto" = h1 ] && flag=(--h1)
  out=$(timeout 120 h2load -n "$N" -c "$C" -m "$M" -t 1 "${flag[@]}" "https://127.0.0.1:$port/healthz" 2>&1)
  grep -q " $N succeeded, 0 failed, 0 errored" <<<"$out" || { echo "$out" >&2; exit 1; }
  rps=$(sed -nE 's/^finished in [0-9.]+m?s, ([0-9.]+) req\/s.*/\1/p' <<<"$out")
  printf '%-22s %s %10.0f req/s\n' "$side" "$proto" "$rps"
  bench_record "$side-$proto" "rps=$rps"
}

# turn SIDE PORT: one paced TURN-over-TLS run; records cpu_us per relayed packet and loss.
turn() {
  local side=$1 port=$2 before after out lost sent recv cpu
  before=$(cpu_ticks "$SB_PID")
  out=$(timeout 300 turnutils_uclient -t -S -m "$TURN_M" -n "$TURN_N" -l 170 -z 1 -c -e 127.0.0.1 -r $PEER -g \
        -u user -w pass -p "$port" 127.0.0.1 2>&1 || true)
  after=$(cpu_ticks "$SB_PID")
  lost=$(grep -oE 'Total lost packets [0-9]+ \(([0-9.]+)%\)' <<<"$out" | tail -1 | sed -E 's/.*\(([0-9.]+)%\)/\1/' || true)
  sent=$(grep -oE 'start_mclient: tot_send_msgs=[0-9]+' <<<"$out" | tail -1 | sed 's/.*=//' || true)
  recv=$(grep -oE 'tot_recv_msgs=[0-9]+' <<<"$out" | tail -1 | sed 's/.*=//' || true)
  : "${lost:=100}" "${sent:=0}" "${recv:=0}"
  cpu=$(awk -v t=$((after - before)) -v hz="$HZ" -v p=$((sent + recv)) 'BEGIN{ printf "%.3f", (p > 0 ? t / hz * 1e6 / p : 0) }')
  printf '%-22s turn-tls %8s us CPU/packet  loss %s%%  (%s sent, %s received)\n' "$side" "$cpu" "$lost" "$sent" "$recv"
  bench_record "$side-turn" "cpu_us=$cpu" "loss=$lost"
}

echo "machine: $(nproc) cores, $(uname -r); load average before: $BENCH_LOAD_BEFORE"
echo "HTTPS: $N requests, $C connections x $M streams; TURN over TLS: uclient -m $TURN_M -n $TURN_N paced; $ROUNDS rounds"
# Warm-up.
h2load -n 2000 -c 4 "https://127.0.0.1:$HTTPS/healthz" >/dev/null 2>&1 || true
h2load -n 2000 -c 4 "https://127.0.0.1:$LISTEN/healthz" >/dev/null 2>&1 || true
for _ in $(seq "$ROUNDS"); do
  for proto in h2 h1; do
    https dedicated "$HTTPS" "$proto"
    https one-port "$LISTEN" "$proto"
  done
  turn dedicated "$STUNTLS"
  turn one-port "$LISTEN"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
for what in h2:rps h1:rps turn:cpu_us; do
  kind=${what%%:*}; fig=${what##*:}
  read -r d dl dh < <(bench_stats "dedicated-$kind" "$fig")
  read -r o ol oh < <(bench_stats "one-port-$kind" "$fig")
  read -r q ql qh < <(bench_ratio "one-port-$kind" "dedicated-$kind" "$fig")
  printf '%-5s %-7s dedicated median %.3f (%.3f-%.3f)  one-port median %.3f (%.3f-%.3f)  one-port/dedicated %.3f (%.3f-%.3f)\n' \
    "$kind" "$fig" "$d" "$dl" "$dh" "$o" "$ol" "$oh" "$q" "$ql" "$qh"
done
bench_json one-port
