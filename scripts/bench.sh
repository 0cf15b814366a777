#!/usr/bin/env bash
# Benchmarks the opal producer and consumer pipeline against plain rdkafka and
# against Apache Kafka's own kafka-producer-perf-test / kafka-consumer-perf-test,
# on the local stack's Apache Kafka broker with default client settings, plus
# the codec microbenchmarks; writes bench/results/latest.json and prints the
# markdown tables the README's Performance section shows.
#
#   scripts/bench.sh            (about 7 minutes on a warm 2-core machine)
#
# Runs on its own broker, registry and Redis (ports 29092/28081/26379, state in
# .stack/bench, wiped at the start; scripts/bench-stack.sh) so nothing else's
# data is in the way. Release build.
# OPAL_BENCH_ARGS overrides the run's size (default: 100 000 events; latency at
# 5 000, 10 000 and 20 000 events/s for 5 s each, in 3 rounds).
# OPAL_BENCH_BEFORE=<an opal-bench binary built from an earlier commit> runs it
# first on the same broker, so before and after sit side by side in one run.
# Then scripts/bench-instructions.sh counts instructions per event of each
# build under callgrind (OPAL_BENCH_INSTRUCTIONS=0 skips it).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# shellcheck source=scripts/bench-stack.sh
. scripts/bench-stack.sh
RESULTS=bench/results
mkdir -p "$RESULTS"

echo "bench.sh: release build" >&2
cargo build --release -p opal-bench -p opal-gateway --bins

trap bench_stack_down EXIT
bench_stack_fresh
kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' scripts/kafka/pom.xml)

read -r -a RUN_ARGS <<<"${OPAL_BENCH_ARGS:---events 100000 --rates 5000,10000,20000 --latency-secs 5 --latency-rounds 3}"
echo "bench.sh: run on Apache Kafka $kafka_version" >&2
BEFORE=${OPAL_BENCH_BEFORE:-}
runs=() builds=()
if [ -n "$BEFORE" ]; then
    echo "bench.sh: the earlier build $BEFORE" >&2
    "$BEFORE" run --broker "apache-kafka-$kafka_version, before" \
        --out "$RESULTS/run-before.json" "${RUN_ARGS[@]}" >/dev/null
    runs+=("$RESULTS/run-before.json") builds+=("before=$BEFORE")
fi
# Each of its pipeline rounds meets an empty Redis, as the earlier build's one
# round did on the fresh stack (that build predates the flag).
"$TARGET_DIR/release/opal-bench" run --broker "apache-kafka-$kafka_version" \
    --out "$RESULTS/run.json" --empty-redis-each-round "${RUN_ARGS[@]}" >/dev/null
label=current
[ -z "$BEFORE" ] || label=after
runs+=("$RESULTS/run.json") builds+=("$label=$TARGET_DIR/release/opal-bench")
# The gateway: opal-gateway to one WebSocket client and one webhook receiver,
# events/s and delivery latency p50/p95/p99 (OPAL_BENCH_GATEWAY=0 skips it;
# OPAL_BENCH_GATEWAY_ARGS overrides its size: default 20 000 events, webhook batch_size 1, latency
# at 1 000 and 10 000 events/s for 10 s).
if [ "${OPAL_BENCH_GATEWAY:-1}" != 0 ]; then
    echo "bench.sh: gateway" >&2
    read -r -a GATEWAY_ARGS <<<"${OPAL_BENCH_GATEWAY_ARGS:-}"
    "$TARGET_DIR/release/opal-bench" gateway --out "$RESULTS/gateway.json" "${GATEWAY_ARGS[@]}"
fi
# The codec benchmarks encode through the registry: before the stack stops.
echo "bench.sh: codec microbenchmarks (criterion)" >&2
cargo bench -p opal-bench --bench codec -- --quiet >/dev/null
bench_stack_down
instructions=()
if [ "${OPAL_BENCH_INSTRUCTIONS:-1}" != 0 ]; then
    echo "bench.sh: instructions per event (callgrind)" >&2
    OPAL_INSTR_OUT="$RESULTS/instructions.json" bash scripts/bench-instructions.sh "${builds[@]}" >/dev/null
    instructions=(--instructions "$RESULTS/instructions.json")
fi
"$TARGET_DIR/release/opal-bench" report "${runs[@]}" "${instructions[@]}" \
    --criterion-dir "$TARGET_DIR/criterion" --out "$RESULTS/latest.json"
