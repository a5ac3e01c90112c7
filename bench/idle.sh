#!/usr/bin/env bash
# Idle cost (issue 21): server RSS per idle WebSocket connection, per idle SSE stream, per idle
# TURN allocation and per idle STUN/TCP connection, at COUNT (10,000) of each, and the RSS left
# once they have all closed. Each kind ROUNDS (3) times, each round on a fresh release server
# with only that kind's listener; medians and ranges. Goals: <= 8 KiB per idle WebSocket,
# <= 4 KiB per TURN allocation, <= 8 KiB per STUN/TCP connection.
# Usage: bench/idle.sh [KIND...]     (default: ws sse turn stun-tcp); COUNT=10000 ROUNDS=3
# The client is bench/idle.py (the test venv's Python: scripts/test-deps creates .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-10000}; ROUNDS=${ROUNDS:-3}
KINDS=("$@"); [ ${#KINDS[@]} -gt 0 ] || KINDS=(ws sse turn stun-tcp)
PY=.venv/bin/python
[ -x "$PY" ] || { echo "bench/idle.sh: needs the test venv (.venv): run scripts/test-deps" >&2; exit 2; }
cargo build --release -q -p switchboard-cli
. bench/lib.sh
bench_quiet
SB=${CARGO_TARGET_DIR:-target}/release/switchboard
bench_workdir; SB_PID=
bench_cleanup_more() { [ -n "$SB_PID" ] && kill "$SB_PID" 2>/dev/null; }

# serve KIND PORT: starts a server with only KIND's listener; sets SB_PID.
serve() {
  local kind=$1 port=$2 http=off stun_udp=off stun_tcp=off extra=()
  case $kind in
    ws|sse) http=127.0.0.1:$port; extra=(--http-max-connections-per-ip 0) ;;
    stun-tcp) stun_tcp=127.0.0.1:$port; extra=(--stun-max-connections-per-ip 0) ;;
    turn) stun_udp=127.0.0.1:$port
      extra=(--turn-realm bench.test --turn-user user:pass --relay-ports 40000-59999) ;;
  esac
  local args=(--http "$http" --https off --stun-udp "$stun_udp" --stun-tcp "$stun_tcp" --stun-tls off
    --log-level warn --access-log false "${extra[@]}")
  "$SB" serve "${args[@]}" >"$TMP/sb.log" 2>&1 &
  SB_PID=$!
  for _ in $(seq 100); do grep -q '^ready' "$TMP/sb.log" && return; sleep 0.1; done
  cat "$TMP/sb.log" >&2; exit 1
}

for round in $(seq "$ROUNDS"); do
  for kind in "${KINDS[@]}"; do
    port=$((30000 + RANDOM % 9000))
    serve "$kind" "$port"
    line=$("$PY" bench/idle.py "$kind" "$COUNT" "127.0.0.1:$port" "$SB_PID") || { cat "$TMP/sb.log" >&2; exit 1; }
    kill "$SB_PID"; wait "$SB_PID" 2>/dev/null || true; SB_PID=
    echo "round $round: $line"
    # shellcheck disable=SC2086
    bench_record "$kind" $(cut -d' ' -f3- <<<"$line")
  done
done

echo
printf '%-9s %28s %26s %30s\n' kind "bytes per idle item (median, min-max)" "RSS open, KiB (median)" "retained after close, B/item"
for kind in "${KINDS[@]}"; do
  read -r m lo hi < <(bench_stats "$kind" per_item_bytes)
  read -r o _ _ < <(bench_stats "$kind" rss_open_kib)
  read -r r rlo rhi < <(bench_stats "$kind" retained_per_item_bytes)
  printf '%-9s %12s (%s-%s) %26s %18s (%s-%s)\n' "$kind" "$m" "$lo" "$hi" "$o" "$r" "$rlo" "$rhi"
done
bench_json idle
