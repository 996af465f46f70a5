#!/usr/bin/env bash
# Installs the NATS tools the tests and perf/compare.py drive (natscli's
# `nats`), pinned, into target/tools; idempotent: a tool already there at
# its pinned version is kept. Needs Go and the Go module proxy.
#
#   scripts/tools.sh        prints the folder it filled
set -euo pipefail
cd "$(dirname "$0")/.."
dir="$PWD/target/tools"
mkdir -p "$dir"

pin() {
    local name=$1 module=$2 version=$3
    if [ -x "$dir/$name" ] && [ -e "$dir/.$name@$version" ]; then
        return
    fi
    GOBIN="$dir" go install "$module@$version" >&2
    rm -f "$dir/.$name@"*
    touch "$dir/.$name@$version"
}

pin nats github.com/nats-io/natscli/nats v0.5.0
echo "$dir"
