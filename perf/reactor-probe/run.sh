#!/bin/bash
# Forwarder CPU per round trip and client latency, each reactor in turn:
#   perf/reactor-probe/run.sh [ROUNDS]
# Paced at 1,000 round trips a second (6,000), then unpaced (30,000).
set -e
cd "$(dirname "$0")"
cargo build --release -q
P=$PWD/target/release/reactor-probe
one() { # MODE RATE N
    local port=$((20000 + RANDOM % 1000))
    $P "$1" $port > target/fwd.out & local f=$!
    sleep 0.2
    $P responder $port & local r=$!
    sleep 0.1
    local out; out=$($P requester $port "$2" "$3")
    kill $r 2>/dev/null || true; wait $f
    local cpu; cpu=$(grep -o 'CPU [0-9]*' target/fwd.out | cut -d' ' -f2)
    echo "$1 rate=$2: $out; forwarder CPU $((cpu / $3)) us per round trip"
}
for round in $(seq "${1:-2}"); do
    for m in fwd-glommio fwd-uring fwd-multi fwd-epoll; do one $m 1000 6000; done
    for m in fwd-glommio fwd-uring fwd-multi fwd-epoll; do one $m 0 30000; done
done
