#!/usr/bin/env python3
"""Memory a server keeps for clients that sent one large message and went
idle: N clients each publish one message of SIZE bytes, then wait; the
server's RSS is read before and after (petrel and nats-server, side by side).

    python3 perf/big_message_rss.py [--clients 300] [--size 1000000]
"""
import argparse
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import PETREL, Server, nats_server_bin  # noqa: E402


def run(argv, clients, size):
    s = Server(argv)
    try:
        time.sleep(0.5)
        before = s.status_kib("VmRSS")
        conns = []
        body = b"x" * size
        # A subscriber counts the messages, so the clients themselves send
        # nothing after their message (a PING would be a read that shrinks
        # the buffer).
        sub = socket.create_connection(("127.0.0.1", s.port))
        sub.recv(4096)
        sub.sendall(b'CONNECT {"verbose":false}\r\nSUB big 1\r\nPING\r\n')
        got = b""
        while b"PONG" not in got:
            got += sub.recv(4096)
        for _ in range(clients):
            c = socket.create_connection(("127.0.0.1", s.port))
            c.recv(4096)
            c.sendall(b'CONNECT {"verbose":false}\r\nPUB big %d\r\n' % size + body + b"\r\n")
            conns.append(c)
        want, seen, deadline = clients * size, 0, time.time() + 60
        sub.settimeout(5)
        while seen < want and time.time() < deadline:
            seen += len(sub.recv(1 << 20))
        time.sleep(1.0)
        after = s.status_kib("VmRSS")
        for c in conns:
            c.close()
        sub.close()
        return before, after
    finally:
        s.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=300)
    ap.add_argument("--size", type=int, default=1_000_000)
    a = ap.parse_args()
    for name, argv in (("petrel", [PETREL]), ("nats-server", [nats_server_bin()])):
        before, after = run(argv, a.clients, a.size)
        per = (after - before) / a.clients
        print(f"{name:12} RSS {before / 1024:7.1f} MiB -> {after / 1024:7.1f} MiB idle after "
              f"{a.clients} x {a.size:,} B messages ({per:,.0f} KiB per client)")


if __name__ == "__main__":
    main()
