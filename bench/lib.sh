# Shared by the bench/*.sh scripts (sourced): the quiet-machine check, median and range of a
# side's runs, and the machine-readable result in bench-results/ (ignored by git).
#
#   bench_quiet                 waits up to QUIET_WAIT (180) s for the 1-minute load average to
#                               drop below MAX_LOAD (0.5), else refuses (exit 1); MAX_LOAD=inf
#                               runs anyway and marks the result "busy"
#   bench_record SIDE K=V...    appends one run of SIDE (name=value figures) to the runs file
#   bench_stats SIDE K          "median min max" of figure K over SIDE's runs
#   bench_ratio A B K           "median min max" of the per-round ratio A/B of figure K
#   bench_json NAME             writes bench-results/NAME-DATE.json: commit, date, machine,
#                               load, every run, the medians and ranges
#   bench_workdir               a scratch folder ($TMP) and a list of background processes
#                               ($PIDS), cleaned up on exit, failing or not: the script's
#                               bench_cleanup_more first if it defines one, then the processes
#                               are stopped and $TMP and the runs file removed
#   cpu_ticks PID               the process's user + system CPU time so far, in ticks of $HZ

BENCH_RUNS=$(mktemp)
trap 'rm -f "$BENCH_RUNS"' EXIT
HZ=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

bench_workdir() {
  TMP=$(mktemp -d); PIDS=()
  trap _bench_cleanup EXIT
}

_bench_cleanup() {
  if declare -F bench_cleanup_more >/dev/null; then bench_cleanup_more || true; fi
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP" "$BENCH_RUNS"
}
BENCH_BUSY=false
BENCH_LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

bench_quiet() {
  local max=${MAX_LOAD:-0.5}
  busy() { [ "$max" != inf ] && awk -v l="$(cut -d' ' -f1 /proc/loadavg)" -v m="$max" 'BEGIN{exit !(l > m)}'; }
  for _ in $(seq $(( ${QUIET_WAIT:-180} / 10 ))); do busy || break; sleep 10; done
  if busy; then
    echo "load average $(cut -d' ' -f1 /proc/loadavg) > $max: the machine is busy, figures would not mean anything (MAX_LOAD=inf to run anyway)" >&2
    exit 1
  fi
  if awk -v l="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN{exit !(l > 0.5)}'; then
    BENCH_BUSY=true
    echo "WARNING: load average $(cut -d' ' -f1 /proc/loadavg): other work is running; these figures are not results" >&2
  fi
  BENCH_LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
}

bench_record() {
  local side=$1; shift
  echo "$side $*" >>"$BENCH_RUNS"
}

# The values of figure K of SIDE's runs, one per line, in run order.
bench_values() {
  awk -v s="$1" -v k="$2" '$1 == s { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) print kv[2] } }' "$BENCH_RUNS"
}

_bench_median_range() {
  sort -g | awk '{v[NR] = $1} END { if (NR == 0) { print "nan nan nan"; exit } m = (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2); print m, v[1], v[NR] }'
}

bench_stats() { bench_values "$1" "$2" | _bench_median_range; }

bench_ratio() {
  paste <(bench_values "$1" "$3") <(bench_values "$2" "$3") |
    awk '$2 > 0 { printf "%.4f\n", $1 / $2 }' | _bench_median_range
}

bench_json() {
  local name=$1 dir out commit
  dir="$(git rev-parse --show-toplevel 2>/dev/null || pwd)/bench-results"
  mkdir -p "$dir"
  commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
  out="$dir/$name-$(date -u +%Y%m%dT%H%M%SZ).json"
  awk -v name="$name" -v commit="$commit" -v date="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
      -v cores="$(nproc)" -v kernel="$(uname -r)" -v before="$BENCH_LOAD_BEFORE" \
      -v after="$(cut -d' ' -f1-3 /proc/loadavg)" -v busy="$BENCH_BUSY" '
    BEGIN { printf "{\"bench\":\"%s\",\"commit\":\"%s\",\"date\":\"%s\",\"cores\":%s,\"kernel\":\"%s\",\"load_before\":\"%s\",\"load_after\":\"%s\",\"busy\":%s,\"runs\":[", name, commit, date, cores, kernel, before, after, busy }
    { printf "%s{\"side\":\"%s\"", (NR > 1 ? "," : ""), $1
      for (i = 2; i <= NF; i++) { split($i, kv, "="); printf ",\"%s\":%s", kv[1], (kv[2] ~ /^-?[0-9.]+$/ ? kv[2] : "\"" kv[2] "\"") }
      printf "}" }
    END { print "]}" }' "$BENCH_RUNS" >"$out"
  echo "result: $out"
}
