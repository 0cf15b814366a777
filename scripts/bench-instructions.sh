#!/usr/bin/env bash
# Instructions per event of publishing and of the consumer pipeline, against
# plain rdkafka on the same records: each phase of `opal-bench instructions`
# runs under `valgrind --tool=callgrind` at two event counts, and
# (instructions(N2) - instructions(N1)) / (N2 - N1) is the cost of one event
# with start-up cancelled out. Counts are stable on a noisy shared machine
# where wall-clock figures are not (this VM has no hardware counters for
# `perf stat -e instructions`). All threads count, librdkafka's included.
#
#   scripts/bench-instructions.sh [[LABEL=]OPAL_BENCH_BINARY ...]   (about 5 minutes per binary)
#
# Several binaries (e.g. `before=<a build from before a change> after=target/release/opal-bench`)
# are measured in the same run on the same broker; prints one JSON object per
# binary and phase, and writes them to bench/results/instructions.json.
# Without arguments: the current release build, labelled "current".
# OPAL_INSTR_EVENTS="N1 N2" overrides the counts (default "2000 10000").
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# shellcheck source=scripts/bench-stack.sh
. scripts/bench-stack.sh
read -r N1 N2 <<<"${OPAL_INSTR_EVENTS:-2000 10000}"
OUT=${OPAL_INSTR_OUT:-bench/results/instructions.json}

command -v valgrind >/dev/null || {
    echo "bench-instructions.sh: valgrind missing (apt-get install valgrind)" >&2
    exit 1
}
if [ $# -eq 0 ]; then
    cargo build --release -p opal-bench --bins
    set -- "current=$TARGET_DIR/release/opal-bench"
fi

trap bench_stack_down EXIT
bench_stack_fresh
STACK_ARGS=(--broker local --brokers "$KAFKA_BROKERS" --schema-registry-url "$SCHEMA_REGISTRY_URL" --redis-url "$REDIS_URL")
work=$(mktemp -d)

# Instructions of one phase: all threads, from start to exit.
measure() {
    local bin=$1 phase=$2 prefix=$3 events=$4 log
    log="$work/$phase-$events.log"
    RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        "$bin" instructions "${STACK_ARGS[@]}" --phase "$phase" --prefix "$prefix" --events "$events" \
        >/dev/null 2>"$log" || {
        cat "$log" >&2
        return 1
    }
    sed -n 's/^==[0-9]*== Collected : \([0-9]*\).*/\1/p' "$log" | tail -1
}

: >"$OUT.tmp"
run=0
for arg in "$@"; do
    run=$((run + 1))
    label=${arg%%=*} bin=${arg#*=}
    # Builds from before #16's report know only the bare raw record (no
    # headers), and older ones no one-callback producer: their phases only.
    extras=
    for phase in raw-publish-bare raw-publish-callback; do
        if grep -q "$phase" <<<"$("$bin" instructions --help)"; then extras="$extras $phase"; fi
    done
    for group in "raw-publish raw-consume $extras" "publish pipeline"; do
        read -r publish consume extra <<<"$group"
        declare -A counts=()
        for n in "$N1" "$N2"; do
            # Publishing into the consume phase's topic would leave it more than n events.
            prefix="instr-$(date +%s)-$run-$publish-$n"
            "$bin" instructions "${STACK_ARGS[@]}" --phase prepare --prefix "$prefix.p." --events 0 >/dev/null
            "$bin" instructions "${STACK_ARGS[@]}" --phase prepare --prefix "$prefix.c." --events "$n" >/dev/null
            counts[$publish-$n]=$(measure "$bin" "$publish" "$prefix.p." "$n")
            counts[$consume-$n]=$(measure "$bin" "$consume" "$prefix.c." "$n")
            for phase in $extra; do
                counts[$phase-$n]=$(measure "$bin" "$phase" "$prefix.p." "$n")
            done
        done
        for phase in "$publish" "$consume" $extra; do
            a=${counts[$phase-$N1]} b=${counts[$phase-$N2]}
            printf '{"build": "%s", "binary": "%s", "phase": "%s", "events": [%s, %s], "instructions": [%s, %s], "per_event": %s}\n' \
                "$label" "$bin" "$phase" "$N1" "$N2" "$a" "$b" $(((b - a) / (N2 - N1))) | tee -a "$OUT.tmp"
        done
        unset counts
    done
done
python3 -c 'import json,sys; print(json.dumps([json.loads(l) for l in open(sys.argv[1])], indent=2))' "$OUT.tmp" >"$OUT"
rm -f "$OUT.tmp"
rm -rf "$work"
