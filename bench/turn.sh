#!/usr/bin/env bash
# TURN relay: switchboard vs coturn's turnserver under the same paced turnutils_uclient load,
# on this machine (loopback only, bounded in time), ROUNDS (3) rounds alternating switchboard,
# coturn, switchboard, ... so drift in the machine hits both alike.
#
# Each run prints the server CPU per relayed packet (from /proc, utime+stime), loss and average
# RTT; then per case the median and min-max of each side's CPU per packet and of the per-round
# ratio switchboard/coturn (goal <= 0.67). With "knee" each round also raises the paced load
# (-m) until loss appears and records the largest loss-free load. Refuses to run on a busy
# machine (bench/lib.sh); the runs go to bench-results/turn-DATE.json.
#
# Usage: bench/turn.sh [quick|full|knee]   (default quick: UDP channels at -m 40)
#        SB=bench-results/sb-OLD bench/turn.sh full   (another build, not rebuilt)
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:-quick}
M=${M:-40}; N=${N:-5000}; ROUNDS=${ROUNDS:-3}
for t in turnserver turnutils_uclient turnutils_peer; do
  command -v $t >/dev/null || { echo "bench/turn.sh: needs coturn ($t): apt-get install coturn" >&2; exit 2; }
done
# SB=PATH runs that binary instead of building (an A/B run of two builds against the same anchor).
[ -n "${SB:-}" ] || cargo build --release -q -p switchboard-cli
. bench/lib.sh
bench_quiet
SB=${SB:-${CARGO_TARGET_DIR:-target}/release/switchboard}
bench_workdir

PEER_PORT=$((30000 + RANDOM % 5000))
turnutils_peer -L 127.0.0.1 -p $PEER_PORT >/dev/null 2>&1 & PIDS+=($!)

start_switchboard() {  # port
  $SB serve --stun-udp 127.0.0.1:$1 --stun-tcp 127.0.0.1:$1 --stun-tls off --http off --log-level warn \
    --turn-realm bench.test --turn-user user:pass --allow-peer 127.0.0.0/8 --relay-ports 40000-44999 \
    >"$TMP/sb.out" 2>"$TMP/sb.err" &
  echo $!
}
start_coturn() {  # port
  cat >"$TMP/coturn.conf" <<CONF
listening-ip=127.0.0.1
relay-ip=127.0.0.1
listening-port=$1
min-port=45000
max-port=49999
realm=bench.test
lt-cred-mech
user=user:pass
fingerprint
no-tls
no-dtls
allow-loopback-peers
no-cli
no-multicast-peers
pidfile=$TMP/coturn.pid
log-file=$TMP/coturn.log
CONF
  turnserver -c "$TMP/coturn.conf" >/dev/null 2>&1 &
  echo $!
}

# run_case NAME PID PORT M FLAGS... -> prints "cpu_us_per_pkt loss_pct rtt_ms sent recv"
run_case() {
  local name=$1 pid=$2 port=$3 m=$4; shift 4
  sleep 0.7
  local before after out lost rtt sent recv
  before=$(cpu_ticks "$pid")
  out=$(timeout 300 turnutils_uclient -m "$m" -n "$N" -l 170 -z 1 "$@" -e 127.0.0.1 -r $PEER_PORT -g \
        -u user -w pass -p "$port" 127.0.0.1 2>&1 || true)
  after=$(cpu_ticks "$pid")
  lost=$(grep -oE 'Total lost packets [0-9]+ \(([0-9.]+)%\)' <<<"$out" | tail -1 | sed -E 's/.*\(([0-9.]+)%\)/\1/')
  rtt=$(grep -oE 'Average round trip delay [0-9.]+' <<<"$out" | tail -1 | awk '{print $5}')
  sent=$(grep -oE 'start_mclient: tot_send_msgs=[0-9]+' <<<"$out" | tail -1 | sed 's/.*=//')
  recv=$(grep -oE 'tot_recv_msgs=[0-9]+' <<<"$out" | tail -1 | sed 's/.*=//')
  : "${lost:=100}" "${rtt:=nan}" "${sent:=0}" "${recv:=0}"
  # Relayed packets: each echoed message crosses the relay twice (to the peer and back).
  awk -v t=$((after - before)) -v hz="$HZ" -v s="$sent" -v r="$recv" -v l="$lost" -v rtt="$rtt" \
    'BEGIN{ pk = s + r; printf "%s %s %s %d %d\n", (pk>0 ? sprintf("%.2f", t/hz*1e6/pk) : "nan"), l, rtt, s, r }'
}

