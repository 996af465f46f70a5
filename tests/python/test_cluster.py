"""nats-py in a cluster of petrel and nats-server nodes: servers discovered
from INFO, fail-over with user and password to a discovered server, and the
server pool as nodes shut down one by one.

PETREL_BIN and NATS_SERVER_BIN (scripts/test.sh sets both) name the
binaries. Every server runs on loopback with random ports and is stopped by
PID.
"""

import asyncio
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import threading
from pathlib import Path

import nats
import pytest

from test_tls import make_pki

PETREL = os.environ.get("PETREL_BIN", "target/debug/petrel")
NATS_SERVER = os.environ.get("NATS_SERVER_BIN") or shutil.which("nats-server")

CONF = """
accounts {
  APP { users [{user: app, password: app}] }
}
"""


class Node:
    """One cluster node: `binary` on random client and route ports, seeded
    with `seed`'s route port when given."""

    def __init__(self, binary, seed=None, extra=()):
        self.tmp = tempfile.TemporaryDirectory(prefix="petrel-py-cluster-")
        conf = Path(self.tmp.name) / "server.conf"
        conf.write_text(CONF)
        args = [binary, "-p", "-1", "-a", "127.0.0.1", "-c", str(conf),
                "--cluster", "nats://127.0.0.1:-1", "--cluster_name", "py"]
        if seed is not None:
            args += ["--routes", f"nats://127.0.0.1:{seed.route_port}"]
        args += list(extra)
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.port = None
        self.route_port = None
        self.log = []
        ready, routed = threading.Event(), threading.Event()

        def pump():
            for line in self.proc.stderr:
                self.log.append(line)
                m = re.search(r"Listening for client connections on .*:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                m = re.search(r"Listening for route connections on .*:(\d+)", line)
                if m:
                    self.route_port = int(m.group(1))
                    routed.set()
                if "Server is ready" in line:
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not (ready.wait(20) and routed.wait(10)):
            self.stop()
            raise RuntimeError(f"{binary} did not start:\n" + "".join(self.log))
        self.addr = f"127.0.0.1:{self.port}"

    def url(self):
        return f"nats://{self.addr}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.tmp.cleanup()


def run_on(nodes, run):
    """Runs the coroutine function `run`, then stops `nodes`; when it fails,
    prints the servers' logs first (pytest shows them with the failure)."""
    try:
        asyncio.run(run())
    except BaseException:
        for i, n in enumerate(nodes):
            print(f"--- node {i} ({n.proc.args[0]}) ---")
            print("".join(n.log))
        raise
    finally:
        for n in nodes:
            n.stop()


def cluster():
    first = Node(PETREL)
    return [first, Node(NATS_SERVER, seed=first), Node(PETREL, seed=first)]


async def wait_for(predicate, limit=10.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def collector(into):
    async def cb(m):
        into.append(m.data)

    return cb


async def crossing(pub, sub, subject):
    """Waits until a message published on `pub` reaches a subscriber on `sub`."""
    got = []
    s = await sub.subscribe(subject, cb=collector(got))
    await sub.flush()

    async def probe():
        while not got:
            await pub.publish(subject, b"probe")
            await pub.flush()
            await asyncio.sleep(0.05)

    await asyncio.wait_for(probe(), 10)
    await s.unsubscribe()


async def fails_over(nodes, nc, other, subject):
    """`nc`, connected to nodes[0], learns the other servers from INFO;
    after nodes[0] is killed it reconnects to one of them and resubscribes,
    so a message `other` publishes on `subject` reaches it again."""
    # Discovered from INFO (the first and after it).
    await wait_for(lambda: {f"{u.hostname}:{u.port}" for u in nc.discovered_servers}
                   >= {nodes[1].addr, nodes[2].addr})
    got = []
    await nc.subscribe(subject, cb=collector(got))
    await nc.flush()
    await crossing(other, nc, subject + ".probe")
    nodes[0].stop()  # SIGKILL

    async def until_received():
        while b"after" not in got:
            await other.publish(subject, b"after")
            await other.flush()
            await asyncio.sleep(0.1)

    await asyncio.wait_for(until_received(), 20)
    assert nc.connected_url.port in (nodes[1].port, nodes[2].port)


def test_servers_are_discovered_and_clients_fail_over():
    nodes = cluster()

    async def run():
        # Credentials as options: nats-py gives them to discovered servers
        # too (a URL's own user and password stay with that URL).
        nc = await nats.connect(nodes[0].url(), user="app", password="app", max_reconnect_attempts=-1,
                                reconnect_time_wait=0.2)
        other = await nats.connect(nodes[2].url(), user="app", password="app")
        try:
            # nats-py reconnects to a discovered server, with the user and
            # password of the URL it was given, and resubscribes.
            await fails_over(nodes, nc, other, "failover")
        finally:
            await nc.close()
            await other.close()

    run_on(nodes, run)


def test_the_server_pool_as_nodes_shut_down_one_by_one():
    nodes = cluster()

    async def run():
        nc = await nats.connect(nodes[0].url(), user="app", password="app", max_reconnect_attempts=-1,
                                reconnect_time_wait=0.2)
        try:
            await wait_for(lambda: len(nc.discovered_servers) >= 2)
            for n in nodes[:2]:
                n.stop()
                await asyncio.sleep(0.3)
                # Still served: by whichever node is left.
                await asyncio.wait_for(nc.flush(), 20)
            assert nc.connected_url.port == nodes[2].port
            got = []
            await nc.subscribe("alone", cb=collector(got))
            await nc.publish("alone", b"x")
            await nc.flush()
            await wait_for(lambda: got)
        finally:
            await nc.close()

    run_on(nodes, run)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make test certificates")
def test_tls_clients_reconnect_by_address_to_a_discovered_server():
    d = tempfile.mkdtemp()
    # A server certificate for the name localhost only (no IP address), so
    # a client reaching a server by address must verify it by the name it
    # first used.
    make_pki(d, san="DNS:localhost")
    tls = ["--tls", "--tlscert", f"{d}/server.pem", "--tlskey", f"{d}/server-key.pem"]
    first = Node(PETREL, extra=tls)
    nodes = [first, Node(NATS_SERVER, seed=first, extra=tls), Node(PETREL, seed=first, extra=tls)]
    ctx = ssl.create_default_context(cafile=f"{d}/ca.pem")

    async def run():
        # Given by name; the other servers are learned by address from INFO.
        nc = await nats.connect(f"tls://localhost:{nodes[0].port}", tls=ctx, tls_hostname="localhost",
                                user="app", password="app", max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        other = await nats.connect(f"tls://localhost:{nodes[2].port}", tls=ctx, user="app", password="app")
        try:
            await fails_over(nodes, nc, other, "tls.failover")
            # Reconnected by address, verified as localhost.
            assert nc.connected_url.hostname == "127.0.0.1", nc.connected_url
        finally:
            await nc.close()
            await other.close()

    run_on(nodes, run)
