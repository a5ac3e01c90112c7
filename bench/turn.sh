#!/usr/bin/env bash
# TURN relay: switchboard vs coturn's turnserver under the same paced turnutils_uclient load,
# back to back on this machine (loopback only, bounded in time).
#
# For each server and each case it prints: server CPU per relayed packet (from /proc, utime+stime),
# loss, average RTT; then the ratios. With "knee" it also raises the paced load (-m) until loss
# appears and reports the largest loss-free load for each server.
#
# Usage: bench/turn.sh [quick|full|knee]   (default quick: UDP channels at -m 40)
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:-quick}
M=${M:-40}; N=${N:-5000}
for t in turnserver turnutils_uclient turnutils_peer; do
  command -v $t >/dev/null || { echo "bench/turn.sh: needs coturn ($t): apt-get install coturn" >&2; exit 2; }
done
cargo build --release -q -p switchboard-cli
SB=${CARGO_TARGET_DIR:-target}/release/switchboard
TMP=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
HZ=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

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

bench_server() {  # kind -> runs the cases, prints results to $TMP/kind.res
  local kind=$1 port pid
  port=$((20000 + RANDOM % 5000))
  if [ "$kind" = switchboard ]; then pid=$(start_switchboard $port); else pid=$(start_coturn $port); fi
  PIDS+=($pid)
  local cases=("udp-channel:-c")
  [ "$WHAT" = full ] && cases=("udp-channel:-c" "udp-send:-s" "tcp-channel:-t -c" "tcp-send:-t -s")
  for c in "${cases[@]}"; do
    local name=${c%%:*} flags=${c#*:}
    # shellcheck disable=SC2086
    read -r cpu loss rtt sent recv < <(run_case "$kind" "$pid" "$port" "$M" $flags)
    printf '%-12s %-12s m=%-3s %8s us CPU/pkt  loss %6s%%  rtt %6s ms  (%s sent, %s received)\n' \
      "$kind" "$name" "$M" "$cpu" "$loss" "$rtt" "$sent" "$recv" | tee -a "$TMP/report"
    echo "$name $cpu $loss" >> "$TMP/$kind.res"
  done
  if [ "$WHAT" = knee ]; then
    local knee=0
    for m in 40 60 80 100 120 160 200; do
      read -r cpu loss rtt sent recv < <(run_case "$kind" "$pid" "$port" "$m" -c)
      printf '%-12s knee probe   m=%-3s %8s us CPU/pkt  loss %6s%%  rtt %6s ms\n' "$kind" "$m" "$cpu" "$loss" "$rtt" | tee -a "$TMP/report"
      if awk -v l="$loss" 'BEGIN{exit !(l+0 == 0)}'; then knee=$m; else break; fi
    done
    echo "knee $knee 0" >> "$TMP/$kind.res"
  fi
  kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
}

bench_server switchboard
bench_server coturn
echo "machine: $(nproc) cores, $(uname -r); uclient -m $M -n $N -l 170 -z 1 (paced)"
join -j1 <(sort "$TMP/switchboard.res") <(sort "$TMP/coturn.res") | while read -r name sb_cpu sb_loss ct_cpu ct_loss; do
  if [ "$name" = knee ]; then
    echo "knee (largest loss-free -m): switchboard $sb_cpu, coturn $ct_cpu"
  else
    awk -v n="$name" -v a="$sb_cpu" -v b="$ct_cpu" -v la="$sb_loss" -v lb="$ct_loss" \
      'BEGIN{ printf "%-12s CPU per relayed packet: switchboard %s us, coturn %s us, ratio %.2f (goal <= 0.67); loss %s%% vs %s%%\n", n, a, b, a/b, la, lb }'
  fi
done
