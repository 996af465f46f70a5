#!/usr/bin/env python3
"""Does a server's memory follow its load back down? Three loads, each on a
fresh server, petrel and nats-server side by side, alternating; RSS is
read at start, at the peak, and after the load has gone and the server
sat idle for --idle seconds:

  stall    a subscriber that never reads, fed until the server cuts it
           off as a slow consumer (varz slow_consumers; max_pending 64 MiB
           on both)
  bench    --msgs messages 1:1 with petrel-loadgen (16 B), 4 publishers
  profile  a 5-second CPU profile over prof_port (/debug/pprof/profile)
           while a 1:1 load runs

    python3 perf/rss_after_load.py [--rounds 3] [--idle 5] [--msgs 3000000]
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import LOADGEN, PETREL, Server, nats_server_bin  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Peak:
    """Samples a server's RSS every 50 ms in the background."""

    def __init__(self, server):
        self.server, self.peak, self.stop = server, 0, threading.Event()
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, self.server.status_kib("VmRSS"))
            time.sleep(0.05)


def connect(port):
    c = socket.create_connection(("127.0.0.1", port))
    c.recv(4096)
    c.sendall(b'CONNECT {"verbose":false}\r\nPING\r\n')
    got = b""
    while b"PONG" not in got:
        got += c.recv(4096)
    return c


def slow_consumers(s):
    """The server's count of slow consumers cut off (a client that never
    reads cannot see its own close: the FIN waits behind unread data)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{s.mport}/varz", timeout=10) as r:
        return json.load(r)["slow_consumers"]


def stall(s, _args):
    stuck = connect(s.port)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.sendall(b"SUB stall 1\r\nPING\r\n")
    time.sleep(0.2)
    pub = connect(s.port)
    body = b"x" * 1024
    chunk = (b"PUB stall 1024\r\n" + body + b"\r\n") * 256
    deadline = time.time() + 120
    while time.time() < deadline and slow_consumers(s) == 0:
        for _ in range(16):
            pub.sendall(chunk)
    if slow_consumers(s) == 0:
        sys.exit("the stalled subscriber was never cut off")
    pub.close()
    stuck.close()


def bench(s, args):
    subprocess.run([LOADGEN, "--server", f"127.0.0.1:{s.port}", "--pubs", "4", "--subs", "1", "--msgs",
                    str(args.msgs), "--size", "16"], check=True, capture_output=True, timeout=300)


def profile(s, args):
    load = subprocess.Popen([LOADGEN, "--server", f"127.0.0.1:{s.port}", "--pubs", "1", "--subs", "1", "--msgs",
                             str(args.msgs), "--size", "16"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    with urllib.request.urlopen(f"http://127.0.0.1:{s.prof_port}/debug/pprof/profile?seconds=5", timeout=30) as r:
        r.read()
    load.wait(timeout=300)


LOADS = {"stall": stall, "bench": bench, "profile": profile}


def run(argv, load, args):
    prof, mport = free_port(), free_port()
    extra = ["-m", str(mport)] + (["--profile", str(prof)] if load == "profile" else [])
    s = Server(argv + extra)
    s.prof_port, s.mport = prof, mport
    try:
        time.sleep(0.5)
        start = s.status_kib("VmRSS")
        peak = Peak(s)
        LOADS[load](s, args)
        peak.stop.set()
        time.sleep(args.idle)
        return start, peak.peak, s.status_kib("VmRSS")
    finally:
        s.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--idle", type=float, default=5.0)
    ap.add_argument("--msgs", type=int, default=3_000_000)
    ap.add_argument("--loads", default="stall,bench,profile")
    args = ap.parse_args()
    servers = (("petrel", [PETREL]), ("nats-server", [nats_server_bin()]))
    for load in args.loads.split(","):
        rows = {name: [] for name, _ in servers}
        for _ in range(args.rounds):
            for name, argv in servers:
                rows[name].append(run(argv, load, args))
        for name, r in rows.items():
            med = sorted(r, key=lambda x: x[2])[len(r) // 2]
            print(f"{load:8} {name:12} RSS start {med[0] / 1024:6.1f} MiB  peak {med[1] / 1024:6.1f} MiB  "
                  f"idle after {med[2] / 1024:6.1f} MiB   (rounds: "
                  + ", ".join(f"{x[2] / 1024:.0f}" for x in r) + ")")


if __name__ == "__main__":
    main()
