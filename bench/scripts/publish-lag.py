#!/usr/bin/env python3
"""How far the published checkpoint trails the durable log, seen from outside the daemon.

Polls a daemon's /metrics every --interval-ms for evidenceos_etl_durable_tree_size and
evidenceos_etl_published_tree_size until it receives SIGTERM (or --seconds pass) and the last durable size is published (at most
--drain-seconds more), then prints one
JSON line: for every durable size it saw, the time from first seeing that size durable to first
seeing a published checkpoint at least that large (p50, p99, max in ms), and the sizes still
unpublished at the end. Resolution is the polling interval.
Usage: publish-lag.py METRICS_ADDR [--interval-ms 20] [--seconds N] [--drain-seconds 10]
"""
import argparse
import json
import signal
import sys
import time
import urllib.request

DURABLE = "evidenceos_etl_durable_tree_size"
PUBLISHED = "evidenceos_etl_published_tree_size"


def scrape(url):
    values = {}
    with urllib.request.urlopen(url, timeout=2) as response:
        for line in response.read().decode().splitlines():
            name, _, value = line.partition(" ")
            if name in (DURABLE, PUBLISHED):
                values[name] = int(float(value))
    return values


def percentile(sorted_values, fraction):
    if not sorted_values:
        return None
    rank = min(len(sorted_values) - 1, max(0, int(round(fraction * len(sorted_values) + 0.5)) - 1))
    return sorted_values[rank]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("addr")
    parser.add_argument("--interval-ms", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--drain-seconds", type=float, default=10)
    args = parser.parse_args()
    url = f"http://{args.addr}/metrics"
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    waiting = []  # (durable size, first seen at), oldest first, not yet published
    delays = []
    scrapes = failures = 0
    last_durable = 0
    drain_until = None
    while True:
        if (stop or (deadline is not None and time.monotonic() >= deadline)) and drain_until is None:
            # The load is over: keep watching (bounded) until the last durable size is published.
            drain_until = time.monotonic() + args.drain_seconds
        if drain_until is not None and (not waiting or time.monotonic() >= drain_until):
            break
        started = time.monotonic()
        try:
            values = scrape(url)
        except OSError:
            failures += 1
            time.sleep(args.interval_ms / 1000)
            continue
        scrapes += 1
        now = time.monotonic()
        durable, published = values.get(DURABLE, 0), values.get(PUBLISHED)
        if published is None:
            print("publish-lag: the daemon exports no published size (is publishing on?)", file=sys.stderr)
            sys.exit(2)
        if durable > last_durable:
            waiting.append((durable, now))
            last_durable = durable
        while waiting and waiting[0][0] <= published:
            delays.append((now - waiting.pop(0)[1]) * 1000)
        time.sleep(max(0, args.interval_ms / 1000 - (time.monotonic() - started)))
    delays.sort()
    print(json.dumps({
        "scrapes": scrapes,
        "scrape_failures": failures,
        "durable_sizes_seen": len(delays) + len(waiting),
        "checkpoint_delay_ms_p50": percentile(delays, 0.50),
        "checkpoint_delay_ms_p99": percentile(delays, 0.99),
        "checkpoint_delay_ms_max": delays[-1] if delays else None,
        "unpublished_at_end": len(waiting),
        "interval_ms": args.interval_ms,
    }))


if __name__ == "__main__":
    main()
