#!/usr/bin/env bash
# Publishing on versus off, measured in one run (issue 16's target: within 5 % at concurrency 64,
# checkpoint at most 2 s behind the durable head at p99). ROUNDS rounds (default 3), each running
# the same load against a fresh daemon with publishing off, to a directory, and to a local
# S3-compatible server (moto, started here on loopback; skipped with a notice if moto_server is
# not installed: pip install "moto[server]"). Modes alternate within a round so drift in the
# machine's speed hits all of them alike. Prints one line per run and the medians.
# Extra arguments go to evidenceos-bench (default: --lifecycles 4000 --concurrency 64).
# DAEMON_CPUS / BENCH_CPUS pin the daemon and the load generator, as in daemon-run.sh;
# EXTRA_DAEMON_FLAGS go to every daemon (e.g. "--runtime sync", with --protocol connect for the bench).
# Build first: cargo build --release -p evidenceos-cli -p evidenceos-bench
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
root="${BENCH_ROOT:-/tmp/evidenceos-bench}"
rounds="${ROUNDS:-3}"
mkdir -p "$root"
[ $# -gt 0 ] || set -- --lifecycles 4000 --concurrency 64
modes="off dir"
moto=""
if command -v moto_server >/dev/null; then
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  moto_server -H 127.0.0.1 -p "$port" >"$root/moto.log" 2>&1 &
  moto=$!
  trap 'kill $moto 2>/dev/null' EXIT
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.1; done
  curl -sf -X PUT "http://127.0.0.1:$port/bench" >/dev/null
  export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 \
    AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench
  modes="off dir s3"
else
  echo "publish-compare: moto_server not found, measuring off and dir only" >&2
fi
results="$root/publish-compare-$$.txt"
: >"$results"
for round in $(seq "$rounds"); do
  for mode in $modes; do
    case "$mode" in
      off) flags="" ;;
      dir) flags="--publish-dir $root/published-$$-$round" ;;
      s3) flags="--publish-s3 s3://bench/run-$$-$round" ;;
    esac
    lag=""
    [ "$mode" = off ] || lag=1
    out="$(DAEMON_FLAGS="$flags ${EXTRA_DAEMON_FLAGS:-}" PUBLISH_LAG="$lag" bash "$repo/bench/scripts/daemon-run.sh" "$@" 2>"$root/run.err" | tail -1)"
    rate="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["lifecycles_per_s"])' "$out")"
    p99="$(grep -o '"checkpoint_delay_ms_p99": [0-9.]*' "$root/run.err" | cut -d' ' -f2 || true)"
    echo "round $round mode $mode lifecycles/s $rate checkpoint_delay_p99_ms ${p99:--}" | tee -a "$results"
    rm -rf "$root/published-$$-$round"
  done
done
python3 - "$results" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    f = line.split()
    runs.setdefault(f[3], []).append((float(f[5]), None if f[7] == "-" else float(f[7])))
off = statistics.median(r for r, _ in runs["off"])
for mode, values in runs.items():
    rate = statistics.median(r for r, _ in values)
    lags = [l for _, l in values if l is not None]
    lag = f", checkpoint delay p99 median {statistics.median(lags):.0f} ms (max {max(lags):.0f})" if lags else ""
    print(f"{mode}: median {rate:.0f} lifecycles/s ({rate / off:.1%} of off){lag}; runs {[r for r, _ in values]}")
PY
