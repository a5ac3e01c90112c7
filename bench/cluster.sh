#!/usr/bin/env bash
# Hub fan-out through Redis with 1, 2 and 3 switchboard nodes on this machine: the same
# WebSocket subscribers spread round-robin over the nodes, the same paced publish load through
# the first node's server API, one redis-server on loopback (no persistence). Also runs one node
# with the in-memory broker as the anchor. Prints, per run, delivered messages/s, latency, the
# nodes' and Redis's CPU per delivered message; ROUNDS (3) rounds of the four runs, then the
# median and min-max of each figure and of the rate relative to the in-memory node. Loopback only,
# bounded in count and time. Refuses to run on a busy machine (bench/lib.sh); runs go to
# bench-results/cluster-DATE.json.
# Usage: bench/cluster.sh [SUBSCRIBERS] [MESSAGES] [RATE] [CHANNELS]
#        SB_PROFILE=debug bench/cluster.sh 200 200 100   (quick smoke run on a debug build)
set -euo pipefail
cd "$(dirname "$0")/.."
SUBS=${1:-1000}; MSG=${2:-2000}; RATE=${3:-200}; CHANNELS=${4:-1}
PROFILE=${SB_PROFILE:-release}; ROUNDS=${ROUNDS:-3}
if [ "$PROFILE" = release ]; then
  cargo build --release -q -p switchboard-cli -p switchboard-bench
else
  cargo build -q -p switchboard-cli -p switchboard-bench
fi
command -v redis-server >/dev/null || { echo "redis-server is not installed (apt install redis-server)"; exit 2; }
. bench/lib.sh
bench_quiet
TARGET=${CARGO_TARGET_DIR:-target}
SB=$TARGET/$PROFILE/switchboard; LOAD=$TARGET/$PROFILE/switchboard-bench
ulimit -n "$(( SUBS * 2 + 1024 ))" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
bench_workdir
stop_all() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; PIDS=(); }

KEY=bench-key
REDIS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$TMP/hub.toml" <<TOML
[hub.limits]
max_connections = $(( SUBS * 2 + 100 ))

[http]
# Every load connection comes from 127.0.0.1: no per-address cap.
max_connections_per_ip = 0
TOML

# start_nodes N BROKER: sets NODES (addresses) and NODE_PIDS
start_nodes() {
  local n=$1 broker=$2 i
  NODES=(); NODE_PIDS=()
  for i in $(seq "$n"); do
    local extra=()
    [ "$broker" = redis ] && extra=(--redis "redis://127.0.0.1:$REDIS_PORT/0")
    $SB serve --config "$TMP/hub.toml" --stun-udp off --stun-tcp off --stun-tls off --https off \
      --http 127.0.0.1:0 --api-key $KEY --node-name "node$i" --log-level warn --access-log false "${extra[@]}" \
      >"$TMP/sb$i.log" 2>&1 &
    PIDS+=($!); NODE_PIDS+=($!)
    for _ in $(seq 100); do grep -q '^http ' "$TMP/sb$i.log" && break; sleep 0.1; done
    grep -q '^http ' "$TMP/sb$i.log" || { cat "$TMP/sb$i.log"; exit 1; }
    NODES+=("$(awk '/^http /{print $3; exit}' "$TMP/sb$i.log")")
  done
}

# run NAME N BROKER
run() {
  local name=$1 n=$2 broker=$3 before=0 after=0 rbefore=0 rafter=0 out delivered p also=()
  start_nodes "$n" "$broker"
  for a in "${NODES[@]:1}"; do also+=(--also "$a"); done
  for p in "${NODE_PIDS[@]}"; do before=$((before + $(cpu_ticks "$p"))); done
  [ -n "${REDIS_PID:-}" ] && rbefore=$(cpu_ticks "$REDIS_PID")
  out=$($LOAD hub --server "${NODES[0]}" "${also[@]}" --api-key $KEY --subscribers "$SUBS" \
        --channels "$CHANNELS" --messages "$MSG" --rate "$RATE" --duration 60)
  for p in "${NODE_PIDS[@]}"; do after=$((after + $(cpu_ticks "$p"))); done
  [ -n "${REDIS_PID:-}" ] && rafter=$(cpu_ticks "$REDIS_PID")
  delivered=$(sed -E 's/.* delivered=([0-9]+).*/\1/' <<<"$out")
  local cpus
  cpus=$(awk -v t=$((after - before)) -v r=$((rafter - rbefore)) -v hz="$HZ" -v n="$delivered" 'BEGIN{
    printf "%.3f %.3f", (n > 0 ? t / hz * 1e6 / n : 0), (n > 0 ? r / hz * 1e6 / n : 0) }')
  printf 'round %s %-16s %s nodes_cpu_us_per_delivery=%s redis_cpu_us_per_delivery=%s\n' \
    "$ROUND" "$name" "$out" "${cpus% *}" "${cpus#* }"
  bench_record "$name" "rate=$(sed -E 's/.* delivered_rate=([0-9.]+).*/\1/' <<<"$out")" \
    "p99_ms=$(sed -E 's/.* p99_ms=([0-9.]+).*/\1/' <<<"$out")" "nodes_cpu_us=${cpus% *}" \
    "redis_cpu_us=${cpus#* }" "delivered=$delivered"
  stop_all
  if [ "$broker" = redis ]; then start_redis; fi
}

start_redis() {
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --logfile "$TMP/redis.log" &
  REDIS_PID=$!; PIDS+=($REDIS_PID)
  for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && return; sleep 0.05; done
  echo "redis-server did not start"; exit 1
}

echo "machine: $(nproc) cores, $(uname -r); $SUBS WebSocket subscribers on $CHANNELS channel(s); $MSG publications at <= $RATE/s; build: $PROFILE"
for ROUND in $(seq "$ROUNDS"); do
  REDIS_PID=
  run memory-1-node 1 memory
  start_redis
  run redis-1-node 1 redis
  run redis-2-nodes 2 redis
  run redis-3-nodes 3 redis
  stop_all
done
echo
printf '%-16s %28s %22s %24s %22s %22s\n' run "deliveries/s (median, range)" "p99 ms (median)" "nodes CPU us/delivery" "Redis CPU us/delivery" "rate / memory-1-node"
for name in memory-1-node redis-1-node redis-2-nodes redis-3-nodes; do
  read -r r rlo rhi < <(bench_stats "$name" rate)
  read -r p plo phi < <(bench_stats "$name" p99_ms)
  read -r c _ _ < <(bench_stats "$name" nodes_cpu_us)
  read -r rc _ _ < <(bench_stats "$name" redis_cpu_us)
  read -r q qlo qhi < <(bench_ratio "$name" memory-1-node rate)
  printf '%-16s %12.0f (%.0f-%.0f) %10s (%s-%s) %24s %22s %10s (%s-%s)\n' "$name" "$r" "$rlo" "$rhi" "$p" "$plo" "$phi" "$c" "$rc" "$q" "$qlo" "$qhi"
done
bench_json cluster
