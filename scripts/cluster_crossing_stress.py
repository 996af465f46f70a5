"""Stress run of a cluster scenario that used to fail now and then (issue
16): in a three-node cluster (petrel seed, nats-server, petrel), a
subscription made on node 0 right after the mesh forms must receive what a
client of node 2 publishes. It failed about 1 run in 60-100 on the 2-core
VM with two busy loops beside it, until async INFO waited for a client's
first PONG (a server joining during nats-py's handshake put an INFO where
nats-py reads the PONG, and the client never wrote again); 1000 runs in a
row passed after. Runs the scenario N times and, at the first failure,
writes the monitoring documents of every node while the clients are still
connected (live.json), the sockets' queues (sockets.txt) and the logs after
(fail.json) to $OUT (default /tmp). TRACE=1 runs the servers with -DV.

    PETREL_BIN=target/debug/petrel NATS_SERVER_BIN=... \
        python3 scripts/cluster_crossing_stress.py 150
"""
import asyncio, sys, os, re, json, subprocess, urllib.request, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
import test_cluster as tc
import nats

OUT = os.environ.get("OUT", "/tmp")

def mport(n):
    for l in n.log:
        m = re.search(r"Starting http monitor on .*:(\d+)", l) or re.search(r"Starting http monitor on http://.*:(\d+)", l)
        if m: return int(m.group(1))

def get(n, path):
    try:
        return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{mport(n)}{path}", timeout=5).read())
    except Exception as e:
        return repr(e)

# TRACE=1 runs every node with -DV (protocol trace in the logs written at a failure).
EXTRA = ["-m", "-1"] + (["-DV"] if os.environ.get("TRACE") == "1" else [])

def cluster():
    first = tc.Node(tc.PETREL, extra=EXTRA)
    return [first, tc.Node(tc.NATS_SERVER, seed=first, extra=EXTRA), tc.Node(tc.PETREL, seed=first, extra=EXTRA)]

async def run(nodes):
    nc = await nats.connect(nodes[0].url(), user="app", password="app", max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    other = await nats.connect(nodes[2].url(), user="app", password="app")
    try:
        await tc.wait_for(lambda: {f"{u.hostname}:{u.port}" for u in nc.discovered_servers} >= {nodes[1].addr, nodes[2].addr})
        got = []
        await nc.subscribe("failover", cb=tc.collector(got))
        await nc.flush()
        try:
            await tc.crossing(other, nc, "failover.probe")
        except BaseException:
            snap = {k: {"connz": get(n, "/connz?subs=1"), "routez": get(n, "/routez?subs=1"), "varz": get(n, "/varz")} for k, n in enumerate(nodes)}
            json.dump(snap, open(os.path.join(OUT, "live.json"), "w"), indent=1)
            # Socket queues: bytes a server has not read show as its Recv-Q.
            with open(os.path.join(OUT, "sockets.txt"), "w") as f:
                f.write(subprocess.run(["ss", "-tnpi"], capture_output=True, text=True).stdout)
            raise
    finally:
        await nc.close(); await other.close()

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100
for i in range(N):
    nodes = cluster()
    try:
        asyncio.run(run(nodes))
    except BaseException as e:
        print("FAILED", i, repr(e), flush=True)
        out = {}
        for k, n in enumerate(nodes):
            out[k] = {"routez": get(n, "/routez?subs=1"), "subsz": get(n, "/subsz?subs=1&acc=APP"), "log": "".join(n.log)}
        json.dump(out, open(os.path.join(OUT, "fail.json"), "w"), indent=1)
        for n in nodes: n.stop()
        break
    for n in nodes: n.stop()
else:
    print("no failure", flush=True)
