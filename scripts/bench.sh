#!/usr/bin/env bash
# Benchmarks the opal producer and consumer pipeline against plain rdkafka on
# the local stack, on Tansu with SQLite storage and with memory storage, plus
# the codec microbenchmarks; writes bench/results/latest.json and prints the
# markdown tables the README's Performance section shows.
#
#   scripts/bench.sh            (about 5 minutes on a warm 2-core machine)
#
# Runs on its own broker and registry (ports 29092/28081, state in .stack/bench,
# wiped per storage engine) so nothing else's data is in the way. Release build.
#
# Sizes differ per storage engine because Tansu's SQLite engine cannot take the
# memory run's load on this machine: paced produce tops out near 750 events/s
# (one SQLite transaction per small batch), and with a 20 000-event backlog its
# group coordinator stopped answering commits and heartbeats (idle CPU, session
# timeouts; measured twice). Override with OPAL_BENCH_MEMORY_ARGS /
# OPAL_BENCH_SQLITE_ARGS.
#
# Both consumers (plain and pipeline) run with fetch.wait.max.ms=10: Tansu 0.6.0
# holds every fetch for at least half of fetch.wait.max.ms even when it has data
# (tansu-storage service/fetch.rs sleeps before re-checking), which at the
# default 500 ms would put 250+ ms into every latency figure, raw and pipeline alike.
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
    shift 2
    stop
    rm -rf "$OPAL_STACK_DIR/kafka" "$OPAL_STACK_DIR/registry"
    OPAL_KAFKA_STORAGE=$engine $STACK up
    eval "$($STACK env)"
    echo "bench.sh: $storage run" >&2
    target/release/opal-bench run --storage "$storage" --out "$RESULTS/$storage.json" "$@" >/dev/null
}

COMMON=(--kafka-option fetch.wait.max.ms=10)
read -r -a MEMORY_ARGS <<<"${OPAL_BENCH_MEMORY_ARGS:---events 100000 --rates 5000,10000,20000 --latency-secs 5}"
read -r -a SQLITE_ARGS <<<"${OPAL_BENCH_SQLITE_ARGS:---events 5000 --rates 500,1000 --latency-secs 2}"
run_on sqlite "sqlite://tansu.db" "${COMMON[@]}" "${SQLITE_ARGS[@]}"
# The codec microbenchmarks need a registry: the memory run's stack serves.
run_on memory "memory://tansu/" "${COMMON[@]}" "${MEMORY_ARGS[@]}"
echo "bench.sh: codec microbenchmarks (criterion)" >&2
cargo bench -p opal-bench --bench codec -- --quiet >/dev/null
target/release/opal-bench report "$RESULTS/memory.json" "$RESULTS/sqlite.json" \
    --criterion-dir target/criterion --out "$RESULTS/latest.json"
