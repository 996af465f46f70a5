#!/usr/bin/env python3
"""Client workloads under CPU contention (not in CI): busy loops on every
core, as on a crowded host or a laptop, while nats-py runs workloads that
must not lose anything, against petrel and nats-server in turn. Counts the
trials that failed on each; petrel should fail no more often.

Workloads, each one trial:
  drain     a subscriber with a slow handler has 1,000 messages received
            and queued when its connection drains: every one reaches the
            handler before the close
  connect   50 clients connect at once: all complete (2 s timeout each)
  close     a publisher publishes 1,000 messages and closes at once: the
            close flushes them, a subscriber gets every one
  request   200 concurrent requests to a responder: all answered (5 s)

    python3 perf/contention.py [--rounds 10] [--spinners N]
"""
import argparse
import asyncio
import multiprocessing
import os
import sys
import time

import nats

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import PETREL, Server, nats_server_bin  # noqa: E402

N = 1000


def spin():
    while True:
        pass


async def wait_for(pred, limit=10.0):
    deadline = time.time() + limit
    while not pred() and time.time() < deadline:
        await asyncio.sleep(0.01)
    return pred()


async def drain(url):
    got = []

    async def cb(msg):
        # A slow handler: messages wait in the client's queue.
        await asyncio.sleep(0.001)
        got.append(msg.data)

    sub_nc = await nats.connect(url)
    sub = await sub_nc.subscribe("c.drain", cb=cb)
    await sub_nc.flush()
    pub = await nats.connect(url)
    for i in range(N):
        await pub.publish("c.drain", str(i).encode())
    await pub.flush()
    # Every message has reached the client (handled or queued): the drain
    # must hand each queued one to the handler before it closes.
    await wait_for(lambda: len(got) + sub.pending_msgs >= N)
    await sub_nc.drain()
    await pub.close()
    return len(got) == N, f"{len(got)}/{N} delivered before the drain closed"


async def connect(url):
    results = await asyncio.gather(*(nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
                                     for _ in range(50)), return_exceptions=True)
    ok = [r for r in results if not isinstance(r, Exception)]
    for c in ok:
        await c.close()
    return len(ok) == 50, f"{len(ok)}/50 connected"


async def close(url):
    got = []

    async def cb(msg):
        got.append(msg.data)

    sub_nc = await nats.connect(url)
    await sub_nc.subscribe("c.close", cb=cb)
    await sub_nc.flush()
    pub = await nats.connect(url)
    for i in range(N):
        await pub.publish("c.close", str(i).encode())
    await pub.close()
    ok = await wait_for(lambda: len(got) == N)
    await sub_nc.close()
    return ok, f"{len(got)}/{N} delivered after the publisher closed"


async def request(url):
    svc = await nats.connect(url)

    async def answer(msg):
        await msg.respond(msg.data)

    await svc.subscribe("c.rr", cb=answer)
    await svc.flush()
    nc = await nats.connect(url)
    results = await asyncio.gather(*(nc.request("c.rr", str(i).encode(), timeout=5) for i in range(200)),
                                   return_exceptions=True)
    ok = sum(1 for r in results if not isinstance(r, Exception))
    await nc.close()
    await svc.close()
    return ok == 200, f"{ok}/200 answered"


WORKLOADS = {"drain": drain, "connect": connect, "close": close, "request": request}


def trial(port, name):
    try:
        return asyncio.run(asyncio.wait_for(WORKLOADS[name](f"nats://127.0.0.1:{port}"), 60))
    except Exception as e:  # a hang or an error is a failed trial
        return False, f"{type(e).__name__}: {e}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--spinners", type=int, default=os.cpu_count())
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    a = ap.parse_args()
    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(a.spinners)]
    for p in spinners:
        p.start()
    fails = {}
    try:
        for r in range(a.rounds):
            for name, argv in (("petrel", [PETREL]), ("nats-server", [nats_server_bin()])):
                s = Server(argv)
                try:
                    for w in a.workloads.split(","):
                        ok, what = trial(s.port, w)
                        key = (name, w)
                        fails.setdefault(key, 0)
                        if not ok:
                            fails[key] += 1
                            print(f"round {r + 1}: {name} {w} failed: {what}", flush=True)
                finally:
                    s.stop()
    finally:
        for p in spinners:
            p.kill()
    print(f"\n{a.rounds} rounds, {a.spinners} busy loops on {os.cpu_count()} cores; failed trials:")
    for w in a.workloads.split(","):
        print(f"  {w:8} petrel {fails.get(('petrel', w), 0)}/{a.rounds}   "
              f"nats-server {fails.get(('nats-server', w), 0)}/{a.rounds}")


if __name__ == "__main__":
    main()