CASES=("udp-channel:-c")
[ "$WHAT" = full ] && CASES=("udp-channel:-c" "udp-send:-s" "tcp-channel:-t -c" "tcp-send:-t -s")

bench_server() {  # kind round: runs the cases once against a fresh server, records each
  local kind=$1 round=$2 port pid
  port=$((20000 + RANDOM % 5000))
  if [ "$kind" = switchboard ]; then pid=$(start_switchboard $port); else pid=$(start_coturn $port); fi
  PIDS+=($pid)
  for c in "${CASES[@]}"; do
    local name=${c%%:*} flags=${c#*:}
    # shellcheck disable=SC2086
    read -r cpu loss rtt sent recv < <(run_case "$kind" "$pid" "$port" "$M" $flags)
    printf 'round %s %-12s %-12s m=%-3s %8s us CPU/pkt  loss %6s%%  rtt %6s ms  (%s sent, %s received)\n' \
      "$round" "$kind" "$name" "$M" "$cpu" "$loss" "$rtt" "$sent" "$recv"
    bench_record "$kind-$name" "cpu_us=$cpu" "loss=$loss" "rtt_ms=$rtt"
  done
  if [ "$WHAT" = knee ]; then
    local knee=0
    for m in 40 60 80 100 120 160 200; do
      read -r cpu loss rtt sent recv < <(run_case "$kind" "$pid" "$port" "$m" -c)
      printf 'round %s %-12s knee probe   m=%-3s %8s us CPU/pkt  loss %6s%%  rtt %6s ms\n' "$round" "$kind" "$m" "$cpu" "$loss" "$rtt"
      if awk -v l="$loss" 'BEGIN{exit !(l+0 == 0)}'; then knee=$m; else break; fi
    done
    bench_record "$kind-knee" "m=$knee"
  fi
  kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
}

for round in $(seq "$ROUNDS"); do
  bench_server switchboard "$round"
  bench_server coturn "$round"
done
echo
echo "machine: $(nproc) cores, $(uname -r); uclient -m $M -n $N -l 170 -z 1 (paced); $ROUNDS rounds, median (min-max)"
for c in "${CASES[@]}"; do
  name=${c%%:*}
  read -r a alo ahi < <(bench_stats "switchboard-$name" cpu_us)
  read -r b blo bhi < <(bench_stats "coturn-$name" cpu_us)
  read -r r rlo rhi < <(bench_ratio "switchboard-$name" "coturn-$name" cpu_us)
  read -r la _ lahi < <(bench_stats "switchboard-$name" loss)
  read -r lb _ lbhi < <(bench_stats "coturn-$name" loss)
  printf '%-12s CPU per relayed packet: switchboard %s us (%s-%s), coturn %s us (%s-%s), ratio %s (%s-%s; goal <= 0.67); loss %s%% (max %s) vs %s%% (max %s)\n' \
    "$name" "$a" "$alo" "$ahi" "$b" "$blo" "$bhi" "$r" "$rlo" "$rhi" "$la" "$lahi" "$lb" "$lbhi"
done
if [ "$WHAT" = knee ]; then
  read -r ka kalo kahi < <(bench_stats switchboard-knee m)
  read -r kb kblo kbhi < <(bench_stats coturn-knee m)
  echo "knee (largest loss-free -m): switchboard $ka ($kalo-$kahi), coturn $kb ($kblo-$kbhi)"
fi
bench_json "turn-$WHAT"
