# Sourced by scripts/bench.sh and scripts/bench-instructions.sh (ROOT set, cwd
# the repository): the benchmarks' own broker, registry and Redis, on ports of
# their own, state in .stack/bench, wiped before they start so no earlier
# run's data is in the way. Redis matters as much as the broker here: on a
# dataset of millions of idempotency keys left by earlier runs (24 h TTL) its
# commands took 2-3x longer, and the pipeline is Redis-bound.
export OPAL_STACK_DIR=${OPAL_BENCH_STACK_DIR:-$ROOT/.stack/bench}
export OPAL_KAFKA_PORT=${OPAL_BENCH_KAFKA_PORT:-29092}
export OPAL_KAFKA_CONTROLLER_PORT=${OPAL_BENCH_KAFKA_CONTROLLER_PORT:-29093}
export OPAL_REGISTRY_PORT=${OPAL_BENCH_REGISTRY_PORT:-28081}
export OPAL_REDIS_PORT=${OPAL_BENCH_REDIS_PORT:-26379}

bench_stack_down() { scripts/dev-stack.sh down kafka registry redis >/dev/null 2>&1 || true; }

# Starts the stack from empty state and exports its KAFKA_BROKERS,
# SCHEMA_REGISTRY_URL and REDIS_URL.
bench_stack_fresh() {
    bench_stack_down
    rm -rf "$OPAL_STACK_DIR/kafka" "$OPAL_STACK_DIR/registry" "$OPAL_STACK_DIR/redis"
    scripts/dev-stack.sh up >&2
    eval "$(scripts/dev-stack.sh env)"
}
