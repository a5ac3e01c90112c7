#!/usr/bin/env bash
# switchboard send -> switchboard receive throughput (issue 19), CLI to CLI on loopback through
# one local server, against a plain TCP copy of the same file as the ceiling. ROUNDS (3) rounds,
# each running the three sides in turn so drift in the machine hits them alike:
#   direct  send/receive, the data channel straight between the two (--host-ip 127.0.0.1)
#   relay   send/receive --relay-only: the data goes through the server's TURN relay
#   tcp     a plain TCP copy (python3: read, send, write, fsync), the ceiling
#   chromium  Chromium -> Chromium: two RTCPeerConnections in one headless Debian Chromium,
#           one data channel, the same bytes in 64 KiB messages (bench/datachannel.mjs), the
#           anchor (issue 19's goal: direct at least Chromium's data-channel throughput)
# Each run moves one SIZE_MB file of random bytes into a fresh directory and checks it with cmp.
# Figures per run: MB/s over the data phase (CLI: the sender's "done" line, from the manifest to
# the receiver's "kept", which follows its fsync; tcp: connect to the receiver's ack after its
# fsync) and CPU seconds per MiB of both processes together (user + sys, start to exit, so the
# CLI's pairing is in it); relay also the server's CPU per MiB. Prints each run, then medians
# and ranges per side and of the per-round ratios to tcp. Refuses to run on a busy machine
# (bench/lib.sh); the runs go to bench-results/send-DATE.json.
# Usage: bench/send.sh            SIZE_MB=200 ROUNDS=3 (MAX_LOAD=inf runs on a busy machine)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-200}; ROUNDS=${ROUNDS:-3}
for t in python3 cmp node; do
  command -v $t >/dev/null || { echo "bench/send.sh: needs $t" >&2; exit 2; }
done
[ -x /usr/bin/time ] || { echo "bench/send.sh: needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
cargo build --release -q -p switchboard-cli
. bench/lib.sh
bench_quiet
SB=${CARGO_TARGET_DIR:-target}/release/switchboard
bench_workdir
MIB=$(awk -v m="$SIZE_MB" 'BEGIN{ printf "%.6f", m * 1e6 / 1048576 }')

head -c $((SIZE_MB * 1000000)) /dev/urandom >"$TMP/file.bin"

BASE=$((40000 + RANDOM % 9000))
HTTP=$BASE; STUN=$((BASE + 1)); TCP=$((BASE + 2))
$SB serve --http 127.0.0.1:$HTTP --https off --stun-udp 127.0.0.1:$STUN --stun-tcp off --stun-tls off \
  --turn-realm bench.test --turn-secret bench-secret --allow-peer 127.0.0.0/8 --relay-ports 50000-54999 \
  --log-level warn --access-log false >"$TMP/sb.log" 2>&1 &
PIDS+=($!); SB_PID=$!
for _ in $(seq 100); do grep -q '^ready' "$TMP/sb.log" && break; sleep 0.1; done
grep -q '^ready' "$TMP/sb.log" || { cat "$TMP/sb.log"; exit 1; }
URL=http://127.0.0.1:$HTTP

# The TCP copy: `tcpcopy.py recv PORT FILE` writes what one connection brings into FILE, fsyncs
# and acks one byte; `tcpcopy.py send PORT FILE` sends FILE and prints the MB/s from connect
# to that ack.
cat >"$TMP/tcpcopy.py" <<'EOF'
import os, socket, sys, time
mode, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if mode == "recv":
    ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port)); ls.listen(1); print("listening", flush=True)
    c, _ = ls.accept()
    with open(path, "wb") as f:
        while True:
            b = c.recv(1 << 20)
            if not b:
                break
            f.write(b)
        f.flush(); os.fsync(f.fileno())
    c.sendall(b"k"); c.close()
else:
    n = 0
    with open(path, "rb") as f:
        t0 = time.monotonic()
        c = socket.create_connection(("127.0.0.1", port))
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            c.sendall(b); n += len(b)
        c.shutdown(socket.SHUT_WR)
        assert c.recv(1) == b"k"
        t1 = time.monotonic()
    print("%.3f" % (n / (t1 - t0) / 1e6))
EOF

# cpu_s FILE: user + sys seconds from a /usr/bin/time -f '%U %S' output.
cpu_s() { awk 'END{ print $1 + $2 }' "$1"; }

