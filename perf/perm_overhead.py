#!/usr/bin/env python3
"""Cost of permission checks on an allowed hot path.

Runs petrel three ways, alternating, for several rounds: no authorization;
a user without permissions; a user whose publish and subscribe allow lists
admit the benchmark subject (the verdict is cached per connection) with a
deny list that does not match it. Reports medians of msgs/s for pub-only and
1:1, and each ratio to the no-auth run.

    python3 perf/perm_overhead.py [--rounds 5] [--msgs 5000000]
"""
import argparse, json, os, statistics, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import Server  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PETREL = os.path.join(ROOT, "target", "release", "petrel")
LOADGEN = os.path.join(ROOT, "target", "release", "petrel-loadgen")

CONFS = {
    "no auth": "",
    "user, no permissions": "authorization { users = [ {user: u, password: p} ] }",
    "user with allow/deny": """authorization { users = [ {user: u, password: p, permissions: {
        publish: {allow: ["bench", "other.>"], deny: ["secret.>"]},
        subscribe: {allow: ["bench", "_INBOX.>"], deny: ["secret.>"]} } } ] }""",
}


def run(conf, shape, msgs):
    d = tempfile.mkdtemp()
    path = os.path.join(d, "s.conf")
    open(path, "w").write(conf + "\n")
    server = Server([PETREL, "-c", path])
    port = server.port
    try:
        args = [LOADGEN, "--server", f"127.0.0.1:{port}", "--msgs", str(msgs), "--size", "16"]
        args += ["--pubs", "1", "--subs", "0" if shape == "pub" else "1"]
        if conf:
            args += ["--user", "u", "--password", "p"]
        out = subprocess.run(args, capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            sys.exit(f"loadgen failed: {out.stdout}{out.stderr}")
        r = json.loads(out.stdout)
        return r["pub_rate"] if shape == "pub" else r["delivered_rate"]
    finally:
        server.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--msgs", type=int, default=5_000_000)
    a = ap.parse_args()
    res = {(c, s): [] for c in CONFS for s in ("pub", "1:1")}
    for r in range(a.rounds):
        for shape in ("pub", "1:1"):
            for name, conf in CONFS.items():
                res[(name, shape)].append(run(conf, shape, a.msgs))
        print(f"round {r + 1} done", file=sys.stderr)
    print(f"Permission checks on the allowed path ({a.rounds} rounds, medians, msgs/s)")
    print("| setup | pub | ratio | 1:1 | ratio |")
    print("|---|---:|---:|---:|---:|")
    base = {s: statistics.median(res[("no auth", s)]) for s in ("pub", "1:1")}
    for name in CONFS:
        row = [f"| {name}"]
        for s in ("pub", "1:1"):
            m = statistics.median(res[(name, s)])
            row += [f"{m:,.0f}", f"{m / base[s]:.2f}x"]
        print(" | ".join(row) + " |")


if __name__ == "__main__":
    main()
