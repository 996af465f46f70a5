#!/usr/bin/env python3
"""A long soak (not in CI): one server under mixed load for --minutes, with
counts that prove no message was lost for healthy subscribers, and RSS and
open file descriptors sampled so growth shows.

Running at once, raw protocol over loopback:
  - a publisher on `soak.data` at --rate msgs/s, each payload its sequence
    number; 4 healthy subscribers check every sequence number arrives once
    and in order;
  - request/reply: a responder on `soak.rr` and a requester at --rr-rate
    requests/s, each reply checked (5 s timeout);
  - subscription churn: one connection subscribing and unsubscribing 50
    subjects and a wildcard, over and over;
  - connection churn: connect, CONNECT, PING/PONG, close, every 20 ms;
  - a stalled subscriber on `soak.data` and `soak.bulk` (1 KiB, one for
    every ten data messages) that never reads; when the server
    cuts it off (max_pending 8 MiB in the soak's file) a new one takes its
    place;
  - a reload (SIGHUP) every minute, the file alternating `max_connections`.

    python3 perf/soak.py [--minutes 30] [--server petrel|nats-server]

Prints one line a minute and a summary; exits 1 if a healthy subscriber
lost, duplicated or reordered a message, or a request went unanswered.
"""
import argparse
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import PETREL, Server, nats_server_bin  # noqa: E402

STOP = threading.Event()
BULK = b"b" * 1024


def connect(port, name):
    c = socket.create_connection(("127.0.0.1", port))
    f = c.makefile("rb")
    f.readline()  # INFO
    c.sendall(b'CONNECT {"verbose":false,"pedantic":false,"name":"%s"}\r\nPING\r\n' % name.encode())
    while f.readline() != b"PONG\r\n":
        pass
    return c, f


class Counter:
    def __init__(self):
        self.lock = threading.Lock()
        self.n = {}

    def add(self, k, v=1):
        with self.lock:
            self.n[k] = self.n.get(k, 0) + v

    def get(self, k):
        with self.lock:
            return self.n.get(k, 0)


C = Counter()


def read_msgs(f, sock, on_msg):
    """Reads MSG frames, answering server PINGs, until the socket ends."""
    while not STOP.is_set():
        line = f.readline()
        if not line:
            return
        if line.startswith(b"MSG "):
            parts = line.split()
            size = int(parts[-1])
            body = f.read(size + 2)[:-2]
            on_msg(parts, body)
        elif line == b"PING\r\n":
            sock.sendall(b"PONG\r\n")


def healthy_sub(port, i, published):
    c, f = connect(port, f"healthy-{i}")
    c.sendall(b"SUB soak.data 1\r\nPING\r\n")
    expect = [None]

    def on_msg(_parts, body):
        seq = int(body)
        if expect[0] is None:
            expect[0] = seq
        if seq != expect[0]:
            C.add("lost_or_reordered")
            print(f"healthy-{i}: expected {expect[0]}, got {seq}", flush=True)
        expect[0] = seq + 1
        C.add(f"received-{i}")

    c.settimeout(None)
    read_msgs(f, c, on_msg)
    C.add("healthy_gone") if not STOP.is_set() else None


def publisher(port, rate):
    c, f = connect(port, "publisher")
    threading.Thread(target=read_msgs, args=(f, c, lambda *_: None), daemon=True).start()
    seq, t0 = 0, time.time()
    while not STOP.is_set():
        due = int((time.time() - t0) * rate)
        batch, data = [], 0
        while seq < due:
            body = str(seq).encode()
            batch.append(b"PUB soak.data %d\r\n%s\r\n" % (len(body), body))
            if seq % 10 == 0:
                # 1 KiB for the stalled subscriber only: it reaches
                # max_pending within a minute.
                batch.append(b"PUB soak.bulk 1024\r\n" + BULK + b"\r\n")
            seq += 1
            data += 1
        if batch:
            c.sendall(b"".join(batch))
            C.add("published", data)
        time.sleep(0.005)
    # A PING round trip: everything before it was taken in.
    c.sendall(b"PING\r\n")
    time.sleep(0.5)


def responder(port):
    c, f = connect(port, "responder")
    c.sendall(b"SUB soak.rr 1\r\nPING\r\n")

    def on_msg(parts, body):
        reply = parts[3]
        c.sendall(b"PUB %s %d\r\n%s\r\n" % (reply, len(body), body))

    read_msgs(f, c, on_msg)


def requester(port, rate):
    c, f = connect(port, "requester")
    c.sendall(b"SUB _INBOX.soak.* 1\r\nPING\r\n")
    pending = {}
    lock = threading.Lock()

    def on_msg(parts, body):
        with lock:
            if pending.pop(int(body), None) is not None:
                C.add("rr_answered")

    threading.Thread(target=read_msgs, args=(f, c, on_msg), daemon=True).start()
    n = 0
    while not STOP.is_set():
        body = str(n).encode()
        with lock:
            pending[n] = time.time()
            late = [k for k, t in pending.items() if time.time() - t > 5]
            for k in late:
                pending.pop(k)
                C.add("rr_unanswered")
                print(f"request {k} unanswered after 5 s", flush=True)
        c.sendall(b"PUB soak.rr _INBOX.soak.%d %d\r\n%s\r\n" % (n, len(body), body))
        C.add("rr_sent")
        n += 1
        time.sleep(1.0 / rate)


