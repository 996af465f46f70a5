#!/usr/bin/env python3
"""`petrel bench` against a Go client (nats.go's bench package, perf/gobench)
on the same shapes and the same server, alternating the two clients round by
round; prints the median publisher and subscriber rates. `--client` picks
petrel bench's client (raw, the default, or async-nats).

    GO111MODULE=off GOPATH=/usr/share/gocode go build -o target/gobench ./perf/gobench
    python3 perf/client_check.py [--rounds 5] [--server nats-server|petrel] [--client async-nats]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402

GOBENCH = os.path.join(compare.ROOT, "target/gobench")
SHAPES = {"pub": (1, 0, 2_000_000), "1:1": (1, 1, 1_000_000), "1:8": (1, 8, 200_000)}


def run_petrel_bench(port, pubs, subs, msgs, size, client="raw"):
    cmd = [compare.PETREL, "bench", "bench", "-s", f"nats://127.0.0.1:{port}", "--pub", str(pubs), "--sub",
           str(subs), "--msgs", str(msgs), "--size", str(size), "--json", "--no-progress", "--client", client]
    r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    return r["pub"]["msgs_per_sec"], r["sub"]["msgs_per_sec"] if subs else None


def run_gobench(port, pubs, subs, msgs, size):
    cmd = [GOBENCH, "-s", f"nats://127.0.0.1:{port}", "-np", str(pubs), "-ns", str(subs), "-n", str(msgs), "-ms",
           str(size), "bench"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return r["pub_rate"], r.get("sub_rate")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--server", choices=["nats-server", "petrel"], default="nats-server")
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--client", choices=["raw", "async-nats"], default="raw", help="petrel bench's client")
    args = ap.parse_args()
    if not os.path.exists(GOBENCH):
        sys.exit(f"{GOBENCH} missing: build perf/gobench first (see perf/README.md)")
    argv = [compare.nats_server_bin()] if args.server == "nats-server" else [compare.PETREL]
    clients = {
        "petrel bench": lambda *a: run_petrel_bench(*a, client=args.client),
        "nats.go bench": run_gobench,
    }
    res = {(s, c): [] for s in SHAPES for c in clients}
    for rnd in range(args.rounds):
        order = list(clients) if rnd % 2 == 0 else list(reversed(clients))
        for s, (pubs, subs, msgs) in SHAPES.items():
            for c in order:
                srv = compare.Server(argv)
                try:
                    res[(s, c)].append(clients[c](srv.port, pubs, subs, msgs, args.size))
                finally:
                    srv.stop()
                p, q = res[(s, c)][-1]
                print(f"round {rnd + 1} {s:4} {c:14} pub {p:>12,.0f}  sub {q or 0:>12,.0f}", flush=True)
    print()
    print(f"| shape ({args.server}, {args.size} B, --client {args.client}) | petrel bench pub msgs/s | nats.go pub msgs/s | ratio "
          "| petrel bench sub msgs/s | nats.go sub msgs/s | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for s in SHAPES:
        a, b = res[(s, "petrel bench")], res[(s, "nats.go bench")]
        ap_, bp = statistics.median(x[0] for x in a), statistics.median(x[0] for x in b)
        row = f"| {s} | {ap_:,.0f} | {bp:,.0f} | {ap_ / bp:.2f}x"
        if a[0][1] is not None:
            aq, bq = statistics.median(x[1] for x in a), statistics.median(x[1] for x in b)
            row += f" | {aq:,.0f} | {bq:,.0f} | {aq / bq:.2f}x |"
        else:
            row += " | - | - | - |"
        print(row)


if __name__ == "__main__":
    main()
