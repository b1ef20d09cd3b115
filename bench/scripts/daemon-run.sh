#!/usr/bin/env bash
# One measured run against a fresh release evidenceosd: a new data directory under $BENCH_ROOT
# (default /tmp/evidenceos-bench), the demo holdout with its pool budgets raised so thousands of
# lifecycles fit, the daemon on a free loopback port, then evidenceos-bench with the arguments
# given (e.g. --lifecycles 6000 --concurrency 64). The bench's JSON line is the last stdout line.
# Build first: cargo build --release -p evidenceos-cli -p evidenceos-bench
# Optional: DATA_DIR runs against an existing data directory instead (e.g. one grown by
# evidenceos-grow; it is kept, and the run's lifecycles are added to it); either way the time
# from launch to serving and the resident memory then (VmRSS, and the peak VmHWM) go to stderr
# as "daemon-start: ...".
# Optional: DAEMON_CPUS / BENCH_CPUS pin the daemon and the load generator (taskset -c LIST);
# PUBLISH_LAG=1 adds --metrics-listen and runs publish-lag.py alongside (its JSON line goes to
# stderr, prefixed "publish-lag: "), for daemons started with publishing on.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${CARGO_TARGET_DIR:-$repo/target}/release"
root="${BENCH_ROOT:-/tmp/evidenceos-bench}"
data="${DATA_DIR:-$root/data-$$}"
mkdir -p "$root" "$data/holdouts"
if [ ! -d "$data/holdouts/demo" ]; then
  cp -r "$repo/examples/holdouts/demo" "$data/holdouts/"
  python3 - "$data/holdouts/demo/manifest.json" <<'PY'
import json, sys
path = sys.argv[1]
manifest = json.load(open(path))
manifest["holdout_k_bits_budget"] = 1e15
manifest["holdout_access_credit_budget"] = 1e15
json.dump(manifest, open(path, "w"))
PY
fi
pin() { if [ -n "${1:-}" ]; then echo taskset -c "$1"; fi; }
metrics_flag=""
[ -n "${PUBLISH_LAG:-}" ] && metrics_flag="--metrics-listen 127.0.0.1:0"
launched_ns="$(date +%s%N)"
# shellcheck disable=SC2046,SC2086
$(pin "${DAEMON_CPUS:-}") "$bin/evidenceosd" --data-dir "$data" --listen 127.0.0.1:0 $metrics_flag ${DAEMON_FLAGS:-} \
  >"$root/daemon-$$.out" 2>"$root/daemon-$$.log" &
daemon=$!
poller=""
cleanup='kill $daemon $poller 2>/dev/null; wait $daemon 2>/dev/null'
[ -n "${DATA_DIR:-}" ] || cleanup="$cleanup; rm -rf \"$data\""
trap "$cleanup" EXIT
# A large data directory takes a while to recover: wait up to 20 minutes.
for _ in $(seq 24000); do
  addr="$(awk '{print $4; exit}' "$root/daemon-$$.out")"
  [ -n "$addr" ] && break
  kill -0 $daemon 2>/dev/null || break
  sleep 0.05
done
[ -n "$addr" ] || { cat "$root/daemon-$$.log" >&2; exit 1; }
started_ms=$(( ($(date +%s%N) - launched_ns) / 1000000 ))
echo "daemon-start: serving after ${started_ms} ms; $(grep -E '^Vm(RSS|HWM)' /proc/$daemon/status | tr -s ' \t' ' ' | paste -sd ';')" >&2
if [ -n "${PUBLISH_LAG:-}" ]; then
  for _ in $(seq 100); do
    metrics="$(grep -o 'metrics_listening" addr=[0-9.:]*' "$root/daemon-$$.log" | head -1 | cut -d= -f2)"
    [ -n "$metrics" ] && break
    sleep 0.1
  done
  python3 "$repo/bench/scripts/publish-lag.py" "$metrics" >"$root/lag-$$.json" &
  poller=$!
fi
# Daemon CPU time (user + system, clock ticks) around the measured load: CPU per lifecycle.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$daemon/stat"; }
ticks_before="$(cpu_ticks)"
# shellcheck disable=SC2046
$(pin "${BENCH_CPUS:-}") "$bin/evidenceos-bench" --endpoint "http://$addr" --measure-fdatasync "$data" "$@" \
  | tee "$root/bench-$$.out"
ticks_after="$(cpu_ticks)"
python3 - "$root/bench-$$.out" "$ticks_before" "$ticks_after" "$(getconf CLK_TCK)" <<'PY' >&2
import json, sys
result = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
ticks = int(sys.argv[3]) - int(sys.argv[2])
cpu_us = ticks * 1e6 / int(sys.argv[4])
print(f"daemon-cpu: {cpu_us / 1e6:.2f} s for {result['lifecycles_completed']} lifecycles, "
      f"{cpu_us / max(1, result['lifecycles_completed']):.0f} us per lifecycle (includes pregrow)")
PY
rm -f "$root/bench-$$.out"
if [ -n "$poller" ]; then
  kill -TERM "$poller"
  wait "$poller" || true
  echo "publish-lag: $(cat "$root/lag-$$.json")" >&2
  poller=""
fi
