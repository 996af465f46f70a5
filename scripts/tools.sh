#!/usr/bin/env bash
# Installs the NATS tools the tests and perf/compare.py drive (natscli's
# `nats`, nats-top, nsc), pinned, into target/tools; idempotent: a tool already there at
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

# Built from the module's source: `go install` of these stops at the
# deprecation check, whose version list the proxy here refuses (403),
# while the pinned version itself is served.
pin_source() {
    local name=$1 module=$2 version=$3
    if [ -x "$dir/$name" ] && [ -e "$dir/.$name@$version" ]; then
        return
    fi
    local src
    src=$(go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [ -n "$src" ] || { echo "cannot download $module@$version" >&2; return 1; }
    (cd "$src" && go build -o "$dir/$name" .) >&2
    rm -f "$dir/.$name@"*
    touch "$dir/.$name@$version"
}

pin nats github.com/nats-io/natscli/nats v0.5.0
pin_source nats-top github.com/nats-io/nats-top v0.6.3
pin_source nsc github.com/nats-io/nsc/v2 v2.15.0
echo "$dir"
