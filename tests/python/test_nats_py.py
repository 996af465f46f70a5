"""Integration tests with the official Python client (nats-py) against petrel.

The petrel binary comes from PETREL_BIN (scripts/test.sh sets it). Each test
starts its own server on a random loopback port and stops it by PID.
"""

import asyncio
import os
import re
import subprocess
import tempfile
import threading
from pathlib import Path

import nats
from nats.errors import NoRespondersError

PETREL = os.environ.get("PETREL_BIN", "target/debug/petrel")


class Server:
    """petrel with `flags`, and `conf` (text) as `-c <tmp>/server.conf`
    when given; run from `cwd` when given. `tmp` is a folder removed on
    `stop`."""

    def __init__(self, *flags, conf=None, cwd=None):
        self.tmp = tempfile.TemporaryDirectory(prefix="petrel-py-")
        args = [PETREL, "-p", "-1", "-a", "127.0.0.1"]
        if conf is not None:
            path = Path(self.tmp.name) / "server.conf"
            path.write_text(conf)
            args += ["-c", str(path)]
        self.proc = subprocess.Popen(
            [*args, *flags],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            cwd=cwd,
        )
        self.port = None
        self.log = []
        ready = threading.Event()

        def pump():
            for line in self.proc.stderr:
                self.log.append(line)
                m = re.search(r"Listening for client connections on .*:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                if "Server is ready" in line:
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(20):
            self.proc.kill()
            self.tmp.cleanup()
            raise RuntimeError("petrel did not start:\n" + "".join(self.log))
        self.url = f"nats://127.0.0.1:{self.port}"

    def url_with(self, user, password):
        return f"nats://{user}:{password}@127.0.0.1:{self.port}"

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.tmp.cleanup()


async def ready(nc):
    """Flush so the server has our subscriptions. nats-py 2.16 can write its
    flush PING ahead of a SUB still in its pending buffer, so the PONG alone
    does not prove the SUB arrived: give the flusher a moment, then flush
    again (petrel's PONG then also proves every shard has the SUB)."""
    await nc.flush()
    await asyncio.sleep(0.05)
    await nc.flush()


def run(coro_fn, *flags):
    if os.environ.get("PETREL_TEST_TRACE"):
        flags = (*flags, "-DV")
    server = Server("--shards", "2", *flags)
    try:
        asyncio.run(asyncio.wait_for(coro_fn(server.url), 30))
    except BaseException:
        print("".join(server.log))
        raise
    finally:
        server.stop()


def test_pub_sub_across_connections():
    async def body(url):
        sub_nc = await nats.connect(url)
        pub_nc = await nats.connect(url)
        got = []
        done = asyncio.Event()

        async def handler(msg):
            got.append((msg.subject, msg.data))
            if len(got) == 3:
                done.set()

        await sub_nc.subscribe("py.>", cb=handler)
        await ready(sub_nc)
        for i in range(3):
            await pub_nc.publish(f"py.{i}", f"m{i}".encode())
        await pub_nc.flush()
        await asyncio.wait_for(done.wait(), 5)
        assert got == [("py.0", b"m0"), ("py.1", b"m1"), ("py.2", b"m2")]
        await sub_nc.close()
        await pub_nc.close()

    run(body)


def test_queue_group_exactly_once():
    async def body(url):
        conns = [await nats.connect(url) for _ in range(4)]
        counts = [0] * 4
        seen = []

        for i, nc in enumerate(conns):
            async def handler(msg, i=i):
                counts[i] += 1
                seen.append(msg.data)

            await nc.subscribe("work", queue="q", cb=handler)
            await ready(nc)
        pub = await nats.connect(url)
        for i in range(400):
            await pub.publish("work", str(i).encode())
        await pub.flush()
        for _ in range(100):
            if len(seen) >= 400:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        assert sorted(int(x) for x in seen) == list(range(400))
        assert all(c > 0 for c in counts), counts
        for nc in conns + [pub]:
            await nc.close()

    run(body)


def test_request_reply_headers_and_no_responders():
    async def body(url):
        svc = await nats.connect(url)

        async def echo(msg):
            await msg.respond(msg.data.upper())

        await svc.subscribe("svc.upper", cb=echo)
        await ready(svc)
        client = await nats.connect(url)
        reply = await client.request("svc.upper", b"hello", timeout=5)
        assert reply.data == b"HELLO"

        got = asyncio.get_running_loop().create_future()

        async def hdr(msg):
            got.set_result(msg)

        await client.subscribe("hdr", cb=hdr)
        await ready(client)
        await svc.publish("hdr", b"x", headers={"X-Id": "42"})
        msg = await asyncio.wait_for(got, 5)
        assert msg.headers["X-Id"] == "42"

        try:
            await client.request("nobody.home", b"?", timeout=5)
            raise AssertionError("expected no responders")
        except NoRespondersError:
            pass
        await svc.close()
        await client.close()

    run(body)


def test_max_payload_from_info():
    async def body(url):
        nc = await nats.connect(url)
        assert nc.max_payload == 4096
        await nc.close()

    run(body, "--max_payload", "4096")


def test_harness_style_varz_polling():
    """nats-py's own harness passes -m and polls /varz until it answers."""
    import json
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        mport = s.getsockname()[1]
    server = Server("-m", str(mport))
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{mport}/varz", timeout=1) as r:
                    varz = json.loads(r.read())
                    break
            except OSError:
                import time

                time.sleep(0.1)
        else:
            raise AssertionError("/varz never answered")

        async def body(url):
            nc = await nats.connect(url)
            await nc.publish("counted", b"12345")
            await nc.flush()
            await nc.close()

        asyncio.run(body(server.url))
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}/varz", timeout=1) as r:
            varz = json.loads(r.read())
        assert varz["in_msgs"] == 1 and varz["in_bytes"] == 5, varz
    finally:
        server.stop()
