#!/usr/bin/env python3
"""Cost of the sampling allocator: petrel's fan-out throughput with heap
sampling on (the default) and off (PETREL_HEAP_SAMPLING=0), alternating,
several rounds, medians.

    python3 perf/heap_sampling.py [--rounds 7] [--msgs 2000000]
"""
import argparse, json, os, statistics, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import Server  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PETREL = os.path.join(ROOT, "target", "release", "petrel")
LOADGEN = os.path.join(ROOT, "target", "release", "petrel-loadgen")


def run(sampling, subs, msgs, size):
    env = dict(os.environ, PETREL_HEAP_SAMPLING="1" if sampling else "0")
    server = Server([PETREL], env=env)
    port = server.port
    try:
        out = subprocess.run([LOADGEN, "--server", f"127.0.0.1:{port}", "--pubs", "1", "--subs", str(subs),
                              "--msgs", str(msgs), "--size", str(size)], capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            sys.exit(f"loadgen failed: {out.stdout}{out.stderr}")
        return json.loads(out.stdout)["delivered_rate"]
    finally:
        server.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--msgs", type=int, default=2_000_000)
    a = ap.parse_args()
    shapes = [("1:8 16 B", 8, 16), ("1:1 8 KiB", 1, 8192)]
    res = {(s, on): [] for s, _, _ in shapes for on in (True, False)}
    for r in range(a.rounds):
        for name, subs, size in shapes:
            for on in ((True, False) if r % 2 == 0 else (False, True)):
                n = a.msgs if size < 1024 else a.msgs // 8
                res[(name, on)].append(run(on, subs, n, size))
        print(f"round {r + 1} done", file=sys.stderr)
    print(f"Heap sampling cost ({a.rounds} rounds, medians of delivered msgs/s)")
    print("| shape | sampling on | sampling off | on / off |")
    print("|---|---:|---:|---:|")
    for name, _, _ in shapes:
        on, off = statistics.median(res[(name, True)]), statistics.median(res[(name, False)])
        print(f"| {name} | {on:,.0f} | {off:,.0f} | {on / off:.3f}x |")


if __name__ == "__main__":
    main()
