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

# The broker's log is kept in memory (/dev/shm) unless
# OPAL_BENCH_KAFKA_ON_DISK=1. Kafka does not fsync its log (replication makes
# it durable), so on disk it only adds the kernel's write-back of it, every
# 30 s (vm.dirty_expire_centisecs): on this machine's one ext4 disk each
# write-back held Redis's fsyncs (appendfsync always) for 150-230 ms, which
# the pipeline waits for and a raw consumer does not. With the log on disk,
# the pipeline half of every 10 000/s phase of a run met one (p99 150-200 ms);
# a broker and a Redis in production do not share a disk.
BENCH_KAFKA_LOG=/dev/shm/opal-bench-kafka-$OPAL_KAFKA_PORT

bench_stack_down() {
    scripts/dev-stack.sh down kafka registry redis >/dev/null 2>&1 || true
    rm -rf "$BENCH_KAFKA_LOG"
}

# Starts the stack from empty state and exports its KAFKA_BROKERS,
# SCHEMA_REGISTRY_URL and REDIS_URL.
bench_stack_fresh() {
    bench_stack_down
    rm -rf "$OPAL_STACK_DIR/kafka" "$OPAL_STACK_DIR/registry" "$OPAL_STACK_DIR/redis"
    if [ "${OPAL_BENCH_KAFKA_ON_DISK:-0}" != 1 ] && [ -d /dev/shm ]; then
        mkdir -p "$OPAL_STACK_DIR/kafka" "$BENCH_KAFKA_LOG"
        ln -s "$BENCH_KAFKA_LOG" "$OPAL_STACK_DIR/kafka/data"
    fi
    # The ext4 here is mounted with `discard`: freeing the last run's blocks
    # held fsyncs for up to 200 ms over the next seconds. Done before the run.
    sync
    scripts/dev-stack.sh up >&2
    eval "$(scripts/dev-stack.sh env)"
}
