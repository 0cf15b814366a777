#!/usr/bin/env bash
# Benchmarks the opal producer and consumer pipeline against plain rdkafka on
# the local stack, on Tansu with SQLite storage and with memory storage, plus
# the codec microbenchmarks; writes bench/results/latest.json and prints the
# markdown tables the README's Performance section shows.
#
#   scripts/bench.sh [--events N] [--rates 5000,10000,20000] [--latency-secs S]
#
# Runs on its own broker and registry (ports 29092/28081, state in .stack/bench,
# wiped per storage engine) so nothing else's data is in the way. Release build.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
STACK=scripts/dev-stack.sh

export OPAL_STACK_DIR=${OPAL_BENCH_STACK_DIR:-$ROOT/.stack/bench}
export OPAL_KAFKA_PORT=${OPAL_BENCH_KAFKA_PORT:-29092}
export OPAL_REGISTRY_PORT=${OPAL_BENCH_REGISTRY_PORT:-28081}
RESULTS=bench/results
mkdir -p "$RESULTS"

echo "bench.sh: release build" >&2
cargo build --release -p opal-bench --bins

stop() { $STACK down kafka registry >/dev/null 2>&1 || true; }
trap stop EXIT

run_on() {
    local storage=$1 engine=$2
    stop
    rm -rf "$OPAL_STACK_DIR/kafka" "$OPAL_STACK_DIR/registry"
    OPAL_KAFKA_STORAGE=$engine $STACK up
    eval "$($STACK env)"
    target/release/opal-bench run --storage "$storage" --out "$RESULTS/$storage.json" "$@" >/dev/null
}

run_on sqlite "sqlite://tansu.db" "$@"
# The codec microbenchmarks need a registry: the memory run's stack serves.
run_on memory "memory://tansu/" "$@"
echo "bench.sh: codec microbenchmarks (criterion)" >&2
cargo bench -p opal-bench --bench codec -- --quiet >/dev/null
target/release/opal-bench report "$RESULTS/sqlite.json" "$RESULTS/memory.json" \
    --criterion-dir target/criterion --out "$RESULTS/latest.json"
