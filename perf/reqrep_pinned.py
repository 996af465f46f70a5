#!/usr/bin/env python3
"""Request/reply latency with the server and the client on separate cores:
the server on core 0 (petrel with one shard, pinned there by its executor;
nats-server under `taskset -c 0` with GOMAXPROCS=1), petrel-loadgen's
requester and responder on core 1. Alternates the servers round by round
and prints the medians of p50/p90/p99/p99.9. It takes the client's CPU
contention out of the comparison, which on a 2-core machine otherwise
dominates the tail (see README, Performance notes).

    python3 perf/reqrep_pinned.py [--rounds 5] [--requests 20000]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402

KEYS = ["p50_us", "p90_us", "p99_us", "p999_us"]


def run(argv, env, requests):
    server = compare.Server(argv, env=env)
    try:
        cmd = ["taskset", "-c", "1", compare.LOADGEN, "--server", f"127.0.0.1:{server.port}", "--pubs", "1",
               "--subs", "1", "--msgs", str(requests), "--size", "16", "--request"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300).stdout
        return json.loads(out.strip().splitlines()[-1])
    finally:
        server.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=20_000)
    args = ap.parse_args()
    if (os.cpu_count() or 1) < 2:
        sys.exit("needs two cores")
    env = dict(os.environ, GOMAXPROCS="1")
    servers = {
        "petrel": ([compare.PETREL, "--shards", "1"], None),
        "nats-server": (["taskset", "-c", "0", compare.nats_server_bin()], env),
    }
    res = {name: {k: [] for k in KEYS} for name in servers}
    for rnd in range(args.rounds):
        order = list(servers) if rnd % 2 == 0 else list(reversed(servers))
        for name in order:
            argv, e = servers[name]
            r = run(argv, e, args.requests)
            print(f"round {rnd + 1} {name:12} " + " ".join(f"{k} {r[k]:8.1f}" for k in KEYS), flush=True)
            for k in KEYS:
                res[name][k].append(r[k])
    print("\n| latency (pinned) | petrel | nats-server | ratio |\n|---|---:|---:|---:|")
    for k in KEYS:
        p = statistics.median(res["petrel"][k])
        n = statistics.median(res["nats-server"][k])
        print(f"| {k[:-3]} | {p:.1f} us | {n:.1f} us | {p / n:.2f}x |")


if __name__ == "__main__":
    main()
