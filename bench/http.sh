#!/usr/bin/env bash
# Small-response HTTPS requests/s: switchboard's /healthz against Debian's nginx serving the same
# bytes, over HTTP/1.1 and h2 (h2load, TLS), plus switchboard over HTTP/3 (switchboard-bench h3;
# Debian's nginx 1.22 and h2load have no HTTP/3). Loopback only, bounded in count and time.
# ROUNDS (3) rounds, each alternating switchboard and nginx per protocol; prints each run, then
# per protocol (h1: HTTP/1.1 with STREAMS_PER_CONNECTION pipelined; h1-1: HTTP/1.1, one request
# in flight per connection; h2) the median and min-max of each side's rate and of the per-round ratio
# switchboard/nginx. Refuses to run on a busy machine (bench/lib.sh); runs go to
# bench-results/http-DATE.json.
# Usage: bench/http.sh [REQUESTS] [CONNECTIONS] [STREAMS_PER_CONNECTION]
#        SB_PROFILE=debug bench/http.sh 5000 8 4     (quick smoke run on a debug build)
#        SB=bench-results/sb-OLD LOAD=bench-results/bench-OLD bench/http.sh   (other builds, not rebuilt)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200000}; C=${2:-16}; M=${3:-10}; ROUNDS=${ROUNDS:-3}
PROFILE=${SB_PROFILE:-release}
for tool in h2load nginx openssl curl; do
  command -v "$tool" >/dev/null || { echo "bench/http.sh: $tool missing (apt-get install nghttp2-client nginx openssl curl)"; exit 1; }
done
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
bench_workdir
bench_cleanup_more() { [ -f "$TMP/nginx.pid" ] && kill "$(cat "$TMP/nginx.pid")" 2>/dev/null; }

SB_PORT=$((40000 + RANDOM % 10000)); NG_PORT=$((SB_PORT + 1))
$SB serve --stun-udp off --stun-tcp off --stun-tls off --http off \
  --https 127.0.0.1:$SB_PORT --log-level warn --access-log false >"$TMP/sb.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q '^tls ' "$TMP/sb.log" && break; sleep 0.1; done
grep -q "^https udp" "$TMP/sb.log" || { cat "$TMP/sb.log"; exit 1; }

# nginx: same certificate kind (ECDSA P-256), same groups, the same response bytes.
BODY=$(curl -sk "https://127.0.0.1:$SB_PORT/healthz")
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=localhost -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
cat >"$TMP/nginx.conf" <<CONF
worker_processes $(nproc);
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  client_body_temp_path $TMP/body; proxy_temp_path $TMP/proxy; fastcgi_temp_path $TMP/fcgi;
  uwsgi_temp_path $TMP/uwsgi; scgi_temp_path $TMP/scgi;
  server {
    listen 127.0.0.1:$NG_PORT ssl http2;
    ssl_certificate $TMP/cert.pem; ssl_certificate_key $TMP/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_ecdh_curve X25519:prime256v1;
    location = /healthz { default_type application/json; return 200 '$BODY'; }
  }
}
CONF
nginx -c "$TMP/nginx.conf" -e "$TMP/nginx-error.log"
for _ in $(seq 50); do [ -f "$TMP/nginx.pid" ] && break; sleep 0.1; done
[ "$(curl -sk "https://127.0.0.1:$NG_PORT/healthz" | wc -c)" = "$(printf %s "$BODY" | wc -c)" ] \
  || { echo "nginx does not serve the same body"; exit 1; }

# h2load_rps URL [--h1]: requests/s, checking every request succeeded.
h2load_rps() {
  local url=$1; shift
  local out
  out=$(timeout 120 h2load -n "$N" -c "$C" -m "$M" -t 1 "$@" "$url" 2>&1)
  grep -q " $N succeeded, 0 failed, 0 errored" <<<"$out" || { echo "$out" >&2; echo 0; return; }
  sed -nE 's/^finished in [0-9.]+m?s, ([0-9.]+) req\/s.*/\1/p' <<<"$out"
}

echo "machine: $(nproc) cores, $(uname -r); build: $PROFILE; $N requests, $C connections, $M in flight each; body $(printf %s "$BODY" | wc -c) bytes"
# Warm-up (TLS session set-up, code paths).
h2load -n 2000 -c 4 "https://127.0.0.1:$SB_PORT/healthz" >/dev/null 2>&1 || true
h2load -n 2000 -c 4 "https://127.0.0.1:$NG_PORT/healthz" >/dev/null 2>&1 || true
for round in $(seq "$ROUNDS"); do
  for proto in h1 h1-1 h2; do
    # h1-1: HTTP/1.1 without pipelining (one request in flight per connection).
    case $proto in h1) flag=(--h1) ;; h1-1) flag=(--h1 -m 1) ;; *) flag=() ;; esac
    sb=$(h2load_rps "https://127.0.0.1:$SB_PORT/healthz" "${flag[@]}")
    ng=$(h2load_rps "https://127.0.0.1:$NG_PORT/healthz" "${flag[@]}")
    printf 'round %s %-4s switchboard %10.0f req/s   nginx %10.0f req/s\n' "$round" "$proto" "$sb" "$ng"
    bench_record "switchboard-$proto" "rps=$sb"
    bench_record "nginx-$proto" "rps=$ng"
  done
  h3=$($LOAD h3 --server 127.0.0.1:$SB_PORT --connections "$C" --streams "$M" --requests "$N" --duration 30)
  h3_rps=$(sed -E 's/.* req_per_s=([0-9]+).*/\1/' <<<"$h3")
  printf 'round %s h3   switchboard %10.0f req/s   (%s)\n' "$round" "$h3_rps" "$h3"
  bench_record "switchboard-h3" "rps=$h3_rps"
done
echo
printf '%-6s %28s %28s %26s\n' protocol "switchboard (median, min-max)" "nginx (median, min-max)" "ratio (median, min-max)"
for proto in h1 h1-1 h2; do
  read -r s slo shi < <(bench_stats "switchboard-$proto" rps)
  read -r n nlo nhi < <(bench_stats "nginx-$proto" rps)
  read -r r rlo rhi < <(bench_ratio "switchboard-$proto" "nginx-$proto" rps)
  printf '%-6s %10.0f (%.0f-%.0f) %12.0f (%.0f-%.0f) %10s (%s-%s)\n' "$proto" "$s" "$slo" "$shi" "$n" "$nlo" "$nhi" "$r" "$rlo" "$rhi"
done
read -r s slo shi < <(bench_stats switchboard-h3 rps)
read -r r rlo rhi < <(bench_ratio switchboard-h3 switchboard-h2 rps)
printf '%-6s %10.0f (%.0f-%.0f) %28s   h3/h2 on switchboard %s (%s-%s)\n' h3 "$s" "$slo" "$shi" - "$r" "$rlo" "$rhi"
bench_json http
