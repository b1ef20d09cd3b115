#!/usr/bin/env bash
# One measured run against a fresh release evidenceosd: a new data directory under $BENCH_ROOT
# (default /tmp/evidenceos-bench), the demo holdout with its pool budgets raised so thousands of
# lifecycles fit, the daemon on a free loopback port, then evidenceos-bench with the arguments
# given (e.g. --lifecycles 6000 --concurrency 64). The bench's JSON line is the last stdout line.
# Build first: cargo build --release -p evidenceos-cli -p evidenceos-bench
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${CARGO_TARGET_DIR:-$repo/target}/release"
root="${BENCH_ROOT:-/tmp/evidenceos-bench}"
data="$root/data-$$"
mkdir -p "$data/holdouts"
cp -r "$repo/examples/holdouts/demo" "$data/holdouts/"
python3 - "$data/holdouts/demo/manifest.json" <<'PY'
import json, sys
path = sys.argv[1]
manifest = json.load(open(path))
manifest["holdout_k_bits_budget"] = 1e15
manifest["holdout_access_credit_budget"] = 1e15
json.dump(manifest, open(path, "w"))
PY
"$bin/evidenceosd" --data-dir "$data" --listen 127.0.0.1:0 ${DAEMON_FLAGS:-} >"$root/daemon-$$.out" 2>"$root/daemon-$$.log" &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do
  addr="$(awk '{print $4; exit}' "$root/daemon-$$.out")"
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { cat "$root/daemon-$$.log" >&2; exit 1; }
"$bin/evidenceos-bench" --endpoint "http://$addr" --measure-fdatasync "$data" "$@"