def sub_churn(port):
    c, f = connect(port, "sub-churn")
    threading.Thread(target=read_msgs, args=(f, c, lambda *_: None), daemon=True).start()
    sid = 0
    while not STOP.is_set():
        subs = []
        for i in range(50):
            sid += 1
            subs.append(sid)
            c.sendall(b"SUB churn.%d %d\r\n" % (i, sid))
        sid += 1
        c.sendall(b"SUB churn.* %d\r\n" % sid)
        subs.append(sid)
        for s in subs:
            c.sendall(b"UNSUB %d\r\n" % s)
        C.add("sub_churn_rounds")
        time.sleep(0.02)


def conn_churn(port):
    while not STOP.is_set():
        try:
            c, _f = connect(port, "conn-churn")
            c.close()
            C.add("conn_churn")
        except OSError:
            C.add("conn_churn_failed")
        time.sleep(0.02)


def slow_consumers(mport):
    """The server's count of connections cut off as slow consumers (a
    client that never reads cannot see its own close: the FIN waits behind
    the data it did not read)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/varz", timeout=10) as r:
        return json.load(r)["slow_consumers"]


def stalled(port, mport):
    while not STOP.is_set():
        cut = slow_consumers(mport)
        c = socket.create_connection(("127.0.0.1", port))
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.sendall(b'CONNECT {"verbose":false,"name":"stalled"}\r\nSUB soak.data 1\r\nSUB soak.bulk 2\r\n')
        # Never read; once a second, see whether the server cut it off.
        while not STOP.is_set() and slow_consumers(mport) == cut:
            time.sleep(1)
        c.close()
        if not STOP.is_set():
            C.add("stalled_cut_off")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


CONF = "max_pending: 8MB\nmax_connections: {n}\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--server", default="petrel", choices=["petrel", "nats-server"])
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--rr-rate", type=int, default=100)
    a = ap.parse_args()
    conf = os.path.join(tempfile.mkdtemp(prefix="petrel-soak-"), "soak.conf")
    with open(conf, "w") as f:
        f.write(CONF.format(n=10000))
    mport = free_port()
    argv = [PETREL if a.server == "petrel" else nats_server_bin(), "-c", conf, "-m", str(mport)]
    s = Server(argv)
    port = s.port
    threads = [threading.Thread(target=healthy_sub, args=(port, i, None), daemon=True) for i in range(4)]
    threads += [threading.Thread(target=responder, args=(port,), daemon=True)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    for target, args in ((publisher, (port, a.rate)), (requester, (port, a.rr_rate)), (sub_churn, (port,)),
                         (conn_churn, (port,)), (stalled, (port, mport))):
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        threads.append(t)
    start = time.time()
    end = start + a.minutes * 60
    samples = []
    minute = 0
    while time.time() < end:
        time.sleep(10)
        samples.append((time.time() - start, s.status_kib("VmRSS"), fds(s.proc.pid)))
        if time.time() - start >= (minute + 1) * 60:
            minute += 1
            with open(conf, "w") as f:
                f.write(CONF.format(n=10000 + minute % 2))
            os.kill(s.proc.pid, signal.SIGHUP)
            C.add("reloads")
            _, rss, fd = samples[-1]
            print(f"min {minute:3}: published {C.get('published'):,} received {C.get('received-0'):,} "
                  f"rr {C.get('rr_answered'):,}/{C.get('rr_sent'):,} conn churn {C.get('conn_churn'):,} "
                  f"stalled cut {C.get('stalled_cut_off')} RSS {rss / 1024:.1f} MiB fds {fd}", flush=True)
    STOP.set()
    time.sleep(2)
    published = C.get("published")
    received = [C.get(f"received-{i}") for i in range(4)]
    warm = [x for x in samples if x[0] >= 120] or samples
    rss = [x[1] for x in warm]
    fd = [x[2] for x in warm]
    print(f"\n{a.server}: {a.minutes:g} min; published {published:,}; each healthy subscriber received "
          f"{', '.join(f'{r:,}' for r in received)}; lost/reordered {C.get('lost_or_reordered')}; "
          f"requests {C.get('rr_sent'):,} sent, {C.get('rr_answered'):,} answered, "
          f"{C.get('rr_unanswered')} unanswered; subscription churn rounds {C.get('sub_churn_rounds'):,}; "
          f"connections churned {C.get('conn_churn'):,} ({C.get('conn_churn_failed')} failed); "
          f"stalled subscribers cut off {C.get('stalled_cut_off')}; reloads {C.get('reloads')}")
    print(f"after warm-up (2 min): RSS {min(rss) / 1024:.1f}-{max(rss) / 1024:.1f} MiB "
          f"(first {rss[0] / 1024:.1f}, last {rss[-1] / 1024:.1f}); open fds {min(fd)}-{max(fd)} "
          f"(first {fd[0]}, last {fd[-1]})")
    s.stop()
    bad = C.get("lost_or_reordered") or C.get("rr_unanswered") or C.get("healthy_gone")
    # Messages still in flight at the stop are not lost: allow one batch.
    short = [published - r for r in received if published - r > a.rate]
    if short:
        print(f"healthy subscribers short by {short}")
    sys.exit(1 if bad or short else 0)


if __name__ == "__main__":
    main()