# cli SIDE [FLAGS]: one send/receive run; records mbps, cpu_s_per_mib (both CLIs) and, for the
# relay, server_cpu_s_per_mib.
cli() {
  local side=$1; shift
  local out=$TMP/out-$side before after code mbps cpu srv
  rm -rf "$out"; mkdir -p "$out"
  before=$(cpu_ticks "$SB_PID")
  /usr/bin/time -f '%U %S' -o "$TMP/send.time" $SB send "$TMP/file.bin" --server "$URL" --host-ip 127.0.0.1 --json "$@" \
    >"$TMP/send.out" 2>"$TMP/send.err" &
  local spid=$!
  for _ in $(seq 200); do grep -q '"event":"code"' "$TMP/send.out" 2>/dev/null && break; sleep 0.05; done
  code=$(sed -n 's/.*"code":"\([^"]*\)".*/\1/p' "$TMP/send.out" | head -1)
  [ -n "$code" ] || { cat "$TMP/send.err" >&2; exit 1; }
  /usr/bin/time -f '%U %S' -o "$TMP/recv.time" $SB receive "$code" --server "$URL" --host-ip 127.0.0.1 \
    --output "$out" --json "$@" >"$TMP/recv.out" 2>"$TMP/recv.err" || { cat "$TMP/recv.err" >&2; exit 1; }
  wait "$spid" || { cat "$TMP/send.err" >&2; exit 1; }
  after=$(cpu_ticks "$SB_PID")
  cmp -s "$TMP/file.bin" "$out/file.bin" || { echo "bench/send.sh: $side: the received file differs" >&2; exit 1; }
  grep -q "\"route\":\"$side\"" "$TMP/send.out" || { echo "bench/send.sh: $side: took another route: $(grep connected "$TMP/send.out")" >&2; exit 1; }
  mbps=$(grep '"event":"done"' "$TMP/send.out" | sed -E 's/.*"bytes_per_sec":([0-9.]+).*/\1/' | awk '{ printf "%.3f", $1 / 1e6 }')
  cpu=$(awk -v a="$(cpu_s "$TMP/send.time")" -v b="$(cpu_s "$TMP/recv.time")" -v m="$MIB" 'BEGIN{ printf "%.5f", (a + b) / m }')
  srv=$(awk -v t=$((after - before)) -v hz="$HZ" -v m="$MIB" 'BEGIN{ printf "%.5f", t / hz / m }')
  rm -rf "$out"
  if [ "$side" = relay ]; then
    printf '%-7s %9s MB/s  %8s CPU s/MiB (both CLIs)  %8s s/MiB (server)\n' "$side" "$mbps" "$cpu" "$srv"
    bench_record "$side" "mbps=$mbps" "cpu_s_per_mib=$cpu" "server_cpu_s_per_mib=$srv"
  else
    printf '%-7s %9s MB/s  %8s CPU s/MiB (both CLIs)\n' "$side" "$mbps" "$cpu"
    bench_record "$side" "mbps=$mbps" "cpu_s_per_mib=$cpu"
  fi
}

# chromium: one Chromium -> Chromium data-channel run; records mbps and cpu_s_per_mib (every
# Chromium process).
chromium() {
  local r mbps cpu
  r=$(node bench/datachannel.mjs --size-mb "$SIZE_MB") || { echo "bench/send.sh: chromium run failed (scripts/test-deps installs it)" >&2; exit 1; }
  read -r mbps cpu <<<"$r"
  printf '%-8s %8s MB/s  %8s CPU s/MiB (all Chromium processes)\n' chromium "$mbps" "$cpu"
  bench_record chromium "mbps=$mbps" "cpu_s_per_mib=$cpu"
}

# tcp: one plain TCP copy; records mbps and cpu_s_per_mib (both ends).
tcp() {
  local out=$TMP/out-tcp mbps cpu
  rm -rf "$out"; mkdir -p "$out"
  /usr/bin/time -f '%U %S' -o "$TMP/trecv.time" python3 "$TMP/tcpcopy.py" recv "$TCP" "$out/file.bin" >"$TMP/trecv.out" &
  local rpid=$!
  for _ in $(seq 100); do grep -q listening "$TMP/trecv.out" 2>/dev/null && break; sleep 0.05; done
  mbps=$(/usr/bin/time -f '%U %S' -o "$TMP/tsend.time" python3 "$TMP/tcpcopy.py" send "$TCP" "$TMP/file.bin")
  wait "$rpid"
  cmp -s "$TMP/file.bin" "$out/file.bin" || { echo "bench/send.sh: tcp: the copy differs" >&2; exit 1; }
  cpu=$(awk -v a="$(cpu_s "$TMP/tsend.time")" -v b="$(cpu_s "$TMP/trecv.time")" -v m="$MIB" 'BEGIN{ printf "%.5f", (a + b) / m }')
  rm -rf "$out"
  printf '%-7s %9s MB/s  %8s CPU s/MiB (both ends)\n' tcp "$mbps" "$cpu"
  bench_record tcp "mbps=$mbps" "cpu_s_per_mib=$cpu"
}

echo "machine: $(nproc) cores, $(uname -r); load average before: $BENCH_LOAD_BEFORE"
echo "$SIZE_MB MB of random bytes, CLI to CLI on loopback (direct, --relay-only), Chromium to Chromium and a TCP copy; $ROUNDS rounds"
for _ in $(seq "$ROUNDS"); do
  cli direct
  cli relay --relay-only
  chromium
  tcp
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
for side in direct relay chromium tcp; do
  read -r m ml mh < <(bench_stats "$side" mbps)
  read -r c cl ch < <(bench_stats "$side" cpu_s_per_mib)
  printf '%-8s median %8.1f MB/s (%.1f-%.1f)  %.5f CPU s/MiB (%.5f-%.5f)\n' "$side" "$m" "$ml" "$mh" "$c" "$cl" "$ch"
done
read -r s sl sh < <(bench_stats relay server_cpu_s_per_mib)
printf 'relay   server median %.5f CPU s/MiB (%.5f-%.5f)\n' "$s" "$sl" "$sh"
for pair in "direct chromium" "relay chromium" "direct tcp" "relay tcp" "chromium tcp"; do
  read -r a b <<<"$pair"
  read -r q ql qh < <(bench_ratio "$a" "$b" mbps)
  read -r r rl rh < <(bench_ratio "$a" "$b" cpu_s_per_mib)
  printf '%-8s / %-8s: MB/s %.3f (%.3f-%.3f)  CPU per MiB %.2f (%.2f-%.2f)\n' "$a" "$b" "$q" "$ql" "$qh" "$r" "$rl" "$rh"
done
bench_json send
